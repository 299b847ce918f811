"""Runs seen from outside: wait for one, list them, replay one from its journal, fork one.

Replay is the proof that a run's record is complete: :func:`replay` feeds the agent's
pure ``decide`` the inputs the run recorded — the ``StartRun`` (rebuilt from
``RunStarted``), then each effect outcome and fired timer exactly as the journal holds
it — and checks that today's code produces the same events, the same calls (effect,
request and id) and the same timers, decision by decision, then that the state it folds
has the digest ``RunFinished`` recorded. Nothing runs: no outbox, no provider, no tool.
A run whose subject was erased cannot be replayed (its inputs are gone): ``SubjectErased``.
"""

from __future__ import annotations

import asyncio
import itertools
import weakref
from typing import Any

import msgspec

from z8.actors._agent import CommandContext, Rejection
from z8.actors._ledger import (
    RECORD_TYPES,
    CancelTimer,
    EffectApproved,
    EffectFailed,
    EffectIntended,
    EffectStuck,
    EffectSucceeded,
    EffectUnknown,
    Ledger,
    Timer,
    TimerCancelled,
    TimerFired,
    TimerSet,
)
from z8.actors._system import register_system_types
from z8.errors import InvalidArgument, ReplayDiverged, RunNotFound, SubjectErased
from z8.ids import uuid7
from z8.journal import Journal

from ._agent import Agent
from ._events import (
    EVENT_TYPES,
    EVOLVE,
    RUN_PREFIX,
    ModelStep,
    RunFinished,
    RunForked,
    RunStarted,
    RunState,
    ToolStep,
    state_digest,
)
from ._messages import ModelRequest, ModelResponse, Usage
from ._strategies import strategy_named

__all__ = ["RunResult", "RunStatus", "ReplayReport", "await_run", "run_status", "runs", "replay", "fork",
           "FORK_SETTINGS"]

FORK_SETTINGS = frozenset({"prompt", "model", "strategy", "max_iterations", "timeout"})
"""What a fork may change (``z8.ai.fork(..., prompt=...)``)."""
_INPUTS = (EffectSucceeded, EffectFailed, EffectUnknown, EffectStuck, TimerFired)
"""The records whose append also carried a decision on them."""


class RunResult(msgspec.Struct, frozen=True):
    """A finished run: ``status`` (answered, max_iterations, budget, timeout, failed), the
    answer, the recorded reason, its step count, token usage and the strategy it followed."""

    run_id: str
    status: str
    answer: str = ""
    reason: str = ""
    steps: int = 0
    usage: Usage = Usage()
    strategy: str = ""


class RunStatus(msgspec.Struct, frozen=True):
    """Where a run is now, finished or not: ``status`` is ``running`` (model calls
    pending), ``waiting`` (tool calls pending; ``approvals`` lists those held for a
    human), or the finished status."""

    run_id: str
    agent: str
    status: str
    query: str = ""
    strategy: str = ""
    steps: int = 0
    answer: str = ""
    reason: str = ""
    usage: Usage = Usage()
    approvals: list[str] = []
    forked_from: str = ""


class ReplayReport(msgspec.Struct):
    """What a replay rebuilt and whether it matched the record.

    ``model_calls`` and ``tool_calls`` count the recorded calls whose outcomes replay read
    from the journal: none of them is made again. ``diverged_at_step`` and ``divergence``
    name the first difference (None and "" when it matched); ``state`` is the rebuilt
    state."""

    run_id: str
    agent: str
    matched: bool
    decisions: int = 0
    events: int = 0
    steps: int = 0
    model_calls: int = 0
    tool_calls: int = 0
    status: str = ""
    answer: str = ""
    state_digest: str = ""
    recorded_digest: str = ""
    diverged_at_step: int | None = None
    divergence: str = ""
    state: Any = None


# --- journal access -------------------------------------------------------------------------------


def _journal(source: Any) -> Journal:
    journal = source if isinstance(source, Journal) else getattr(source, "journal", None)
    if not isinstance(journal, Journal):
        raise InvalidArgument(f"give a z8.Application or a Journal, got {type(source).__name__}")
    types = journal.types
    if RunStarted not in types:
        for name, cls in EVENT_TYPES.items():
            if cls not in types:
                types.register(cls, name=name)
    if EffectIntended not in types:
        register_system_types(types)
    return journal


