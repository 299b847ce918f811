"""Agent benchmarks: durable dispatch, rehydration, activation and passivated memory.

Run ``python benchmarks/agents.py [--quick]``. Prints one JSON line per figure, as
``BENCHMARKS.md`` specifies: ``value`` is the median of ``runs`` repetitions, ``spread``
their [min, max], and ``ratio`` is above 1 when z8 is ahead (value / baseline for rates,
baseline / value for times).

The agent is the bank's ``Account`` from ``examples/bank.py`` (loaded from that file, as
the tests do), routed as ``bank_router()`` routes it; every command goes through
``Application.dispatch``. What is compared, so the ratios mean what they say:

- Both sides are durable. z8's ``Application`` runs with ``durability="sync"`` (the LMDB
  commit holding the decision's event is fsynced before the reply); the peer is plain
  SQLite with ``journal_mode=WAL`` and ``synchronous=FULL`` (the WAL is fsynced at every
  commit), warmed until its WAL is reused in place, as in ``journal.py``.
- Both sides decide with the very same pure ``Account.decide``/``evolve``. The SQLite
  peer is the strongest simple event-sourced design: per command one transaction that
  reads the account's state row (status, owner, balance, version), decides, inserts
  the event row and updates the state row. It keeps no state in memory; z8's agent
  keeps its state in memory and reads only its stream head before deciding.
- SQLite serialises writers, so its concurrent figure is one connection processing the
  1,000 accounts' commands in turn, one transaction per command.
- ``Account.snapshot_every`` is 100: every 100th event the agent also queues a snapshot
  write (not awaited). That is part of z8's measured cost.
- In the full run, DBOS Transact (on SQLite, WAL + synchronous=FULL for both its system
  database and the application database) is a second peer when ``dbos`` is installed:
  one ``@DBOS.workflow`` per command calling one ``@datasource.transaction`` doing the
  SQLite peer's work. It runs in its own subprocess, one thread, commands in turn.
- Activation and passivated-memory figures run in a fresh subprocess per measurement,
  which only opens an ``Application`` (``durability="sync"``) over a journal written
  beforehand by another subprocess (``append_many`` of 10,000 one-event streams per call,
  ``durability="fast"``: setup only).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from z8.actors import Actor, ActorContext, Decision, Rejection, fold
from z8.actors._agent import CommandContext, fold_decision, rehydrate
from z8.app import Application, Router
from z8.ids import uuid7
from z8.journal import Append, open_journal

from _report import emit, percentile

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load_bank() -> Any:
    spec = importlib.util.spec_from_file_location("bank", EXAMPLES / "bank.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["bank"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


bank = _load_bank()
Account, AccountState = bank.Account, bank.AccountState
AccountOpened, Deposited = bank.AccountOpened, bank.Deposited
Deposit, GetBalance, OpenAccount = bank.Deposit, bank.GetBalance, bank.OpenAccount

SYNC = "sync"
SQLITE_SYNC = "WAL, synchronous=FULL"
SQLITE_COMMAND = "sqlite.wal.full.event_sourced_command"
SQLITE_REHYDRATE = "sqlite.wal.select_stream_fold"
SQLITE_REHYDRATE_SNAPSHOT = "sqlite.wal.select_snapshot_and_tail_fold"
SQLITE_ACTIVATE = "sqlite.wal.select_stream_fold_decide"
DBOS_COMMAND = "dbos.transact.sqlite.workflow_per_command"
PREFIX = "account-"
SETUP_BATCH = 10_000  # streams per append_many call when writing a benchmark's journal
IDLE_TIMEOUT = 0.5  # seconds: how soon the passivating agents leave memory
WORKERS = 1000  # concurrent dispatchers in the activation figures
SNAPSHOT_TAIL = 50  # events after the snapshot: the mean for snapshot_every=100

_encode = msgspec.msgpack.Encoder().encode


@dataclass(frozen=True)
class Sizes:
    """How much work each figure does per run."""

    runs: int
    single_cmds: int
    sqlite_single_cmds: int
    agents: int
    per_agent: int
    sqlite_concurrent_cmds: int
    rehydrate_events: int
    rehydrate_runs: int
    activate_agents: int
    activate_runs: int
    passivated_agents: int
    dbos_cmds: int  # 0: DBOS not measured


FULL = Sizes(
    runs=5, single_cmds=1000, sqlite_single_cmds=1000, agents=1000, per_agent=20, sqlite_concurrent_cmds=5000,
    rehydrate_events=10_000, rehydrate_runs=15, activate_agents=100_000, activate_runs=3,
    passivated_agents=1_000_000, dbos_cmds=200,
)
QUICK = Sizes(
    runs=3, single_cmds=300, sqlite_single_cmds=300, agents=1000, per_agent=5, sqlite_concurrent_cmds=2000,
    rehydrate_events=10_000, rehydrate_runs=5, activate_agents=20_000, activate_runs=1,
    passivated_agents=100_000, dbos_cmds=0,
)


class PassivatingAccount(Account):  # type: ignore[misc, valid-type]
    """The bank's Account, leaving memory IDLE_TIMEOUT seconds after its last command."""

    idle_timeout = IDLE_TIMEOUT


def router_for(agent: type) -> Router:
    commands = (OpenAccount, Deposit, bank.Withdraw, GetBalance)
    return Router().identify(agent, by="account_id", prefix=PREFIX).dispatch(*commands, to=agent)


