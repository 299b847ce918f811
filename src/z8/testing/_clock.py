"""A fake clock for agents' ``ctx.now``: time moves only when the test says so."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """Callable returning Unix time in nanoseconds; pass it as ``Runtime(clock=...)`` or
    ``Application(clock=...)`` and move it with :meth:`advance` or :meth:`set`."""

    def __init__(self, start_ns: int = 1_700_000_000_000_000_000) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, seconds: float) -> int:
        """Move forward by ``seconds``; returns the new time (ns)."""
        if seconds < 0:
            raise ValueError("a clock only moves forward; use set() to place it")
        self.now_ns += int(seconds * 1_000_000_000)
        return self.now_ns

    def set(self, now_ns: int) -> None:
        """Place the clock at ``now_ns`` (Unix ns)."""
        self.now_ns = now_ns
