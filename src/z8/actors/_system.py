"""The runtime's own record: ``$system`` events and the batched log that writes them.

Actors and supervisors record what happens to them (starts, crashes, restarts,
escalations, refused transitions, dead letters) without waiting for the disk: the log
hands back the event id at once (ids are chosen here, so causation links can point
at an event still in flight) and appends everything recorded within one loop tick in
a single journal append.
"""

from __future__ import annotations

import asyncio
import hashlib

import msgspec
import structlog

from z8.errors import Z8Error
from z8.ids import UuidV7
from z8.journal import Event, Journal, TypeRegistry

from ._ledger import RECORD_TYPES

__all__ = [
    "SystemLog",
    "ActorStarted",
    "ActorStopped",
    "ActorCrashed",
    "ActorRestarted",
    "RestartScheduled",
    "SupervisorEscalatedEvent",
    "TransitionRefused",
    "DeadLettered",
    "SYSTEM_STREAM",
    "SYSTEM_EVENT_TYPES",
    "describe_error",
    "register_system_types",
]

SYSTEM_STREAM = "$system"
log = structlog.get_logger("z8.runtime")


class ActorStarted(msgspec.Struct, frozen=True):
    path: str
    kind: str
    incarnation: int


class ActorStopped(msgspec.Struct, frozen=True):
    path: str
    reason: str
    dead_letters: int = 0


class ActorCrashed(msgspec.Struct, frozen=True):
    path: str
    error_type: str
    message: str
    traceback_digest: str
    incarnation: int


class RestartScheduled(msgspec.Struct, frozen=True):
    path: str
    delay: float
    attempt: int


class ActorRestarted(msgspec.Struct, frozen=True):
    path: str
    incarnation: int
    delay: float


class SupervisorEscalatedEvent(msgspec.Struct, frozen=True):
    path: str
    restarts: int
    within: float
    last_error: str


class TransitionRefused(msgspec.Struct, frozen=True):
    path: str
    source: str
    target: str


class DeadLettered(msgspec.Struct, frozen=True):
    path: str
    count: int
    message_types: list[str]


SYSTEM_EVENT_TYPES: dict[str, type[msgspec.Struct]] = {
    "z8.ActorStarted": ActorStarted,
    "z8.ActorStopped": ActorStopped,
    "z8.ActorCrashed": ActorCrashed,
    "z8.RestartScheduled": RestartScheduled,
    "z8.ActorRestarted": ActorRestarted,
    "z8.SupervisorEscalated": SupervisorEscalatedEvent,
    "z8.TransitionRefused": TransitionRefused,
    "z8.DeadLettered": DeadLettered,
}


def register_system_types(types: TypeRegistry) -> TypeRegistry:
    """Register the ``$system`` event classes, the effect records and the policy records
    (under their ``z8.`` names) in ``types``."""
    from z8.policies._records import POLICY_RECORD_TYPES  # policies sit beside actors, not below

    for name, cls in (*SYSTEM_EVENT_TYPES.items(), *RECORD_TYPES.items(), *POLICY_RECORD_TYPES.items()):
        if cls not in types:
            types.register(cls, name=name)
    return types


def describe_error(error: BaseException) -> tuple[str, str, str]:
    """(type name, message, digest of the traceback's frames) for a crash record."""
    sites = []
    tb = error.__traceback__
    while tb is not None:  # walk the frames; extract_tb would read every source file
        code = tb.tb_frame.f_code
        sites.append(f"{code.co_filename}:{code.co_name}:{tb.tb_lineno}")
        tb = tb.tb_next
    shape = "|".join(sites)
    digest = hashlib.blake2b(f"{type(error).__qualname__}|{shape}".encode(), digest_size=8).hexdigest()
    return type(error).__qualname__, str(error)[:500], digest


class SystemLog:
    """Appends ``$system`` events in batches; ``record`` never waits for the disk."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        register_system_types(journal.types)
        self._ids = UuidV7()
        self._pending: list[Event] = []
        self._flusher: asyncio.Task[None] | None = None
        self.failures = 0
        self.closed = False
        """Set once the runtime has shut down: later records are not written."""

    def record(self, payload: msgspec.Struct, causation_id: str | None = None) -> str:
        """Queue ``payload`` for ``$system``; return its event id at once."""
        event_id = self._ids()
        if self.closed:
            return event_id  # the runtime is gone and its journal closed: nothing to write to
        self._pending.append(Event(payload, event_id, causation_id))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return event_id

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._journal.append(SYSTEM_STREAM, batch, allow_reserved=True, actor="z8.runtime")
                except Z8Error:
                    self.failures += 1
                    log.exception("system_log.append_failed", events=len(batch))
        finally:
            self._flusher = None

    async def drain(self) -> None:
        """Wait until everything recorded so far is in the journal."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)
