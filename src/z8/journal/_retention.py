"""Retention and legal hold: expiry is a journaled act, and ``verify()`` keeps passing.

**Rules.** ``Retention(category, keep_days)`` covers the streams of one category: the
part of the stream name before the first ``-`` (``"Loan"`` for ``"Loan-42"``, the
convention of ``Router.identify(..., prefix="Loan-")``; a name without ``-`` is its own
category). A stream expires *whole*, once its **last** event is older than ``keep_days``
(its ``recorded_at``, the commit's wall-clock time, against ``now``): the history of a
living agent is never cut in the middle, so a fold never meets a hole. ``$``-streams (the
runtime's own: ``$retention``, ``$holds``, ``$outbox``, ``$jobs/…``) never expire.

**The act.** ``await journal.expire(*rules_or_streams, now=, by=)`` appends, per expired
stream, ``z8.RecordsExpired(stream, first_position, last_position, count, digest, by,
rule)`` to ``$retention``, where ``digest`` is BLAKE2b-256 over the expired records'
hashes in log order. In the same write transaction the stream is marked expired (no event
can be appended to it again, its snapshot is deleted) and its records are replaced by
**tombstones**: a small msgpack array ``["z8.expired", event_id, stream, version,
position, recorded_at, prev_hash, hash]`` that keeps the record's place and both of its
chain hashes but drops the payload, the causation/correlation ids and the actor. An
expiry of more than ``TOMBSTONE_CHUNK`` records finishes its tombstones in the
transactions that follow at once; the act and the list of unfinished acts (meta key
``retention.pending``) are committed first, so a crash between them loses nothing: the
next ``open_journal`` (or ``expire``) finishes the tombstones. Tombstoning is
idempotent: a record already tombstoned is left alone, and a stream already expired is
not expired again (``expire`` twice writes once).

**Why ``verify()`` still passes, and what it proves.** The chain is a chain of hashes:
record *n*'s ``prev_hash`` is record *n-1*'s ``hash``. A tombstone keeps both, so every
link still reconciles; what it cannot keep is its own self-hash (the bytes it was taken
over are gone). ``verify()`` therefore accepts a tombstone only if a ``RecordsExpired``
act in ``$retention`` (itself an ordinary, self-hashed, chained record, written after the
records it names) covers its stream and position, and, once the walk has seen every record
the act names, their count and the digest of their hashes match the act. A tombstone
nobody journaled (a record's payload removed outside expiry) is reported at its position;
a covered set that does not match its act is reported at the act's first position. So an
auditor still sees, after expiry, that N records existed at those positions of that
stream, that their hashes were part of the chain, and who expired them (``by``) under
which rule (``rule``), when (``expired_at``) and why (``reason``): only what they *said*
is gone.

**Bytes on disk.** Tombstoning frees the pages that held the payloads, but LMDB keeps
freed pages in its file until it reuses them, so the expired bytes can remain in
``data.mdb`` (reads never return them). ``compact_journal(path)`` rewrites the file with
live pages only (LMDB's compacting copy), after which they are gone; run it with the
journal closed everywhere.

**Legal hold.** ``await journal.hold(subject=… | stream=…, by=, reason=)`` and
``release_hold(...)`` journal ``z8.HoldPlaced``/``z8.HoldReleased`` in ``$holds``; the
current holds are folded from that stream (incrementally, so another process's holds are
seen too). A held stream is never expired: a rule skips it and says so in its report, an
explicit ``expire(stream)`` raises ``LegalHoldActive``. A held subject cannot be erased
(``check_erasable``). ``expire`` commits against the version of ``$holds`` it read, so a
hold placed meanwhile is never overtaken.
"""

from __future__ import annotations

import datetime as _dt
import math
import threading
import time
from collections.abc import Callable, Mapping
from hashlib import blake2b
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from z8.errors import InvalidArgument, JournalAlreadyOpen, JournalPathError, LegalHoldActive, RecordExpired, WrongExpectedVersion

from ._commit import AppendOp, StreamAppend
from ._envelope import ANY, EXPIRED_TYPE, check_stream, decode_record, is_tombstone, tombstone_of
from ._fsync import fsync_path

if TYPE_CHECKING:
    from ._commit import Batch, WriteView
    from ._envelope import Envelope
    from ._types import TypeRegistry

