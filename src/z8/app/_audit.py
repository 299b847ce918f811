"""The audit surface: ``app.audit`` — verify, provenance and sealed run records.

A run record answers an auditor's questions from the journal alone: what triggered the
run, the facts it weighed, its reasoning, the policy's verdicts and the humans'
approvals, every effect and its outcome, the final outcome — and a seal over the stored
records that ``z8.audit.verify_bundle`` checks with no journal at all.

**Reasoning is journaled by the agent, by convention**: a domain event field named
``reasoning``, ``rationale``, ``explanation`` or ``reason`` (see
:data:`REASONING_FIELDS`) is shown as the run's reasoning, quoted as written. An AI agent
that journals a ``Reasoned(step=…, reasoning=…)`` event per step gets a record that
reads like a decision memo; nothing else is inferred or summarised.

Payloads are decoded through the journal's registry (upcasters and personal-data
decryption included); a value that reads as ``z8.ERASED`` shows as ``[erased]`` and the
record says personal data was erased. Runtime records (``z8.*``) are decoded by their
own classes; an unknown type is shown as plain msgpack data, never skipped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import time
from collections.abc import Iterable
from hashlib import blake2b
from typing import Any, Final

import anyio
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from z8.actors._ledger import (
    RECORD_TYPES,
    EffectApproved,
    EffectFailed,
    EffectIntended,
    EffectRedriven,
    EffectRetrying,
    EffectStuck,
    EffectSucceeded,
    EffectUnknown,
)
from z8.errors import InvalidArgument, UnknownEventType, Z8Error
from z8.journal import Envelope, Journal, VerifyReport
from z8.journal._envelope import check_stream, decode_record
from z8.journal._runcheck import RunCheck

from ._run_record import (
    ERASED_TEXT,
    SEALED_TEXT,
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
from ._seal import SEAL_ALGORITHM, canonical, fingerprint_of, no_gc_pauses, seal_digest, signing_key_for

__all__ = ["Audit", "REASONING_FIELDS"]

REASONING_FIELDS: Final = ("reasoning", "rationale", "explanation", "reason")
"""Domain event fields a run record quotes as the agent's reasoning, in this order."""

_DENIALS = frozenset({"PolicyDenied", "ApprovalDenied", "ApprovalExpired", "BudgetExceeded"})
_PLAIN = (str, int, float, bool, type(None))
_SEALED_EXT, _ERASED_EXT = 90, 91  # msgpack extension codes of personal data (journal/_personal.py)
_decode_any = msgspec.msgpack.Decoder().decode
_PAGE = 8192