def open_app(path: Path, agent: type = Account, durability: str = SYNC) -> Application:
    return Application(router_for(agent), path, types=bank.bank_types(), durability=durability)  # type: ignore[arg-type]


def agent_path(account_id: str) -> str:
    return f"/app/account/{PREFIX}{account_id}"


def settle() -> None:
    gc.collect()


# --- the SQLite peer: one transaction per command ------------------------------------------

SQLITE_SCHEMA = (
    (
        "CREATE TABLE events(position INTEGER PRIMARY KEY, stream TEXT NOT NULL, version INTEGER NOT NULL, "
        "type TEXT NOT NULL, payload BLOB NOT NULL, UNIQUE(stream, version))"
    ),
    (
        "CREATE TABLE accounts(stream TEXT PRIMARY KEY, status TEXT NOT NULL, owner TEXT NOT NULL, "
        "balance INTEGER NOT NULL, version INTEGER NOT NULL)"
    ),
    "CREATE TABLE snapshots(stream TEXT PRIMARY KEY, version INTEGER NOT NULL, data BLOB NOT NULL)",
)
SELECT_STATE = "SELECT status, owner, balance, version FROM accounts WHERE stream = ?"
INSERT_EVENT = "INSERT INTO events(stream, version, type, payload) VALUES (?, ?, ?, ?)"
UPDATE_STATE = "UPDATE accounts SET status = ?, owner = ?, balance = ?, version = ? WHERE stream = ?"
INSERT_STATE = "INSERT INTO accounts(stream, status, owner, balance, version) VALUES (?, ?, ?, ?, ?)"
SELECT_STREAM = "SELECT type, payload FROM events WHERE stream = ? AND version > ? ORDER BY version"
SELECT_SNAPSHOT = "SELECT version, data FROM snapshots WHERE stream = ?"
DECODERS = {cls.__name__: msgspec.msgpack.Decoder(cls).decode for cls in bank.EVENTS}
_decode_state = msgspec.msgpack.Decoder(AccountState).decode


class SqliteBank:
    """The event-sourced bank on plain SQLite: state row + event rows, one txn per command."""

    def __init__(self, path: Path) -> None:
        self.conn = conn = sqlite3.connect(path, isolation_level=None)
        if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
            raise RuntimeError(f"SQLite refused WAL mode at {path}")
        conn.execute("PRAGMA synchronous=FULL")
        for statement in SQLITE_SCHEMA:
            conn.execute(statement)
        self.agent = Account()  # only its pure decide/evolve are used

    def open_accounts(self, account_ids: Iterator[str]) -> None:
        """Open accounts directly (setup): an AccountOpened event and a state row each."""
        event = AccountOpened("bench")
        state = self.agent.evolve(AccountState(), event)
        rows = [PREFIX + account_id for account_id in account_ids]
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany(INSERT_EVENT, ((s, 1, "AccountOpened", _encode(event)) for s in rows))
        self.conn.executemany(INSERT_STATE, ((s, state.status, state.owner, state.balance, 1) for s in rows))
        self.conn.execute("COMMIT")

    def command(self, command: Any) -> Any:
        """Read the state row, decide, insert the events and update the row: one transaction."""
        conn, agent = self.conn, self.agent
        stream = PREFIX + command.account_id
        conn.execute("BEGIN IMMEDIATE")
        try:
            status, owner, balance, version = conn.execute(SELECT_STATE, (stream,)).fetchone()
            state = AccountState(status, owner, balance)
            outcome = agent.decide(state, command, CommandContext(time.time_ns(), uuid7(), stream, version))
            if type(outcome) is Decision and outcome.events:
                new = fold_decision(agent, state, outcome.events, stream)
                conn.executemany(INSERT_EVENT, [
                    (stream, version + i + 1, type(e).__name__, _encode(e)) for i, e in enumerate(outcome.events)
                ])
                conn.execute(UPDATE_STATE, (new.status, new.owner, new.balance, version + len(outcome.events), stream))
        finally:
            conn.execute("COMMIT")
        return outcome.reason if isinstance(outcome, Rejection) else outcome.reply

    def settle_wal(self, account_id: str) -> None:
        """Commit until the WAL has reached its checkpoint size and is reused in place."""
        wal = Path(self.conn.execute("PRAGMA database_list").fetchone()[2] + "-wal")
        page_size = self.conn.execute("PRAGMA page_size").fetchone()[0]
        checkpoint_at = self.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] * page_size
        command = Deposit(account_id, 1)
        while not wal.exists() or wal.stat().st_size < checkpoint_at:
            self.command(command)
        for _ in range(50):
            self.command(command)

    def fold(self, stream: str, snapshots: bool) -> tuple[Any, int]:
        """Rehydrate like an agent would: snapshot (if asked) plus the events after it."""
        state, version = AccountState(), 0
        if snapshots:
            row = self.conn.execute(SELECT_SNAPSHOT, (stream,)).fetchone()
            if row is not None:
                version, state = row[0], _decode_state(row[1])
        evolve = self.agent.evolve
        rows = self.conn.execute(SELECT_STREAM, (stream, version)).fetchall()
        for type_, payload in rows:
            state = evolve(state, DECODERS[type_](payload))
        return state, version + len(rows)

    def close(self) -> None:
        self.conn.close()


