"""Supervision trees under a real Runtime over an LMDB journal.

Each test is a scenario: children crash in ``receive`` or ``on_start``, supervisors apply
their strategy, give up past their intensity and escalate, and ``$system`` remembers it
all with causation links. Actors record what happens to them in a shared list so the
order of starts, stops and messages can be checked exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import z8
from z8.actors import SYSTEM_STREAM, register_system_types
from z8.errors import ActorDied, ActorNotFound, DuplicateName, InvalidArgument, RuntimeEscalated, RuntimeNotRunning
from z8.journal import Envelope, Journal, TypeRegistry, open_journal
from z8.supervision import Backoff, Runtime, StartChild, StopChild, TreeNode, child, supervisor

pytestmark = pytest.mark.anyio

Log = list[tuple[Any, ...]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- actors -------------------------------------------------------------------------------


class Worker(z8.Actor):
    """Records its starts, stops and messages; ``"crash"`` raises, ``"inc"`` answers its incarnation."""

    def __init__(self, log: Log, start_delay: float = 0.0) -> None:
        self.log = log
        self.start_delay = start_delay

    async def on_start(self, ctx: z8.ActorContext) -> None:
        self.log.append(("start", ctx.name, ctx.incarnation))
        if self.start_delay:
            await asyncio.sleep(self.start_delay)
            self.log.append(("started", ctx.name, ctx.incarnation))

    async def on_stop(self, ctx: z8.ActorContext) -> None:
        self.log.append(("stop", ctx.name, ctx.incarnation))

    async def receive(self, message: Any, ctx: z8.ActorContext) -> Any:
        if message == "crash":
            raise ValueError(f"boom in {ctx.name}")
        if message == "inc":
            return ctx.incarnation
        self.log.append(("msg", ctx.name, message))
        return message


class StartCrasher(z8.Actor):
    """Crashes in ``on_start`` while ``failures[name]`` is positive (counting down); ``"crash"`` raises."""

    def __init__(self, failures: dict[str, int]) -> None:
        self.failures = failures

    async def on_start(self, ctx: z8.ActorContext) -> None:
        if self.failures.get(ctx.name, 0) > 0:
            self.failures[ctx.name] -= 1
            raise RuntimeError(f"{ctx.name} cannot start")

    async def receive(self, message: Any, ctx: z8.ActorContext) -> Any:
        if message == "crash":
            raise ValueError(f"boom in {ctx.name}")
        return ctx.incarnation


class Tally(z8.Actor):
    """Counts every message it is handed (before crashing on multiples of ``crash_every``)."""

    def __init__(self, handled: list[int], crash_every: int = 0) -> None:
        self.handled = handled
        self.crash_every = crash_every

    async def receive(self, message: int, ctx: z8.ActorContext) -> None:
        self.handled.append(message)
        await asyncio.sleep(0)
        if self.crash_every and message % self.crash_every == 0:
            raise ValueError(f"bad message {message}")


class Stuck(z8.Actor):
    """Never finishes a message: ``receive`` waits forever."""

    async def receive(self, message: Any, ctx: z8.ActorContext) -> Any:
        await asyncio.Event().wait()


class SlowToStop(z8.Actor):
    def __init__(self, stop_for: float) -> None:
        self.stop_for = stop_for

    async def receive(self, message: Any, ctx: z8.ActorContext) -> Any:
        return message

    async def on_stop(self, ctx: z8.ActorContext) -> None:
        await asyncio.sleep(self.stop_for)


class Fragile(z8.Actor):
    """Its constructor fails while ``budget["fail"]`` is positive (counting down)."""

    def __init__(self, budget: dict[str, int]) -> None:
        if budget["fail"] > 0:
            budget["fail"] -= 1
            raise RuntimeError("cannot construct")

    async def receive(self, message: Any, ctx: z8.ActorContext) -> Any:
        if message == "crash":
            raise ValueError("boom")
        return ctx.incarnation


class HangsOnRestart(z8.Actor):
    """Starts once; every later incarnation waits forever in ``on_start``."""

    async def on_start(self, ctx: z8.ActorContext) -> None:
        if ctx.incarnation > 1:
            await asyncio.Event().wait()

    async def receive(self, message: Any, ctx: z8.ActorContext) -> Any:
        if message == "crash":
            raise ValueError("boom")
        return ctx.incarnation


class Door(z8.Actor):
    actor_machine = z8.Machine.of("closed", {"closed": ["open"], "open": ["closed"]})

    async def receive(self, message: Any, ctx: z8.ActorContext) -> Any:
        if message == "crash":
            raise KeyError("hinge")
        if message != "state":
            ctx.transition(message)
        return ctx.state


# --- helpers ------------------------------------------------------------------------------


def runtime(tmp_path: Path, **kwargs: Any) -> Runtime:
    return Runtime(tmp_path / "j", durability="fast", **kwargs)


async def eventually(predicate: Callable[[], bool], timeout: float = 3.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.002)


async def crash(ref: z8.ActorRef) -> ActorDied:
    with pytest.raises(ActorDied) as died:
        await ref.ask("crash", timeout=5)
    return died.value


@contextlib.contextmanager
def system_journal(tmp_path: Path) -> Iterator[Journal]:
    """The closed runtime's journal, reopened with the ``$system`` types."""
    with open_journal(tmp_path / "j", types=register_system_types(TypeRegistry())) as journal:
        yield journal


def system_events(tmp_path: Path) -> list[tuple[Envelope, Any]]:
    with system_journal(tmp_path) as journal:
        return [(e, journal.decode(e)) for e in journal.read_stream(SYSTEM_STREAM)]


def of_type(events: list[tuple[Envelope, Any]], name: str, path: str | None = None) -> list[tuple[Envelope, Any]]:
    return [(e, p) for e, p in events if e.type == f"z8.{name}" and (path is None or p.path == path)]


def after(log: Log, marker: int) -> Log:
    return log[marker:]


def node(rt: Runtime, path: str) -> TreeNode:
    """The live tree's node at ``path`` (which must be in the tree)."""
    found = rt.tree().find(path)
    assert found is not None, f"{path} is not in the tree:\n{rt.tree()}"
    return found


