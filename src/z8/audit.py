"""Audit: sealed run records and their offline verification.

``app.audit`` (an :class:`Audit`) verifies the journal (whole, or one stream), walks
provenance (``causes``, ``effects``, ``trace``) and builds a :class:`RunRecord` for any
agent (``run(stream=...)``) or request (``run(correlation=...)``): what triggered it, the
facts it weighed, its reasoning as journaled, the policy's verdicts and the approvals,
its effects and their outcomes, the final outcome, and a seal. ``record.markdown()`` is
for a person; ``record.bundle()`` / ``record.export(path)`` write a self-contained JSON
bundle that :func:`verify_bundle` (or ``z8 verify --bundle FILE``) checks with no journal.

The seal: every stored record's own BLAKE2b-256 hash, the chain links between records at
consecutive positions, a BLAKE2b-256 digest over every record's (position, hash), the
journal head at export and the summary's hash, and an Ed25519 signature over the digest
by the journal's audit key (``audit.key``, mode 0600, in the journal directory). Pin the
key's :attr:`Audit.fingerprint` with ``verify_bundle(..., key=fingerprint)``.

What it cannot prove: whoever holds both the journal files and the signing key can
rewrite history and sign a consistent bundle. Keep the key apart from the journal, pin
its fingerprint, and anchor ``seal.head_hash`` somewhere the journal's host cannot write.

Reasoning convention: a domain event's ``reasoning``, ``rationale``, ``explanation`` or
``reason`` field is the run's reasoning (:data:`REASONING_FIELDS`).

Personal data: the bundle's records are the stored ones (personal fields encrypted), but
its summary and the Markdown show what reads returned at export: a subject erased by
then shows as ``[erased]``, one erased later is still in clear in a bundle exported
before. Erasure cannot reach copies already handed out; export with that in mind.
"""

from z8.app._audit import REASONING_FIELDS, Audit
from z8.app._run_record import (
    ERASED_TEXT,
    Approval,
    EffectSummary,
    EventSummary,
    Fact,
    PolicyVerdict,
    Reasoning,
    RunRecord,
    Seal,
    StoredRecord,
)
from z8.app._seal import BUNDLE_FORMAT, BUNDLE_VERSION, KEY_FILE, BundleReport, fingerprint_of, verify_bundle
from z8.errors import AuditError, InvalidBundle

__all__ = [
    "Audit",
    "RunRecord",
    "EventSummary",
    "Fact",
    "Reasoning",
    "PolicyVerdict",
    "Approval",
    "EffectSummary",
    "Seal",
    "StoredRecord",
    "BundleReport",
    "verify_bundle",
    "fingerprint_of",
    "REASONING_FIELDS",
    "ERASED_TEXT",
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "KEY_FILE",
    "AuditError",
    "InvalidBundle",
]
