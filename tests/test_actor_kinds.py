"""One suite, two kinds: every promise of the actor layer holds for Actor and ThreadActor alike.

The ``kind`` fixture hands each test an equivalent probe of either kind: the async
probe awaits (``asyncio.sleep``, ``asyncio.Event``), the thread probe blocks
(``time.sleep``, ``threading.Event``) on its own thread. Every runtime is opened with
``running()``, which fails the test if a thread the runtime started outlives it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka
import pytest

from z8 import Actor, Machine, Runtime, ThreadActor
from z8.actors import ThreadContext, _thread
from z8.errors import ActorDied, ActorNotFound, AskTimeout, InvalidArgument, MailboxFull, TransitionBlocked

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Boom(Exception):
    """The probe's crash."""


MACHINE = Machine.of("idle", {"idle": ["busy"], "busy": ["idle"]})
_instances = itertools.count(1)


class _Probe:
    """What both probes share: their state, a log of hooks, and the operations that never wait."""

    actor_machine = MACHINE

    def __init__(self, log: list[tuple[Any, ...]], gate: Any = None, fail_start: bool = False) -> None:
        self.log, self.gate, self.fail_start = log, gate, fail_start
        self.instance = next(_instances)
        self.total = 0
        self.seen: list[Any] = []

    def started(self, ctx: Any) -> None:
        self.log.append(("start", ctx.incarnation))
        if self.fail_start and ctx.incarnation == 1:
            raise Boom("on_start")

    def handle(self, op: str, arg: Any, ctx: Any) -> Any:
        self.seen.append((op, arg))
        if op == "add":
            self.total += arg
            return self.total
        if op == "get":
            return {"total": self.total, "instance": self.instance, "incarnation": ctx.incarnation, "seen": self.seen}
        if op == "boom":
            raise Boom(arg)
        if op == "go":
            ctx.transition(arg)
            return ctx.state
        if op == "try_go":
            try:
                ctx.transition(arg)
            except TransitionBlocked as blocked:
                return ("blocked", blocked.source, blocked.target, ctx.state)
        if op == "where":
            return threading.current_thread()
        return op


class AsyncProbe(_Probe, Actor):
    async def on_start(self, ctx: Any) -> None:
        self.started(ctx)

    async def receive(self, message: Any, ctx: Any) -> Any:
        op, arg = message
        if op == "sleep":
            await asyncio.sleep(arg)
        elif op == "wait":
            self.log.append(("waiting", ctx.incarnation))
            await asyncio.wait_for(self.gate.wait(), 5)
        return self.handle(op, arg, ctx)

    async def on_stop(self, ctx: Any) -> None:
        self.log.append(("stop", ctx.incarnation))

    async def on_failure(self, error: BaseException, ctx: Any) -> None:
        self.log.append(("failure", ctx.incarnation, error))


class ThreadProbe(_Probe, ThreadActor):
    def on_start(self, ctx: ThreadContext) -> None:
        self.started(ctx)

    def receive(self, message: Any, ctx: ThreadContext) -> Any:
        op, arg = message
        if op == "sleep":
            time.sleep(arg)
        elif op == "wait":
            self.log.append(("waiting", ctx.incarnation))
            assert self.gate.wait(5)
        return self.handle(op, arg, ctx)

    def on_stop(self, ctx: ThreadContext) -> None:
        self.log.append(("stop", ctx.incarnation))

    def on_failure(self, error: BaseException, ctx: ThreadContext) -> None:
        self.log.append(("failure", ctx.incarnation, error))


@dataclass(frozen=True)
class Kind:
    name: str
    probe: type[Actor]
    gate: Callable[[], Any]
    """A fresh gate the probe's ``wait`` blocks on until the test calls ``gate.set()``."""


@pytest.fixture(params=["async", "thread"])
def kind(request: pytest.FixtureRequest) -> Kind:
    if request.param == "async":
        return Kind("async", AsyncProbe, asyncio.Event)
    return Kind("thread", ThreadProbe, threading.Event)


@asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[Runtime]:
    """A runtime over a fresh journal; on leaving, no thread it started may be left behind."""
    before = set(threading.enumerate())
    async with Runtime(tmp_path / "j", durability="fast") as rt:
        yield rt
    left = [t.name for t in threading.enumerate() if t not in before and not _pool_worker(t)]
    assert left == [], f"threads outlived the runtime: {left}"


def _pool_worker(thread: threading.Thread) -> bool:
    """Reusable executor threads (asyncio's and anyio's) that the journal's to_thread calls create."""
    return thread.name.startswith(("asyncio_", "AnyIO worker"))


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


