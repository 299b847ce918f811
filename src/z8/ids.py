"""Identifiers: UUIDv7 (RFC 9562), time-ordered and monotonic within a process.

The 48-bit millisecond timestamp leads, then a 12-bit counter (RFC 9562 §6.2,
method 1) that is re-seeded at random each new millisecond and incremented
within one, then 62 random bits. Ids made by one generator therefore sort in the
order they were made, even thousands within one millisecond and even if the wall
clock steps back (the generator never goes below the last timestamp it used).
"""

from __future__ import annotations

import os
import threading
import time
import uuid

__all__ = ["UuidV7", "uuid7", "uuid7_time_ms"]

_COUNTER_MAX = 0xFFF


class UuidV7:
    """A thread-safe UUIDv7 generator; each instance is monotonic on its own."""

    __slots__ = ("_lock", "_last_ms", "_counter", "_pool", "_at", "_stamp_ms", "_stamp")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0
        self._pool = ""
        self._at = 0
        self._stamp_ms, self._stamp = -1, ""

    def __call__(self) -> str:
        """Return a new UUIDv7 in canonical 36-character text form."""
        with self._lock:
            at = self._at
            if at + 19 > len(self._pool):
                self._pool, at = os.urandom(4104).hex(), 0  # one syscall for 432 ids' randomness
            rand, seed, self._at = self._pool[at : at + 16], self._pool[at + 16 : at + 19], at + 19
            ms = time.time_ns() // 1_000_000
            if ms > self._last_ms:
                self._last_ms, self._counter = ms, int(seed, 16) & 0x7FF
            else:
                self._counter += 1
                if self._counter > _COUNTER_MAX:
                    self._last_ms, self._counter = self._last_ms + 1, 0
            if self._stamp_ms != self._last_ms:
                self._stamp_ms, self._stamp = self._last_ms, _stamp(self._last_ms)
            stamp, counter = self._stamp, self._counter
        return f"{stamp}{counter:03x}-{_VARIANT[rand[0]]}{rand[1:4]}-{rand[4:16]}"

    def many(self, count: int) -> list[str]:
        """Return ``count`` new ids, in increasing order (one clock read, one lock)."""
        # 16 random hex digits per id; the first carries the RFC variant (10xx) and two
        # random bits, the other 15 are random: 62 random bits in all.
        rand = os.urandom(8 * count + 2).hex()
        seed = int(rand[-4:], 16) & 0x7FF  # top bit clear: room to count up
        ids = []
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms > self._last_ms:
                self._last_ms, self._counter = ms, seed - 1
            counter, stamp_ms = self._counter, self._last_ms
            stamp = _stamp(stamp_ms)
            for i in range(0, 16 * count, 16):
                counter += 1
                if counter > _COUNTER_MAX:
                    stamp_ms, counter = stamp_ms + 1, 0  # borrow the next millisecond (RFC 9562 §6.2)
                    stamp = _stamp(stamp_ms)
                ids.append(f"{stamp}{counter:03x}-{_VARIANT[rand[i]]}{rand[i + 1 : i + 4]}-{rand[i + 4 : i + 16]}")
            self._counter, self._last_ms = counter, stamp_ms
        return ids


_VARIANT = dict(zip("0123456789abcdef", "89ab89ab89ab89ab"))


def _stamp(ms: int) -> str:
    """The fixed head of every id made in millisecond ``ms``: time, then version 7."""
    h = f"{ms & 0xFFFF_FFFF_FFFF:012x}"
    return f"{h[:8]}-{h[8:]}-7"


uuid7 = UuidV7()
"""The process's default generator (stateless to callers: it only hands out ids)."""


def uuid7_time_ms(value: str) -> int:
    """Return the Unix time in milliseconds embedded in a UUIDv7 string."""
    return uuid.UUID(value).int >> 80