def _stream(run_id: str) -> str:
    if not isinstance(run_id, str) or not run_id:
        raise InvalidArgument(f"run_id must be a non-empty str, got {run_id!r}")
    return RUN_PREFIX + run_id


def _decode(journal: Journal, envelope: Any) -> Any:
    if envelope.type in RECORD_TYPES:
        return msgspec.msgpack.decode(envelope.data, type=RECORD_TYPES[envelope.type])
    return journal.decode(envelope)


def _finished(journal: Journal, stream: str) -> RunFinished | None:
    # late outcomes (calls still running when the run ended) may follow RunFinished: look back a little, then all
    recent = journal.read_stream(stream, backward=True, limit=16)
    if len(recent) == 16:
        recent = journal.read_stream(stream, backward=True)
    for envelope in recent:
        if envelope.type == "z8.ai.RunFinished":
            return journal.decode(envelope)
    return None


def _result(run_id: str, finished: RunFinished) -> RunResult:
    return RunResult(run_id, finished.status, finished.answer, finished.reason, finished.steps, finished.usage,
                     finished.strategy)


async def await_run(app: Any, run_id: str, timeout: float | None = None) -> RunResult:
    """The run's result once it has finished (at once if it has). Raises ``RunNotFound``
    when the journal has no such run (or closes first), ``TimeoutError`` (saying where the
    run is) when it has not finished within ``timeout`` seconds."""
    journal = _journal(app)
    stream = _stream(run_id)
    if journal.stream_version(stream) == 0:
        raise RunNotFound(f"no run {run_id!r} in the journal (no stream {stream!r}); dispatch its StartRun first")
    ends = _Ends.of(journal)
    waiter = ends.wait(stream)  # before looking: an end committed after the look is delivered to it
    try:
        found = _finished(journal, stream)
        if found is not None:
            return _result(run_id, found)
        async with asyncio.timeout(timeout):
            return _result(run_id, await waiter)
    except TimeoutError:
        now = run_status(journal, run_id)
        held = f" ({len(now.approvals)} tool call(s) await approval: {', '.join(now.approvals)})" if now.approvals else ""
        raise TimeoutError(f"run {run_id!r} has not finished after {timeout} s: it is {now.status} at step "
                           f"{now.steps}{held}") from None
    finally:
        ends.forget(stream, waiter)


class _Ends:
    """One follower of a journal's ``RunFinished`` events for every ``await_run`` on it
    (a subscription per waiter would scan the log once per waiting run). It stops when
    nobody waits, and starts again from the head for the next waiter."""

    _by_journal: weakref.WeakKeyDictionary[Journal, _Ends] = weakref.WeakKeyDictionary()

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.waiters: dict[str, set[asyncio.Future[RunFinished]]] = {}
        self.task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, journal: Journal) -> _Ends:
        ends = cls._by_journal.get(journal)
        if ends is None:
            ends = cls._by_journal[journal] = cls(journal)
        return ends

    def wait(self, stream: str) -> asyncio.Future[RunFinished]:
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = loop.create_task(self._follow(self.journal.head_position() + 1))
        future: asyncio.Future[RunFinished] = loop.create_future()
        self.waiters.setdefault(stream, set()).add(future)
        return future

    def forget(self, stream: str, future: asyncio.Future[RunFinished]) -> None:
        waiting = self.waiters.get(stream)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self.waiters[stream]
        if not self.waiters and self.task is not None:
            self.task.cancel()
            self.task = None

    async def _follow(self, start: int) -> None:
        try:
            async with self.journal.subscribe(start, types={"z8.ai.RunFinished"},
                                              stream_prefix=RUN_PREFIX) as records:
                async for envelope in records:
                    waiting = self.waiters.get(envelope.stream)
                    if waiting:
                        finished = self.journal.decode(envelope)
                        for future in waiting:
                            if not future.done():
                                future.set_result(finished)
        except asyncio.CancelledError:  # nobody waits any more
            raise
        except Exception as error:
            self._fail(RunNotFound(f"following the journal failed before the run finished: {error!r}"))
            raise
        self._fail(RunNotFound("the journal closed before the run finished"))

    def _fail(self, error: Exception) -> None:
        for waiting in list(self.waiters.values()):
            for future in waiting:
                if not future.done():
                    future.set_exception(error)


