"""Durable time and work: timers, an approval gate as an agent FSM, jobs and queues,
cron schedules and sagas — on real LMDB journals, with a FakeClock for every due time.

Everything is checked against the journal: what was written, in which append, and
(after restarts) that nothing fired twice and nothing was lost.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from _polling import until

import z8
from z8 import (
    Application,
    Backoff,
    Call,
    CancelTimer,
    Decision,
    Queue,
    Retry,
    Router,
    Saga,
    Schedule,
    Timer,
)
from z8.effects import (
    JOBS_PREFIX,
    SCHEDULES_PREFIX,
    Alert,
    EffectContext,
    EffectFailed,
    EffectIntended,
    EffectRedriven,
    EffectRetrying,
    EffectSucceeded,
    SagaCompensating,
    SagaEnded,
    ScheduleFired,
    TimerCancelled,
    TimerFired,
    TimerSet,
)
from z8.errors import (
    InvalidArgument,
    InvalidDecision,
    InvalidEffect,
    InvalidSchedule,
    InvalidStreamName,
    Rejected,
    Retryable,
    Z8Error,
)
from z8.policies import Allow, EffectRequest, RequireApproval
from z8.testing import FakeClock

pytestmark = pytest.mark.anyio

SECOND = 1_000_000_000
START = 1_700_000_000 * SECOND  # FakeClock's default start: 2023-11-14 22:13:20 UTC


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- helpers --------------------------------------------------------------------------------


async def quiet(seconds: float = 0.15) -> None:
    """Let the outbox's clock loop and followers run, to check that something did NOT happen."""
    await asyncio.sleep(seconds)


def records(app: Application, stream: str) -> list[Any]:
    return [app.journal.decode(e) for e in app.journal.read_stream(stream)]


def of_type(app: Application, stream: str, cls: type) -> list[Any]:
    return [r for r in records(app, stream) if type(r) is cls]


def appends(app: Application, stream: str) -> list[list[Any]]:
    """The stream's records grouped by the append that wrote them (one commit shares
    ``recorded_at``, causation and correlation)."""
    groups: list[list[Any]] = []
    last: tuple[Any, ...] | None = None
    for envelope in app.journal.read_stream(stream):
        key = (envelope.recorded_at, envelope.causation_id, envelope.correlation_id)
        if key != last:
            groups.append([])
            last = key
        groups[-1].append(app.journal.decode(envelope))
    return groups


def written_since(app: Application, head: int) -> list[str]:
    """Streams written after position ``head``, leaving out the supervision log ($system)."""
    return [e.stream for e in app.journal.read_all(head + 1) if e.stream != "$system"]


def streams_with_prefix(app: Application, prefix: str) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for envelope in app.journal.read_all():
        if envelope.stream.startswith(prefix):
            found.setdefault(envelope.stream, []).append(app.journal.decode(envelope))
    return found


def saga_ended(app: Application, stream: str) -> list[SagaEnded]:
    return of_type(app, stream, SagaEnded)


def agent_at(app: Application, path: str) -> Any:
    cell = app.runtime._core.cell(path)
    return None if cell is None else cell.actor


def lane_tasks(app: Application) -> int:
    return sum(len(lane.tasks) for lane in app.outbox._lanes.values())


# --- recorder shared by the effect functions -------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.starts: list[tuple[str, float]] = []
        self.running = 0
        self.max_running = 0
        self.gates: dict[str, asyncio.Event] = {}
        self.flaky_ok = False

    def names(self, prefix: str = "") -> list[str]:
        return [name for name, _ in self.calls if name.startswith(prefix)]


REC = Recorder()


@pytest.fixture(autouse=True)
def _fresh_recorder() -> None:
    global REC
    REC = Recorder()


# --- types ----------------------------------------------------------------------------------

# commands (tagged, so they also parse from JSON)


class SetReminder(msgspec.Struct, frozen=True, tag=True):
    rid: str
    note: str
    after: float | None = None
    at: Any = None
    timer_id: str | None = None


class CancelReminder(msgspec.Struct, frozen=True, tag=True):
    rid: str
    timer_id: str


class GetReminder(msgspec.Struct, frozen=True, tag=True):
    rid: str


class RequestPurchase(msgspec.Struct, frozen=True, tag=True):
    pid: str
    item: str


class Approve(msgspec.Struct, frozen=True, tag=True):
    pid: str
    by: str


class GetPurchase(msgspec.Struct, frozen=True, tag=True):
    pid: str


class BookTrip(msgspec.Struct, frozen=True, tag=True):
    tid: str
    fail_hotel: bool = False
    fail_return: bool = False
    fail_hotel_cancel: bool = False


# events and timer messages (registered)


class ReminderSet(msgspec.Struct, frozen=True, tag=True):
    note: str


class ReminderCancelled(msgspec.Struct, frozen=True, tag=True):
    timer_id: str


class Remind(msgspec.Struct, frozen=True, tag=True):
    """A timer's message: delivered to decide when the timer fires."""

    note: str


class Reminded(msgspec.Struct, frozen=True, tag=True):
    note: str
    at: int


class ApprovalRequested(msgspec.Struct, frozen=True, tag=True):
    item: str


class Approved(msgspec.Struct, frozen=True, tag=True):
    by: str


class ApprovalTimeout(msgspec.Struct, frozen=True, tag=True):
    """The approval timer's message."""


class Expired(msgspec.Struct, frozen=True, tag=True):
    at: int


class TripRequested(msgspec.Struct, frozen=True, tag=True):
    fail_hotel: bool
    fail_return: bool
    fail_hotel_cancel: bool


class LegBooked(msgspec.Struct, frozen=True, tag=True):
    what: str
    ref: str


class TripBooked(msgspec.Struct, frozen=True, tag=True):
    pass


class TripFailed(msgspec.Struct, frozen=True, tag=True):
    reason: str


class Unregistered(msgspec.Struct, frozen=True, tag=True):
    pass


# effect requests and results


class Work(msgspec.Struct, frozen=True):
    name: str
    hold: bool = False
    pause: float = 0.0


class Done(msgspec.Struct, frozen=True):
    name: str


class TickReq(msgspec.Struct, frozen=True):
    label: str = "tick"


class FlightReq(msgspec.Struct, frozen=True):
    trip: str
    leg: str
    fail: bool = False


class FlightBooking(msgspec.Struct, frozen=True):
    ref: str
    leg: str


class HotelReq(msgspec.Struct, frozen=True):
    trip: str
    fail: bool = False
    fail_cancel: bool = False


class HotelBooking(msgspec.Struct, frozen=True):
    ref: str
    fail_cancel: bool = False


TYPES = z8.TypeRegistry([
    ReminderSet, ReminderCancelled, Remind, Reminded,
    ApprovalRequested, Approved, ApprovalTimeout, Expired,
    TripRequested, LegBooked, TripBooked, TripFailed,
])


# --- effects --------------------------------------------------------------------------------


