"""Durable effects: the outbox, unknown outcomes, timers, approval gates, jobs, schedules, sagas.

An agent never does I/O itself: ``decide`` returns ``Call(effect, request)`` and the
runtime journals the intent in the same atomic append as the decision, then runs it
with the effect id ``"{stream}/{version}/{index}"`` as its idempotency key, and delivers
``EffectSucceeded`` / ``EffectFailed`` / ``EffectUnknown`` back through ``decide``.
See :mod:`z8.effects._outbox` for recovery after a crash.
"""

from z8.actors._ledger import (
    DEAD,
    INTENDED,
    PARKED,
    STUCK,
    UNKNOWN,
    Alert,
    Call,
    CancelTimer,
    EffectApproved,
    EffectFailed,
    EffectIntended,
    EffectRecord,
    EffectRedriven,
    EffectRetrying,
    EffectStuck,
    EffectSucceeded,
    EffectUnknown,
    Ledger,
    SagaCompensating,
    SagaEnded,
    ScheduleFired,
    Timer,
    TimerCancelled,
    TimerFired,
    TimerSet,
)

from ._effect import NOT_FOUND, Effect, EffectContext, Kind, Queue, Retry, classify, effect
from ._outbox import CURSOR, JOBS_PREFIX, OUTBOX_STREAM, EffectView, Outbox
from ._saga import Saga, SagaDecision
from ._schedule import SCHEDULES_PREFIX, Schedule, Scheduler

__all__ = [
    "effect", "Effect", "EffectContext", "Retry", "Queue", "Kind", "NOT_FOUND", "classify",
    "Call", "Timer", "CancelTimer",
    "EffectRecord", "EffectIntended", "EffectSucceeded", "EffectFailed", "EffectUnknown", "EffectStuck",
    "EffectRetrying", "EffectApproved", "EffectRedriven", "TimerSet", "TimerFired", "TimerCancelled",
    "ScheduleFired", "SagaCompensating", "SagaEnded", "Alert", "Ledger",
    "INTENDED", "PARKED", "UNKNOWN", "STUCK", "DEAD",
    "Outbox", "EffectView", "JOBS_PREFIX", "CURSOR", "OUTBOX_STREAM",
    "Saga", "SagaDecision", "Schedule", "Scheduler", "SCHEDULES_PREFIX",
]
