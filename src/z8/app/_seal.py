"""The seal of a run record and the offline check of an exported bundle.

A run bundle is JSON::

    {"format": "z8.run-bundle", "format_version": 1, "journal_id": …,
     "run":     {…the run record's decoded summary…},
     "records": [{"position": p, "record": base64(stored bytes)}, …],   # log order
     "seal":    {"digest", "signature", "public_key", "fingerprint", "summary_hash",
                 "head_position", "head_hash", …}}

What the seal binds, and how a verifier with nothing but the file checks it:

1. each stored record carries BLAKE2b-256 of its own bytes (the journal's format): an
   altered byte is found at the event that holds it;
2. where two records sit at consecutive positions, the later one's ``prev_hash`` is the
   earlier one's hash (the journal's chain);
3. ``summary_hash`` is BLAKE2b-256 of the summary in canonical JSON (sorted keys): a
   summary edited to tell another story no longer matches;
4. ``digest`` is BLAKE2b-256 over ``"z8.seal/1"``, every record's (position, hash) in
   order, the journal head (position, hash) at export, and ``summary_hash``;
5. ``signature`` is Ed25519 over ``digest`` by the journal's audit key; the bundle
   carries the public key, and ``fingerprint`` (first 16 hex digits of SHA-256 of the
   raw public key) is what a relying party pins.

Limits (documented, not hidden): the bundle proves the records are those the holder of
the signing key sealed, and that nothing changed since. It cannot prove the journal was
honest before the export: whoever holds the journal files *and* the key can rewrite
history, re-seal every record and sign a consistent bundle. Pinning the fingerprint
(``key=``) stops a forger without the key; anchoring ``head_hash`` elsewhere (a notary,
a WORM copy) bounds what a key holder can rewrite.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gc
import hashlib
import os
import secrets
import weakref
from collections.abc import Iterator, Sequence
from hashlib import blake2b
from pathlib import Path
from typing import Any, Final

import msgspec
import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from z8.errors import AuditError, InvalidArgument, InvalidBundle
from z8.journal import Journal
from z8.journal._fsync import fsync_path
from z8.journal._runcheck import Fault, RunCheck

__all__ = [
    "BUNDLE_FORMAT", "BUNDLE_VERSION", "KEY_FILE", "BundleReport", "verify_bundle", "fingerprint_of",
    "signing_key_for", "existing_signing_key", "canonical", "seal_digest", "no_gc_pauses",
]

log = structlog.get_logger("z8.audit")

BUNDLE_FORMAT: Final = "z8.run-bundle"
BUNDLE_VERSION: Final = 1
SEAL_ALGORITHM: Final = "z8.seal/1: blake2b-256 records, digest, ed25519 signature"
KEY_FILE: Final = "audit.key"
"""The journal's audit signing key: a PEM file (mode 0600) in the journal directory."""

_json_encode = msgspec.json.Encoder(order="sorted").encode
_json_decode = msgspec.json.Decoder().decode
_ephemeral: weakref.WeakKeyDictionary[Journal, Ed25519PrivateKey] = weakref.WeakKeyDictionary()


class BundleReport(msgspec.Struct, frozen=True):
    """What ``verify_bundle`` found.

    ``ok``: every record's own hash, every link between consecutive records, the
    summary, the digest and the signature hold (and the signer is the pinned key, when
    one was given). Otherwise ``reason`` says what failed; when the failure is one
    event's, ``first_bad_position``/``first_bad_version`` name it. ``checked`` counts
    the records that reconciled before the first bad one (all of them when ok).
    """

    ok: bool
    checked: int
    first_bad_position: int | None = None
    first_bad_version: int | None = None
    reason: str | None = None
    fingerprint: str = ""
    """The fingerprint of the public key the bundle carries (what ``key=`` pins)."""
    events: int = 0
    stream: str | None = None
    correlation: str | None = None
    head_position: int = 0

    def __str__(self) -> str:
        scope = f"stream {self.stream!r}" if self.stream is not None else f"correlation {self.correlation!r}"
        if self.ok:
            return (f"ok: run bundle of {scope}: {self.events} events, each record's hash, the links, the "
                    f"summary, the digest and the signature hold; signed by key {self.fingerprint}")
        where = ""
        if self.first_bad_position is not None:
            version = f" (v{self.first_bad_version})" if self.first_bad_version is not None else ""
            where = f" at position {self.first_bad_position}{version}"
        return f"ALTERED{where}: {self.reason} [{self.checked} of {self.events} records reconciled before it]"


@contextlib.contextmanager
def no_gc_pauses() -> Iterator[None]:
    """Hold off the cyclic collector while a run record builds or encodes its tree of
    dicts: every one is acyclic, and collections triggered by the sheer number of them
    about halve the speed of a large export. Re-enabled on the way out (if it was on)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# --- keys --------------------------------------------------------------------------------


def fingerprint_of(public_key: Ed25519PublicKey) -> str:
    """The key's fingerprint: the first 16 hex digits of SHA-256 of its raw 32 bytes."""
    return hashlib.sha256(_raw(public_key)).hexdigest()[:16]


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def signing_key_for(journal: Journal) -> Ed25519PrivateKey:
    """The journal's audit signing key: ``audit.key`` in an LMDB journal's directory
    (created, mode 0600, the first time it is needed), or a key for the life of the
    object for a journal with no directory (in memory)."""
    path = getattr(journal, "path", None)
    if path is None:
        key = _ephemeral.get(journal)
        if key is None:
            key = _ephemeral[journal] = Ed25519PrivateKey.generate()
        return key
    return _load_or_create(Path(path) / KEY_FILE)


