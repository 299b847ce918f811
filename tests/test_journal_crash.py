"""kill -9 durability: an append that returned is in the journal, exactly once, after any crash.

A real child process (``tests/_procs/journal_crash_writer.py``) appends to a real LMDB
journal from several concurrent tasks (so group commits form) and prints one line per
append that *returned*. The parent SIGKILLs it at a random moment — sometimes while it
is still importing or opening the journal, usually after a random number of
acknowledged appends — then reopens the journal and checks every acknowledged event is
stored once, where the child was told it was, with gap-free versions and positions and
a valid hash chain. The same directory takes every kill, so damage would accumulate.

Set ``Z8_CRASH_SEED`` to replay a failing run (the seed is in every failure message).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import msgspec
import pytest
from _child_output import ChildOutput

from z8.journal import DEFAULT_MAP_SIZE, open_journal

WRITER = Path(__file__).parent / "_procs" / "journal_crash_writer.py"
STARTUP_TIMEOUT = 30.0
EARLY_KILL_SHARE = 0.15
"""Share of kills that land at a random moment after spawn, without waiting for READY."""

Acked = dict[str, tuple[str, str, int, int]]
"""token -> (event_id, stream, version, position) as the returned envelopes said."""


def _kill_one_child(
    path: Path, durability: str, run: int, rng: random.Random, stderr_file: Path, ctx: str, extra: list[str]
) -> list[dict]:
    """Start a writer, SIGKILL it at a random moment, return its acknowledged appends."""
    with open(stderr_file, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(path), durability, str(run), str(rng.randrange(1 << 30)), *extra],
            stdout=subprocess.PIPE, stderr=stderr, bufsize=0,
        )
    output = ChildOutput(proc)
    try:
        if rng.random() < EARLY_KILL_SHARE:
            time.sleep(rng.uniform(0.0, 0.35))  # lands in import, open, or the first appends
        else:
            output.read_until(1 + rng.randint(0, 40), time.monotonic() + STARTUP_TIMEOUT)
            if rng.random() < 0.5:
                time.sleep(rng.uniform(0.0, 0.005))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        output.drain(time.monotonic() + 30)  # lines already in the pipe were acknowledged too
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
    if proc.returncode != -signal.SIGKILL:
        pytest.fail(
            f"{ctx}: the writer exited with {proc.returncode} before it was killed:\n"
            f"{stderr_file.read_text(errors='replace')[-4000:]}"
        )
    lines = output.lines
    if lines and lines[0] == b"READY":
        lines = lines[1:]
    assert b"READY" not in lines, f"{ctx}: READY printed twice"
    parsed = [json.loads(line) for line in lines]
    errors = [p["error"] for p in parsed if "error" in p]
    assert not errors, f"{ctx}: the writer reported {errors}"
    return parsed


def _record_acks(lines: list[dict], acked: Acked, ctx: str) -> int:
    """Check each returned append is internally sound and add its events to ``acked``."""
    count = 0
    for line in lines:
        events = line["events"]
        assert events, f"{ctx}: an append returned no envelopes: {line}"
        positions = [e[4] for e in events]
        assert positions == list(range(positions[0], positions[0] + len(events))), (
            f"{ctx}: one append's positions are not consecutive: {line}"
        )
        last_version: dict[str, int] = {}
        for token, event_id, stream, version, position in events:
            if stream in last_version:
                assert version == last_version[stream] + 1, f"{ctx}: versions not consecutive within an append: {line}"
            last_version[stream] = version
            assert token not in acked, f"{ctx}: token {token} acknowledged twice"
            acked[token] = (event_id, stream, version, position)
            count += 1
        if "expected" in line:
            assert events[0][3] == line["expected"] + 1, (
                f"{ctx}: an append expecting version {line['expected']} was written at version {events[0][3]}"
            )
    return count


def _check_journal(
    path: Path, map_size: int, acked: Acked, runs_acked: dict[int, set[str]], history: list[str], ctx: str
) -> list[str]:
    """Reopen the journal after a crash and check it; return the log's event ids."""
    journal = open_journal(path, map_size=map_size)
    try:
        report = journal.verify()
        assert report.ok, f"{ctx}: verify() failed: {report}"
        head = journal.head_position()
        log = journal.read_all()
        assert [e.position for e in log] == list(range(1, head + 1)), f"{ctx}: positions are not gap-free 1..{head}"
        assert report.head_position == head and report.checked == head, f"{ctx}: {report} vs head {head}"
        if log:
            assert report.head_hash == log[-1].hash, f"{ctx}: verify's head hash is not the last event's hash"

        ids = [e.event_id for e in log]
        assert ids[: len(history)] == history, f"{ctx}: events seen after an earlier crash changed or vanished"
        assert len(set(ids)) == len(ids), f"{ctx}: an event id is stored twice"

        by_token = {}
        versions: dict[str, int] = defaultdict(int)
        per_stream: dict[str, list[str]] = defaultdict(list)
        for envelope in log:
            versions[envelope.stream] += 1
            assert envelope.version == versions[envelope.stream], (
                f"{ctx}: {envelope.stream!r} has version {envelope.version} at position {envelope.position}, "
                f"{versions[envelope.stream]} was due"
            )
            per_stream[envelope.stream].append(envelope.event_id)
            token = msgspec.msgpack.decode(envelope.data)["token"]
            assert token not in by_token, f"{ctx}: payload {token} is stored twice (an append was applied twice)"
            by_token[token] = envelope
        for stream, count in versions.items():
            assert journal.stream_version(stream) == count, f"{ctx}: stream_version({stream!r}) disagrees with the log"
            assert [e.event_id for e in journal.read_stream(stream)] == per_stream[stream], (
                f"{ctx}: read_stream({stream!r}) disagrees with the log"
            )

        lost = sorted(token for token in acked if token not in by_token)
        assert not lost, f"{ctx}: {len(lost)} acknowledged events are missing, e.g. {lost[:5]}"
        for token, (event_id, stream, version, position) in acked.items():
            envelope = by_token[token]
            assert (envelope.event_id, envelope.stream, envelope.version, envelope.position) == (
                event_id, stream, version, position
            ), f"{ctx}: acknowledged {token} as {(event_id, stream, version, position)}, stored as {envelope}"
        for run, tokens in runs_acked.items():
            traced = {e.event_id for e in journal.trace(f"run-{run}")}
            missing = [t for t in tokens if acked[t][0] not in traced]
            assert not missing, f"{ctx}: trace('run-{run}') misses acknowledged events {missing[:5]}"
        return ids
    finally:
        journal.close()


