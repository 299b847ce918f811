"""Event handlers (projections): at-least-once, in order, each with a durable cursor.

A handler declares the event types it wants and ``handle``s them one at a time in log
order. Its cursor (named after it) is acked after every event it finishes, so a
restart resumes after the last one — an event may be seen twice, never skipped. A
failure asks ``on_error`` for a verdict, à la Commanded: ``Retry(after)`` (with the
attempt count carried), ``Skip()`` (ack and go on) or ``Stop()`` (the handler stops).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Literal

import msgspec

from z8.actors._actor import Actor, ActorContext
from z8.errors import HandlerStopped, InvalidSpec
from z8.journal import Envelope, Journal

__all__ = ["EventHandler", "Retry", "Skip", "Stop", "Verdict", "HandlerRunner"]

_PAGE = 256


class Retry(msgspec.Struct, frozen=True):
    """Handle the same event again after ``after`` seconds."""

    after: float = 0.0


class Skip(msgspec.Struct, frozen=True):
    """Give up on this event (its position is acked) and go on with the next."""


class Stop(msgspec.Struct, frozen=True):
    """Stop the handler; its cursor stays before the failing event."""


Verdict = Retry | Skip | Stop


class EventHandler:
    """Subclass, list ``handler_types`` (event classes), implement ``handle``.

    ``handler_name`` names the durable cursor: keep it stable. ``handler_consistency =
    "strong"`` makes ``Application.dispatch(..., consistency="strong")`` wait for it.
    """

    handler_name: ClassVar[str] = ""
    handler_types: ClassVar[tuple[type, ...]] = ()
    handler_consistency: ClassVar[Literal["eventual", "strong"]] = "eventual"
    stopped: str | None = None
    """Why the handler stopped (set by the runtime when ``on_error`` said ``Stop()``)."""

    async def handle(self, event: Any, envelope: Envelope) -> None:
        """Handle one event (idempotently: after a crash it may come again)."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement handle()")

    async def on_error(self, error: Exception, event: Any, envelope: Envelope, attempt: int) -> Verdict:
        """The verdict on a failure; default: retry 3 times with backoff, then stop."""
        return Retry(after=min(0.01 * 2**attempt, 1.0)) if attempt < 3 else Stop()


class _Pump:
    z8_system_message = True


class HandlerRunner(Actor):
    """Feeds one EventHandler from the journal (internal: the Application runs it)."""

    actor_kind = "handler"

    def __init__(self, handler: EventHandler) -> None:
        if not handler.handler_name or not handler.handler_types:
            raise InvalidSpec(f"{type(handler).__qualname__} needs handler_name and handler_types")
        self.handler = handler
        self.processed = 0
        self.stopped: str | None = None
        self._progress = asyncio.Event()
        self._idle: asyncio.Task[None] | None = None

    async def on_start(self, ctx: ActorContext) -> None:
        self._ctx = ctx
        self._journal: Journal = ctx._cell.core.journal  # noqa: SLF001 - the runtime's journal
        self._names = {self._journal.types.name_of(cls) for cls in self.handler.handler_types}
        self._subscription = self._journal.subscribe(name=self.handler.handler_name)
        self.processed = self._journal.cursor(self.handler.handler_name)
        await ctx.ref.tell(_Pump())

    async def on_stop(self, ctx: ActorContext) -> None:
        if self.stopped is None:
            self.stopped = "was stopped"
        if self._idle is not None:
            self._idle.cancel()
        await self._subscription.aclose()
        self._progress.set()

    async def receive(self, message: Any, ctx: ActorContext) -> None:
        page = self._journal.read_all(self.processed + 1, _PAGE)
        for envelope in page:
            if envelope.type in self._names and not await self._handle(envelope):
                return
            self.processed = envelope.position
        if page:
            await self._journal.ack(self.handler.handler_name, self.processed)
            self._progress.set()
            self._progress = asyncio.Event()
            await ctx.ref.tell(_Pump())
        else:
            self._idle = asyncio.get_running_loop().create_task(self._wait_for_more(ctx))

    async def _wait_for_more(self, ctx: ActorContext) -> None:
        await self._subscription._wait()  # noqa: SLF001 - woken by a commit, or polls other processes
        ctx.ref.try_tell(_Pump())

    async def _handle(self, envelope: Envelope) -> bool:
        """Handle one event under the verdicts; False when the handler must stop."""
        event = self._journal.decode(envelope)
        attempt = 0
        while True:
            try:
                await self.handler.handle(event, envelope)
                return True
            except Exception as error:  # noqa: BLE001 - the verdict decides
                failure = error
                verdict = await self.handler.on_error(error, event, envelope, attempt)
            attempt += 1
            if isinstance(verdict, Skip):
                return True
            if isinstance(verdict, Stop):
                await self._journal.ack(self.handler.handler_name, self.processed)
                self.stopped = f"stopped at position {envelope.position}: {type(failure).__name__}: {failure}"
                self.handler.stopped = self.stopped
                self._ctx.stop()
                return False
            await asyncio.sleep(verdict.after)

    async def wait_for(self, position: int) -> None:
        """Return once every event up to ``position`` is handled; raise if it stopped."""
        while self.processed < position:
            if self.stopped is not None:
                raise HandlerStopped(f"handler {self.handler.handler_name!r} {self.stopped}")
            await self._progress.wait()
