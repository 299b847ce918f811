"""The journal: an append-only, hash-chained event store (LMDB embedded by default).

Agents are rebuilt from it, effects are deduplicated by it, auditors read it.
``open_journal(path)`` gives the LMDB journal; ``open_memory_journal()`` an in-memory
one for tests. Both implement :class:`Journal` and pass ``z8.testing``'s conformance suite.
"""

from ._envelope import (
    ANY,
    GENESIS_HASH,
    MAX_STREAM_BYTES,
    NO_STREAM,
    STREAM_EXISTS,
    Envelope,
    ExpectedVersion,
    Snapshot,
    VerifyReport,
)
from ._journal import Append, Journal
from ._lmdb import DEFAULT_MAP_SIZE, LmdbJournal, open_journal
from ._memory import MemoryJournal, open_memory_journal
from ._personal import ERASED, Personal, PersonalCodec, Subject
from ._retention import (
    Expired,
    ExpiryReport,
    Hold,
    HoldPlaced,
    HoldReleased,
    RecordsExpired,
    Retention,
    Skipped,
    compact_journal,
)
from ._subscription import Subscription
from ._types import Event, RawEvent, TypeRegistry, Upcaster
from ._vault import SubjectErased

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "GENESIS_HASH",
    "MAX_STREAM_BYTES",
    "DEFAULT_MAP_SIZE",
    "Append",
    "Envelope",
    "Event",
    "ExpectedVersion",
    "Journal",
    "LmdbJournal",
    "MemoryJournal",
    "RawEvent",
    "Snapshot",
    "Subscription",
    "TypeRegistry",
    "Upcaster",
    "VerifyReport",
    "open_journal",
    "open_memory_journal",
    "Personal",
    "Subject",
    "ERASED",
    "SubjectErased",
    "PersonalCodec",
    "Retention",
    "RecordsExpired",
    "Expired",
    "ExpiryReport",
    "Skipped",
    "Hold",
    "HoldPlaced",
    "HoldReleased",
    "compact_journal",
]
