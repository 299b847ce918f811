"""A fake clock for agents' ``ctx.now``: time moves only when the test says so."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["FakeClock"]


class FakeClock:
    """Callable returning Unix time in nanoseconds; pass it as ``Runtime(clock=...)`` or
    ``Application(clock=...)`` and move it with :meth:`advance` or :meth:`set`."""

    def __init__(self, start_ns: int = 1_700_000_000_000_000_000) -> None:
        self.now_ns = start_ns
        self._watchers: list[Callable[[], None]] = []

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, seconds: float) -> int:
        """Move forward by ``seconds``; returns the new time (ns)."""
        if seconds < 0:
            raise ValueError("a clock only moves forward; use set() to place it")
        self.now_ns += int(seconds * 1_000_000_000)
        self._moved()
        return self.now_ns

    def set(self, now_ns: int) -> None:
        """Place the clock at ``now_ns`` (Unix ns)."""
        self.now_ns = now_ns
        self._moved()

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` whenever the clock moves (the outbox's timers use it to wake)."""
        self._watchers.append(callback)

    def _moved(self) -> None:
        for callback in list(self._watchers):
            try:
                callback()
            except RuntimeError:  # its event loop has closed: forget it
                self._watchers.remove(callback)