def run_status(source: Any, run_id: str) -> RunStatus:
    """Where run ``run_id`` is now, folded from its stream (``RunNotFound`` if none)."""
    journal = _journal(source)
    stream = _stream(run_id)
    state, ledger = RunState(), Ledger()
    envelopes = journal.read_stream(stream)
    if not envelopes:
        raise RunNotFound(f"no run {run_id!r} in the journal (no stream {stream!r})")
    for envelope in envelopes:
        item = _decode(journal, envelope)
        if envelope.type in RECORD_TYPES:
            ledger.apply(item)
        else:
            fold = EVOLVE.get(type(item))
            state = fold(state, item) if fold is not None else state
    approvals = [eid for eid, pending in ledger.effects.items() if pending.status == "parked" and eid in state.pending]
    return RunStatus(state.run_id or run_id, state.agent, state.status, state.query, state.strategy, len(state.steps),
                     state.answer, state.reason, state.usage, approvals, state.forked_from)


def runs(source: Any) -> list[RunStatus]:
    """Every run in the journal (streams ``run-*``), oldest stream name first."""
    journal = _journal(source)
    heads = journal._stream_heads(RUN_PREFIX)  # noqa: SLF001 - the journal's own listing of streams by prefix
    return [run_status(journal, stream[len(RUN_PREFIX):]) for stream, _, _, expired in sorted(heads) if not expired]


# --- replay ---------------------------------------------------------------------------------------


class _Recorded:
    """One recorded decision: the message decide saw, the stream version it was based on,
    and what it wrote (domain events, effect intents, timer records)."""

    __slots__ = ("message", "version", "events", "intents", "timers", "cancels", "label")

    def __init__(self, message: Any, version: int, label: str) -> None:
        self.message = message
        self.version = version
        self.label = label
        self.events: list[Any] = []
        self.intents: list[EffectIntended] = []
        self.timers: list[TimerSet] = []
        self.cancels: list[TimerCancelled] = []


def _recorded(journal: Journal, envelopes: list[Any], agent: type[Agent]) -> list[_Recorded]:
    """The stream cut into the decisions it records, each with its input rebuilt."""
    decisions: list[_Recorded] = []
    current: _Recorded | None = None
    timers: dict[str, TimerSet] = {}
    previous: Any = None
    copying = 0
    for envelope in envelopes:
        item = _decode(journal, envelope)
        kind = type(item)
        if kind in _INPUTS:
            # an approval's denial or expiry is journaled in the same append, just before the failure
            lead = 1 if (type(previous) is EffectApproved and not previous.approve
                         and previous.effect_id == getattr(item, "effect_id", None)) else 0
            current = _Recorded(_message(journal, agent, item, timers), envelope.version - 1 - lead,
                                f"{kind.__name__} {getattr(item, 'effect_id', getattr(item, 'timer_id', ''))}")
            decisions.append(current)
        elif kind is EffectIntended and current is not None:
            current.intents.append(item)
        elif kind is TimerSet:
            timers[item.timer_id] = item
            if current is not None:
                current.timers.append(item)
        elif kind is TimerCancelled and current is not None:
            current.cancels.append(item)
        elif envelope.type in RECORD_TYPES:
            current = None  # a record written alone (a retry, an approval): no decision
        else:
            if current is None or kind is RunForked or (kind is RunStarted and copying == 0):
                current = _Recorded(None, envelope.version - 1, "the run's command")
                decisions.append(current)
            current.events.append(item)
            copying = item.copied if kind is RunForked else max(0, copying - 1)  # a fork's history is its command's
        previous = item
    for decision in decisions:
        if decision.message is None and decision.events:
            decision.message = _command(agent, decision.events)
    return decisions


def _message(journal: Journal, agent: type[Agent], record: Any, timers: dict[str, TimerSet]) -> Any:
    """What decide was handed for ``record`` (an outcome with its result decoded as the
    outbox decodes it, or a fired timer's message)."""
    if type(record) is TimerFired:
        armed = timers.get(record.timer_id)
        return None if armed is None else journal.types.decode(armed.message_type, armed.message_schema,
                                                               armed.message)
    if type(record) is EffectSucceeded:
        if record.effect == agent.model_effect:
            return msgspec.structs.replace(record, result=journal.personal.convert(record.result, ModelResponse))
        tool = next((t for t in agent.tools if t.effect.name == record.effect), None)
        if tool is not None:
            return msgspec.structs.replace(record, result=tool.effect.decode_result(record.result, journal.personal))
    return record