@z8.effect(kind="irreversible", idempotent=True)
async def work(req: Work, ctx: EffectContext) -> Done:
    REC.calls.append((req.name, ctx.key))
    REC.starts.append((req.name, time.monotonic()))
    REC.running += 1
    REC.max_running = max(REC.max_running, REC.running)
    try:
        if req.hold:
            await REC.gates.setdefault(req.name, asyncio.Event()).wait()
        if req.pause:
            await asyncio.sleep(req.pause)
    finally:
        REC.running -= 1
    return Done(req.name)


@z8.effect(kind="irreversible", idempotent=True,
           retry=Retry(attempts=2, backoff=Backoff(min=0.01, max=0.02, jitter=0.0)))
async def flaky(req: Work, ctx: EffectContext) -> Done:
    REC.calls.append((req.name, ctx.attempt))
    if not REC.flaky_ok:
        raise Retryable(f"downstream busy (attempt {ctx.attempt})")
    return Done(req.name)


@z8.effect(kind="read")
async def tick(req: TickReq, ctx: EffectContext) -> str:
    REC.calls.append((req.label, ctx.key))
    return ctx.key


@z8.effect(kind="irreversible")
async def not_registered(req: Work, ctx: EffectContext) -> None:
    raise AssertionError("never runs")


def _cancel(what: str) -> Callable[..., Any]:
    async def cancel(booking: Any, ctx: EffectContext) -> None:
        REC.calls.append((f"cancel_{what}", booking))
        if getattr(booking, "fail_cancel", False):
            raise RuntimeError(f"the {what} cannot be cancelled")

    return cancel


async def cancel_outbound(booking: FlightBooking, ctx: EffectContext) -> None:
    await _cancel("outbound")(booking, ctx)


async def cancel_hotel(booking: HotelBooking, ctx: EffectContext) -> None:
    await _cancel("hotel")(booking, ctx)


async def cancel_return(booking: FlightBooking, ctx: EffectContext) -> None:
    await _cancel("return")(booking, ctx)


@z8.effect(kind="reversible", compensate=cancel_outbound)
async def book_outbound(req: FlightReq, ctx: EffectContext) -> FlightBooking:
    REC.calls.append(("book_outbound", req))
    return FlightBooking(f"OUT-{req.trip}", req.leg)


@z8.effect(kind="reversible", compensate=cancel_hotel)
async def book_hotel(req: HotelReq, ctx: EffectContext) -> HotelBooking:
    REC.calls.append(("book_hotel", req))
    if req.fail:
        raise RuntimeError("no rooms")
    return HotelBooking(f"HOT-{req.trip}", req.fail_cancel)


@z8.effect(kind="reversible", compensate=cancel_return)
async def book_return(req: FlightReq, ctx: EffectContext) -> FlightBooking:
    REC.calls.append(("book_return", req))
    if req.fail:
        raise RuntimeError("flight full")
    return FlightBooking(f"RET-{req.trip}", req.leg)


# --- agents ---------------------------------------------------------------------------------


class ReminderState(msgspec.Struct, frozen=True):
    fired: tuple[str, ...] = ()


class Reminder(z8.Agent):
    """Sets, replaces and cancels durable timers; records each firing."""

    State = ReminderState

    def decide(self, state: ReminderState, command: Any, ctx: Any) -> Any:
        match command:
            case SetReminder(note=note, after=after, at=at, timer_id=timer_id):
                return Decision([ReminderSet(note)], reply=note,
                                timers=[Timer(Remind(note), after=after, at=at, id=timer_id)])
            case CancelReminder(timer_id=timer_id):
                return Decision([ReminderCancelled(timer_id)], timers=[CancelTimer(timer_id)])
            case Remind(note=note) if note.startswith("beat:") and int(note[5:]) > 1:
                # a periodic timer: the firing's decision sets the same id again
                return Decision([Reminded(note, ctx.now)],
                                timers=[Timer(Remind(f"beat:{int(note[5:]) - 1}"), after=60, id="beat")])
            case Remind(note=note):
                return Decision([Reminded(note, ctx.now)])
            case GetReminder():
                return Decision(reply=state.fired)
        return z8.reject("unknown")

    def evolve(self, state: ReminderState, event: Any) -> ReminderState:
        if isinstance(event, Reminded):
            return ReminderState((*state.fired, event.note))
        return state


class PurchaseState(msgspec.Struct, frozen=True):
    status: str = "draft"
    item: str = ""
    approved_by: str = ""


class Purchase(z8.Agent):
    """An approval gate as an FSM: waits (durably, holding nothing) for Approve or the timeout."""

    State = PurchaseState
    agent_machine = z8.Machine.of("draft", {
        "draft": ["awaiting_approval"],
        "awaiting_approval": ["approved", "expired"],
        "approved": [],
        "expired": [],
    })

    def decide(self, state: PurchaseState, command: Any, ctx: Any) -> Any:
        match command:
            case RequestPurchase(item=item):
                if state.status != "draft":
                    return z8.reject("already_requested")
                return Decision([ApprovalRequested(item)], reply="awaiting_approval",
                                timers=[Timer(ApprovalTimeout(), after=48 * 3600, id="approval-timeout")])
            case Approve(by=by):
                if state.status != "awaiting_approval":
                    return z8.reject("not_awaiting_approval", status=state.status)
                return Decision([Approved(by)], reply="approved", timers=[CancelTimer("approval-timeout")])
            case ApprovalTimeout():
                if state.status != "awaiting_approval":
                    return Decision()
                return Decision([Expired(ctx.now)])
            case GetPurchase():
                return Decision(reply=state.status)
        return z8.reject("unknown")

    def evolve(self, state: PurchaseState, event: Any) -> PurchaseState:
        match event:
            case ApprovalRequested(item=item):
                return PurchaseState("awaiting_approval", item)
            case Approved(by=by):
                return msgspec.structs.replace(state, status="approved", approved_by=by)
            case Expired():
                return msgspec.structs.replace(state, status="expired")
        return state


class TripState(msgspec.Struct, frozen=True):
    fail_hotel: bool = False
    fail_return: bool = False
    fail_hotel_cancel: bool = False
    legs: tuple[str, ...] = ()
    outcome: str = ""