def sqlite_commands(peer: SqliteBank, commands: list[Any]) -> float:
    start = time.perf_counter()
    for command in commands:
        peer.command(command)
    return time.perf_counter() - start


# --- dispatch ------------------------------------------------------------------------------


class Echo(Actor):
    """A plain actor answering every ask with the message: the ask round trip alone."""

    async def receive(self, message: Any, ctx: ActorContext) -> Any:
        return message


async def dispatch_loop(app: Application, command: Any, count: int) -> float:
    dispatch = app.dispatch
    start = time.perf_counter()
    for _ in range(count):
        await dispatch(command)
    return time.perf_counter() - start


async def dispatch_worker(app: Application, command: Any, count: int, latencies: list[float]) -> None:
    dispatch, clock = app.dispatch, time.perf_counter
    for _ in range(count):
        began = clock()
        await dispatch(command)
        latencies.append(clock() - began)


async def dispatch_concurrently(app: Application, agents: int, per_agent: int) -> tuple[float, list[float]]:
    """``agents`` tasks, each awaiting ``per_agent`` deposits to its own account in turn."""
    latencies: list[float] = []
    start = time.perf_counter()
    await asyncio.gather(*(dispatch_worker(app, Deposit(str(a), 1), per_agent, latencies) for a in range(agents)))
    return time.perf_counter() - start, latencies


