"""The data of durable effects: what a decision asks for, and what the journal records.

It lives with the actors (msgspec only) so the event-sourced ``Agent`` can journal its
intents and fold its runtime ledger; ``z8.effects`` re-exports it and runs the intents.

A decision asks with :class:`Call` (run an effect), :class:`Timer` and
:class:`CancelTimer`. The runtime journals ``z8.``-named records in the agent's own
stream, in the same atomic append as the decision's events:

- ``EffectIntended`` before anything runs (the outbox), with the policy verdict;
- ``EffectSucceeded`` / ``EffectFailed`` / ``EffectUnknown`` / ``EffectStuck`` as outcomes
  (the first three are also delivered to ``decide`` as messages), ``EffectRetrying`` for
  each retried attempt, ``EffectApproved`` and ``EffectRedriven`` for human acts;
- ``TimerSet`` / ``TimerFired`` / ``TimerCancelled``.

The :class:`Ledger` folded from these records is the runtime's part of an agent's state
(pending effects and timers); ``evolve`` never sees them.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, ClassVar

import msgspec

__all__ = [
    "Call", "Timer", "CancelTimer",
    "EffectRecord", "EffectIntended", "EffectSucceeded", "EffectFailed", "EffectUnknown", "EffectStuck",
    "EffectRetrying", "EffectApproved", "EffectRedriven", "TimerSet", "TimerFired", "TimerCancelled",
    "ScheduleFired", "SagaCompensating", "SagaEnded", "Alert", "OutboxStarted", "OutboxStopped", "PolicyMigrated",
    "Ledger", "PendingEffect", "DoneEffect", "RECORD_TYPES", "status_after",
    "INTENDED", "PARKED", "UNKNOWN", "STUCK", "DEAD",
]

# statuses of an effect that has no final outcome yet
INTENDED = "intended"   # journaled, to run (or running)
PARKED = "parked"       # held by a policy gate until approved
UNKNOWN = "unknown"     # ran, but whether it took effect is not known: being resolved
STUCK = "stuck"         # could not be resolved safely: a human must redrive or settle it
DEAD = "dead"           # failed after every retry: dead-lettered until redriven or settled


class Call(msgspec.Struct, frozen=True):
    """Ask the runtime to run ``effect`` with ``request`` once this decision is durable.

    ``effect`` is an :class:`~z8.effects.Effect` (or its name). The effect's id, and the
    idempotency key handed to the counterparty, is ``"{stream}/{version}/{index}"``: the
    stream version of the decision's first record and the call's index in
    ``Decision.effects``. It is the same on every retry and every replay.
    """

    effect: Any
    request: Any = None


class Timer(msgspec.Struct, frozen=True):
    """Deliver ``message`` to this agent at ``at`` or ``after`` seconds from ``ctx.now``.

    Durable: journaled with the decision, re-armed after a restart, and fired at start
    when it fell due while nothing ran. ``message`` must be a registered event type (it is
    journaled). Setting a timer with an ``id`` already set replaces it.
    """

    message: Any
    after: float | None = None
    at: int | _dt.datetime | None = None
    """Unix time in ns, or an aware datetime."""
    id: str | None = None


class CancelTimer(msgspec.Struct, frozen=True):
    """Cancel this agent's timer ``id`` (no-op when it already fired or was never set)."""

    id: str


class EffectRecord(msgspec.Struct, frozen=True):
    """Base of the ``z8.`` records about effects and timers journaled in an agent's stream."""

    z8_name: ClassVar[str] = ""


class EffectIntended(EffectRecord, frozen=True):
    """An effect a decision asked for, journaled before it runs, with its policy verdict."""

    effect_id: str
    effect: str
    kind: str
    request: Any
    idempotent: bool = False
    verdict: str = "allow"
    """``allow``, ``deny`` or ``approval``."""
    reason: str = ""
    rule: str = ""
    policy_version: str = ""
    approvers: list[str] = []
    quorum: int = 1
    approval_timeout: float | None = None
    not_before: int | None = None
    """Unix ns before which it must not run (a delayed job)."""
    queue: str | None = None
    priority: int = 0
    compensates: str | None = None
    """For a saga's compensation: the id of the effect it undoes."""
    decided_at: int = 0
    """``ctx.now`` of the decision (Unix ns): approval deadlines count from it."""
    capability: str = ""
    """The capability the policy checked (the effect's, by default its name)."""
    error: str = ""
    """For a denial: what the agent receives it as (``PolicyDenied``, ``BudgetExceeded``)."""
    budgets: dict[str, float] = {}
    """Amounts reserved at admission, by budget account (see ``z8.policies.Budget``)."""