__all__ = [
    "Retention",
    "RecordsExpired",
    "HoldPlaced",
    "HoldReleased",
    "Expired",
    "Hold",
    "Skipped",
    "ExpiryReport",
    "RetentionMethods",
    "ExpiryCheck",
    "ExpireOp",
    "TombstoneOp",
    "category_of",
    "expired_error",
    "compact_journal",
    "register_retention_types",
    "RETENTION_STREAM",
    "HOLDS_STREAM",
    "PENDING_KEY",
    "TOMBSTONE_CHUNK",
]

RETENTION_STREAM: Final = "$retention"
HOLDS_STREAM: Final = "$holds"
PENDING_KEY: Final = b"retention.pending"
"""Meta key: the acts whose tombstones are not all written yet, and where each resumes."""
TOMBSTONE_CHUNK: Final = 20_000
"""Most tombstones one write transaction writes (other writers wait meanwhile)."""
_NS_PER_DAY: Final = 86_400 * 1_000_000_000
_MAX_ATTEMPTS: Final = 10


def category_of(stream: str) -> str:
    """The stream's category: its name up to the first ``-`` (the whole name without one)."""
    return stream.partition("-")[0]


class Retention(msgspec.Struct, frozen=True):
    """How long the streams of one category are kept after their last event.

    ``Retention("Loan", keep_days=3650)``: a ``Loan-…`` stream (or ``Loan``) expires
    once its last event is older than ten years. Raises ``InvalidArgument`` when built
    with a category that is empty, holds ``-`` or starts with ``$``, or with a
    ``keep_days`` that is negative or not a finite number.
    """

    category: str
    keep_days: float

    def __post_init__(self) -> None:
        category = self.category
        if not isinstance(category, str) or not category or "-" in category or "\x00" in category:
            raise InvalidArgument(
                f"Retention category must be a non-empty str without '-' (the part of a stream name "
                f"before its first '-', e.g. 'Loan' for 'Loan-42'), got {category!r}"
            )
        if category.startswith("$"):
            raise InvalidArgument(f"Retention category {category!r}: '$'-streams are the runtime's own and never expire")
        days = self.keep_days
        if isinstance(days, bool) or not isinstance(days, (int, float)) or not math.isfinite(days) or days < 0:
            raise InvalidArgument(f"Retention({category!r}) keep_days must be a finite number >= 0, got {days!r}")

    def covers(self, stream: str) -> bool:
        """Whether ``stream`` belongs to this rule's category (``$``-streams never do)."""
        return not stream.startswith("$") and category_of(stream) == self.category

    def __str__(self) -> str:
        return f"{self.category}: keep {self.keep_days:g} days after the last event"


# --- the journaled records -------------------------------------------------------------


class RecordsExpired(msgspec.Struct, frozen=True):
    """The act of expiring one stream (``z8.RecordsExpired`` in ``$retention``).

    ``count`` records of ``stream`` between ``first_position`` and ``last_position``
    (its whole history) were replaced by tombstones; ``digest`` is BLAKE2b-256 over their
    hashes in log order, which ``verify()`` recomputes from the tombstones.
    """

    stream: str
    first_position: int
    last_position: int
    count: int
    digest: bytes
    by: str
    rule: str
    """The rule applied (``str(Retention)``), or ``"explicit"`` for a stream named by the caller."""
    reason: str = ""
    expired_at: int = 0
    """The ``now`` the rule was applied at (Unix ns)."""


class HoldPlaced(msgspec.Struct, frozen=True):
    """A legal hold placed on a subject or a stream (``z8.HoldPlaced`` in ``$holds``)."""

    subject: str | None = None
    stream: str | None = None
    by: str = ""
    reason: str = ""


class HoldReleased(msgspec.Struct, frozen=True):
    """A legal hold released (``z8.HoldReleased`` in ``$holds``)."""

    subject: str | None = None
    stream: str | None = None
    by: str = ""
    reason: str = ""


class Expired(msgspec.Struct, frozen=True):
    """The payload of a ``z8.expired`` envelope: what a tombstone reads as (nothing)."""


RETENTION_TYPES: Final[dict[str, type[msgspec.Struct]]] = {
    EXPIRED_TYPE: Expired,
    "z8.RecordsExpired": RecordsExpired,
    "z8.HoldPlaced": HoldPlaced,
    "z8.HoldReleased": HoldReleased,
}


