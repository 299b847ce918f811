"""The vault: per-subject data keys for ``z8.Personal`` fields, and their destruction.

Each subject gets a random AES-256 key (a process may add one more when two processes
key a new subject at once: each key has a 4-byte id, stored with every ciphertext).
Erasing a subject deletes its keys, so every ciphertext under them is unreadable for
good, wherever it was copied; the journal's records are not touched and the chain still
verifies.

The LMDB journal keeps its vault in a small LMDB environment of its own,
``<journal>/vault/``, because LMDB never zeroes freed pages: a key deleted from the main
journal's file would linger in it. Erasure deletes the keys, then compacts the vault
(``env.copy(compact=True)`` copies only live pages into ``vault.new/``), swaps the
directories (renames, directory fsynced) and overwrites the old files with zeros before
unlinking them. A crash at any step is finished at the next open (an interrupted
compaction is redone from a flag written with the deletion; leftover directories are
scrubbed); an erasure journaled but not yet applied is applied at open from ``$vault``.
Other processes sharing the journal take ``vault.lock`` (flock) around every use of the
vault's files and reopen them when they were swapped; their cached keys are dropped
within 0.1 s of a swap.

New keys are written (fsynced, whatever the journal's durability) before the append that
uses them: ``pending`` tells the journal to call ``persist`` first. A key written for an
append that then failed is an orphan, harmless.

Limits: deleted files are overwritten once before unlinking, which does not reach copies
a file system or device keeps elsewhere (copy-on-write file systems, SSD remapping,
backups, snapshots); and a running process may still hold a key in memory.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import msgspec
import structlog
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from z8 import errors
from z8.errors import VaultError

from ._fsync import fsync_path

__all__ = ["Vault", "MemoryVault", "LmdbVault", "SubjectErased", "VAULT_STREAM", "ERASED_TYPE", "check_subject"]

log = structlog.get_logger("z8.vault")

T = TypeVar("T")

VAULT_STREAM = "$vault"
"""The stream where erasures are journaled."""
ERASED_TYPE = "z8.SubjectErased"
MAX_SUBJECT_BYTES = 255
_KEY_CACHE = 100_000
"""Keys cached per process before the cache is dropped (and refilled from the vault)."""
_RECHECK = 0.1
"""Seconds between checks that another process did not compact (swap) the vault."""


class SubjectErased(msgspec.Struct, frozen=True):
    """Journaled in ``$vault`` (type ``z8.SubjectErased``) when ``subject``'s keys are
    destroyed: who asked (``by``) and why. Keep personal data out of ``reason``."""

    subject: str
    by: str
    reason: str = ""


def check_subject(subject: object) -> str:
    """A subject is a non-empty str of at most 255 UTF-8 bytes without NUL."""
    if not isinstance(subject, str) or not subject or "\x00" in subject or len(subject.encode()) > MAX_SUBJECT_BYTES:
        raise VaultError(
            f"a subject is a non-empty str of at most {MAX_SUBJECT_BYTES} UTF-8 bytes without NUL, got {subject!r:.80}"
        )
    return subject


class Vault(abc.ABC):
    """Per-subject keys, cached; a backend stores them (``_load``, ``persist``, ``destroy``)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._enc: dict[str, tuple[bytes, AESGCM]] = {}
        self._dec: dict[tuple[str, bytes], AESGCM] = {}
        self._erased: set[str] = set()
        self._pending: dict[str, tuple[bytes, bytes]] = {}

    @property
    def pending(self) -> bool:
        """Whether keys were made that are not stored yet (``persist`` them before appending)."""
        return bool(self._pending)

    def encryptor(self, subject: str) -> tuple[bytes, AESGCM]:
        """(key id, cipher) to seal ``subject``'s data; raises ``errors.SubjectErased``
        for an erased subject. Makes a key (pending until ``persist``) for a new one."""
        self._recheck()
        found = self._enc.get(subject)
        if found is not None:
            return found
        with self._lock:
            found = self._enc.get(subject)
            if found is not None:
                return found
            check_subject(subject)
            pending = self._pending.get(subject)
            if pending is not None:
                kid, key = pending
            else:
                keys, erased = self._load(subject) if subject not in self._erased else ({}, True)
                if erased:
                    self._erased.add(subject)
                    raise errors.SubjectErased(
                        f"subject {subject!r} was erased: personal data for it can no longer be recorded"
                    )
                if keys:
                    kid, key = next(iter(keys.items()))
                else:
                    kid, key = os.urandom(4), AESGCM.generate_key(bit_length=256)
                    self._new_key(subject, kid, key)
            cipher = AESGCM(key)
            self._remember()
            self._enc[subject] = (kid, cipher)
            self._dec[(subject, kid)] = cipher
            return kid, cipher

    def decryptor(self, subject: str, kid: bytes) -> AESGCM | None:
        """The cipher of ``subject``'s key ``kid``; None when the subject is erased.
        VaultError when no such key exists (a ciphertext moved from another subject's
        record, or a lost vault)."""
        self._recheck()
        found = self._dec.get((subject, kid))
        if found is not None:
            return found
        with self._lock:
            if subject in self._erased:
                return None
            pending = self._pending.get(subject)
            if pending is not None and pending[0] == kid:
                key: bytes | None = pending[1]
            else:
                keys, erased = self._load(subject)
                if erased:
                    self._erased.add(subject)
                    return None
                key = keys.get(kid)
            if key is None:
                raise VaultError(
                    f"the vault holds no key {kid.hex()} for subject {subject!r}: the ciphertext was moved "
                    "from another subject's record, or the vault was lost"
                )
            cipher = AESGCM(key)
            self._remember()
            self._dec[(subject, kid)] = cipher
            return cipher

    def is_erased(self, subject: str) -> bool:
        """Whether ``subject`` was erased."""
        if subject in self._erased:
            return True
        with self._lock:
            if self._load(subject)[1]:
                self._erased.add(subject)
                return True
            return False

    def _remember(self) -> None:
        if len(self._dec) >= _KEY_CACHE:  # bounded: drop the cache, the vault refills it
            self._enc.clear()
            self._dec.clear()

    def _forget(self, subject: str) -> None:
        """Drop ``subject``'s keys from memory and mark it erased (lock held)."""
        self._pending.pop(subject, None)
        self._enc.pop(subject, None)
        for cached in [k for k in self._dec if k[0] == subject]:
            del self._dec[cached]
        self._erased.add(subject)

    def _recheck(self) -> None:
        """Drop cached keys if another process changed the vault (LMDB only)."""

    @abc.abstractmethod
    def _load(self, subject: str) -> tuple[dict[bytes, bytes], bool]:
        """(stored keys by id, erased?) of ``subject``."""

    @abc.abstractmethod
    def _new_key(self, subject: str, kid: bytes, key: bytes) -> None:
        """Record a new key (store it, or add it to ``_pending``); lock held."""

    @abc.abstractmethod
    def persist(self) -> None:
        """Store the pending keys durably (raises ``errors.SubjectErased`` if one's subject
        was erased meanwhile: the append that needs it must not happen)."""

    @abc.abstractmethod
    def destroy(self, subject: str) -> bool:
        """Delete ``subject``'s keys for good and mark it erased; True if it had any."""

    def close(self) -> None:
        """Release the store."""


