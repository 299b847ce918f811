"""An in-memory journal for users' tests: the same contract, no disk, nothing durable.

It stores the same sealed records as the LMDB journal and runs writes through the
same ``_commit.Batch``, so chains, versions and rejections behave identically.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from z8.errors import RecordExpired
from z8.ids import UuidV7

from ._commit import Batch, Op
from ._envelope import GENESIS_HASH, Envelope, Snapshot, decode_record
from ._journal import Journal
from ._retention import expired_error
from ._types import TypeRegistry

__all__ = ["MemoryJournal", "open_memory_journal"]


def open_memory_journal(*, types: TypeRegistry | None = None) -> MemoryJournal:
    """A fresh, empty in-memory journal (gone when the object is)."""
    return MemoryJournal(types)


class _State:
    """Everything the memory journal holds; mutated only on commit."""

    def __init__(self) -> None:
        self.records: list[bytes] = []  # index = position - 1
        self.streams: dict[str, list[int]] = {}
        self.heads: dict[str, tuple[int, int, bytes]] = {}
        self.head: tuple[int, bytes] = (0, GENESIS_HASH)
        self.ids: dict[str, int] = {}
        self.caused: dict[str, list[int]] = {}
        self.correlated: dict[str, list[int]] = {}
        self.snapshots: dict[str, Snapshot] = {}
        self.cursors: dict[str, int] = {}
        self.expired: set[str] = set()
        self.meta: dict[bytes, bytes] = {}


class _MemoryView:
    """Buffers one batch's writes so a failed batch leaves the state untouched."""

    def __init__(self, state: _State) -> None:
        self._state = state
        self._events: list[tuple[Envelope, bytes]] = []
        self._heads: dict[str, tuple[int, int, bytes]] = {}
        self._head: tuple[int, bytes] | None = None
        self._snapshots: dict[str, Snapshot] = {}
        self._cursors: dict[str, int] = {}
        self._replaced: dict[int, bytes] = {}
        self._expired: set[str] = set()
        self._dropped: set[str] = set()
        self._meta: dict[bytes, bytes | None] = {}

    def last(self) -> tuple[int, bytes]:
        return self._state.head

    def stream_version(self, stream: str) -> int:
        if stream in self._expired or stream in self._state.expired:
            raise RecordExpired(f"stream {stream!r} was expired under its retention rule; nothing more can be written to it")
        head = self._state.heads.get(stream)
        return head[0] if head else 0

    def flush(
        self,
        events: list[tuple[Envelope, bytes]],
        heads: dict[str, tuple[int, int, bytes]],
        last: tuple[int, bytes],
    ) -> None:
        self._events = events
        self._heads.update(heads)
        self._head = last

    def get_snapshot(self, stream: str) -> Snapshot | None:
        return self._snapshots.get(stream) or self._state.snapshots.get(stream)

    def has_event(self, event_id: str) -> bool:
        return event_id in self._state.ids

    def put_snapshot(self, snapshot: Snapshot) -> None:
        self._snapshots[snapshot.stream] = snapshot

    def get_cursor(self, name: str) -> int:
        return self._cursors.get(name, self._state.cursors.get(name, 0))

    def put_cursor(self, name: str, position: int) -> None:
        self._cursors[name] = position

    def record(self, position: int) -> bytes | None:
        records = self._state.records
        return self._replaced.get(position) or (records[position - 1] if position <= len(records) else None)

    def stream_positions(self, stream: str) -> list[int]:
        return list(self._state.streams.get(stream, ()))

    def replace_record(self, position: int, record: bytes) -> None:
        self._replaced[position] = record

    def mark_expired(self, stream: str) -> None:
        self._expired.add(stream)

    def drop_snapshot(self, stream: str) -> None:
        self._dropped.add(stream)

    def get_meta(self, key: bytes) -> bytes | None:
        return self._meta[key] if key in self._meta else self._state.meta.get(key)

    def put_meta(self, key: bytes, value: bytes | None) -> None:
        self._meta[key] = value

    def commit(self) -> None:
        state = self._state
        for position, record in self._replaced.items():
            state.records[position - 1] = record
        state.expired |= self._expired
        for stream in self._dropped:
            state.snapshots.pop(stream, None)
        for key, value in self._meta.items():
            if value is None:
                state.meta.pop(key, None)
            else:
                state.meta[key] = value
        for envelope, record in self._events:
            state.records.append(record)
            position = envelope.position
            state.streams.setdefault(envelope.stream, []).append(position)
            state.ids[envelope.event_id] = position
            if envelope.causation_id is not None:
                state.caused.setdefault(envelope.causation_id, []).append(position)
            if envelope.correlation_id is not None:
                state.correlated.setdefault(envelope.correlation_id, []).append(position)
        state.heads.update(self._heads)
        if self._head is not None:
            state.head = self._head
        state.snapshots.update(self._snapshots)
        state.cursors.update(self._cursors)


