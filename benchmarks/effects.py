"""Durable effect benchmarks: effect steps per second, and timer lateness on the real clock.

Run ``python benchmarks/effects.py [--quick] [--only sequential,concurrent,timers] [--no-peers]``.
Prints one JSON line per figure, as ``BENCHMARKS.md`` specifies: ``value`` is the median of
``runs`` repetitions, ``spread`` their [min, max], and ``ratio`` is above 1 when z8 is ahead.
``effects.steps.*`` print one line per peer installed (``pip install -e '.[bench]'``).

What is compared, so the ratios mean what they say:

- **A step** is one trivial effect whose intent and outcome are both durable. On z8 an
  agent's ``decide`` returns ``Decision(effects=[Call(noop, Step(i, total))])``; the
  outbox runs ``noop`` (an async function returning its request) and hands
  ``EffectSucceeded`` back to ``decide``, which calls the next step in the same append
  that journals the outcome. So each step is an ``EffectIntended`` journaled, the effect
  run, an ``EffectSucceeded`` journaled; the Application runs with ``durability="sync"``
  (every commit fsynced before anything depends on it).
- **DBOS Transact** (its own subprocess) on SQLite, ``journal_mode=WAL`` and
  ``synchronous=FULL`` (checked), configured as in ``agents.py``: one ``@DBOS.workflow``
  calling ``total`` trivial ``@DBOS.step`` functions in turn; DBOS checkpoints each step's
  output in its system database before the next step starts.
- **LangGraph** (its own subprocess) with its SQLite checkpointer (WAL, and
  ``synchronous=FULL`` set on the connection and checked), ``durability="sync"`` (each
  step's checkpoint is written before the next step starts): a graph of one trivial node
  looping on itself ``total`` times. ``SqliteSaver`` + ``invoke`` for one thread;
  ``AsyncSqliteSaver`` + ``ainvoke`` (its async API, one aiosqlite connection) for 1,000
  threads at once.
- **Sequential**: one agent / workflow / thread doing ``seq_steps`` steps in turn.
  **Concurrent**: 1,000 agents / workflows / threads (200 with ``--quick``) each doing
  ``per_agent`` steps, all started at once, timed until the last one's last outcome is
  durable. z8's agents run as tasks on one event loop (group commit shares fsyncs);
  DBOS's workflows run on its executor threads (``DBOS.start_workflow``); LangGraph's
  threads are ``ainvoke`` tasks on one loop.
- **Timers**: ``timers`` agents each arm one durable ``Timer`` for a due time spread
  evenly over ``timer_spread_s`` seconds on the real clock; lateness is the wall time at
  which ``decide`` receives the timer's message minus its due time. (``decide`` records
  ``time.time_ns()`` in a module list: impure, for this measurement only.) The params
  also time every garbage collection during the runs, and one extra run with
  ``gc.freeze()`` (a diagnostic, not the value).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypedDict

import msgspec

import z8
from z8.effects import EffectContext, EffectSucceeded

from _report import emit, percentile

SYNC = "sync"
SQLITE_SYNC = "WAL, synchronous=FULL"
DBOS_STEPS = "dbos.transact.sqlite.workflow_steps"
LANGGRAPH_NODES = "langgraph.sqlite_checkpointer.durability_sync.nodes"
PREFIX = "step-"


@dataclass(frozen=True)
class Sizes:
    """How much work each figure does per run."""

    seq_runs: int
    seq_steps: int
    conc_runs: int
    agents: int
    per_agent: int
    timer_runs: int
    timers: int
    timer_spread_s: float
    peers: bool
    peer_warm: int  # workflows / threads of one step run once before the concurrent runs
    quick: bool


FULL = Sizes(seq_runs=5, seq_steps=1000, conc_runs=3, agents=1000, per_agent=10,
             timer_runs=5, timers=10_000, timer_spread_s=5.0, peers=True, peer_warm=200, quick=False)
QUICK = Sizes(seq_runs=3, seq_steps=200, conc_runs=1, agents=200, per_agent=2,
              timer_runs=1, timers=2000, timer_spread_s=1.0, peers=True, peer_warm=20, quick=True)


def settle() -> None:
    gc.collect()


def rounded(load: tuple[float, ...]) -> list[float]:
    """``os.getloadavg()`` for the params: the machine is shared, so say how busy it was."""
    return [round(x, 2) for x in load]


# --- the z8 agent -----------------------------------------------------------------------------


class Step(msgspec.Struct, frozen=True, array_like=True):
    i: int
    total: int


class Run(msgspec.Struct, frozen=True):
    """Start ``steps`` effect steps on agent ``agent_id``."""

    agent_id: str
    steps: int


class Nothing(msgspec.Struct, frozen=True):
    pass


_last: dict[str, asyncio.Future[str]] = {}
"""stream -> future of the id of its last step's effect (set by ``noop`` when it runs it)."""


