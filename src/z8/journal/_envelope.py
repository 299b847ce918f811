"""The on-disk schema: envelopes, snapshots, the sealed record format and its keys.

A stored record is the msgpack encoding of an :class:`Envelope` as an array, whose
last element is the 32-byte ``hash``. The hash is BLAKE2b-256 over every byte of the
record before the hash itself — field order, array header and the ``prev_hash``
element included — so the chain link (``prev_hash``) and every field are covered,
and verification never re-encodes: it hashes the stored bytes.
"""

from __future__ import annotations

import enum
from hashlib import blake2b
from typing import Final

import msgspec

from z8.errors import InvalidExpectedVersion, InvalidPosition, InvalidStreamName, ReservedStreamName

__all__ = [
    "Envelope",
    "Snapshot",
    "VerifyReport",
    "ExpectedVersion",
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "GENESIS_HASH",
    "MAX_STREAM_BYTES",
    "EXPIRED_TYPE",
]

HASH_SIZE: Final = 32
GENESIS_HASH: Final = bytes(HASH_SIZE)
"""``prev_hash`` of the event at position 1."""

MAX_STREAM_BYTES: Final = 255
"""Longest stream name, in UTF-8 bytes (LMDB keys are at most 511 bytes)."""

RESERVED_PREFIX: Final = "$"