def existing_signing_key(journal: Journal) -> Ed25519PrivateKey | None:
    """The journal's audit key if it has one already (never creates it)."""
    path = getattr(journal, "path", None)
    if path is None:
        return _ephemeral.get(journal)
    try:
        return _load(Path(path) / KEY_FILE)
    except FileNotFoundError:
        return None


def _load_or_create(keyfile: Path) -> Ed25519PrivateKey:
    for _ in range(2):
        try:
            return _load(keyfile)
        except FileNotFoundError:
            pass
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        # written whole under a temporary name, then linked into place: a concurrent
        # exporter (another process) either wins the link or reads the complete winner
        temporary = keyfile.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, keyfile)
        except FileExistsError:
            continue
        finally:
            temporary.unlink()
        fsync_path(keyfile.parent)
        return key
    return _load(keyfile)


def _load(keyfile: Path) -> Ed25519PrivateKey:
    data = keyfile.read_bytes()
    if keyfile.stat().st_mode & 0o077:
        log.warning("audit.key_permissions", path=str(keyfile), hint="chmod 600: others can read the signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise AuditError(f"{keyfile} is not a PEM private key ({exc}); restore it from a backup") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditError(f"{keyfile} holds a {type(key).__name__}, not an Ed25519 key")
    return key



def _pinned(key: object) -> str:
    """The fingerprint a ``key=`` argument pins."""
    if isinstance(key, Ed25519PublicKey):
        return fingerprint_of(key)
    if isinstance(key, Ed25519PrivateKey):
        return fingerprint_of(key.public_key())
    if isinstance(key, str):
        text = key.strip().lower()
        if len(text) == 16 and all(c in "0123456789abcdef" for c in text):
            return text
        if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
            key = bytes.fromhex(text)
        else:
            key = key.encode()
    if isinstance(key, bytes):
        try:
            if len(key) == 32:
                return fingerprint_of(Ed25519PublicKey.from_public_bytes(key))
            loaded = serialization.load_pem_public_key(key)
        except ValueError as exc:
            raise InvalidArgument(f"key= is not an Ed25519 public key: {exc}") from None
        if isinstance(loaded, Ed25519PublicKey):
            return fingerprint_of(loaded)
    raise InvalidArgument(
        "key= must be a fingerprint (16 hex digits), an Ed25519 public key (object, 32 raw bytes, "
        f"64 hex digits or PEM), got {key!r:.60}"
    )


# --- digest ------------------------------------------------------------------------------


def canonical(summary: Any) -> bytes:
    """The summary's canonical JSON (sorted keys, no whitespace), the bytes ``summary_hash`` covers."""
    return _json_encode(summary)


def seal_digest(records: Sequence[tuple[int, bytes]], head: tuple[int, bytes], summary_hash: bytes) -> bytes:
    """BLAKE2b-256 over the tag, each record's (position, stored hash), the head and the summary hash."""
    digest = blake2b(b"z8.seal/1\x00", digest_size=32)
    for position, record in records:
        digest.update(position.to_bytes(8, "big") + record[-32:])
    digest.update(b"head" + head[0].to_bytes(8, "big") + head[1])
    digest.update(summary_hash)
    return digest.digest()


# --- the offline check -------------------------------------------------------------------


class _Entry(msgspec.Struct):
    position: int
    record: str


class _SealDoc(msgspec.Struct):
    digest: str
    signature: str
    public_key: str
    fingerprint: str
    summary_hash: str
    head_position: int
    head_hash: str


class _Bundle(msgspec.Struct):
    format: str
    format_version: int
    run: dict[str, Any]
    records: list[_Entry]
    seal: _SealDoc


def verify_bundle(source: str | os.PathLike[str] | bytes, *, key: object = None) -> BundleReport:
    """Check an exported run bundle with nothing but the bundle: no journal, no application.

    ``source`` is a path, or the bundle's bytes. ``key`` pins the signer (a fingerprint, or
    the public key): a bundle re-signed by anyone else fails even if it is consistent.
    An altered bundle is a report with ``ok=False`` naming the first bad event where the
    alteration is an event's; a file that is not a bundle raises ``InvalidBundle``.
    """
    pinned = _pinned(key) if key is not None else None
    bundle = _parse(_read(source))
    run, seal = bundle.run, bundle.seal
    scope_stream = run.get("stream") if run.get("scope") == "stream" else None
    events = run.get("events") if isinstance(run.get("events"), list) else []
    base = {"events": len(bundle.records), "stream": run.get("stream"), "correlation": run.get("correlation"),
            "fingerprint": seal.fingerprint, "head_position": seal.head_position}

    check, raw = RunCheck(scope_stream), []
    fault = _check_records(bundle.records, events, check, raw)
    if fault is None and scope_stream is not None:
        fault = check.finish(_stream_head(run.get("stream_head")))
    if fault is None:
        fault = _check_head(raw, seal)
    if fault is not None:
        return BundleReport(False, check.checked, fault.position, fault.version, fault.reason, **base)
    problem = _check_seal(raw, run, seal, pinned)
    if problem is not None:
        return BundleReport(False, check.checked, None, None, problem, **base)
    return BundleReport(True, check.checked, **base)


def _read(source: object) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidArgument(f"verify_bundle takes a path or the bundle's bytes, got {type(source).__name__}")
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise InvalidBundle(f"cannot read bundle {str(source)!r}: {exc.strerror or exc}") from None


def _parse(content: bytes) -> _Bundle:
    try:
        document = _json_decode(content)
    except msgspec.DecodeError as exc:
        raise InvalidBundle(f"not a z8 run bundle: the file is not JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != BUNDLE_FORMAT:
        raise InvalidBundle(f"not a z8 run bundle: no \"format\": {BUNDLE_FORMAT!r} field")
    if document.get("format_version") != BUNDLE_VERSION:
        raise InvalidBundle(
            f"run bundle format version {document.get('format_version')!r} is not one this z8 reads "
            f"({BUNDLE_VERSION}); use the z8 version that exported it"
        )
    try:
        return msgspec.convert(document, _Bundle)
    except msgspec.ValidationError as exc:
        raise InvalidBundle(f"malformed z8 run bundle: {exc}") from None


def _check_records(entries: list[_Entry], events: list[Any], check: RunCheck,
                   raw: list[tuple[int, bytes]]) -> Fault | None:
    if len(events) != len(entries):
        return Fault(None, None, f"the summary lists {len(events)} events but the bundle holds {len(entries)} records")
    for entry, event in zip(entries, events):
        if not isinstance(event, dict):
            return Fault(entry.position, None, "the run summary's entry for this record is not an event")
        declared = event.get("version")
        try:
            record = base64.b64decode(entry.record, validate=True)
        except (binascii.Error, ValueError):
            return Fault(entry.position, declared, "the stored record is not valid base64 (the bundle was altered)")
        fault = check.feed(entry.position, record)
        if fault is not None:
            return fault if fault.version is not None else fault._replace(version=declared)
        if event.get("position") != entry.position or event.get("hash") != record[-32:].hex():
            return Fault(entry.position, declared, (
                "the record is not the one the run summary was sealed with (a record was replaced "
                "and re-hashed)"))
        raw.append((entry.position, record))
    return None


def _stream_head(value: object) -> tuple[int, int, bytes] | None:
    if not isinstance(value, list) or len(value) != 3:
        return None
    try:
        return int(value[0]), int(value[1]), bytes.fromhex(value[2])
    except (TypeError, ValueError):
        return None


def _check_head(raw: list[tuple[int, bytes]], seal: _SealDoc) -> Fault | None:
    for position, record in raw:
        if position == seal.head_position and record[-32:].hex() != seal.head_hash:
            return Fault(position, None, "the record at the sealed journal head does not have the head's hash")
    return None


def _check_seal(raw: list[tuple[int, bytes]], run: dict[str, Any], seal: _SealDoc, pinned: str | None) -> str | None:
    summary_hash = blake2b(canonical(run), digest_size=32).hexdigest()
    if summary_hash != seal.summary_hash:
        return "the run summary was altered after it was sealed (its hash differs from the seal's)"
    try:
        head_hash = bytes.fromhex(seal.head_hash)
        digest = seal_digest(raw, (seal.head_position, head_hash), bytes.fromhex(seal.summary_hash))
        public_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(seal.public_key))
        signature = bytes.fromhex(seal.signature)
    except ValueError as exc:
        return f"the seal is malformed: {exc}"
    if digest.hex() != seal.digest:
        return "the seal's digest does not match the records, the head and the summary it claims to cover"
    if fingerprint_of(public_key) != seal.fingerprint:
        return "the seal's fingerprint is not the fingerprint of its public key"
    try:
        public_key.verify(signature, digest)
    except InvalidSignature:
        return "the signature does not verify: the digest was not signed by the bundle's public key"
    if pinned is not None and pinned != seal.fingerprint:
        return f"the bundle was signed by key {seal.fingerprint}, not by the expected key {pinned}"
    return None


def bundle_bytes(journal_id: str | None, summary: dict[str, Any], records: Sequence[tuple[int, bytes]],
                 seal: dict[str, Any]) -> bytes:
    """The JSON bundle (indented for a person's eyes; whitespace is not part of the seal)."""
    document = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "journal_id": journal_id,
        "run": summary,
        "records": [{"position": p, "record": base64.b64encode(r).decode()} for p, r in records],
        "seal": seal,
    }
    return msgspec.json.format(msgspec.json.encode(document), indent=1)