@z8.effect(kind="irreversible", idempotent=True)
async def noop(request: Step, ctx: EffectContext) -> Step:
    """The trivial effect; on a run's last step it tells the benchmark which effect to await."""
    if request.i == request.total:
        waiting = _last.get(ctx.stream)
        if waiting is not None and not waiting.done():
            waiting.set_result(ctx.effect_id)
    return request


class Stepper(z8.Agent):
    """Calls ``noop`` ``total`` times in turn: each outcome decides the next call."""

    State = Nothing
    agent_effects = (noop,)

    def decide(self, state: Nothing, message: Any, ctx: z8.actors.CommandContext) -> z8.Decision:
        if type(message) is EffectSucceeded:
            done: Step = message.result
            if done.i >= done.total:
                return z8.Decision()
            return z8.Decision(effects=[z8.Call(noop, Step(done.i + 1, done.total))])
        return z8.Decision(effects=[z8.Call(noop, Step(1, message.steps))], reply="started")

    def evolve(self, state: Nothing, event: Any) -> Nothing:
        return state


def stepper_app(path: Path, durability: str = SYNC) -> z8.Application:
    router = z8.Router().identify(Stepper, by="agent_id", prefix=PREFIX).dispatch(Run, to=Stepper)
    return z8.Application(router, path, durability=durability)  # type: ignore[arg-type]


async def run_steps(app: z8.Application, ids: list[str], steps: int) -> float:
    """Start ``steps`` steps on each agent at once; seconds until every last outcome is durable.

    Each agent's ``app.wait_effect`` on its last step is called as soon as ``noop`` runs that
    step, so it waits on the outbox (no stream read) and returns once the outbox has seen
    the step's ``EffectSucceeded`` committed, with the decision on it, in one append.
    """
    loop = asyncio.get_running_loop()
    for agent_id in ids:
        _last[PREFIX + agent_id] = loop.create_future()

    async def finished(agent_id: str) -> Any:
        return await app.wait_effect(await _last[PREFIX + agent_id], 120.0)

    start = time.perf_counter()
    waits = asyncio.gather(*(finished(agent_id) for agent_id in ids))
    await asyncio.gather(*(app.dispatch(Run(agent_id, steps)) for agent_id in ids))
    outcomes = await waits
    elapsed = time.perf_counter() - start
    if not all(type(o) is EffectSucceeded for o in outcomes):
        failed = [o for o in outcomes if type(o) is not EffectSucceeded]
        raise RuntimeError(f"a last step did not succeed: {failed[:3]}")
    _last.clear()
    return elapsed


class FloorOutcome(msgspec.Struct, frozen=True):
    """Shaped like EffectSucceeded: what the floor appends instead of a real outcome."""

    effect_id: str
    effect: str
    result: Any = None
    attempts: int = 1


class FloorIntent(msgspec.Struct, frozen=True):
    """Shaped like EffectIntended (its leading fields): the floor's stand-in for an intent."""

    effect_id: str
    effect: str
    kind: str
    request: Any
    idempotent: bool = False