class Audit:
    """Verification, provenance and run records over one journal (``app.audit``).

    ``signing_key`` seals run records; by default the journal's own audit key
    (``audit.key`` in its directory, created on first use; in memory: one per journal).
    """

    def __init__(self, journal: Journal, *, signing_key: Ed25519PrivateKey | None = None) -> None:
        if signing_key is not None and not isinstance(signing_key, Ed25519PrivateKey):
            raise InvalidArgument(f"signing_key must be an Ed25519PrivateKey, got {type(signing_key).__name__}")
        self.journal = journal
        self._key = signing_key

    @property
    def signing_key(self) -> Ed25519PrivateKey:
        """The key that signs run records (created on first use for a journal that has none)."""
        if self._key is None:
            self._key = signing_key_for(self.journal)
        return self._key

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half of :attr:`signing_key`: what a verifier needs."""
        return self.signing_key.public_key()

    @property
    def fingerprint(self) -> str:
        """The signing key's fingerprint: publish it, and pin it with ``verify_bundle(key=...)``."""
        return fingerprint_of(self.public_key)

    async def verify(self, stream: str | None = None) -> VerifyReport:
        """``journal.verify(stream)`` in a worker thread (it reads every record it checks)."""
        return await anyio.to_thread.run_sync(functools.partial(self.journal.verify, stream))

    def causes(self, event_id: str) -> list[Envelope]:
        """The causation chain of an event, origin first (``Journal.causes``)."""
        return self.journal.causes(event_id)

    def effects(self, event_id: str) -> list[Envelope]:
        """Everything an event set in motion, in log order (``Journal.effects``)."""
        return self.journal.effects(event_id)

    def trace(self, correlation_id: str) -> list[Envelope]:
        """Every event of one request, in log order (``Journal.trace``)."""
        return self.journal.trace(correlation_id)

    def run(self, stream: str | None = None, *, correlation: str | None = None, sign: bool = True) -> RunRecord:
        """The sealed run record of ``stream`` (its whole history) or of ``correlation`` (every
        event one request set in motion, across streams), or of both (the stream's events
        of that correlation).

        Reads every event of the run (synchronously: from async code, run a large one in
        a thread). A journal that fails its checks still yields a record: ``seal.intact``
        is False and names the first bad event, and the exported bundle fails to verify.
        ``sign=False`` leaves the seal unsigned (no key is needed or created; such a record
        can be printed but not exported).
        """
        if stream is None and correlation is None:
            raise InvalidArgument("name the run: run(stream=...) and/or run(correlation=...)")
        if correlation is not None and not isinstance(correlation, str):
            raise InvalidArgument("correlation must be a str")
        scope = "stream" if correlation is None else "correlation"
        stored, stream_head, head = self._gather(stream, correlation)
        with no_gc_pauses():
            builder = _Builder(self.journal, stream if scope == "stream" else None)
            for position, record in stored:
                builder.add(position, record)
            builder.finish(stream_head)
            unsealed = builder.record(scope, stream, correlation, getattr(self.journal, "journal_id", None),
                                      stream_head)
            return self._seal(unsealed, head, sign)

    # --- gathering ---------------------------------------------------------------------

    def _gather(self, stream: str | None, correlation: str | None) -> tuple[
            list[tuple[int, bytes | None]], tuple[int, int, bytes] | None, tuple[int, bytes]]:
        journal = self.journal
        journal._check_open()  # noqa: SLF001 - the audit surface is the journal's own
        if stream is None:
            head = journal._head()  # noqa: SLF001 - read first: the run is what the head covers
            positions = sorted(p for p in journal._correlated(correlation) if p <= head[0])  # noqa: SLF001
            return [(p, _raw_at(journal, p)) for p in positions], None, head
        check_stream(stream, allow_reserved=True)
        stream_head = journal._stream_head(stream)  # noqa: SLF001 - before the log head: it is not newer
        head = journal._head()  # noqa: SLF001
        stored: list[tuple[int, bytes | None]] = []
        version, end = 1, stream_head[0] if stream_head is not None else 0
        while version <= end and (page := journal._stream_records(stream, version, min(_PAGE, end - version + 1))):  # noqa: SLF001
            stored += [(position, record) for _, position, record in page]
            version = page[-1][0] + 1
        if correlation is not None:
            stored = [(p, r) for p, r in stored if r is None or _correlation_of(r) in (correlation, None)]
        return stored, stream_head, head

    # --- sealing -----------------------------------------------------------------------

    def _seal(self, record: RunRecord, head: tuple[int, bytes], sign: bool) -> RunRecord:
        summary_hash = blake2b(canonical(record.summary()), digest_size=32).digest()
        digest = seal_digest([(r.position, r.record) for r in record.records], head, summary_hash)
        check = record.seal
        assert check is not None  # the builder's check result, not yet sealed
        seal = msgspec.structs.replace(check, head_position=head[0], head_hash=head[1].hex(),
                                       summary_hash=summary_hash.hex(), digest=digest.hex())
        if sign:
            key = self.signing_key
            public = key.public_key()
            seal = msgspec.structs.replace(seal, signature=key.sign(digest).hex(),
                                           public_key=public.public_bytes_raw().hex(),
                                           fingerprint=fingerprint_of(public))
        return msgspec.structs.replace(record, seal=seal)


def _raw_at(journal: Journal, position: int) -> bytes | None:
    found = journal._records(position, 1)  # noqa: SLF001
    return found[0][1] if found and found[0][0] == position else None


