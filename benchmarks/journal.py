"""Journal benchmarks: z8's LMDB journal against SQLite (WAL, synchronous=FULL).

Run ``python benchmarks/journal.py [--quick]``. Prints one JSON line per figure, as
``BENCHMARKS.md`` specifies: ``value`` is the median of ``runs`` repetitions, ``spread``
their [min, max], and ``ratio`` is above 1 when z8 is ahead (value / baseline for rates,
baseline / value for latencies).

What is compared, so the ratios mean what they say:

- Both sides are durable: the journal is opened with ``durability="sync"`` (LMDB fsyncs
  every commit) and SQLite runs ``journal_mode=WAL`` with ``synchronous=FULL`` (the WAL
  is fsynced at every commit). Both live in one ``tempfile.mkdtemp`` directory, so on
  one filesystem.
- Both sides encode the same msgspec Struct per event inside the timed region; SQLite
  stores those payload bytes, z8 stores them inside its envelope (event id, stream,
  version, position, timestamps, hash chain), so z8 writes more bytes per event
  (``params.z8_record_bytes``).
- SQLite assigns versions inside the transaction (``MAX(version) + 1`` over the
  ``UNIQUE(stream, version)`` index), as z8 reads the stream head inside its own.
- Both sides are warmed to a steady state first: SQLite until its WAL has reached its
  checkpoint size and is reused in place (a fresh, growing WAL fsyncs 2-3x slower), z8
  with a thousand appends.
- SQLite has one writer at a time, so its one-transaction-per-event figure is measured
  with one writer; the group-commit figures compare N concurrent z8 appenders against it.
- Reads run on a warm page cache over the same log (same streams, versions, positions
  and payloads) on both sides. z8 reads return decoded ``Envelope`` objects, SQLite
  returns row tuples; neither decodes the payload.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from z8.journal import Append, Journal, TypeRegistry, open_journal

from _report import emit, percentile

BATCH = 1000
STREAM_EVENTS = 10_000
APPENDERS = (1, 8, 64, 256)
READ_STREAM = "read-target"
WARMUP_APPENDS = 1000  # a fresh LMDB file commits slower for its first few hundred commits
WARMUP_BATCHES = 5
SYNC = "sync"
SQLITE_SYNC = "WAL, synchronous=FULL"

SQLITE_ONE_TXN = "sqlite.wal.full.one_txn_per_event"
SQLITE_BATCH = "sqlite.wal.full.batch_1000"
SQLITE_SCAN = "sqlite.wal.select_all_order_by_position"
SQLITE_STREAM = "sqlite.wal.select_stream_order_by_version"

SCHEMA = (
    "CREATE TABLE events(position INTEGER PRIMARY KEY, stream TEXT NOT NULL, "
    "version INTEGER NOT NULL, payload BLOB NOT NULL, UNIQUE(stream, version))"
)
INSERT_NEXT = (
    "INSERT INTO events(stream, version, payload) VALUES "
    "(?, (SELECT COALESCE(MAX(version), 0) + 1 FROM events WHERE stream = ?), ?)"
)
INSERT_AT = "INSERT INTO events(position, stream, version, payload) VALUES (?, ?, ?, ?)"
INSERT_MANY = "INSERT INTO events(stream, version, payload) VALUES (?, ?, ?)"
STREAM_HEAD = "SELECT COALESCE(MAX(version), 0) FROM events WHERE stream = ?"
SELECT_ALL = "SELECT position, stream, version, payload FROM events ORDER BY position"
SELECT_STREAM = "SELECT position, stream, version, payload FROM events WHERE stream = ? ORDER BY version"


class OrderPlaced(msgspec.Struct, frozen=True):
    """A small, typical domain event (88 bytes of msgpack, field names included)."""

    order_id: str
    customer_id: str
    sku: str
    quantity: int
    amount_cents: int


TYPES = TypeRegistry([OrderPlaced])
EVENTS = [
    OrderPlaced(f"ord-{i:08d}", f"cus-{i % 9973:06d}", f"SKU-{i % 997:05d}", 1 + i % 9, 100_000 + i)
    for i in range(BATCH)
]
_encode = msgspec.msgpack.Encoder().encode
PAYLOAD_BYTES = len(_encode(EVENTS[0]))


@dataclass(frozen=True)
class Sizes:
    """How much work each figure does per run."""

    runs: int
    single_events: int
    group_events: int
    batches: int
    log_events: int
    stream_reads: int


FULL = Sizes(runs=5, single_events=2000, group_events=20_000, batches=30, log_events=200_000, stream_reads=5)
QUICK = Sizes(runs=3, single_events=500, group_events=8000, batches=10, log_events=50_000, stream_reads=3)


@dataclass
class Samples:
    """Per-run throughputs and latency percentiles of one side of a figure."""

    rates: list[float]
    p50: list[float]
    p99: list[float]

    @classmethod
    def empty(cls) -> Samples:
        return cls([], [], [])

    def add(self, events: int, seconds: float, latencies: Sequence[float] = ()) -> None:
        self.rates.append(events / seconds)
        if latencies:
            ordered = sorted(latencies)
            self.p50.append(percentile(ordered, 0.50) * 1e3)
            self.p99.append(percentile(ordered, 0.99) * 1e3)




# --- SQLite peer -------------------------------------------------------------------------


def sqlite_open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
        raise RuntimeError(f"SQLite refused WAL mode at {path}")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(SCHEMA)
    return conn


def sqlite_settle(conn: sqlite3.Connection, write: Callable[[], object]) -> None:
    """Call ``write`` until the WAL has grown to its checkpoint size and been reused.

    A fresh WAL grows with every commit, and fsyncs that extend a file also commit its
    new size: SQLite is up to 2-3x slower per commit until its first checkpoint, after
    which it overwrites the WAL in place. A long-running application sees the latter.
    """
    wal = Path(conn.execute("PRAGMA database_list").fetchone()[2] + "-wal")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    checkpoint_at = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] * page_size
    while not wal.exists() or wal.stat().st_size < checkpoint_at:
        write()
    for _ in range(3):
        write()


def sqlite_one_txn_per_event(conn: sqlite3.Connection, stream: str, count: int) -> tuple[float, list[float]]:
    latencies = []
    start = time.perf_counter()
    for i in range(count):
        began = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(INSERT_NEXT, (stream, stream, _encode(EVENTS[i % BATCH])))
        conn.execute("COMMIT")
        latencies.append(time.perf_counter() - began)
    return time.perf_counter() - start, latencies


def sqlite_batches(conn: sqlite3.Connection, stream: str, batches: int) -> float:
    start = time.perf_counter()
    for _ in range(batches):
        conn.execute("BEGIN IMMEDIATE")
        head = conn.execute(STREAM_HEAD, (stream,)).fetchone()[0]
        conn.executemany(INSERT_MANY, ((stream, head + 1 + i, _encode(e)) for i, e in enumerate(EVENTS)))
        conn.execute("COMMIT")
    return time.perf_counter() - start


def sqlite_load(conn: sqlite3.Connection, plan: list[list[tuple[str, int]]]) -> None:
    """Write the same log as ``z8_load``: same positions, streams, versions, payloads."""
    position, versions = 0, {}
    for call in plan:
        rows = []
        for stream, count in call:
            version = versions.get(stream, 0)
            for i in range(count):
                position += 1
                rows.append((position, stream, version + i + 1, _encode(EVENTS[i % BATCH])))
            versions[stream] = version + count
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT_AT, rows)
        conn.execute("COMMIT")


# --- z8 ----------------------------------------------------------------------------------


async def z8_sequential(journal: Journal, stream: str, count: int) -> tuple[float, list[float]]:
    latencies = []
    start = time.perf_counter()
    for i in range(count):
        began = time.perf_counter()
        await journal.append(stream, [EVENTS[i % BATCH]])
        latencies.append(time.perf_counter() - began)
    return time.perf_counter() - start, latencies


async def z8_concurrent(journal: Journal, appenders: int, per_task: int, tag: str) -> tuple[float, list[float]]:
    """``appenders`` tasks, each appending one event per call to its own stream."""
    start = time.perf_counter()
    results = await asyncio.gather(*(z8_sequential(journal, f"{tag}-{k}", per_task) for k in range(appenders)))
    elapsed = time.perf_counter() - start
    return elapsed, [latency for _, latencies in results for latency in latencies]


async def z8_batches(journal: Journal, stream: str, batches: int) -> float:
    start = time.perf_counter()
    for _ in range(batches):
        await journal.append(stream, EVENTS)
    return time.perf_counter() - start


async def z8_load(journal: Journal, plan: list[list[tuple[str, int]]]) -> None:
    for call in plan:
        await journal.append_many([Append(stream, EVENTS[:count]) for stream, count in call])


def load_plan(log_events: int) -> list[list[tuple[str, int]]]:
    """Append calls of 1,000 events: a share for the read-target stream, the rest spread.

    The target stream ends with ``STREAM_EVENTS`` events interleaved with the others'
    in the log, as one busy agent's stream would be.
    """
    calls = log_events // BATCH
    target, others = STREAM_EVENTS // calls, 10
    each = (BATCH - target) // others
    plan = []
    for c in range(calls):
        parts = [(f"other-{(c * others + o) % 1000}", each) for o in range(others)]
        parts.insert(c % (others + 1), (READ_STREAM, target))
        parts[-1] = (parts[-1][0], parts[-1][1] + BATCH - target - each * others)
        plan.append(parts)
    return plan


# --- figures -----------------------------------------------------------------------------


class Bench:
    """One benchmark session: a scratch directory, the sizes, and shared baselines."""

    def __init__(self, root: Path, sizes: Sizes) -> None:
        self.root = root
        self.sizes = sizes
        self.one_txn = Samples.empty()
        self.record_bytes = 0  # the stored envelope's size, known once an event is written

    def write_params(self, appenders: int, batch_size: int, **extra: Any) -> dict[str, Any]:
        """What a write figure measures; ``batch_size`` is events per append (per SQLite transaction)."""
        return {
            "durability": SYNC,
            "sqlite": SQLITE_SYNC,
            "appenders": appenders,
            "batch_size": batch_size,
            "payload_bytes": PAYLOAD_BYTES,
            "z8_record_bytes": self.record_bytes,
            **extra,
        }

    def read_params(self, **extra: Any) -> dict[str, Any]:
        params = self.write_params(0, "whole result in one call")
        params["durability"] = f"{SYNC} (log written durably; reads from a warm page cache)"
        return {**params, **extra}

    def journal(self, name: str) -> Journal:
        return open_journal(self.root / name, durability=SYNC, types=TYPES)

    def sqlite(self, name: str) -> sqlite3.Connection:
        return sqlite_open(self.root / f"{name}.sqlite")

    async def appends(self) -> None:
        """``journal.append.single`` and every ``group_commit`` figure, on one warmed journal."""
        journal, conn = self.journal("appends"), self.sqlite("appends")
        try:
            self.record_bytes = len(msgspec.msgpack.encode((await journal.append("warmup", [EVENTS[0]]))[0]))
            await z8_sequential(journal, "warmup", WARMUP_APPENDS)
            sqlite_settle(conn, lambda: sqlite_one_txn_per_event(conn, "warmup", 50))
            await self.single(journal, conn)
            for appenders in APPENDERS:
                await self.group_commit(journal, appenders)
        finally:
            await journal.aclose()
            conn.close()

    async def single(self, journal: Journal, conn: sqlite3.Connection) -> None:
        z8 = Samples.empty()
        count = self.sizes.single_events
        for _ in range(self.sizes.runs):
            gc.collect()
            z8.add(count, *(await z8_sequential(journal, "single", count)))
            gc.collect()
            self.one_txn.add(count, *sqlite_one_txn_per_event(conn, "single", count))
        params = self.write_params(1, 1, events_per_run=count, mode="one writer awaits each append in turn")
        emit("journal.append.single", z8.rates, "events/s", SQLITE_ONE_TXN, self.one_txn.rates, params)

    async def group_commit(self, journal: Journal, appenders: int) -> None:
        total = self.sizes.single_events if appenders == 1 else self.sizes.group_events
        per_task = math.ceil(total / appenders)
        tag = f"g{appenders}"
        await z8_concurrent(journal, appenders, 5, tag)  # warm up, and create the streams
        z8 = Samples.empty()
        for _ in range(self.sizes.runs):
            gc.collect()
            z8.add(appenders * per_task, *(await z8_concurrent(journal, appenders, per_task, tag)))
        params = self.write_params(
            appenders, 1, events_per_run=appenders * per_task,
            mode="N asyncio tasks, each awaiting one-event appends to its own stream",
            sqlite_mode="one writer, one transaction per event (SQLite serialises writers); measured with journal.append.single",
        )
        base = self.one_txn
        emit("journal.append.group_commit", z8.rates, "events/s", SQLITE_ONE_TXN, base.rates, params)
        for name in ("p50", "p99"):
            emit(
                f"journal.append.group_commit.{name}", getattr(z8, name), "ms", f"{SQLITE_ONE_TXN}.{name}",
                getattr(base, name), {**params, "latency": f"{name} of each append call's wait, per run"},
                lower_is_better=True,
            )

    async def batch(self) -> None:
        journal, conn = self.journal("batch"), self.sqlite("batch")
        z8, peer = Samples.empty(), Samples.empty()
        batches = self.sizes.batches
        try:
            await z8_batches(journal, "warmup", WARMUP_BATCHES)
            sqlite_settle(conn, lambda: sqlite_batches(conn, "warmup", 1))
            for _ in range(self.sizes.runs):
                gc.collect()
                z8.add(batches * BATCH, await z8_batches(journal, "batch", batches))
                gc.collect()
                peer.add(batches * BATCH, sqlite_batches(conn, "batch", batches))
        finally:
            await journal.aclose()
            conn.close()
        params = self.write_params(1, BATCH, events_per_run=batches * BATCH, mode="one append call of 1,000 events per commit")
        emit("journal.append.batch", z8.rates, "events/s", SQLITE_BATCH, peer.rates, params)

    async def reads(self) -> None:
        plan = load_plan(self.sizes.log_events)
        journal, conn = self.journal("log"), self.sqlite("log")
        try:
            await z8_load(journal, plan)
            sqlite_load(conn, plan)
            self.scan(journal, conn)
            self.read_stream(journal, conn)
            self.verify(journal)
        finally:
            await journal.aclose()
            conn.close()

    def scan(self, journal: Journal, conn: sqlite3.Connection) -> None:
        z8, peer = self.repeat(lambda: len(journal.read_all()), lambda: len(conn.execute(SELECT_ALL).fetchall()), 1)
        params = self.read_params(log_events=self.sizes.log_events, mode="read_all() of decoded envelopes, whole log")
        emit("journal.scan", z8, "events/s", SQLITE_SCAN, peer, params)

    def read_stream(self, journal: Journal, conn: sqlite3.Connection) -> None:
        reads = self.sizes.stream_reads
        z8, peer = self.repeat(
            lambda: len(journal.read_stream(READ_STREAM)),
            lambda: len(conn.execute(SELECT_STREAM, (READ_STREAM,)).fetchall()), reads,
        )
        params = self.read_params(
            log_events=self.sizes.log_events, stream_events=STREAM_EVENTS, reads_per_run=reads,
            mode="read_stream() of one stream interleaved with others in the log",
        )
        emit("journal.read_stream", z8, "events/s", SQLITE_STREAM, peer, params)

    def verify(self, journal: Journal) -> None:
        def check() -> int:
            report = journal.verify()
            if not report.ok:
                raise RuntimeError(f"verify() failed on the benchmark log: {report}")
            return report.checked

        params = self.read_params(
            log_events=self.sizes.log_events, batch_size="whole log", sqlite=None,
            note="no SQLite equivalent: SQLite keeps no hash chain to verify, so baseline and ratio are null",
        )
        emit("journal.verify", self.repeat(check, None, 1)[0], "events/s", None, None, params)

    def repeat(
        self, z8: Callable[[], int], peer: Callable[[], int] | None, reads: int
    ) -> tuple[list[float], list[float]]:
        """Events per second of ``reads`` calls of each read, runs alternating z8 and peer."""
        sides = [side for side in (z8, peer) if side is not None]
        rates: tuple[list[float], list[float]] = ([], [])
        for side in sides:
            side()  # warm the page cache and the code paths
        for _ in range(self.sizes.runs):
            for side, found in zip(sides, rates):
                gc.collect()
                start = time.perf_counter()
                events = sum(side() for _ in range(reads))
                found.append(events / (time.perf_counter() - start))
        return rates


async def main(sizes: Sizes, base: str | None) -> None:
    root = Path(tempfile.mkdtemp(prefix="z8-bench-journal-", dir=base))
    try:
        bench = Bench(root, sizes)
        await bench.appends()
        await bench.batch()
        await bench.reads()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs (well under 60 s)")
    parser.add_argument("--dir", default=None, help="where to make the scratch directory (default: the system temp dir)")
    args = parser.parse_args()
    asyncio.run(main(QUICK if args.quick else FULL, args.dir))
