"""Expiry time for 1,000 streams (issue 6's retention figure).

``expire_1k(tmpdir)`` fills an LMDB journal (durable, fsync per commit) with 1,000
``Loan-…`` streams of ``--events`` events each (200-byte payloads) plus as many young
streams of another category, then times on a fresh journal per run:

- ``expire_s``: ``journal.expire(Retention("Loan", 30), now=…)``: select the due streams
  (one head scan, one read per stream), journal 1,000 ``z8.RecordsExpired`` acts, mark the
  streams expired and write every tombstone, durable;
- ``verify_s``: ``journal.verify()`` afterwards (tombstones checked against their acts);
- ``compact_s``: ``compact_journal(path)`` with the journal closed.

Run ``python benchmarks/retention.py [--runs N] [--events E]`` for one JSON line per figure.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from z8.journal import Append, Retention, TypeRegistry, compact_journal, open_journal

try:
    from _report import emit
except ImportError:  # imported as benchmarks.retention
    from benchmarks._report import emit

STREAMS = 1_000
DAY = 86_400 * 1_000_000_000


class Noted(msgspec.Struct, frozen=True):
    text: str


async def _run_once(path: Path, events: int) -> dict[str, float]:
    with open_journal(path, types=TypeRegistry([Noted]), durability="fast") as journal:
        for start in range(0, STREAMS, 100):
            await journal.append_many([Append(f"{category}-{i}", [Noted("x" * 200)] * events)
                                       for i in range(start, start + 100) for category in ("Loan", "Chat")])
    with open_journal(path, types=TypeRegistry([Noted])) as journal:
        started = time.perf_counter()
        report = await journal.expire(Retention("Loan", 30), now=time.time_ns() + 31 * DAY, by="bench")
        expired = time.perf_counter()
        assert len(report.expired) == STREAMS and report.tombstoned == STREAMS * events, report.tombstoned
        check = journal.verify()
        verified = time.perf_counter()
        assert check.ok, check
    compact_journal(path)
    compacted = time.perf_counter()
    return {"expire_s": expired - started, "verify_s": verified - expired, "compact_s": compacted - verified}


def expire_1k(tmpdir: str | Path, runs: int = 3, events: int = 10) -> dict[str, Any]:
    """Medians (and samples) of ``runs`` expiries of 1,000 streams under ``tmpdir``."""
    samples: dict[str, list[float]] = {"expire_s": [], "verify_s": [], "compact_s": []}
    for index in range(runs):
        for name, value in asyncio.run(_run_once(Path(tmpdir) / f"j{index}", events)).items():
            samples[name].append(value)
    figures: dict[str, Any] = {name: statistics.median(values) for name, values in samples.items()}
    figures.update(streams=STREAMS, events=events, samples=samples)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--events", type=int, default=10, help="events per stream")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        figures = expire_1k(tmpdir, args.runs, args.events)
    params = {"streams": STREAMS, "events_per_stream": args.events, "young_streams": STREAMS}
    for name in ("expire_s", "verify_s", "compact_s"):
        emit(f"retention.expire_1k_streams.{name[:-2]}", [v * 1000 for v in figures["samples"][name]], "ms",
             None, None, params, lower_is_better=True)


if __name__ == "__main__":
    main()