class Trip(Saga):
    """Outbound flight, then hotel, then return flight; any failure undoes what was booked."""

    State = TripState
    agent_effects = (book_outbound, book_hotel, book_return)

    def decide(self, state: TripState, message: Any, ctx: Any) -> Any:
        trip = ctx.stream
        match message:
            case BookTrip(fail_hotel=fh, fail_return=fr, fail_hotel_cancel=fc):
                return Decision([TripRequested(fh, fr, fc)], reply="booking",
                                effects=[Call(book_outbound, FlightReq(trip, "out"))])
            case EffectSucceeded(effect="book_outbound", result=booking):
                return Decision([LegBooked("outbound", booking.ref)],
                                effects=[Call(book_hotel, HotelReq(trip, state.fail_hotel, state.fail_hotel_cancel))])
            case EffectSucceeded(effect="book_hotel", result=booking):
                return Decision([LegBooked("hotel", booking.ref)],
                                effects=[Call(book_return, FlightReq(trip, "return", state.fail_return))])
            case EffectSucceeded(effect="book_return", result=booking):
                return self.complete(events=[LegBooked("return", booking.ref), TripBooked()])
            case EffectFailed(effect=name, message=why):
                return self.compensate(f"{name} failed: {why}", events=[TripFailed(f"{name}: {why}")])
        return z8.reject("unknown")

    def evolve(self, state: TripState, event: Any) -> TripState:
        match event:
            case TripRequested(fail_hotel=fh, fail_return=fr, fail_hotel_cancel=fc):
                return msgspec.structs.replace(state, fail_hotel=fh, fail_return=fr, fail_hotel_cancel=fc)
            case LegBooked(what=what):
                return msgspec.structs.replace(state, legs=(*state.legs, what))
            case TripBooked():
                return msgspec.structs.replace(state, outcome="booked")
            case TripFailed(reason=reason):
                return msgspec.structs.replace(state, outcome=f"failed: {reason}")
        return state


def router() -> Router:
    r = Router()
    r.identify(Reminder, by="rid", prefix="rem-").dispatch(SetReminder, CancelReminder, GetReminder, to=Reminder)
    r.identify(Purchase, by="pid", prefix="buy-").dispatch(RequestPurchase, Approve, GetPurchase, to=Purchase)
    r.identify(Trip, by="tid", prefix="trip-").dispatch(BookTrip, to=Trip)
    return r


def make_app(path: Path, clock: FakeClock, **options: Any) -> Application:
    options.setdefault("effects", [work, flaky, tick])
    return Application(router(), path / "j", types=TYPES, clock=clock, durability="fast", **options)


REM = "/app/reminder/"
BUY = "/app/purchase/"


# =============================================================================================
# 1. Timers on a FakeClock
# =============================================================================================


async def test_a_timer_fires_only_once_the_clock_passes_its_due_time(tmp_path: Path) -> None:
    clock = FakeClock()
    async with make_app(tmp_path, clock) as app:
        assert await app.dispatch(SetReminder("1", "stretch", after=60)) == "stretch"
        (decision,) = appends(app, "rem-1")
        assert [type(r) for r in decision] == [ReminderSet, TimerSet]  # journaled with the decision
        timer = decision[1]
        assert timer.due == START + 60 * SECOND and timer.timer_id == "t1.0"
        assert timer.message_type == "Remind"

        clock.advance(59.999)
        await quiet()
        assert of_type(app, "rem-1", Reminded) == [] and of_type(app, "rem-1", TimerFired) == []
        assert agent_at(app, REM + "rem-1").ledger.timers == {"t1.0": timer.due}

        clock.advance(0.002)
        await until(lambda: of_type(app, "rem-1", Reminded), what="the timer to fire")
        last = appends(app, "rem-1")[-1]
        # TimerFired and decide's events on the timer's message in ONE append, fired first
        assert last == [TimerFired("t1.0", timer.due), Reminded("stretch", clock.now_ns)]
        assert await app.dispatch(GetReminder("1")) == ("stretch",)
        assert agent_at(app, REM + "rem-1").ledger.timers == {}
        await quiet()
        assert len(of_type(app, "rem-1", TimerFired)) == 1  # exactly once


async def test_cancel_timer_prevents_the_firing(tmp_path: Path) -> None:
    clock = FakeClock()
    async with make_app(tmp_path, clock) as app:
        await app.dispatch(SetReminder("1", "call mom", after=60, timer_id="mom"))
        await app.dispatch(CancelReminder("1", "mom"))
        assert appends(app, "rem-1")[-1] == [ReminderCancelled("mom"), TimerCancelled("mom")]
        clock.advance(3600)
        await quiet()
        assert of_type(app, "rem-1", TimerFired) == [] and of_type(app, "rem-1", Reminded) == []
        assert agent_at(app, REM + "rem-1").ledger.timers == {}
        assert app.outbox._timers == {}


async def test_setting_the_same_timer_id_again_replaces_its_due_time(tmp_path: Path) -> None:
    clock = FakeClock()
    async with make_app(tmp_path, clock) as app:
        await app.dispatch(SetReminder("1", "first", after=60, timer_id="x"))
        await app.dispatch(SetReminder("1", "second", after=300, timer_id="x"))
        assert agent_at(app, REM + "rem-1").ledger.timers == {"x": START + 300 * SECOND}
        clock.advance(120)  # past the replaced due time
        await quiet()
        assert of_type(app, "rem-1", TimerFired) == []
        clock.advance(200)
        await until(lambda: of_type(app, "rem-1", Reminded), what="the replacing timer")
        await quiet()
        assert of_type(app, "rem-1", TimerFired) == [TimerFired("x", START + 300 * SECOND)]
        assert [r.note for r in of_type(app, "rem-1", Reminded)] == ["second"]  # the new message, once


async def test_a_timer_at_an_aware_datetime_or_unix_ns(tmp_path: Path) -> None:
    clock = FakeClock()
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    at = dt.datetime.fromtimestamp(START / SECOND + 3600, tz=dt.UTC).astimezone(paris)
    async with make_app(tmp_path, clock) as app:
        await app.dispatch(SetReminder("1", "dt", at=at, timer_id="d"))
        await app.dispatch(SetReminder("1", "ns", at=START + 7200 * SECOND, timer_id="n"))
        (set_d,) = [r for r in of_type(app, "rem-1", TimerSet) if r.timer_id == "d"]
        assert abs(set_d.due - (START + 3600 * SECOND)) < 1_000  # within a microsecond
        clock.advance(3599)
        await quiet()
        assert of_type(app, "rem-1", Reminded) == []
        clock.advance(2)
        await until(lambda: of_type(app, "rem-1", Reminded), what="the datetime timer")
        clock.advance(3600)
        await until(lambda: len(of_type(app, "rem-1", Reminded)) == 2, what="the ns timer")
        assert [r.note for r in of_type(app, "rem-1", Reminded)] == ["dt", "ns"]


@pytest.mark.parametrize("bad", [
    {"at": dt.datetime(2030, 1, 1, 12, 0)},                           # naive datetime
    {"after": -1.0},                                                   # negative delay
    {"after": 5.0, "at": START},                                       # both
    {},                                                                # neither
    {"at": "tomorrow"},                                                # not a time
    {"after": 5.0, "timer_id": ""},                                    # empty id
])
async def test_an_invalid_timer_is_an_invalid_decision_and_writes_nothing(tmp_path: Path, bad: dict) -> None:
    clock = FakeClock()
    async with make_app(tmp_path, clock) as app:
        await app.dispatch(SetReminder("1", "ok", after=10))
        head, version = app.journal.head_position(), app.journal.stream_version("rem-1")
        with pytest.raises(InvalidDecision):
            await app.dispatch(SetReminder("1", "bad", **bad))
        assert written_since(app, head) == [] and app.journal.stream_version("rem-1") == version
        assert list(agent_at(app, REM + "rem-1").ledger.timers) == ["t1.0"]