def _command(agent: type[Agent], events: list[Any]) -> Any:
    first = events[0]
    if type(first) is RunStarted:
        return agent.StartRun(run_id=first.run_id, query=first.query, context=first.context, subject=first.subject)
    if type(first) is RunForked:
        return agent.ForkRun(run_id=first.run_id, source=first.source, at_step=first.at_step,
                             history=events[1:1 + first.copied], overrides=first.overrides)
    return None


def replay(source: Any, run_id: str, agent: type[Agent], *, strict: bool = True) -> ReplayReport:
    """Rebuild run ``run_id`` from the journal with ``agent``'s code, making no call.

    Returns a :class:`ReplayReport`; with ``strict`` (the default) a difference raises
    ``ReplayDiverged`` naming the first differing step (the report is its ``report``).
    ``source`` is a ``z8.Application`` or a ``Journal`` (no application needs to run).
    Raises ``SubjectErased`` when the run's subject was erased: its recorded inputs (the
    query, the model's answers, the tool results) are gone, so there is nothing to replay."""
    if not (isinstance(agent, type) and issubclass(agent, Agent)):
        raise InvalidArgument(f"replay needs the run's z8.ai.Agent class, got {agent!r}")
    journal = _journal(source)
    stream = _stream(run_id)
    envelopes = journal.read_stream(stream)
    if not envelopes:
        raise RunNotFound(f"no run {run_id!r} in the journal (no stream {stream!r})")
    _check_not_erased(journal, envelopes, run_id)
    replayer = _Replayer(journal, agent, stream, run_id)
    report = replayer.run(_recorded(journal, envelopes, agent))
    if strict and not report.matched:
        error = ReplayDiverged(report.divergence)
        error.report = report  # type: ignore[attr-defined]
        raise error
    return report


def _check_not_erased(journal: Journal, envelopes: list[Any], run_id: str) -> None:
    first = next((e for e in envelopes if e.type in ("z8.ai.RunStarted", "z8.ai.RunForked")), None)
    subject = getattr(journal.decode(first), "subject", None) if first is not None else None
    if subject and journal.is_erased(subject):
        raise SubjectErased(f"run {run_id!r} cannot be replayed: its personal data was erased (subject {subject!r}), "
                            "so the query, answers and tool results it recorded are gone")


