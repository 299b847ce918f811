"""Event-sourced agents: state folded from a stream, changed only by pure decisions.

An agent's identity is its actor name, and its stream is that identity. A command goes
through ``decide(state, command, ctx)`` (pure: no I/O, no clock but ``ctx.now``), whose
events are folded into a scratch state with ``evolve`` *before* anything is written;
only then are they appended with the version the decision saw, and the state moves on.
On (re)start the agent rehydrates from its newest usable snapshot plus the events after
it, so a crash or a restart resumes exactly where the journal says it was.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
from typing import Any, ClassVar

import msgspec

from z8.errors import (
    AgentCrashed,
    Z8Error,
    ConcurrencyConflict,
    InvalidDecision,
    Rejected,
    TransitionBlocked,
    VaultError,
    WrongExpectedVersion,
)
from z8.ids import uuid7
from z8.journal import NO_STREAM, Journal

from ._actor import Actor, ActorContext, ReplyError
from ._ledger import (
    RECORD_TYPES,
    CancelTimer,
    Deliver,
    EffectRecord,
    Ledger,
    Timer,
    TimerCancelled,
    TimerSet,
    admissible,
)
from ._machine import Machine
from ._system import TransitionRefused

__all__ = ["Agent", "Decision", "Rejection", "CommandContext", "reject", "fold", "fold_decision"]


class Decision(msgspec.Struct, frozen=True):
    """What ``decide`` returns when it accepts a command.

    ``events`` are appended, with an intent per ``effects`` entry (``Call``) and a record
    per ``timers`` entry (``Timer``/``CancelTimer``), in one atomic append; ``reply`` goes
    back to the caller once that append is durable. Effects run only after it.
    """

    events: list[Any] = []
    reply: Any = None
    effects: list[Any] = []
    timers: list[Any] = []


class Rejection(msgspec.Struct, frozen=True):
    """What ``decide`` returns to refuse a command; the caller gets ``Rejected(reason)``."""

    reason: str
    detail: dict[str, Any] = {}


def reject(reason: str, **detail: Any) -> Rejection:
    """Refuse a command: ``return z8.reject("insufficient_funds", balance=10)``."""
    return Rejection(reason, detail)


class CommandContext(msgspec.Struct, frozen=True):
    """What a decision may know besides state and command. ``now`` (Unix ns) is taken by
    the runtime when the command is handled, never read from a clock inside ``decide``."""

    now: int
    command_id: str
    stream: str
    version: int
    """The stream version the decision is based on."""
    causation_id: str | None = None
    correlation_id: str | None = None

    def effect_id(self, index: int) -> str:
        """The id (and idempotency key) ``Decision.effects[index]`` will get: the decision's
        first record lands at ``version + 1``."""
        return f"{self.stream}/{self.version + 1}/{index}"


class Agent(Actor):
    """Subclass with a ``State`` Struct (with defaults) and pure ``decide``/``evolve``.

    ``evolve`` must not raise on events ``decide`` produced; a decision whose events do
    not fold (``evolve`` raises, or the bound machine forbids the move) fails the command
    with ``InvalidDecision`` and writes nothing. An exception inside ``decide`` crashes
    the agent (the caller sees ``AgentCrashed``); its supervisor restarts it from the
    journal. Framework settings carry the ``agent_`` prefix.
    """

    State: ClassVar[type[msgspec.Struct]]
    agent_machine: ClassVar[Machine | None] = None
    """An explicit FSM over ``agent_state_field`` of the state."""
    agent_state_field: ClassVar[str] = "status"
    agent_state_schema: ClassVar[int] = 1
    """Raise when ``State`` changes shape: snapshots of older schemas are ignored."""
    snapshot_every: ClassVar[int | None] = None
    """Save a snapshot after every N events (None: never)."""
    idle_timeout: ClassVar[float | None] = None
    """Seconds without a message after which the agent stops itself (passivation)."""
    agent_max_retries: ClassVar[int] = 3
    """Decide-again attempts when another writer moved the stream first."""
    agent_effects: ClassVar[tuple[Any, ...]] = ()
    """The effects this agent's decisions may call; the application registers them."""
    agent_keeps_done: ClassVar[bool] = False
    """Keep succeeded reversible effects in the ledger (sagas compensate them)."""

    def decide(self, state: Any, command: Any, ctx: CommandContext) -> Decision | Rejection:
        """Pure: return a Decision (events, reply) or a Rejection. No I/O, no clock."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement decide()")

    def evolve(self, state: Any, event: Any) -> Any:
        """Pure: the state after ``event``. Must not raise for events decide produced, nor
        for ``z8.ERASED`` in their ``z8.Personal`` fields (what those read as once the
        subject is erased: keep it as a value, do not call str or int methods on it)."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement evolve()")

    # --- the runtime side ----------------------------------------------------------------

    @property
    def state(self) -> Any:
        """The current folded state (read-only by convention)."""
        return self._z8_state

    @property
    def version(self) -> int:
        """The stream version the state reflects."""
        return self._z8_version

    @property
    def ledger(self) -> Ledger:
        """The runtime's share of the state: pending effects and armed timers (read-only)."""
        return self._z8_ledger

    async def on_start(self, ctx: ActorContext) -> None:
        self._z8_ctx = ctx
        self._z8_journal: Journal = ctx._cell.core.journal  # noqa: SLF001 - the agent's own runtime
        self._z8_state, self._z8_ledger, self._z8_version, snapshot_version = _rehydrate(
            self, self._z8_journal, ctx.name
        )
        # Count from the stored snapshot, not from this process's start: an agent restarted
        # often must still snapshot every N events of its stream.
        self._z8_since_snapshot = self._z8_version - snapshot_version
        self._z8_loop = asyncio.get_running_loop()
        self._z8_idle: asyncio.TimerHandle | None = None
        self._z8_active = self._z8_loop.time()
        self._arm_idle(self.idle_timeout)

    async def on_stop(self, ctx: ActorContext) -> None:
        if self._z8_idle is not None:
            self._z8_idle.cancel()

    async def receive(self, message: Any, ctx: ActorContext) -> Any:
        self._z8_active = self._z8_loop.time()  # the idle timer, when it fires, waits out the rest
        for _ in range(self.agent_max_retries + 1):
            try:
                return await self._handle(message, ctx)
            except WrongExpectedVersion:  # another writer moved the stream: catch up, decide again
                self._catch_up()
        return ReplyError(ConcurrencyConflict(
            f"{ctx.name}: the stream kept moving under {self.agent_max_retries + 1} attempts; nothing was written"
        ))

    async def _handle(self, message: Any, ctx: ActorContext) -> Any:
        core = ctx._cell.core  # noqa: SLF001 - the agent's own runtime
        lead: list[EffectRecord] = []
        causation = correlation = None
        if type(message) is Deliver:
            if not admissible(self._z8_ledger, message.records[0]):
                return False  # already recorded, cancelled, or not awaiting this act
            lead, causation, correlation = message.records, message.causation_id, message.correlation_id
            if message.message is None:
                await self._write(ctx, lead, [], lead, causation, correlation, self._z8_state)
                return True
            message = message.message
        cctx = CommandContext(core.clock(), uuid7(), ctx.name, self._z8_version, causation, correlation)
        try:
            outcome = self._z8_decide(self._z8_state, message, cctx)
        except Exception as error:
            if lead:  # the runtime's fact (an outcome, a fired timer) is kept even so
                await self._write(ctx, lead, [], lead, causation, correlation, self._z8_state)
            raise AgentCrashed(f"{ctx.path}: decide raised on {type(message).__name__}: {error!r}") from error
        writes = bool(lead) or (isinstance(outcome, Decision) and bool(outcome.events or outcome.effects or outcome.timers))
        if not writes:
            # An append would catch a stale state by its expected version; an answer that
            # writes nothing must check that no other process moved the stream meanwhile.
            actual = self._z8_journal.stream_version(ctx.name)
            if actual != self._z8_version:
                raise WrongExpectedVersion(ctx.name, self._z8_version, actual)
        error: BaseException | None = None
        if isinstance(outcome, Rejection):
            error = Rejected(outcome.reason, outcome.detail)
        elif not isinstance(outcome, Decision):
            error = InvalidDecision(
                f"{ctx.path}: decide returned {type(outcome).__name__}; return Decision(...) or reject(...)"
            )
        else:
            records = []
            try:
                records = lead + self._records(outcome, cctx, core)
                scratch = fold_decision(self, self._z8_state, outcome.events, ctx.path)
            except InvalidDecision as invalid:
                _discard(core, records)
                blocked = invalid.__cause__
                if isinstance(blocked, TransitionBlocked):
                    core.system.record(TransitionRefused(ctx.path, blocked.source, blocked.target))
                error = invalid
        if error is not None:
            if lead:  # a refused outcome is still an outcome: journal it alone
                await self._write(ctx, lead, [], lead, causation, correlation, self._z8_state)
                return True
            return ReplyError(error)
        if records or outcome.events:
            try:
                await self._write(ctx, lead, outcome.events, records, causation or cctx.command_id,
                                  correlation or cctx.command_id, scratch)
            except VaultError as refused:  # personal data the journal will not record (an erased subject)
                _discard(core, records)  # nothing was written
                if lead:  # the runtime's fact (an outcome, a fired timer) is kept even so
                    await self._write(ctx, lead, [], lead, causation, correlation, self._z8_state)
                    return True
                return ReplyError(refused)
            except BaseException:
                _discard(core, records)  # nothing was written: give back what the gate held
                raise
        return True if lead else outcome.reply

    def _z8_decide(self, state: Any, message: Any, cctx: CommandContext) -> Any:
        """The decision for ``message`` (subclasses of the runtime, like Saga, intercept)."""
        return self.decide(state, message, cctx)

    def _records(self, outcome: Decision, cctx: CommandContext, core: Any) -> list[EffectRecord]:
        """The intents and timer records of a decision, validated; InvalidDecision if not."""
        if not outcome.effects and not outcome.timers:
            return []
        first = self._z8_version + 1
        records: list[EffectRecord] = []
        if outcome.effects:
            host = getattr(core, "effects", None)
            if host is None:
                raise InvalidDecision(
                    f"{cctx.stream}: decide returned effects, but this runtime runs no outbox; "
                    "run the agent in a z8.Application"
                )
            for index, call in enumerate(outcome.effects):
                try:
                    records.append(host.intent(type(self).__name__, cctx, call, f"{cctx.stream}/{first}/{index}",
                                               compensates=getattr(call, "compensates", None),
                                               policy=self._z8_ledger.policy))
                except Z8Error as bad:
                    host.discard(records)
                    raise InvalidDecision(f"{cctx.stream}: effect #{index}: {bad}; nothing was written") from bad
        for index, timer in enumerate(outcome.timers):
            try:
                record = self._timer_record(timer, index, first, cctx)
            except InvalidDecision:
                _discard(core, records)  # the intents built above will not be written
                raise
            if type(record) is TimerCancelled and record.timer_id not in self._z8_ledger.timers and not any(
                    type(r) is TimerSet and r.timer_id == record.timer_id for r in records):
                continue  # cancelling a timer that is not armed changes nothing: write nothing
            records.append(record)
        return records

    def _timer_record(self, timer: Any, index: int, first: int, cctx: CommandContext) -> EffectRecord:
        where = f"{cctx.stream}: timer #{index}"
        if isinstance(timer, CancelTimer):
            return TimerCancelled(timer.id)
        if not isinstance(timer, Timer):
            raise InvalidDecision(f"{where} is a {type(timer).__name__}; use z8.Timer(...) or z8.CancelTimer(id)")
        if (timer.after is None) == (timer.at is None):
            raise InvalidDecision(f"{where}: give exactly one of after= (seconds) or at= (ns or datetime)")
        if timer.after is not None:
            if (isinstance(timer.after, bool) or not isinstance(timer.after, (int, float))
                    or not 0 <= timer.after <= _MAX_DELAY):
                raise InvalidDecision(f"{where}: after must be seconds from 0 to {_MAX_DELAY:.0f}, got {timer.after!r}")
            due = cctx.now + int(timer.after * 1_000_000_000)
        elif isinstance(timer.at, _dt.datetime):
            if timer.at.tzinfo is None:
                raise InvalidDecision(f"{where}: at must be an aware datetime (give it a tzinfo)")
            due = int(timer.at.timestamp() * 1_000_000_000)
        elif isinstance(timer.at, int) and not isinstance(timer.at, bool):
            due = timer.at
        else:
            raise InvalidDecision(f"{where}: at must be Unix ns (int) or an aware datetime, got {timer.at!r}")
        if not 0 <= due < 2**63:
            raise InvalidDecision(f"{where}: its due time {due} ns is outside the journal's range (0 to 2**63 - 1)")
        try:
            name, schema, data = self._z8_journal.types.encode(timer.message, self._z8_journal.personal)
        except Z8Error as bad:
            raise InvalidDecision(f"{where}: its message cannot be journaled: {bad}") from bad
        timer_id = timer.id if timer.id is not None else f"t{first}.{index}"
        if not isinstance(timer_id, str) or not timer_id:
            raise InvalidDecision(f"{where}: id must be a non-empty str, got {timer_id!r}")
        return TimerSet(timer_id, due, name, schema, data)

    async def _write(
        self, ctx: ActorContext, lead: list[EffectRecord], events: list[Any], records: list[EffectRecord],
        causation: str | None, correlation: str | None, scratch: Any,
    ) -> None:
        """Append ``events`` then ``records`` (``lead`` first among them) and move on."""
        batch = [*lead, *events, *records[len(lead):]] if lead else [*events, *records]
        written = await self._z8_journal.append(
            ctx.name, batch, self._z8_version or NO_STREAM,
            causation_id=causation, correlation_id=correlation, actor=ctx.path,
        )
        # in place, once durable (a rejected append changed nothing; the actor runs one
        # message at a time, so nothing saw the ledger in between)
        for record in records:
            self._z8_ledger.apply(record, keep_done=self.agent_keeps_done)
        self._z8_state, self._z8_version = scratch, written[-1].version
        self._maybe_snapshot(ctx.name, len(written))

    def _catch_up(self) -> None:
        journal, stream = self._z8_journal, self._z8_ctx.name
        for envelope in journal.read_stream(stream, self._z8_version + 1):
            self._z8_state, self._z8_ledger = _fold_envelope(self, journal, envelope, self._z8_state, self._z8_ledger)
            self._z8_version = envelope.version

    def _maybe_snapshot(self, stream: str, written: int) -> None:
        every = self.snapshot_every
        if not every:
            return
        self._z8_since_snapshot += written
        if self._z8_since_snapshot >= every:
            self._z8_since_snapshot = 0
            try:  # z8.Personal fields sealed, as in events
                data = self._z8_journal.personal.dumps(self._z8_state)
            except VaultError:  # personal data of an erased subject (or of none): the events rebuild it
                return
            ledger = self._z8_ledger
            if ledger.effects or ledger.timers or ledger.done or ledger.saga != "running" or ledger.policy:
                data = _SNAPSHOT_ENCODER.encode(_AgentSnapshot(msgspec.Raw(data), ledger))
            # Not awaited: the writer thread stores it after the events; a lost snapshot
            # only means a longer rehydration.
            asyncio.get_running_loop().create_task(
                self._z8_journal.save_snapshot(stream, self._z8_version, data, self.agent_state_schema)
            )

    def _arm_idle(self, after: float | None) -> None:
        """One timer per idle period, not one per message: ``receive`` only notes the time
        of the last message, and the timer, when it fires early, waits out the rest."""
        if after is not None:
            self._z8_idle = self._z8_loop.call_later(after, self._passivate)

    def _passivate(self) -> None:
        assert self.idle_timeout is not None
        rest = self._z8_active + self.idle_timeout - self._z8_loop.time()
        if rest > 0:  # a message came since the timer was set
            self._arm_idle(rest)
        elif len(self._z8_ctx._cell.mailbox) == 0:  # noqa: SLF001 - nothing waiting: leave memory
            self._z8_ctx.stop()
        else:
            self._arm_idle(self.idle_timeout)