@pytest.mark.parametrize("bad", [{"after": float("nan")}, {"after": float("inf")}, {"after": 1e300},
                                 {"at": 2**70}], ids=["nan", "inf", "huge", "at-overflow"])
async def test_a_timer_due_time_out_of_range_is_an_invalid_decision(tmp_path: Path, bad: dict) -> None:
    async with make_app(tmp_path, FakeClock()) as app:
        await app.dispatch(SetReminder("1", "ok", after=10))
        head = app.journal.head_position()
        try:
            with pytest.raises(InvalidDecision):
                await app.dispatch(SetReminder("1", "bad", **bad), timeout=3)
        finally:
            assert written_since(app, head) == []


async def test_a_timer_whose_message_is_not_a_registered_type_is_refused(tmp_path: Path) -> None:
    class Pinger(Reminder):
        def decide(self, state: Any, command: Any, ctx: Any) -> Any:
            return Decision([ReminderSet("x")], timers=[Timer(Unregistered(), after=1)])

    r = Router().identify(Pinger, by="rid").dispatch(SetReminder, to=Pinger)
    async with Application(r, tmp_path / "j", types=TYPES, clock=FakeClock(), durability="fast") as app:
        with pytest.raises(InvalidDecision, match="Unregistered"):
            await app.dispatch(SetReminder("p", "x", after=1))
        assert app.journal.stream_version("p") == 0


async def test_a_timer_re_set_by_its_own_firing_fires_again(tmp_path: Path) -> None:
    clock = FakeClock()
    async with make_app(tmp_path, clock) as app:
        await app.dispatch(SetReminder("1", "beat:3", after=60, timer_id="beat"))
        for n in (3, 2, 1):
            clock.advance(60)
            await until(lambda n=n: len(of_type(app, "rem-1", Reminded)) == 4 - n, what=f"beat {n}")
        due = START + 60 * SECOND
        assert appends(app, "rem-1")[1] == [  # fired, decided on, and set again: one append
            TimerFired("beat", due), Reminded("beat:3", due),
            TimerSet("beat", due + 60 * SECOND, "Remind", 1, msgspec.msgpack.encode(Remind("beat:2")))]
        clock.advance(600)
        await quiet()
        assert [r.note for r in of_type(app, "rem-1", Reminded)] == ["beat:3", "beat:2", "beat:1"]
        assert [r.due for r in of_type(app, "rem-1", TimerFired)] == [due, due + 60 * SECOND, due + 120 * SECOND]
        assert agent_at(app, REM + "rem-1").ledger.timers == {} and app.outbox._timers == {}


# =============================================================================================
# 2. Timers survive a restart
# =============================================================================================


async def test_timers_survive_a_restart_missed_ones_fire_once_at_start(tmp_path: Path) -> None:
    clock = FakeClock()
    async with make_app(tmp_path, clock) as app:
        await app.dispatch(SetReminder("1", "soon", after=60, timer_id="soon"))
        await app.dispatch(SetReminder("1", "later", after=600, timer_id="later"))
    clock.advance(120)  # "soon" falls due while nothing runs
    async with make_app(tmp_path, clock) as app:
        await until(lambda: of_type(app, "rem-1", Reminded), what="the missed timer to fire at start")
        await quiet()
        assert of_type(app, "rem-1", TimerFired) == [TimerFired("soon", START + 60 * SECOND)]
        assert [r.note for r in of_type(app, "rem-1", Reminded)] == ["soon"]
        assert of_type(app, "rem-1", Reminded)[0].at == START + 120 * SECOND  # decided at start's now
        clock.advance(400)  # still before "later"
        await quiet()
        assert len(of_type(app, "rem-1", Reminded)) == 1
        clock.advance(81)
        await until(lambda: len(of_type(app, "rem-1", Reminded)) == 2, what="the re-armed timer")
    async with make_app(tmp_path, clock) as app:  # and a third start fires nothing again
        await quiet()
        assert [r.note for r in of_type(app, "rem-1", Reminded)] == ["soon", "later"]
        assert [r.timer_id for r in of_type(app, "rem-1", TimerFired)] == ["soon", "later"]
        assert app.outbox._timers == {}


async def test_a_not_yet_due_timer_is_re_armed_after_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    async with make_app(tmp_path, clock) as app:
        await app.dispatch(SetReminder("1", "x", after=3600, timer_id="x"))
    clock.advance(1800)
    async with make_app(tmp_path, clock) as app:
        await quiet()
        assert of_type(app, "rem-1", TimerFired) == []
        assert agent_at(app, REM + "rem-1") is None  # nothing activated just to wait
        assert list(app.outbox._timers) == [("rem-1", "x")]
        clock.advance(1801)
        await until(lambda: of_type(app, "rem-1", Reminded), what="the re-armed timer")
        assert of_type(app, "rem-1", TimerFired) == [TimerFired("x", START + 3600 * SECOND)]


# =============================================================================================
# 3. An approval gate as an agent FSM
# =============================================================================================


async def test_approval_before_the_timeout_resumes_and_cancels_the_timer(tmp_path: Path) -> None:
    clock = FakeClock()
    async with make_app(tmp_path, clock) as app:
        assert await app.dispatch(RequestPurchase("1", "laptop")) == "awaiting_approval"
        assert agent_at(app, BUY + "buy-1").ledger.timers == {"approval-timeout": START + 48 * 3600 * SECOND}
        clock.advance(47 * 3600)
        await quiet()
        assert await app.dispatch(GetPurchase("1")) == "awaiting_approval"
        assert await app.dispatch(Approve("1", "alice")) == "approved"
        assert appends(app, "buy-1")[-1] == [Approved("alice"), TimerCancelled("approval-timeout")]
        clock.advance(2 * 3600)
        await quiet()
        assert of_type(app, "buy-1", TimerFired) == [] and of_type(app, "buy-1", Expired) == []
        assert await app.dispatch(GetPurchase("1")) == "approved"
        with pytest.raises(Rejected, match="not_awaiting_approval"):
            await app.dispatch(Approve("1", "bob"))


async def test_without_approval_the_timeout_expires_the_request(tmp_path: Path) -> None:
    clock = FakeClock()
    async with make_app(tmp_path, clock) as app:
        await app.dispatch(RequestPurchase("1", "laptop"))
        clock.advance(48 * 3600 - 1)
        await quiet()
        assert of_type(app, "buy-1", Expired) == []
        clock.advance(1)
        await until(lambda: of_type(app, "buy-1", Expired), what="the approval timeout")
        assert appends(app, "buy-1")[-1] == [TimerFired("approval-timeout", START + 48 * 3600 * SECOND),
                                             Expired(START + 48 * 3600 * SECOND)]
        assert await app.dispatch(GetPurchase("1")) == "expired"
        with pytest.raises(Rejected, match="not_awaiting_approval"):
            await app.dispatch(Approve("1", "alice"))  # too late


