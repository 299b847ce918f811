"""Durable effects: the outbox, retries, unknown outcomes, recovery, bad input, the policy gate.

Every test runs a real ``z8.Application`` on an LMDB journal in ``tmp_path`` and asserts
what the journal holds, not only what the agent replied.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from _polling import until

import z8
from z8.effects import (
    NOT_FOUND,
    EffectApproved,
    EffectContext,
    EffectFailed,
    EffectIntended,
    EffectRedriven,
    EffectRetrying,
    EffectStuck,
    EffectSucceeded,
    EffectUnknown,
    TimerFired,
    TimerSet,
    effect,
)
from z8.errors import (
    EffectNotFound,
    EffectStateError,
    InvalidDecision,
    InvalidEffect,
    OutcomeUnknown,
    Retryable,
)
from z8.journal import Envelope
from z8.policies import Allow, Deny, EffectRequest, RequireApproval
from z8.testing import FakeClock

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- requests, results, commands, events --------------------------------------------------


class Req(msgspec.Struct, frozen=True, tag=True):
    n: int


class Res(msgspec.Struct, frozen=True, tag=True):
    n: int
    key: str


class Other(msgspec.Struct, frozen=True, tag=True):
    """Not the request type of any effect."""

    x: int


class Run(msgspec.Struct, frozen=True, tag=True):
    """Call ``effect`` with Req(n); on each success call it again with n+1, ``steps`` in all."""

    worker_id: str
    effect: str
    n: int = 0
    steps: int = 1


class Fan(msgspec.Struct, frozen=True, tag=True):
    """One decision calling ``effect`` ``count`` times (Req(0), Req(1), …)."""

    worker_id: str
    effect: str
    count: int


class Bad(msgspec.Struct, frozen=True, tag=True):
    """A decision that must be refused whole (see Worker.bad)."""

    worker_id: str
    mode: str


class Arm(msgspec.Struct, frozen=True, tag=True):
    worker_id: str
    after: float


class Ping(msgspec.Struct, frozen=True, tag=True):
    """A timer's message (registered)."""

    note: str


class Unregistered(msgspec.Struct, frozen=True, tag=True):
    """A timer message nobody registered."""

    note: str


class Started(msgspec.Struct, frozen=True, tag=True):
    effect: str
    n: int
    steps: int


class Outcome(msgspec.Struct, frozen=True, tag=True):
    """What decide saw of an effect's outcome (journaled with that outcome)."""

    kind: str
    effect_id: str
    effect: str
    result_type: str = ""
    result_n: int | None = None
    result_key: str = ""
    error: str = ""
    exhausted: bool = False
    resolved: bool = False
    settled_by: str = ""
    attempts: int = 0


class Pinged(msgspec.Struct, frozen=True, tag=True):
    note: str


def event_types() -> z8.TypeRegistry:
    return z8.TypeRegistry([Started, Outcome, Ping, Pinged])


class WorkerState(msgspec.Struct, frozen=True):
    effect: str = ""
    n: int = 0
    remaining: int = 0


class Worker(z8.Agent):
    """Calls effects and journals what it learns of their outcomes as ``Outcome`` events."""

    State = WorkerState

    def decide(self, state: WorkerState, msg: Any, ctx: Any) -> Any:
        match msg:
            case Run(effect=name, n=n, steps=steps):
                return z8.Decision([Started(name, n, steps)], reply=ctx.version + 1,
                                   effects=[z8.Call(name, Req(n))])
            case Fan(effect=name, count=count):
                return z8.Decision([Started(name, 0, 0)], reply=ctx.version + 1,
                                   effects=[z8.Call(name, Req(i)) for i in range(count)])
            case Arm(after=after):
                return z8.Decision([Started("timer", 0, 0)], timers=[z8.Timer(Ping("wake"), after=after)])
            case Ping(note=note):
                return z8.Decision([Pinged(note)])
            case Bad(mode=mode):
                return self.bad(mode)
            case EffectSucceeded(effect="crashy"):
                raise ZeroDivisionError("decide is broken for this outcome")
            case EffectSucceeded():
                result = msg.result
                seen = Outcome("succeeded", msg.effect_id, msg.effect, type(result).__name__,
                               getattr(result, "n", None), getattr(result, "key", ""),
                               resolved=msg.resolved, settled_by=msg.settled_by or "", attempts=msg.attempts)
                more = [z8.Call(state.effect, Req(state.n + 1))] if state.remaining > 1 else []
                return z8.Decision([seen], effects=more)
            case EffectFailed():
                return z8.Decision([Outcome("failed", msg.effect_id, msg.effect, error=msg.error,
                                            exhausted=msg.exhausted, settled_by=msg.settled_by or "",
                                            attempts=msg.attempts)])
            case EffectUnknown():
                return z8.Decision([Outcome("unknown", msg.effect_id, msg.effect, error=msg.reason,
                                            attempts=msg.attempts)])
            case EffectStuck():
                return z8.Decision([Outcome("stuck", msg.effect_id, msg.effect, error=msg.reason)])
        return z8.reject("unknown_message", type=type(msg).__name__)

    def bad(self, mode: str) -> z8.Decision:
        events: list[Any] = [Started("bad", 0, 0)]  # would be written if the decision were accepted
        match mode:
            case "unregistered_effect":
                return z8.Decision(events, effects=[z8.Call("nobody_declared_this", Req(1))])
            case "unregistered_effect_object":
                return z8.Decision(events, effects=[z8.Call(STRAY, Req(1))])
            case "wrong_request":
                return z8.Decision(events, effects=[z8.Call("echo", Other(1))])
            case "second_call_bad":  # the first call is fine: nothing at all is written
                return z8.Decision(events, effects=[z8.Call("echo", Req(1)), z8.Call("echo", "not a Req")])
            case "not_a_call":
                return z8.Decision(events, effects=[{"effect": "echo", "request": {"n": 1}}])
            case "timer_unregistered":
                return z8.Decision(events, timers=[z8.Timer(Unregistered("x"), after=1.0)])
            case "timer_both":
                return z8.Decision(events, timers=[z8.Timer(Ping("x"), after=1.0, at=1_800_000_000_000_000_000)])
            case "timer_neither":
                return z8.Decision(events, timers=[z8.Timer(Ping("x"))])
            case "timer_negative":
                return z8.Decision(events, timers=[z8.Timer(Ping("x"), after=-1.0)])
            case "not_a_timer":
                return z8.Decision(events, timers=[Ping("x")])
        raise AssertionError(mode)

    def evolve(self, state: WorkerState, event: Any) -> WorkerState:
        match event:
            case Started(effect=name, n=n, steps=steps) if name not in ("bad", "timer"):
                return WorkerState(name, n, steps)
            case Outcome(kind="succeeded"):
                return msgspec.structs.replace(state, n=state.n + 1, remaining=state.remaining - 1)
        return state


def router() -> z8.Router:
    return z8.Router().identify(Worker, by="worker_id", prefix="w-").dispatch(Run, Fan, Bad, Arm, to=Worker)


# --- effects built per test ----------------------------------------------------------------