def timed_us(fn: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count * 1e6


async def append_us(journal: Any, stream: str, count: int) -> float:
    """One Deposited per append, with the metadata and expected version an agent passes."""
    version = journal.stream_version(stream)
    start = time.perf_counter()
    for _ in range(count):
        command_id = uuid7()
        written = await journal.append(
            stream, [Deposited(1)], version, causation_id=command_id, correlation_id=command_id,
            actor=f"/app/account/{stream}",
        )
        version = written[-1].version
    return (time.perf_counter() - start) / count * 1e6


async def ask_us(ref: Any, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        await ref.ask(i, 5.0)
    return (time.perf_counter() - start) / count * 1e6


def decide_us(count: int) -> float:
    """CommandContext + uuid7 + decide + fold_decision: the agent's own work per deposit."""
    agent = Account()
    state = AccountState("open", "bench", 100)
    command = Deposit("solo", 1)

    def once() -> None:
        cctx = CommandContext(time.time_ns(), uuid7(), "account-solo", 7)
        fold_decision(agent, state, agent.decide(state, command, cctx).events, "/app/account/account-solo")

    return timed_us(once, count)


async def breakdown(app: Application, root: Path, count: int) -> dict[str, float]:
    """Where one sequential durable dispatch spends its time, each part measured alone.

    Rounds alternate the four loops (dispatch and bare append, on this sync journal and on a
    fast one) so drift on a shared machine hits them alike. The agent layer's own cost is
    dispatch minus append on the fast journal (no fsync), paired per round.
    """
    journal, chunk, median = app.journal, max(100, count // 5), statistics.median
    loops: dict[str, list[float]] = {name: [] for name in ("dispatch_sync", "append_sync", "dispatch_fast", "append_fast")}
    async with open_app(root / "breakdown-fast", durability="fast") as fast:
        await fast.dispatch(OpenAccount("solo", "bench"))
        await dispatch_loop(fast, Deposit("solo", 1), 500)
        for _ in range(5):
            settle()
            loops["dispatch_sync"].append(await dispatch_loop(app, Deposit("solo", 1), chunk) / chunk * 1e6)
            loops["append_sync"].append(await append_us(journal, "account-parts", chunk))
            loops["dispatch_fast"].append(await dispatch_loop(fast, Deposit("solo", 1), chunk) / chunk * 1e6)
            loops["append_fast"].append(await append_us(fast.journal, "account-parts", chunk))
    parts = {f"{name}_us": median(values) for name, values in loops.items()}
    parts["agent_layer_us"] = median(d - a for d, a in zip(loops["dispatch_fast"], loops["append_fast"]))
    parts["stream_version_check_us"] = timed_us(lambda: journal.stream_version("account-solo"), 20_000)
    parts["decide_and_fold_us"] = decide_us(20_000)
    parts["ask_round_trip_us"] = await ask_us(app.runtime.spawn(Echo, name="echo"), 5000)
    parts["agent_layer_rest_us"] = parts["agent_layer_us"] - sum(
        parts[k] for k in ("stream_version_check_us", "decide_and_fold_us", "ask_round_trip_us")
    )
    return {k: round(v, 1) for k, v in parts.items()}


def command_params(**extra: Any) -> dict[str, Any]:
    return {
        "durability": SYNC, "sqlite": SQLITE_SYNC, "command": "Deposit(account_id, 1): one Deposited event",
        "z8": "await app.dispatch(Deposit(...)) on Application(bank_router-style Router over examples/bank.py "
        "Account, durability='sync'); the reply comes after the event's commit is fsynced",
        "snapshot_every": Account.snapshot_every, "ask_timeout_s": 5.0,
        "sqlite_mode": "per command one transaction: BEGIN IMMEDIATE; SELECT state row; the same Account.decide "
        "and fold; INSERT event row; UPDATE state row; COMMIT",
        **extra,
    }


async def bench_single(sizes: Sizes, root: Path, dbos: dict[str, Any] | None) -> None:
    peer = SqliteBank(root / "single.sqlite")
    peer.open_accounts(iter(["solo", "warm"]))
    peer.settle_wal("warm")
    z8, base = [], []
    async with open_app(root / "single") as app:
        await app.dispatch(OpenAccount("solo", "bench"))
        await dispatch_loop(app, Deposit("solo", 1), 500)  # warm: code paths, LMDB pages
        for _ in range(sizes.runs):
            settle()
            z8.append(sizes.single_cmds / await dispatch_loop(app, Deposit("solo", 1), sizes.single_cmds))
            settle()
            base.append(sizes.sqlite_single_cmds / sqlite_commands(peer, [Deposit("solo", 1)] * sizes.sqlite_single_cmds))
        parts = await breakdown(app, root, sizes.single_cmds)
    peer.close()
    params = command_params(
        agents=1, commands_per_run=sizes.single_cmds, sqlite_commands_per_run=sizes.sqlite_single_cmds,
        mode="one task awaits each dispatch in turn",
        breakdown_us_per_command=parts,
        breakdown="timed after the runs, in 5 rounds alternating: the dispatch loop and journal.append of one "
        "event with an agent's metadata and expected version, on this sync journal and on a second "
        "Application with durability='fast' (medians); agent_layer = dispatch_fast - append_fast, paired per "
        "round (everything but the write); its parts timed alone: journal.stream_version (the per-command "
        "catch-up check), CommandContext+uuid7+decide+fold_decision, ask round trip to a plain actor "
        "(timeout 5.0); the rest is routing, the middleware chain, the Agent.receive/_handle frames, two "
        "more loop passes than a bare append, and the snapshot written every 100 events",
    )
    emit("agents.dispatch.single", z8, "commands/s", SQLITE_COMMAND, base, params)
    if dbos is not None:
        emit("agents.dispatch.single", z8, "commands/s", DBOS_COMMAND, dbos["single"], {
            **params, "dbos_commands_per_run": dbos["commands"], "peer": dbos["mode"], "dbos_version": dbos["version"],
        })


async def bench_concurrent(sizes: Sizes, root: Path, dbos: dict[str, Any] | None) -> None:
    ids = [str(a) for a in range(sizes.agents)]
    peer = SqliteBank(root / "concurrent.sqlite")
    peer.open_accounts(iter([*ids, "warm"]))
    peer.settle_wal("warm")
    round_robin = [Deposit(ids[i % len(ids)], 1) for i in range(sizes.sqlite_concurrent_cmds)]
    z8, base, p50, p99 = [], [], [], []
    count = sizes.agents * sizes.per_agent
    async with open_app(root / "concurrent") as app:
        await asyncio.gather(*(app.dispatch(OpenAccount(a, "bench")) for a in ids))
        await dispatch_concurrently(app, sizes.agents, 5)  # warm
        for _ in range(sizes.runs):
            settle()
            seconds, latencies = await dispatch_concurrently(app, sizes.agents, sizes.per_agent)
            z8.append(count / seconds)
            ordered = sorted(latencies)
            p50.append(percentile(ordered, 0.5) * 1e3)
            p99.append(percentile(ordered, 0.99) * 1e3)
            settle()
            base.append(len(round_robin) / sqlite_commands(peer, round_robin))
    peer.close()
    fast = await concurrent_fast(sizes, root)
    params = command_params(
        agents=sizes.agents, commands_per_agent=sizes.per_agent, commands_per_run=count,
        mode=f"{sizes.agents} asyncio tasks, each awaiting dispatches to its own account in turn "
        f"({sizes.agents} commands in flight); group commit shares fsyncs between them",
        dispatch_latency_p50_ms=round(statistics.median(p50), 3), dispatch_latency_p99_ms=round(statistics.median(p99), 3),
        z8_fast_commands_per_s=round(fast, 1),
        z8_fast="the same run once on an Application with durability='fast' (no fsync): the CPU-bound ceiling",
        sqlite_concurrency="one connection processing the accounts' commands in turn, round-robin "
        "(SQLite serialises writers)", sqlite_commands_per_run=len(round_robin),
        target=">= 10,000 commands/s",
    )
    emit("agents.dispatch.concurrent", z8, "commands/s", SQLITE_COMMAND, base, params)
    if dbos is not None:
        emit("agents.dispatch.concurrent", z8, "commands/s", DBOS_COMMAND, dbos["concurrent"], {
            **params, "dbos_commands_per_run": dbos["commands"], "peer": dbos["mode"]
            + "; round-robin over 1,000 accounts", "dbos_version": dbos["version"],
        })


async def concurrent_fast(sizes: Sizes, root: Path) -> float:
    async with open_app(root / "concurrent-fast", durability="fast") as app:
        await asyncio.gather(*(app.dispatch(OpenAccount(str(a), "bench")) for a in range(sizes.agents)))
        await dispatch_concurrently(app, sizes.agents, 5)
        settle()
        seconds, _ = await dispatch_concurrently(app, sizes.agents, sizes.per_agent)
    return sizes.agents * sizes.per_agent / seconds


# --- rehydration ---------------------------------------------------------------------------


async def write_stream(journal: Any, stream: str, events: int) -> None:
    """AccountOpened then Deposited(1)s, 1,000 per append."""
    batch = [AccountOpened("bench")] + [Deposited(1)] * (min(events, 1000) - 1)
    await journal.append(stream, batch)
    written = len(batch)
    while written < events:
        chunk = [Deposited(1)] * min(1000, events - written)
        await journal.append(stream, chunk)
        written += len(chunk)


async def snapshot_at(journal: Any, stream: str, version: int) -> None:
    """What the agent itself saves: its msgpack-encoded state at ``version``."""
    state = fold(Account(), [AccountOpened("bench")] + [Deposited(1)] * (version - 1))
    await journal.save_snapshot(stream, version, _encode(state), Account.agent_state_schema)


def sqlite_copy(peer: SqliteBank, stream: str, events: int, snapshot: int | None) -> None:
    rows = [(stream, 1, "AccountOpened", _encode(AccountOpened("bench")))]
    rows += [(stream, v, "Deposited", _encode(Deposited(1))) for v in range(2, events + 1)]
    peer.conn.execute("BEGIN IMMEDIATE")
    peer.conn.executemany(INSERT_EVENT, rows)
    if snapshot is not None:
        state = fold(Account(), [AccountOpened("bench")] + [Deposited(1)] * (snapshot - 1))
        peer.conn.execute("INSERT INTO snapshots VALUES (?, ?, ?)", (stream, snapshot, _encode(state)))
    peer.conn.execute("COMMIT")


async def activation_ms(app: Application, account_id: str, expected: int) -> float:
    """Dispatch GetBalance to a passivated agent (spawn + rehydrate + decide + reply), then stop it."""
    settle()
    start = time.perf_counter()
    balance = await app.dispatch(GetBalance(account_id))
    elapsed = (time.perf_counter() - start) * 1e3
    if balance != expected:
        raise RuntimeError(f"{account_id} rehydrated to balance {balance}, expected {expected}")
    await app.runtime.stop(agent_path(account_id))
    await app.runtime._core.system.drain()  # type: ignore[union-attr]  # noqa: SLF001 - start the next one quiet
    return elapsed


def direct_ms(app: Application, stream: str) -> float:
    """``z8.actors._agent.rehydrate`` alone: snapshot, read_stream, decode, evolve."""
    settle()
    start = time.perf_counter()
    rehydrate(Account(), app.journal, stream)
    return (time.perf_counter() - start) * 1e3


def rehydrate_parts(app: Application, stream: str) -> dict[str, float]:
    """The no-snapshot rehydration split: read the envelopes, decode payloads, evolve."""
    journal, agent = app.journal, Account()
    settle()
    start = time.perf_counter()
    envelopes = journal.read_stream(stream)
    read = time.perf_counter()
    events = [journal.decode(envelope) for envelope in envelopes]
    decoded = time.perf_counter()
    state = AccountState()
    for event in events:
        state = agent.evolve(state, event)
    done = time.perf_counter()
    return {"read_stream": (read - start) * 1e3, "decode": (decoded - read) * 1e3, "evolve": (done - decoded) * 1e3}


def sqlite_fold_ms(peer: SqliteBank, stream: str, snapshots: bool, expected: int) -> float:
    settle()
    start = time.perf_counter()
    state, _ = peer.fold(stream, snapshots)
    reply = peer.agent.decide(state, GetBalance(stream), CommandContext(time.time_ns(), uuid7(), stream, 0)).reply
    elapsed = (time.perf_counter() - start) * 1e3
    if reply != expected:
        raise RuntimeError(f"SQLite fold of {stream} gave {reply}, expected {expected}")
    return elapsed


async def bench_rehydrate(sizes: Sizes, root: Path) -> None:
    n = sizes.rehydrate_events
    expected = n - 1  # AccountOpened, then n - 1 deposits of 1
    snaps = {"snap": n - SNAPSHOT_TAIL, "snap-head": n, "snap-tail99": n - 99}
    peer = SqliteBank(root / "rehydrate.sqlite")
    sqlite_copy(peer, PREFIX + "plain", n, None)
    sqlite_copy(peer, PREFIX + "snap", n, snaps["snap"])
    async with open_app(root / "rehydrate") as app:
        for name in ("plain", *snaps):
            await write_stream(app.journal, PREFIX + name, n)
        for name, version in snaps.items():
            await snapshot_at(app.journal, PREFIX + name, version)
        samples: dict[str, list[float]] = {name: [] for name in ("plain", *snaps)}
        base: dict[str, list[float]] = {"plain": [], "snap": []}
        direct: dict[str, list[float]] = {"plain": [], "snap": []}
        parts: list[dict[str, float]] = []
        for name in samples:
            await activation_ms(app, name, expected)  # warm
        for _ in range(sizes.rehydrate_runs):
            for name, found in samples.items():
                found.append(await activation_ms(app, name, expected))
            for name, found in direct.items():
                found.append(direct_ms(app, PREFIX + name))
            parts.append(rehydrate_parts(app, PREFIX + "plain"))
            base["plain"].append(sqlite_fold_ms(peer, PREFIX + "plain", False, expected))
            base["snap"].append(sqlite_fold_ms(peer, PREFIX + "snap", True, expected))
    peer.close()
    common = {
        "stream_events": n, "durability": f"{SYNC} (the stream was written durably; reads hit a warm page cache)",
        "z8": "value: await app.dispatch(GetBalance(id)) to a passivated agent, timed to the reply: spawn under "
        "the Account supervisor, on_start's rehydrate (load_snapshot + read_stream + decode + evolve), "
        "the stream_version check, decide (a query: nothing written); the agent is stopped after each run and "
        "$system drained, so each run writes only its own ActorStarted record (not awaited)",
        "events": "AccountOpened then Deposited(1) x (stream_events - 1), written 1,000 per append",
        "sqlite": "the same events as rows (type, msgpack payload) in WAL SQLite; SELECT ... ORDER BY version, "
        "decode with msgspec, the same Account.evolve, decide GetBalance; no actor, no spawn",
    }
    emit("agents.rehydrate.no_snapshot", samples["plain"], "ms", SQLITE_REHYDRATE, base["plain"], {
        **common, "snapshot": None, "z8_direct_rehydrate_ms": round(statistics.median(direct["plain"]), 3),
        "z8_direct_parts_ms": {k: round(statistics.median(p[k] for p in parts), 3) for k in parts[0]},
        "z8_direct_parts": "read_stream (LMDB index walk + record fetch + Envelope decode), journal.decode of "
        "the payloads, Account.evolve: each timed alone",
        "z8_direct": "z8.actors._agent.rehydrate(agent, journal, stream) alone, median", "target": "<= 20 ms",
    }, lower_is_better=True)
    emit("agents.rehydrate.snapshot", samples["snap"], "ms", SQLITE_REHYDRATE_SNAPSHOT, base["snap"], {
        **common, "snapshot_every": Account.snapshot_every, "snapshot_version": snaps["snap"],
        "events_after_snapshot": SNAPSHOT_TAIL,
        "snapshot": "saved as the agent saves it (msgpack of the state, agent_state_schema); "
        f"{SNAPSHOT_TAIL} events after it is the mean tail under snapshot_every=100",
        "z8_ms_events_after_snapshot_0": round(statistics.median(samples["snap-head"]), 3),
        "z8_ms_events_after_snapshot_99": round(statistics.median(samples["snap-tail99"]), 3),
        "z8_direct_rehydrate_ms": round(statistics.median(direct["snap"]), 3), "target": "<= 0.5 ms",
        "sqlite_snapshot": "SELECT the snapshot row, decode the state, then the events after it",
    }, lower_is_better=True)


# --- activation and passivated memory (each in a fresh subprocess) ---------------------------


def memory() -> dict[str, float]:
    """VmRSS and its anonymous / file-backed (LMDB mmap) parts, and the peak, in MiB."""
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                found[key] = int(line.split()[1]) / 1024
    found["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return found


async def write_accounts(path: Path, count: int) -> float:
    """``count`` streams of one AccountOpened each, 10,000 streams per append_many."""
    start = time.perf_counter()
    journal = open_journal(path, durability="fast", types=bank.bank_types())
    event = [AccountOpened("bench")]
    try:
        for first in range(0, count, SETUP_BATCH):
            last = min(count, first + SETUP_BATCH)
            await journal.append_many([Append(f"{PREFIX}{i}", event) for i in range(first, last)])
    finally:
        await journal.aclose()
    return time.perf_counter() - start


async def setup_seconds(path: Path, count: int) -> dict[str, float]:
    return {"seconds": await write_accounts(path, count)}


async def activate_all(app: Application, count: int) -> float:
    """WORKERS tasks share the ids; each agent gets exactly one GetBalance."""
    ids = iter(range(count))

    async def worker() -> None:
        for i in ids:
            if await app.dispatch(GetBalance(str(i))) != 0:
                raise RuntimeError(f"account {i} did not rehydrate to balance 0")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return time.perf_counter() - start


async def child_activate(count: int, root: str, passivate: bool) -> dict[str, Any]:
    """Open the Application over the journal the setup child wrote; activate every agent."""
    path = Path(root) / "activate"
    app = open_app(path, PassivatingAccount if passivate else Account)
    await app.start()
    core = app.runtime._core  # noqa: SLF001 - counting live cells is how passivation is observed
    assert core is not None
    idle_cells = len(core)
    settle()
    before = memory()
    seconds = await activate_all(app, count)
    active = memory()
    live = len(core) - idle_cells
    result = {"seconds": seconds, "before": before, "active": active, "live_after": live}
    if passivate:
        start = time.perf_counter()
        while len(core) > idle_cells:
            await asyncio.sleep(0.05)
        result["passivate_wait_s"] = time.perf_counter() - start
    await core.system.drain()
    settle()
    result["after"] = memory()
    result["live_at_end"] = len(core) - idle_cells
    result["journal_mib"] = (path / "data.mdb").stat().st_size / 2**20
    result["head_position"] = app.journal.head_position()
    return result


def measure_child(side: str, count: int, scratch: str) -> dict[str, Any]:
    """Write the journal in one subprocess, then measure in a fresh one that only opens it."""
    setup = run_child("setup", count, scratch)
    return {**run_child(side, count, scratch), "setup_s": setup["seconds"]}


def run_child(side: str, count: int, scratch: str) -> dict[str, Any]:
    command = [sys.executable, os.path.abspath(__file__), "--child", side, "--count", str(count), "--dir", scratch]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise RuntimeError(f"measurement {side} x {count} failed (exit {out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def sqlite_activate(root: Path, count: int) -> float:
    """The same work on SQLite: for each account read its stream, fold, decide GetBalance."""
    peer = SqliteBank(root / "activate.sqlite")
    try:
        sqlite_copy_many(peer, count)
        settle()
        start = time.perf_counter()
        for i in range(count):
            stream = f"{PREFIX}{i}"
            state, version = peer.fold(stream, False)
            cctx = CommandContext(time.time_ns(), uuid7(), stream, version)
            if peer.agent.decide(state, GetBalance(str(i)), cctx).reply != 0:
                raise RuntimeError(f"SQLite account {i} folded wrong")
        return count / (time.perf_counter() - start)
    finally:
        peer.close()


def sqlite_copy_many(peer: SqliteBank, count: int) -> None:
    payload = _encode(AccountOpened("bench"))
    peer.conn.execute("BEGIN IMMEDIATE")
    peer.conn.executemany(INSERT_EVENT, ((f"{PREFIX}{i}", 1, "AccountOpened", payload) for i in range(count)))
    peer.conn.execute("COMMIT")


def bench_activate(sizes: Sizes, root: Path) -> None:
    n = sizes.activate_agents
    rows = []
    for r in range(sizes.activate_runs):
        rows.append(measure_child("activate", n, tempfile.mkdtemp(prefix=f"activate{r}-", dir=root)))
    base = [sqlite_activate(Path(tempfile.mkdtemp(prefix=f"sqlite-activate{r}-", dir=root)), n)
            for r in range(sizes.activate_runs)]
    active_rss = [row["active"]["VmRSS"] for row in rows]
    per_agent = [(row["active"]["RssAnon"] - row["before"]["RssAnon"]) * 1024 / n for row in rows]
    emit("agents.activate", [n / row["seconds"] for row in rows], "agents/s", SQLITE_ACTIVATE, base, {
        "agents": n, "subprocess_per_measurement": True, "durability": SYNC,
        **({"quick_note": "--quick activates fewer agents; the full run activates 100,000"} if n < 100_000 else {}),
        "z8": f"{WORKERS} asyncio tasks share the ids; each agent gets exactly one "
        "app.dispatch(GetBalance(id)) (a query: no event written), which spawns it under the Account "
        "supervisor and rehydrates its existing 1-event stream (AccountOpened); timed from the first dispatch "
        "to the last reply; agents stay in memory (no idle_timeout); every start is recorded in $system "
        "(batched per loop tick, not awaited)",
        "seconds": round(statistics.median(row["seconds"] for row in rows), 3),
        "stream_events": 1, "journal_setup": "append_many of 10,000 streams per call, durability='fast', "
        "in a separate subprocess before the measuring one",
        "gc": "default thresholds",
        "rss_with_all_active_mib": round(statistics.median(active_rss), 1),
        "kib_anon_per_live_agent": round(statistics.median(per_agent), 2),
        "sqlite": "one connection: for each account SELECT its events, decode, the same Account.evolve, "
        "decide GetBalance; no actor, nothing kept in memory",
    })


def bench_passivated(sizes: Sizes, root: Path) -> None:
    n = sizes.passivated_agents
    row = measure_child("passivated", n, tempfile.mkdtemp(prefix="passivated-", dir=root))
    after, active, before = row["after"], row["active"], row["before"]
    emit("agents.passivated_rss", [after["VmRSS"]], "MiB", None, None, {
        "agents": n, "subprocess_per_measurement": True,
        **({"quick_note": "--quick uses 100,000 agents; the full run uses 1,000,000"} if n < 1_000_000 else {}),
        "z8": f"a fresh process opens Application(durability='sync') over a journal already holding {n:,} "
        "account streams of one event each; every agent is activated by one GetBalance "
        f"({WORKERS} concurrent dispatchers) and leaves memory {IDLE_TIMEOUT}s after it "
        f"(Account with idle_timeout={IDLE_TIMEOUT}); value: VmRSS once all have passivated, $system is "
        "drained and gc.collect() has run",
        "journal_setup": "append_many of 10,000 streams per call, durability='fast', in a separate subprocess: "
        "the measuring process only opens the journal",
        "rss_anon_mib": round(after["RssAnon"], 1),
        "rss_file_mib": round(after["RssFile"], 1),
        "rss_file": "pages of the LMDB map read during activation (page cache, shared, reclaimable)",
        "rss_before_activation_mib": round(before["VmRSS"], 1),
        "rss_at_end_of_activation_mib": round(active["VmRSS"], 1),
        "peak_rss_mib": round(after["peak"], 1), "peak": "ru_maxrss of the measuring process",
        "live_agents_at_end_of_activation": row["live_after"], "live_agents_after": row["live_at_end"],
        "activation_s": round(row["seconds"], 3), "activation_agents_per_s": round(n / row["seconds"], 1),
        "passivation_wait_s": round(row["passivate_wait_s"], 3),
        "journal_data_mib": round(row["journal_mib"], 1), "journal_events": row["head_position"],
        "journal_events_are": "the accounts' events plus the $system ActorStarted/ActorStopped records of "
        "every activation and passivation",
        "target": "< 1 GiB (1024 MiB)",
    }, lower_is_better=True)


# --- DBOS Transact on SQLite (optional peer, full run, its own subprocess) --------------------


def dbos_available() -> bool:
    return importlib.util.find_spec("dbos") is not None


def child_dbos(commands: int, root: str, runs: int) -> dict[str, Any]:
    from importlib.metadata import version

    import sqlalchemy as sa
    from dbos import DBOS, SQLAlchemyDatasource

    def pragmas(connection: Any, _record: Any) -> None:
        connection.isolation_level = "IMMEDIATE"  # as DBOS configures its own SQLite connections
        connection.execute("PRAGMA busy_timeout=30000")
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")

    def engine(name: str) -> Any:
        made = sa.create_engine(f"sqlite:///{root}/{name}.sqlite")
        sa.event.listen(made, "connect", pragmas)
        return made

    app_engine = engine("app")
    peer = SqliteBank(Path(root) / "app.sqlite")  # creates the schema, opens the accounts
    ids = [str(a) for a in range(1000)]
    peer.open_accounts(iter([*ids, "solo"]))
    peer.close()
    DBOS(config={"name": "z8-bench", "system_database_url": f"sqlite:///{root}/sys.sqlite",
                 "system_database_engine": engine("sys"), "log_level": "WARNING"})
    datasource = SQLAlchemyDatasource.create(f"sqlite:///{root}/app.sqlite", engine=app_engine)
    agent = Account()

    @datasource.transaction()
    def deposit_tx(account_id: str, amount: int) -> int:
        session, stream = datasource.sql_session(), PREFIX + account_id
        status, owner, balance, at = session.execute(sa.text(SELECT_STATE.replace("?", ":s")), {"s": stream}).one()
        state = AccountState(status, owner, balance)
        decision = agent.decide(state, Deposit(account_id, amount), CommandContext(time.time_ns(), uuid7(), stream, at))
        new = fold_decision(agent, state, decision.events, stream)
        session.execute(sa.text("INSERT INTO events(stream, version, type, payload) VALUES (:s, :v, :t, :p)"),
                        {"s": stream, "v": at + 1, "t": "Deposited", "p": _encode(decision.events[0])})
        session.execute(sa.text("UPDATE accounts SET status = :st, owner = :o, balance = :b, version = :v "
                                "WHERE stream = :s"), {"st": new.status, "o": new.owner, "b": new.balance,
                                                       "v": at + 1, "s": stream})
        return decision.reply  # type: ignore[no-any-return]

    @DBOS.workflow()
    def deposit(account_id: str, amount: int) -> int:
        return deposit_tx(account_id, amount)  # type: ignore[no-any-return]

    DBOS.launch()

    def rate(targets: list[str]) -> float:
        settle()
        start = time.perf_counter()
        for account_id in targets:
            deposit(account_id, 1)
        return len(targets) / (time.perf_counter() - start)

    rate(["solo"] * 50)  # warm: code paths, both WALs
    single = [rate(["solo"] * commands) for _ in range(runs)]
    concurrent = [rate([ids[i % len(ids)] for i in range(commands)]) for _ in range(runs)]
    return {
        "single": single, "concurrent": concurrent, "commands": commands, "version": version("dbos"),
        "mode": "DBOS Transact, system and application databases on SQLite (WAL, synchronous=FULL); one "
        "@DBOS.workflow per command calling one @datasource.transaction that reads the state row, runs the "
        "same Account.decide/fold, inserts the event row and updates the state row; one thread, in turn",
    }


def measure_dbos(sizes: Sizes, root: Path) -> dict[str, Any] | None:
    if not sizes.dbos_cmds:
        return None
    if not dbos_available():
        print("agents.py: dbos is not installed; the DBOS peer is skipped", file=sys.stderr)
        return None
    scratch = tempfile.mkdtemp(prefix="dbos-", dir=root)
    command = [sys.executable, os.path.abspath(__file__), "--child", "dbos", "--count", str(sizes.dbos_cmds),
               "--runs", str(sizes.runs), "--dir", scratch]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        print("agents.py: the DBOS peer failed; it is skipped", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# --- entry points ----------------------------------------------------------------------------


GROUPS = ("single", "concurrent", "rehydrate", "activate", "passivated")


async def main(sizes: Sizes, base: str | None, only: set[str]) -> None:
    root = Path(tempfile.mkdtemp(prefix="z8-bench-agents-", dir=base))
    try:
        dbos = measure_dbos(sizes, root) if only & {"single", "concurrent"} else None
        if "single" in only:
            await bench_single(sizes, root, dbos)
        if "concurrent" in only:
            await bench_concurrent(sizes, root, dbos)
        if "rehydrate" in only:
            await bench_rehydrate(sizes, root)
        if "activate" in only:
            bench_activate(sizes, root)
        if "passivated" in only:
            bench_passivated(sizes, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(result: dict[str, Any]) -> None:
    """Print a child's result and end the process at once (nothing to tear down)."""
    print(json.dumps(result), flush=True)
    os._exit(0)


async def areport(measure: Any) -> None:
    report(await measure)


def child_main(side: str, count: int, scratch: str, runs: int) -> None:
    if side == "dbos":
        report(child_dbos(count, scratch, runs))
    elif side == "setup":
        asyncio.run(areport(setup_seconds(Path(scratch) / "activate", count)))
    else:
        asyncio.run(areport(child_activate(count, scratch, passivate=side == "passivated")))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs (well under 60 s)")
    parser.add_argument("--dir", default=None, help="where to make the scratch directory (default: system temp dir)")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated subset of {','.join(GROUPS)}")
    parser.add_argument("--child", choices=("setup", "activate", "passivated", "dbos"), help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.count, args.dir, args.runs)
    else:
        chosen = {name.strip() for name in args.only.split(",") if name.strip()}
        if not chosen <= set(GROUPS):
            parser.error(f"--only takes names from {', '.join(GROUPS)}")
        asyncio.run(main(QUICK if args.quick else FULL, args.dir, chosen))
