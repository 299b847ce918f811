"""Every error z8 raises, in one place.

All derive from :class:`Z8Error`. Errors that report a caller's mistake also derive
from the matching builtin (``ValueError``, ``TypeError``) so ordinary ``except``
clauses keep working. Each message says what went wrong and what to do next.
"""

from __future__ import annotations

__all__ = [
    "Z8Error",
    "JournalError",
    "JournalClosed",
    "JournalPathError",
    "JournalAlreadyOpen",
    "JournalCorrupt",
    "InvalidStreamName",
    "ReservedStreamName",
    "InvalidExpectedVersion",
    "WrongExpectedVersion",
    "InvalidEvent",
    "UnregisteredEvent",
    "UnknownEventType",
    "UpcastError",
    "EventNotFound",
    "InvalidSnapshot",
    "InvalidPosition",
    "TypeRegistrationError",
    "InvalidArgument",
    "DuplicateEvent",
    "ActorError",
    "MailboxFull",
    "AskTimeout",
    "ActorDied",
    "ActorNotFound",
    "DuplicateName",
    "TransitionBlocked",
    "InvalidMachine",
    "InvalidSpec",
    "SupervisorEscalated",
    "RuntimeEscalated",
    "RuntimeNotRunning",
    "AgentError",
    "Rejected",
    "InvalidDecision",
    "AgentCrashed",
    "ConcurrencyConflict",
    "Unroutable",
    "InvalidCommand",
    "HandlerStopped",
    "EffectError",
    "InvalidEffect",
    "Retryable",
    "OutcomeUnknown",
    "EffectNotFound",
    "EffectStateError",
    "InvalidSchedule",
    "PolicyError",
    "InvalidPolicy",
    "PolicyDenied",
    "BudgetExceeded",
    "AuditError",
    "InvalidBundle",
    "VaultError",
    "SubjectErased",
    "LegalHoldActive",
    "RecordExpired",
    "AIError",
    "ProviderError",
    "InvalidModelResponse",
    "UnknownModel",
    "InvalidTool",
    "RunNotFound",
    "ReplayDiverged",
]


class Z8Error(Exception):
    """Root of every error raised by z8."""


class JournalError(Z8Error):
    """Root of the journal's errors (raised by ``z8.journal``)."""


class JournalClosed(JournalError):
    """Raised by any operation on a journal after ``close()``."""

    def __init__(self, path: str) -> None:
        super().__init__(f"journal {path!r} is closed; open it again with open_journal()")
        self.path = path


class JournalPathError(JournalError, OSError):
    """Raised by ``open_journal`` when the path cannot hold a journal.

    The path is a file, its directory is not writable, or it cannot be created.
    """


class JournalAlreadyOpen(JournalError):
    """Raised by ``open_journal`` when this process already has the path open.

    LMDB forbids opening one environment twice in a process (closing either would
    drop the other's locks); share the open ``Journal`` instead.
    """


class JournalCorrupt(JournalError):
    """Raised by a read that finds a stored record it cannot decode."""


class InvalidStreamName(JournalError, ValueError):
    """Raised when a stream name is empty, too long, not a str, or holds a NUL."""


class ReservedStreamName(InvalidStreamName):
    """Raised when a user writes to a stream whose name starts with ``$``.

    ``$``-streams (``$system``…) belong to the runtime.
    """


class InvalidExpectedVersion(JournalError, ValueError):
    """Raised when ``expected_version`` is not ANY, NO_STREAM, STREAM_EXISTS or an int >= 0."""


class WrongExpectedVersion(JournalError):
    """Raised by ``append`` when the stream is not at the version the caller expected.

    Nothing of the rejected append is written. Reload the stream and decide again.
    """

    def __init__(self, stream: str, expected: int | str, actual: int) -> None:
        super().__init__(
            f"stream {stream!r} is at version {actual}, but the append expected "
            f"{expected}; nothing was written — reload the stream and decide again"
        )
        self.stream = stream
        self.expected = expected
        self.actual = actual


class InvalidEvent(JournalError, TypeError):
    """Raised when an append carries something that is not an event (or no events)."""


class UnregisteredEvent(InvalidEvent):
    """Raised when an appended payload's class is not registered in the journal's types."""


class UnknownEventType(JournalError):
    """Raised when decoding an envelope whose type name is not registered.

    Register the type (and its upcasters), or read the envelope raw.
    """


class UpcastError(JournalError):
    """Raised when an old payload cannot be brought to the current schema."""


class EventNotFound(JournalError, LookupError):
    """Raised by provenance queries given an event id the journal does not hold."""