def _crash_storm(tmp_path: Path, durability: str, kills: int, map_size: int | None = None, pad: int = 0) -> None:
    seed = int(os.environ.get("Z8_CRASH_SEED", random.randrange(1 << 32)))
    rng = random.Random(seed)
    path = tmp_path / "journal"
    acked: Acked = {}
    history: list[str] = []
    total_acked = 0
    extra = [] if map_size is None else [str(map_size), str(pad)]
    started = time.monotonic()
    for run in range(kills):
        ctx = f"Z8_CRASH_SEED={seed} durability={durability} map_size={map_size} kill #{run + 1}/{kills}"
        lines = _kill_one_child(path, durability, run, rng, tmp_path / f"writer-{run}.stderr", ctx, extra)
        before = set(acked)
        total_acked += _record_acks(lines, acked, ctx)
        history = _check_journal(path, map_size or DEFAULT_MAP_SIZE, acked, {run: set(acked) - before}, history, ctx)
    grown = sum(f.read_text(errors="replace").count("journal.map_grown") for f in tmp_path.glob("writer-*.stderr"))
    print(
        f"\n{durability} (map_size={map_size}): {kills} kills, {total_acked} acknowledged events, {len(history)} in "
        f"the log (the rest committed but unacknowledged when killed), map grown {grown} times, "
        f"{time.monotonic() - started:.1f}s, seed {seed}"
    )
    if map_size is not None:
        assert grown > 0, "the map never had to grow: the tiny-map variant proved nothing"
    assert total_acked > 0, "no append was ever acknowledged: the test proved nothing"
    assert len(history) >= total_acked


@pytest.mark.parametrize("durability", ["sync", "fast"])
def test_acknowledged_appends_survive_sigkill(tmp_path: Path, durability: str) -> None:
    """``fast`` skips fsync, but a process crash leaves the OS holding the pages: nothing
    acknowledged may be lost in either mode."""
    _crash_storm(tmp_path, durability, kills=30 if durability == "sync" else 20)


def test_acknowledged_appends_survive_sigkill_while_the_map_grows(tmp_path: Path) -> None:
    """Every writer opens with a 64 KiB map (LMDB then maps just the data already there),
    so its first commits grow the map and kills land in and around the growth."""
    _crash_storm(tmp_path, "sync", kills=20, map_size=65536, pad=400)


@pytest.mark.slow
@pytest.mark.parametrize(("durability", "map_size"), [("sync", None), ("fast", None), ("sync", 65536)])
def test_acknowledged_appends_survive_sigkill_storm(tmp_path: Path, durability: str, map_size: int | None) -> None:
    _crash_storm(tmp_path, durability, kills=200, map_size=map_size, pad=400 if map_size else 0)
