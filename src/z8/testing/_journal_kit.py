"""Helpers for tests that need to look under, or behind, the journal's contract."""

from __future__ import annotations

import msgspec

from z8.errors import InvalidPosition
from z8.journal import Journal
from z8.journal._envelope import decode_record, seal

__all__ = ["stored_record", "tamper", "flip_byte", "reseal"]


def stored_record(journal: Journal, position: int) -> bytes:
    """The raw sealed record stored at ``position`` (what ``verify()`` checks)."""
    found = journal._records(position, 1)  # noqa: SLF001 - the kit is the journal's own
    if not found or found[0][0] != position:
        raise InvalidPosition(f"no record is stored at position {position}")
    return found[0][1]


def tamper(journal: Journal, position: int, record: bytes | None) -> None:
    """Overwrite the record at ``position`` with ``record`` (or drop it, with None),
    bypassing every rule, as an attacker with file access could. For proving ``verify()``."""
    journal._rewrite_record(position, record)  # type: ignore[attr-defined]  # noqa: SLF001


def flip_byte(journal: Journal, position: int, offset: int, mask: int = 0x01) -> None:
    """Flip bits (``mask``) of one byte of the record at ``position``."""
    record = bytearray(stored_record(journal, position))
    record[offset] ^= mask
    tamper(journal, position, bytes(record))


def reseal(journal: Journal, position: int, **changes: object) -> None:
    """Rewrite fields of the event at ``position`` and recompute its own hash, as a
    forger who knows the format would: only the chain link to the next event betrays it."""
    envelope = msgspec.structs.replace(decode_record(stored_record(journal, position)), **changes)
    fields = msgspec.structs.astuple(envelope)[:-1]
    tamper(journal, position, seal(*fields)[1])