def fold_decision(agent: Agent, state: Any, events: list[Any], path: str) -> Any:
    """Fold a decision's events into a scratch state, enforcing the agent's machine.

    Raises ``InvalidDecision`` (caused by the ``evolve`` error or a ``TransitionBlocked``)
    when the events do not fold; the state passed in is never modified.
    """
    machine = agent.agent_machine
    field = agent.agent_state_field
    for event in events:
        before = getattr(state, field, None) if machine is not None else None
        try:
            state = agent.evolve(state, event)
        except Exception as error:
            raise InvalidDecision(
                f"{path}: evolve raised on {type(event).__name__} ({error!r}); nothing was written"
            ) from error
        if machine is not None:
            after = getattr(state, field, None)
            if after != before and not machine.allows(before, after):
                blocked = TransitionBlocked(path, before, after, list(machine.transitions.get(before, ())))
                raise InvalidDecision(f"{blocked}; nothing was written") from blocked
    return state


def _discard(core: Any, records: list[EffectRecord]) -> None:
    """Intents that will not be journaled: let the outbox give back their budget holds."""
    host = getattr(core, "effects", None)
    if host is not None and records:
        host.discard(records)


class _AgentSnapshot(msgspec.Struct, array_like=True, tag="z8.agent"):
    """An agent's snapshot when its runtime ledger is not empty: State (encoded) and
    ledger. With an empty ledger the snapshot is the encoded State alone."""

    state: msgspec.Raw
    ledger: Ledger