async def test_the_approval_wait_survives_a_restart_holding_no_task(tmp_path: Path) -> None:
    clock = FakeClock()
    async with make_app(tmp_path, clock) as app:
        await app.dispatch(RequestPurchase("approved", "laptop"))
        await app.dispatch(RequestPurchase("ignored", "phone"))
        await app.dispatch(RequestPurchase("late", "desk"))
    clock.advance(24 * 3600)
    async with make_app(tmp_path, clock) as app:
        await quiet()
        # waiting is two ledger timers and nothing else: no agent in memory, no effect, no task
        assert agent_at(app, BUY + "buy-approved") is None and agent_at(app, BUY + "buy-ignored") is None
        assert app.pending_effects() == [] and lane_tasks(app) == 0
        assert sorted(app.outbox._timers) == [
            ("buy-approved", "approval-timeout"), ("buy-ignored", "approval-timeout"), ("buy-late", "approval-timeout")]
        assert await app.dispatch(Approve("approved", "alice")) == "approved"
        await until(lambda: ("buy-approved", "approval-timeout") not in app.outbox._timers,
                    what="the cancelled timer to be disarmed")
    clock.advance(25 * 3600)  # past every deadline while closed
    async with make_app(tmp_path, clock) as app:
        await until(lambda: of_type(app, "buy-ignored", Expired) and of_type(app, "buy-late", Expired),
                    what="the missed timeouts to fire at start")
        await quiet()
        assert await app.dispatch(GetPurchase("ignored")) == "expired"
        assert await app.dispatch(GetPurchase("approved")) == "approved"
        assert of_type(app, "buy-approved", TimerFired) == [] and of_type(app, "buy-approved", Expired) == []
        for pid in ("ignored", "late"):
            assert len(of_type(app, f"buy-{pid}", TimerFired)) == 1
            assert len(of_type(app, f"buy-{pid}", Expired)) == 1
    async with make_app(tmp_path, clock) as app:
        await quiet()
        assert len(of_type(app, "buy-ignored", Expired)) == 1  # never twice across restarts


def hold_outbound(request: EffectRequest) -> Any:
    """A policy gate: booking an outbound flight waits for a human, at most an hour."""
    return RequireApproval(timeout=3600) if request.effect == "book_outbound" else Allow()


async def test_a_gated_effect_expires_on_the_clock_without_running(tmp_path: Path) -> None:
    clock = FakeClock()
    async with make_app(tmp_path, clock, gate=hold_outbound) as app:
        await app.dispatch(BookTrip("1"))
        (parked,) = await until(app.pending_effects, what="the parked effect")
        assert (parked.effect, parked.status) == ("book_outbound", "parked")
        clock.advance(3599)
        await quiet()
        assert app.pending_effects() == [parked] and REC.calls == []
        clock.advance(2)
        await until(lambda: saga_ended(app, "trip-1"), what="the approval to expire")
        (failed,) = of_type(app, "trip-1", EffectFailed)
        assert (failed.effect_id, failed.error) == (parked.effect_id, "ApprovalExpired")
        assert saga_ended(app, "trip-1") == [SagaEnded("compensated", "book_outbound failed: "
                                                                      "no approval before the deadline")]
        assert REC.calls == [] and app.pending_effects() == []  # it never ran, nothing to undo


async def test_a_parked_effect_survives_a_restart_and_expires_at_start(tmp_path: Path) -> None:
    clock = FakeClock()
    async with make_app(tmp_path, clock, gate=hold_outbound) as app:
        await app.dispatch(BookTrip("late"))
        await app.dispatch(BookTrip("approved"))
        await until(lambda: len(app.pending_effects()) == 2, what="two parked effects")
    clock.advance(1800)
    async with make_app(tmp_path, clock, gate=hold_outbound) as app:
        assert sorted(v.status for v in app.pending_effects()) == ["parked", "parked"]
        assert lane_tasks(app) == 0 and REC.calls == []  # parked: holding no task
        (approved,) = [v for v in app.pending_effects() if v.stream == "trip-approved"]
        await app.approve(approved.effect_id, by="alice")
        await until(lambda: saga_ended(app, "trip-approved"), what="the approved trip")
    ran = len(REC.calls)
    clock.advance(1801)  # the other one's deadline passes while closed
    async with make_app(tmp_path, clock, gate=hold_outbound) as app:
        await until(lambda: saga_ended(app, "trip-late"), what="the expiry at start")
        await quiet()
        assert [r.error for r in of_type(app, "trip-late", EffectFailed)] == ["ApprovalExpired"]
        assert saga_ended(app, "trip-approved") == [SagaEnded("completed")]
        assert len(REC.calls) == ran  # this process ran nothing: the late booking expired unrun
        assert REC.names() == ["book_outbound", "book_hotel", "book_return"]  # the approved trip, before
        assert app.pending_effects() == []


# =============================================================================================
# 4. Jobs and queues
# =============================================================================================


async def test_a_job_key_makes_enqueue_idempotent(tmp_path: Path) -> None:
    async with make_app(tmp_path, FakeClock()) as app:
        first = await app.enqueue(work, Work("w"), key="k")
        second = await app.enqueue(work, Work("w-again"), key="k")
        assert first == second == "$jobs/k/1/0"
        outcome = await app.wait_effect(first, timeout=5)
        assert type(outcome) is EffectSucceeded and outcome.effect_id == first
        assert outcome.result == {"name": "w"}
        await quiet()
        assert REC.calls == [("w", "$jobs/k/1/0")]  # one run, keyed by the effect id
        stream = records(app, JOBS_PREFIX + "k")
        assert [type(r) for r in stream] == [EffectIntended, EffectSucceeded]
        assert stream[0].request == {"name": "w", "hold": False, "pause": 0.0}
        assert await app.enqueue(work, Work("w"), key="k") == first  # even after it ran
        await quiet()
        assert len(REC.calls) == 1 and app.journal.stream_version(JOBS_PREFIX + "k") == 2
        assert await app.wait_effect(first, timeout=1) == stream[1]  # a settled job answers at once


async def test_a_delayed_job_waits_for_the_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    async with make_app(tmp_path, clock) as app:
        job = await app.enqueue(work, Work("later"), key="later", delay=60)
        (intent,) = records(app, JOBS_PREFIX + "later")
        assert intent.not_before == START + 60 * SECOND
        clock.advance(59)
        await quiet()
        assert REC.calls == []
        assert [v.effect_id for v in app.pending_effects()] == [job]
        clock.advance(2)
        assert type(await app.wait_effect(job, timeout=5)) is EffectSucceeded
        assert REC.names() == ["later"]


async def test_a_delayed_job_survives_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    async with make_app(tmp_path, clock) as app:
        job = await app.enqueue(work, Work("later"), key="later", delay=60)
        await quiet()
    async with make_app(tmp_path, clock) as app:
        await quiet()
        assert REC.calls == [] and [v.status for v in app.pending_effects()] == ["intended"]
        clock.advance(61)
        assert type(await app.wait_effect(job, timeout=5)) is EffectSucceeded
        assert REC.names() == ["later"]


