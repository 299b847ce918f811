"""Checking a selection of sealed records: one stream's events, or one run's.

Shared by ``Journal.verify(stream=...)`` and by the offline check of an exported run
bundle (``z8.audit.verify_bundle``), which has the stored records but no journal.

The records come in log order but need not be contiguous (a stream's events are
interleaved with other streams'). What can be checked of such a selection:

- every record's own hash over its stored bytes (:func:`check_record`): an altered byte
  is found at the event that holds it;
- the position each record says it has, and that positions only go forward;
- the chain link (``prev_hash``) wherever two selected records sit at consecutive
  positions; between non-consecutive ones the link runs through records outside the
  selection, which only the whole-log ``verify()`` (or a sealed digest) covers;
- for one stream: that it holds exactly versions 1, 2, … of that stream, gap-free, and
  that its last event is the stream's recorded head.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from ._envelope import Envelope, check_record, decode_record, is_tombstone

__all__ = ["Fault", "RunCheck"]


class Fault(NamedTuple):
    """The first record of a selection that does not reconcile, and why."""

    position: int | None
    version: int | None
    reason: str


class RunCheck:
    """Feed records in log order; the first :class:`Fault` found is returned (check stops there).

    ``stream``: the selection is that stream's events from version 1 (gap-free). Without
    it, any records (a run across streams) are checked for hashes, order and links.
    ``vouched``: the caller checks tombstones (expired records, which cannot hash
    themselves) against their ``z8.RecordsExpired`` act; otherwise a tombstone is a fault.
    """

    def __init__(self, stream: str | None = None, *, vouched: bool = False) -> None:
        self.stream = stream
        self.vouched = vouched
        self.checked = 0
        """Records fed that reconciled."""
        self.links = 0
        """Chain links checked (pairs of selected records at consecutive positions)."""
        self.last: Envelope | None = None

    def feed(self, position: int, record: bytes | None, version: int | None = None) -> Fault | None:
        """Check the record stored at ``position``; ``version`` is the version an index
        files it under (a stream read), None when the record stands alone (a bundle)."""
        last = self.last
        due = (last.version + 1 if last is not None else 1) if self.stream is not None else None
        if due is not None and version is not None and version != due:
            return Fault(position, due, f"version {due} of stream {self.stream!r} is missing "
                                        f"(the next one, v{version}, is at position {position}): an event was dropped")
        if record is None:
            return Fault(position, due, f"the stream index points at position {position}, which holds no event")
        envelope: Envelope | None
        try:
            envelope = decode_record(record)
        except (msgspec.DecodeError, TypeError, ValueError):
            envelope = None
        # the version an index or the stream's order vouches for beats the one the
        # (possibly altered) record claims
        found_version = version if version is not None else due if due is not None \
            else envelope.version if envelope is not None else None
        if not is_tombstone(record):
            reason = check_record(record)
        elif self.vouched:
            reason = None
        else:
            reason = (f"position {position} is a tombstone (its payload was expired): only the journal's "
                      "z8.RecordsExpired act can vouch for it")
        if reason is not None:
            return Fault(position, found_version, reason)
        if envelope is None:
            return Fault(position, due, "the record's hash holds but it does not decode as an envelope")
        if envelope.position != position:
            return Fault(position, found_version, f"the event stored at position {position} says it is position "
                                                  f"{envelope.position}: events were moved or swapped")
        if last is not None and position <= last.position:
            return Fault(position, found_version, f"position {position} comes after position {last.position}: "
                                                  "the records are out of order or repeated")
        if self.stream is not None and envelope.stream == self.stream and envelope.version > due:  # type: ignore[operator]
            return Fault(position, due, f"version {due} of stream {self.stream!r} is missing (the next one, "
                                        f"v{envelope.version}, is at position {position}): an event was dropped")
        if self.stream is not None and (envelope.stream != self.stream or envelope.version != due):
            return Fault(position, found_version, f"the event at position {position} is {envelope.stream!r} "
                                                  f"v{envelope.version}, where {self.stream!r} v{due} was due")
        if last is not None and last.position == position - 1:
            if envelope.prev_hash != last.hash:
                # this record's own hash holds, so its prev_hash is the one written with it:
                # the record before it was rewritten and re-sealed
                return Fault(last.position, last.version, (
                    f"the event at position {last.position} was rewritten: its hash is not the prev_hash "
                    f"that position {position} recorded for it"))
            self.links += 1
        self.last = envelope
        self.checked += 1
        return None

    def finish(self, head: tuple[int, int, bytes] | None) -> Fault | None:
        """For a stream: compare the last event fed with the stream's recorded head
        ``(version, position, hash)`` (None: the journal records no head for it)."""
        last = self.last
        if head is None:
            if last is None:
                return None
            return Fault(last.position, last.version, f"stream {self.stream!r} has events but no recorded head")
        version, position, hash_ = head
        if last is None or last.version < version:
            have = last.version if last is not None else 0
            return Fault(position, have + 1, (
                f"the stream ends at version {have} but its recorded head is version {version} "
                f"(position {position}): events were dropped from its end"))
        if (last.version, last.position, last.hash) != (version, position, hash_):
            return Fault(last.position, last.version, (
                f"the stream's last event (v{last.version}, position {last.position}) differs from its "
                f"recorded head (v{version}, position {position}, hash {hash_.hex()[:16]}…)"))
        return None