def _correlation_of(record: bytes) -> str | None:
    try:
        return decode_record(record).correlation_id
    except (msgspec.DecodeError, ValueError, TypeError):
        return None  # kept: the seal's check reports the broken record


class _Item(msgspec.Struct, gc=False):
    envelope: Envelope
    payload: Any
    """The decoded payload object (a record class for ``z8.*``), or None."""
    summary: EventSummary


class _Builder:
    """Folds a run's stored records, in log order, into a :class:`RunRecord` (unsigned)."""

    def __init__(self, journal: Journal, stream: str | None) -> None:
        self.journal = journal
        self.check = RunCheck(stream)
        self.fault: Any = None
        self.stored: list[StoredRecord] = []
        self.items: list[_Item] = []
        self.summaries: list[EventSummary] = []
        self.erased: list[str] = []

    def add(self, position: int, record: bytes | None) -> None:
        if self.fault is None:
            self.fault = self.check.feed(position, record)
        if record is None:
            return
        self.stored.append(StoredRecord(position, record))
        try:
            envelope = decode_record(record)
        except (msgspec.DecodeError, ValueError, TypeError) as exc:
            self.summaries.append(_unreadable(position, record, f"the record does not decode: {exc}"))
            return
        payload, data, problem = self._payload(envelope)
        summary = EventSummary(
            envelope.position, envelope.stream, envelope.version, envelope.type, envelope.event_id,
            _iso(envelope.recorded_at), envelope.recorded_at, envelope.causation_id, envelope.correlation_id,
            envelope.actor, record[-32:].hex(), data, problem,
        )
        self.summaries.append(summary)
        self.items.append(_Item(envelope, payload, summary))

    def finish(self, stream_head: tuple[int, int, bytes] | None) -> None:
        if self.fault is None and self.check.stream is not None:
            self.fault = self.check.finish(stream_head)

    def _payload(self, envelope: Envelope) -> tuple[Any, Any, str | None]:
        cls = RECORD_TYPES.get(envelope.type)
        problem = None
        try:
            # through the journal's registry when it knows the type (upcasters, personal
            # data); runtime records by their own class otherwise (a bare journal, the CLI)
            payload = self.journal.decode(envelope) if cls is None or envelope.type in self.journal.types \
                else msgspec.msgpack.decode(envelope.data, type=cls)
        except UnknownEventType:
            payload = None
        except (Z8Error, msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError) as exc:
            payload, problem = None, f"the payload does not decode as {envelope.type}: {exc}"
        where = f"#{envelope.position} {envelope.type}"
        if payload is None:
            try:
                return None, _json_values(_decode_any(envelope.data), where, self.erased), problem
            except (msgspec.DecodeError, ValueError, TypeError):
                return None, None, problem or "the payload is not msgpack"
        return payload, _json_values(payload, where, self.erased), problem

    def record(self, scope: str, stream: str | None, correlation: str | None, journal_id: str | None,
               stream_head: tuple[int, int, bytes] | None) -> RunRecord:
        effects, verdicts, approvals, facts = _effects(self.items)
        domain = [item.summary for item in self.items if not _runtime(item.envelope.type)]
        fault, check = self.fault, self.check
        seal = Seal(SEAL_ALGORITHM, len(self.stored), fault is None, fault.position if fault else None,
                    fault.version if fault else None, fault.reason if fault else None, check.links,
                    0, "", "", "", "", "", "")
        return RunRecord(
            scope=scope, stream=stream, correlation=correlation, journal_id=journal_id,
            sealed_at=_iso(time.time_ns()), events=self.summaries,
            trigger=self.summaries[0] if self.summaries else None,
            facts=facts, reasoning=_reasoning(self.items), verdicts=verdicts, approvals=approvals,
            effects=effects, outcome=domain[-1] if domain else None,
            personal_data_erased=bool(self.erased), erased=self.erased,
            stream_head=(stream_head[0], stream_head[1], stream_head[2].hex()) if stream_head else None,
            policy_changes=[{"position": i.summary.position, **(i.summary.data or {})}
                            for i in self.items if i.envelope.type == "z8.PolicyMigrated"],
            seal=seal, records=self.stored,
        )