class InvalidSnapshot(JournalError, ValueError):
    """Raised by ``save_snapshot`` for a version the stream has not reached, or bad fields."""


class InvalidPosition(JournalError, ValueError):
    """Raised for a position, version or limit that is negative, zero where 1-based, or not an int."""


class TypeRegistrationError(JournalError, ValueError):
    """Raised by ``TypeRegistry.register``/``upcaster`` for a class that is not a
    msgspec Struct, a bad schema number, or a name already taken by another class."""


class InvalidArgument(Z8Error, ValueError):
    """Raised for an argument of the wrong type or range that no narrower error names."""


class DuplicateEvent(JournalError):
    """Raised by ``append`` when a caller-chosen ``event_id`` is already in the journal.

    Nothing of the rejected append is written. Retrying an append with the same ids is
    therefore idempotent: this error means the first attempt was committed.
    """

    def __init__(self, event_id: str) -> None:
        super().__init__(
            f"event id {event_id!r} is already in the journal (or twice in this append); "
            "nothing was written — if this is a retry, the first attempt was committed"
        )
        self.event_id = event_id


class ActorError(Z8Error):
    """Root of the actor layer's errors (raised by ``z8.actors`` and ``z8.supervision``)."""


class MailboxFull(ActorError):
    """Raised by ``ActorRef.try_tell`` when the mailbox is at capacity; ``tell`` waits instead."""


class AskTimeout(ActorError, TimeoutError):
    """Raised by ``ActorRef.ask`` when no reply came within the timeout.

    The message may still be processed later; design asks to be safe to repeat.
    """


class ActorDied(ActorError):
    """Raised by ``ask`` when the actor crashed on, or stopped before, the message.

    ``__cause__`` (and ``cause``) hold the exception that killed it, if any.
    """

    def __init__(self, path: str, cause: BaseException | None = None, detail: str | None = None) -> None:
        reason = detail or (f"crashed with {type(cause).__name__}: {cause}" if cause else "stopped")
        super().__init__(f"actor {path} {reason} before replying")
        self.path = path
        self.cause = cause


class ActorNotFound(ActorError, LookupError):
    """Raised by ``lookup`` for a path with no live actor."""


class DuplicateName(ActorError, ValueError):
    """Raised when a child name is already taken among its siblings."""


class TransitionBlocked(ActorError):
    """Raised when an actor's state machine is asked to take a transition it does not allow.

    The attempt is journaled in ``$system``; the state is unchanged.
    """

    def __init__(self, path: str, source: str, target: str, allowed: list[str]) -> None:
        super().__init__(
            f"{path}: transition {source!r} -> {target!r} is not allowed "
            f"(from {source!r} the machine allows {sorted(allowed) or 'nothing'})"
        )
        self.path, self.source, self.target = path, source, target


class InvalidMachine(ActorError, ValueError):
    """Raised when a ``Machine`` is declared with unknown states or no initial state."""


class InvalidSpec(ActorError, ValueError):
    """Raised when a child or supervisor spec is built with bad values (duplicate ids,
    negative timeouts, an unknown strategy…)."""


class SupervisorEscalated(ActorError):
    """A supervisor exceeded its restart intensity: it stopped its children and fails,
    handing the decision to its parent."""


class RuntimeEscalated(ActorError):
    """Raised by the ``Runtime`` when its root supervisor escalated: the tree is stopped.

    ``report`` says which child crashed how often, and the last error.
    """

    def __init__(self, report: str) -> None:
        super().__init__(report)
        self.report = report


class RuntimeNotRunning(ActorError):
    """Raised when a runtime operation is called before start or after stop."""


class AgentError(ActorError):
    """Root of the errors a durable agent's command can fail with."""


class Rejected(AgentError):
    """The agent's ``decide`` refused the command (``z8.reject(reason, **detail)``).

    Nothing was written. ``reason`` is the machine-readable word the agent chose.
    """

    def __init__(self, reason: str, detail: dict | None = None) -> None:
        extra = f" {detail}" if detail else ""
        super().__init__(f"rejected: {reason}{extra}")
        self.reason = reason
        self.detail = detail or {}


class InvalidDecision(AgentError):
    """A decision whose events do not fold (``evolve`` raised, or the agent's machine
    forbids the move), or that is not a Decision at all. Nothing was written and the
    agent's state is unchanged; fix ``decide`` or ``evolve``."""


class AgentCrashed(AgentError):
    """``decide`` raised: the command failed, and the agent restarts from its journal.

    ``__cause__`` is the exception ``decide`` raised.
    """