async def system_events(rt: Runtime, type_name: str, count: int = 1) -> list[Any]:
    """The decoded ``$system`` events of one type, once ``count`` of them are written."""

    def found() -> list[Any]:
        return [rt.journal.decode(e) for e in rt.journal.read_stream("$system") if e.type == type_name]

    await until(lambda: len(found()) >= count)
    return found()


async def blocked(ref: Any, log: list[tuple[Any, ...]]) -> None:
    """Send the probe into its gate and wait until it is in there."""
    await ref.tell(("wait", None))
    await until(lambda: ("waiting", 1) in log)


# --- the shared suite --------------------------------------------------------------------------


async def test_tells_and_asks_are_handled_in_order(kind: Kind, tmp_path: Path) -> None:
    async with running(tmp_path) as rt:
        ref = rt.spawn(kind.probe, [], name="probe")
        assert rt.lookup("/app/probe") == ref
        for i in range(1, 4):
            await ref.tell(("add", i))
        totals = await asyncio.gather(*(ref.ask(("add", i)) for i in range(10, 14)))
        assert totals == [16, 27, 39, 52]
        state = await ref.ask(("get", None))
        assert [arg for _, arg in state["seen"][:-1]] == [1, 2, 3, 10, 11, 12, 13]
        [_root, started] = await system_events(rt, "z8.ActorStarted", 2)
        assert (started.path, started.kind) == ("/app/probe", {"async": "actor", "thread": "thread"}[kind.name])


async def test_try_tell_raises_mailbox_full_at_capacity(kind: Kind, tmp_path: Path) -> None:
    small = type("SmallProbe", (kind.probe,), {"actor_mailbox_size": 2})
    log: list[tuple[Any, ...]] = []
    gate = kind.gate()
    async with running(tmp_path) as rt:
        ref = rt.spawn(small, log, gate, name="small")
        await blocked(ref, log)
        ref.try_tell(("add", 1))
        ref.try_tell(("add", 2))
        with pytest.raises(MailboxFull):
            ref.try_tell(("add", 4))
        gate.set()
        assert (await ref.ask(("get", None)))["total"] == 3


async def test_tell_waits_while_the_mailbox_is_full(kind: Kind, tmp_path: Path) -> None:
    small = type("SmallProbe", (kind.probe,), {"actor_mailbox_size": 2})
    log: list[tuple[Any, ...]] = []
    gate = kind.gate()
    async with running(tmp_path) as rt:
        ref = rt.spawn(small, log, gate, name="small")
        await blocked(ref, log)
        await ref.tell(("add", 1))
        await ref.tell(("add", 2))
        pending = asyncio.create_task(ref.tell(("add", 10)))
        await asyncio.sleep(0.05)
        assert not pending.done()
        gate.set()
        await asyncio.wait_for(pending, 2)
        assert (await ref.ask(("get", None)))["total"] == 13


async def test_an_ask_without_a_reply_in_time_raises_ask_timeout(kind: Kind, tmp_path: Path) -> None:
    async with running(tmp_path) as rt:
        ref = rt.spawn(kind.probe, [], name="probe")
        began = time.monotonic()
        with pytest.raises(AskTimeout):
            await ref.ask(("sleep", 0.2), timeout=0.05)
        assert time.monotonic() - began < 0.15
        assert await ref.ask(("add", 1)) == 1  # the slow message was still handled, then this one


async def test_a_crash_fails_the_ask_at_once_and_a_fresh_instance_takes_over(kind: Kind, tmp_path: Path) -> None:
    log: list[tuple[Any, ...]] = []
    async with running(tmp_path) as rt:
        ref = rt.spawn(kind.probe, log, name="probe", restart="permanent")
        await ref.ask(("add", 5))
        first = await ref.ask(("get", None))
        began = time.monotonic()
        with pytest.raises(ActorDied) as caught:
            await ref.ask(("boom", "kaput"), timeout=5)
        assert time.monotonic() - began < 1
        cause = caught.value.cause
        assert isinstance(cause, Boom) and cause.args == ("kaput",) and caught.value.__cause__ is cause
        assert "handle" in [frame.name for frame in traceback.extract_tb(cause.__traceback__)]
        after = await ref.ask(("get", None))
        assert (first["incarnation"], after["incarnation"]) == (1, 2)
        assert after["total"] == 0 and after["instance"] != first["instance"]
        assert rt.lookup("/app/probe") == ref
        assert log == [("start", 1), ("failure", 1, cause), ("start", 2)]
        [crashed] = await system_events(rt, "z8.ActorCrashed")
        assert (crashed.path, crashed.error_type, crashed.message) == ("/app/probe", "Boom", "kaput")
        [restarted] = await system_events(rt, "z8.ActorRestarted")
        assert (restarted.path, restarted.incarnation) == ("/app/probe", 2)