def register_retention_types(types: TypeRegistry) -> TypeRegistry:
    """Register ``z8.expired`` and the retention and hold records in ``types``."""
    for name, cls in RETENTION_TYPES.items():
        if cls not in types:
            types.register(cls, name=name)
    return types


class Hold(msgspec.Struct, frozen=True):
    """A legal hold in force: on ``subject`` or on ``stream``, placed by ``by``."""

    subject: str | None
    stream: str | None
    by: str
    reason: str
    placed_at: int
    """When it was journaled (Unix ns)."""
    position: int
    """The position of its ``z8.HoldPlaced`` record."""


class Skipped(msgspec.Struct, frozen=True):
    """A stream due to expire that was not, and why."""

    stream: str
    reason: str


class ExpiryReport(msgspec.Struct, frozen=True):
    """What one ``expire`` call did.

    ``expired``: the acts journaled (one per stream). ``skipped``: streams due that were
    kept (a legal hold, unsettled effects, written to meanwhile, already expired).
    ``examined``: streams whose age was looked at. ``tombstoned``: records replaced by
    tombstones by this call (including those an interrupted expiry left to finish).
    """

    expired: list[RecordsExpired]
    skipped: list[Skipped]
    examined: int
    tombstoned: int

    @property
    def records(self) -> int:
        """How many records the acts of this call expired."""
        return sum(act.count for act in self.expired)


_encode = msgspec.msgpack.Encoder().encode
_decode_act = msgspec.msgpack.Decoder(RecordsExpired).decode
_decode_pending = msgspec.msgpack.Decoder(list[tuple[int, int]]).decode


def expired_error(stream: str) -> RecordExpired:
    """What reading or rebuilding an expired stream raises."""
    return RecordExpired(
        f"stream {stream!r} was expired under its retention rule: its records are tombstones "
        f"(positions and hashes kept, payloads gone); its z8.RecordsExpired act is in {RETENTION_STREAM}"
    )


# --- the write ops (run by ``_commit.Batch`` inside one write transaction) -----------------


class ExpireOp(msgspec.Struct, frozen=True):
    """Journal the acts for ``targets`` (stream, version when selected, rule), mark the
    streams expired and write up to ``tombstones`` tombstones (None: all)."""

    targets: list[tuple[str, int, str]]
    holds_version: int
    by: str
    reason: str
    now: int
    tombstones: int | None

    def apply(self, batch: Batch) -> tuple[list[RecordsExpired], list[Skipped], int, bool]:
        view = batch._view  # noqa: SLF001 - the batch's transaction; this op is one of its rules
        holds = batch._version(HOLDS_STREAM)  # noqa: SLF001
        if holds != self.holds_version:  # a hold came in since the caller looked: look again
            raise WrongExpectedVersion(HOLDS_STREAM, self.holds_version, holds)
        acts, skipped = [], []
        for stream, version, rule in self.targets:
            try:
                current = batch._version(stream)  # noqa: SLF001
            except RecordExpired:
                skipped.append(Skipped(stream, "already expired"))
                continue
            if current != version:
                skipped.append(Skipped(stream, f"written to since it was selected (now at version {current})"))
                continue
            positions = view.stream_positions(stream)
            digest = blake2b(digest_size=32)
            for position in positions:
                digest.update(view.record(position)[-32:])  # type: ignore[index]
            acts.append(RecordsExpired(stream, positions[0], positions[-1], len(positions), digest.digest(),
                                       self.by, rule, self.reason, self.now))
        if not acts:
            return acts, skipped, 0, False
        events = [("z8.RecordsExpired", 1, _encode(act), None, None) for act in acts]
        written = batch._append(AppendOp([StreamAppend(RETENTION_STREAM, ANY, events)], None, None, self.by))  # noqa: SLF001
        raw = view.get_meta(PENDING_KEY)
        pending = _decode_pending(raw) if raw else []
        for act, envelope in zip(acts, written):
            view.mark_expired(act.stream)
            view.drop_snapshot(act.stream)
            batch._versions.pop(act.stream, None)  # noqa: SLF001 - the next op must see it expired
            pending.append((envelope.position, act.first_position))
        view.put_meta(PENDING_KEY, _encode(pending))
        known = {envelope.position: act for act, envelope in zip(acts, written)}
        done, more = _tombstone(view, self.tombstones, known) if self.tombstones != 0 else (0, True)
        return acts, skipped, done, more