def _unreadable(position: int, record: bytes, problem: str) -> EventSummary:
    return EventSummary(position, "?", 0, "?", "?", "", 0, None, None, None, record[-32:].hex(), None, problem)


# --- effects, verdicts, approvals, facts -----------------------------------------------------


def _effects(items: list[_Item]) -> tuple[list[EffectSummary], list[PolicyVerdict], list[Approval], list[Fact]]:
    rows: dict[str, dict[str, Any]] = {}
    verdicts, approvals, facts = [], [], []
    for index, item in enumerate(items):
        record, position = item.payload, item.summary.position
        if isinstance(record, EffectIntended):
            status = {"approval": "awaiting approval", "deny": "denied"}.get(record.verdict, "pending")
            rows[record.effect_id] = {
                "effect_id": record.effect_id, "effect": record.effect, "kind": record.kind,
                "verdict": record.verdict, "status": status, "attempts": 0, "intended_at": position,
                "request": item.summary.data.get("request") if isinstance(item.summary.data, dict) else None,
            }
            verdicts.append(PolicyVerdict(record.effect_id, record.effect, record.verdict, record.rule,
                                          record.policy_version, record.reason, list(record.approvers),
                                          record.quorum, record.approval_timeout, position))
            continue
        effect_id = getattr(record, "effect_id", None)
        if effect_id is None or not isinstance(record, tuple(_OUTCOMES)):
            continue
        row = rows.setdefault(effect_id, {"effect_id": effect_id, "effect": getattr(record, "effect", "?"),
                                          "kind": "?", "verdict": "?", "status": "pending", "attempts": 0,
                                          "request": None})
        if isinstance(record, EffectApproved):
            approvals.append(Approval(effect_id, record.by, record.approve, record.reason, record.final,
                                      position, item.summary.time))
            if record.approve:
                row.setdefault("approved_by", []).append(record.by)
                if record.final:
                    row["status"] = "pending"
            continue
        _OUTCOMES[type(record)](row, record, item)
        if isinstance(record, EffectSucceeded):
            decided = _decided_with(items, index)
            if row["kind"] == "read" or decided:
                facts.append(Fact(effect_id, row["effect"], row["kind"], row["request"],
                                  _field(item, "result"), position, record.settled_by, decided))
    effects = [EffectSummary(**{k: v for k, v in row.items() if k != "request"}) for row in rows.values()]
    return effects, verdicts, approvals, facts


def _succeeded(row: dict[str, Any], record: Any, item: _Item) -> None:
    row.update(status="succeeded", result=_field(item, "result"), attempts=record.attempts,
               settled_at=item.summary.position)


def _failed(row: dict[str, Any], record: Any, item: _Item) -> None:
    status = "dead" if record.exhausted else "denied" if record.error in _DENIALS else "failed"
    row.update(status=status, error=record.error, message=record.message,
               attempts=max(row["attempts"], record.attempts), settled_at=item.summary.position)


def _retrying(row: dict[str, Any], record: Any, item: _Item) -> None:
    row.update(attempts=max(row["attempts"], record.attempt), error=record.error, message=record.message)


def _unknown(row: dict[str, Any], record: Any, item: _Item) -> None:
    row.update(status="unknown", error="unknown", message=record.reason, attempts=max(row["attempts"], record.attempts))


def _stuck(row: dict[str, Any], record: Any, item: _Item) -> None:
    row.update(status="stuck", error="stuck", message=record.reason)


def _redriven(row: dict[str, Any], record: Any, item: _Item) -> None:
    row.update(status="pending", error=None, message=f"redriven by {record.by}")


_OUTCOMES: dict[type, Any] = {
    EffectSucceeded: _succeeded, EffectFailed: _failed, EffectRetrying: _retrying, EffectUnknown: _unknown,
    EffectStuck: _stuck, EffectRedriven: _redriven, EffectApproved: None,
}