class _Replayer:
    def __init__(self, journal: Journal, agent: type[Agent], stream: str, run_id: str) -> None:
        self.journal = journal
        self.agent = agent.__new__(agent)  # decide and evolve are pure: no runtime, no __init__
        self.stream = stream
        self.run_id = run_id
        self.state = agent.State()
        self.armed: set[str] = set()
        self.report = ReplayReport(run_id, agent.__name__, True)
        self.total = 0

    def run(self, decisions: list[_Recorded]) -> ReplayReport:
        self.total = len(decisions)
        for number, recorded in enumerate(decisions, 1):
            if not self._decision(number, recorded):
                break
        report, state = self.report, self.state
        report.state, report.status, report.answer, report.steps = state, state.status, state.answer, len(state.steps)
        if report.matched and not state.finished:
            report.state_digest = state_digest(state)  # an unfinished run: nothing recorded to compare with
        return report

    def _decision(self, number: int, recorded: _Recorded) -> bool:
        report = self.report
        where = f"decision {number} of {self.total}, on {recorded.label}"
        if recorded.message is None:
            return self._diverged(self._step(None), where, "the record has no input decide could have seen")
        now = recorded.intents[0].decided_at if recorded.intents else 0
        ctx = CommandContext(now, f"replay-{number}", self.stream, recorded.version)
        try:
            out = self.agent.decide(self.state, recorded.message, ctx)
        except Exception as error:  # today's code cannot decide what it once did
            return self._diverged(self._step(None), where, f"decide raised {error!r}")
        events, effects, timers = ([], [], []) if isinstance(out, Rejection) else (out.events, out.effects, out.timers)
        report.decisions += 1
        for index, (was, now_) in enumerate(itertools.zip_longest(recorded.events, events)):
            if not _same(was, now_):
                detail = _difference(was, now_)
                return self._diverged(self._step(was if was is not None else now_), where,
                                      f"event {index + 1}: {detail}")
            if not self._fold(now_, was, where):
                return False
        report.events += len(events)
        problem = self._calls(recorded, effects, ctx) or self._timers(recorded, timers)
        if problem:
            return self._diverged(self._step(None), where, problem)
        if type(recorded.message) is TimerFired:
            self.armed.discard(recorded.message.timer_id)
        return True

    def _fold(self, event: Any, recorded: Any, where: str) -> bool:
        """Fold ``event`` (today's, equal to the ``recorded`` one but for a final digest)."""
        if type(event) is RunFinished:
            self.report.recorded_digest = recorded.state_digest
            self.report.state_digest = state_digest(self.state)
            if recorded.state_digest != self.report.state_digest:
                return self._diverged(len(self.state.steps), where,
                                      f"the final state differs: recorded digest {recorded.state_digest}, "
                                      f"rebuilt {self.report.state_digest}")
        try:
            self.state = self.agent.evolve(self.state, event)
        except Exception as error:
            return self._diverged(len(self.state.steps), where, f"evolve raised {error!r} on {type(event).__name__}")
        if type(event) is ModelStep:
            self.report.model_calls += 1
        elif type(event) is ToolStep and event.effect_id:
            self.report.tool_calls += 1
        return True

    def _calls(self, recorded: _Recorded, effects: list[Any], ctx: CommandContext) -> str:
        for index, (intent, call) in enumerate(itertools.zip_longest(recorded.intents, effects)):
            if call is None:
                return f"the record called {intent.effect} ({intent.effect_id}); today's code calls nothing more"
            name = call.effect if isinstance(call.effect, str) else call.effect.name
            if intent is None:
                return f"today's code calls {name} #{index}, which the record does not"
            request, was = _plain(call.request), _plain(self._opened(intent))
            if (intent.effect, intent.effect_id) != (name, ctx.effect_id(index)):
                return (f"call #{index}: recorded {intent.effect} {intent.effect_id}; today's code calls {name} "
                        f"{ctx.effect_id(index)}")
            if was != request:
                return f"call #{index} ({name} {intent.effect_id}): the request differs in {_fields(was, request)}"
        return ""

    def _opened(self, intent: EffectIntended) -> Any:
        """The recorded request with its personal fields opened (as the live call had them)."""
        try:
            if intent.effect == self.agent.model_effect:
                return self.journal.personal.convert(intent.request, ModelRequest)
            tool = next((t for t in self.agent.tools if t.effect.name == intent.effect), None)
            if tool is not None:
                return tool.effect.decode_request(intent.request, self.journal.personal)
        except msgspec.ValidationError:  # not today's request type: compared as recorded (and found different)
            pass
        return intent.request

    def _timers(self, recorded: _Recorded, timers: list[Any]) -> str:
        made = [t for t in timers if isinstance(t, Timer)]
        cancelled = [t.id for t in timers if isinstance(t, CancelTimer) and t.id in self.armed]
        if [t.id for t in made] != [t.timer_id for t in recorded.timers]:
            return (f"timers: recorded {[t.timer_id for t in recorded.timers]}, today's code sets "
                    f"{[t.id for t in made]}")
        for timer, record in zip(made, recorded.timers):
            if self.journal.types.encode(timer.message)[2] != record.message:
                return f"timer {timer.id!r}: its message differs from the recorded one"
        if cancelled != [t.timer_id for t in recorded.cancels]:
            return f"cancelled timers: recorded {[t.timer_id for t in recorded.cancels]}, today's code {cancelled}"
        self.armed.update(t.timer_id for t in recorded.timers)
        self.armed.difference_update(t.timer_id for t in recorded.cancels)
        return ""

    def _step(self, event: Any) -> int:
        if type(event) in (ModelStep, ToolStep):
            return event.step
        return len(self.state.steps)

    def _diverged(self, step: int, where: str, detail: str) -> bool:
        report = self.report
        report.matched = False
        report.diverged_at_step = step
        report.divergence = f"run {self.run_id!r}: replay diverged at step {step} ({where}): {detail}"
        return False


def _same(was: Any, now: Any) -> bool:
    """Equal events (a RunFinished's state digest is checked against the rebuilt state instead)."""
    if was is None or now is None or type(was) is not type(now):
        return was is None and now is None
    if type(was) is RunFinished:
        now = msgspec.structs.replace(now, state_digest=was.state_digest)
    return _plain(was) == _plain(now)


def _plain(value: Any) -> Any:
    """``value`` as the journal gives it back (plain data; tuples read as lists)."""
    return _DECODE_ANY(_ENCODE_ANY(value))