class TombstoneOp(msgspec.Struct, frozen=True):
    """Write up to ``limit`` (None: all) of the tombstones journaled acts still owe."""

    limit: int | None

    def apply(self, batch: Batch) -> tuple[int, bool]:
        return _tombstone(batch._view, self.limit, {})  # noqa: SLF001


def _tombstone(view: WriteView, limit: int | None, known: dict[int, RecordsExpired]) -> tuple[int, bool]:
    """Replace the records of pending acts by tombstones; (written, whether some remain)."""
    raw = view.get_meta(PENDING_KEY)
    pending = _decode_pending(raw) if raw else []
    written = 0
    while pending:
        act_position, resume = pending[0]
        act = known.get(act_position) or _decode_act(decode_record(view.record(act_position)).data)  # type: ignore[arg-type]
        for position in view.stream_positions(act.stream):
            if position < resume or position > act.last_position:
                continue
            if limit is not None and written >= limit:
                pending[0] = (act_position, position)
                view.put_meta(PENDING_KEY, _encode(pending))
                return written, True
            record = view.record(position)
            if record is not None and not is_tombstone(record):
                view.replace_record(position, tombstone_of(record))
                written += 1
        pending.pop(0)
    view.put_meta(PENDING_KEY, None)
    return written, False


# --- verification of tombstones ------------------------------------------------------------


class _Tally:
    __slots__ = ("count", "digest")

    def __init__(self) -> None:
        self.count = 0
        self.digest = blake2b(digest_size=32)


class ExpiryCheck:
    """The tombstone rule of ``verify()``: fed every record in log order, it reports a
    tombstone no act covers, and a covered set whose count or digest differs from its act.

    ``read_acts(from_version)`` returns the ``$retention`` records from that version on;
    they are read up front (acts follow the records they name) and again if a tombstone
    turns up that they do not cover (an expiry committed while the walk went on).
    """

    def __init__(self, read_acts: Callable[[int], list[Envelope]]) -> None:
        self._read_acts = read_acts
        self.acts: dict[str, tuple[int, RecordsExpired]] = {}
        """stream -> (position of its act, the act)."""
        self._tallies: dict[str, _Tally] = {}
        self._version = 0
        self._refresh()

    def _refresh(self) -> None:
        for envelope in self._read_acts(self._version + 1):
            self._version = envelope.version
            if envelope.type == "z8.RecordsExpired":
                act = _decode_act(envelope.data)
                self.acts.setdefault(act.stream, (envelope.position, act))

    def see(self, record: bytes, envelope: Envelope, tomb: bool | None = None) -> tuple[int, str] | None:
        """(bad position, why) if ``record`` breaks the tombstone rule, else None.

        Only tombstones and records of streams in :attr:`acts` need to be shown: the
        walk skips the call for the others (it is on every record's path)."""
        position = envelope.position
        if tomb is None:
            tomb = is_tombstone(record)
        cover = self.acts.get(envelope.stream)
        if tomb and not _covers(cover, position):
            self._refresh()
            cover = self.acts.get(envelope.stream)
        if not _covers(cover, position):
            if tomb:
                return position, (
                    f"position {position} is a tombstone no z8.RecordsExpired act in {RETENTION_STREAM} "
                    "covers: its record's payload was removed outside expiry"
                )
            return None
        _, act = cover  # type: ignore[misc]
        tally = self._tallies.setdefault(envelope.stream, _Tally())
        tally.count += 1
        tally.digest.update(record[-32:])
        if position == act.last_position and (tally.count != act.count or tally.digest.digest() != act.digest):
            return act.first_position, (
                f"the {tally.count} records of {envelope.stream!r} from position {act.first_position} to "
                f"{act.last_position} do not match the z8.RecordsExpired act that expired them "
                f"({act.count} records and their digest): records were added, dropped or swapped"
            )
        return None


def _covers(cover: tuple[int, RecordsExpired] | None, position: int) -> bool:
    if cover is None:
        return False
    act_position, act = cover
    return act.first_position <= position <= act.last_position < act_position


# --- the journal's retention methods -------------------------------------------------------


class _HoldBook:
    """The holds in force, folded from ``$holds`` up to ``version``."""

    def __init__(self) -> None:
        self.version = 0
        self.holds: dict[tuple[str, str], Hold] = {}
        self.lock = threading.Lock()