async def test_a_crash_in_on_start_is_supervised(kind: Kind, tmp_path: Path) -> None:
    log: list[tuple[Any, ...]] = []
    async with running(tmp_path) as rt:
        ref = rt.spawn(kind.probe, log, fail_start=True, name="probe")
        assert (await ref.ask(("get", None)))["incarnation"] == 2
        assert [entry[:2] for entry in log] == [("start", 1), ("failure", 1), ("start", 2)]
        assert isinstance(log[1][2], Boom) and log[1][2].args == ("on_start",)


async def test_stop_calls_on_stop_and_the_actor_is_gone(kind: Kind, tmp_path: Path) -> None:
    log: list[tuple[Any, ...]] = []
    async with running(tmp_path) as rt:
        ref = rt.spawn(kind.probe, log, name="probe")
        assert await ref.ask(("add", 1)) == 1
        await ref.stop()
        assert log == [("start", 1), ("stop", 1)] and not ref.alive
        with pytest.raises(ActorNotFound):
            rt.lookup("/app/probe")


async def test_stop_dead_letters_queued_tells_and_fails_queued_asks(kind: Kind, tmp_path: Path) -> None:
    log: list[tuple[Any, ...]] = []
    gate = kind.gate()
    async with running(tmp_path) as rt:
        ref = rt.spawn(kind.probe, log, gate, name="probe")
        await blocked(ref, log)
        await ref.tell(("add", 1))
        await ref.tell(("add", 2))
        queued_ask = asyncio.create_task(ref.ask(("get", None)))
        await asyncio.sleep(0)
        before = rt.dead_letter_count
        stopping = asyncio.create_task(ref.stop())
        await asyncio.sleep(0.02)
        gate.set()
        await asyncio.wait_for(stopping, 2)
        assert rt.dead_letter_count == before + 2
        dead = [(d.path, d.message) for d in rt.dead_letters()[-2:]]
        assert dead == [("/app/probe", ("add", 1)), ("/app/probe", ("add", 2))]
        with pytest.raises(ActorDied, match="stopped"):
            await queued_ask
        assert log[-1] == ("stop", 1)
        [stopped] = await system_events(rt, "z8.ActorStopped")
        assert (stopped.path, stopped.dead_letters) == ("/app/probe", 2)


async def test_a_message_to_a_stopped_actor_is_a_dead_letter(kind: Kind, tmp_path: Path) -> None:
    async with running(tmp_path) as rt:
        ref = rt.spawn(kind.probe, [], name="probe")
        await ref.stop()
        before = rt.dead_letter_count
        await ref.tell(("add", 1))
        ref.try_tell(("add", 2))
        assert rt.dead_letter_count == before + 2
        assert rt.dead_letters()[-1].message == ("add", 2)
        with pytest.raises(ActorDied, match="stopped"):
            await ref.ask(("get", None))
        [lettered] = await system_events(rt, "z8.DeadLettered")
        assert (lettered.path, lettered.count) == ("/app/probe", 2)


async def test_a_stop_past_the_shutdown_timeout_cancels_the_actor(kind: Kind, tmp_path: Path) -> None:
    async with running(tmp_path) as rt:
        ref = rt.spawn(kind.probe, [], name="probe", shutdown=0.05)
        slow = asyncio.create_task(ref.ask(("sleep", 0.15)))
        await asyncio.sleep(0.02)
        began = time.monotonic()
        await ref.stop()
        assert time.monotonic() - began < 0.2 and not ref.alive
        with pytest.raises(ActorDied, match="cancelled"):
            await slow
        [stopped] = await system_events(rt, "z8.ActorStopped")
        assert stopped.reason.startswith("killed")
        # A blocking call cannot be interrupted: the abandoned thread ends when time.sleep returns.
        await until(lambda: not [t for t in threading.enumerate() if t.name.startswith("z8-thread:")])


async def test_machine_transitions_are_allowed_or_blocked_and_journaled(kind: Kind, tmp_path: Path) -> None:
    async with running(tmp_path) as rt:
        ref = rt.spawn(kind.probe, [], name="probe")
        assert ref.state == "idle"
        assert await ref.ask(("go", "busy")) == "busy" and ref.state == "busy"
        assert await ref.ask(("try_go", "busy")) == ("blocked", "busy", "busy", "busy")
        with pytest.raises(ActorDied) as caught:
            await ref.ask(("go", "busy"))
        assert isinstance(caught.value.cause, TransitionBlocked)
        assert (await ref.ask(("get", None)))["incarnation"] == 2 and ref.state == "idle"
        refused = await system_events(rt, "z8.TransitionRefused", 2)
        assert [(r.path, r.source, r.target) for r in refused] == [("/app/probe", "busy", "busy")] * 2