async def test_queue_concurrency_is_never_exceeded(tmp_path: Path) -> None:
    async with make_app(tmp_path, FakeClock(), queues=[Queue("pool", concurrency=2)]) as app:
        jobs = [await app.enqueue(work, Work(f"j{i}", pause=0.03), queue="pool") for i in range(7)]
        for job in jobs:
            assert type(await app.wait_effect(job, timeout=5)) is EffectSucceeded
        assert sorted(REC.names()) == sorted(f"j{i}" for i in range(7))
        assert REC.max_running == 2


async def test_an_effects_own_concurrency_limit(tmp_path: Path) -> None:
    @z8.effect(kind="read", concurrency=1)
    async def one_at_a_time(req: Work, ctx: EffectContext) -> None:
        await work.fn(req, ctx)

    async with make_app(tmp_path, FakeClock(), effects=[one_at_a_time]) as app:
        jobs = [await app.enqueue(one_at_a_time, Work(f"s{i}", pause=0.02)) for i in range(4)]
        for job in jobs:
            await app.wait_effect(job, timeout=5)
        assert REC.max_running == 1 and REC.names() == ["s0", "s1", "s2", "s3"]


async def test_higher_priority_jobs_run_first(tmp_path: Path) -> None:
    async with make_app(tmp_path, FakeClock(), queues=[Queue("solo", concurrency=1)]) as app:
        blocker = await app.enqueue(work, Work("blocker", hold=True), queue="solo")
        await until(lambda: REC.names() == ["blocker"], what="the blocker to start")
        waiting = [
            await app.enqueue(work, Work("low-a"), queue="solo"),
            await app.enqueue(work, Work("high"), queue="solo", priority=10),
            await app.enqueue(work, Work("low-b"), queue="solo"),
            await app.enqueue(work, Work("mid"), queue="solo", priority=5),
            await app.enqueue(work, Work("urgent"), queue="solo", priority=99),
        ]
        await until(lambda: len(app.pending_effects()) == 6, what="every job to be seen")
        await quiet(0.05)
        assert REC.names() == ["blocker"]  # concurrency 1: the rest wait
        REC.gates["blocker"].set()
        await app.wait_effect(blocker, timeout=5)
        for job in waiting:
            await app.wait_effect(job, timeout=5)
        assert REC.names() == ["blocker", "urgent", "high", "mid", "low-a", "low-b"]  # then oldest first
        assert [r.priority for r in of_type(app, JOBS_PREFIX + waiting[1].split("/")[1], EffectIntended)] == [10]


async def _run_rated(app: Application, count: int) -> list[float]:
    jobs = [await app.enqueue(work, Work(f"r{i:02}"), queue="rated") for i in range(count)]
    for job in jobs:
        await app.wait_effect(job, timeout=10)
    assert REC.names() == [f"r{i:02}" for i in range(count)]  # one lane: in enqueue order
    return [at for _, at in REC.starts]


async def test_a_rate_limited_queue_throttles_once_its_burst_is_spent(tmp_path: Path) -> None:
    async with make_app(tmp_path, FakeClock(), queues=[Queue("rated", rate=20.0)]) as app:
        starts = await _run_rated(app, 30)
    # at 20 starts/s, 30 starts cannot fit in less than (30 - 20) / 20 s even with a full bucket
    assert starts[-1] - starts[0] >= 0.4


async def test_a_rate_limited_queue_paces_its_starts(tmp_path: Path) -> None:
    async with make_app(tmp_path, FakeClock(), queues=[Queue("rated", rate=20.0)]) as app:
        starts = await _run_rated(app, 10)
    assert starts[-1] - starts[0] >= 0.4  # 9 gaps of 1/20 s (loose)


async def test_a_failing_job_is_dead_lettered_and_redriven(tmp_path: Path) -> None:
    async with make_app(tmp_path, FakeClock()) as app:
        job = await app.enqueue(flaky, Work("f"), key="f")
        outcome = await app.wait_effect(job, timeout=5)
        assert type(outcome) is EffectFailed and outcome.exhausted and outcome.attempts == 2
        assert outcome.error == "Retryable"
        assert REC.calls == [("f", 1), ("f", 2)]  # Retry(attempts=2) counts the first try
        (dead,) = app.dead_letters()
        assert (dead.effect_id, dead.status, dead.attempts, dead.effect) == (job, "dead", 2, "flaky")
        assert "downstream busy" in dead.last_error
        assert [type(r) for r in records(app, JOBS_PREFIX + "f")] == [EffectIntended, EffectRetrying, EffectFailed]
        await quiet(0.05)
        assert len(REC.calls) == 2  # a dead letter is not retried on its own

        REC.flaky_ok = True
        await app.redrive(job, by="ops")
        outcome = await app.wait_effect(job, timeout=5)
        assert type(outcome) is EffectSucceeded and outcome.result == {"name": "f"}
        assert REC.calls == [("f", 1), ("f", 2), ("f", 1)]  # same key, attempts counted afresh
        assert app.dead_letters() == [] and app.pending_effects() == []
        assert [type(r) for r in records(app, JOBS_PREFIX + "f")] == [
            EffectIntended, EffectRetrying, EffectFailed, EffectRedriven, EffectSucceeded]
        assert of_type(app, JOBS_PREFIX + "f", EffectRedriven) == [EffectRedriven(job, "ops")]


async def test_a_dead_letter_is_still_listed_after_a_restart(tmp_path: Path) -> None:
    async with make_app(tmp_path, FakeClock()) as app:
        job = await app.enqueue(flaky, Work("f"), key="f")
        await app.wait_effect(job, timeout=5)
    async with make_app(tmp_path, FakeClock()) as app:
        assert [v.effect_id for v in app.dead_letters()] == [job]
        await quiet(0.05)
        assert len(REC.calls) == 2  # not re-run by the restart
        REC.flaky_ok = True
        await app.redrive(job)
        assert type(await app.wait_effect(job, timeout=5)) is EffectSucceeded


@pytest.mark.parametrize("delay", [float("nan"), float("inf")], ids=["nan", "inf"])
async def test_a_non_finite_delay_is_an_invalid_argument(tmp_path: Path, delay: float) -> None:
    async with make_app(tmp_path, FakeClock()) as app:
        head = app.journal.head_position()
        with pytest.raises(InvalidArgument):
            await app.enqueue(work, Work("w"), key="k", delay=delay)
        assert written_since(app, head) == []


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"key": ""}, InvalidArgument),
    ({"key": 42}, InvalidArgument),
    ({"key": "x" * 300}, InvalidStreamName),  # the stream name would be too long
    ({"delay": -1}, InvalidArgument),
    ({"delay": "soon"}, InvalidArgument),
    ({"priority": "high"}, InvalidArgument),
    ({"queue": "undeclared"}, InvalidEffect),
    ({"effect": not_registered}, InvalidEffect),
    ({"effect": "no-such-effect"}, InvalidEffect),
    ({"request": "not a Work"}, InvalidEffect),
])
async def test_bad_enqueue_arguments_raise_typed_errors_and_write_nothing(
    tmp_path: Path, kwargs: dict, error: type[Exception],
) -> None:
    async with make_app(tmp_path, FakeClock()) as app:
        head = app.journal.head_position()
        args = {"effect": work, "request": Work("w"), **kwargs}
        with pytest.raises(error) as raised:
            await app.enqueue(args.pop("effect"), args.pop("request"), **args)
        assert isinstance(raised.value, Z8Error)
        assert written_since(app, head) == []
        await quiet(0.05)
        assert REC.calls == [] and app.pending_effects() == []