def _hold_key(subject: object, stream: object) -> tuple[str, str]:
    if (subject is None) == (stream is None):
        raise InvalidArgument("name exactly one of subject= or stream= for a legal hold")
    if stream is not None:
        return "stream", check_stream(stream)
    if not isinstance(subject, str) or not subject or len(subject.encode()) > 255:
        raise InvalidArgument(f"subject must be a non-empty str of at most 255 bytes, got {subject!r:.80}")
    return "subject", subject


def _check_who(by: object, reason: object) -> None:
    if not isinstance(by, str) or not by or len(by.encode()) > 255:
        raise InvalidArgument(f"by= must name who acts: a non-empty str of at most 255 bytes, got {by!r:.80}")
    if not isinstance(reason, str):
        raise InvalidArgument(f"reason must be a str, got {type(reason).__name__}")


def _now_ns(now: object) -> int:
    if now is None:
        return time.time_ns()
    if isinstance(now, _dt.datetime):
        if now.tzinfo is None:
            raise InvalidArgument("now= as a datetime must be timezone-aware (e.g. datetime.now(timezone.utc))")
        return int(now.timestamp() * 1_000_000_000)
    if isinstance(now, bool) or not isinstance(now, int):
        raise InvalidArgument(f"now= must be Unix nanoseconds (int) or an aware datetime, got {now!r}")
    return now