async def answer(rt: Runtime, path: str, message: Any, timeout: float = 3.0) -> Any:
    """Ask the actor at ``path`` until one answers (it may be down, or being replaced)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await rt.lookup(path).ask(message, timeout=timeout)
        except (ActorDied, ActorNotFound):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.005)


def alive_at(rt: Runtime, path: str) -> bool:
    try:
        return rt.lookup(path).alive
    except ActorNotFound:
        return False


# --- crashes in receive and in on_start ------------------------------------------------------


async def test_a_crash_in_receive_restarts_the_child_in_place_with_its_queue(tmp_path: Path) -> None:
    log: Log = []
    async with runtime(tmp_path, children=[child(Worker, log, id="w")]) as rt:
        ref = rt.lookup("/app/w")
        await ref.tell("before")
        asked = asyncio.ensure_future(ref.ask("crash"))
        await asyncio.sleep(0)  # the ask is in the mailbox
        await ref.tell("queued-1")
        await ref.tell("queued-2")
        with pytest.raises(ActorDied, match=r"/app/w crashed with ValueError: boom in w") as died:
            await asked
        assert isinstance(died.value.cause, ValueError) and died.value.__cause__ is died.value.cause
        assert await ref.ask("inc") == 2  # same ref, fresh incarnation
        assert [m for kind, _, m in log if kind == "msg"] == ["before", "queued-1", "queued-2"]
        assert log.index(("start", "w", 2)) < log.index(("msg", "w", "queued-1"))  # kept through the restart
        w = node(rt, "/app/w")
        assert w.restarts == 1 and w.last_crash == "ValueError: boom in w"
    [(crashed, payload)] = of_type(system_events(tmp_path), "ActorCrashed")
    assert (payload.path, payload.error_type, payload.message) == ("/app/w", "ValueError", "boom in w")
    assert payload.incarnation == 1
    assert re.fullmatch(r"[0-9a-f]{16}", payload.traceback_digest)


async def test_a_crash_in_on_start_is_restarted_until_it_starts(tmp_path: Path) -> None:
    failures = {"flaky": 2}
    rt = runtime(tmp_path, max_restarts=10, children=[child(StartCrasher, failures, id="flaky")])
    async with rt:
        ref = rt.lookup("/app/flaky")
        assert await ref.ask("hello") == 3  # queued through two failed starts, handled by the third
        assert failures == {"flaky": 0} and node(rt, "/app/flaky").restarts == 2
        failures["flaky"] = 2  # and once running: a crash in receive, then two failed restarts
        await crash(ref)
        assert await ref.ask("hello") == 6 and node(rt, "/app/flaky").restarts == 5
    crashes = [p for _, p in of_type(system_events(tmp_path), "ActorCrashed", "/app/flaky")]
    assert [(c.error_type, c.message, c.incarnation) for c in crashes] == [
        ("RuntimeError", "flaky cannot start", 1),
        ("RuntimeError", "flaky cannot start", 2),
        ("ValueError", "boom in flaky", 3),
        ("RuntimeError", "flaky cannot start", 4),
        ("RuntimeError", "flaky cannot start", 5),
    ]
    assert len({c.traceback_digest for c in crashes if c.error_type == "RuntimeError"}) == 1  # same site, same digest


async def test_crash_digests_tell_crash_sites_apart(tmp_path: Path) -> None:
    async with runtime(tmp_path, children=[child(Worker, [], id="w"), child(StartCrasher, {"s": 1}, id="s")]) as rt:
        await crash(rt.lookup("/app/w"))
        await crash(rt.lookup("/app/w"))
        assert await rt.lookup("/app/s").ask(None) == 2
    digests = {(p.path, p.traceback_digest) for _, p in of_type(system_events(tmp_path), "ActorCrashed")}
    assert len(digests) == 2 and len({d for _, d in digests}) == 2


# --- strategies -----------------------------------------------------------------------------

STRATEGIES = [
    ("one_for_one", [], ["b"]),
    ("one_for_all", ["c", "a"], ["a", "b", "c"]),
    ("rest_for_one", ["c"], ["b", "c"]),
]


@pytest.mark.parametrize("nested", [False, True], ids=["root", "nested"])
@pytest.mark.parametrize(("strategy", "stopped", "restarted"), STRATEGIES, ids=[s[0] for s in STRATEGIES])
async def test_each_strategy_restarts_the_right_children_in_order(
    tmp_path: Path, strategy: str, stopped: list[str], restarted: list[str], nested: bool
) -> None:
    log: Log = []
    kids = [child(Worker, log, id=name) for name in "abc"]
    if nested:
        sup = child(supervisor(*kids, strategy=strategy), id="sup")
        rt = runtime(tmp_path, children=[child(Worker, log, id="other"), sup])
        base = "/app/sup"
    else:
        rt = runtime(tmp_path, children=kids, strategy=strategy)
        base = "/app"
    async with rt:
        assert [name for kind, name, _ in log if kind == "start"] == (["other"] if nested else []) + ["a", "b", "c"]
        mark = len(log)
        await crash(rt.lookup(f"{base}/b"))
        assert await rt.lookup(f"{base}/b").ask("inc") == 2  # queued through the restart of the crashed child
        for name in "abc":  # by then the supervisor has applied its strategy to the whole group
            expected = 2 if name in restarted else 1
            assert await rt.lookup(f"{base}/{name}").ask("inc") == expected, name
        assert [(kind, name) for kind, name, _ in after(log, mark)] == [("stop", n) for n in stopped] + [
            ("start", n) for n in restarted
        ]
        assert [node(rt, f"{base}/{n}").restarts for n in "abc"] == [int(n in restarted) for n in "abc"]
        if nested:
            assert node(rt, "/app/sup").restarts == 0 and node(rt, "/app/other").restarts == 0
            assert await rt.lookup("/app/other").ask("inc") == 1
    events = system_events(tmp_path)
    [(crashed, _)] = of_type(events, "ActorCrashed")
    restarts = of_type(events, "ActorRestarted")
    assert [p.path for _, p in restarts] == [f"{base}/{n}" for n in restarted]
    assert {e.causation_id for e, _ in restarts} == {crashed.event_id}  # all caused by the one crash


# Regression: Supervisor._restart starts every cell of the group at once without awaiting each on_start.
async def test_a_group_restart_starts_children_one_after_another(tmp_path: Path) -> None:
    log: Log = []
    kids = [child(Worker, log, 0.02, id=name) for name in "abc"]
    async with runtime(tmp_path, children=kids, strategy="one_for_all") as rt:
        first = [(kind, name) for kind, name, _ in log]
        assert first == [(kind, name) for name in "abc" for kind in ("start", "started")]
        mark = len(log)
        await crash(rt.lookup("/app/b"))
        await eventually(lambda: sum(kind == "started" for kind, _, _ in after(log, mark)) == 3, what="three restarts")
        again = [(kind, name) for kind, name, _ in after(log, mark) if kind != "stop"]
        assert again == first  # each on_start done before the next begins, as on the first start


async def test_simple_one_for_one_restarts_only_the_dynamic_child_that_crashed(tmp_path: Path) -> None:
    log: Log = []
    async with runtime(tmp_path, strategy="simple_one_for_one", children=[child(Worker, log)]) as rt:
        refs = [rt.spawn(Worker) for _ in range(3)]
        assert [r.path for r in refs] == ["/app/1", "/app/2", "/app/3"]
        assert [await r.ask("inc") for r in refs] == [1, 1, 1]
        await crash(refs[1])
        assert [await r.ask("inc") for r in refs] == [1, 2, 1]
        assert str(rt.tree()).splitlines()[0].startswith("/app  [supervisor, simple_one_for_one")


async def test_simple_one_for_one_nested_pool_via_spawn_under(tmp_path: Path) -> None:
    log: Log = []
    pool = supervisor(child(Worker, log, restart="transient"), strategy="simple_one_for_one")
    async with runtime(tmp_path, children=[child(pool, id="pool"), child(Worker, log, id="solo")]) as rt:
        workers = [rt.spawn(Worker, name=f"w{i}", under="/app/pool") for i in range(3)]
        assert rt.lookup("/app/pool/w2") == workers[2]
        await crash(workers[0])
        assert [await w.ask("inc") for w in workers] == [2, 1, 1]
        with pytest.raises(InvalidArgument, match="'/app/solo' is not a live supervisor"):
            rt.spawn(Worker, under="/app/solo")
        with pytest.raises(InvalidArgument, match="is not a live supervisor"):
            rt.spawn(Worker, under="/app/nowhere")
        assert [n.path for n in node(rt, "/app/pool").children] == [f"/app/pool/w{i}" for i in range(3)]


# Regression: Runtime.spawn names dynamic children len(children)+1, which collides once a child is gone.
async def test_simple_one_for_one_default_names_stay_unique_after_a_child_stops(tmp_path: Path) -> None:
    async with runtime(tmp_path, strategy="simple_one_for_one", children=[child(Worker, [])]) as rt:
        first, _, _ = [rt.spawn(Worker) for _ in range(3)]
        await rt.stop(first)
        fourth = rt.spawn(Worker)  # DuplicateName: '3' is still taken
        assert await fourth.ask("inc") == 1


async def test_start_child_and_stop_child_messages_drive_a_supervisor(tmp_path: Path) -> None:
    log: Log = []
    async with runtime(tmp_path, children=[child(supervisor(), id="sup")]) as rt:
        sup = rt.lookup("/app/sup")
        ref = await sup.ask(StartChild(child(Worker, log, id="late")))
        assert ref.path == "/app/sup/late" and await ref.ask("inc") == 1
        await sup.ask(StopChild("late"))
        await eventually(lambda: not ref.alive, what="late to stop")
        assert ("stop", "late", 1) in log and node(rt, "/app/sup").children == ()


# Regression: Supervisor.receive lets StartChild's DuplicateName escape: the supervisor crashes with its children.
async def test_a_start_child_with_a_taken_name_fails_the_ask_not_the_supervisor(tmp_path: Path) -> None:
    log: Log = []
    async with runtime(tmp_path, children=[child(supervisor(child(Worker, log, id="w")), id="sup")]) as rt:
        sup, w = rt.lookup("/app/sup"), rt.lookup("/app/sup/w")
        with pytest.raises(DuplicateName, match="already has a child named 'w'"):
            await sup.ask(StartChild(child(Worker, log, id="w")))
        assert w.alive and await w.ask("inc") == 1  # the running child was not stopped for a caller's mistake
        assert node(rt, "/app/sup").restarts == 0


# --- intensity and escalation ---------------------------------------------------------------


async def test_intensity_exceeded_escalates_to_the_parent_which_restarts_the_subtree(tmp_path: Path) -> None:
    log: Log = []
    sub = supervisor(child(Worker, log, id="w"), child(Worker, log, id="v"), max_restarts=1, within=5)
    kids = [child(Worker, log, id="bystander"), child(sub, id="sub")]
    async with runtime(tmp_path, max_restarts=10, children=kids) as rt:
        old = rt.lookup("/app/sub/w")
        await crash(old)
        assert await old.ask("inc") == 2  # one restart is within the intensity
        mark = len(log)
        await crash(old)  # the second exceeds it: /app/sub stops its children and fails
        await eventually(lambda: ("start", "v", 1) in after(log, mark), what="the subtree to restart")
        assert not old.alive  # the old cell finished; the restarted subtree has new cells
        fresh = rt.lookup("/app/sub/w")
        assert fresh != old and await fresh.ask("inc") == 1
        assert [(k, n) for k, n, _ in after(log, mark)] == [("stop", "v"), ("start", "w"), ("start", "v")]
        assert node(rt, "/app/sub").restarts == 1
        assert (node(rt, "/app/sub").last_crash or "").startswith("SupervisorEscalated: /app/sub gave up")
        assert node(rt, "/app/bystander").restarts == 0 and await rt.lookup("/app/bystander").ask("inc") == 1
    events = system_events(tmp_path)
    w_crashes = of_type(events, "ActorCrashed", "/app/sub/w")
    [(escalated, esc)] = of_type(events, "SupervisorEscalated")
    assert (esc.path, esc.restarts, esc.within) == ("/app/sub", 2, 5.0) and esc.last_error == "ValueError: boom in w"
    assert escalated.causation_id == w_crashes[-1][0].event_id
    [(sub_crash, sub_payload)] = of_type(events, "ActorCrashed", "/app/sub")
    assert sub_payload.error_type == "SupervisorEscalated" and "max_restarts=1" in sub_payload.message
    [(sub_restart, _)] = of_type(events, "ActorRestarted", "/app/sub")
    assert sub_restart.causation_id == sub_crash.event_id


async def test_escalation_climbs_to_the_root_and_stops_the_runtime(tmp_path: Path) -> None:
    sub = supervisor(child(Worker, [], id="w"), max_restarts=0)
    rt = runtime(tmp_path, max_restarts=1, children=[child(sub, id="sub"), child(Worker, [], id="side")])
    with pytest.raises(RuntimeEscalated) as raised:
        async with rt:
            await crash(rt.lookup("/app/sub/w"))  # /app/sub gives up; the root restarts it (1 of 1)
            assert await answer(rt, "/app/sub/w", "inc") == 1  # a fresh /app/sub/w
            await crash(rt.lookup("/app/sub/w"))  # /app/sub gives up again: the root gives up too
            await asyncio.wait_for(rt.wait(), 5)
    report = raised.value.report
    assert report.startswith("the root supervisor /app escalated and the runtime stopped")
    assert "/app gave up" in report and "last crash of /app/sub" in report and "max_restarts=1" in report
    assert rt.escalation == report
    with pytest.raises(RuntimeNotRunning):
        rt.spawn(Worker, [])
    escalations = [p.path for _, p in of_type(system_events(tmp_path), "SupervisorEscalated")]
    assert escalations == ["/app/sub", "/app/sub", "/app"]


async def test_the_root_escalating_is_reported_by_wait_never_a_silent_hang(tmp_path: Path) -> None:
    failures = {"doomed": 0}
    rt = runtime(tmp_path, children=[child(StartCrasher, failures, id="doomed")])
    with pytest.raises(RuntimeEscalated):  # and again when leaving the block
        async with rt:
            started = time.monotonic()
            failures["doomed"] = 1_000  # from now on it cannot start again
            await crash(rt.lookup("/app/doomed"))
            with pytest.raises(RuntimeEscalated, match=r"last crash of /app/doomed: RuntimeError: doomed cannot start"):
                await asyncio.wait_for(rt.wait(), 5)
            assert time.monotonic() - started < 4
    with pytest.raises(RuntimeEscalated):
        await asyncio.wait_for(rt.wait(), 1)  # asking again still reports, still does not hang


async def test_the_root_escalating_raises_on_leaving_async_with(tmp_path: Path) -> None:
    rt = runtime(tmp_path, max_restarts=2, children=[child(Worker, [], id="w")])
    report = r"3 restarts within 5.0s exceeds max_restarts=2; last crash of /app/w: ValueError"
    with pytest.raises(RuntimeEscalated, match=report):
        async with rt:
            for _ in range(3):
                await crash(rt.lookup("/app/w"))
                await eventually(lambda: alive_at(rt, "/app/w") or rt.escalation is not None)
    assert rt.escalation is not None
    [(_, esc)] = of_type(system_events(tmp_path), "SupervisorEscalated")
    assert esc.path == "/app" and esc.restarts == 3


async def test_an_exception_in_the_body_is_not_masked_by_an_escalation(tmp_path: Path) -> None:
    rt = runtime(tmp_path, max_restarts=0, children=[child(Worker, [], id="w")])
    with pytest.raises(KeyError, match="mine"):
        async with rt:
            await crash(rt.lookup("/app/w"))
            await asyncio.wait_for(_until_escalated(rt), 5)
            raise KeyError("mine")


async def _until_escalated(rt: Runtime) -> None:
    while rt.escalation is None:
        await asyncio.sleep(0.002)


async def test_restarts_outside_the_window_do_not_count(tmp_path: Path) -> None:
    sub = supervisor(child(Worker, [], id="w"), max_restarts=2, within=0.6)
    async with runtime(tmp_path, children=[child(sub, id="sub")]) as rt:
        w = rt.lookup("/app/sub/w")
        for _ in range(2):
            await crash(w)
        assert await w.ask("inc") == 3
        await asyncio.sleep(0.7)  # both restarts age out of the window
        for _ in range(2):
            await crash(w)
        assert await w.ask("inc") == 5 and node(rt, "/app/sub").restarts == 0
        for _ in range(3):  # three within the window: one too many
            await crash(w)
        await eventually(lambda: node(rt, "/app/sub").restarts == 1, what="/app/sub to escalate")


# Regression: a child whose constructor raises on restart crashes its supervisor (Supervisor._restart).
async def test_a_child_that_fails_to_construct_on_restart_counts_as_a_crash_of_that_child(tmp_path: Path) -> None:
    budget = {"fail": 0}
    sub = supervisor(child(Fragile, budget, id="f"), child(Worker, [], id="sibling"), max_restarts=3)
    async with runtime(tmp_path, children=[child(sub, id="sub")]) as rt:
        sibling = rt.lookup("/app/sub/sibling")
        budget["fail"] = 1  # the next construction fails once
        await crash(rt.lookup("/app/sub/f"))
        assert await answer(rt, "/app/sub/f", "inc") >= 2  # back, once its construction succeeded
        assert budget["fail"] == 0
        assert node(rt, "/app/sub").restarts == 0  # its supervisor did not crash
        assert sibling.alive  # one_for_one: the sibling never had a reason to stop


# Regression: Runtime.start returns normally after the root crashed in on_start; the body runs on a dead runtime.
@pytest.mark.parametrize("broken", ["constructor", "on_start"])
async def test_a_tree_that_cannot_be_built_fails_on_entry(tmp_path: Path, broken: str) -> None:
    body_ran = False
    if broken == "constructor":
        bad, match = child(Fragile, {"fail": 1_000}, id="bad"), "RuntimeError: cannot construct"
    else:
        bad, match = child(StartCrasher, {"bad": 1_000}, id="bad"), "RuntimeError: bad cannot start"
    rt = runtime(tmp_path, children=[child(Worker, [], id="fine"), child(supervisor(bad), id="sub")])
    began = time.monotonic()
    with pytest.raises(RuntimeEscalated, match=match):
        async with rt:
            body_ran = True
    assert not body_ran and time.monotonic() - began < 5
    with pytest.raises(RuntimeEscalated):
        await asyncio.wait_for(rt.wait(), 1)
    crashes = of_type(system_events(tmp_path), "ActorCrashed", "/app/sub/bad")  # the journal was closed
    assert len(crashes) >= 4 and {p.error_type for _, p in crashes} == {"RuntimeError"}


# Regression: Runtime.spawn(under=...) adds a child to a crashed supervisor waiting to restart: an invisible orphan.
async def test_spawning_under_a_supervisor_waiting_to_restart_leaves_no_orphan(tmp_path: Path) -> None:
    before = asyncio.all_tasks()
    sub = supervisor(child(Worker, [], id="w"), max_restarts=0)
    rt = runtime(tmp_path, backoff=Backoff(min=0.3, jitter=0), children=[child(sub, id="sub")])
    await rt.start()
    try:
        await crash(rt.lookup("/app/sub/w"))  # /app/sub gives up; the root restarts it after 0.3 s
        await eventually(lambda: node(rt, "/app/sub").last_crash is not None, what="/app/sub crashing")
        with contextlib.suppress(RuntimeNotRunning, InvalidArgument):
            rt.spawn(Worker, [], name="x", under="/app/sub")  # refusing is fine; adopting it is fine
        await eventually(lambda: node(rt, "/app/sub").alive and node(rt, "/app/sub").restarts == 1, what="restart")
        orphan = alive_at(rt, "/app/sub/x") and rt.tree().find("/app/sub/x") is None
        assert not orphan, "/app/sub/x is registered and running but not in the tree"
    finally:
        await rt.aclose()
        left = asyncio.all_tasks() - before
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
    assert left == set(), left


# Regression: Supervisor._restart awaited a restarted child's on_start without bound, so a
# child stuck there wedged its supervisor and aclose() (root shutdown=None) waited forever.
async def test_a_child_stuck_in_on_start_during_a_restart_does_not_hang_shutdown(tmp_path: Path) -> None:
    rt = runtime(tmp_path, children=[child(HangsOnRestart, id="stuck", shutdown=0.1), child(Worker, [], id="w")])
    await rt.start()
    try:
        await crash(rt.lookup("/app/stuck"))
        await eventually(lambda: rt.lookup("/app/stuck").state is None and node(rt, "/app/stuck").restarts == 1)
        began = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rt.aclose(), 1.5)
        assert time.monotonic() - began < 1.5, "aclose() still waiting after 1.5 s"
    finally:
        for task in asyncio.all_tasks():
            if task.get_name() == "/app/stuck":
                task.cancel()  # unblock the supervisor so the shutdown can finish
        await asyncio.wait_for(rt.aclose(), 5)


# --- restart types --------------------------------------------------------------------------


async def test_permanent_and_transient_are_restarted_after_a_crash_temporary_is_not(tmp_path: Path) -> None:
    log: Log = []
    kids = [child(Worker, log, id=kind, restart=kind) for kind in ("permanent", "transient", "temporary")]
    async with runtime(tmp_path, children=kids) as rt:
        refs = {kind: rt.lookup(f"/app/{kind}") for kind in ("permanent", "transient", "temporary")}
        for ref in refs.values():
            await crash(ref)
        assert await refs["permanent"].ask("inc") == 2 and await refs["transient"].ask("inc") == 2
        await eventually(lambda: not refs["temporary"].alive, what="the temporary child to finish")
        with pytest.raises(ActorNotFound, match="no live actor at '/app/temporary'"):
            rt.lookup("/app/temporary")
        with pytest.raises(ActorDied, match="has stopped"):
            await refs["temporary"].ask("inc")
        assert [n.path for n in rt.tree().children] == ["/app/permanent", "/app/transient"]
    stopped = [p for _, p in of_type(system_events(tmp_path), "ActorStopped", "/app/temporary")]
    assert [s.reason for s in stopped] == ["crashed; temporary children are not restarted"]


async def test_no_restart_type_restarts_a_child_stopped_on_request(tmp_path: Path) -> None:
    log: Log = []
    kinds = ("permanent", "transient", "temporary")
    async with runtime(tmp_path, children=[child(Worker, log, id=k, restart=k) for k in kinds]) as rt:
        for kind in kinds:
            await rt.stop(f"/app/{kind}")
        await eventually(lambda: rt.tree().children == (), what="the supervisor to forget its children")
        assert [e for e in log if e[0] != "start"] == [("stop", k, 1) for k in kinds]
        rt.spawn(Worker, log, name="permanent")  # the name is free again
        assert await rt.lookup("/app/permanent").ask("inc") == 1
    assert of_type(system_events(tmp_path), "ActorRestarted") == []


async def test_temporary_crashes_do_not_count_toward_intensity(tmp_path: Path) -> None:
    pool = supervisor(child(Worker, [], restart="temporary"), strategy="simple_one_for_one", max_restarts=0)
    async with runtime(tmp_path, children=[child(pool, id="pool")]) as rt:
        for i in range(5):
            await crash(rt.spawn(Worker, name=f"t{i}", under="/app/pool"))
        await eventually(lambda: node(rt, "/app/pool").children == (), what="temporary children to go")
        assert node(rt, "/app/pool").restarts == 0
    assert of_type(system_events(tmp_path), "SupervisorEscalated") == []


# Regression: Supervisor._apply_strategy/_restart restart temporary siblings stopped by one_for_all/rest_for_one.
@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
async def test_a_temporary_sibling_stopped_by_the_strategy_is_not_restarted(tmp_path: Path, strategy: str) -> None:
    log: Log = []
    kids = [child(Worker, log, id="a"), child(Worker, log, id="t", restart="temporary")]
    async with runtime(tmp_path, strategy=strategy, children=kids) as rt:
        t = rt.lookup("/app/t")
        await crash(rt.lookup("/app/a"))
        assert await rt.lookup("/app/a").ask("inc") == 2
        assert not t.alive and ("start", "t", 2) not in log  # OTP: a temporary child is never restarted
        assert [n.path for n in rt.tree().children] == ["/app/a"]


# --- backoff ----------------------------------------------------------------------------------


async def test_backoff_delays_grow_to_max_and_reset_after_a_quiet_run(tmp_path: Path) -> None:
    backoff = Backoff(min=0.01, max=0.04, jitter=0, reset_after=0.5)
    async with runtime(tmp_path, max_restarts=20, backoff=backoff, children=[child(Worker, [], id="w")]) as rt:
        w = rt.lookup("/app/w")
        waited = []
        for _ in range(5):
            await crash(w)
            began = time.monotonic()
            await w.ask("inc")  # queued until the restart
            waited.append(time.monotonic() - began)
        await asyncio.sleep(0.6)  # uptime past reset_after
        await crash(w)
        assert await w.ask("inc") == 7
    expected = [0.01, 0.02, 0.04, 0.04, 0.04]
    assert all(w >= d * 0.9 for w, d in zip(waited, expected)), waited
    events = system_events(tmp_path)
    scheduled = of_type(events, "RestartScheduled", "/app/w")
    assert [p.delay for _, p in scheduled] == [0.01, 0.02, 0.04, 0.04, 0.04, 0.01]
    assert [p.attempt for _, p in scheduled] == [1, 2, 3, 4, 5, 1]
    restarted = of_type(events, "ActorRestarted", "/app/w")
    assert [p.delay for _, p in restarted] == [0.01, 0.02, 0.04, 0.04, 0.04, 0.01]
    assert [r.causation_id for r, _ in restarted] == [s.event_id for s, _ in scheduled]


async def test_during_a_backoff_siblings_of_one_for_all_are_down_and_come_back(tmp_path: Path) -> None:
    log: Log = []
    kids = [child(Worker, log, id="a"), child(Worker, log, id="b")]
    async with runtime(tmp_path, strategy="one_for_all", backoff=Backoff(min=0.3, jitter=0), children=kids) as rt:
        a, b = rt.lookup("/app/a"), rt.lookup("/app/b")
        await crash(a)
        await eventually(lambda: not b.alive, what="b to be stopped by one_for_all")
        with pytest.raises(ActorDied, match="has stopped"):
            await b.ask("inc")
        await b.tell("lost-while-down")
        assert [d.message for d in rt.dead_letters() if d.path == "/app/b"] == ["lost-while-down"]
        await eventually(lambda: b.alive, what="b to come back after the delay")
        assert await b.ask("inc") == 2 and await a.ask("inc") == 2


# Regression: RuntimeCore.stop_cell finishes a crashed cell without telling its supervisor, which keeps it forever.
async def test_stopping_a_child_during_its_backoff_frees_its_name(tmp_path: Path) -> None:
    async with runtime(tmp_path, backoff=Backoff(min=0.2, jitter=0), children=[child(Worker, [], id="w")]) as rt:
        await crash(rt.lookup("/app/w"))
        await rt.stop("/app/w")  # crashed, waiting for its restart
        await asyncio.sleep(0.3)  # past the backoff: it must stay stopped
        assert rt.tree().children == ()
        again = rt.spawn(Worker, [], name="w")  # the name is free again
        assert await again.ask("inc") == 1


# --- storms and big trees -------------------------------------------------------------------


async def test_a_crash_storm_of_1000_children_does_not_lose_the_supervisor(tmp_path: Path) -> None:
    pool = supervisor(child(Worker, []), strategy="simple_one_for_one", max_restarts=5_000, within=5)
    async with runtime(tmp_path, children=[child(pool, id="pool")]) as rt:
        workers = [rt.spawn(Worker, name=f"w{i}", under="/app/pool") for i in range(1_000)]
        results = await asyncio.gather(*(w.ask("crash") for w in workers), return_exceptions=True)
        assert all(isinstance(r, ActorDied) for r in results)
        assert await asyncio.gather(*(w.ask("inc") for w in workers)) == [2] * 1_000
        pool_node = rt.tree().find("/app/pool")
        assert pool_node is not None and pool_node.alive and pool_node.restarts == 0
        assert sum(n.restarts for n in pool_node.children) == 1_000
    events = system_events(tmp_path)
    assert len(of_type(events, "ActorCrashed")) == 1_000 and len(of_type(events, "ActorRestarted")) == 1_000
    assert of_type(events, "SupervisorEscalated") == []


async def test_a_crash_storm_of_1000_temporary_children_leaves_the_supervisor_running(tmp_path: Path) -> None:
    pool = supervisor(child(Worker, [], restart="temporary"), strategy="simple_one_for_one")
    async with runtime(tmp_path, children=[child(pool, id="pool")]) as rt:
        workers = [rt.spawn(Worker, name=f"t{i}", under="/app/pool") for i in range(1_000)]
        results = await asyncio.gather(*(w.ask("crash") for w in workers), return_exceptions=True)
        assert all(isinstance(r, ActorDied) for r in results)
        await eventually(lambda: not any(w.alive for w in workers), what="every temporary child to finish")
        survivor = rt.spawn(Worker, name="after-the-storm", under="/app/pool")
        assert await survivor.ask("inc") == 1 and node(rt, "/app/pool").restarts == 0


async def test_stopping_a_tree_of_10000_actors_completes_and_leaves_no_task(tmp_path: Path) -> None:
    before = asyncio.all_tasks()
    log: Log = []
    pool = supervisor(child(Worker, log), strategy="simple_one_for_one")
    branches = [child(pool, id=f"b{i}") for i in range(100)]
    rt = runtime(tmp_path, children=[child(supervisor(*branches), id="top")])
    await rt.start()
    for i in range(100):
        for j in range(100):
            rt.spawn(Worker, name=f"w{j}", under=f"/app/top/b{i}")
    assert await rt.lookup("/app/top/b99/w99").ask("inc") == 1
    assert sum(1 for e in log if e[0] == "start") == 10_000
    assert len(rt.tree().walk()) == 10_000 + 100 + 2
    await asyncio.wait_for(rt.aclose(), 60)  # completes: no child waits on another forever
    assert asyncio.all_tasks() - before == set()
    assert sum(1 for e in log if e[0] == "stop") == 10_000
    stops = Counter(e[1] for e in log if e[0] == "stop")
    assert stops == {f"w{j}": 100 for j in range(100)}  # each actor of each pool stopped once
    with pytest.raises(ActorNotFound):
        rt.lookup("/app/top/b0/w0")
    await asyncio.wait_for(rt.wait(), 1)  # stopped cleanly: returns at once


# --- asks and messages ------------------------------------------------------------------------


async def test_asks_to_a_crashing_actor_fail_fast(tmp_path: Path) -> None:
    kids = [child(Worker, [], id="w"), child(Worker, [], id="t", restart="temporary")]
    async with runtime(tmp_path, children=kids) as rt:
        began = time.monotonic()
        with pytest.raises(ActorDied, match="crashed with ValueError"):
            await rt.lookup("/app/w").ask("crash", timeout=20)
        # a temporary actor: the ask queued behind the crash fails as soon as it is finished
        t = rt.lookup("/app/t")
        first, second = t.ask("crash", timeout=20), t.ask("inc", timeout=20)
        results = await asyncio.gather(first, second, return_exceptions=True)
        assert [type(r) for r in results] == [ActorDied, ActorDied]
        assert "stopped before replying" in str(results[1])
        with pytest.raises(ActorDied, match="has stopped"):
            await t.ask("inc", timeout=20)  # and so does any later ask
        assert time.monotonic() - began < 2.0


async def test_an_ask_to_an_actor_that_cannot_start_fails_once_its_supervisor_gives_up(tmp_path: Path) -> None:
    failures = {"broken": 0}
    sub = supervisor(child(StartCrasher, failures, id="broken"), max_restarts=2)
    backoff = Backoff(min=0.3, jitter=0)  # the root restarts /app/sub slowly: time to repair it
    async with runtime(tmp_path, backoff=backoff, children=[child(sub, id="sub")]) as rt:
        broken = rt.lookup("/app/sub/broken")
        failures["broken"] = 1_000
        began = time.monotonic()
        await crash(broken)
        with pytest.raises(ActorDied, match="/app/sub/broken"):
            await broken.ask("hello", timeout=20)  # queued through failed starts; fails when /app/sub gives up
        assert time.monotonic() - began < 2.0
        failures["broken"] = 0
        assert await answer(rt, "/app/sub/broken", "hello") == 1  # the restarted subtree works


async def test_no_message_is_silently_lost(tmp_path: Path) -> None:
    handled: list[int] = []
    sent = 600
    async with runtime(tmp_path, max_restarts=1_000, children=[child(Tally, handled, 7, id="c")]) as rt:
        ref = rt.lookup("/app/c")
        for i in range(1, sent + 1):
            await ref.tell(i)
        await eventually(lambda: len(handled) >= 200, what="200 messages handled")
        await asyncio.wait_for(ref.stop(), 10)
        for i in range(sent + 1, sent + 11):
            await ref.tell(i)  # after the stop: straight to dead letters
        dead = [d.message for d in rt.dead_letters() if d.path == "/app/c"]
        assert sorted(handled + dead) == list(range(1, sent + 11))  # each message handled once or dead-lettered
        assert handled == sorted(handled)  # in order, across restarts
        assert rt.tree().find("/app/c") is None
    events = system_events(tmp_path)
    assert len(of_type(events, "ActorCrashed", "/app/c")) == len([m for m in handled if m % 7 == 0])
    [(_, stopped)] = of_type(events, "ActorStopped", "/app/c")
    lettered = sum(p.count for _, p in of_type(events, "DeadLettered", "/app/c"))
    assert stopped.dead_letters + lettered == len(dead)


@pytest.mark.parametrize("restart", ["permanent", "temporary"])
async def test_writers_held_back_by_a_full_mailbox_lose_nothing_when_it_crashes(tmp_path: Path, restart: str) -> None:
    handled: list[int] = []
    tally = child(Tally, handled, 50, id="t", restart=restart, mailbox_size=2)
    async with runtime(tmp_path, max_restarts=100, children=[tally]) as rt:
        ref = rt.lookup("/app/t")
        await asyncio.gather(*(ref.tell(i) for i in range(1, 201)))  # most wait for room
        if restart == "permanent":
            await eventually(lambda: len(handled) == 200, what="all 200 handled across the restarts")
        else:
            await eventually(lambda: not ref.alive, what="the temporary child to finish")
        dead = [d.message for d in rt.dead_letters() if d.path == "/app/t"]
        assert sorted(handled + dead) == list(range(1, 201))
        assert (len(handled), len(dead)) == ((200, 0) if restart == "permanent" else (50, 150))


async def test_messages_queued_for_siblings_of_a_group_restart_are_dead_lettered_not_dropped(tmp_path: Path) -> None:
    handled: list[int] = []
    kids = [child(Worker, [], id="a"), child(Tally, handled, id="c")]
    async with runtime(tmp_path, strategy="one_for_all", children=kids) as rt:
        c = rt.lookup("/app/c")
        for i in range(300):
            c.try_tell(i)
        await crash(rt.lookup("/app/a"))  # c is stopped (queue dead-lettered) and restarted
        assert await rt.lookup("/app/a").ask("inc") == 2  # the group restart is done
        for i in range(300, 310):
            await c.tell(i)
        await eventually(lambda: handled[-1:] == [309], what="c to handle the last message")
        dead = [d.message for d in rt.dead_letters() if d.path == "/app/c"]
        assert sorted(handled + dead) == list(range(310))


# Regression: Cell._finish dead-letters the runtime's own ChildExit/_RestartDue left in a supervisor's mailbox.
async def test_dead_letters_hold_only_user_messages(tmp_path: Path) -> None:
    rt = runtime(tmp_path, children=[child(Worker, [], id="a"), child(supervisor(child(Worker, [], id="b")), id="s")])
    async with rt:
        pass
    assert rt.dead_letter_count == 0, [d.message_type for d in rt.dead_letters()]
    assert [p.dead_letters for _, p in of_type(system_events(tmp_path), "ActorStopped")] == [0, 0, 0, 0]


# Regression: a tell after aclose() was journaled into the closed journal (append_failed logged).
async def test_a_tell_after_the_runtime_closed_is_a_quiet_dead_letter(tmp_path: Path) -> None:
    async with runtime(tmp_path, children=[child(Worker, [], id="w")]) as rt:
        ref = rt.lookup("/app/w")
    with structlog.testing.capture_logs() as logs:
        await ref.tell("late")
        with pytest.raises(ActorDied, match="has stopped"):
            await ref.ask("late")
        await asyncio.sleep(0.05)  # let any flush run
    assert [d.message for d in rt.dead_letters()] == ["late"]
    assert [entry for entry in logs if entry["log_level"] in ("error", "critical")] == []


# --- order --------------------------------------------------------------------------------------


async def test_children_start_in_order_and_stop_in_reverse(tmp_path: Path) -> None:
    log: Log = []
    kids = [
        child(Worker, log, 0.01, id="a"),
        child(Worker, log, id="b"),
        child(supervisor(child(Worker, log, 0.01, id="c"), child(Worker, log, id="d")), id="sub"),
        child(Worker, log, id="e"),
    ]
    async with runtime(tmp_path, children=kids) as rt:
        assert [(k, n) for k, n, _ in log] == [
            ("start", "a"), ("started", "a"), ("start", "b"),
            ("start", "c"), ("started", "c"), ("start", "d"),
            ("start", "e"),
        ]
        rt.spawn(Worker, log, name="f")  # a dynamic child joins the end of the line
        await rt.lookup("/app/f").ask("inc")
        log.clear()
    assert [n for k, n, _ in log if k == "stop"] == ["f", "e", "d", "c", "b", "a"]
    paths = [p.path for _, p in of_type(system_events(tmp_path), "ActorStopped")]
    assert paths == ["/app/f", "/app/e", "/app/sub/d", "/app/sub/c", "/app/sub", "/app/b", "/app/a", "/app"]


# --- shutdown timeouts ----------------------------------------------------------------------------


async def test_a_child_that_does_not_stop_within_its_shutdown_is_cancelled(tmp_path: Path) -> None:
    async with runtime(tmp_path, children=[child(Stuck, id="stuck", shutdown=0.05)]) as rt:
        stuck = rt.lookup("/app/stuck")
        asked = asyncio.ensure_future(stuck.ask("forever", timeout=10))
        await asyncio.sleep(0.01)  # the ask is being handled (forever)
        await stuck.tell("queued")
        began = time.monotonic()
        await asyncio.wait_for(stuck.stop(), 5)
        assert 0.04 <= time.monotonic() - began < 3.0
        assert not stuck.alive
        with pytest.raises(ActorDied, match="was cancelled"):
            await asked
        with pytest.raises(ActorNotFound):
            rt.lookup("/app/stuck")
        assert [d.message for d in rt.dead_letters() if d.path == "/app/stuck"] == ["queued"]
    [(_, stopped)] = of_type(system_events(tmp_path), "ActorStopped", "/app/stuck")
    assert stopped.reason == "killed: did not stop within its shutdown timeout" and stopped.dead_letters == 1


async def test_closing_the_runtime_cancels_stuck_children_and_leaves_no_task(tmp_path: Path) -> None:
    before = asyncio.all_tasks()
    kids = [child(Stuck, id="s1", shutdown=0.05), child(supervisor(child(Stuck, id="s2", shutdown=0.05)), id="sub")]
    rt = runtime(tmp_path, children=kids)
    await rt.start()
    await rt.lookup("/app/s1").tell("hang")
    await rt.lookup("/app/sub/s2").tell("hang")
    began = time.monotonic()
    await asyncio.wait_for(rt.aclose(), 5)
    assert time.monotonic() - began < 3.0
    assert asyncio.all_tasks() - before == set()


# Regression: Cell._run calls _stopped outside its try; a cancel during on_stop skips _finish and the exit report.
async def test_a_child_stuck_in_on_stop_is_cancelled_and_finished(tmp_path: Path) -> None:
    async with runtime(tmp_path, children=[child(SlowToStop, 60.0, id="slow", shutdown=0.05)]) as rt:
        slow = rt.lookup("/app/slow")
        assert await slow.ask("hi") == "hi"
        await asyncio.wait_for(slow.stop(), 10)
        assert not slow.alive  # finished: mailbox closed, unregistered
        with pytest.raises(ActorNotFound):
            rt.lookup("/app/slow")


# Regression: a supervisor cancelled past its shutdown (in on_stop) leaves its children running after aclose().
async def test_a_supervisor_cut_short_leaves_no_child_running(tmp_path: Path) -> None:
    before = asyncio.all_tasks()
    sub = supervisor(child(SlowToStop, 5.0, id="slow", shutdown=10.0))
    rt = runtime(tmp_path, children=[child(sub, id="sub", shutdown=0.05)])
    await rt.start()
    await rt.aclose()
    left = asyncio.all_tasks() - before
    for task in left:  # do not leave the orphan to the next test
        task.cancel()
    await asyncio.gather(*left, return_exceptions=True)
    assert left == set(), left


# Regression: stopping the root supervisor leaves Runtime.wait() waiting forever.
async def test_stopping_the_root_does_not_leave_wait_hanging(tmp_path: Path) -> None:
    async with runtime(tmp_path, children=[child(Worker, [], id="w")]) as rt:
        try:
            await rt.stop("/app")
        except InvalidArgument:
            return  # refusing to stop the root is also fine
        await asyncio.wait_for(rt.wait(), 1.0)


# --- $system provenance ------------------------------------------------------------------------


async def test_system_causation_walks_restart_crash_start(tmp_path: Path) -> None:
    async with runtime(tmp_path, children=[child(Worker, [], id="w")]) as rt:
        await crash(rt.lookup("/app/w"))
        assert await rt.lookup("/app/w").ask("inc") == 2
    with system_journal(tmp_path) as journal:
        events = [(e, journal.decode(e)) for e in journal.read_stream(SYSTEM_STREAM)]
        [(restarted, _)] = of_type(events, "ActorRestarted")
        chain = journal.causes(restarted.event_id)
        assert [(e.type, journal.decode(e).path) for e in chain] == [
            ("z8.ActorStarted", "/app"),
            ("z8.ActorStarted", "/app/w"),
            ("z8.ActorCrashed", "/app/w"),
            ("z8.ActorRestarted", "/app/w"),
        ]
        [(second_start, payload)] = [(e, p) for e, p in of_type(events, "ActorStarted", "/app/w") if p.incarnation == 2]
        assert second_start.causation_id == restarted.event_id
        assert [e.event_id for e in journal.effects(chain[2].event_id)] == [restarted.event_id, second_start.event_id]
        assert all(e.actor == "z8.runtime" for e, _ in events) and journal.verify().ok


async def test_system_causation_through_a_backoff_and_an_escalation(tmp_path: Path) -> None:
    sub = supervisor(child(Worker, [], id="w"), max_restarts=1, backoff=Backoff(min=0.01, jitter=0))
    async with runtime(tmp_path, children=[child(sub, id="sub")]) as rt:
        w = rt.lookup("/app/sub/w")
        await crash(w)
        assert await w.ask("inc") == 2
        await crash(w)
        await eventually(lambda: alive_at(rt, "/app/sub/w") and rt.lookup("/app/sub/w") != w, what="the new subtree")
    with system_journal(tmp_path) as journal:
        events = [(e, journal.decode(e)) for e in journal.read_stream(SYSTEM_STREAM)]
        [(restarted, _)] = of_type(events, "ActorRestarted", "/app/sub/w")
        assert [e.type for e in journal.causes(restarted.event_id)][-4:] == [
            "z8.ActorStarted", "z8.ActorCrashed", "z8.RestartScheduled", "z8.ActorRestarted",
        ]
        [(escalated, _)] = of_type(events, "SupervisorEscalated")
        assert [(e.type, journal.decode(e).path) for e in journal.causes(escalated.event_id)][-3:] == [
            ("z8.ActorStarted", "/app/sub/w"),  # incarnation 2, started by the restart
            ("z8.ActorCrashed", "/app/sub/w"),
            ("z8.SupervisorEscalated", "/app/sub"),
        ]


async def test_system_events_can_be_read_from_a_journal_the_caller_owns(tmp_path: Path) -> None:
    types = register_system_types(TypeRegistry())
    with open_journal(tmp_path / "own", durability="fast", types=types) as journal:
        async with Runtime(journal, children=[child(Worker, [], id="w")]) as rt:
            await crash(rt.lookup("/app/w"))
            await rt.lookup("/app/w").ask("inc")
        assert not journal.closed  # the runtime leaves a journal it was given open
        kinds = [e.type for e in journal.read_stream(SYSTEM_STREAM)]
        assert kinds.count("z8.ActorCrashed") == 1 and kinds.count("z8.ActorRestarted") == 1


# --- the tree -------------------------------------------------------------------------------------


async def test_tree_shows_path_kind_strategy_state_mailbox_restarts_crash_and_uptime(tmp_path: Path) -> None:
    kids = [
        child(Door, id="door"),
        child(supervisor(child(Stuck, id="busy", shutdown=0.05), strategy="rest_for_one"), id="sub"),
    ]
    async with runtime(tmp_path, children=kids) as rt:
        door, busy = rt.lookup("/app/door"), rt.lookup("/app/sub/busy")
        assert await door.ask("open") == "open"
        with pytest.raises(ActorDied, match="KeyError"):
            await door.ask("crash")
        assert await door.ask("state") == "closed"  # a fresh incarnation starts in the initial state
        assert await door.ask("open") == "open"
        for i in range(4):
            await busy.tell(i)  # the first blocks it; three wait
        await asyncio.sleep(0.05)
        tree = rt.tree()
        assert [n.path for n in tree.walk()] == ["/app", "/app/door", "/app/sub", "/app/sub/busy"]
        root, door_node, sub_node, busy_node = tree.walk()
        assert (root.kind, root.strategy, root.alive) == ("supervisor", "one_for_one", True)
        assert (door_node.kind, door_node.state, door_node.restarts) == ("actor", "open", 1)
        assert door_node.last_crash == "KeyError: 'hinge'"
        assert (sub_node.kind, sub_node.strategy, sub_node.restarts) == ("supervisor", "rest_for_one", 0)
        assert sub_node.last_crash is None
        assert (busy_node.mailbox, busy_node.state, busy_node.strategy) == (3, None, None)
        assert 0.0 <= door_node.uptime <= root.uptime and root.uptime >= 0.05
        assert str(tree).splitlines() == [
            f"/app  [supervisor, one_for_one, up {root.uptime:.1f}s]",
            f"  door  [actor, state=open, restarts=1, last crash: KeyError: 'hinge', up {door_node.uptime:.1f}s]",
            f"  sub  [supervisor, rest_for_one, up {sub_node.uptime:.1f}s]",
            f"    busy  [actor, mailbox=3, up {busy_node.uptime:.1f}s]",
        ]
        data = json.loads(json.dumps(tree.to_dict()))  # plain, JSON-ready data
        assert data["path"] == "/app" and data["children"][0]["state"] == "open"
        assert data["children"][1]["children"][0] == {
            "path": "/app/sub/busy", "kind": "actor", "alive": True, "strategy": None, "state": None, "mailbox": 3,
            "restarts": 0, "last_crash": None, "uptime": busy_node.uptime, "children": [],
        }
        assert tree.find("/app/nowhere") is None


# --- lookups and names ----------------------------------------------------------------------------


async def test_lookups_of_unknown_paths_raise_actor_not_found(tmp_path: Path) -> None:
    class Finder(z8.Actor):
        async def receive(self, message: str, ctx: z8.ActorContext) -> Any:
            return ctx.lookup(message).path

    async with runtime(tmp_path, children=[child(Finder, id="finder")]) as rt:
        finder = rt.lookup("/app/finder")
        assert await finder.ask("/app") == "/app"
        for path in ("/app/nobody", "/app/finder/x", "app/finder", "", "/other"):
            with pytest.raises(ActorNotFound, match="no live actor at"):
                rt.lookup(path)
        with pytest.raises(ActorDied, match="ActorNotFound"):
            await finder.ask("/app/nobody")  # the lookup fails inside the actor, which crashes
        assert isinstance(rt.lookup("/app/finder"), z8.ActorRef)
    with pytest.raises(LookupError):
        rt.lookup("/app/finder")  # after the runtime stopped


async def test_duplicate_sibling_names_raise_duplicate_name(tmp_path: Path) -> None:
    sub = supervisor(child(Worker, [], id="w"))
    async with runtime(tmp_path, children=[child(Worker, [], id="w"), child(sub, id="sub")]) as rt:
        with pytest.raises(DuplicateName, match=r"/app already has a child named 'w'"):
            rt.spawn(Worker, [], name="w")
        with pytest.raises(DuplicateName, match=r"/app/sub already has a child named 'w'"):
            rt.spawn(Worker, [], name="w", under="/app/sub")
        with pytest.raises(DuplicateName, match="'sub'"):
            rt.spawn(supervisor(), name="sub")
        rt.spawn(Worker, [], name="w2", under="/app/sub")  # siblings differ, cousins may share
        assert await rt.lookup("/app/sub/w2").ask("inc") == 1
        assert [n.path for n in rt.tree().walk()] == ["/app", "/app/w", "/app/sub", "/app/sub/w", "/app/sub/w2"]


# --- the thread handle ----------------------------------------------------------------------------


def test_run_in_thread_handle_drives_the_runtime_with_plain_calls(tmp_path: Path) -> None:
    log: Log = []
    handle = Runtime(tmp_path / "j", durability="fast", children=[child(Worker, log, id="w")]).run_in_thread()
    with handle:
        assert any(t.name == "z8-runtime" for t in threading.enumerate())
        assert handle.tree().find("/app/w") is not None
        handle.tell("/app/w", "told")
        assert handle.ask("/app/w", "asked") == "asked"
        assert ("msg", "w", "told") in log
        ref = handle.spawn(Worker, log, name="extra")
        assert isinstance(ref, z8.ActorRef) and handle.lookup("/app/extra") == ref
        assert handle.ask(ref, "inc") == 1
        with pytest.raises(ActorDied):
            handle.ask("/app/w", "crash")
        assert handle.ask("/app/w", "inc") == 2
        handle.stop("/app/extra")
        with pytest.raises(ActorNotFound):
            handle.lookup("/app/extra")
        with pytest.raises(ActorNotFound):
            handle.tell("/app/nobody", "x")
        assert [n.path for n in handle.tree().children] == ["/app/w"]
    assert not any(t.name == "z8-runtime" for t in threading.enumerate())
    handle.close()  # idempotent
    assert ("stop", "w", 2) in log
    kinds = [e.type for e, _ in system_events(tmp_path)]
    assert kinds.count("z8.ActorRestarted") == 1


# --- regressions from review ---------------------------------------------------------------------


class SlowThenBoom(z8.Actor):
    async def receive(self, message: Any, ctx: z8.ActorContext) -> Any:
        if message == "boom-later":
            await asyncio.sleep(0.2)
            raise RuntimeError("boom")
        return message


async def test_a_child_that_crashes_while_being_stopped_is_finished(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    await rt.start()
    ref = rt.spawn(SlowThenBoom, name="f")
    await ref.tell("boom-later")
    await asyncio.sleep(0.05)
    await asyncio.wait_for(rt.aclose(), 5)
    assert not ref.alive and rt._core.cell("/app/f") is None  # noqa: SLF001
    with pytest.raises(ActorDied):
        await ref.ask("hello", timeout=1)


async def test_a_group_restart_survives_a_child_crashing_while_its_supervisor_stops(tmp_path: Path) -> None:
    class Crasher(z8.Actor):
        async def receive(self, message: Any, ctx: z8.ActorContext) -> Any:
            raise RuntimeError("b crashed")

    kids = [child(supervisor(child(SlowThenBoom, id="a")), id="s"), child(Crasher, id="b")]
    async with runtime(tmp_path, strategy="one_for_all", max_restarts=3, children=kids) as rt:
        await rt.lookup("/app/s/a").tell("boom-later")
        await asyncio.sleep(0.05)
        with pytest.raises(ActorDied):
            await rt.lookup("/app/b").ask("x")
        await eventually(lambda: alive_at(rt, "/app/s/a") and alive_at(rt, "/app/b"), what="the group back")
        assert rt.escalation is None


async def test_no_child_is_adopted_by_a_supervisor_taking_its_children_down(tmp_path: Path) -> None:
    class SlowStop(z8.Actor):
        async def receive(self, message: Any, ctx: z8.ActorContext) -> Any:
            if message == "crash":
                raise RuntimeError("worker crashed")
            return message

        async def on_stop(self, ctx: z8.ActorContext) -> None:
            await asyncio.sleep(0.3)

    pool = supervisor(child(SlowStop, id="w"), strategy="simple_one_for_one", max_restarts=0)
    before = asyncio.all_tasks()
    rt = runtime(tmp_path, children=[child(pool, id="pool")])
    await rt.start()
    rt.spawn(SlowStop, under="/app/pool")
    await rt.spawn(SlowStop, under="/app/pool").tell("crash")  # the pool gives up and stops its children
    for _ in range(10):
        await asyncio.sleep(0.05)
        with contextlib.suppress(RuntimeNotRunning, InvalidArgument):
            rt.spawn(SlowStop, under="/app/pool")
    await asyncio.wait_for(rt.aclose(), 10)
    assert asyncio.all_tasks() - before == set()


async def test_a_name_is_free_as_soon_as_its_stop_returns(tmp_path: Path) -> None:
    async with runtime(tmp_path) as rt:
        ref = rt.spawn(Worker, [], name="worker")
        await ref.stop()
        again = rt.spawn(Worker, [], name="worker")  # even before the supervisor read the exit
        assert await again.ask("inc") == 1


async def test_an_actor_stops_itself_with_ctx_stop(tmp_path: Path) -> None:
    stopped: list[str] = []

    class Job(z8.Actor):
        async def receive(self, message: Any, ctx: z8.ActorContext) -> Any:
            ctx.stop()
            return "bye"

        async def on_stop(self, ctx: z8.ActorContext) -> None:
            stopped.append(ctx.path)

    async with runtime(tmp_path) as rt:
        job = rt.spawn(Job, name="job")
        assert await job.ask("done?") == "bye"
        await eventually(lambda: rt.tree().find("/app/job") is None, what="the job to stop itself")
        assert stopped == ["/app/job"] and not job.alive