class MemoryJournal(Journal):
    """The journal contract in memory. Create it with :func:`open_memory_journal`."""

    def __init__(self, types: TypeRegistry | None = None) -> None:
        super().__init__(types, "memory")
        self._state = _State()
        self._lock = threading.Lock()
        self._new_ids = UuidV7().many

    async def _execute(self, op: Op) -> object:
        self._check_open()
        with self._lock:
            view = _MemoryView(self._state)
            batch = Batch(view, self._new_ids)
            result = batch.run(op)
            batch.finish()
            view.commit()
        self._notifier.notify()
        if isinstance(result, BaseException):
            raise result
        return result

    def _close(self) -> None:
        pass

    def _rewrite_record(self, position: int, record: bytes | None) -> None:
        """Overwrite (or delete, with None) a stored record, bypassing every rule (tests only)."""
        with self._lock:
            if record is None:
                del self._state.records[position - 1]  # the log closes up: positions shift
            else:
                self._state.records[position - 1] = record

    def _read_all(self, from_position: int, limit: int | None) -> list[Envelope]:
        records = self._state.records
        end = len(records) if limit is None else min(len(records), from_position - 1 + limit)
        return [decode_record(r) for r in records[from_position - 1 : end]]

    def _records(self, from_position: int, limit: int) -> list[tuple[int, bytes]]:
        records = self._state.records
        stop = min(len(records), from_position - 1 + limit)
        return [(i + 1, records[i]) for i in range(from_position - 1, stop)]

    def _read_stream(self, stream: str, from_version: int | None, backward: bool, limit: int | None) -> list[Envelope]:
        if stream in self._state.expired:
            raise expired_error(stream)
        positions = self._state.streams.get(stream, [])
        if backward:
            start = len(positions) if from_version is None else min(from_version, len(positions))
            chosen = positions[:start][::-1]
        else:
            chosen = positions[(from_version or 1) - 1 :]
        return self._get(chosen if limit is None else chosen[:limit])

    def _stream_records(self, stream: str, from_version: int, limit: int) -> list[tuple[int, int, bytes | None]]:
        records = self._state.records
        positions = self._state.streams.get(stream, [])[from_version - 1 : from_version - 1 + limit]
        return [(from_version + i, p, records[p - 1] if p <= len(records) else None) for i, p in enumerate(positions)]

    def _stream_head(self, stream: str) -> tuple[int, int, bytes] | None:
        return self._state.heads.get(stream)

    def _get(self, positions: Sequence[int]) -> list[Envelope]:
        records = self._state.records
        return [decode_record(records[p - 1]) for p in positions]

    def _stream_version(self, stream: str) -> int:
        head = self._state.heads.get(stream)
        return head[0] if head else 0

    def _head(self) -> tuple[int, bytes]:
        return self._state.head

    def _position_of(self, event_id: str) -> int | None:
        return self._state.ids.get(event_id)

    def _caused_by(self, event_id: str) -> list[int]:
        return list(self._state.caused.get(event_id, ()))

    def _correlated(self, correlation_id: str) -> list[int]:
        return list(self._state.correlated.get(correlation_id, ()))

    def _load_snapshot(self, stream: str) -> Snapshot | None:
        return self._state.snapshots.get(stream)

    def _expired(self, stream: str) -> bool:
        return stream in self._state.expired

    def _stream_heads(self, prefix: str) -> list[tuple[str, int, int, bool]]:
        expired = self._state.expired
        return sorted((s, v, p, s in expired) for s, (v, p, _) in self._state.heads.items() if s.startswith(prefix))

    def _cursor(self, name: str) -> int:
        return self._state.cursors.get(name, 0)
