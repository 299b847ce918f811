"""Subscriptions: catch up from a position, then follow the live tail.

In-process commits wake subscribers at once: the writer thread hands each event
loop that has waiting subscribers one ``call_soon_threadsafe`` per commit. Commits
by other processes sharing the journal cannot signal us, so an idle subscriber also
re-reads the head every ``CROSS_PROCESS_POLL`` seconds.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import TYPE_CHECKING

from z8.errors import InvalidArgument, JournalClosed

from ._envelope import Envelope

if TYPE_CHECKING:
    from ._journal import Journal

__all__ = ["Subscription", "Notifier", "CROSS_PROCESS_POLL"]

CROSS_PROCESS_POLL = 0.05
"""Seconds an idle subscriber waits before looking for other processes' commits."""


class Notifier:
    """Wakes the subscribers waiting on a journal, from whichever thread committed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[asyncio.AbstractEventLoop, set[asyncio.Event]] = {}

    def register(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        with self._lock:
            self._waiting.setdefault(loop, set()).add(event)

    def unregister(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        with self._lock:
            events = self._waiting.get(loop)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiting[loop]

    def notify(self) -> None:
        """Called after every commit; cheap when nobody listens."""
        if not self._waiting:
            return
        with self._lock:
            targets = [(loop, tuple(events)) for loop, events in self._waiting.items()]
        for loop, events in targets:
            try:
                loop.call_soon_threadsafe(_set_all, events)
            except RuntimeError:  # that loop is closed; its subscribers are gone
                with self._lock:
                    self._waiting.pop(loop, None)

    close = notify


def _set_all(events: tuple[asyncio.Event, ...]) -> None:
    for event in events:
        event.set()


class Subscription:
    """An async iterator of envelopes in log order; see ``Journal.subscribe``.

    Use it as ``async with journal.subscribe(...) as sub: async for e in sub: ...``.
    Iteration ends when the subscription or the journal is closed.
    """

    def __init__(
        self,
        journal: Journal,
        notifier: Notifier,
        start: int,
        name: str | None,
        types: frozenset[str] | None,
        stream_prefix: str | None,
        batch_size: int,
    ) -> None:
        self._journal = journal
        self._notifier = notifier
        self._next = start
        self._name = name
        self._types = types
        self._prefix = stream_prefix
        self._batch = batch_size
        self._buffer: deque[Envelope] = deque()
        self._delivered = start - 1
        self._closed = False
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def name(self) -> str | None:
        """The durable cursor's name, or None for a transient subscription."""
        return self._name

    @property
    def position(self) -> int:
        """The position of the last envelope delivered (start - 1 before the first)."""
        return self._delivered

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Envelope:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            try:
                page = self._journal.read_all(self._next, self._batch)
            except JournalClosed:
                raise StopAsyncIteration from None
            if page:
                self._next = page[-1].position + 1
                self._buffer.extend(e for e in page if self._wanted(e))
            else:
                await self._wait()
        envelope = self._buffer.popleft()
        self._delivered = envelope.position
        return envelope

    def _wanted(self, envelope: Envelope) -> bool:
        if self._types is not None and envelope.type not in self._types:
            return False
        return self._prefix is None or envelope.stream.startswith(self._prefix)

    async def _wait(self) -> None:
        if self._event is None:
            self._event = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            self._notifier.register(self._loop, self._event)
        self._event.clear()
        try:
            if self._journal.head_position() >= self._next:
                return  # a commit landed between our read and the clear
        except JournalClosed:
            return
        try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            async with asyncio.timeout(CROSS_PROCESS_POLL):
                await self._event.wait()
        except TimeoutError:
            pass

    async def ack(self, position: int | None = None) -> int:
        """Durably store this named cursor at ``position`` (default: last delivered)."""
        if self._name is None:
            raise InvalidArgument("ack() needs a named subscription: subscribe(name=...)")
        return await self._journal.ack(self._name, self._delivered if position is None else position)

    async def aclose(self) -> None:
        """Stop the subscription; iteration ends."""
        self._closed = True
        if self._event is not None and self._loop is not None:
            self._notifier.unregister(self._loop, self._event)
            self._event.set()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