class RetentionMethods:
    """Expiry and legal holds, as methods of every :class:`~z8.journal.Journal`."""

    async def expire(
        self,
        *targets: Retention | str,
        now: int | _dt.datetime | None = None,
        by: str,
        reason: str = "",
        spare: Mapping[str, str] | None = None,
    ) -> ExpiryReport:
        """Expire what ``targets`` say: the due streams of each :class:`Retention` rule,
        and each stream named outright. Returns what was done, once durable.

        A rule expires a stream of its category whose last event is older than
        ``keep_days`` at ``now`` (Unix ns or an aware datetime; default: the wall clock).
        Held streams and those in ``spare`` (stream -> why) are kept and listed in the
        report's ``skipped``. Each expiry is journaled as ``z8.RecordsExpired`` in
        ``$retention`` before anything is gone; expiring again writes nothing.
        Raises, writing nothing: ``InvalidArgument`` (no targets, a bad ``by``/``now``, a
        stream that has no events), ``ReservedStreamName`` (a ``$``-stream),
        ``LegalHoldActive`` (a named stream is held).
        """
        self._check_open()  # type: ignore[attr-defined]
        _check_who(by, reason)
        stamp = _now_ns(now)
        spared = dict(spare or {})
        rules, named = self._expiry_targets(targets)
        tombstoned = await self._finish_expiry()
        examined, skipped, acts = 0, [], []
        for _ in range(_MAX_ATTEMPTS):
            book = self._hold_book()
            for stream in named:
                if ("stream", stream) in book.holds:
                    raise LegalHoldActive(f"stream {stream!r} is under a legal hold; release it (release_hold) to expire it")
            selected, skipped, examined = self._select(rules, named, stamp, book, spared)
            if not selected:
                break
            op = ExpireOp(selected, book.version, by, reason, stamp, TOMBSTONE_CHUNK)
            try:
                acts, late, done, more = await self._execute(op)  # type: ignore[attr-defined]
            except WrongExpectedVersion:
                continue  # a hold was placed meanwhile: select again under it
            skipped += late
            tombstoned += done + (await self._finish_expiry() if more else 0)
            break
        return ExpiryReport(acts, skipped, examined, tombstoned)

    def check_not_expired(self, stream: str) -> None:
        """Raise ``RecordExpired`` if ``stream`` was expired (nothing can be read from or
        written to it again); for who is about to rebuild state from it."""
        self._check_open()  # type: ignore[attr-defined]
        if self._expired(check_stream(stream, allow_reserved=True)):  # type: ignore[attr-defined]
            raise expired_error(stream)

    def _expiry_targets(self, targets: tuple[Any, ...]) -> tuple[list[Retention], list[str]]:
        if not targets:
            raise InvalidArgument("expire() needs what to expire: Retention rules or stream names")
        rules, named = [], []
        for target in targets:
            if isinstance(target, Retention):
                rules.append(target)
            elif isinstance(target, str):
                stream = check_stream(target)
                if not self._stream_version(stream):  # type: ignore[attr-defined]
                    raise InvalidArgument(f"stream {stream!r} has no events: nothing to expire")
                named.append(stream)
            else:
                raise InvalidArgument(f"expire() takes Retention rules or stream names, got {target!r:.80}")
        return rules, named

    def _select(
        self, rules: list[Retention], named: list[str], now: int, book: _HoldBook, spare: dict[str, str]
    ) -> tuple[list[tuple[str, int, str]], list[Skipped], int]:
        selected: list[tuple[str, int, str]] = []
        skipped: list[Skipped] = []
        seen: set[str] = set()
        examined = 0
        for stream in named:
            if stream in seen:
                continue
            seen.add(stream)
            examined += 1
            if self._expired(stream):  # type: ignore[attr-defined]
                skipped.append(Skipped(stream, "already expired"))
            else:
                selected.append((stream, self._stream_version(stream), "explicit"))  # type: ignore[attr-defined]
        for rule in rules:
            cutoff = now - int(rule.keep_days * _NS_PER_DAY)
            for stream, version, last, expired in self._category_heads(rule.category):
                if expired or stream in seen:
                    continue
                seen.add(stream)
                examined += 1
                if self._get([last])[0].recorded_at >= cutoff:  # type: ignore[attr-defined]
                    continue
                hold = book.holds.get(("stream", stream))
                if hold is not None:
                    skipped.append(Skipped(stream, f"legal hold by {hold.by}: {hold.reason}".rstrip(": ")))
                elif stream in spare:
                    skipped.append(Skipped(stream, spare[stream]))
                else:
                    selected.append((stream, version, str(rule)))
        return selected, skipped, examined

    def _category_heads(self, category: str) -> list[tuple[str, int, int, bool]]:
        heads = self._stream_heads(category + "-")  # type: ignore[attr-defined]
        version = self._stream_version(category)  # type: ignore[attr-defined]
        if version and self._expired(category):  # type: ignore[attr-defined]
            heads.append((category, version, 0, True))
        elif version:  # the stream named as the category itself ("Loan")
            last = self._read_stream(category, None, True, 1)[0].position  # type: ignore[attr-defined]
            heads.append((category, version, last, False))
        return heads

    async def _finish_expiry(self) -> int:
        """Write the tombstones that journaled acts still owe (an interrupted expiry)."""
        written, more = 0, True
        while more:
            done, more = await self._execute(TombstoneOp(TOMBSTONE_CHUNK))  # type: ignore[attr-defined]
            written += done
        return written

    # --- legal holds -------------------------------------------------------------------

    async def hold(self, *, subject: str | None = None, stream: str | None = None, by: str, reason: str = "") -> Hold:
        """Place a legal hold on ``subject`` or ``stream`` (journaled in ``$holds``).

        While it stands, the stream is never expired and the subject's personal data
        cannot be erased. Holding what is already held writes nothing and returns the
        hold in force. Raises ``InvalidArgument``/``InvalidStreamName`` for bad input.
        """
        self._check_open()  # type: ignore[attr-defined]
        key = _hold_key(subject, stream)
        _check_who(by, reason)
        for _ in range(_MAX_ATTEMPTS):
            book = self._hold_book()
            if key in book.holds:
                return book.holds[key]
            try:
                await self.append(HOLDS_STREAM, [HoldPlaced(subject, stream, by, reason)], book.version,  # type: ignore[attr-defined]
                                  actor=by, allow_reserved=True)
            except WrongExpectedVersion:
                continue
            return self._hold_book().holds[key]
        raise WrongExpectedVersion(HOLDS_STREAM, book.version, self._stream_version(HOLDS_STREAM))  # type: ignore[attr-defined]

    async def release_hold(
        self, *, subject: str | None = None, stream: str | None = None, by: str, reason: str = ""
    ) -> Hold:
        """Release the legal hold on ``subject`` or ``stream`` (journaled in ``$holds``);
        returns the hold that was released. Raises ``InvalidArgument`` when none stands."""
        self._check_open()  # type: ignore[attr-defined]
        key = _hold_key(subject, stream)
        _check_who(by, reason)
        for _ in range(_MAX_ATTEMPTS):
            book = self._hold_book()
            held = book.holds.get(key)
            if held is None:
                raise InvalidArgument(f"no legal hold stands on {key[0]} {key[1]!r}; holds() lists those that do")
            try:
                await self.append(HOLDS_STREAM, [HoldReleased(subject, stream, by, reason)], book.version,  # type: ignore[attr-defined]
                                  actor=by, allow_reserved=True)
            except WrongExpectedVersion:
                continue
            return held
        raise WrongExpectedVersion(HOLDS_STREAM, book.version, self._stream_version(HOLDS_STREAM))  # type: ignore[attr-defined]

    def holds(self) -> list[Hold]:
        """The legal holds in force, oldest first."""
        self._check_open()  # type: ignore[attr-defined]
        return sorted(self._hold_book().holds.values(), key=lambda hold: hold.position)

    def check_erasable(self, subject: str) -> None:
        """Raise ``LegalHoldActive`` if a legal hold stands on ``subject`` (erasure must wait)."""
        self._check_open()  # type: ignore[attr-defined]
        hold = self._hold_book().holds.get(("subject", subject))
        if hold is not None:
            raise LegalHoldActive(
                f"subject {subject!r} is under a legal hold placed by {hold.by} ({hold.reason or 'no reason given'}); "
                "release it (release_hold) before erasing"
            )

    def _hold_book(self) -> _HoldBook:
        book: _HoldBook = self.__dict__.setdefault("_z8_hold_book", _HoldBook())
        with book.lock:
            version = self._stream_version(HOLDS_STREAM)  # type: ignore[attr-defined]
            if version > book.version:
                for envelope in self._read_stream(HOLDS_STREAM, book.version + 1, False, None):  # type: ignore[attr-defined]
                    _fold_hold(book, envelope)
                book.version = version
        return book

    def _expiry_check(self) -> ExpiryCheck:
        """The tombstone rule for one ``verify()`` walk."""
        return ExpiryCheck(lambda version: self._read_stream(RETENTION_STREAM, version, False, None))  # type: ignore[attr-defined]