Behaviour = Callable[[Req, EffectContext], Awaitable[Res]]
FAST = z8.Retry(attempts=3, backoff=z8.Backoff(min=0.001, max=0.004, jitter=0.0))


class Probe:
    """An effect's body: logs (key, attempt) of every call, then runs ``behaviour``."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.behaviour = behaviour
        self.started = asyncio.Event()

    async def __call__(self, request: Req, ctx: EffectContext) -> Res:
        self.calls.append((ctx.key, ctx.attempt))
        self.started.set()
        if self.behaviour is not None:
            return await self.behaviour(request, ctx)
        return Res(request.n * 2, ctx.key)

    @property
    def keys(self) -> list[str]:
        return [key for key, _ in self.calls]


def declare(name: str, probe: Probe, **contract: Any) -> z8.effects.Effect:
    async def body(request: Req, ctx: EffectContext) -> Res:
        return await probe(request, ctx)

    contract.setdefault("retry", FAST)
    return effect(body, name=name, **contract)


async def _undo(request: Res, ctx: EffectContext) -> None:
    return None


async def _echo(request: Req, ctx: EffectContext) -> Res:
    return Res(request.n, ctx.key)


ECHO = effect(_echo, name="echo", kind="read")
STRAY = effect(_echo, name="stray", kind="read")  # never registered with any application


def app_for(tmp_path: Path, *effects: z8.effects.Effect, **options: Any) -> z8.Application:
    options.setdefault("durability", "fast")
    return z8.Application(router(), tmp_path / "j", types=event_types(), effects=[ECHO, *effects], **options)


# --- reading the journal -------------------------------------------------------------------


def records(app: z8.Application, stream: str) -> list[tuple[Envelope, Any]]:
    return [(envelope, app.journal.decode(envelope)) for envelope in app.journal.read_stream(stream)]


def of_type(app: z8.Application, stream: str, cls: type) -> list[Any]:
    return [record for _, record in records(app, stream) if type(record) is cls]


def outcomes(app: z8.Application, stream: str) -> list[Outcome]:
    return of_type(app, stream, Outcome)


async def settled(app: z8.Application, stream: str, count: int = 1, timeout: float = 5.0) -> list[Outcome]:
    """Wait until decide has journaled ``count`` outcomes in ``stream``; return them."""
    found = await until(lambda: len(outcomes(app, stream)) >= count and outcomes(app, stream),
                        timeout, f"{count} outcome(s) in {stream}")
    return found


async def quiet(seconds: float = 0.1) -> None:
    """Give the outbox a moment in which it must NOT act (asserted afterwards)."""
    await asyncio.sleep(seconds)


async def idle(app: z8.Application, effect_id: str) -> None:
    """Wait until the outbox's task for ``effect_id`` has returned. An effect is listed as
    dead/stuck a moment before that, and ``settle`` refuses it meanwhile (see
    test_an_effect_listed_as_dead_can_be_settled_at_once)."""
    await until(lambda: not app.outbox.item(effect_id).running, what=f"{effect_id}'s run to return")


def same_append(*envelopes: Envelope) -> None:
    """Assert the envelopes were written by one commit: consecutive positions and versions,
    one stream, one commit time, one causation and correlation."""
    first = envelopes[0]
    for offset, envelope in enumerate(envelopes):
        assert envelope.stream == first.stream
        assert envelope.position == first.position + offset
        assert envelope.version == first.version + offset
        assert envelope.recorded_at == first.recorded_at
        assert envelope.causation_id == first.causation_id
        assert envelope.correlation_id == first.correlation_id


# === 1. the intent, the key, the outcome ===================================================


async def test_a_call_is_journaled_with_its_decision_and_its_outcome_with_the_decision_on_it(tmp_path: Path) -> None:
    probe = Probe()
    charge = declare("charge", probe)
    async with app_for(tmp_path, charge) as app:
        first_version = await app.dispatch(Run("a", "charge", n=21))
        assert first_version == 1
        [seen] = await settled(app, "w-a")
        (started_env, started), (intent_env, intent), (done_env, done), (seen_env, seen_again) = records(app, "w-a")

        # the decision's event and the intent: one append, the intent after the events
        assert started == Started("charge", 21, 1)
        same_append(started_env, intent_env)
        assert intent_env.type == "z8.EffectIntended" and intent_env.actor == "/app/worker/w-a"
        assert intent_env.causation_id is not None
        assert type(intent) is EffectIntended
        assert intent.effect_id == f"w-a/{started_env.version}/0" == "w-a/1/0"
        assert (intent.effect, intent.kind, intent.idempotent, intent.verdict) == (
            "charge", "irreversible", False, "allow")
        assert intent.request == {"type": "Req", "n": 21}

        # the effect ran once, keyed by the effect id
        assert probe.calls == [("w-a/1/0", 1)]

        # the outcome and the decision on it: one append, caused by the intent
        assert done_env.type == "z8.EffectSucceeded"
        same_append(done_env, seen_env)
        assert done_env.causation_id == intent_env.event_id
        assert done_env.correlation_id == intent_env.correlation_id
        assert done == EffectSucceeded("w-a/1/0", "charge", {"type": "Res", "n": 42, "key": "w-a/1/0"}, 1)
        # decide got the result as the function's return type, not as builtins
        assert seen == seen_again == Outcome("succeeded", "w-a/1/0", "charge", "Res", 42, "w-a/1/0", attempts=1)

        await until(lambda: app.pending_effects() == [], what="no pending effect")
        assert await app.wait_effect("w-a/1/0", timeout=1.0) == done
        assert app.journal.verify().ok


async def test_effect_ids_index_the_calls_of_one_decision_and_follow_the_append_that_holds_them(
        tmp_path: Path) -> None:
    probe = Probe()
    charge = declare("charge", probe)
    async with app_for(tmp_path, charge) as app:
        await app.dispatch(Run("seed", "charge"))  # another stream: ids are per stream, not global
        await settled(app, "w-seed")
        assert await app.dispatch(Fan("f", "charge", 3)) == 1
        await settled(app, "w-f", 3)
        intents = of_type(app, "w-f", EffectIntended)
        assert [i.effect_id for i in intents] == ["w-f/1/0", "w-f/1/1", "w-f/1/2"]
        assert [i.request["n"] for i in intents] == [0, 1, 2]
        assert sorted(probe.keys) == ["w-f/1/0", "w-f/1/1", "w-f/1/2", "w-seed/1/0"]
        seen = {o.effect_id: o.result_n for o in outcomes(app, "w-f")}
        assert seen == {"w-f/1/0": 0, "w-f/1/1": 2, "w-f/1/2": 4}

        # a Call decided on an outcome: its id names the first version of THAT append
        assert await app.dispatch(Run("s", "charge", n=5, steps=2)) == 1
        await settled(app, "w-s", 2)
        rows = records(app, "w-s")
        types = [envelope.type for envelope, _ in rows]
        assert types == ["Started", "z8.EffectIntended", "z8.EffectSucceeded", "Outcome", "z8.EffectIntended",
                         "z8.EffectSucceeded", "Outcome"]
        same_append(rows[2][0], rows[3][0], rows[4][0])
        assert rows[4][1].effect_id == f"w-s/{rows[2][0].version}/0" == "w-s/3/0"
        assert rows[4][1].request == {"type": "Req", "n": 6}
        assert [o.result_key for o in outcomes(app, "w-s")] == ["w-s/1/0", "w-s/3/0"]
        assert app.journal.verify().ok


async def test_a_blocking_effect_runs_in_a_thread_with_the_same_contract(tmp_path: Path) -> None:
    import threading

    seen: list[tuple[str, int, bool]] = []

    def lookup(request: Req, ctx: EffectContext) -> Res:
        seen.append((ctx.key, ctx.attempt, threading.current_thread() is threading.main_thread()))
        return Res(request.n + 1, ctx.key)

    async with app_for(tmp_path, effect(lookup, kind="read")) as app:
        await app.dispatch(Run("t", "lookup", n=1))
        [seen_outcome] = await settled(app, "w-t")
        assert seen == [("w-t/1/0", 1, False)]
        assert seen_outcome == Outcome("succeeded", "w-t/1/0", "lookup", "Res", 2, "w-t/1/0", attempts=1)


# === 2. retries, dead letters, redrive, settle ============================================


async def test_retryable_errors_are_retried_with_the_same_key_each_retry_journaled(tmp_path: Path) -> None:
    async def twice_then_ok(request: Req, ctx: EffectContext) -> Res:
        if ctx.attempt < 3:
            raise Retryable(f"busy #{ctx.attempt}")
        return Res(request.n, ctx.key)

    probe = Probe(twice_then_ok)
    async with app_for(tmp_path, declare("flaky", probe)) as app:
        await app.dispatch(Run("r", "flaky", n=7))
        [seen] = await settled(app, "w-r")
        assert probe.calls == [("w-r/1/0", 1), ("w-r/1/0", 2), ("w-r/1/0", 3)]
        retrying = of_type(app, "w-r", EffectRetrying)
        assert [(r.effect_id, r.attempt, r.error, r.message) for r in retrying] == [
            ("w-r/1/0", 1, "Retryable", "busy #1"), ("w-r/1/0", 2, "Retryable", "busy #2")]
        assert all(0 < r.delay <= 0.004 for r in retrying)
        assert of_type(app, "w-r", EffectSucceeded) == [
            EffectSucceeded("w-r/1/0", "flaky", {"type": "Res", "n": 7, "key": "w-r/1/0"}, 3)]
        assert seen == Outcome("succeeded", "w-r/1/0", "flaky", "Res", 7, "w-r/1/0", attempts=3)
        # decide is not asked about a retry: one Outcome only
        assert len(outcomes(app, "w-r")) == 1


async def test_retry_on_names_more_retryable_exception_types(tmp_path: Path) -> None:
    async def reset_once(request: Req, ctx: EffectContext) -> Res:
        if ctx.attempt == 1:
            raise ConnectionResetError("peer reset")
        return Res(request.n, ctx.key)

    probe = Probe(reset_once)
    retry = z8.Retry(attempts=2, backoff=z8.Backoff(min=0.001, max=0.001, jitter=0.0), on=(ConnectionResetError,))
    async with app_for(tmp_path, declare("resetting", probe, retry=retry)) as app:
        await app.dispatch(Run("o", "resetting"))
        [seen] = await settled(app, "w-o")
        assert seen.kind == "succeeded" and seen.attempts == 2
        assert probe.calls == [("w-o/1/0", 1), ("w-o/1/0", 2)]
        assert [r.error for r in of_type(app, "w-o", EffectRetrying)] == ["ConnectionResetError"]


async def test_exhausted_retries_dead_letter_and_redrive_reruns_with_the_same_key(tmp_path: Path) -> None:
    up = False

    async def down_until_fixed(request: Req, ctx: EffectContext) -> Res:
        if not up:
            raise Retryable("service down")
        return Res(request.n, ctx.key)

    probe = Probe(down_until_fixed)
    async with app_for(tmp_path, declare("wire", probe)) as app:
        await app.dispatch(Run("d", "wire", n=3))
        [seen] = await settled(app, "w-d")
        assert seen == Outcome("failed", "w-d/1/0", "wire", error="Retryable", exhausted=True, attempts=3)
        assert probe.calls == [("w-d/1/0", 1), ("w-d/1/0", 2), ("w-d/1/0", 3)]
        assert len(of_type(app, "w-d", EffectRetrying)) == 2
        [failed] = of_type(app, "w-d", EffectFailed)
        assert (failed.error, failed.message, failed.attempts, failed.exhausted, failed.settled_by) == (
            "Retryable", "service down", 3, True, None)

        [dead] = await until(app.dead_letters, what="a dead letter")
        assert (dead.effect_id, dead.effect, dead.kind, dead.status, dead.stream, dead.owner) == (
            "w-d/1/0", "wire", "irreversible", "dead", "w-d", "/app/worker/w-d")
        assert dead.attempts == 3 and "service down" in dead.last_error
        assert dead.request == {"type": "Req", "n": 3}
        assert app.stuck() == [] and [v.status for v in app.pending_effects()] == ["dead"]

        up = True
        await app.redrive("w-d/1/0", by="ops")
        await settled(app, "w-d", 2)
        assert probe.keys == ["w-d/1/0"] * 4  # the same key after the redrive
        assert of_type(app, "w-d", EffectRedriven) == [EffectRedriven("w-d/1/0", "ops")]
        assert outcomes(app, "w-d")[1] == Outcome("succeeded", "w-d/1/0", "wire", "Res", 3, "w-d/1/0", attempts=1)
        types = [envelope.type for envelope, _ in records(app, "w-d")]
        assert types.index("z8.EffectRedriven") < types.index("z8.EffectSucceeded")
        await until(lambda: app.pending_effects() == [], what="no pending effect")
        with pytest.raises(EffectNotFound):  # it has an outcome now
            await app.redrive("w-d/1/0", by="ops")
        assert app.journal.verify().ok


async def test_settle_finalises_a_dead_letter_and_decide_sees_it(tmp_path: Path) -> None:
    async def always_down(request: Req, ctx: EffectContext) -> Res:
        raise Retryable("down")

    probe = Probe(always_down)
    async with app_for(tmp_path, declare("wire", probe)) as app:
        await app.dispatch(Run("ok", "wire", n=1))
        await app.dispatch(Run("no", "wire", n=2))
        await settled(app, "w-ok")
        await settled(app, "w-no")
        await until(lambda: len(app.dead_letters()) == 2, what="two dead letters")
        assert sorted(v.effect_id for v in app.dead_letters()) == ["w-no/1/0", "w-ok/1/0"]
        await idle(app, "w-ok/1/0")
        await idle(app, "w-no/1/0")

        await app.settle("w-ok/1/0", by="alice", result=Res(99, "done-by-hand"))
        await app.settle("w-no/1/0", by="bob", error="never happened")
        await settled(app, "w-ok", 2)
        await settled(app, "w-no", 2)

        [succeeded] = of_type(app, "w-ok", EffectSucceeded)
        assert succeeded.settled_by == "alice" and succeeded.result == {"type": "Res", "n": 99, "key": "done-by-hand"}
        assert outcomes(app, "w-ok")[1] == Outcome("succeeded", "w-ok/1/0", "wire", "Res", 99, "done-by-hand",
                                                   settled_by="alice", attempts=3)
        failed = of_type(app, "w-no", EffectFailed)[-1]
        assert (failed.error, failed.message, failed.settled_by, failed.exhausted) == (
            "Settled", "never happened", "bob", False)
        assert outcomes(app, "w-no")[1].kind == "failed" and outcomes(app, "w-no")[1].settled_by == "bob"
        await until(lambda: app.pending_effects() == [], what="the settled effects to leave the listing")
        assert app.dead_letters() == []
        assert len(probe.calls) == 6  # settling runs nothing
        with pytest.raises(EffectNotFound):
            await app.settle("w-ok/1/0", by="alice", result=None)


async def test_an_effect_listed_as_dead_can_be_settled_at_once(tmp_path: Path) -> None:
    async def down(request: Req, ctx: EffectContext) -> Res:
        raise Retryable("down")

    once = z8.Retry(attempts=1)
    async with app_for(tmp_path, declare("wire", Probe(down), retry=once)) as app:
        for i in range(5):
            await app.dispatch(Run(f"z{i}", "wire"))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5.0
            while not app.dead_letters():  # look as often as a busy operator console would
                assert loop.time() < deadline, "no dead letter"
                await asyncio.sleep(0)
            await app.settle(f"w-z{i}/1/0", by="ops", error="gave up")
            assert (await settled(app, f"w-z{i}", 2))[1].settled_by == "ops"


async def test_an_outcome_is_kept_when_decide_crashes_on_it(tmp_path: Path) -> None:
    probe = Probe()
    async with app_for(tmp_path, declare("crashy", probe)) as app:
        await app.dispatch(Run("c", "crashy"))
        await until(lambda: of_type(app, "w-c", EffectSucceeded), what="the outcome journaled")
        await until(lambda: app.pending_effects() == [])
        await quiet(0.05)
        assert [e.type for e, _ in records(app, "w-c")] == ["Started", "z8.EffectIntended", "z8.EffectSucceeded"]
        assert probe.calls == [("w-c/1/0", 1)]
        # the agent was restarted from its journal and decides again
        assert await app.dispatch(Run("c", "echo")) == 4
        [seen] = await settled(app, "w-c")
        assert seen.effect_id == "w-c/4/0" and seen.kind == "succeeded"
        assert app.journal.verify().ok


# === 3. a plain error is final ==============================================================


async def test_a_plain_exception_fails_the_effect_at_once_without_retry(tmp_path: Path) -> None:
    async def broken(request: Req, ctx: EffectContext) -> Res:
        raise ValueError("account closed")

    probe = Probe(broken)
    async with app_for(tmp_path, declare("charge", probe)) as app:
        await app.dispatch(Run("p", "charge"))
        [seen] = await settled(app, "w-p")
        assert seen == Outcome("failed", "w-p/1/0", "charge", error="ValueError", exhausted=False, attempts=1)
        assert of_type(app, "w-p", EffectFailed) == [EffectFailed("w-p/1/0", "charge", "ValueError",
                                                                  "account closed", 1)]
        assert of_type(app, "w-p", EffectRetrying) == []
        await quiet(0.05)
        assert probe.calls == [("w-p/1/0", 1)]
        assert app.pending_effects() == []


# === 4. unknown outcomes ===================================================================


async def test_a_timed_out_irreversible_effect_is_resolved_not_re_fired(tmp_path: Path) -> None:
    async def hangs(request: Req, ctx: EffectContext) -> Res:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    probe = Probe(hangs)
    asked: list[str] = []

    async def status(request: Req, ctx: EffectContext) -> Res:
        asked.append(ctx.key)
        return Res(request.n * 10, "found-" + ctx.key)

    pay = declare("pay", probe, timeout=0.05, resolve=status)
    async with app_for(tmp_path, pay) as app:
        await app.dispatch(Run("u", "pay", n=4))
        unknown, seen = await settled(app, "w-u", 2)
        assert unknown.kind == "unknown" and unknown.effect_id == "w-u/1/0" and "TimeoutError" in unknown.error
        assert seen == Outcome("succeeded", "w-u/1/0", "pay", "Res", 40, "found-w-u/1/0", resolved=True, attempts=1)
        assert probe.calls == [("w-u/1/0", 1)]  # never called again
        assert asked == ["w-u/1/0"]
        types = [envelope.type for envelope, _ in records(app, "w-u")]
        assert types == ["Started", "z8.EffectIntended", "z8.EffectUnknown", "Outcome", "z8.EffectSucceeded",
                         "Outcome"]
        [record] = of_type(app, "w-u", EffectSucceeded)
        assert record.resolved is True and record.result == {"type": "Res", "n": 40, "key": "found-w-u/1/0"}
        assert of_type(app, "w-u", EffectRetrying) == []
        await until(lambda: app.pending_effects() == [], what="no pending effect")


async def test_not_found_on_an_irreversible_effect_parks_it_stuck_then_settle_finalises_it(tmp_path: Path) -> None:
    async def lost(request: Req, ctx: EffectContext) -> Res:
        raise OutcomeUnknown("connection dropped after send")

    probe = Probe(lost)
    asked: list[str] = []

    async def no_record(request: Req, ctx: EffectContext) -> Any:
        asked.append(ctx.key)
        return NOT_FOUND

    async with app_for(tmp_path, declare("pay", probe, resolve=no_record)) as app:
        await app.dispatch(Run("nf", "pay"))
        unknown, stuck = await settled(app, "w-nf", 2)
        assert unknown.kind == "unknown" and "connection dropped" in unknown.error
        assert stuck.kind == "stuck" and "no record" in stuck.error
        await quiet(0.05)
        assert probe.calls == [("w-nf/1/0", 1)] and asked == ["w-nf/1/0"]
        [record] = of_type(app, "w-nf", EffectStuck)
        assert record.effect_id == "w-nf/1/0"
        [view] = await until(app.stuck, what="a stuck effect")
        assert (view.effect_id, view.status, view.kind) == ("w-nf/1/0", "stuck", "irreversible")
        await idle(app, "w-nf/1/0")

        await app.settle("w-nf/1/0", by="carol", result=Res(1, "bank-ref-9"))
        await settled(app, "w-nf", 3)
        assert outcomes(app, "w-nf")[2] == Outcome("succeeded", "w-nf/1/0", "pay", "Res", 1, "bank-ref-9",
                                                   settled_by="carol", attempts=1)
        await until(lambda: app.pending_effects() == [], what="no pending effect")
        assert probe.calls == [("w-nf/1/0", 1)]


async def test_not_found_on_a_reversible_effect_re_issues_it_with_the_same_key(tmp_path: Path) -> None:
    async def lost_once(request: Req, ctx: EffectContext) -> Res:
        if ctx.attempt == 1:
            raise OutcomeUnknown("no answer")
        return Res(request.n, ctx.key)

    probe = Probe(lost_once)

    async def no_record(request: Req, ctx: EffectContext) -> Any:
        return NOT_FOUND

    hold = declare("hold", probe, kind="reversible", compensate=_undo, resolve=no_record)
    async with app_for(tmp_path, hold) as app:
        await app.dispatch(Run("rv", "hold", n=8))
        unknown, seen = await settled(app, "w-rv", 2)
        assert unknown.kind == "unknown"
        assert seen == Outcome("succeeded", "w-rv/1/0", "hold", "Res", 8, "w-rv/1/0", attempts=2)
        assert probe.calls == [("w-rv/1/0", 1), ("w-rv/1/0", 2)]
        assert of_type(app, "w-rv", EffectStuck) == []
        assert of_type(app, "w-rv", EffectSucceeded)[0].resolved is False


async def test_unknown_without_resolve_is_stuck_and_never_re_fired(tmp_path: Path) -> None:
    async def hangs(request: Req, ctx: EffectContext) -> Res:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    probe = Probe(hangs)
    async with app_for(tmp_path, declare("wire", probe, timeout=0.03)) as app:
        await app.dispatch(Run("st", "wire", n=2))
        unknown, stuck = await settled(app, "w-st", 2)
        assert (unknown.kind, stuck.kind) == ("unknown", "stuck")
        [view] = await until(app.stuck, what="a stuck effect")
        assert (view.effect_id, view.effect, view.status, view.stream) == ("w-st/1/0", "wire", "stuck", "w-st")
        assert view.request == {"type": "Req", "n": 2} and view.last_error
        assert app.dead_letters() == []
        await quiet(0.1)
        assert probe.calls == [("w-st/1/0", 1)]

        # a human redrives it: it runs again, same key
        probe.behaviour = None
        await app.redrive("w-st/1/0", by="ops")
        await settled(app, "w-st", 3)
        assert probe.keys == ["w-st/1/0", "w-st/1/0"]
        assert outcomes(app, "w-st")[2].kind == "succeeded"
        await until(lambda: app.pending_effects() == [], what="no pending effect")


async def test_a_resolve_that_keeps_failing_leaves_the_effect_stuck(tmp_path: Path) -> None:
    async def lost(request: Req, ctx: EffectContext) -> Res:
        raise OutcomeUnknown("no answer")

    asked: list[tuple[str, int]] = []

    async def status_down(request: Req, ctx: EffectContext) -> Any:
        asked.append((ctx.key, ctx.attempt))
        raise ConnectionError("status API down")

    probe = Probe(lost)
    async with app_for(tmp_path, declare("pay", probe, resolve=status_down)) as app:
        await app.dispatch(Run("rf", "pay"))
        unknown, stuck = await settled(app, "w-rf", 2)
        assert (unknown.kind, stuck.kind) == ("unknown", "stuck")
        assert "resolve kept failing" in stuck.error and "status API down" in stuck.error
        assert asked == [("w-rf/1/0", 1), ("w-rf/1/0", 2), ("w-rf/1/0", 3)]  # retry.attempts status queries
        assert probe.calls == [("w-rf/1/0", 1)]


@pytest.mark.parametrize("contract", [{"idempotent": True}, {"kind": "read"}], ids=["idempotent", "read"])
async def test_an_effect_safe_to_reissue_is_retried_after_an_unknown_outcome_with_the_same_key(
        tmp_path: Path, contract: dict[str, Any]) -> None:
    async def slow_once(request: Req, ctx: EffectContext) -> Res:
        if ctx.attempt == 1:
            await asyncio.sleep(30)
        return Res(request.n, ctx.key)

    probe = Probe(slow_once)
    async with app_for(tmp_path, declare("fetch", probe, timeout=0.03, **contract)) as app:
        await app.dispatch(Run("i", "fetch", n=5))
        [seen] = await settled(app, "w-i")
        assert seen == Outcome("succeeded", "w-i/1/0", "fetch", "Res", 5, "w-i/1/0", attempts=2)
        assert probe.calls == [("w-i/1/0", 1), ("w-i/1/0", 2)]
        [retry] = of_type(app, "w-i", EffectRetrying)
        assert retry.error == "TimeoutError" and retry.attempt == 1
        assert of_type(app, "w-i", EffectUnknown) == [] and of_type(app, "w-i", EffectStuck) == []


async def _no_record(request: Req, ctx: EffectContext) -> Any:
    return NOT_FOUND


@pytest.mark.parametrize("contract", [
    {"idempotent": True},
    {"kind": "reversible", "compensate": _undo, "resolve": _no_record},
], ids=["idempotent-no-resolve", "reversible-resolve-not-found"])
async def test_an_effect_that_never_answers_stops_after_its_attempts(tmp_path: Path, contract: dict[str, Any]) -> None:
    async def never_answers(request: Req, ctx: EffectContext) -> Res:
        raise OutcomeUnknown("lost again")

    probe = Probe(never_answers)
    retry = z8.Retry(attempts=2, backoff=z8.Backoff(min=0.001, max=0.001, jitter=0.0))
    async with app_for(tmp_path, declare("sync_crm", probe, retry=retry, **contract)) as app:
        await app.dispatch(Run("loop", "sync_crm"))
        try:
            await until(lambda: app.dead_letters() or app.stuck(), timeout=1.0, what="a dead or stuck effect")
        finally:
            calls = len(probe.calls)
            await app.outbox.aclose(grace=0.05)
        assert calls <= 2 * retry.attempts, f"re-fired {calls} times"


# === 5. recovery after a restart =============================================================

NAMES = ("idem", "resolvable", "unresolvable", "irrev", "reader")


def recovery_effects(probes: dict[str, Probe], found: Behaviour, missing: Behaviour) -> list[z8.effects.Effect]:
    return [
        declare("idem", probes["idem"], idempotent=True),
        declare("resolvable", probes["resolvable"], resolve=found),
        declare("unresolvable", probes["unresolvable"], resolve=missing),
        declare("irrev", probes["irrev"]),
        declare("reader", probes["reader"], kind="read"),
    ]


async def test_intents_without_outcome_are_recovered_by_contract_after_a_restart(tmp_path: Path) -> None:
    never = asyncio.Event()

    async def blocks(request: Req, ctx: EffectContext) -> Res:
        await never.wait()
        raise AssertionError("unreachable")

    asked: list[str] = []

    async def found(request: Req, ctx: EffectContext) -> Res:
        asked.append(ctx.key)
        return Res(100, "resolved-" + ctx.key)

    async def missing(request: Req, ctx: EffectContext) -> Any:
        asked.append(ctx.key)
        return NOT_FOUND

    # 1. every effect is running when the outbox goes down: intents without outcomes
    first = {name: Probe(blocks) for name in NAMES}
    async with app_for(tmp_path, *recovery_effects(first, found, missing)) as app:
        for name in NAMES:
            await app.dispatch(Run(name, name, n=1))
        await until(lambda: all(p.started.is_set() for p in first.values()), what="every effect to start")
        await app.outbox.aclose(grace=0.05)
        for name in NAMES:
            assert [e.type for e, _ in records(app, f"w-{name}")] == ["Started", "z8.EffectIntended"]
    assert {name: p.calls for name, p in first.items()} == {name: [(f"w-{name}/1/0", 1)] for name in NAMES}
    assert asked == []

    # 2. a new process on the same journal
    second = {name: Probe() for name in NAMES}
    async with app_for(tmp_path, *recovery_effects(second, found, missing)) as app:
        seen = {name: (await settled(app, f"w-{name}"))[0] for name in NAMES}
        # idempotent and read: re-issued with the same key
        assert second["idem"].calls == [("w-idem/1/0", 1)]
        assert seen["idem"] == Outcome("succeeded", "w-idem/1/0", "idem", "Res", 2, "w-idem/1/0", attempts=1)
        assert second["reader"].calls == [("w-reader/1/0", 1)]
        assert seen["reader"].kind == "succeeded" and seen["reader"].result_key == "w-reader/1/0"
        # resolve declared: asked, and the effect not called again
        assert second["resolvable"].calls == []
        assert seen["resolvable"] == Outcome("succeeded", "w-resolvable/1/0", "resolvable", "Res", 100,
                                             "resolved-w-resolvable/1/0", resolved=True, attempts=1)
        # resolve says NOT_FOUND on an irreversible, non-idempotent effect: stuck, not re-fired
        assert second["unresolvable"].calls == []
        assert seen["unresolvable"].kind == "stuck" and "no record" in seen["unresolvable"].error
        # irreversible, no resolve, not idempotent: stuck, never called
        assert second["irrev"].calls == []
        assert seen["irrev"].kind == "stuck"
        assert sorted(asked) == ["w-resolvable/1/0", "w-unresolvable/1/0"]
        await until(lambda: len(app.pending_effects()) == 2, what="only the two stuck effects left")
        assert sorted((v.effect_id, v.status) for v in app.pending_effects()) == [
            ("w-irrev/1/0", "stuck"), ("w-unresolvable/1/0", "stuck")]
        assert app.journal.verify().ok

    # 3. stuck effects stay listed (and untouched) across another restart
    third = {name: Probe() for name in NAMES}
    async with app_for(tmp_path, *recovery_effects(third, found, missing)) as app:
        assert sorted(v.effect_id for v in app.stuck()) == ["w-irrev/1/0", "w-unresolvable/1/0"]
        await quiet(0.1)
        assert all(p.calls == [] for p in third.values())
        assert all(len(outcomes(app, f"w-{name}")) == 1 for name in NAMES)
        await app.settle("w-irrev/1/0", by="ops", error="the bank never got it")
        assert (await settled(app, "w-irrev", 2))[1].settled_by == "ops"
        await until(lambda: [v.effect_id for v in app.pending_effects()] == ["w-unresolvable/1/0"])


async def test_an_unknown_outcome_survives_a_restart_and_is_resolved(tmp_path: Path) -> None:
    """The process stops while an unknown outcome is being resolved: the next one resolves it."""
    never = asyncio.Event()

    async def lost(request: Req, ctx: EffectContext) -> Res:
        raise OutcomeUnknown("gone")

    async def slow_status(request: Req, ctx: EffectContext) -> Any:
        await never.wait()

    probe = Probe(lost)
    async with app_for(tmp_path, declare("pay", probe, resolve=slow_status)) as app:
        await app.dispatch(Run("x", "pay"))
        await settled(app, "w-x")
        await until(app.pending_effects)
        await app.outbox.aclose(grace=0.05)
    assert probe.calls == [("w-x/1/0", 1)]

    async def status(request: Req, ctx: EffectContext) -> Res:
        return Res(5, "status")

    again = Probe()
    async with app_for(tmp_path, declare("pay", again, resolve=status)) as app:
        unknown, seen = await settled(app, "w-x", 2)
        assert unknown.kind == "unknown"
        assert seen.kind == "succeeded" and seen.resolved and seen.result_n == 5
        assert again.calls == []


# === 6. bad input writes nothing ==========================================================

BAD_MODES = ["unregistered_effect", "unregistered_effect_object", "wrong_request", "second_call_bad", "not_a_call",
             "timer_unregistered", "timer_both", "timer_neither", "timer_negative", "not_a_timer"]


@pytest.mark.parametrize("mode", BAD_MODES)
async def test_a_bad_decision_is_refused_whole_and_the_journal_stays_as_it_was(tmp_path: Path, mode: str) -> None:
    async with app_for(tmp_path) as app:
        await app.dispatch(Run("b", "echo"))
        await settled(app, "w-b")
        await until(lambda: app.pending_effects() == [])
        version, head = app.journal.stream_version("w-b"), app.journal.head_position()
        assert version == 4

        with pytest.raises(InvalidDecision):
            await app.dispatch(Bad("b", mode))
        await quiet(0.02)
        assert app.journal.stream_version("w-b") == version
        assert app.journal.head_position() == head
        assert app.pending_effects() == []

        # the agent is not harmed: its next decision is numbered from the same version
        assert await app.dispatch(Run("b", "echo", n=3)) == version + 1
        await settled(app, "w-b", 2)
        assert of_type(app, "w-b", EffectIntended)[-1].effect_id == f"w-b/{version + 1}/0"
        assert app.journal.verify().ok


def test_effect_declarations_are_checked() -> None:
    async def fn(request: Req, ctx: EffectContext) -> Res:
        return Res(0, ctx.key)

    with pytest.raises(InvalidEffect, match="compensation"):
        effect(fn, kind="reversible")
    with pytest.raises(InvalidEffect, match="only a reversible"):
        effect(fn, kind="irreversible", compensate=_undo)
    with pytest.raises(InvalidEffect, match="kind"):
        effect(fn, kind="write")
    for timeout in (0, -1.0, True, "5"):
        with pytest.raises(InvalidEffect, match="timeout"):
            effect(fn, timeout=timeout)
    with pytest.raises(InvalidEffect, match="queue"):
        effect(fn, queue="wires", concurrency=2)
    with pytest.raises(InvalidEffect, match="queue"):
        effect(fn, queue="wires", rate=5.0)
    with pytest.raises(InvalidEffect, match="concurrency"):
        effect(fn, concurrency=0)
    with pytest.raises(InvalidEffect, match="name"):
        effect(fn, name="a/b")
    with pytest.raises(InvalidEffect, match="resolve"):
        effect(fn, resolve=42)
    with pytest.raises(InvalidEffect):
        effect(lambda: None)
    assert effect(fn, kind="reversible", compensate=_undo).compensation is not None
    assert effect(fn, timeout=None).timeout is None


async def test_two_effects_under_one_name_are_refused(tmp_path: Path) -> None:
    async def other(request: Req, ctx: EffectContext) -> Res:
        return Res(1, ctx.key)

    app = app_for(tmp_path, effect(other, name="echo"))
    with pytest.raises(InvalidEffect, match="unique"):
        await app.start()
    await app.aclose()


async def test_human_acts_on_missing_settled_or_running_effects_are_refused(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def waits(request: Req, ctx: EffectContext) -> Res:
        await release.wait()
        return Res(request.n, ctx.key)

    slow = Probe(waits)
    async with app_for(tmp_path, declare("slow", slow)) as app:
        for act in (lambda i: app.approve(i, by="alice"), lambda i: app.redrive(i, by="ops"),
                    lambda i: app.settle(i, by="ops", result=None)):
            for missing in ("w-nobody/1/0", "not an id"):
                with pytest.raises(EffectNotFound):
                    await act(missing)
            # succeeded: it has an outcome, nothing is awaiting one
            stream = f"w-done{id(act)}"
            await app.dispatch(Run(stream[2:], "echo"))
            await settled(app, stream)
            await until(lambda: app.pending_effects() == [])
            with pytest.raises(EffectNotFound):
                await act(f"{stream}/1/0")

        # running: neither redriven nor settled nor approved
        await app.dispatch(Run("s", "slow"))
        await slow.started.wait()
        await until(app.pending_effects)
        with pytest.raises(EffectStateError):
            await app.redrive("w-s/1/0", by="ops")
        with pytest.raises(EffectStateError):
            await app.settle("w-s/1/0", by="ops", result=Res(1, "x"))
        with pytest.raises(EffectStateError):
            await app.approve("w-s/1/0", by="alice")
        with pytest.raises(z8.errors.InvalidArgument):
            await app.approve("w-s/1/0", by="alice", verdict="maybe")  # type: ignore[arg-type]
        with pytest.raises(z8.errors.InvalidArgument):
            await app.settle("w-s/1/0", by="", result=None)
        release.set()
        [seen] = await settled(app, "w-s")
        assert seen.kind == "succeeded" and slow.calls == [("w-s/1/0", 1)]
        assert [e.type for e, _ in records(app, "w-s")] == ["Started", "z8.EffectIntended", "z8.EffectSucceeded",
                                                            "Outcome"]


# === timers ================================================================================


async def test_a_durable_timer_fires_on_the_runtime_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    async with app_for(tmp_path, clock=clock) as app:
        await app.dispatch(Arm("tm", after=10.0))
        [armed] = of_type(app, "w-tm", TimerSet)
        assert armed.timer_id == "t1.0" and armed.due == clock() + 10_000_000_000
        clock.advance(9.5)
        await quiet(0.05)
        assert of_type(app, "w-tm", Pinged) == []
        clock.advance(0.5)
        await until(lambda: of_type(app, "w-tm", Pinged), what="the timer to fire")
        rows = records(app, "w-tm")
        assert [e.type for e, _ in rows] == ["Started", "z8.TimerSet", "z8.TimerFired", "Pinged"]
        same_append(rows[2][0], rows[3][0])
        assert rows[2][1] == TimerFired("t1.0", armed.due) and rows[3][1] == Pinged("wake")


# === 7. the policy gate ======================================================================


def gate_of(verdicts: dict[str, Any], asked: list[EffectRequest]) -> Callable[[EffectRequest], Any]:
    def gate(request: EffectRequest) -> Any:
        asked.append(request)
        verdict = verdicts.get(request.effect, Allow())
        if isinstance(verdict, Exception):
            raise verdict
        return verdict

    return gate


async def test_a_denied_effect_never_runs_and_decide_gets_policy_denied(tmp_path: Path) -> None:
    probe = Probe()
    asked: list[EffectRequest] = []
    gate = gate_of({"charge": Deny("over the limit", rule="limits.max", policy_version="v7"),
                    "echo": Allow(rule="reads", policy_version="v7")}, asked)
    async with app_for(tmp_path, declare("charge", probe), gate=gate) as app:
        await app.dispatch(Run("g", "charge", n=500))
        [seen] = await settled(app, "w-g")
        assert seen == Outcome("failed", "w-g/1/0", "charge", error="PolicyDenied", attempts=0)
        [intent] = of_type(app, "w-g", EffectIntended)
        assert (intent.verdict, intent.reason, intent.rule, intent.policy_version) == (
            "deny", "over the limit", "limits.max", "v7")
        assert of_type(app, "w-g", EffectFailed) == [EffectFailed("w-g/1/0", "charge", "PolicyDenied",
                                                                  "over the limit", 0)]
        [request] = asked
        assert (request.agent, request.stream, request.effect, request.kind, request.request, request.capability,
                request.effect_id, request.timeout) == ("Worker", "w-g", "charge", "irreversible", Req(500), "charge",
                                                        "w-g/1/0", 30.0)

        await app.dispatch(Run("h", "echo"))
        await settled(app, "w-h")
        [allowed] = of_type(app, "w-h", EffectIntended)
        assert (allowed.verdict, allowed.rule, allowed.policy_version) == ("allow", "reads", "v7")
        await quiet(0.05)
        assert probe.calls == []
        await until(lambda: app.pending_effects() == [])


@pytest.mark.parametrize("answer", [RuntimeError("policy store down"), "yes", None], ids=["raises", "str", "none"])
async def test_a_broken_gate_fails_closed(tmp_path: Path, answer: Any) -> None:
    probe = Probe()
    async with app_for(tmp_path, declare("charge", probe), gate=gate_of({"charge": answer}, [])) as app:
        await app.dispatch(Run("g", "charge"))
        [seen] = await settled(app, "w-g")
        assert seen.kind == "failed" and seen.error == "PolicyDenied"
        [intent] = of_type(app, "w-g", EffectIntended)
        assert intent.verdict == "deny"
        expected = "policy store down" if isinstance(answer, Exception) else "not a verdict"
        assert expected in intent.reason
        await quiet(0.05)
        assert probe.calls == []


def _parked(app: z8.Application, effect_id: str) -> bool:
    return [(v.effect_id, v.status) for v in app.pending_effects()] == [(effect_id, "parked")]


async def test_an_effect_held_for_approval_survives_a_restart_and_runs_once_approved(tmp_path: Path) -> None:
    gate = gate_of({"wire": RequireApproval(approvers=("alice", "bob"), rule="four-eyes")}, [])
    before = Probe()
    async with app_for(tmp_path, declare("wire", before), gate=gate) as app:
        await app.dispatch(Run("ap", "wire", n=9))
        await until(lambda: _parked(app, "w-ap/1/0"), what="the effect to park")
        [intent] = of_type(app, "w-ap", EffectIntended)
        assert (intent.verdict, intent.approvers, intent.quorum, intent.approval_timeout, intent.rule) == (
            "approval", ["alice", "bob"], 1, None, "four-eyes")
        assert app.stuck() == [] and app.dead_letters() == []
        with pytest.raises(EffectStateError):
            await app.approve("w-ap/1/0", by="mallory")
        await quiet(0.05)
        assert before.calls == [] and of_type(app, "w-ap", EffectApproved) == []
        assert outcomes(app, "w-ap") == []

    after = Probe()
    async with app_for(tmp_path, declare("wire", after), gate=gate) as app:
        await until(lambda: _parked(app, "w-ap/1/0"), what="the effect parked again after the restart")
        await quiet(0.05)
        assert after.calls == []
        await app.approve("w-ap/1/0", by="alice", reason="checked the invoice")
        [seen] = await settled(app, "w-ap")
        assert seen == Outcome("succeeded", "w-ap/1/0", "wire", "Res", 18, "w-ap/1/0", attempts=1)
        [approved] = of_type(app, "w-ap", EffectApproved)
        assert (approved.effect_id, approved.by, approved.approve, approved.reason) == (
            "w-ap/1/0", "alice", True, "checked the invoice")
        types = [e.type for e, _ in records(app, "w-ap")]
        assert types == ["Started", "z8.EffectIntended", "z8.EffectApproved", "z8.EffectSucceeded", "Outcome"]
        await until(lambda: app.pending_effects() == [])
        with pytest.raises(EffectNotFound):
            await app.approve("w-ap/1/0", by="bob")
        await quiet(0.05)
        assert after.calls == [("w-ap/1/0", 1)] and before.calls == []


async def test_a_quorum_needs_distinct_approvers_even_across_a_restart(tmp_path: Path) -> None:
    gate = gate_of({"wire": RequireApproval(quorum=2)}, [])
    probe = Probe()
    async with app_for(tmp_path, declare("wire", probe), gate=gate) as app:
        await app.dispatch(Run("q", "wire", n=1))
        await until(lambda: _parked(app, "w-q/1/0"))
        await app.approve("w-q/1/0", by="alice")
        await until(lambda: of_type(app, "w-q", EffectApproved), what="alice's approval journaled")
        await quiet(0.05)
        assert probe.calls == [] and _parked(app, "w-q/1/0")
        try:  # the same approver again does not make a quorum (refusing it is fine too)
            await app.approve("w-q/1/0", by="alice")
        except EffectStateError:
            pass
        await quiet(0.05)
        assert probe.calls == [] and _parked(app, "w-q/1/0")

    async with app_for(tmp_path, declare("wire", probe), gate=gate) as app:
        assert _parked(app, "w-q/1/0")
        try:  # alice's approval was journaled: it still counts, once
            await app.approve("w-q/1/0", by="alice")
        except EffectStateError:
            pass
        await quiet(0.05)
        assert probe.calls == [] and _parked(app, "w-q/1/0")

        await app.approve("w-q/1/0", by="bob")
        [seen] = await settled(app, "w-q", timeout=3.0)
        assert seen.kind == "succeeded"
        assert probe.calls == [("w-q/1/0", 1)]
        assert sorted({a.by for a in of_type(app, "w-q", EffectApproved)}) == ["alice", "bob"]
        await until(lambda: app.pending_effects() == [])


async def test_an_approver_can_deny(tmp_path: Path) -> None:
    gate = gate_of({"wire": RequireApproval(approvers=("bob",))}, [])
    probe = Probe()
    async with app_for(tmp_path, declare("wire", probe), gate=gate) as app:
        await app.dispatch(Run("dn", "wire"))
        await until(lambda: _parked(app, "w-dn/1/0"))
        await app.approve("w-dn/1/0", by="bob", verdict="deny", reason="wrong account")
        [seen] = await settled(app, "w-dn")
        assert seen == Outcome("failed", "w-dn/1/0", "wire", error="ApprovalDenied", attempts=0)
        rows = records(app, "w-dn")
        assert [e.type for e, _ in rows] == ["Started", "z8.EffectIntended", "z8.EffectApproved",
                                            "z8.EffectFailed", "Outcome"]
        same_append(*(e for e, _ in rows[2:]))
        assert rows[2][1] == EffectApproved("w-dn/1/0", "bob", False, "wrong account")
        assert rows[3][1].message == "wrong account"
        await quiet(0.05)
        assert probe.calls == []
        await until(lambda: app.pending_effects() == [])


async def test_an_approval_not_given_in_time_expires_on_the_runtime_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    gate = gate_of({"wire": RequireApproval(timeout=60.0)}, [])
    probe = Probe()
    async with app_for(tmp_path, declare("wire", probe), gate=gate, clock=clock) as app:
        await app.dispatch(Run("ex", "wire"))
        await until(lambda: _parked(app, "w-ex/1/0"))
        [intent] = of_type(app, "w-ex", EffectIntended)
        assert intent.approval_timeout == 60.0 and intent.decided_at == clock()
        clock.advance(59.0)
        await quiet(0.05)
        assert outcomes(app, "w-ex") == [] and _parked(app, "w-ex/1/0")
        clock.advance(1.5)
        [seen] = await settled(app, "w-ex")
        assert seen == Outcome("failed", "w-ex/1/0", "wire", error="ApprovalExpired", attempts=0)
        [expired] = of_type(app, "w-ex", EffectApproved)
        assert (expired.by, expired.approve) == ("z8.timeout", False)
        await until(lambda: app.pending_effects() == [])
        with pytest.raises(EffectNotFound):
            await app.approve("w-ex/1/0", by="alice")
        assert probe.calls == []


async def test_an_approval_deadline_that_passed_while_down_expires_at_start(tmp_path: Path) -> None:
    clock = FakeClock()
    gate = gate_of({"wire": RequireApproval(timeout=60.0)}, [])
    probe = Probe()
    async with app_for(tmp_path, declare("wire", probe), gate=gate, clock=clock) as app:
        await app.dispatch(Run("ex", "wire"))
        await until(lambda: _parked(app, "w-ex/1/0"))
    clock.advance(3600.0)
    async with app_for(tmp_path, declare("wire", probe), gate=gate, clock=clock) as app:
        [seen] = await settled(app, "w-ex")
        assert seen.error == "ApprovalExpired"
    assert probe.calls == []


# === 8. many agents, many effects ==========================================================


async def test_many_agents_with_sequential_effects_call_each_key_exactly_once(tmp_path: Path) -> None:
    agents, steps = 200, 3
    counts: collections.Counter[str] = collections.Counter()

    async def work(request: Req, ctx: EffectContext) -> Res:
        counts[ctx.key] += 1
        await asyncio.sleep(0.001 * (request.n % 3))
        return Res(request.n, ctx.key)

    probe = Probe(work)
    async with app_for(tmp_path, declare("step", probe)) as app:
        replies = await asyncio.gather(*(app.dispatch(Run(str(i), "step", n=0, steps=steps))
                                         for i in range(agents)))
        assert replies == [1] * agents
        await until(lambda: len(probe.calls) >= agents * steps, timeout=20.0, what="every effect to run")
        streams = [f"w-{i}" for i in range(agents)]
        await until(lambda: all(len(outcomes(app, s)) == steps for s in streams), timeout=20.0,
                    what="every outcome to be decided on")
        expected = ["Started", "z8.EffectIntended"] + ["z8.EffectSucceeded", "Outcome", "z8.EffectIntended"] * (
            steps - 1) + ["z8.EffectSucceeded", "Outcome"]
        intent_ids: list[str] = []
        for stream in streams:
            rows = records(app, stream)
            assert [e.type for e, _ in rows] == expected, stream
            ids = [r.effect_id for _, r in rows if type(r) is EffectIntended]
            assert ids == [f"{stream}/1/0", f"{stream}/3/0", f"{stream}/6/0"]
            assert [o.result_n for o in outcomes(app, stream)] == [0, 1, 2]
            assert [o.result_key for o in outcomes(app, stream)] == ids
            intent_ids.extend(ids)
        assert len(set(intent_ids)) == agents * steps
        assert counts == collections.Counter({key: 1 for key in intent_ids})
        assert len(probe.calls) == agents * steps
        await until(lambda: app.pending_effects() == [])
        assert app.journal.verify().ok
