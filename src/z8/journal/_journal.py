"""The ``Journal`` interface and everything its backends share.

A backend supplies storage primitives (the ``_``-methods at the bottom); this class
turns them into the public contract: argument checks, payload encoding, provenance
walks, subscriptions and chain verification. Write rules live in ``_commit``.
"""

from __future__ import annotations

import abc
import functools
import threading
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import Any

import anyio
import msgspec

from z8.errors import (
    EventNotFound,
    InvalidArgument,
    InvalidEvent,
    InvalidSnapshot,
    JournalClosed,
)

from ._commit import AckOp, AppendOp, Op, SnapshotOp, StreamAppend
from ._envelope import (
    ANY,
    GENESIS_HASH,
    Envelope,
    Expected,
    Snapshot,
    VerifyReport,
    check_count,
    check_expected,
    check_record,
    check_stream,
    decode_record,
    is_tombstone,
)
from ._runcheck import Fault, RunCheck
from ._retention import ExpiryCheck, RetentionMethods, register_retention_types
from ._personal import PersonalCodec
from ._subscription import Notifier, Subscription
from ._types import Event, TypeRegistry
from ._vault import ERASED_TYPE, VAULT_STREAM, MemoryVault, SubjectErased, Vault, check_subject

__all__ = ["Journal", "Append"]

_VERIFY_PAGE = 8192
MAX_ID_BYTES = 255
"""Longest event, causation, correlation id or actor name, in UTF-8 bytes (index keys)."""


class Append(msgspec.Struct, frozen=True):
    """One stream's events in an ``append_many`` call."""

    stream: str
    events: Sequence[Any]
    expected_version: Expected = ANY