# =============================================================================================
# 5. Cron schedules
# =============================================================================================

FIRST_DUE = 1_700_000_100 * SECOND  # 22:15:00 UTC, the first */5 after START


def fired(app: Application) -> list[int]:
    return [r.due for r in of_type(app, SCHEDULES_PREFIX + "tick", ScheduleFired)]


def tick_jobs(app: Application) -> dict[str, list[Any]]:
    return streams_with_prefix(app, JOBS_PREFIX + "tick@")


def tick_schedule(missed: str = "skip") -> Schedule:
    return Schedule("tick", "*/5 * * * *", tick, TickReq(), missed=missed)  # type: ignore[arg-type]


async def test_a_schedule_fires_a_keyed_job_at_each_due_time(tmp_path: Path) -> None:
    clock = FakeClock()
    async with make_app(tmp_path, clock, schedules=[tick_schedule()]) as app:
        clock.advance(99)  # 22:14:59
        await quiet()
        assert fired(app) == [] and REC.calls == []
        clock.advance(1)  # 22:15:00
        await until(lambda: len(REC.calls) == 1, what="the first firing")
        key = f"tick@{FIRST_DUE}"
        assert REC.calls == [("tick", f"$jobs/{key}/1/0")]
        await until(lambda: fired(app) == [FIRST_DUE], what="ScheduleFired")
        assert of_type(app, SCHEDULES_PREFIX + "tick", ScheduleFired) == [ScheduleFired("tick", FIRST_DUE, key)]
        assert type(await app.wait_effect(f"$jobs/{key}/1/0", timeout=5)) is EffectSucceeded
        clock.advance(299)
        await quiet()
        assert len(REC.calls) == 1
        clock.advance(1)  # 22:20:00
        await until(lambda: len(fired(app)) == 2, what="the second firing")
        assert fired(app) == [FIRST_DUE, FIRST_DUE + 300 * SECOND]
        await until(lambda: len(REC.calls) == 2)
        assert sorted(tick_jobs(app)) == [f"$jobs/tick@{d}" for d in fired(app)]


@pytest.mark.parametrize(("missed", "expected"), [
    ("skip", []),
    ("once", [FIRST_DUE + 3600 * SECOND]),
    ("all", [FIRST_DUE + k * 300 * SECOND for k in range(1, 13)]),
])
async def test_missed_due_times_follow_the_missed_policy(tmp_path: Path, missed: str, expected: list[int]) -> None:
    clock = FakeClock()
    async with make_app(tmp_path, clock, schedules=[tick_schedule(missed)]) as app:
        clock.advance(100)  # 22:15:00
        await until(lambda: fired(app) == [FIRST_DUE] and len(REC.calls) == 1, what="the first firing")
        await app.wait_effect(f"$jobs/tick@{FIRST_DUE}/1/0", timeout=5)
    clock.advance(3600)  # 12 due times pass while closed (22:20 ... 23:15)
    async with make_app(tmp_path, clock, schedules=[tick_schedule(missed)]) as app:
        await until(lambda: len(REC.calls) == 1 + len(expected), what="the catch-up runs")
        await quiet()
        assert fired(app) == [FIRST_DUE, *expected]
        assert len(REC.calls) == 1 + len(expected)
        jobs = tick_jobs(app)
        assert sorted(jobs) == sorted(f"$jobs/tick@{d}" for d in [FIRST_DUE, *expected])
        for stream in jobs.values():
            assert [type(r) for r in stream] == [EffectIntended, EffectSucceeded]  # each due ran once
        clock.advance(300)  # 23:20: the schedule goes on
        next_due = FIRST_DUE + 13 * 300 * SECOND
        await until(lambda: fired(app)[-1] == next_due, what="the next live firing")
        await until(lambda: len(REC.calls) == 2 + len(expected))
    async with make_app(tmp_path, clock, schedules=[tick_schedule(missed)]) as app:  # restart, no time passed
        await quiet()
        dues = fired(app)
        assert dues == [FIRST_DUE, *expected, next_due] and len(set(dues)) == len(dues)
        assert len(REC.calls) == 2 + len(expected)
        assert all(len([r for r in s if type(r) is EffectIntended]) == 1 for s in tick_jobs(app).values())


async def test_due_times_passed_in_one_clock_jump_while_running_are_not_lost(tmp_path: Path) -> None:
    clock = FakeClock()
    async with make_app(tmp_path, clock, schedules=[tick_schedule("all")]) as app:
        clock.advance(100 + 3600)  # 22:15:00 ... 23:15:00 pass at once
        await until(lambda: fired(app), what="a firing")
        await quiet(0.3)
        assert fired(app) == [FIRST_DUE + k * 300 * SECOND for k in range(13)]


async def test_a_schedule_that_never_fired_starts_from_now_after_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    async with make_app(tmp_path, clock, schedules=[tick_schedule("all")]) as app:
        await quiet(0.05)
    clock.advance(3600)
    async with make_app(tmp_path, clock, schedules=[tick_schedule("all")]) as app:
        await quiet()
        assert fired(app) == [] and REC.calls == []  # it never fired: nothing to catch up
        clock.advance(300)
        await until(lambda: fired(app), what="the first firing")


async def test_a_schedule_runs_in_its_time_zone(tmp_path: Path) -> None:
    paris = Schedule("daily", "0 9 * * *", tick, TickReq("daily"), tz="Europe/Paris")
    nine_cet = 1_700_035_200 * SECOND  # 2023-11-15 09:00 in Paris = 08:00 UTC
    assert paris.after(START) == nine_cet
    spring = int(dt.datetime(2024, 3, 30, 12, tzinfo=dt.UTC).timestamp()) * SECOND
    assert paris.after(spring) == int(dt.datetime(2024, 3, 31, 7, tzinfo=dt.UTC).timestamp()) * SECOND
    clock = FakeClock()
    async with make_app(tmp_path, clock, schedules=[paris]):
        clock.advance((nine_cet - START) / SECOND - 1)
        await quiet()
        assert REC.calls == []
        clock.advance(1)
        await until(lambda: REC.calls, what="09:00 in Paris")
        assert REC.calls == [("daily", f"$jobs/daily@{nine_cet}/1/0")]


@pytest.mark.parametrize("bad", [{"queue": "undeclared"}, {"request": "not a TickReq"}], ids=["queue", "request"])
async def test_a_schedule_whose_job_cannot_be_enqueued_is_refused_at_start(tmp_path: Path, bad: dict) -> None:
    schedule = Schedule("tick", "*/5 * * * *", tick, bad.pop("request", TickReq()), **bad)
    with pytest.raises((InvalidSchedule, InvalidEffect)):
        async with make_app(tmp_path, FakeClock(), schedules=[schedule]):
            pass


