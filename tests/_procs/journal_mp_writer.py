"""Child process for tests/test_journal_multiprocess.py: one of several writers on one path.

Usage:
  python journal_mp_writer.py mix    PATH WRITER EVENTS TASKS
  python journal_mp_writer.py bulk   PATH WRITER EVENTS TASKS MAP_SIZE
  python journal_mp_writer.py ticker PATH COUNT

``mix`` and ``bulk`` print ``READY`` once the journal is open, wait for a line on stdin
(so every writer starts at once), append exactly EVENTS events from TASKS concurrent
tasks, then print one JSON summary line: every returned event as
``[token, event_id, stream, version, position]``, the number of ``WrongExpectedVersion``
retries, and anything that broke the contract as seen from this process.

``mix`` writes to its own stream ``own-W`` and the shared stream ``shared`` with
``expected_version=ANY``, and to ``contended`` with the exact version it just read,
retrying on ``WrongExpectedVersion``. ``bulk`` writes payloads of 0.5-12 KiB to
``bulk-W`` and ``bulk-shared`` (for map growth). ``ticker`` appends COUNT single
events to ``ticker`` at random 30-150 ms intervals (for subscription latency).

structlog output (e.g. ``journal.map_grown``) goes to stderr; stdout is for the parent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sys

import msgspec
import structlog

from z8.errors import WrongExpectedVersion
from z8.journal import Append, TypeRegistry, open_journal


class Tick(msgspec.Struct, frozen=True):
    token: str


class Blob(msgspec.Struct, frozen=True):
    token: str
    data: bytes


def blob_for(token: str, size: int) -> bytes:
    """Deterministic payload bytes, so the parent can check every byte came back."""
    seed = hashlib.sha256(token.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def summary(envelopes: list) -> list[list]:
    return [[msgspec.msgpack.decode(e.data)["token"], e.event_id, e.stream, e.version, e.position] for e in envelopes]


def plan(rng: random.Random, total: int, targets: list[str]) -> list[tuple[str, int]]:
    """Appends of 1-3 events over ``targets`` adding up to exactly ``total`` events."""
    steps, left = [], total
    while left:
        count = min(left, rng.randint(1, 3))
        steps.append((rng.choice(targets), count))
        left -= count
    return steps


def wait_for_go() -> None:
    print("READY", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected 'go' on stdin")


async def run_mix(path: str, writer: int, total: int, tasks: int) -> None:
    rng = random.Random(writer * 7919 + 17)
    journal = open_journal(path, types=TypeRegistry([Tick]))
    wait_for_go()
    steps = plan(rng, total, ["own", "shared", "contended"])
    acked: list[list] = []
    bad: list[str] = []
    retries = 0
    counter = iter(range(total))

    def ticks(count: int) -> list[Tick]:
        return [Tick(f"w{writer}.{next(counter)}") for _ in range(count)]

    async def task(mine: list[tuple[str, int]]) -> None:
        nonlocal retries
        for target, count in mine:
            events = ticks(count)
            if target == "own":
                envelopes = await journal.append(f"own-{writer}", events)
            elif target == "shared":
                envelopes = await journal.append("shared", events)
            else:
                while True:
                    expected = journal.stream_version("contended")
                    try:
                        envelopes = await journal.append("contended", events, expected_version=expected)
                    except WrongExpectedVersion as exc:
                        retries += 1
                        if exc.actual <= expected or exc.expected != expected:
                            bad.append(f"odd rejection for expected {expected}: {exc}")
                        continue
                    if [e.version for e in envelopes] != list(range(expected + 1, expected + 1 + count)):
                        bad.append(f"expected {expected}, written at {[e.version for e in envelopes]}")
                    break
            acked.extend(summary(envelopes))
            if rng.random() < 0.3:
                await asyncio.sleep(0)

    await asyncio.gather(*(task(steps[i::tasks]) for i in range(tasks)))
    journal.close()
    print(json.dumps({"writer": writer, "acked": acked, "retries": retries, "bad": bad}), flush=True)


async def run_bulk(path: str, writer: int, total: int, tasks: int, map_size: int) -> None:
    rng = random.Random(writer * 104729 + 3)
    journal = open_journal(path, map_size=map_size, types=TypeRegistry([Blob]))
    wait_for_go()
    steps = plan(rng, total, [f"bulk-{writer}", "bulk-shared"])
    acked: list[list] = []
    written = 0
    counter = iter(range(total))

    def blobs(count: int) -> list[Blob]:
        nonlocal written
        out = []
        for _ in range(count):
            token, size = f"b{writer}.{next(counter)}", rng.randint(512, 12 * 1024)
            written += size
            out.append(Blob(token, blob_for(token, size)))
        return out

    async def task(mine: list[tuple[str, int]]) -> None:
        for stream, count in mine:
            if count >= 2 and rng.random() < 0.5:
                envelopes = await journal.append_many(
                    [Append(stream, blobs(count - 1)), Append(f"bulk-{writer}-side", blobs(1))]
                )
            else:
                envelopes = await journal.append(stream, blobs(count))
            acked.extend(summary(envelopes))
            # read back through this process's (possibly stale) map while others grow it
            journal.read_all(max(1, envelopes[0].position - 5), 10)

    await asyncio.gather(*(task(steps[i::tasks]) for i in range(tasks)))
    head = journal.head_position()
    journal.close()
    print(json.dumps({"writer": writer, "acked": acked, "bytes": written, "head_seen": head}), flush=True)


async def run_ticker(path: str, count: int) -> None:
    rng = random.Random()
    journal = open_journal(path, types=TypeRegistry([Tick]))
    print("READY", flush=True)
    acked: list[list] = []
    for i in range(count):
        await asyncio.sleep(rng.uniform(0.03, 0.15))
        acked.extend(summary(await journal.append("ticker", [Tick(f"tick.{i}")])))
    journal.close()
    print(json.dumps({"acked": acked}), flush=True)


def main() -> None:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    mode, path, *rest = sys.argv[1:]
    numbers = [int(x) for x in rest]
    if mode == "mix":
        asyncio.run(run_mix(path, *numbers))
    elif mode == "bulk":
        asyncio.run(run_bulk(path, *numbers))
    elif mode == "ticker":
        asyncio.run(run_ticker(path, *numbers))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
