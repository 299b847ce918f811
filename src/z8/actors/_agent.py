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
from typing import Any, ClassVar

import msgspec

from z8.errors import (
    AgentCrashed,
    ConcurrencyConflict,
    InvalidDecision,
    Rejected,
    TransitionBlocked,
    WrongExpectedVersion,
)
from z8.ids import uuid7
from z8.journal import NO_STREAM, Journal

from ._actor import Actor, ActorContext, ReplyError
from ._machine import Machine
from ._system import TransitionRefused

__all__ = ["Agent", "Decision", "Rejection", "CommandContext", "reject", "fold", "fold_decision"]


class Decision(msgspec.Struct, frozen=True):
    """What ``decide`` returns when it accepts a command: events to append, and the reply."""

    events: list[Any] = []
    reply: Any = None


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

    def decide(self, state: Any, command: Any, ctx: CommandContext) -> Decision | Rejection:
        """Pure: return a Decision (events, reply) or a Rejection. No I/O, no clock."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement decide()")

    def evolve(self, state: Any, event: Any) -> Any:
        """Pure: the state after ``event``. Must not raise for events decide produced."""
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

    async def on_start(self, ctx: ActorContext) -> None:
        self._z8_ctx = ctx
        self._z8_journal: Journal = ctx._cell.core.journal  # noqa: SLF001 - the agent's own runtime
        self._z8_state, self._z8_version, snapshot_version = _rehydrate(self, self._z8_journal, ctx.name)
        # Count from the stored snapshot, not from this process's start: an agent restarted
        # often must still snapshot every N events of its stream.
        self._z8_since_snapshot = self._z8_version - snapshot_version
        self._z8_idle: asyncio.TimerHandle | None = None
        self._arm_idle()

    async def on_stop(self, ctx: ActorContext) -> None:
        if self._z8_idle is not None:
            self._z8_idle.cancel()

    async def receive(self, message: Any, ctx: ActorContext) -> Any:
        self._arm_idle()
        for _ in range(self.agent_max_retries + 1):
            try:
                return await self._handle(message, ctx)
            except WrongExpectedVersion:  # another writer moved the stream: catch up, decide again
                self._catch_up()
        return ReplyError(ConcurrencyConflict(
            f"{ctx.name}: the stream kept moving under {self.agent_max_retries + 1} attempts; nothing was written"
        ))

    async def _handle(self, command: Any, ctx: ActorContext) -> Any:
        cctx = CommandContext(ctx._cell.core.clock(), uuid7(), ctx.name, self._z8_version)  # noqa: SLF001
        try:
            outcome = self.decide(self._z8_state, command, cctx)
        except Exception as error:
            raise AgentCrashed(f"{ctx.path}: decide raised on {type(command).__name__}: {error!r}") from error
        writes = isinstance(outcome, Decision) and bool(outcome.events)
        if not writes:
            # An append would catch a stale state by its expected version; an answer that
            # writes nothing must check that no other process moved the stream meanwhile.
            actual = self._z8_journal.stream_version(ctx.name)
            if actual != self._z8_version:
                raise WrongExpectedVersion(ctx.name, self._z8_version, actual)
        if isinstance(outcome, Rejection):
            return ReplyError(Rejected(outcome.reason, outcome.detail))
        if not isinstance(outcome, Decision):
            return ReplyError(InvalidDecision(
                f"{ctx.path}: decide returned {type(outcome).__name__}; return Decision(...) or reject(...)"
            ))
        if not outcome.events:
            return outcome.reply
        try:
            scratch = fold_decision(self, self._z8_state, outcome.events, ctx.path)
        except InvalidDecision as invalid:
            blocked = invalid.__cause__
            if isinstance(blocked, TransitionBlocked):
                ctx._cell.core.system.record(TransitionRefused(ctx.path, blocked.source, blocked.target))  # noqa: SLF001
            return ReplyError(invalid)
        written = await self._z8_journal.append(
            ctx.name, outcome.events, self._z8_version or NO_STREAM,
            causation_id=cctx.command_id, correlation_id=cctx.command_id, actor=ctx.path,
        )
        self._z8_state, self._z8_version = scratch, written[-1].version
        self._maybe_snapshot(ctx.name, len(written))
        return outcome.reply

    def _catch_up(self) -> None:
        journal, stream = self._z8_journal, self._z8_ctx.name
        for envelope in journal.read_stream(stream, self._z8_version + 1):
            self._z8_state = self.evolve(self._z8_state, journal.decode(envelope))
            self._z8_version = envelope.version

    def _maybe_snapshot(self, stream: str, written: int) -> None:
        every = self.snapshot_every
        if not every:
            return
        self._z8_since_snapshot += written
        if self._z8_since_snapshot >= every:
            self._z8_since_snapshot = 0
            data = msgspec.msgpack.encode(self._z8_state)
            # Not awaited: the writer thread stores it after the events; a lost snapshot
            # only means a longer rehydration.
            asyncio.get_running_loop().create_task(
                self._z8_journal.save_snapshot(stream, self._z8_version, data, self.agent_state_schema)
            )

    def _arm_idle(self) -> None:
        if self.idle_timeout is None:
            return
        if self._z8_idle is not None:
            self._z8_idle.cancel()
        loop = asyncio.get_running_loop()
        self._z8_idle = loop.call_later(self.idle_timeout, self._passivate)

    def _passivate(self) -> None:
        if len(self._z8_ctx._cell.mailbox) == 0:  # noqa: SLF001 - nothing waiting: leave memory
            self._z8_ctx.stop()


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


def rehydrate(agent: Agent, journal: Journal, stream: str) -> tuple[Any, int]:
    """The agent's state and version from its newest usable snapshot plus later events."""
    state, version, _ = _rehydrate(agent, journal, stream)
    return state, version


def _rehydrate(agent: Agent, journal: Journal, stream: str) -> tuple[Any, int, int]:
    """(state, version, version of the snapshot used — 0 for none)."""
    state, base = agent.State(), 0
    snapshot = journal.load_snapshot(stream)
    if snapshot is not None and snapshot.schema == agent.agent_state_schema:
        try:
            state, base = msgspec.msgpack.decode(snapshot.data, type=agent.State), snapshot.version
        except msgspec.ValidationError:
            state, base = agent.State(), 0  # shape changed without a schema bump: rebuild
    version = base
    for envelope in journal.read_stream(stream, version + 1):
        state = agent.evolve(state, journal.decode(envelope))
        version = envelope.version
    return state, version, base


def fold(agent: type[Agent] | Agent, events: list[Any], state: Any = None) -> Any:
    """Fold ``events`` with the agent's ``evolve`` from ``state`` (default: a fresh State)."""
    instance = agent if isinstance(agent, Agent) else agent.__new__(agent)
    state = instance.State() if state is None else state
    for event in events:
        state = instance.evolve(state, event)
    return state
