"""The embedded LMDB journal: one writer thread, group commit, mmap reads.

Engine file (larger than most on purpose): the storage layout, the writer thread and
the map-size handling belong together because each depends on the others' locking.

Layout (named databases, big-endian keys so LMDB order is log order):
  events      position            -> sealed record (see ``_envelope``)
  streams     stream NUL version  -> position
  heads       stream              -> version, position, hash of the stream's last event
                                     (and a byte 0x01 once the stream was expired)
  ids         event id            -> position
  caused      causation id        -> positions (dupsort)
  correlated  correlation id      -> positions (dupsort)
  snapshots   stream              -> Snapshot
  cursors     name                -> position
  meta        b"head"             -> position, hash  |  b"format" -> format version
              b"retention.pending"-> expiry acts whose tombstones are not all written

Writes: callers enqueue ops; the writer takes everything queued (up to
``MAX_BATCH_OPS``), applies it in one write transaction through ``_commit.Batch``,
commits (fsync when durable), then releases every caller at once. Several processes
may share a path: LMDB serialises their write transactions, and positions, versions
and hashes are all read inside the transaction, so the log stays gap-free and chained.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any, Literal, TypeVar

import lmdb
import msgspec
import structlog

from z8.errors import (
    InvalidArgument,
    JournalAlreadyOpen,
    JournalClosed,
    JournalCorrupt,
    JournalError,
    JournalPathError,
    RecordExpired,
)
from z8.ids import UuidV7

from ._commit import Batch, Op
from ._envelope import (
    GENESIS_HASH,
    Envelope,
    Snapshot,
    decode_record,
    position_key,
    stream_key,
    stream_prefix,
)
from ._journal import Journal
from ._retention import PENDING_KEY, TombstoneOp, expired_error
from ._types import TypeRegistry
from ._vault import LmdbVault

__all__ = ["LmdbJournal", "open_journal", "DEFAULT_MAP_SIZE"]

log = structlog.get_logger("z8.journal")

T = TypeVar("T")
Durability = Literal["sync", "fast"]

DEFAULT_MAP_SIZE = 1 << 30
"""Initial map size (1 GiB of address space; the file grows only as data is written)."""
MAX_BATCH_OPS = 4096
"""Most ops one group commit takes from the queue."""
FORMAT_VERSION = 1
"""The format a new journal is stamped with."""
FORMAT_UNDERSTOOD = 2
"""The newest format this z8 opens; expiry stamps 2 (tombstones, expired heads) on first use."""

_DBS = ("events", "streams", "heads", "ids", "caused", "correlated", "snapshots", "cursors", "meta")
_DUPSORT = frozenset({"caused", "correlated"})
_HEAD_KEY = b"head"
_HEAD_SIZE = 48  # a stream head: version, position, hash; one more byte marks it expired
_FORMAT_KEY = b"format"
_STOP = object()
_MAX_VERSION_KEY = (1 << 64) - 1

_encode_snapshot = msgspec.msgpack.Encoder().encode
_decode_snapshot = msgspec.msgpack.Decoder(Snapshot).decode

# LMDB allows one environment per path per process: a second open of the same file
# would share (and on close, drop) its POSIX locks. This set enforces that.
_open_paths: set[str] = set()
_open_paths_lock = threading.Lock()


def open_journal(
    path: str | os.PathLike[str],
    *,
    durability: Durability = "sync",
    map_size: int = DEFAULT_MAP_SIZE,
    types: TypeRegistry | None = None,
) -> LmdbJournal:
    """Open (creating if needed) the LMDB journal in directory ``path``.

    ``durability="sync"`` (default): an append returns only after its commit is
    fsynced, surviving power loss. ``"fast"``: commits are not fsynced; they survive
    a process crash (the OS holds them) but the last ones may be lost on power loss.
    ``map_size`` is only the starting address space: a full map is grown and the
    write retried, never surfaced. Several processes may open the same path.
    """
    if durability not in ("sync", "fast"):
        raise InvalidArgument(f"durability must be 'sync' or 'fast', got {durability!r}")
    if isinstance(map_size, bool) or not isinstance(map_size, int) or map_size < (1 << 16):
        raise InvalidArgument(f"map_size must be an int of at least 65536 bytes, got {map_size!r}")
    directory = _prepare_directory(Path(path))
    key = str(directory.resolve())
    with _open_paths_lock:
        if key in _open_paths:
            raise JournalAlreadyOpen(
                f"journal {key!r} is already open in this process; share that Journal object "
                "(LMDB allows one open environment per path per process)"
            )
        _open_paths.add(key)
    try:
        return LmdbJournal(key, durability, map_size, types)
    except BaseException:
        with _open_paths_lock:
            _open_paths.discard(key)
        raise


def _prepare_directory(directory: Path) -> Path:
    if directory.exists() and not directory.is_dir():
        raise JournalPathError(
            f"journal path {str(directory)!r} is a file; a journal is a directory — "
            "pass a directory path (it will be created)"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JournalPathError(f"cannot create journal directory {str(directory)!r}: {exc.strerror}") from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise JournalPathError(
            f"journal directory {str(directory)!r} is not writable by this process; "
            "fix its permissions or choose another path"
        )
    return directory


class _ResizeGate:
    """Readers/writer gate: LMDB's map may only be resized with no transaction open."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._resizing = False

    @contextmanager
    def txn(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if self._resizing and not self._active:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._resizing = True
            while self._active:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


class LmdbJournal(Journal):
    """The embedded journal on LMDB. Create it with :func:`open_journal`."""

    def __init__(self, path: str, durability: Durability, map_size: int, types: TypeRegistry | None) -> None:
        super().__init__(types, path)
        self.path = path
        self.durability = durability
        self._gate = _ResizeGate()
        try:
            self._env = lmdb.open(
                path, map_size=map_size, max_dbs=len(_DBS), sync=durability == "sync",
                metasync=durability == "sync", max_readers=512, readahead=False,
            )
        except lmdb.Error as exc:
            raise JournalPathError(f"cannot open journal at {path!r}: {exc}") from exc
        self._env.reader_check()  # free reader slots left by processes that died
        self._dbs = self._open_dbs()
        self._use_vault(LmdbVault(Path(path)))
        self._new_ids = UuidV7().many
        if self._read(lambda txn: txn.get(PENDING_KEY, db=self._dbs["meta"])) is not None:
            self._commit([TombstoneOp(None)])  # an expiry was interrupted: finish its tombstones
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name=f"z8-journal-writer:{path}", daemon=True)
        self._writer.start()

    def _open_dbs(self) -> dict[str, Any]:
        env = self._env
        with env.begin(write=True) as txn:
            dbs = {
                name: env.open_db(name.encode(), txn=txn, dupsort=name in _DUPSORT, dupfixed=name in _DUPSORT)
                for name in _DBS
            }
            stored = txn.get(_FORMAT_KEY, db=dbs["meta"])
            if stored is None:
                txn.put(_FORMAT_KEY, FORMAT_VERSION.to_bytes(4, "big"), db=dbs["meta"])
            elif int.from_bytes(stored, "big") > FORMAT_UNDERSTOOD:
                raise JournalCorrupt(
                    f"journal {self.path!r} has format {int.from_bytes(stored, 'big')}, newer than this "
                    f"z8 understands ({FORMAT_UNDERSTOOD}); upgrade z8 to open it"
                )
        return dbs

    # --- writes ------------------------------------------------------------------------

    async def _execute(self, op: Op) -> object:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lifecycle:  # close() cannot slip its stop marker in ahead of this op
            self._check_open()
            self._queue.put((op, loop, future))
        return await future

    def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH_OPS:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if _STOP in batch:
                stopping = True
                batch = [item for item in batch if item is not _STOP]
            if batch:
                ops = [op for op, _, _ in batch]
                try:
                    results = self._commit(ops)
                except Exception as exc:  # noqa: BLE001 - last line of defence: never die holding callers
                    results = self._failed(ops, exc)
                _deliver(batch, results)
                self._notifier.notify()
        self._fail_leftovers()

    def _fail_leftovers(self) -> None:
        leftovers = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                leftovers.append(item)
        _deliver(leftovers, [JournalClosed(self.path)] * len(leftovers))

    def _commit(self, ops: list[Op]) -> list[object]:
        """Apply ``ops`` in one transaction, growing the map as often as needed."""
        while True:
            try:
                with self._gate.txn(), self._env.begin(write=True) as txn:
                    batch = Batch(_LmdbView(txn, self._dbs), self._new_ids)
                    results = [batch.run(op) for op in ops]
                    batch.finish()
                return results  # the with-block committed (fsync when durable)
            except (lmdb.MapFullError, lmdb.MapResizedError) as full:
                try:
                    self._grow() if isinstance(full, lmdb.MapFullError) else self._adopt_map_size()
                except Exception as exc:  # noqa: BLE001 - e.g. no address space left to map
                    return self._failed(ops, exc)
            except Exception as exc:  # the writer must outlive any failure, or callers hang
                if len(ops) > 1:  # one caller's bad op must not fail the others: retry each alone
                    return [self._commit([op])[0] for op in ops]
                return self._failed(ops, exc)

    def _failed(self, ops: list[Op], exc: BaseException) -> list[object]:
        log.error("journal.commit_failed", path=self.path, error=repr(exc))
        failure = JournalError(f"journal write failed and was rolled back, nothing was written: {exc!r}")
        return [failure] * len(ops)

    def _grow(self) -> None:
        with self._gate.exclusive():
            size = self._env.info()["map_size"] * 2
            self._env.set_mapsize(size)
        log.info("journal.map_grown", path=self.path, map_size=size)

    def _adopt_map_size(self) -> None:
        with self._gate.exclusive():
            self._env.set_mapsize(0)  # 0: take the size another process grew the map to

    def _close(self) -> None:
        self._queue.put(_STOP)
        self._writer.join()
        with self._gate.exclusive():
            self._env.close()
        with _open_paths_lock:
            _open_paths.discard(self.path)

    def _rewrite_record(self, position: int, record: bytes | None) -> None:
        """Overwrite (or delete, with None) the stored record at ``position``, bypassing
        every rule. Exists only so tests and demos can prove ``verify()`` catches it."""
        with self._gate.txn(), self._env.begin(write=True) as txn:
            if record is None:
                txn.delete(position_key(position), db=self._dbs["events"])
            else:
                txn.put(position_key(position), record, db=self._dbs["events"])

    # --- reads -------------------------------------------------------------------------

    def _read(self, fn: Callable[[Any], T]) -> T:
        while True:
            try:
                with self._gate.txn(), self._env.begin(buffers=True) as txn:
                    return fn(txn)
            except lmdb.MapResizedError:
                self._adopt_map_size()
            except msgspec.DecodeError as exc:
                raise JournalCorrupt(f"a stored record in {self.path!r} does not decode: {exc}; run verify()") from exc

    def _read_all(self, from_position: int, limit: int | None) -> list[Envelope]:
        def read(txn: Any) -> list[Envelope]:
            cursor = txn.cursor(db=self._dbs["events"])
            if not cursor.set_range(position_key(from_position)):
                return []
            values = cursor.iternext(keys=False, values=True)
            return [decode_record(v) for v in (values if limit is None else islice(values, limit))]

        return self._read(read)

    def _records(self, from_position: int, limit: int) -> list[tuple[int, bytes]]:
        def read(txn: Any) -> list[tuple[int, bytes]]:
            cursor = txn.cursor(db=self._dbs["events"])
            if not cursor.set_range(position_key(from_position)):
                return []
            return [(int.from_bytes(k, "big"), bytes(v)) for k, v in islice(cursor.iternext(), limit)]

        return self._read(read)

    def _stream_records(self, stream: str, from_version: int, limit: int) -> list[tuple[int, int, bytes | None]]:
        prefix = stream_prefix(stream)
        cut = len(prefix)

        def read(txn: Any) -> list[tuple[int, int, bytes | None]]:
            cursor, events = txn.cursor(db=self._dbs["streams"]), txn.cursor(db=self._dbs["events"])
            if not cursor.set_range(stream_key(prefix, from_version)):
                return []
            found = []
            for key, value in islice(cursor.iternext(), limit):
                if key[:cut] != prefix or len(key) != cut + 8:
                    break
                record = events.get(value)
                found.append((int.from_bytes(key[cut:], "big"), int.from_bytes(value, "big"),
                              None if record is None else bytes(record)))
            return found

        return self._read(read)

    def _stream_head(self, stream: str) -> tuple[int, int, bytes] | None:
        value = self._read(lambda txn: _bytes_or_none(txn.get(stream.encode(), db=self._dbs["heads"])))
        if not value:
            return None
        return int.from_bytes(value[:8], "big"), int.from_bytes(value[8:16], "big"), value[16:48]

    def _read_stream(self, stream: str, from_version: int | None, backward: bool, limit: int | None) -> list[Envelope]:
        prefix = stream_prefix(stream)
        cut = len(prefix)

        def read(txn: Any) -> list[Envelope]:
            head = txn.get(prefix[:-1], db=self._dbs["heads"])
            if head is not None and len(head) > _HEAD_SIZE:
                raise expired_error(stream)
            cursor = txn.cursor(db=self._dbs["streams"])
            if backward:
                target = stream_key(prefix, min(from_version or _MAX_VERSION_KEY, _MAX_VERSION_KEY))
                found = cursor.set_range(target)
                if not (found and cursor.key() == target) and not (cursor.prev() if found else cursor.last()):
                    return []
                entries = cursor.iterprev()
            else:
                if not cursor.set_range(stream_key(prefix, from_version or 1)):
                    return []
                entries = cursor.iternext()
            positions = []
            for key, value in entries:
                if key[:cut] != prefix or len(key) != cut + 8:
                    break
                positions.append(bytes(value))
                if limit is not None and len(positions) >= limit:
                    break
            return self._fetch(txn, positions)

        if limit == 0:
            return []
        return self._read(read)

    def _get(self, positions: Sequence[int]) -> list[Envelope]:
        return self._read(lambda txn: self._fetch(txn, [position_key(p) for p in positions]))

    def _fetch(self, txn: Any, keys: list[bytes]) -> list[Envelope]:
        get = txn.cursor(db=self._dbs["events"]).get  # a Python loop of get() beats getmulti here
        records = [get(key) for key in keys]
        if None in records:
            raise JournalCorrupt("an index points at a position that is not in the log; run verify()")
        return [decode_record(record) for record in records]

    def _stream_version(self, stream: str) -> int:
        value = self._read(lambda txn: _bytes_or_none(txn.get(stream.encode(), db=self._dbs["heads"])))
        return int.from_bytes(value[:8], "big") if value else 0

    def _head(self) -> tuple[int, bytes]:
        value = self._read(lambda txn: _bytes_or_none(txn.get(_HEAD_KEY, db=self._dbs["meta"])))
        return _unpack_head(value)

    def _position_of(self, event_id: str) -> int | None:
        value = self._read(lambda txn: _bytes_or_none(txn.get(event_id.encode(), db=self._dbs["ids"])))
        return int.from_bytes(value, "big") if value else None

    def _dup_positions(self, db: str, key: str) -> list[int]:
        def read(txn: Any) -> list[int]:
            cursor = txn.cursor(db=self._dbs[db])
            if not cursor.set_key(key.encode()):
                return []
            return [int.from_bytes(v, "big") for v in cursor.iternext_dup(keys=False, values=True)]

        return self._read(read)

    def _caused_by(self, event_id: str) -> list[int]:
        return self._dup_positions("caused", event_id)

    def _correlated(self, correlation_id: str) -> list[int]:
        return self._dup_positions("correlated", correlation_id)

    def _expired(self, stream: str) -> bool:
        value = self._read(lambda txn: _bytes_or_none(txn.get(stream.encode(), db=self._dbs["heads"])))
        return value is not None and len(value) > _HEAD_SIZE

    def _stream_heads(self, prefix: str) -> list[tuple[str, int, int, bool]]:
        start = prefix.encode()

        def read(txn: Any) -> list[tuple[str, int, int, bool]]:
            cursor = txn.cursor(db=self._dbs["heads"])
            found = []
            if cursor.set_range(start):
                for key, value in cursor.iternext():
                    if not bytes(key).startswith(start):
                        break
                    found.append((bytes(key).decode(), int.from_bytes(value[:8], "big"),
                                  int.from_bytes(value[8:16], "big"), len(value) > _HEAD_SIZE))
            return found

        return self._read(read)

    def _load_snapshot(self, stream: str) -> Snapshot | None:
        value = self._read(lambda txn: _bytes_or_none(txn.get(stream.encode(), db=self._dbs["snapshots"])))
        return _decode_snapshot(value) if value else None

    def _cursor(self, name: str) -> int:
        value = self._read(lambda txn: _bytes_or_none(txn.get(name.encode(), db=self._dbs["cursors"])))
        return int.from_bytes(value, "big") if value else 0


