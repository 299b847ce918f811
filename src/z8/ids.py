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

    __slots__ = ("_lock", "_last_ms", "_counter")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0

    def __call__(self) -> str:
        """Return a new UUIDv7 in canonical 36-character text form."""
        return _format(self.next_int())

    def next_int(self) -> int:
        """Return a new UUIDv7 as a 128-bit int (greater than every earlier one)."""
        return self._ints(1)[0]

    def many(self, count: int) -> list[str]:
        """Return ``count`` new ids, in increasing order (one clock read, one lock)."""
        return [_format(value) for value in self._ints(count)]

    def _ints(self, count: int) -> list[int]:
        randoms = os.urandom(8 * count + 2)
        seed = int.from_bytes(randoms[-2:], "big") & 0x7FF  # top bit clear: room to count up
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms > self._last_ms:
                self._last_ms, self._counter = ms, seed - 1
            values = []
            for i in range(count):
                self._counter += 1
                if self._counter > _COUNTER_MAX:
                    self._last_ms += 1  # borrow the next millisecond (RFC 9562 §6.2)
                    self._counter = 0
                values.append(
                    (self._last_ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | self._counter << 64 | 0b10 << 62
                    | int.from_bytes(randoms[8 * i : 8 * i + 8], "big") & 0x3FFF_FFFF_FFFF_FFFF
                )
        return values


def _format(value: int) -> str:
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


uuid7 = UuidV7()
"""The process's default generator (stateless to callers: it only hands out ids)."""


def uuid7_time_ms(value: str) -> int:
    """Return the Unix time in milliseconds embedded in a UUIDv7 string."""
    return uuid.UUID(value).int >> 80