_ENCODE_ANY = msgspec.msgpack.Encoder().encode
_DECODE_ANY = msgspec.msgpack.Decoder().decode


def _difference(was: Any, now: Any) -> str:
    if was is None:
        return f"today's code adds {type(now).__name__}, which the record does not have"
    if now is None:
        return f"the record has {type(was).__name__}; today's code stops before it"
    if type(was) is not type(now):
        return f"recorded {type(was).__name__}, today's code produces {type(now).__name__}"
    return f"{type(was).__name__} differs in {_fields(_plain(was), _plain(now))}"


def _fields(a: Any, b: Any) -> str:
    """The fields two plain values differ in, with both values (shortened)."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return f"value: recorded {_short(a)}, now {_short(b)}"
    return "; ".join(f"{key}: recorded {_short(a.get(key))}, now {_short(b.get(key))}"
                     for key in dict.fromkeys([*a, *b]) if a.get(key) != b.get(key))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


# --- fork -----------------------------------------------------------------------------------------


async def fork(app: Any, run_id: str, *, at_step: int, new_run_id: str | None = None,
               agent: type[Agent] | None = None, **overrides: Any) -> str:
    """Start a new run that shares run ``run_id``'s history up to step ``at_step`` (its
    recorded model and tool results are not asked again) and continues live from there,
    with ``overrides`` (``prompt``, ``model``, ``strategy``, ``max_iterations``,
    ``timeout``): the calls the source was waiting for after step ``at_step`` are asked
    anew with them. Returns the new run's id (``new_run_id``, or one made up).

    ``strategy=`` starts that strategy afresh after the shared steps. The new stream begins
    with ``RunForked(source, at_step, overrides)``. ``agent`` is the agent class (default:
    the application's agent named in the source's ``RunStarted``). The fork holds the
    source's subject; a run whose subject was erased cannot be forked (``SubjectErased``)."""
    journal = _journal(app)
    unknown = set(overrides) - FORK_SETTINGS
    if unknown:
        raise InvalidArgument(f"fork cannot change {sorted(unknown)}; it changes {sorted(FORK_SETTINGS)}")
    if "strategy" in overrides and overrides["strategy"] != "auto":
        strategy_named(overrides["strategy"])
    envelopes = journal.read_stream(_stream(run_id))
    events = [journal.decode(e) for e in envelopes if e.type not in RECORD_TYPES]
    if not events or type(events[0]) not in (RunStarted, RunForked):
        raise RunNotFound(f"no run {run_id!r} in the journal")
    steps = sum(1 for e in events if type(e) in (ModelStep, ToolStep))
    ended = any(type(e) is RunFinished for e in events)
    if isinstance(at_step, bool) or not isinstance(at_step, int) or not 0 <= at_step <= steps \
            or (at_step == steps and ended):
        raise InvalidArgument(f"run {run_id!r} has {steps} steps{' and has finished' if ended else ''}: fork at a "
                              f"step from 0 to {steps - 1 if ended else steps}, got {at_step!r}")
    inherited: dict[str, Any] = {}
    history = []
    for event in events:
        if type(event) is RunForked:  # a fork of a fork: the new stream says where it comes from
            inherited = dict(event.overrides)
            continue
        if type(event) in (ModelStep, ToolStep) and event.step > at_step:
            break
        history.append(event)
    started = next(e for e in history if type(e) is RunStarted)
    if started.subject and journal.is_erased(started.subject):
        raise SubjectErased(f"run {run_id!r} cannot be forked: its personal data was erased (subject "
                            f"{started.subject!r}), so the history a fork would continue from is gone")
    agent = agent if agent is not None else _agent_named(app, started.agent)
    new_run_id = new_run_id or f"{run_id}-fork-{uuid7()[-12:]}"
    await app.dispatch(agent.ForkRun(run_id=new_run_id, source=run_id, at_step=at_step, history=history,
                                     overrides={**inherited, **overrides}))
    return new_run_id


def _agent_named(app: Any, name: str) -> type[Agent]:
    found = [a for a in getattr(app, "router").agents
             if isinstance(a, type) and issubclass(a, Agent) and (a.agent_name or a.__name__) == name]
    if len(found) != 1:
        raise InvalidArgument(f"the application has {len(found)} AI agents named {name!r}; pass fork(agent=...)")
    return found[0]