class Journal(RetentionMethods, abc.ABC):
    """An append-only, hash-chained event log with per-stream versions.

    Writes are async and return once durable; reads are sync and cheap. Every
    implementation passes ``z8.testing.JournalConformance``. Retention and legal holds
    (``expire``, ``hold``, ``release_hold``, ``holds``, ``check_erasable``) come from
    :class:`~z8.journal._retention.RetentionMethods`.
    """

    def __init__(self, types: TypeRegistry | None, label: str) -> None:
        self._types = register_retention_types(types if types is not None else TypeRegistry())
        self._label = label
        self._closed = False
        self._notifier = Notifier()
        self._lifecycle = threading.Lock()
        self._types.register(SubjectErased, name=ERASED_TYPE)
        self._vault: Vault = MemoryVault()
        self._personal = PersonalCodec(self._vault)
        self._encode = functools.partial(self._types.encode, personal=self._personal)
        self._erase_guard: Callable[[str], None] | None = None
        """Called with the subject before an erasure; raises (``LegalHoldActive``) to refuse it.
        None: the journal's own ``check_erasable`` (legal holds), when it has one."""

    # --- lifecycle -------------------------------------------------------------------

    @property
    def types(self) -> TypeRegistry:
        """The registry used to encode appended events and decode payloads."""
        return self._types

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Finish the writes already submitted, end subscriptions, release the store.

        Idempotent. Any later call raises :class:`~z8.errors.JournalClosed`.
        """
        with self._lifecycle:
            if self._closed:
                return
            self._closed = True
        self._close()
        self._vault.close()
        self._notifier.close()

    async def aclose(self) -> None:
        """``close()`` without blocking the event loop while the writer drains."""
        await anyio.to_thread.run_sync(self.close)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise JournalClosed(self._label)

    # --- writes ----------------------------------------------------------------------

    async def append(
        self,
        stream: str,
        events: Sequence[Any],
        expected_version: Expected = ANY,
        *,
        causation_id: str | None = None,
        correlation_id: str | None = None,
        actor: str | None = None,
        allow_reserved: bool = False,
    ) -> list[Envelope]:
        """Append ``events`` to ``stream`` atomically; return their envelopes once durable.

        Raises :class:`~z8.errors.WrongExpectedVersion` (naming expected and actual) if
        the stream is not at ``expected_version``; nothing of a rejected append is
        written. ``allow_reserved`` is for the runtime's own ``$``-streams. Cancelling
        the caller after submission does not withdraw the append.
        """
        op = self._prepare(
            [Append(stream, events, expected_version)], causation_id, correlation_id, actor, allow_reserved
        )
        if self._vault.pending:
            await self._persist_keys()
        return await self._execute(op)  # type: ignore[return-value]

    async def append_many(
        self,
        appends: Sequence[Append],
        *,
        causation_id: str | None = None,
        correlation_id: str | None = None,
        actor: str | None = None,
        allow_reserved: bool = False,
    ) -> list[Envelope]:
        """Append to several streams in one atomic, durable write.

        Either every part is written (in the order given, positions consecutive) or,
        if any part's expected version fails, none is.
        """
        op = self._prepare(appends, causation_id, correlation_id, actor, allow_reserved)
        if self._vault.pending:
            await self._persist_keys()
        return await self._execute(op)  # type: ignore[return-value]

    def _prepare(
        self,
        appends: Sequence[Append],
        causation_id: object,
        correlation_id: object,
        actor: object,
        allow_reserved: bool,
    ) -> AppendOp:
        self._check_open()
        if isinstance(appends, (str, bytes)) or not isinstance(appends, Sequence) or not appends:
            raise InvalidEvent("append_many needs a non-empty list of Append(stream, events, expected_version)")
        for name, value in (("causation_id", causation_id), ("correlation_id", correlation_id), ("actor", actor)):
            _check_id(name, value)
        encode = self._encode
        parts = []
        for item in appends:
            if not isinstance(item, Append):
                raise InvalidEvent(f"append_many takes Append(...) items, got {type(item).__name__}")
            stream = check_stream(item.stream, allow_reserved=allow_reserved)
            expected = check_expected(item.expected_version)
            events = item.events
            if isinstance(events, (str, bytes, msgspec.Struct)) or not isinstance(events, Sequence):
                raise InvalidEvent(f"events for {stream!r} must be a list of events, got {type(events).__name__}")
            if not events:
                raise InvalidEvent(f"no events to append to {stream!r}; pass at least one")
            parts.append(StreamAppend(stream, expected, [_encode_one(encode, event) for event in events]))
        return AppendOp(parts, causation_id, correlation_id, actor)  # type: ignore[arg-type]

    async def save_snapshot(self, stream: str, version: int, state: bytes, schema: int = 1) -> bool:
        """Store ``state`` as ``stream``'s folded state at ``version``.

        Keeps the newest snapshot per stream: returns False (and keeps the stored one)
        when a snapshot at a later version already exists. Raises
        :class:`~z8.errors.InvalidSnapshot` for a version beyond the stream's head.
        """
        self._check_open()
        check_stream(stream, allow_reserved=True)
        check_count("version", version, minimum=1)
        check_count("schema", schema, minimum=1)
        if not isinstance(state, bytes):
            raise InvalidSnapshot(f"snapshot state must be bytes (e.g. msgspec-encoded), got {type(state).__name__}")
        if self._vault.pending:
            await self._persist_keys()
        return await self._execute(SnapshotOp(stream, version, schema, state))  # type: ignore[return-value]

    async def ack(self, name: str, position: int) -> int:
        """Durably record that cursor ``name`` has processed everything up to ``position``.

        Cursors only move forward; returns the cursor's stored position.
        """
        self._check_open()
        self._check_cursor_name(name)
        check_count("position", position, minimum=0)
        return await self._execute(AckOp(name, position))  # type: ignore[return-value]

    # --- reads -----------------------------------------------------------------------

    def read_stream(
        self, stream: str, from_version: int | None = None, *, backward: bool = False, limit: int | None = None
    ) -> list[Envelope]:
        """Events of ``stream`` from ``from_version`` (default: first, or last when backward).

        Raises :class:`~z8.errors.RecordExpired` for a stream expired under retention."""
        self._check_open()
        check_stream(stream, allow_reserved=True)
        check_count("from_version", from_version, minimum=1, optional=True)
        check_count("limit", limit, minimum=0, optional=True)
        return self._read_stream(stream, from_version, backward, limit)

    def read_all(self, from_position: int = 1, limit: int | None = None) -> list[Envelope]:
        """Events of the whole log in global order, from ``from_position``."""
        self._check_open()
        check_count("from_position", from_position, minimum=1)
        check_count("limit", limit, minimum=0, optional=True)
        return self._read_all(from_position, limit)

    async def iter_all(self, from_position: int = 1, *, batch_size: int = 1024) -> AsyncIterator[Envelope]:
        """Iterate the log up to its current head in pages, yielding to the loop between them."""
        position = check_count("from_position", from_position, minimum=1)
        batch = check_count("batch_size", batch_size, minimum=1)
        while True:
            page = self.read_all(position, batch)
            for envelope in page:
                yield envelope
            if len(page) < batch:  # type: ignore[operator]
                return
            position = page[-1].position + 1
            await anyio.sleep(0)

    async def iter_stream(self, stream: str, from_version: int = 1, *, batch_size: int = 1024) -> AsyncIterator[Envelope]:
        """Iterate one stream forward in pages, yielding to the loop between them."""
        version = check_count("from_version", from_version, minimum=1)
        batch = check_count("batch_size", batch_size, minimum=1)
        while True:
            page = self.read_stream(stream, version, limit=batch)
            for envelope in page:
                yield envelope
            if len(page) < batch:  # type: ignore[operator]
                return
            version = page[-1].version + 1
            await anyio.sleep(0)

    def stream_version(self, stream: str) -> int:
        """The stream's last version (0 when it has no events)."""
        self._check_open()
        return self._stream_version(check_stream(stream, allow_reserved=True))

    def head_position(self) -> int:
        """The position of the last committed event (0 when the journal is empty)."""
        self._check_open()
        return self._head()[0]

    def get(self, event_id: str) -> Envelope:
        """The envelope with this event id, or :class:`~z8.errors.EventNotFound`."""
        self._check_open()
        return self._get([self._require(event_id)])[0]

    def load_snapshot(self, stream: str) -> Snapshot | None:
        """The newest snapshot saved for ``stream``, or None."""
        self._check_open()
        return self._load_snapshot(check_stream(stream, allow_reserved=True))

    def cursor(self, name: str) -> int:
        """The last position acked by the named cursor (0 when never acked)."""
        self._check_open()
        self._check_cursor_name(name)
        return self._cursor(name)

    def decode(self, envelope: Envelope) -> Any:
        """The envelope's payload as its registered Struct, upcast to the current schema.

        ``z8.Personal`` fields are decrypted; they read as ``z8.ERASED`` once their subject
        was erased (``VaultError`` if a ciphertext does not belong to the record's subject).
        """
        return self._types.decode(envelope.type, envelope.schema, envelope.data, self._personal)

    # --- personal data -----------------------------------------------------------------

    @property
    def personal(self) -> PersonalCodec:
        """The codec that seals ``z8.Personal`` fields under this journal's vault: for what
        the runtime stores besides event payloads (snapshots, effect requests, results)."""
        return self._personal

    async def erase(self, subject: str, *, by: str, reason: str = "") -> Envelope:
        """Erase ``subject``'s personal data: destroy its keys, and journal the act.

        Journals ``z8.SubjectErased(subject, by, reason)`` in ``$vault`` (its envelope is
        returned), then deletes the subject's keys from the vault and compacts the vault,
        so the key bytes are in no file. From then on every ``z8.Personal`` field of the
        subject reads as ``z8.ERASED`` — in events, snapshots and effect records, wherever
        they were copied — and ``verify()`` still passes: no record changed. Recording new
        personal data for the subject raises ``errors.SubjectErased``. Erasing a subject
        the vault never saw journals the act all the same (and bars later data for it).

        Refused with ``LegalHoldActive`` (nothing written) while a legal hold covers the
        subject. A crash after the act is journaled completes the erasure at the next open.
        Keep personal data out of ``reason``: it is journaled in clear.
        """
        self._check_open()
        check_subject(subject)
        if not isinstance(by, str) or not by:
            raise InvalidArgument(f"by names who erases: a non-empty str, got {by!r}")
        if not isinstance(reason, str):
            raise InvalidArgument(f"reason must be a str, got {type(reason).__name__}")
        self._check_erasable(subject)
        written = await self.append(VAULT_STREAM, [SubjectErased(subject, by, reason)], allow_reserved=True)
        await anyio.to_thread.run_sync(self._vault.destroy, subject)
        return written[0]

    def is_erased(self, subject: str) -> bool:
        """Whether ``subject``'s personal data was erased."""
        self._check_open()
        return self._vault.is_erased(check_subject(subject))

    def _check_erasable(self, subject: str) -> None:
        """Raise (``LegalHoldActive``) when ``subject`` may not be erased now."""
        guard = self._erase_guard or getattr(self, "check_erasable", None)
        if guard is not None:
            guard(subject)

    async def _persist_keys(self) -> None:
        """Store new subject keys durably before the append that uses them."""
        await anyio.to_thread.run_sync(self._vault.persist)

    def _use_vault(self, vault: Vault) -> None:
        """Keep keys in ``vault`` (a backend's own) and finish erasures a crash interrupted."""
        self._vault = self._personal._vault = vault  # noqa: SLF001 - the journal's own codec
        for envelope in self._read_stream(VAULT_STREAM, None, False, None):
            if envelope.type == ERASED_TYPE:
                subject = msgspec.msgpack.decode(envelope.data, type=SubjectErased).subject
                if not vault.is_erased(subject):
                    vault.destroy(subject)

    # --- subscriptions -----------------------------------------------------------------

    def subscribe(
        self,
        from_position: int = 1,
        *,
        name: str | None = None,
        types: Collection[str] | None = None,
        stream_prefix: str | None = None,
        batch_size: int = 512,
    ) -> Subscription:
        """An async iterator over the log from ``from_position`` that then follows the live tail.

        Commits in this process wake it at once; another process's commits are seen
        within 100 ms. With ``name``, it resumes after the position stored by
        ``ack()`` (at-least-once, in order) and ``from_position`` applies only to a
        cursor never acked. ``types``/``stream_prefix`` filter what is delivered.
        """
        self._check_open()
        start = check_count("from_position", from_position, minimum=1)
        if name is not None:
            self._check_cursor_name(name)
            acked = self._cursor(name)
            if acked:
                start = acked + 1
        if stream_prefix is not None and not isinstance(stream_prefix, str):
            raise InvalidArgument("stream_prefix must be a str")
        check_count("batch_size", batch_size, minimum=1)
        wanted = frozenset(types) if types is not None else None
        return Subscription(self, self._notifier, start, name, wanted, stream_prefix, batch_size)  # type: ignore[arg-type]

    @staticmethod
    def _check_cursor_name(name: object) -> None:
        if not isinstance(name, str) or not name or len(name.encode()) > 255:
            raise InvalidArgument(f"cursor name must be a non-empty str of at most 255 bytes, got {name!r}")

    # --- provenance --------------------------------------------------------------------

    def causes(self, event_id: str) -> list[Envelope]:
        """The causation chain of an event, origin first, the event itself last.

        The walk stops at the first ``causation_id`` that names no event (a command id,
        say). Follows an index per step: cost is the chain's length, not the log's.
        """
        self._check_open()
        chain = self._get([self._require(event_id)])
        seen = {event_id}
        while (cause := chain[-1].causation_id) is not None and cause not in seen:
            seen.add(cause)
            position = self._position_of(cause)
            if position is None:
                break
            chain.extend(self._get([position]))
        chain.reverse()
        return chain

    def effects(self, event_id: str) -> list[Envelope]:
        """Everything an event set in motion: its consequences, transitively, in log order."""
        self._check_open()
        self._require(event_id)
        found: set[int] = set()
        frontier = [event_id]
        while frontier:
            children = [p for cause in frontier for p in self._caused_by(cause) if p not in found]
            found.update(children)
            frontier = [envelope.event_id for envelope in self._get(children)]
        return self._get(sorted(found))

    def trace(self, correlation_id: str) -> list[Envelope]:
        """Every event carrying ``correlation_id``, in log order."""
        self._check_open()
        if not isinstance(correlation_id, str):
            raise InvalidArgument("correlation_id must be a str")
        return self._get(self._correlated(correlation_id))

    def _require(self, event_id: object) -> int:
        if not isinstance(event_id, str):
            raise InvalidArgument(f"event id must be a str, got {type(event_id).__name__}")
        position = self._position_of(event_id)
        if position is None:
            raise EventNotFound(f"no event with id {event_id!r} in this journal")
        return position

    # --- verification ------------------------------------------------------------------

    def verify(self, stream: str | None = None) -> VerifyReport:
        """Walk the whole log (or, with ``stream``, one stream) and check every record's
        hash, link, position and version.

        Reports the first position that does not reconcile: an altered byte, a dropped
        event (a missing position, or a log shorter than its recorded head), two events
        swapped, a stream version out of order, or an event rewritten and re-sealed (its
        successor's ``prev_hash`` betrays it). Appends may continue meanwhile; the walk
        covers the log as far as it reaches. It reads every record (about 4 µs each):
        from async code, run it in a thread (``await anyio.to_thread.run_sync(j.verify)``).

        A forger who rewrites the whole tail *and* the recorded head leaves a valid
        chain; keep ``head_hash`` somewhere else (a bundle, a notary) to anchor it.

        With ``stream``: only that stream's events, read through its index — each
        record's own hash, versions 1..head gap-free, the stream's recorded head
        matching its last event, and chain links where two of its events sit at
        consecutive positions (other links run through other streams: only the
        whole-log walk covers them). The report names the first bad event's position
        and version (``first_bad``, ``first_bad_version``).
        """
        self._check_open()
        if stream is not None:
            return self._verify_stream(check_stream(stream, allow_reserved=True))
        recorded_head, recorded_hash = self._head()
        prev, position, versions = GENESIS_HASH, 0, {}
        expiry = self._expiry_check()
        while page := self._records(position + 1, _VERIFY_PAGE):
            for key, record in page:
                due = position + 1
                failure = _check_one(key, due, record, prev, versions, expiry)
                if failure is not None:
                    bad, reason = failure
                    return VerifyReport(False, bad - 1, bad, reason, recorded_head, recorded_hash)
                position, prev = due, record[-32:]
        if position < recorded_head:
            return VerifyReport(
                False, position, position + 1,
                f"the log ends at position {position} but its recorded head is {recorded_head}: "
                "events were dropped from the end", recorded_head, recorded_hash,
            )
        if position == recorded_head and prev != recorded_hash:
            return VerifyReport(
                False, position - 1, position,
                "the last event's hash differs from the recorded head hash", recorded_head, recorded_hash,
            )
        return VerifyReport(True, position, None, None, position, prev)

    def _verify_stream(self, stream: str) -> VerifyReport:
        # The head is read first and the walk stops at its version: events appended
        # meanwhile are neither checked nor mistaken for a head that moved.
        head = self._stream_head(stream)
        if head is None and (first := self._stream_records(stream, 1, 1)) and (head := self._stream_head(stream)) is None:
            return VerifyReport(False, 0, first[0][1], f"stream {stream!r} has events but no recorded head",
                                stream=stream, first_bad_version=first[0][0])
        check, fault, version = RunCheck(stream, vouched=True), None, 1
        expiry = self._expiry_check()
        end = head[0] if head is not None else 0
        while fault is None and version <= end and (
                page := self._stream_records(stream, version, min(_VERIFY_PAGE, end - version + 1))):
            for found, position, record in page:
                if (fault := check.feed(position, record, found)) is not None:
                    break
                if (expired := expiry.see(record, check.last)) is not None:  # type: ignore[arg-type]
                    fault = Fault(expired[0], found if expired[0] == position else 1, expired[1])
                    break
            version = page[-1][0] + 1
        if fault is None:
            fault = check.finish(head)
        version, position, hash_ = head if head is not None else (0, 0, GENESIS_HASH)
        if fault is not None:
            return VerifyReport(False, check.checked, fault.position, fault.reason, position, hash_,
                                stream, fault.version, version)
        return VerifyReport(True, check.checked, None, None, position, hash_, stream, None, version)

    # --- backend primitives ------------------------------------------------------------

    @abc.abstractmethod
    async def _execute(self, op: Op) -> object:
        """Commit one write op durably (grouped with others as the backend likes)."""

    @abc.abstractmethod
    def _close(self) -> None: ...

    @abc.abstractmethod
    def _read_stream(self, stream: str, from_version: int | None, backward: bool, limit: int | None) -> list[Envelope]:
        """The stream's envelopes; raises ``RecordExpired`` (``_retention.expired_error``) for
        an expired stream, checked in the same read as the records."""

    @abc.abstractmethod
    def _read_all(self, from_position: int, limit: int | None) -> list[Envelope]: ...

    @abc.abstractmethod
    def _records(self, from_position: int, limit: int) -> list[tuple[int, bytes]]:
        """Raw stored (position, record) pairs in key order, for verification."""

    def _stream_records(self, stream: str, from_version: int, limit: int) -> list[tuple[int, int, bytes | None]]:
        """Raw ``(version, position, stored record or None)`` of a stream from its index,
        in version order, for verification (None: the index points at no record)."""
        raise NotImplementedError(f"{type(self).__name__} cannot verify one stream")

    def _stream_head(self, stream: str) -> tuple[int, int, bytes] | None:
        """The stream's recorded head ``(version, position, hash)``, or None."""
        raise NotImplementedError(f"{type(self).__name__} cannot verify one stream")

    @abc.abstractmethod
    def _stream_version(self, stream: str) -> int: ...

    @abc.abstractmethod
    def _head(self) -> tuple[int, bytes]:
        """The recorded head: last committed position and its hash."""

    @abc.abstractmethod
    def _get(self, positions: Sequence[int]) -> list[Envelope]: ...

    @abc.abstractmethod
    def _position_of(self, event_id: str) -> int | None: ...

    @abc.abstractmethod
    def _caused_by(self, event_id: str) -> list[int]: ...

    @abc.abstractmethod
    def _correlated(self, correlation_id: str) -> list[int]: ...

    @abc.abstractmethod
    def _load_snapshot(self, stream: str) -> Snapshot | None: ...

    @abc.abstractmethod
    def _cursor(self, name: str) -> int: ...

    @abc.abstractmethod
    def _expired(self, stream: str) -> bool:
        """Whether ``stream`` was expired (its act committed; tombstones may be pending)."""

    @abc.abstractmethod
    def _stream_heads(self, prefix: str) -> list[tuple[str, int, int, bool]]:
        """(stream, version, last position, expired) of every stream named ``prefix…``."""