class EffectSucceeded(EffectRecord, frozen=True):
    """The effect took effect; ``result`` is what it returned (or what ``resolve`` found)."""

    effect_id: str
    effect: str
    result: Any = None
    attempts: int = 1
    resolved: bool = False
    """True when the outcome was learnt from the effect's ``resolve`` status query."""
    settled_by: str | None = None
    """Who settled it by hand (``app.settle``), if a human did."""
    charged: dict[str, float] = {}
    """The real cost charged to each budget account that reserved for it."""
    elapsed: float = 0.0
    """Seconds from the first attempt's start to the outcome (0 when not measured)."""


class EffectFailed(EffectRecord, frozen=True):
    """The effect did not take effect. ``exhausted``: every retry failed (dead-lettered)."""

    effect_id: str
    effect: str
    error: str
    message: str = ""
    attempts: int = 0
    exhausted: bool = False
    settled_by: str | None = None


class EffectUnknown(EffectRecord, frozen=True):
    """The effect ran but no answer came back (timeout, lost reply): being resolved."""

    effect_id: str
    effect: str
    reason: str
    attempts: int = 1


class EffectStuck(EffectRecord, frozen=True):
    """The outcome cannot be learnt safely; parked for a human, never re-fired on its own."""

    effect_id: str
    effect: str
    reason: str


class EffectRetrying(EffectRecord, frozen=True):
    """An attempt failed with a retryable error; the next runs after ``delay`` seconds."""

    effect_id: str
    effect: str
    attempt: int
    error: str
    message: str
    delay: float


class EffectApproved(EffectRecord, frozen=True):
    """A human's verdict on an effect held for approval (``approve`` False: denied)."""

    effect_id: str
    by: str
    approve: bool = True
    reason: str = ""
    final: bool = True
    """Whether this approval completes the quorum (an approval short of it changes nothing)."""


class EffectRedriven(EffectRecord, frozen=True):
    """A dead-lettered or stuck effect re-issued by ``app.redrive`` with the same key."""

    effect_id: str
    by: str


class TimerSet(EffectRecord, frozen=True):
    """A durable timer armed by a decision: ``message`` (encoded, of ``message_type``) is
    handed back to the agent at ``due`` (Unix ns), once, across restarts."""

    timer_id: str
    due: int
    message_type: str
    message_schema: int
    message: bytes


class TimerFired(EffectRecord, frozen=True):
    """The timer ``timer_id`` fired (journaled with the agent's decision on its message)."""

    timer_id: str
    due: int


class TimerCancelled(EffectRecord, frozen=True):
    """The timer ``timer_id`` was cancelled by a decision (``CancelTimer``)."""

    timer_id: str


class ScheduleFired(EffectRecord, frozen=True):
    """A schedule's firing for ``due`` (Unix ns), enqueued as job ``key``."""

    schedule: str
    due: int
    key: str


class SagaCompensating(EffectRecord, frozen=True):
    """The saga is undoing what it did, most recent first, because of ``reason``."""

    reason: str
    pending: list[str] = []
    """The ids of the effects to compensate, in the order they will be undone."""


class SagaEnded(EffectRecord, frozen=True):
    """The saga's end: ``completed``, ``compensated`` or ``stuck`` (with the reason)."""

    status: str
    reason: str = ""


class OutboxStarted(EffectRecord, frozen=True):
    """An outbox began running effects (in ``$outbox``)."""


class OutboxStopped(EffectRecord, frozen=True):
    """An outbox stopped cleanly; ``unstarted`` effects had no attempt in flight, so the
    next outbox runs them as new instead of resolving them as possibly done."""

    unstarted: list[str] = []


class PolicyMigrated(EffectRecord, frozen=True):
    """The agent's effects are judged, from now on, by policy version ``to`` (an explicit
    migration: an agent otherwise keeps the version its first gated effect was judged by)."""

    previous: str
    to: str
    by: str
    reason: str = ""


class Alert(EffectRecord, frozen=True):
    """Something a human must look at (a saga stuck on a failed compensation)."""

    kind: str
    stream: str
    detail: str


RECORD_TYPES: dict[str, type[EffectRecord]] = {
    f"z8.{cls.__name__}": cls
    for cls in (
        EffectIntended, EffectSucceeded, EffectFailed, EffectUnknown, EffectStuck, EffectRetrying,
        EffectApproved, EffectRedriven, TimerSet, TimerFired, TimerCancelled, ScheduleFired,
        SagaCompensating, SagaEnded, Alert, OutboxStarted, OutboxStopped, PolicyMigrated,
    )
}
for _name, _cls in RECORD_TYPES.items():
    _cls.z8_name = _name