def _field(item: _Item, name: str) -> Any:
    data = item.summary.data
    return data.get(name) if isinstance(data, dict) else None


def _decided_with(items: list[_Item], index: int) -> list[str]:
    """The decision journaled on ``items[index]`` (an outcome): the domain events right after
    it in the same append (the runtime writes the outcome, then the decision's events,
    then the decision's own effect records)."""
    first = items[index].envelope
    decided, previous = [], first.position
    for item in items[index + 1:]:
        envelope = item.envelope
        if envelope.position != previous + 1 or envelope.stream != first.stream or \
                envelope.recorded_at != first.recorded_at or _runtime(envelope.type):
            break
        previous = envelope.position
        decided.append(f"{envelope.type} #{envelope.position}")
    return decided


def _reasoning(items: Iterable[_Item]) -> list[Reasoning]:
    found = []
    for item in items:
        data = item.summary.data
        if not isinstance(data, dict):
            continue
        own = _REASONING_OF.get(item.envelope.type)
        if own is not None and data.get(own):
            found.append(Reasoning(item.summary.position, item.envelope.type, own, str(data[own])))
            continue
        if _runtime(item.envelope.type):
            continue
        for name in REASONING_FIELDS:
            text = data.get(name)
            if text not in (None, "", [], {}):
                found.append(Reasoning(item.summary.position, item.envelope.type, name,
                                       text if isinstance(text, str) else msgspec.json.encode(text).decode()))
    return found


def _runtime(type_name: str) -> bool:
    """A record the runtime keeps about a run (effects, timers, policies), not what the
    agent decided; an AI run's own events (``z8.ai.*``) are what it decided."""
    return type_name.startswith("z8.") and not type_name.startswith("z8.ai.")


_REASONING_OF: Final = {"z8.ai.ModelStep": "text"}
"""Runtime-defined events whose field is the reasoning: a model step's text."""


# --- payload values ------------------------------------------------------------------------


def _is_erased(value: Any) -> bool:
    """``z8.ERASED`` (what a personal field reads as once its subject is erased), known by
    its repr so that the audit needs nothing from the vault to recognise it."""
    return repr(value) == "z8.ERASED"


class _Unusual(Exception):
    """A value ``to_builtins`` cannot take as is (erased or sealed personal data, say)."""


def _refuse(value: Any) -> Any:
    raise _Unusual


def _json_values(payload: Any, path: str, erased: list[str]) -> Any:
    """``payload`` as JSON values: msgspec's fast conversion, or the careful walk when
    something in it needs a look (erased personal data is noted where it was)."""
    try:
        return msgspec.to_builtins(payload, str_keys=True, enc_hook=_refuse)
    except _Unusual:
        return _plain(payload, path, erased)


def _plain(value: Any, path: str, erased: list[str]) -> Any:
    """``value`` as JSON values, erased personal data replaced (and its place noted)."""
    if isinstance(value, _PLAIN) and type(value) in _PLAIN:
        return value
    if isinstance(value, msgspec.Struct):
        config = value.__struct_config__
        out: dict[str, Any] = {}
        if config.tag_field is not None:
            out[config.tag_field] = config.tag
        for name in value.__struct_fields__:
            out[name] = _plain(getattr(value, name), f"{path}.{name}", erased)
        return out
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{path}.{k}", erased) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v, f"{path}[{i}]", erased) for i, v in enumerate(value)]
    if _is_erased(value) or (isinstance(value, msgspec.msgpack.Ext) and value.code == _ERASED_EXT):
        erased.append(path)
        return ERASED_TEXT
    if isinstance(value, msgspec.msgpack.Ext) and value.code == _SEALED_EXT:
        return SEALED_TEXT  # personal data in a field typed Any: kept sealed, not opened here
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    try:
        return msgspec.to_builtins(value)
    except TypeError:
        return repr(value)


def _iso(ns: int) -> str:
    moment = _dt.datetime.fromtimestamp(ns / 1e9, _dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
