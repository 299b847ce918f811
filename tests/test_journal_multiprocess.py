"""Several processes share one journal path: nothing lost, nothing doubled, one chain.

Writers are real child processes (``tests/_procs/journal_mp_writer.py``) released
together by a line on stdin, each with several concurrent tasks so that group commits
in one process race against commits of the others for LMDB's write lock.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import select
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pytest

from z8.journal import Journal, RawEvent, open_journal

WRITER = Path(__file__).parent / "_procs" / "journal_mp_writer.py"
TIMEOUT = 120.0


class _Child:
    def __init__(self, tmp_path: Path, name: str, *args: object) -> None:
        self.name = name
        self.stderr_path = tmp_path / f"{name}.stderr"
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(WRITER), *map(str, args)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, bufsize=0,
            )

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT)
        line = self.proc.stdout.readline() if ready else b"<timeout>"
        if line != b"READY\n":
            self.kill()
            pytest.fail(f"{self.name} did not get ready ({line!r}):\n{self.stderr()[-4000:]}")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")  # unbuffered; communicate() closes stdin later

    def result(self) -> dict[str, Any]:
        """Wait for the child; its last stdout line is its JSON summary."""
        try:
            out, _ = self.proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} did not finish in {TIMEOUT}s:\n{self.stderr()[-4000:]}")
        if self.proc.returncode != 0:
            pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.stderr()[-4000:]}")
        return json.loads(out.splitlines()[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _check_log(journal: Journal) -> tuple[list[Any], dict[str, Any]]:
    """Chain, positions and versions reconcile; return the log and envelopes by token."""
    report = journal.verify()
    assert report.ok, str(report)
    head = journal.head_position()
    log = journal.read_all()
    assert [e.position for e in log] == list(range(1, head + 1)), "positions are not gap-free"
    assert report.checked == head
    versions: dict[str, int] = defaultdict(int)
    per_stream: dict[str, list[str]] = defaultdict(list)
    by_token: dict[str, Any] = {}
    for envelope in log:
        versions[envelope.stream] += 1
        assert envelope.version == versions[envelope.stream], (
            f"{envelope.stream!r}: version {envelope.version} at position {envelope.position}"
        )
        per_stream[envelope.stream].append(envelope.event_id)
        token = msgspec.msgpack.decode(envelope.data)["token"]
        assert token not in by_token, f"payload {token} stored twice"
        by_token[token] = envelope
    assert len({e.event_id for e in log}) == len(log), "an event id is stored twice"
    for stream, count in versions.items():
        assert journal.stream_version(stream) == count
        assert [e.event_id for e in journal.read_stream(stream)] == per_stream[stream]
    return log, by_token


def _check_acked(by_token: dict[str, Any], acked: list[list[Any]]) -> None:
    for token, event_id, stream, version, position in acked:
        envelope = by_token.get(token)
        assert envelope is not None, f"acknowledged {token} is missing"
        assert (envelope.event_id, envelope.stream, envelope.version, envelope.position) == (
            event_id, stream, version, position
        ), f"acknowledged {token} at {stream}@{version} (position {position}), stored as {envelope}"


def _start(children: list[_Child]) -> None:
    try:
        for child in children:
            child.wait_ready()
        for child in children:
            child.go()
    except BaseException:
        for child in children:
            child.kill()
        raise


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    writers, per_writer = 4, 500
    path = tmp_path / "journal"
    children = [_Child(tmp_path, f"writer-{w}", "mix", path, w, per_writer, 4) for w in range(writers)]
    _start(children)
    results = {child.name: child.result() for child in children}

    with open_journal(path) as journal:
        log, by_token = _check_log(journal)
        assert len(log) == writers * per_writer
        retries = 0
        targets: Counter[tuple[str, int]] = Counter()
        for w in range(writers):
            result = results[f"writer-{w}"]
            assert result["bad"] == [], f"writer {w} saw: {result['bad']}"
            acked = result["acked"]
            retries += result["retries"]
            assert sorted(a[0] for a in acked) == sorted(f"w{w}.{i}" for i in range(per_writer))
            _check_acked(by_token, acked)
            for token, _, stream, _, _ in acked:
                targets[(stream, w)] += 1
            own = journal.read_stream(f"own-{w}")
            assert len(own) == targets[(f"own-{w}", w)]
            assert all(msgspec.msgpack.decode(e.data)["token"].startswith(f"w{w}.") for e in own)
        for shared in ("shared", "contended"):
            assert journal.stream_version(shared) == sum(targets[(shared, w)] for w in range(writers))

    # the writers really ran at once: their events interleave in the log
    owners = [msgspec.msgpack.decode(e.data)["token"].split(".")[0] for e in log]
    switches = sum(a != b for a, b in zip(owners, owners[1:]))
    print(f"\n{len(log)} events, {switches} switches between writers, {retries} WrongExpectedVersion retries")
    assert switches > writers - 1, "the writers ran one after another: the test did not exercise concurrency"
    assert retries > 0, "no append to 'contended' was ever rejected: the retry path was not exercised"


def test_subscriber_sees_other_process_commits_promptly(tmp_path: Path, record_property: Any) -> None:
    path = tmp_path / "journal"
    count = 15
    latencies_ms: list[float] = []

    async def follow(journal: Journal, child: _Child) -> list[Any]:
        seen = []
        async with journal.subscribe(from_position=journal.head_position() + 1) as subscription:
            while len(seen) < count:
                try:
                    envelope = await asyncio.wait_for(subscription.__anext__(), 30)
                except TimeoutError:
                    child.kill()
                    pytest.fail(f"no event from the other process in 30 s; it said:\n{child.stderr()[-4000:]}")
                latencies_ms.append((time.time_ns() - envelope.recorded_at) / 1e6)
                seen.append(envelope)
        return seen

    with open_journal(path) as journal:
        child = _Child(tmp_path, "ticker", "ticker", path, count)
        try:
            seen = asyncio.run(follow(journal, child))
        finally:
            result = child.result()
    assert [e.event_id for e in seen] == [a[1] for a in result["acked"]]
    assert [msgspec.msgpack.decode(e.data)["token"] for e in seen] == [f"tick.{i}" for i in range(count)]
    worst, median = max(latencies_ms), statistics.median(latencies_ms)
    record_property("cross_process_latency_ms_median", round(median, 1))
    record_property("cross_process_latency_ms_max", round(worst, 1))
    print(f"\ncross-process subscription latency (commit start -> delivered): median {median:.1f} ms, "
          f"max {worst:.1f} ms over {count} events")
    assert worst < 1000, f"an event took {worst:.0f} ms to reach a subscriber in another process"


def test_tiny_map_grows_across_processes(tmp_path: Path) -> None:
    """Two writers start from a 64 KiB map and write several MB; a third process (this
    one) holds the journal open with its stale map, reads while they grow it, then writes."""
    path = tmp_path / "journal"
    tiny = 65536
    with open_journal(path, map_size=tiny) as journal:
        children = [_Child(tmp_path, f"bulk-{w}", "bulk", path, w, 250, 4, tiny) for w in range(2)]
        _start(children)
        read_up_to, rounds, deadline = 0, 0, time.monotonic() + TIMEOUT
        while read_up_to < 2 * 250 and time.monotonic() < deadline:
            if all(child.proc.poll() is not None for child in children):
                break  # they died early: result() says why
            page = journal.read_all(read_up_to + 1)
            assert [e.position for e in page] == list(range(read_up_to + 1, read_up_to + 1 + len(page)))
            read_up_to += len(page)
            rounds += 1
            if rounds % 10 == 0:  # verify() pages through the log while it grows under us
                report = journal.verify()
                assert report.ok, str(report)
            time.sleep(0.005)
        results = [child.result() for child in children]

        big = RawEvent("Blob", msgspec.msgpack.encode({"token": "parent", "data": os.urandom(200_000)}))
        asyncio.run(journal.append("parent", [big]))

        log, by_token = _check_log(journal)
        assert by_token["parent"].position == len(log)
        for result in results:
            _check_acked(by_token, result["acked"])
        for envelope in log[:-1]:
            payload = msgspec.msgpack.decode(envelope.data)
            assert payload["data"] == _blob_for(payload["token"], len(payload["data"])), f"{payload['token']} altered"
        assert len(log) == 2 * 250 + 1

    written = sum(result["bytes"] for result in results)
    data_file = os.path.getsize(path / "data.mdb")
    grows = [child.stderr().count("journal.map_grown") for child in children]
    print(f"\n{written / 1e6:.1f} MB of payloads, data.mdb {data_file / 1e6:.1f} MB, map grown {grows} times, "
          f"parent read {read_up_to} events in {rounds} rounds while the others wrote")
    assert written > 2_000_000
    assert data_file > 2_000_000
    assert sum(grows) >= 1, "no writer logged growing the map"
    for child in children:
        assert "journal.commit_failed" not in child.stderr(), child.stderr()[-4000:]


def _blob_for(token: str, size: int) -> bytes:
    """The payload bytes ``journal_mp_writer.blob_for`` wrote for ``token``."""
    seed = hashlib.sha256(token.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]