class ConcurrencyConflict(AgentError):
    """Another writer kept moving the agent's stream through every retry; nothing was written."""


class Unroutable(Z8Error, LookupError):
    """Raised by ``Application.dispatch`` for a command type no route names."""


class InvalidCommand(Z8Error, ValueError):
    """Raised by ``Application.dispatch`` for a command that fails validation; the
    message names the bad field."""


class HandlerStopped(Z8Error):
    """Raised by a strong-consistency ``dispatch`` when an event handler it waits for has
    stopped (its ``on_error`` said ``Stop()``, or the application is shutting down)."""


class EffectError(Z8Error):
    """Root of the errors of durable effects, timers, jobs, schedules and sagas (``z8.effects``)."""


class InvalidEffect(EffectError, ValueError):
    """A bad effect declaration, or a ``Call``/``Timer`` a decision cannot make (an effect
    the application does not know, a request of the wrong type, an unregistered timer
    message). Raised before anything is written."""


class Retryable(EffectError):
    """Raise inside an effect function when the attempt certainly did *not* take effect
    (the request never left, or the counterparty refused it before acting): the runtime
    retries it under the effect's retry policy."""


class OutcomeUnknown(EffectError):
    """Raise inside an effect function when the request may have taken effect but no
    answer came back (a lost acknowledgement). The runtime records ``EffectUnknown`` and
    resolves it: by the effect's ``resolve`` query, by re-issuing an idempotent effect with
    the same key, or by parking it as stuck for a human."""


class EffectNotFound(EffectError, LookupError):
    """No effect with that id is known to the application's outbox."""


class EffectStateError(EffectError):
    """The effect is not in a state that allows the operation (approve an effect that is
    not awaiting approval, redrive one that is neither dead-lettered nor stuck)."""


class InvalidSchedule(EffectError, ValueError):
    """A schedule whose cron expression, time zone or missed-fire policy is not valid."""


class PolicyError(Z8Error):
    """Root of the errors of policies, approvals and budgets (``z8.policies``)."""


class InvalidPolicy(PolicyError, ValueError):
    """A policy that cannot be loaded: malformed TOML, an unknown key or operator, a rule
    without an outcome, a version reused with different content. Raised at load, before
    the policy is adopted; the message names the file, the line and the reason."""


class PolicyDenied(PolicyError):
    """An effect the policy does not allow. The agent never sees this raised: it receives
    ``EffectFailed(error="PolicyDenied")``; ``app.wait_effect`` and tools raise it."""


class BudgetExceeded(PolicyDenied):
    """An effect whose admission would take a budget past its limit. The agent receives
    ``EffectFailed(error="BudgetExceeded")`` naming the budget, its limit and its use."""


class AuditError(Z8Error):
    """Root of the errors of run records and exported bundles."""


class InvalidBundle(AuditError, ValueError):
    """A file that is not a z8 run bundle (not JSON, wrong format version, missing
    fields). An *altered* bundle is not an error: ``verify_bundle`` reports it."""


class VaultError(JournalError):
    """The vault that holds per-subject keys for ``z8.Personal`` data cannot do what was
    asked (no subject field on a type with personal fields, an unreadable vault)."""


class SubjectErased(VaultError):
    """Personal data was asked for under a subject whose key has been erased."""


class LegalHoldActive(JournalError):
    """Erasure or expiry refused: a legal hold freezes the subject or stream. Release the
    hold (``app.release_hold``) first; the refusal wrote nothing."""


class RecordExpired(JournalError):
    """The stream's records were expired under its retention rule: the chain keeps their
    hashes, the payloads are gone."""


class AIError(Z8Error):
    """Root of the errors of AI agents, providers and tools (``z8.ai``)."""


class ProviderError(AIError):
    """A model provider answered with an error or not at all. ``status`` is the HTTP
    status (0: no answer); ``retry_after`` the seconds the provider asked to wait."""

    def __init__(self, message: str, *, status: int = 0, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class InvalidModelResponse(AIError):
    """A provider's answer that is not a usable completion (not JSON, no choices, a tool
    call without a name). A run journals it as a failed step instead of crashing."""


class UnknownModel(AIError, LookupError):
    """A model alias no configuration names (code, ``Z8_MODEL_<ALIAS>`` or a TOML file)."""


class InvalidTool(AIError, ValueError):
    """A bad tool declaration (no type hints for its arguments, a duplicate name)."""


class RunNotFound(AIError, LookupError):
    """No AI run with that id is in the journal."""


class ReplayDiverged(AIError):
    """Replaying a recorded run with today's code did not rebuild the recorded state."""