class _LmdbView:
    """The write transaction as ``_commit.Batch`` sees it."""

    __slots__ = ("_txn", "_dbs")

    def __init__(self, txn: Any, dbs: dict[str, Any]) -> None:
        self._txn, self._dbs = txn, dbs

    def last(self) -> tuple[int, bytes]:
        return _unpack_head(self._txn.get(_HEAD_KEY, db=self._dbs["meta"]))

    def stream_version(self, stream: str) -> int:
        value = self._txn.get(stream.encode(), db=self._dbs["heads"])
        if value and len(value) > _HEAD_SIZE:
            raise RecordExpired(f"stream {stream!r} was expired under its retention rule; nothing more can be written to it")
        return int.from_bytes(value[:8], "big") if value else 0

    def has_event(self, event_id: str) -> bool:
        return self._txn.get(event_id.encode(), db=self._dbs["ids"]) is not None

    def flush(
        self,
        events: list[tuple[Envelope, bytes]],
        heads: dict[str, tuple[int, int, bytes]],
        last: tuple[int, bytes],
    ) -> None:
        txn, dbs = self._txn, self._dbs
        keys = [position_key(e.position) for e, _ in events]
        added, _ = txn.cursor(db=dbs["events"]).putmulti(zip(keys, [r for _, r in events]), append=True)
        if added != len(events):
            raise JournalCorrupt("a position being written already holds an event; run verify()")
        prefixes = {stream: stream_prefix(stream) for stream in heads}
        txn.cursor(db=dbs["streams"]).putmulti(
            [(stream_key(prefixes[e.stream], e.version), k) for (e, _), k in zip(events, keys)]
        )
        txn.cursor(db=dbs["ids"]).putmulti([(e.event_id.encode(), k) for (e, _), k in zip(events, keys)])
        caused = [(e.causation_id.encode(), k) for (e, _), k in zip(events, keys) if e.causation_id is not None]
        if caused:
            txn.cursor(db=dbs["caused"]).putmulti(caused)
        correlated = [(e.correlation_id.encode(), k) for (e, _), k in zip(events, keys) if e.correlation_id is not None]
        if correlated:
            txn.cursor(db=dbs["correlated"]).putmulti(correlated)
        txn.cursor(db=dbs["heads"]).putmulti(
            [(s.encode(), v.to_bytes(8, "big") + p.to_bytes(8, "big") + h) for s, (v, p, h) in heads.items()]
        )
        txn.put(_HEAD_KEY, last[0].to_bytes(8, "big") + last[1], db=dbs["meta"])

    def get_snapshot(self, stream: str) -> Snapshot | None:
        value = self._txn.get(stream.encode(), db=self._dbs["snapshots"])
        return _decode_snapshot(value) if value else None

    def put_snapshot(self, snapshot: Snapshot) -> None:
        self._txn.put(snapshot.stream.encode(), _encode_snapshot(snapshot), db=self._dbs["snapshots"])

    def get_cursor(self, name: str) -> int:
        value = self._txn.get(name.encode(), db=self._dbs["cursors"])
        return int.from_bytes(value, "big") if value else 0

    def put_cursor(self, name: str, position: int) -> None:
        self._txn.put(name.encode(), position.to_bytes(8, "big"), db=self._dbs["cursors"])

    def record(self, position: int) -> bytes | None:
        return self._txn.get(position_key(position), db=self._dbs["events"])

    def stream_positions(self, stream: str) -> list[int]:
        prefix = stream_prefix(stream)
        cursor = self._txn.cursor(db=self._dbs["streams"])
        positions = []
        if cursor.set_range(stream_key(prefix, 1)):
            for key, value in cursor.iternext():
                if key[: len(prefix)] != prefix or len(key) != len(prefix) + 8:
                    break
                positions.append(int.from_bytes(value, "big"))
        return positions

    def replace_record(self, position: int, record: bytes) -> None:
        self._txn.put(position_key(position), record, db=self._dbs["events"])

    def mark_expired(self, stream: str) -> None:
        heads, meta = self._dbs["heads"], self._dbs["meta"]
        value = self._txn.get(stream.encode(), db=heads)
        if value is not None and len(value) == _HEAD_SIZE:
            self._txn.put(stream.encode(), value + b"\x01", db=heads)
        if int.from_bytes(self._txn.get(_FORMAT_KEY, db=meta), "big") < FORMAT_UNDERSTOOD:
            self._txn.put(_FORMAT_KEY, FORMAT_UNDERSTOOD.to_bytes(4, "big"), db=meta)  # older z8 refuses it

    def drop_snapshot(self, stream: str) -> None:
        self._txn.delete(stream.encode(), db=self._dbs["snapshots"])

    def get_meta(self, key: bytes) -> bytes | None:
        return self._txn.get(key, db=self._dbs["meta"])

    def put_meta(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self._txn.delete(key, db=self._dbs["meta"])
        else:
            self._txn.put(key, value, db=self._dbs["meta"])


def _deliver(items: list[tuple[Op, asyncio.AbstractEventLoop, asyncio.Future[Any]]], results: list[object]) -> None:
    """Release every caller with one wake-up per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], object]]] = {}
    for (_, loop, future), result in zip(items, results):
        by_loop.setdefault(loop, []).append((future, result))
    for loop, pairs in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, pairs)
        except RuntimeError:
            pass  # the caller's loop is closed: nobody is waiting


def _resolve(pairs: list[tuple[asyncio.Future[Any], object]]) -> None:
    for future, result in pairs:
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


def _bytes_or_none(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _unpack_head(value: bytes | None) -> tuple[int, bytes]:
    if not value:
        return 0, GENESIS_HASH
    return int.from_bytes(value[:8], "big"), bytes(value[8:40])
