"""z8: a durable runtime for fleets of AI agents that act.

Every agent's state lives in an append-only, hash-chained event journal; this package
re-exports the public API, and each subpackage (``z8.journal``…) its own.
"""

from z8 import errors
from z8.errors import Z8Error
from z8.actors import Actor, ActorContext, ActorRef, Agent, Decision, Machine, ThreadActor, reject
from z8.app import Application, Router, tune_gc
from z8.effects import Call, CancelTimer, Queue, Retry, Saga, Schedule, Timer, effect
from z8.policies import Policy
from z8.ids import uuid7
from z8.journal import (
    ANY,
    ERASED,
    NO_STREAM,
    STREAM_EXISTS,
    Append,
    Envelope,
    Event,
    Journal,
    Personal,
    RawEvent,
    RecordsExpired,
    Retention,
    Snapshot,
    Subject,
    TypeRegistry,
    VerifyReport,
    open_journal,
    open_memory_journal,
)
from z8.supervision import Backoff, Runtime, child, supervisor
from z8 import audit  # noqa: E402 - after z8.app, which it builds on

__version__ = "0.1.0"

__all__ = [
    "Actor",
    "ActorContext",
    "ActorRef",
    "Agent",
    "Application",
    "tune_gc",
    "Router",
    "Decision",
    "reject",
    "Call",
    "Timer",
    "CancelTimer",
    "effect",
    "Retry",
    "Queue",
    "Schedule",
    "Saga",
    "Backoff",
    "Machine",
    "Runtime",
    "ThreadActor",
    "child",
    "supervisor",
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "Append",
    "Envelope",
    "Event",
    "Journal",
    "Personal",
    "Policy",
    "Subject",
    "ERASED",
    "RawEvent",
    "RecordsExpired",
    "Retention",
    "Snapshot",
    "TypeRegistry",
    "VerifyReport",
    "Z8Error",
    "errors",
    "audit",
    "open_journal",
    "open_memory_journal",
    "uuid7",
]