def _encode_one(encode: Any, event: Any) -> tuple[str, int, bytes, str | None, str | None]:
    if type(event) is not Event:
        return (*encode(event), None, None)
    _check_id("Event.event_id", event.event_id)
    _check_id("Event.causation_id", event.causation_id)
    return (*encode(event.payload), event.event_id, event.causation_id)


def _check_id(name: str, value: object) -> None:
    """Ids are index keys: a non-empty str of at most MAX_ID_BYTES UTF-8 bytes, or None."""
    if value is None:
        return
    if not isinstance(value, str) or not value or len(value.encode()) > MAX_ID_BYTES:
        raise InvalidArgument(
            f"{name} must be a non-empty str of at most {MAX_ID_BYTES} UTF-8 bytes, got {value!r:.80}"
        )


def _check_one(
    key: int, due: int, record: bytes, prev: bytes, versions: dict[str, int], expiry: ExpiryCheck
) -> tuple[int, str] | None:
    """(first bad position, why) if the record stored under ``key`` fails to be ``due``."""
    if key != due:
        return due, f"position {due} is missing (the next stored event is at {key}): an event was dropped"
    # a tombstone cannot hash itself (its bytes are gone): its act vouches for it, below
    tomb = is_tombstone(record)
    reason = None if tomb else check_record(record)
    if reason is not None:
        return due, reason
    try:
        envelope = decode_record(record)
    except msgspec.DecodeError as exc:
        return due, f"the record does not decode as an envelope: {exc}"
    if envelope.position != due:
        return due, f"the event stored at position {due} says it is position {envelope.position}: events were moved or swapped"
    if envelope.prev_hash != prev:
        if due == 1:
            return due, "the first event's prev_hash is not the genesis hash"
        # This record's own hash holds, so the prev_hash it carries is the one written
        # with it: the event before it is the one that changed (rewritten and re-sealed).
        return due - 1, (
            f"the event at position {due - 1} was rewritten: its hash is not the prev_hash "
            f"that position {due} recorded for it"
        )
    version = versions.get(envelope.stream, 0) + 1
    if envelope.version != version:
        return due, f"stream {envelope.stream!r} has version {envelope.version} here where {version} was due"
    versions[envelope.stream] = version
    if tomb or envelope.stream in expiry.acts:
        return expiry.see(record, envelope, tomb)
    return None