class Envelope(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One recorded event: its payload bytes and everything known about how it got here.

    ``data`` is the msgpack-encoded payload; ``journal.decode(envelope)`` turns it into
    the registered Struct (upcast to the current schema). Fields are never added in
    the middle: the record format is this field order.
    """

    event_id: str
    """UUIDv7, time-ordered; unique across the journal."""
    stream: str
    version: int
    """1-based, gap-free within the stream."""
    position: int
    """1-based, gap-free over the whole journal: the global order."""
    type: str
    """The registered type name of the payload."""
    data: bytes
    causation_id: str | None
    """The id of what caused this event (an event id, or a command id)."""
    correlation_id: str | None
    """The id shared by everything one request set in motion."""
    actor: str | None
    """Who or what wrote the event."""
    recorded_at: int
    """Unix time of the commit, in nanoseconds."""
    schema: int
    """The payload's schema number when written (see upcasters)."""
    prev_hash: bytes
    """``hash`` of the event at ``position - 1`` (:data:`GENESIS_HASH` for the first)."""
    hash: bytes
    """BLAKE2b-256 of this record's stored bytes up to the hash itself."""


class Snapshot(msgspec.Struct, frozen=True, gc=False):
    """A stream's folded state at ``version``, written by the agent that owns it."""

    stream: str
    version: int
    schema: int
    data: bytes
    recorded_at: int


class VerifyReport(msgspec.Struct, frozen=True):
    """What ``Journal.verify()`` found.

    ``ok`` is true when every checked record's hash, chain link, position and stream
    version reconcile. Otherwise ``first_bad`` is the first position that does not and
    ``reason`` says why; checking stops there.

    For ``verify(stream=...)``: ``stream`` names it, ``first_bad_version`` is the bad
    event's version in that stream, and ``head_position``/``head_hash``/``head_version``
    describe the stream's last event rather than the log's.
    """

    ok: bool
    checked: int
    first_bad: int | None = None
    reason: str | None = None
    head_position: int = 0
    head_hash: bytes = GENESIS_HASH
    stream: str | None = None
    first_bad_version: int | None = None
    head_version: int = 0

    def __str__(self) -> str:
        scope = f"stream {self.stream!r}: " if self.stream is not None else ""
        if self.ok:
            head = f"v{self.head_version} at position {self.head_position}" if self.stream is not None \
                else str(self.head_position)
            return f"{scope}ok: {self.checked} events verified, head {head} ({self.head_hash.hex()[:16]}…)"
        version = f" (v{self.first_bad_version})" if self.first_bad_version is not None else ""
        return f"{scope}BROKEN at position {self.first_bad}{version} after {self.checked} good events: {self.reason}"


class ExpectedVersion(enum.Enum):
    """Optimistic-concurrency expectations for ``append`` besides an exact version."""

    ANY = "any"
    """Append whatever version the stream is at."""
    NO_STREAM = "no_stream"
    """The stream must not exist yet (same as version 0)."""
    STREAM_EXISTS = "stream_exists"
    """The stream must have at least one event."""

    def __repr__(self) -> str:
        return self.name


ANY: Final = ExpectedVersion.ANY
NO_STREAM: Final = ExpectedVersion.NO_STREAM
STREAM_EXISTS: Final = ExpectedVersion.STREAM_EXISTS

Expected = int | ExpectedVersion

_ENCODE = msgspec.msgpack.Encoder().encode
_DECODE_ENVELOPE = msgspec.msgpack.Decoder(Envelope).decode
_HASH_ELEMENT_HEADER: Final = b"\xc4\x20"  # msgpack bin8 of length 32


def seal(
    event_id: str,
    stream: str,
    version: int,
    position: int,
    type_: str,
    data: bytes,
    causation_id: str | None,
    correlation_id: str | None,
    actor: str | None,
    recorded_at: int,
    schema: int,
    prev_hash: bytes,
) -> tuple[Envelope, bytes]:
    """Build the envelope and its stored record, hash included."""
    template = _ENCODE(
        (event_id, stream, version, position, type_, data, causation_id,
         correlation_id, actor, recorded_at, schema, prev_hash, GENESIS_HASH)
    )
    body = template[:-HASH_SIZE]
    digest = blake2b(body, digest_size=HASH_SIZE).digest()
    envelope = Envelope(
        event_id, stream, version, position, type_, data, causation_id,
        correlation_id, actor, recorded_at, schema, prev_hash, digest,
    )
    return envelope, body + digest


def decode_record(record: bytes) -> Envelope:
    """Decode a stored record (no hash check; see :func:`check_record`).

    A tombstone decodes as an envelope of type :data:`EXPIRED_TYPE` with an empty payload.
    """
    try:
        return _DECODE_ENVELOPE(record)
    except msgspec.ValidationError:  # not 13 fields: a tombstone, or damage
        if not is_tombstone(record):
            raise
    stone = _DECODE_TOMBSTONE(record)
    return Envelope(
        stone.event_id, stone.stream, stone.version, stone.position, EXPIRED_TYPE, EXPIRED_DATA,
        None, None, None, stone.recorded_at, 1, stone.prev_hash, stone.hash,
    )


def check_record(record: bytes) -> str | None:
    """Return why a stored record's own hash does not hold, or None when it does."""
    if len(record) <= HASH_SIZE + 2 or record[-HASH_SIZE - 2 : -HASH_SIZE] != _HASH_ELEMENT_HEADER:
        return "record is truncated or its hash field is malformed"
    body = memoryview(record)[:-HASH_SIZE]
    if blake2b(body, digest_size=HASH_SIZE).digest() != record[-HASH_SIZE:]:
        return "stored bytes do not match their hash (the record was altered)"
    return None


# --- tombstones: what expiry leaves of a record ---------------------------------------

EXPIRED_TYPE: Final = "z8.expired"
"""The type of the envelope a tombstone reads as (``read_all``, subscriptions, ``get``)."""
EXPIRED_DATA: Final = b"\x80"  # the msgpack of an empty map: the payload of ``z8.expired``


class _Tombstone(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The stored form of an expired record: its place in the log and its chain hashes,
    without payload, metadata ids or actor. ``hash`` stays last, so the chain walk reads it
    where it reads a record's (the last 32 bytes)."""

    tag: str  # always EXPIRED_TYPE: what tells a tombstone from a record (13 fields)
    event_id: str
    stream: str
    version: int
    position: int
    recorded_at: int
    prev_hash: bytes
    hash: bytes


_DECODE_TOMBSTONE = msgspec.msgpack.Decoder(_Tombstone).decode
_TOMBSTONE_HEAD: Final = b"\x98" + _ENCODE(EXPIRED_TYPE)  # fixarray(8), then the tag


def is_tombstone(record: bytes) -> bool:
    """Whether a stored record is a tombstone (its payload was expired)."""
    # the first byte settles it for every ordinary record (a 13-element array: 0x9d)
    return record[0] == 0x98 and record[: len(_TOMBSTONE_HEAD)] == _TOMBSTONE_HEAD


def tombstone_of(record: bytes) -> bytes:
    """The tombstone that replaces a stored record: same place, same chain hashes."""
    e = _DECODE_ENVELOPE(record)
    return _ENCODE(_Tombstone(EXPIRED_TYPE, e.event_id, e.stream, e.version, e.position, e.recorded_at,
                              e.prev_hash, e.hash))


# --- keys: big-endian so LMDB's byte order is the log's order -----------------------


def position_key(position: int) -> bytes:
    return position.to_bytes(8, "big")


def stream_prefix(stream: str) -> bytes:
    return stream.encode() + b"\x00"


def stream_key(prefix: bytes, version: int) -> bytes:
    return prefix + version.to_bytes(8, "big")


# --- validation of caller input --------------------------------------------------------


def check_stream(stream: object, *, allow_reserved: bool = False) -> str:
    """Return ``stream`` if it is a valid name for the caller, else raise."""
    if not isinstance(stream, str):
        raise InvalidStreamName(f"stream name must be a str, got {type(stream).__name__}")
    if not stream:
        raise InvalidStreamName("stream name is empty; name the stream, e.g. 'account-42'")
    if "\x00" in stream:
        raise InvalidStreamName(f"stream name {stream!r} contains a NUL character; remove it")
    size = len(stream.encode())
    if size > MAX_STREAM_BYTES:
        raise InvalidStreamName(
            f"stream name is {size} bytes long (UTF-8); the limit is {MAX_STREAM_BYTES}: "
            "use a shorter identity (hash long keys)"
        )
    if stream.startswith(RESERVED_PREFIX) and not allow_reserved:
        raise ReservedStreamName(
            f"stream {stream!r} starts with '$', which is reserved for the runtime's own "
            "streams ($system…); choose a name without the '$' prefix"
        )
    return stream


def check_expected(expected: object) -> Expected:
    """Return ``expected`` if it is a valid expected version, else raise."""
    if isinstance(expected, ExpectedVersion):
        return expected
    if isinstance(expected, bool) or not isinstance(expected, int):
        raise InvalidExpectedVersion(
            f"expected_version must be ANY, NO_STREAM, STREAM_EXISTS or an int >= 0, "
            f"got {expected!r}"
        )
    if expected < 0:
        raise InvalidExpectedVersion(
            f"expected_version {expected} is negative; use NO_STREAM (or 0) for a new "
            "stream, or the stream's current version"
        )
    return expected


def expectation_holds(expected: Expected, actual: int) -> bool:
    if expected is ANY:
        return True
    if expected is NO_STREAM:
        return actual == 0
    if expected is STREAM_EXISTS:
        return actual > 0
    return expected == actual


def check_count(name: str, value: object, *, minimum: int, optional: bool = False) -> int | None:
    """Validate a position, version or limit argument."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidPosition(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise InvalidPosition(f"{name} must be >= {minimum}, got {value}")
    return value