_SNAPSHOT_ENCODER = msgspec.msgpack.Encoder()
_MAX_DELAY = 100 * 365.25 * 86400.0
"""The longest timer delay accepted (a century, in seconds): beyond it, use at=."""


def rehydrate(agent: Agent, journal: Journal, stream: str) -> tuple[Any, int]:
    """The agent's state and version from its newest usable snapshot plus later events."""
    state, _, version, _ = _rehydrate(agent, journal, stream)
    return state, version


def _fold_envelope(agent: Agent, journal: Journal, envelope: Any, state: Any, ledger: Ledger) -> tuple[Any, Ledger]:
    """Fold one stored event: a ``z8.`` record into the ledger, anything else through evolve."""
    if envelope.type in RECORD_TYPES:
        ledger.apply(journal.decode(envelope), keep_done=agent.agent_keeps_done)
        return state, ledger
    return agent.evolve(state, journal.decode(envelope)), ledger


def _rehydrate(agent: Agent, journal: Journal, stream: str) -> tuple[Any, Ledger, int, int]:
    """(state, ledger, version, version of the snapshot used — 0 for none)."""
    journal.personal.check(agent.State, f"{type(agent).__qualname__}.State")  # VaultError for a bad declaration
    state, ledger, base = agent.State(), Ledger(), 0
    snapshot = journal.load_snapshot(stream)
    if snapshot is not None and snapshot.schema == agent.agent_state_schema:
        try:
            stored = msgspec.msgpack.decode(snapshot.data, type=_AgentSnapshot)
            state = journal.personal.loads(stored.state, agent.State)
            ledger, base = stored.ledger, snapshot.version
        except msgspec.ValidationError:
            try:  # an empty ledger: the State alone
                state, base = journal.personal.loads(snapshot.data, agent.State), snapshot.version
            except msgspec.ValidationError:
                state, ledger, base = agent.State(), Ledger(), 0  # shape changed without a schema bump
    version = base
    for envelope in journal.read_stream(stream, version + 1):
        state, ledger = _fold_envelope(agent, journal, envelope, state, ledger)
        version = envelope.version
    return state, ledger, version, base


def fold(agent: type[Agent] | Agent, events: list[Any], state: Any = None) -> Any:
    """Fold ``events`` with the agent's ``evolve`` from ``state`` (default: a fresh State)."""
    instance = agent if isinstance(agent, Agent) else agent.__new__(agent)
    state = instance.State() if state is None else state
    for event in events:
        state = instance.evolve(state, event)
    return state