async def test_the_event_loop_runs_while_the_actor_works(kind: Kind, tmp_path: Path) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async with running(tmp_path) as rt:
        ref = rt.spawn(kind.probe, [], name="probe")
        await ref.ask(("add", 0))
        counting = asyncio.create_task(ticker())
        assert await ref.ask(("sleep", 0.2)) == "sleep"
        counting.cancel()
        assert ticks >= 8, f"the loop ticked only {ticks} times in 0.2 s"


# --- what only a ThreadActor promises ------------------------------------------------------------


async def test_each_incarnation_has_a_thread_that_ends_with_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    detached = _thread._HostHandle.detached  # noqa: SLF001

    def slow_detached(handle: Any) -> None:
        time.sleep(0.03)  # widen the gap between the last hook's reply and the thread's end
        detached(handle)

    monkeypatch.setattr(_thread._HostHandle, "detached", slow_detached)  # noqa: SLF001
    async with running(tmp_path) as rt:
        ref = rt.spawn(ThreadProbe, [], name="probe")
        first = await ref.ask(("where", None))
        assert first is not threading.current_thread() and first.name == "z8-thread:/app/probe#1"
        with pytest.raises(ActorDied):
            await ref.ask(("boom", "crash"))
        second = await ref.ask(("where", None))
        assert second.name == "z8-thread:/app/probe#2" and not first.is_alive()  # ended before the restart
        await ref.stop()
        assert not second.is_alive()  # ended before stop() returned

        killed = rt.spawn(ThreadProbe, [], name="killed", shutdown=0.05)
        third = await killed.ask(("where", None))
        slow = asyncio.create_task(killed.ask(("sleep", 0.2)))
        await asyncio.sleep(0.02)
        await killed.stop()
        with pytest.raises(ActorDied, match="cancelled"):
            await slow
        assert third.is_alive()  # still in time.sleep: a blocking call cannot be interrupted
        await until(lambda: not third.is_alive())  # but it ends as soon as the call returns


async def test_hooks_run_on_the_thread_and_super_calls_stay_there(tmp_path: Path) -> None:
    calls: list[tuple[str, str]] = []

    class Remembers:  # a mixin: its blocking hook is bridged too
        def on_stop(self, ctx: ThreadContext) -> None:
            calls.append(("on_stop", threading.current_thread().name))

    class Base(ThreadActor):
        def receive(self, message: Any, ctx: ThreadContext) -> Any:
            calls.append(("base", threading.current_thread().name))
            return message

    class Child(Remembers, Base):
        def on_start(self, ctx: ThreadContext) -> None:
            assert isinstance(ctx, ThreadContext)
            calls.append(("on_start", threading.current_thread().name))

        def receive(self, message: Any, ctx: ThreadContext) -> Any:
            calls.append(("child", threading.current_thread().name))
            return ("child", super().receive(message, ctx))

    async with running(tmp_path) as rt:
        ref = rt.spawn(Child, name="child")
        assert await ref.ask("hi") == ("child", "hi")
        await ref.stop()
    thread = "z8-thread:/app/child#1"
    assert calls == [("on_start", thread), ("child", thread), ("base", thread), ("on_stop", thread)]


async def test_ctx_run_reaches_other_actors_from_the_thread(tmp_path: Path) -> None:
    class Forwarder(ThreadActor):
        def receive(self, message: Any, ctx: ThreadContext) -> Any:
            return ctx.run(ctx.lookup("/app/probe").ask(message))

    async with running(tmp_path) as rt:
        rt.spawn(AsyncProbe, [], name="probe")
        forwarder = rt.spawn(Forwarder, name="forwarder")
        assert await forwarder.ask(("add", 2)) == 2
        assert await forwarder.ask(("add", 3)) == 5
        with pytest.raises(ActorDied) as caught:
            await forwarder.ask(("boom", "far away"))  # the probe's ActorDied, raised in the forwarder
        assert isinstance(caught.value.cause, ActorDied) and isinstance(caught.value.cause.cause, Boom)


def test_async_hooks_are_refused_when_the_class_is_made() -> None:
    with pytest.raises(InvalidArgument, match="plain method"):

        class Wrong(ThreadActor):
            async def receive(self, message: Any, ctx: Any) -> Any:  # type: ignore[override]
                return message


async def test_a_thread_stopped_behind_z8s_back_crashes_the_actor_and_it_restarts(tmp_path: Path) -> None:
    async with running(tmp_path) as rt:
        ref = rt.spawn(ThreadProbe, [], name="probe")
        first = await ref.ask(("where", None))
        await asyncio.to_thread(pykka.ActorRegistry.stop_all)  # what other pykka code may do at exit
        assert not first.is_alive()
        with pytest.raises(ActorDied) as caught:
            await ref.ask(("add", 1))
        assert isinstance(caught.value.cause, ActorDied) and "lost its thread" in str(caught.value.cause)
        assert (await ref.ask(("get", None)))["incarnation"] == 2
