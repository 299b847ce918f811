"""The run record: what an agent did, why, under which policy, with whose approval — sealed.

Built by ``app.audit.run(...)`` (see ``_audit``); this module holds its schema and the
two ways out of the process: :meth:`RunRecord.markdown` for a person and
:meth:`RunRecord.bundle` for a verifier (see ``_seal`` for what the seal proves).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

from z8.errors import AuditError

from ._seal import bundle_bytes, no_gc_pauses

__all__ = [
    "RunRecord", "EventSummary", "Fact", "Reasoning", "PolicyVerdict", "Approval", "EffectSummary", "Seal",
    "StoredRecord", "ERASED_TEXT", "SEALED_TEXT",
]

ERASED_TEXT = "[erased]"
"""How a run record shows a personal-data value whose subject was erased."""
SEALED_TEXT = "[personal data]"
"""How a run record shows personal data it cannot open: sealed in a field typed ``Any``
(an effect's request or result), whose type says nothing of whose data it is."""


class EventSummary(msgspec.Struct, frozen=True, gc=False):
    """One journaled event as the record shows it: envelope fields and the decoded payload."""

    position: int
    stream: str
    version: int
    type: str
    event_id: str
    time: str
    """``recorded_at`` as ISO-8601 UTC."""
    recorded_at: int
    causation_id: str | None
    correlation_id: str | None
    actor: str | None
    hash: str
    """The record's stored hash (hex): what the seal covers for this event."""
    data: Any
    """The payload as JSON values, ``"[erased]"`` where personal data was erased."""
    problem: str | None = None
    """Why the payload (or the record) could not be read, when it could not."""


class Fact(msgspec.Struct, frozen=True, gc=False):
    """An effect result the agent weighed: every ``read`` effect's, and any other the
    agent journaled a decision with (``decided``)."""

    effect_id: str
    effect: str
    kind: str
    request: Any
    result: Any
    position: int
    settled_by: str | None = None
    decided: list[str] = []
    """The events journaled with this result as the decision on it (``"LoanDecided #9"``)."""


class Reasoning(msgspec.Struct, frozen=True, gc=False):
    """Reasoning as the agent journaled it: a domain event's ``reasoning``, ``rationale``,
    ``explanation`` or ``reason`` field."""

    position: int
    type: str
    field: str
    text: str


class PolicyVerdict(msgspec.Struct, frozen=True, gc=False):
    """The policy's verdict on one effect, as journaled with its intent."""

    effect_id: str
    effect: str
    verdict: str
    """``allow``, ``deny`` or ``approval``."""
    rule: str
    policy_version: str
    reason: str
    approvers: list[str]
    quorum: int
    approval_timeout: float | None
    position: int


class Approval(msgspec.Struct, frozen=True, gc=False):
    """A human's verdict on an effect held for approval."""

    effect_id: str
    by: str
    approve: bool
    reason: str
    final: bool
    position: int
    time: str


class EffectSummary(msgspec.Struct, frozen=True, gc=False):
    """One effect from intent to outcome."""

    effect_id: str
    effect: str
    kind: str
    verdict: str
    status: str
    """``succeeded``, ``failed``, ``dead``, ``unknown``, ``stuck``, ``awaiting approval`` or ``pending``."""
    attempts: int
    result: Any = None
    error: str | None = None
    message: str = ""
    approved_by: list[str] = []
    intended_at: int | None = None
    settled_at: int | None = None


class Seal(msgspec.Struct, frozen=True):
    """The seal over the run's stored records (see ``z8.audit``'s module docs)."""

    algorithm: str
    events: int
    intact: bool
    """Whether every record's own hash, order and links held when the record was made."""
    first_bad_position: int | None
    first_bad_version: int | None
    problem: str | None
    links: int
    """Chain links checked between records at consecutive positions."""
    head_position: int
    head_hash: str
    summary_hash: str
    digest: str
    signature: str
    """Ed25519 over ``digest`` (hex); empty for a record made with ``sign=False``."""
    public_key: str
    fingerprint: str


class StoredRecord(msgspec.Struct, frozen=True, array_like=True):
    """A record exactly as the journal stores it."""

    position: int
    record: bytes


class RunRecord(msgspec.Struct, frozen=True):
    """A run of an agent (one stream, or one correlation) read back from the journal.

    ``trigger`` is the run's first event; ``facts`` the effect results it weighed;
    ``reasoning`` what it journaled as its reasons; ``verdicts``/``approvals`` the
    policy's and the humans' say; ``effects`` every effect and its outcome; ``outcome``
    the last domain event. ``seal`` binds it all to the stored records.
    """

    scope: str
    """``stream`` (a stream's whole history) or ``correlation``."""
    stream: str | None
    correlation: str | None
    journal_id: str | None
    sealed_at: str
    events: list[EventSummary]
    trigger: EventSummary | None
    facts: list[Fact]
    reasoning: list[Reasoning]
    verdicts: list[PolicyVerdict]
    approvals: list[Approval]
    effects: list[EffectSummary]
    outcome: EventSummary | None
    personal_data_erased: bool
    erased: list[str]
    """Where erased personal data was, as ``"#position Type.field"``."""
    stream_head: tuple[int, int, str] | None
    """For a stream run: the stream's recorded head (version, position, hash hex)."""
    policy_changes: list[dict[str, Any]] = []
    seal: Seal | None = None
    records: list[StoredRecord] = []

    def summary(self) -> dict[str, Any]:
        """The decoded part of the record as JSON values: what ``seal.summary_hash`` covers."""
        document = msgspec.to_builtins(msgspec.structs.replace(self, seal=None, records=[]))
        del document["seal"], document["records"]
        return document

    def bundle(self) -> bytes:
        """The self-contained JSON bundle: the stored records verbatim (base64), the summary
        and the seal. ``z8.audit.verify_bundle`` (or ``z8 verify --bundle``) checks it offline.
        Raises ``AuditError`` for a record made with ``sign=False``."""
        if self.seal is None or not self.seal.signature:
            raise AuditError("this run record is not signed; make it with audit.run(..., sign=True) to export it")
        seal = msgspec.to_builtins(self.seal)
        with no_gc_pauses():
            return bundle_bytes(self.journal_id, self.summary(), [(r.position, r.record) for r in self.records], seal)

    def export(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`bundle` to ``path`` (replaced atomically); returns the path."""
        target = Path(path)
        temporary = target.with_name(f".{target.name}.tmp")
        temporary.write_bytes(self.bundle())
        os.replace(temporary, target)
        return target

    def markdown(self) -> str:
        """The record for a person: trigger, facts, reasoning, verdicts, approvals, effects,
        outcome and the seal, as Markdown."""
        from ._render import render_markdown

        return render_markdown(self)