async def append_floor_us(path: Path, count: int) -> float:
    """journal.append of an outcome-like and an intent-like record (what a step writes), alone,
    in turn, on a journal of its own with durability='sync'."""
    records = [FloorOutcome("floor/1/0", "noop", [1, 1]),
               FloorIntent("floor/2/0", "noop", "irreversible", [2, 2], True)]
    async with z8.open_journal(path, types=z8.TypeRegistry([FloorOutcome, FloorIntent]), durability=SYNC) as journal:
        version = 0
        for _ in range(50):  # warm
            version = (await journal.append("floor", records, version or z8.NO_STREAM))[-1].version
        start = time.perf_counter()
        for _ in range(count):
            written = await journal.append("floor", records, version, actor="/app/stepper/floor")
            version = written[-1].version
        return (time.perf_counter() - start) / count * 1e6


async def z8_sequential(sizes: Sizes, root: Path) -> dict[str, Any]:
    samples, load = [], os.getloadavg()
    async with stepper_app(root / "z8-seq") as app:
        await run_steps(app, ["solo"], 200)  # warm: activation, code paths, LMDB pages
        for _ in range(sizes.seq_runs):
            settle()
            samples.append(sizes.seq_steps / await run_steps(app, ["solo"], sizes.seq_steps))
    async with stepper_app(root / "z8-seq-fast", durability="fast") as app:
        await run_steps(app, ["solo"], 200)
        settle()
        fast = sizes.seq_steps / await run_steps(app, ["solo"], sizes.seq_steps)
    floor = statistics.median([await append_floor_us(root / f"floor{r}", sizes.seq_steps) for r in range(3)])
    return {"samples": samples, "append_floor_us": floor, "fast": fast, "load": load}


async def z8_concurrent(sizes: Sizes, root: Path) -> dict[str, Any]:
    ids = [str(a) for a in range(sizes.agents)]
    samples, load = [], os.getloadavg()
    count = sizes.agents * sizes.per_agent
    async with stepper_app(root / "z8-conc") as app:
        await run_steps(app, ids, 2)  # warm: activates every agent
        for _ in range(sizes.conc_runs):
            settle()
            samples.append(count / await run_steps(app, ids, sizes.per_agent))
    async with stepper_app(root / "z8-conc-fast", durability="fast") as app:
        await run_steps(app, ids, 2)
        settle()
        fast = count / await run_steps(app, ids, sizes.per_agent)
    return {"samples": samples, "fast": fast, "load": load}


# --- timers --------------------------------------------------------------------------------


class Tick(msgspec.Struct, frozen=True):
    """A timer's message: its own due time (Unix ns)."""

    due: int


class Arm(msgspec.Struct, frozen=True):
    agent_id: str
    due: int


class Ping(msgspec.Struct, frozen=True):
    """A query (writes nothing): activates the agent before the timers are armed."""

    agent_id: str


_fired: list[tuple[int, int]] = []
"""(wall ns when decide received the Tick, its due ns): impure, for this measurement only."""
_all_fired: asyncio.Event | None = None
_expected = 0


class Sleeper(z8.Agent):
    """Arms one durable timer per Arm; records when decide receives the Tick."""

    State = Nothing

    def decide(self, state: Nothing, message: Any, ctx: z8.actors.CommandContext) -> z8.Decision:
        if type(message) is Tick:
            _fired.append((time.time_ns(), message.due))
            if len(_fired) >= _expected and _all_fired is not None:
                _all_fired.set()
            return z8.Decision()
        if type(message) is Arm:
            return z8.Decision(timers=[z8.Timer(Tick(message.due), at=message.due, id="tick")], reply=True)
        return z8.Decision(reply=True)

    def evolve(self, state: Nothing, event: Any) -> Nothing:
        return state


def sleeper_app(path: Path) -> z8.Application:
    router = z8.Router().identify(Sleeper, by="agent_id", prefix="sleeper-").dispatch(Arm, Ping, to=Sleeper)
    return z8.Application(router, path, types=z8.TypeRegistry([Tick]), durability=SYNC)