def status_after(status: str | None, record: EffectRecord) -> str | None:
    """An effect's status after ``record`` (``None``: it has a final outcome, or none yet)."""
    kind = type(record)
    if kind is EffectIntended:
        return PARKED if record.verdict == "approval" else INTENDED  # type: ignore[attr-defined]
    if status is None:
        return None
    if kind is EffectSucceeded:
        return None
    if kind is EffectFailed:
        return DEAD if record.exhausted else None  # type: ignore[attr-defined]
    if kind is EffectUnknown:
        return UNKNOWN
    if kind is EffectStuck:
        return STUCK
    if kind is EffectApproved:
        return INTENDED if record.approve and record.final else status  # type: ignore[attr-defined]
    if kind is EffectRedriven:
        return INTENDED
    return status


class PendingEffect(msgspec.Struct, array_like=True):
    effect: str
    kind: str
    status: str
    compensates: str | None = None


class DoneEffect(msgspec.Struct, array_like=True, frozen=True):
    """A reversible effect that succeeded: what a saga would compensate."""

    effect_id: str
    effect: str
    result: Any


class Ledger(msgspec.Struct):
    """The runtime's share of an agent's state, folded from its ``z8.`` records."""

    effects: dict[str, PendingEffect] = {}
    """Effects without a final outcome, by id."""
    timers: dict[str, int] = {}
    """Armed timers: id → due (Unix ns)."""
    done: list[DoneEffect] = []
    """Succeeded reversible effects, oldest first (kept for sagas only)."""
    saga: str = "running"
    """A saga's status: running, compensating, completed, compensated, stuck."""
    policy: str = ""
    """The policy version the agent's effects are judged by (pinned by its first gated
    effect, moved only by ``PolicyMigrated``)."""

    def apply(self, record: EffectRecord, *, keep_done: bool = False) -> None:
        """Fold one record in place."""
        kind = type(record)
        if kind is TimerSet:
            self.timers[record.timer_id] = record.due  # type: ignore[attr-defined]
            return
        if kind is TimerFired or kind is TimerCancelled:
            self.timers.pop(record.timer_id, None)  # type: ignore[attr-defined]
            return
        if kind is SagaCompensating:
            self.saga = "compensating"
            return
        if kind is SagaEnded:
            self.saga = record.status  # type: ignore[attr-defined]
            return
        if kind is PolicyMigrated:
            self.policy = record.to  # type: ignore[attr-defined]
            return
        if kind is EffectIntended and not self.policy:
            self.policy = record.policy_version  # type: ignore[attr-defined]
        effect_id = getattr(record, "effect_id", None)
        if effect_id is None:
            return
        if kind is EffectIntended:
            pending = PendingEffect(record.effect, record.kind, INTENDED, record.compensates)  # type: ignore[attr-defined]
            status = status_after(None, record)
        else:
            pending = self.effects.get(effect_id)
            if pending is None:
                return
            status = status_after(pending.status, record)
        if status is None:
            self.effects.pop(effect_id, None)
            if keep_done and kind is EffectSucceeded:
                if pending.compensates is not None:  # undone: a saga must not compensate it again
                    self.done = [d for d in self.done if d.effect_id != pending.compensates]
                elif pending.kind == "reversible":
                    self.done.append(DoneEffect(effect_id, pending.effect, record.result))  # type: ignore[attr-defined]
        else:
            pending.status = status
            self.effects[effect_id] = pending


class Deliver(msgspec.Struct):
    """A runtime message to an agent: journal ``records`` and, when ``message`` is set,
    decide on it in the same atomic append (an outcome, a fired timer, a human's act).

    The agent refuses it (returns False, writes nothing) when its ledger shows the first
    record no longer applies: an outcome already recorded, a timer cancelled or re-set,
    an approval for an effect not awaiting one.
    """

    records: list[EffectRecord]
    message: Any = None
    causation_id: str | None = None
    correlation_id: str | None = None


def admissible(ledger: Ledger, record: EffectRecord) -> bool:
    """Whether ``record`` may be journaled now, given what the ledger already holds."""
    kind = type(record)
    if kind is PolicyMigrated:
        return ledger.policy == record.previous  # type: ignore[attr-defined]
    if kind is TimerFired:
        return ledger.timers.get(record.timer_id) == record.due  # type: ignore[attr-defined]
    pending = ledger.effects.get(getattr(record, "effect_id", ""))
    if pending is None:
        return False
    if kind is EffectApproved:
        return pending.status == PARKED
    if kind is EffectRedriven:
        return pending.status in (DEAD, STUCK)
    if getattr(record, "settled_by", None) is not None:
        return pending.status in (STUCK, DEAD, UNKNOWN)
    if kind is EffectFailed and record.error in ("PolicyDenied", "BudgetExceeded"):  # type: ignore[attr-defined]
        return pending.status in (INTENDED, PARKED)
    return pending.status in (INTENDED, UNKNOWN)