class MemoryVault(Vault):
    """The vault of the in-memory journal: keys in a dict, gone with the object."""

    def __init__(self) -> None:
        super().__init__()
        self._keys: dict[str, dict[bytes, bytes]] = {}
        self._tombs: set[str] = set()

    def _load(self, subject: str) -> tuple[dict[bytes, bytes], bool]:
        return dict(self._keys.get(subject, {})), subject in self._tombs

    def _new_key(self, subject: str, kid: bytes, key: bytes) -> None:
        self._keys.setdefault(subject, {})[kid] = key

    def persist(self) -> None:
        pass

    def destroy(self, subject: str) -> bool:
        check_subject(subject)
        with self._lock:
            had = bool(self._keys.pop(subject, None))
            self._tombs.add(subject)
            self._forget(subject)
            return had


_MAP_SIZE = 1 << 26
_META_COMPACT = b"compact"


class LmdbVault(Vault):
    """The vault of the LMDB journal in ``<journal>/vault/`` (see the module docstring)."""

    def __init__(self, journal_dir: Path) -> None:
        super().__init__()
        self._home = journal_dir / "vault"
        self._new = journal_dir / "vault.new"
        self._old = journal_dir / "vault.old"
        self._env: Any = None
        self._dbs: dict[str, Any] = {}
        self._epoch: tuple[int, int] | None = None
        self._next_check = 0.0
        try:
            self._lockfd = os.open(journal_dir / "vault.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise VaultError(f"cannot open the vault lock in {str(journal_dir)!r}: {exc.strerror}") from exc
        try:
            with self._lock, self._flock(fcntl.LOCK_EX):
                self._recover()
                self._open()
                if self._read(lambda txn: txn.get(_META_COMPACT, db=self._dbs["meta"])) is not None:
                    self._compact()  # an erasure deleted keys but did not finish compacting
        except BaseException:
            self.close()
            raise

    # --- files ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _flock(self, mode: int) -> Iterator[None]:
        fcntl.flock(self._lockfd, mode)
        try:
            yield
        finally:
            fcntl.flock(self._lockfd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _shared(self) -> Iterator[None]:
        """Use the vault's files: no other process may swap them meanwhile."""
        with self._lock, self._flock(fcntl.LOCK_SH):
            self._follow()
            yield

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._home / "data.mdb")
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _follow(self) -> None:
        """Reopen the files if another process swapped them (lock held)."""
        if self._stat() != self._epoch:
            self._enc.clear()
            self._dec.clear()
            if self._env is not None:
                self._env.close()
                self._env = None
            self._open()

    def _recheck(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + _RECHECK
        if self._stat() != self._epoch:
            with self._lock:
                self._enc.clear()
                self._dec.clear()

    def _open(self) -> None:
        self._home.mkdir(mode=0o700, exist_ok=True)
        try:
            env = lmdb.open(str(self._home), map_size=_MAP_SIZE, max_dbs=3, sync=True, metasync=True,
                            readahead=False, mode=0o600, max_readers=126)
        except lmdb.Error as exc:
            raise VaultError(f"cannot open the vault at {str(self._home)!r}: {exc}") from exc
        with env.begin(write=True) as txn:
            self._dbs = {name: env.open_db(name.encode(), txn=txn) for name in ("keys", "erased", "meta")}
        self._env = env
        self._epoch = self._stat()

    def _recover(self) -> None:
        """Finish a compaction a crash interrupted (exclusive lock held)."""
        if self._new.exists():
            if self._home.exists():
                _scrub(self._new)  # an unfinished copy
            else:
                os.rename(self._new, self._home)  # the crash fell between the two renames
                fsync_path(self._home.parent)
        if self._old.exists():
            _scrub(self._old)

    def _read(self, fn: Callable[[Any], T]) -> T:
        while True:
            try:
                with self._env.begin(buffers=False) as txn:
                    return fn(txn)
            except lmdb.MapResizedError:
                self._env.set_mapsize(0)

    def _write(self, fn: Callable[[Any], T]) -> T:
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                self._env.set_mapsize(self._env.info()["map_size"] * 2)
            except lmdb.MapResizedError:
                self._env.set_mapsize(0)

    # --- keys ----------------------------------------------------------------------------

    def _load(self, subject: str) -> tuple[dict[bytes, bytes], bool]:
        prefix = subject.encode() + b"\x00"

        def read(txn: Any) -> tuple[dict[bytes, bytes], bool]:
            if txn.get(subject.encode(), db=self._dbs["erased"]) is not None:
                return {}, True
            keys = {}
            cursor = txn.cursor(db=self._dbs["keys"])
            if cursor.set_range(prefix):
                for key, value in cursor:
                    if not key.startswith(prefix):
                        break
                    keys[key[len(prefix):]] = value
            return keys, False

        with self._shared():
            return self._read(read)

    def _new_key(self, subject: str, kid: bytes, key: bytes) -> None:
        self._pending[subject] = (kid, key)

    def persist(self) -> None:
        with self._shared():
            batch = dict(self._pending)
            if not batch:
                return

            def write(txn: Any) -> list[str]:
                erased = []
                for subject, (kid, key) in batch.items():
                    if txn.get(subject.encode(), db=self._dbs["erased"]) is not None:
                        erased.append(subject)
                    elif not txn.put(subject.encode() + b"\x00" + kid, key, db=self._dbs["keys"], overwrite=False):
                        raise VaultError(f"key id {kid.hex()} of subject {subject!r} is taken; retry the append")
                return erased

            erased = self._write(write)
            for subject, entry in batch.items():
                if self._pending.get(subject) is entry:
                    del self._pending[subject]
            for subject in erased:
                self._forget(subject)
            if erased:
                raise errors.SubjectErased(
                    f"subject {erased[0]!r} was erased: personal data for it can no longer be recorded"
                )

    def destroy(self, subject: str) -> bool:
        check_subject(subject)
        prefix = subject.encode() + b"\x00"

        def write(txn: Any) -> bool:
            cursor = txn.cursor(db=self._dbs["keys"])
            doomed = []
            if cursor.set_range(prefix):
                for key in cursor.iternext(keys=True, values=False):
                    if not key.startswith(prefix):
                        break
                    doomed.append(key)
            for key in doomed:
                txn.delete(key, db=self._dbs["keys"])
            txn.put(subject.encode(), b"", db=self._dbs["erased"])
            txn.put(_META_COMPACT, b"1", db=self._dbs["meta"])
            return bool(doomed)

        with self._lock, self._flock(fcntl.LOCK_EX):
            self._follow()
            had = self._write(write)
            self._forget(subject)
            self._compact()
        return had

    def _compact(self) -> None:
        """Rewrite the vault with live pages only and scrub the old files (both locks held)."""
        if self._new.exists():
            _scrub(self._new)
        self._new.mkdir(mode=0o700)
        self._env.copy(str(self._new), compact=True)
        copy = lmdb.open(str(self._new), map_size=_MAP_SIZE, max_dbs=3, sync=True, metasync=True, mode=0o600)
        try:
            with copy.begin(write=True) as txn:
                txn.delete(_META_COMPACT, db=copy.open_db(b"meta", txn=txn))
        finally:
            copy.close()
        self._env.close()
        self._env = None
        os.rename(self._home, self._old)
        os.rename(self._new, self._home)
        fsync_path(self._home.parent)
        _scrub(self._old)
        self._open()

    def close(self) -> None:
        with self._lock:
            if self._env is not None:
                self._env.close()
                self._env = None
            if getattr(self, "_lockfd", None) is not None:
                os.close(self._lockfd)
                self._lockfd = None  # type: ignore[assignment]


def _scrub(directory: Path) -> None:
    """Overwrite every file in ``directory`` with zeros, then delete it all."""
    for path in directory.iterdir():
        if path.is_file() and not path.is_symlink():
            try:
                size = path.stat().st_size
                with open(path, "r+b", buffering=0) as f:
                    chunk = bytes(1 << 20)
                    for offset in range(0, size, len(chunk)):
                        f.write(chunk[: min(len(chunk), size - offset)])
                    os.fsync(f.fileno())
            except OSError as exc:
                log.error("vault.scrub_failed", path=str(path), error=repr(exc))
    shutil.rmtree(directory, ignore_errors=True)