async def in_workers(commands: list[Any], app: z8.Application, workers: int = 1000) -> float:
    queue = iter(commands)

    async def worker() -> None:
        for command in queue:
            await app.dispatch(command, timeout=60.0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return time.perf_counter() - start


class GcPauses:
    """Collector pauses seen while installed (``gc.callbacks``): (generation, ms, wall ns at end)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float, int]] = []
        self._began = 0.0

    def __enter__(self) -> Self:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses.append((info["generation"], (time.perf_counter() - self._began) * 1e3, time.time_ns()))

    def within(self, start: int, end: int) -> list[tuple[int, float, int]]:
        return [p for p in self.pauses if start <= p[2] <= end]


async def timer_run(app: z8.Application, sizes: Sizes, ids: list[str], lead: float, *,
                    freeze: bool = False) -> dict[str, Any]:
    """Arm one timer per agent, due ``lead`` s from now plus an even spread; wait for all.

    ``freeze`` (a diagnostic, not the figure): ``gc.freeze()`` once every timer is armed,
    so the collector's full passes skip the 10,000 resident agents while the timers fire.
    """
    global _all_fired, _expected
    _fired.clear()
    _all_fired, _expected = asyncio.Event(), len(ids)
    settle()
    first_due = time.time_ns() + int(lead * 1e9)
    step = int(sizes.timer_spread_s * 1e9) // len(ids)
    with GcPauses() as collector:
        arming = await in_workers([Arm(a, first_due + i * step) for i, a in enumerate(ids)], app)
        armed_at = time.time_ns()
        if freeze:
            gc.freeze()
        try:
            await asyncio.wait_for(_all_fired.wait(), lead + sizes.timer_spread_s + 120.0)
        finally:
            if freeze:
                gc.unfreeze()
    late = sorted((at - due) / 1e6 for at, due in _fired)
    window = collector.within(first_due, max(at for at, _ in _fired))
    return {
        "p50": percentile(late, 0.5), "p99": percentile(late, 0.99), "max": late[-1], "min": late[0],
        "arming_s": arming, "margin_s": (first_due - armed_at) / 1e9, "fired": len(late),
        "full_gc_in_window": sum(1 for g, _, _ in window if g == 2),
        "longest_gc_pause_in_window_ms": max((ms for _, ms, _ in window), default=0.0),
        "longest_full_gc_pause_ms": max((ms for g, ms, _ in collector.pauses if g == 2), default=0.0),
    }


async def asyncio_floor(count: int, spread_s: float) -> dict[str, float]:
    """The same due times as bare ``loop.call_at`` callbacks: the floor of a Python loop."""
    loop = asyncio.get_running_loop()
    got: list[float] = []
    done = asyncio.Event()
    first = time.time_ns() + 500_000_000
    step = int(spread_s * 1e9) // count

    def fire(due: int) -> None:
        got.append((time.time_ns() - due) / 1e6)
        if len(got) == count:
            done.set()

    offset = loop.time() - time.time_ns() / 1e9
    for i in range(count):
        due = first + i * step
        loop.call_at(due / 1e9 + offset, fire, due)
    await done.wait()
    got.sort()
    return {"p50_ms": round(percentile(got, 0.5), 3), "p99_ms": round(percentile(got, 0.99), 3),
            "max_ms": round(got[-1], 3)}


async def bench_timers(sizes: Sizes, root: Path) -> None:
    ids = [str(a) for a in range(sizes.timers)]
    load = os.getloadavg()
    rows = []
    async with sleeper_app(root / "z8-timers") as app:
        activation = await in_workers([Ping(a) for a in ids], app)
        lead = max(1.0, 3.0 * activation)  # arming (one durable append each) must end before the first due
        for _ in range(sizes.timer_runs):
            rows.append(await timer_run(app, sizes, ids, lead))
        frozen = await timer_run(app, sizes, ids, lead, freeze=True)
        objects = len(gc.get_objects())
    if min(r["margin_s"] for r in rows) < 0:
        print("effects.py: arming ended after the first timer was due; the early timers' lateness includes "
              "arming", file=sys.stderr)
    floor = await asyncio_floor(sizes.timers, sizes.timer_spread_s)
    p99 = [row["p99"] for row in rows]
    med = statistics.median
    emit("effects.timers", p99, "ms", None, None, {
        "durability": SYNC, "timers": sizes.timers, "agents": sizes.timers, "timers_per_agent": 1,
        "clock": "real (time.time_ns; the Application's default clock)",
        **({"quick_note": "--quick uses 2,000 timers over 1 s; the full run 10,000 over 5 s"} if sizes.quick else {}),
        "spread_s": sizes.timer_spread_s, "fires_per_s": round(sizes.timers / sizes.timer_spread_s, 1),
        "value": "p99 lateness (ms) per run, median over runs; lateness = wall time decide received the Tick "
        "minus its due time; the TimerFired record and the decision on it are then journaled in one "
        "append (fsynced)",
        "z8": "each Sleeper agent (activated beforehand by a query) gets Arm(due): decide returns "
        "Decision(timers=[Timer(Tick(due), at=due, id='tick')]) (TimerSet journaled, fsynced); 1,000 "
        "concurrent dispatchers arm them; the outbox follows the journal and fires each due timer into "
        "its agent; default gc thresholds",
        "lead_s": round(lead, 3), "arming_s": round(med(r["arming_s"] for r in rows), 3),
        "margin_after_arming_s": round(min(r["margin_s"] for r in rows), 3),
        "p50_ms": round(med(r["p50"] for r in rows), 3), "p99_ms": round(med(p99), 3),
        "p99_ms_per_run": [round(x, 3) for x in p99],
        "max_ms": round(max(r["max"] for r in rows), 3), "min_ms": round(min(r["min"] for r in rows), 3),
        "fired": [r["fired"] for r in rows],
        "full_gc_in_firing_window_per_run": [r["full_gc_in_window"] for r in rows],
        "longest_gc_pause_in_firing_window_ms_per_run": [round(r["longest_gc_pause_in_window_ms"], 1) for r in rows],
        "longest_full_gc_pause_ms": round(max(r["longest_full_gc_pause_ms"] for r in rows), 1),
        "gc_tracked_objects": objects,
        "gc": "gc.callbacks in the benchmark process time every collection; a full (generation 2) pass "
        "walks every resident agent's objects and stops the loop meanwhile",
        "diagnostic_gc_freeze": {
            "p50_ms": round(frozen["p50"], 3), "p99_ms": round(frozen["p99"], 3), "max_ms": round(frozen["max"], 3),
            "longest_gc_pause_in_firing_window_ms": round(frozen["longest_gc_pause_in_window_ms"], 1),
            "what": "one more run in which the benchmark calls gc.freeze() once every timer is armed (not part "
            "of the value): what the same runtime does when full collections skip the resident agents",
        },
        "asyncio_call_at_floor": floor,
        "asyncio_call_at": "the same due times as bare loop.call_at callbacks recording time.time_ns(), "
        "nothing journaled, no agents resident: the floor of one Python event loop",
        "loadavg_at_start": rounded(load),
        "target": "p99 <= 50 ms", "meets_target": med(p99) <= 50.0,
    }, lower_is_better=True)


# --- the peers (each in its own subprocess) ---------------------------------------------------


def sqlite_pragmas(connection: Any, _record: Any = None) -> None:
    """As ``agents.py`` configures DBOS's SQLite connections: WAL, fsync at every commit."""
    connection.isolation_level = "IMMEDIATE"  # as DBOS configures its own SQLite connections
    connection.execute("PRAGMA busy_timeout=30000")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")


def child_dbos(sizes: Sizes, root: str) -> dict[str, Any]:
    from importlib.metadata import version
    from typing import cast

    import sqlalchemy as sa
    from dbos import DBOS

    engine = sa.create_engine(f"sqlite:///{root}/sys.sqlite")
    sa.event.listen(engine, "connect", sqlite_pragmas)
    DBOS(config={"name": "z8-bench-effects", "system_database_url": f"sqlite:///{root}/sys.sqlite",
                 "system_database_engine": engine, "log_level": "WARNING"})

    @DBOS.step()
    def trivial(i: int) -> int:
        return i

    @DBOS.workflow()
    def steps(total: int) -> int:
        for i in range(total):
            trivial(i)
        return total

    DBOS.launch()
    with engine.connect() as conn:
        raw = cast(Any, conn.connection).driver_connection
        mode = (raw.execute("PRAGMA journal_mode").fetchone()[0], raw.execute("PRAGMA synchronous").fetchone()[0])
    if mode != ("wal", 2):
        raise RuntimeError(f"DBOS's SQLite is {mode}, not (wal, 2=FULL)")

    def concurrent(workflows: int, per: int) -> float:
        settle()
        start = time.perf_counter()
        handles = [DBOS.start_workflow(steps, per) for _ in range(workflows)]
        for handle in handles:
            if handle.get_result() != per:
                raise RuntimeError("a DBOS workflow returned the wrong count")
        return workflows * per / (time.perf_counter() - start)

    def sequential(total: int) -> float:
        settle()
        start = time.perf_counter()
        steps(total)
        return total / (time.perf_counter() - start)

    load = os.getloadavg()
    sequential(200)  # warm: code paths, the WAL
    concurrent(sizes.peer_warm, 1)  # warm: executor threads
    seq = [sequential(sizes.seq_steps) for _ in range(sizes.seq_runs)]
    conc = [concurrent(sizes.agents, sizes.per_agent) for _ in range(sizes.conc_runs)]
    return {
        "sequential": seq, "concurrent": conc, "version": version("dbos"), "loadavg_at_start": rounded(load),
        "sqlite": f"{mode[0]}, synchronous={mode[1]}",
        "mode": "DBOS Transact, system database on SQLite (WAL, synchronous=FULL, checked); one @DBOS.workflow "
        "calling `total` trivial @DBOS.step functions in turn (each step's output checkpointed before the next)",
        "concurrency": f"{sizes.agents} workflows started at once with DBOS.start_workflow (DBOS's executor "
        "threads, one per workflow), timed until every handle's get_result()",
    }


class Loop(TypedDict):
    """The LangGraph peer's state: steps done and steps to do."""

    i: int
    total: int


def lg_step(state: Loop) -> dict[str, int]:
    return {"i": state["i"] + 1}


def lg_more(state: Loop) -> str:
    return "step" if state["i"] < state["total"] else "__end__"


def child_langgraph(sizes: Sizes, root: str) -> dict[str, Any]:
    from importlib.metadata import version

    import aiosqlite
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.graph import END, StateGraph

    assert END == "__end__"
    builder = StateGraph(Loop)
    builder.add_node("step", lg_step)
    builder.set_entry_point("step")
    builder.add_conditional_edges("step", lg_more)

    def config(thread: str, total: int) -> Any:
        return {"configurable": {"thread_id": thread}, "recursion_limit": total + 10}

    conn = sqlite3.connect(f"{root}/seq.sqlite", check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    saver = SqliteSaver(conn)
    saver.setup()
    mode = (conn.execute("PRAGMA journal_mode").fetchone()[0], conn.execute("PRAGMA synchronous").fetchone()[0])
    graph = builder.compile(checkpointer=saver)
    runs = iter(range(1_000_000))

    def sequential(total: int) -> float:
        settle()
        start = time.perf_counter()
        out = graph.invoke({"i": 0, "total": total}, config(f"seq-{next(runs)}", total), durability="sync")
        if out["i"] != total:
            raise RuntimeError(f"LangGraph ran {out['i']} nodes, not {total}")
        return total / (time.perf_counter() - start)

    async def concurrent_all() -> tuple[list[float], tuple[str, int]]:
        async with aiosqlite.connect(f"{root}/conc.sqlite") as aconn:
            await aconn.execute("PRAGMA journal_mode=WAL")
            await aconn.execute("PRAGMA synchronous=FULL")
            asaver = AsyncSqliteSaver(aconn)
            await asaver.setup()
            async with aconn.execute("PRAGMA journal_mode") as c1, aconn.execute("PRAGMA synchronous") as c2:
                amode = ((await c1.fetchone())[0], (await c2.fetchone())[0])
            agraph = builder.compile(checkpointer=asaver)

            async def one(thread: str, total: int) -> None:
                out = await agraph.ainvoke({"i": 0, "total": total}, config(thread, total), durability="sync")
                if out["i"] != total:
                    raise RuntimeError(f"LangGraph ran {out['i']} nodes, not {total}")

            async def concurrent(threads: int, per: int) -> float:
                settle()
                run = next(runs)
                start = time.perf_counter()
                await asyncio.gather(*(one(f"conc-{run}-{t}", per) for t in range(threads)))
                return threads * per / (time.perf_counter() - start)

            await concurrent(sizes.peer_warm, 1)  # warm
            return [await concurrent(sizes.agents, sizes.per_agent) for _ in range(sizes.conc_runs)], amode

    load = os.getloadavg()
    sequential(200)  # warm: code paths, the WAL
    seq = [sequential(sizes.seq_steps) for _ in range(sizes.seq_runs)]
    conc, amode = asyncio.run(concurrent_all())
    for found in (mode, amode):
        if found != ("wal", 2):
            raise RuntimeError(f"LangGraph's SQLite is {found}, not (wal, 2=FULL)")
    return {
        "sequential": seq, "concurrent": conc, "version": version("langgraph"), "loadavg_at_start": rounded(load),
        "checkpoint_sqlite_version": version("langgraph-checkpoint-sqlite"),
        "sqlite": f"{mode[0]}, synchronous={mode[1]} (set on the connection before setup, checked)",
        "mode": "StateGraph with one trivial node ('step': i += 1) and a conditional edge back to it until "
        "i == total (recursion_limit total + 10); durability='sync'",
        "sequential_mode": "SqliteSaver (sqlite3) + graph.invoke, one thread_id",
        "concurrency": f"AsyncSqliteSaver (aiosqlite, one connection) + {sizes.agents} graph.ainvoke tasks "
        "(one thread_id each) gathered on one event loop",
    }


def run_peer(name: str, sizes: Sizes, root: Path) -> dict[str, Any] | None:
    module = {"dbos": "dbos", "langgraph": "langgraph.checkpoint.sqlite"}[name]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        print(f"effects.py: {module} is not installed (pip install -e '.[bench]'); the {name} peer is skipped",
              file=sys.stderr)
        return None
    scratch = tempfile.mkdtemp(prefix=f"{name}-", dir=root)
    command = [sys.executable, os.path.abspath(__file__), "--child", name, "--dir", scratch,
               *(["--quick"] if sizes.quick else [])]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        print(f"effects.py: the {name} peer failed; it is skipped", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# --- the figures ---------------------------------------------------------------------------


def common(**extra: Any) -> dict[str, Any]:
    return {
        "durability": SYNC, "sqlite": SQLITE_SYNC,
        "step": "one trivial effect, its intent and its outcome durable (z8: EffectIntended and EffectSucceeded "
        "journaled, fsynced; peers: their checkpoint of the step/node fsynced)",
        "z8": "Stepper agent: decide returns Decision(effects=[Call(noop, Step(i, total))]); on each "
        "EffectSucceeded the next Call, journaled in the same append as the outcome; noop is "
        "@z8.effect(kind='irreversible', idempotent=True, timeout=30 s default) async, returning its request; "
        "Application(durability='sync'); timed from the first dispatch to app.wait_effect() of every agent's "
        "last step",
        **extra,
    }


def emit_steps(bench: str, z8_samples: list[float], params: dict[str, Any], peers: dict[str, Any], side: str) -> None:
    lines = 0
    for name, baseline in (("dbos", DBOS_STEPS), ("langgraph", LANGGRAPH_NODES)):
        peer = peers.get(name)
        if peer is None:
            continue
        extra = {k: v for k, v in peer.items() if k not in ("sequential", "concurrent")}
        emit(bench, z8_samples, "steps/s", baseline, peer[side], {**params, "peer": extra, "target": "ratio >= 5"})
        lines += 1
    if not lines:
        emit(bench, z8_samples, "steps/s", None, None, params)


async def main(sizes: Sizes, base: str | None, only: set[str]) -> None:
    root = Path(tempfile.mkdtemp(prefix="z8-bench-effects-", dir=base))
    try:
        peers: dict[str, Any] = {}
        if sizes.peers and only & {"sequential", "concurrent"}:
            for name in ("dbos", "langgraph"):
                found = run_peer(name, sizes, root)
                if found is not None:
                    peers[name] = found
        if "sequential" in only:
            seq = await z8_sequential(sizes, root)
            emit_steps("effects.steps.sequential", seq["samples"], common(
                agents=1, steps_per_run=sizes.seq_steps, mode="one agent (workflow, thread) doing its steps in turn",
                z8_fast_steps_per_s=round(seq["fast"], 1),
                z8_fast="the same run once with durability='fast' (no fsync): the CPU-bound ceiling",
                journal_append_floor_us=round(seq["append_floor_us"], 1), loadavg_at_start=rounded(seq["load"]),
                journal_append_floor="journal.append of the two records a step writes (an outcome and the next "
                "intent), alone, in turn, durability='sync': the fsync-bound floor of one sequential step",
            ), peers, "sequential")
        if "concurrent" in only:
            conc = await z8_concurrent(sizes, root)
            emit_steps("effects.steps.concurrent", conc["samples"], common(
                agents=sizes.agents, steps_per_agent=sizes.per_agent, steps_per_run=sizes.agents * sizes.per_agent,
                mode=f"{sizes.agents} agents (workflows, threads) started at once, each doing its steps in turn",
                z8_fast_steps_per_s=round(conc["fast"], 1), loadavg_at_start=rounded(conc["load"]),
                z8_fast="the same run once with durability='fast' (no fsync): the CPU-bound ceiling",
                **({"quick_note": "--quick runs 200 agents (workflows, threads) x 2 steps; the full run 1,000 x 10"}
                   if sizes.quick else {}),
            ), peers, "concurrent")
        if "timers" in only:
            await bench_timers(sizes, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(result: dict[str, Any]) -> None:
    """Print a child's result and end the process at once (nothing to tear down)."""
    print(json.dumps(result), flush=True)
    os._exit(0)


GROUPS = ("sequential", "concurrent", "timers")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs (well under 60 s)")
    parser.add_argument("--dir", default=None, help="where to make the scratch directory (default: system temp dir)")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated subset of {','.join(GROUPS)}")
    parser.add_argument("--no-peers", action="store_true", help="measure z8 alone (no DBOS, no LangGraph)")
    parser.add_argument("--child", choices=("dbos", "langgraph"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    chosen_sizes = QUICK if args.quick else FULL
    if args.no_peers:
        chosen_sizes = Sizes(**{**chosen_sizes.__dict__, "peers": False})
    if args.child == "dbos":
        report(child_dbos(chosen_sizes, args.dir))
    elif args.child == "langgraph":
        report(child_langgraph(chosen_sizes, args.dir))
    else:
        chosen = {name.strip() for name in args.only.split(",") if name.strip()}
        if not chosen <= set(GROUPS):
            parser.error(f"--only takes names from {', '.join(GROUPS)}")
        asyncio.run(main(chosen_sizes, args.dir, chosen))
