"""The one place where writes are decided: version checks, positions, the hash chain.

Every backend runs its write transactions through :class:`Batch` over its own
:class:`WriteView`, so the rules (nothing of a rejected append is written; versions
and positions gap-free; each record chained to the previous one) live here once.
A batch holds many callers' operations committed in one transaction (group commit).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import msgspec

from z8.errors import DuplicateEvent, InvalidPosition, InvalidSnapshot, RecordExpired, WrongExpectedVersion

from ._envelope import Envelope, Expected, Snapshot, expectation_holds, seal

__all__ = ["WriteView", "Batch", "StreamAppend", "AppendOp", "SnapshotOp", "AckOp", "Op"]


class StreamAppend(msgspec.Struct, frozen=True):
    """One stream's part of an append, payloads already encoded:
    (type, schema, data, chosen event id or None, own causation id or None)."""

    stream: str
    expected: Expected
    events: list[tuple[str, int, bytes, str | None, str | None]]


class AppendOp(msgspec.Struct, frozen=True):
    parts: list[StreamAppend]
    causation_id: str | None
    correlation_id: str | None
    actor: str | None


class SnapshotOp(msgspec.Struct, frozen=True):
    stream: str
    version: int
    schema: int
    data: bytes


class AckOp(msgspec.Struct, frozen=True):
    name: str
    position: int


Op = AppendOp | SnapshotOp | AckOp

REJECTIONS = (WrongExpectedVersion, DuplicateEvent, InvalidSnapshot, InvalidPosition, RecordExpired)
"""Errors an op raises before writing anything: they fail that op alone."""


class WriteView(Protocol):
    """A backend's open write transaction, as the batch sees it."""

    def last(self) -> tuple[int, bytes]:
        """Head position and its hash ((0, GENESIS_HASH) when empty)."""

    def stream_version(self, stream: str) -> int:
        """The stream's version; raises ``RecordExpired`` for an expired stream (nothing
        may be written to it)."""

    def has_event(self, event_id: str) -> bool: ...
    def flush(
        self,
        events: list[tuple[Envelope, bytes]],
        heads: dict[str, tuple[int, int, bytes]],
        last: tuple[int, bytes],
    ) -> None:
        """Write a batch's events (in position order) with their index entries, the
        stream heads and the log head."""

    def get_snapshot(self, stream: str) -> Snapshot | None: ...
    def put_snapshot(self, snapshot: Snapshot) -> None: ...
    def get_cursor(self, name: str) -> int: ...
    def put_cursor(self, name: str, position: int) -> None: ...

    # retention (``_retention``): reading and replacing records already written
    def record(self, position: int) -> bytes | None: ...
    def stream_positions(self, stream: str) -> list[int]: ...
    def replace_record(self, position: int, record: bytes) -> None: ...
    def mark_expired(self, stream: str) -> None:
        """From now on ``stream_version(stream)`` raises ``RecordExpired``."""

    def drop_snapshot(self, stream: str) -> None: ...
    def get_meta(self, key: bytes) -> bytes | None: ...
    def put_meta(self, key: bytes, value: bytes | None) -> None: ...


class Batch:
    """The operations of one write transaction, applied in arrival order."""

    def __init__(self, view: WriteView, new_ids: Callable[[int], list[str]]) -> None:
        self._view = view
        self._new_ids = new_ids
        self._position, self._prev_hash = view.last()
        self._versions: dict[str, int] = {}
        self._heads: dict[str, tuple[int, int, bytes]] = {}
        self._staged: list[tuple[Envelope, bytes]] = []
        self._chosen_ids: set[str] = set()

    def run(self, op: Op) -> object:
        """Apply ``op``; return its result, or the rejection it raised before writing.

        Rejections are checked before an op writes anything, so returning one keeps the
        other ops of the batch. Any other exception leaves the transaction half-written
        and propagates: the backend must abort the whole batch.
        """
        try:
            if type(op) is AppendOp:
                return self._append(op)
            if type(op) is SnapshotOp:
                return self._snapshot(op)
            if type(op) is AckOp:
                return self._ack(op)
            return op.apply(self)  # an op defined beside its rules (retention) applies itself
        except REJECTIONS as rejection:
            return rejection

    def finish(self) -> None:
        """Write the events, stream heads and log head of this batch (before commit)."""
        if self._staged:
            self._view.flush(self._staged, self._heads, (self._position, self._prev_hash))

    def _version(self, stream: str) -> int:
        version = self._versions.get(stream)
        if version is None:
            version = self._versions[stream] = self._view.stream_version(stream)
        return version

    def _check(self, op: AppendOp) -> None:
        """Raise before anything is written if any part's expectation fails."""
        planned: dict[str, int] = {}
        for part in op.parts:
            actual = planned.get(part.stream)
            if actual is None:
                actual = self._version(part.stream)
            if not expectation_holds(part.expected, actual):
                raise WrongExpectedVersion(part.stream, part.expected, actual)
            planned[part.stream] = actual + len(part.events)
        chosen = [event[3] for part in op.parts for event in part.events if event[3] is not None]
        if chosen:
            seen = set()
            for event_id in chosen:
                if event_id in seen or event_id in self._chosen_ids or self._view.has_event(event_id):
                    raise DuplicateEvent(event_id)
                seen.add(event_id)
            self._chosen_ids.update(seen)

    def _append(self, op: AppendOp) -> list[Envelope]:
        self._check(op)
        staged = self._staged
        position, prev_hash = self._position, self._prev_hash
        recorded_at = time.time_ns()
        ids = iter(self._new_ids(sum(len(part.events) for part in op.parts)))
        written: list[Envelope] = []
        for part in op.parts:
            stream = part.stream
            version = self._version(stream)
            for type_, schema, data, event_id, causation_id in part.events:
                position += 1
                version += 1
                envelope, record = seal(
                    event_id or next(ids), stream, version, position, type_, data,
                    causation_id or op.causation_id, op.correlation_id, op.actor, recorded_at, schema, prev_hash,
                )
                staged.append((envelope, record))
                prev_hash = envelope.hash
                written.append(envelope)
            self._versions[stream] = version
            self._heads[stream] = (version, position, prev_hash)
        self._position, self._prev_hash = position, prev_hash
        return written

    def _snapshot(self, op: SnapshotOp) -> bool:
        current = self._version(op.stream)
        if op.version > current:
            raise InvalidSnapshot(
                f"cannot snapshot {op.stream!r} at version {op.version}: the stream is at "
                f"version {current}; snapshot only state folded from written events"
            )
        existing = self._view.get_snapshot(op.stream)
        if existing is not None and existing.version > op.version:
            return False  # a newer snapshot already stands; older state never replaces it
        self._view.put_snapshot(Snapshot(op.stream, op.version, op.schema, op.data, time.time_ns()))
        return True

    def _ack(self, op: AckOp) -> int:
        if op.position > self._position:
            raise InvalidPosition(
                f"cannot ack position {op.position} for {op.name!r}: the journal's head is "
                f"{self._position}; ack only positions you were delivered"
            )
        stored = self._view.get_cursor(op.name)
        if op.position > stored:
            self._view.put_cursor(op.name, op.position)
            return op.position
        return stored
