"""The bounded mailbox: a deque, one waiting reader, and a queue of waiting writers.

This is the actor layer's hot path, so it is built on a deque and bare futures rather
than a general-purpose channel: ``put_nowait`` and ``get_nowait`` are a length check
and a deque operation, and a wake-up is one ``set_result``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from z8.errors import MailboxFull

__all__ = ["Mailbox", "MailboxClosed"]


class MailboxClosed(Exception):
    """Internal: the actor behind this mailbox is gone (the ref turns it into dead letters)."""


class Mailbox:
    """A bounded FIFO with backpressure for writers and one reader (the actor's task)."""

    __slots__ = ("_items", "capacity", "_reader", "_writers", "closed")

    def __init__(self, capacity: int) -> None:
        self._items: deque[Any] = deque()
        self.capacity = capacity
        self._reader: asyncio.Future[None] | None = None
        self._writers: deque[asyncio.Future[None]] | None = None  # made on the first wait for room
        self.closed = False

    @property
    def writers_waiting(self) -> bool:
        """True while senders wait for room (newcomers queue behind them)."""
        return bool(self._writers)

    def __len__(self) -> int:
        return len(self._items)

    def put_nowait(self, item: Any) -> None:
        """Append ``item`` or raise :class:`MailboxFull` at capacity."""
        if self.closed:
            raise MailboxClosed
        if len(self._items) >= self.capacity:
            raise MailboxFull(f"mailbox is full ({self.capacity} messages); use tell() to wait for room")
        self._items.append(item)
        self._wake_reader()

    async def put(self, item: Any) -> None:
        """Append ``item``, waiting while the mailbox is full (backpressure)."""
        while (len(self._items) >= self.capacity or self._writers) and not self.closed:
            waiter = asyncio.get_running_loop().create_future()
            if self._writers is None:
                self._writers = deque()
            self._writers.append(waiter)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                self._wake_writer()  # pass our turn on
                raise
            if len(self._items) < self.capacity:
                break  # our turn: room was made for us
        self.put_nowait(item)

    def put_system(self, item: Any) -> None:
        """Append a runtime message regardless of capacity (stops, child exits)."""
        if self.closed:
            return  # nobody will read it (a late restart timer, say)
        self._items.append(item)
        self._wake_reader()

    def put_urgent(self, item: Any) -> None:
        """Put a runtime message at the head of the queue (a stop request)."""
        self._items.appendleft(item)
        self._wake_reader()

    def get_nowait(self) -> Any:
        """Pop the oldest item (the caller checked ``len``)."""
        item = self._items.popleft()
        if self._writers:
            self._wake_writer()
        return item

    async def wait(self) -> None:
        """Wait until there is something to get."""
        while not self._items:
            reader = self._reader = asyncio.get_running_loop().create_future()
            await reader

    def _wake_reader(self) -> None:
        reader = self._reader
        if reader is not None:
            self._reader = None
            if not reader.done():
                reader.set_result(None)

    def _wake_writer(self) -> None:
        while self._writers:
            writer = self._writers.popleft()
            if not writer.done():
                writer.set_result(None)
                return

    def close(self) -> list[Any]:
        """Refuse further messages; return what was left unread; release waiting writers."""
        self.closed = True
        left = list(self._items)
        self._items.clear()
        while self._writers:
            writer = self._writers.popleft()
            if not writer.done():
                writer.set_result(None)
        return left

    def reopen(self) -> None:
        """Accept messages again (the same actor restarted in place)."""
        self.closed = False