def _fold_hold(book: _HoldBook, envelope: Envelope) -> None:
    record: Any
    if envelope.type == "z8.HoldPlaced":
        record = msgspec.msgpack.decode(envelope.data, type=HoldPlaced)
        key = ("stream", record.stream) if record.stream is not None else ("subject", record.subject)
        book.holds[key] = Hold(record.subject, record.stream, record.by, record.reason,
                               envelope.recorded_at, envelope.position)
    elif envelope.type == "z8.HoldReleased":
        record = msgspec.msgpack.decode(envelope.data, type=HoldReleased)
        key = ("stream", record.stream) if record.stream is not None else ("subject", record.subject)
        book.holds.pop(key, None)


# --- compaction ---------------------------------------------------------------------------


def compact_journal(path: str | Path) -> tuple[int, int]:
    """Rewrite a closed LMDB journal's file with its live pages only; (bytes before, after).

    After expiry the pages that held expired payloads are free but still in the file;
    this drops them (LMDB's compacting copy, then an atomic rename over ``data.mdb``).
    The journal must be closed in every process: raises ``JournalAlreadyOpen`` if this
    process has it open or another process holds a reader on it.
    """
    import os

    import lmdb

    from ._lmdb import _DBS, _open_paths, _open_paths_lock

    directory = Path(path)
    data = directory / "data.mdb"
    if not data.is_file():
        raise JournalPathError(f"{str(directory)!r} holds no LMDB journal (no data.mdb)")
    with _open_paths_lock:
        if str(directory.resolve()) in _open_paths:
            raise JournalAlreadyOpen(f"journal {str(directory)!r} is open in this process; close it before compacting")
    env = lmdb.open(str(directory), max_dbs=len(_DBS), readahead=False)
    try:
        others = [line.split()[0] for line in env.readers().splitlines()[1:] if line.split()]
        if any(pid != str(os.getpid()) for pid in others):
            raise JournalAlreadyOpen(f"journal {str(directory)!r} is open in another process (pid {others}); close it first")
        before = data.stat().st_size
        target = directory / "compact.tmp"
        target.mkdir(exist_ok=True)
        copy = target / "data.mdb"
        copy.unlink(missing_ok=True)
        env.copy(str(target), compact=True)
    finally:
        env.close()
    fsync_path(copy)
    os.replace(copy, data)
    target.rmdir()
    fsync_path(directory)
    return before, data.stat().st_size
