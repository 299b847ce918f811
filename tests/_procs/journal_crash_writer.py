"""Child process for tests/test_journal_crash.py: append forever, acknowledge every return.

Usage: python journal_crash_writer.py PATH DURABILITY RUN SEED [MAP_SIZE PAD]

Opens the journal, prints ``READY``, then runs several concurrent tasks that append
(single events, several events, ``append_many`` across two streams, and exact
expected-version appends that retry on ``WrongExpectedVersion``) until it is killed.
After each append *returns*, one JSON line is written to stdout with a single
``os.write`` (atomic on a pipe below PIPE_BUF), naming every returned event:
``[token, event_id, stream, version, position]``. ``token`` is the event payload's
unique tag, so the parent can tell a duplicated write from a lost one. With MAP_SIZE
(e.g. 65536) and PAD (payload padding bytes) the map is full from the first commits, so
kills also land while the map is being grown.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys

import msgspec
import structlog

from z8.errors import WrongExpectedVersion
from z8.journal import Append, TypeRegistry, open_journal

STREAMS = [f"crash-{i}" for i in range(5)]
TASKS = 6
MAX_LINE = 4000  # below PIPE_BUF (4096): one os.write of a line is atomic


class Tick(msgspec.Struct, frozen=True):
    token: str
    pad: bytes = b""


PAD = b""


def emit(text: str) -> None:
    data = (text + "\n").encode()
    assert len(data) < MAX_LINE, len(data)
    os.write(1, data)


async def worker(journal, run: int, task: int, rng: random.Random) -> None:
    seq = 0
    previous: str | None = None
    correlation = f"run-{run}"

    def ticks(count: int) -> list[Tick]:
        nonlocal seq
        seq += 1
        return [Tick(f"{run}.{task}.{seq}.{i}", PAD) for i in range(count)]

    while True:
        kind = rng.choice(("one", "multi", "many", "expected"))
        expected = None
        if kind == "one":
            envelopes = await journal.append(
                rng.choice(STREAMS), ticks(1), causation_id=previous, correlation_id=correlation
            )
        elif kind == "multi":
            envelopes = await journal.append(
                rng.choice(STREAMS), ticks(rng.randint(2, 5)), correlation_id=correlation, actor=f"task-{task}"
            )
        elif kind == "many":
            first, second = rng.sample(STREAMS, 2)
            envelopes = await journal.append_many(
                [Append(first, ticks(rng.randint(1, 3))), Append(second, ticks(rng.randint(1, 3)))],
                causation_id=previous, correlation_id=correlation,
            )
        else:
            stream = rng.choice(STREAMS)
            events = ticks(rng.randint(1, 3))
            while True:
                expected = journal.stream_version(stream)
                try:
                    envelopes = await journal.append(stream, events, expected_version=expected, correlation_id=correlation)
                    break
                except WrongExpectedVersion as exc:
                    if exc.actual <= expected:  # versions only grow
                        emit(json.dumps({"error": f"bad WrongExpectedVersion: {exc}"}))
                        raise
        line = {
            "kind": kind,
            "events": [[msgspec.msgpack.decode(e.data)["token"], e.event_id, e.stream, e.version, e.position] for e in envelopes],
        }
        if expected is not None:
            line["expected"] = expected
        emit(json.dumps(line, separators=(",", ":")))
        previous = envelopes[-1].event_id
        if rng.random() < 0.2:
            await asyncio.sleep(0)


async def main() -> None:
    global PAD
    path, durability, run, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    map_size, pad = (int(sys.argv[5]), int(sys.argv[6])) if len(sys.argv) > 5 else (None, 0)
    PAD = bytes(pad)
    rng = random.Random(seed)
    options = {} if map_size is None else {"map_size": map_size}
    journal = open_journal(path, durability=durability, types=TypeRegistry([Tick]), **options)
    emit("READY")
    await asyncio.gather(*(worker(journal, run, t, random.Random(rng.random())) for t in range(TASKS)))


if __name__ == "__main__":
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    asyncio.run(main())