@pytest.mark.parametrize("kwargs", [
    {"cron": "not a cron"},
    {"cron": "61 * * * *"},
    {"cron": "* * * *"},
    {"tz": "Mars/Olympus_Mons"},
    {"missed": "sometimes"},
    {"id": "a@b"},
    {"id": ""},
    {"effect": "tick"},
])
def test_invalid_schedules_are_refused_at_construction(kwargs: dict) -> None:
    args = {"id": "s", "cron": "*/5 * * * *", "effect": tick, **kwargs}
    with pytest.raises(InvalidSchedule):
        Schedule(args.pop("id"), args.pop("cron"), args.pop("effect"), **args)


# =============================================================================================
# 6. Sagas
# =============================================================================================


async def test_a_saga_happy_path_completes(tmp_path: Path) -> None:
    async with make_app(tmp_path, FakeClock()) as app:
        assert await app.dispatch(BookTrip("1")) == "booking"
        await until(lambda: saga_ended(app, "trip-1"), what="the saga to end")
        await quiet(0.05)
        assert saga_ended(app, "trip-1") == [SagaEnded("completed")]
        assert REC.names() == ["book_outbound", "book_hotel", "book_return"]
        assert of_type(app, "trip-1", SagaCompensating) == []
        trip = agent_at(app, "/app/trip/trip-1")
        assert trip.saga_status == "completed" and trip.state.outcome == "booked"
        assert trip.state.legs == ("outbound", "hotel", "return")
        # the last outcome, decide's events and the end: one append
        assert [type(r) for r in appends(app, "trip-1")[-1]] == [EffectSucceeded, LegBooked, TripBooked, SagaEnded]


async def test_a_saga_with_one_step_done_compensates_it(tmp_path: Path) -> None:
    async with make_app(tmp_path, FakeClock()) as app:
        await app.dispatch(BookTrip("1", fail_hotel=True))
        await until(lambda: saga_ended(app, "trip-1"), what="the saga to end")
        await quiet(0.05)
        assert saga_ended(app, "trip-1") == [SagaEnded("compensated")]
        assert REC.calls[-1] == ("cancel_outbound", FlightBooking("OUT-trip-1", "out"))
        assert REC.names() == ["book_outbound", "book_hotel", "cancel_outbound"]
        assert agent_at(app, "/app/trip/trip-1").saga_status == "compensated"


async def test_a_failed_saga_compensates_lifo_with_the_original_results(tmp_path: Path) -> None:
    async with make_app(tmp_path, FakeClock()) as app:
        await app.dispatch(BookTrip("1", fail_return=True))
        # the end, or more compensations than steps done (then it is looping: fail fast)
        await until(lambda: saga_ended(app, "trip-1") or len(REC.names("cancel_")) > 2, what="the saga to end")
        await quiet(0.1)
        assert REC.calls == [
            ("book_outbound", FlightReq("trip-1", "out")),
            ("book_hotel", HotelReq("trip-1")),
            ("book_return", FlightReq("trip-1", "return", True)),
            # most recent first, each given the result of the step it undoes as its request
            ("cancel_hotel", HotelBooking("HOT-trip-1", False)),
            ("cancel_outbound", FlightBooking("OUT-trip-1", "out")),
        ]
        assert saga_ended(app, "trip-1") == [SagaEnded("compensated")]
        trip = agent_at(app, "/app/trip/trip-1")
        assert trip.saga_status == "compensated" and trip.ledger.done == [] and trip.ledger.effects == {}
        assert trip.state.outcome.startswith("failed: book_return: flight full")
        intents = {r.effect: r for r in of_type(app, "trip-1", EffectIntended)}
        (compensating,) = of_type(app, "trip-1", SagaCompensating)
        assert compensating.pending == [intents["book_hotel"].effect_id, intents["book_outbound"].effect_id]
        assert intents["book_hotel.compensate"].compensates == intents["book_hotel"].effect_id
        assert intents["book_hotel.compensate"].request == {"ref": "HOT-trip-1", "fail_cancel": False}
        assert intents["book_outbound.compensate"].compensates == intents["book_outbound"].effect_id
        assert intents["book_outbound.compensate"].request == {"ref": "OUT-trip-1", "leg": "out"}
        assert "book_return.compensate" not in intents  # the failed step did not happen: nothing to undo
        # the failure, decide's events, the saga's move and the first compensation: one append
        decision = next(g for g in appends(app, "trip-1") if any(type(r) is SagaCompensating for r in g))
        assert [type(r) for r in decision] == [EffectFailed, TripFailed, SagaCompensating, EffectIntended]
        assert decision[-1].effect == "book_hotel.compensate"
        # and each compensation's outcome is journaled with the saga's next move
        assert [[type(r) for r in g] for g in appends(app, "trip-1")[-2:]] == [
            [EffectSucceeded, EffectIntended], [EffectSucceeded, SagaEnded]]
    async with make_app(tmp_path, FakeClock()) as app:  # a restart does not undo anything again
        await quiet()
        assert len(REC.names("cancel_")) == 2 and saga_ended(app, "trip-1") == [SagaEnded("compensated")]


async def test_a_failing_compensation_leaves_the_saga_stuck_with_an_alert(tmp_path: Path) -> None:
    async with make_app(tmp_path, FakeClock()) as app:
        await app.dispatch(BookTrip("1", fail_return=True, fail_hotel_cancel=True))
        await until(lambda: saga_ended(app, "trip-1"), what="the saga to end")
        await quiet(0.1)
        (ended,) = saga_ended(app, "trip-1")
        assert ended.status == "stuck" and "cannot be cancelled" in ended.reason
        (alert,) = of_type(app, "trip-1", Alert)
        hotel = next(r for r in of_type(app, "trip-1", EffectIntended) if r.effect == "book_hotel")
        assert alert.kind == "saga.stuck" and alert.stream == "trip-1"
        assert f"of {hotel.effect_id} failed" in alert.detail and alert.detail == ended.reason
        # the failed compensation ran once (no blind retry) and the outbound one NOT at all
        assert REC.names() == ["book_outbound", "book_hotel", "book_return", "cancel_hotel"]
        (failure,) = [r for r in of_type(app, "trip-1", EffectFailed) if r.effect == "book_hotel.compensate"]
        assert failure.attempts == 1 and not failure.exhausted and failure.error == "RuntimeError"
        assert not [r for r in of_type(app, "trip-1", EffectIntended) if r.effect == "book_outbound.compensate"]
        assert agent_at(app, "/app/trip/trip-1").saga_status == "stuck"
        assert [type(r) for r in appends(app, "trip-1")[-1]] == [EffectFailed, SagaEnded, Alert]
    async with make_app(tmp_path, FakeClock()) as app:  # a restart neither retries nor moves on
        await quiet()
        assert REC.names("cancel_") == ["cancel_hotel"]
        assert [e.status for e in saga_ended(app, "trip-1")] == ["stuck"]
