"""Actors: the user's class, the ref others hold, and the cell that runs it.

A *cell* is the durable identity of an actor in the tree: its path, mailbox, ref and
FSM state survive restarts. Each *incarnation* is a fresh instance of the user's
class run by one asyncio task in three phases — setup (``on_start``), running (the
receive loop), teardown (``on_stop``) — after which the cell tells its parent
supervisor how it ended. The parent decides: restart in place (same mailbox, queued
messages kept) or finish (mailbox closed: tells become dead letters, asks fail).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from z8.errors import ActorDied, AskTimeout, InvalidArgument, TransitionBlocked

from ._machine import Machine
from ._mailbox import Mailbox, MailboxClosed
from ._system import ActorCrashed, ActorStarted, ActorStopped, TransitionRefused, describe_error

if TYPE_CHECKING:
    from ._core import RuntimeCore

__all__ = ["Actor", "ActorContext", "ActorRef", "Cell", "ChildExit", "ReplyError", "Stop"]


class Actor:
    """Subclass and implement ``receive``; the return value is the reply to an ``ask``.

    Framework settings are class attributes prefixed ``actor_`` so they never clash
    with your fields. One incarnation handles one message at a time, in mailbox order.
    An exception escaping ``on_start`` or ``receive`` crashes the incarnation; its
    supervisor restarts a fresh instance (same path, same queued messages) or not.
    """

    actor_mailbox_size: ClassVar[int] = 1024
    """Most messages waiting; ``tell`` then waits and ``try_tell`` raises ``MailboxFull``."""
    actor_machine: ClassVar[Machine | None] = None
    """The explicit state machine this actor moves through with ``ctx.transition``."""
    actor_kind: ClassVar[str] = "actor"

    async def on_start(self, ctx: ActorContext) -> None:
        """Called before the first message of each incarnation."""

    async def receive(self, message: Any, ctx: ActorContext) -> Any:
        """Handle one message; return the reply (sent back if the message was asked)."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement receive()")

    async def on_stop(self, ctx: ActorContext) -> None:
        """Called when the actor stops normally (not after a crash)."""

    async def on_failure(self, error: BaseException, ctx: ActorContext) -> None:
        """Called after a crash, before the supervisor decides; must not raise."""


class ReplyError:
    """Returned from ``receive`` to make an ``ask`` raise ``error`` without crashing the actor."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Stop:
    """The runtime's stop request (jumps the queue: handled after the current message)."""

    __slots__ = ("reason",)
    z8_system_message = True

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Ask:
    __slots__ = ("message", "future")

    def __init__(self, message: Any, future: asyncio.Future[Any]) -> None:
        self.message = message
        self.future = future


class ChildExit:
    """What a cell tells its parent when an incarnation ends."""

    __slots__ = ("cell", "error", "crash_id", "incarnation")
    z8_system_message = True

    def __init__(self, cell: Cell, error: BaseException | None, crash_id: str | None, incarnation: int) -> None:
        self.cell, self.error, self.crash_id, self.incarnation = cell, error, crash_id, incarnation


def _expire(future: asyncio.Future[Any], path: str, message: Any, timeout: float) -> None:
    if not future.done():
        future.set_exception(AskTimeout(f"{path} did not reply to {type(message).__name__} within {timeout}s"))


class ActorRef:
    """The address of an actor: stable across restarts, cheap to copy and compare."""

    __slots__ = ("_cell",)

    def __init__(self, cell: Cell) -> None:
        self._cell = cell

    @property
    def path(self) -> str:
        return self._cell.path

    @property
    def alive(self) -> bool:
        """False once the actor has stopped for good."""
        return not self._cell.mailbox.closed

    @property
    def state(self) -> str | None:
        """The actor's FSM state, or None when it declares no machine."""
        return self._cell.fsm_state

    def __repr__(self) -> str:
        return f"<ActorRef {self.path}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other._cell is self._cell

    def __hash__(self) -> int:
        return id(self._cell)

    async def tell(self, message: Any) -> None:
        """Send without waiting for handling; waits only while the mailbox is full.

        A message to a stopped actor goes to dead letters.
        """
        mailbox = self._cell.mailbox
        try:
            if len(mailbox._items) < mailbox.capacity and not mailbox.writers_waiting:
                mailbox.put_nowait(message)
            else:
                await mailbox.put(message)
        except MailboxClosed:
            self._cell.core.dead_letters.add(self._cell.path, message)

    def try_tell(self, message: Any) -> None:
        """Send now or raise :class:`~z8.errors.MailboxFull`; never waits.

        Call it on the runtime's event loop; from another thread use
        ``RuntimeHandle.tell`` (or ``ctx.run(ref.tell(m))`` in a ``ThreadActor``).
        """
        if asyncio._get_running_loop() is not self._cell.core.loop:  # noqa: SLF001 - the cheap check
            raise InvalidArgument(
                f"try_tell to {self.path} from outside the runtime's event loop; use RuntimeHandle.tell "
                "or, in a ThreadActor, ctx.run(ref.tell(message))"
            )
        try:
            self._cell.mailbox.put_nowait(message)
        except MailboxClosed:
            self._cell.core.dead_letters.add(self._cell.path, message)

    async def ask(self, message: Any, timeout: float | None = 5.0) -> Any:
        """Send and wait for the reply (``receive``'s return value).

        Raises :class:`~z8.errors.AskTimeout` after ``timeout`` seconds, and
        :class:`~z8.errors.ActorDied` at once if the actor crashes on the message or
        stops before it.
        """
        cell = self._cell
        loop = cell.core.loop
        future = loop.create_future()
        mailbox = cell.mailbox
        try:
            if len(mailbox._items) < mailbox.capacity and not mailbox.writers_waiting:
                mailbox.put_nowait(_Ask(message, future))
            else:
                await mailbox.put(_Ask(message, future))
        except MailboxClosed:
            raise ActorDied(cell.path, None, "has stopped") from None
        if timeout is None:
            return await future
        # A timer on the bare future: asyncio.wait_for would add a loop pass and a task.
        timer = loop.call_later(timeout, _expire, future, cell.path, message, timeout)
        try:
            return await future
        finally:
            timer.cancel()

    async def stop(self, timeout: float | None = None) -> None:
        """Stop the actor after its current message and wait until it has stopped.

        Queued messages go to dead letters (asks among them fail with ``ActorDied``).
        After ``timeout`` (default: its spec's shutdown timeout) the task is cancelled.
        """
        await self._cell.core.stop_cell(self._cell, timeout)


class ActorContext:
    """What an actor knows about itself; the same object for every incarnation."""

    __slots__ = ("_cell",)

    def __init__(self, cell: Cell) -> None:
        self._cell = cell

    @property
    def ref(self) -> ActorRef:
        return self._cell.ref

    @property
    def path(self) -> str:
        return self._cell.path

    @property
    def name(self) -> str:
        return self._cell.name

    @property
    def incarnation(self) -> int:
        """1 for the first start, then one more per restart."""
        return self._cell.incarnation

    @property
    def state(self) -> str | None:
        """The current FSM state (None without ``actor_machine``)."""
        return self._cell.fsm_state

    def transition(self, target: str) -> None:
        """Move the FSM to ``target``, or raise ``TransitionBlocked`` (journaled) if not allowed."""
        cell = self._cell
        machine = cell.machine
        if machine is None:
            raise InvalidArgument(f"{cell.path} declares no actor_machine; there is nothing to transition")
        source = cell.fsm_state
        assert source is not None
        if not machine.allows(source, target):
            cell.core.system.record(TransitionRefused(cell.path, source, target))
            raise TransitionBlocked(cell.path, source, target, list(machine.transitions.get(source, ())))
        cell.fsm_state = target

    def lookup(self, path: str) -> ActorRef:
        """The ref of another actor by path (raises ``ActorNotFound``)."""
        return self._cell.core.lookup(path)

    def stop(self) -> None:
        """Stop this actor after the current message, without waiting (the way for an
        actor to stop itself; ``await ctx.ref.stop()`` from inside would wait on itself)."""
        cell = self._cell
        if not cell.mailbox.closed and not cell.stopping:
            cell.stopping = True
            cell.mailbox.put_urgent(Stop("stopped itself"))


class Cell:
    """The runtime's record of one actor in the tree (internal)."""

    __slots__ = (
        "core", "path", "name", "parent", "factory", "mailbox", "ref", "ctx", "machine", "fsm_state",
        "actor", "task", "incarnation", "restarts", "last_error", "last_crash_at", "started_at",
        "shutdown", "start_ok", "_start_waiter", "stopping", "expected_exit", "kind", "supervisor", "spec", "start_event", "current", "crash_event",
    )

    def __init__(
        self,
        core: RuntimeCore,
        path: str,
        factory: Callable[[Any], Actor],
        parent: Cell | None,
        mailbox_size: int,
        machine: Machine | None,
        shutdown: float | None,
        kind: str,
        spec: Any = None,
    ) -> None:
        self.core, self.path, self.parent, self.factory = core, path, parent, factory
        self.name = path.rsplit("/", 1)[-1]
        self.mailbox = Mailbox(mailbox_size)
        self.ref = ActorRef(self)
        self.ctx = ActorContext(self)
        self.machine = machine
        self.fsm_state = machine.initial if machine else None
        self.actor: Actor | None = None
        self.task: asyncio.Task[None] | None = None
        self.incarnation = 0
        self.restarts = 0
        self.last_error: BaseException | None = None
        self.last_crash_at: float | None = None
        self.started_at = 0.0
        self.shutdown = shutdown
        self.start_ok: bool | None = None
        self._start_waiter: asyncio.Future[bool] | None = None
        self.stopping = False
        self.expected_exit = False
        self.kind = kind
        self.supervisor: Any = None  # set for supervisor cells: their Supervisor actor
        self.spec = spec
        self.start_event: str | None = None
        self.current: _Ask | None = None
        self.crash_event: str | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, causation_id: str | None = None) -> None:
        """Begin a new incarnation (first start or restart in place).

        The actor is constructed inside the incarnation's task, so a constructor that
        raises is a crash of that incarnation, handled by its supervisor like any other.
        """
        self.incarnation += 1
        self.actor = None
        self.current = None
        if self.incarnation > 1 and self.machine is not None:
            self.fsm_state = self.machine.initial
        self.mailbox.reopen()
        self.core.register(self)
        self.started_at = time.monotonic()
        self.start_ok = None
        if causation_id is None and self.parent is not None:
            causation_id = self.parent.start_event  # started by its supervisor's start
        self.start_event = self.core.system.record(ActorStarted(self.path, self.kind, self.incarnation), causation_id)
        self.task = self.core.loop.create_task(self._run(), name=self.path)

    async def _run(self) -> None:
        try:
            try:
                self.actor = actor = self.factory(self.spec)
                await actor.on_start(self.ctx)
                self._mark_started(True)
                reason = await self._serve(actor)
            except Exception as error:
                self._mark_started(False)
                self._fail_ask(self.current, error, None)
                await self._crashed(error)
                return
            await self._stopped(actor, reason)
        except asyncio.CancelledError:
            await self._killed()
            raise

    async def _serve(self, actor: Actor) -> str:
        """The running phase: one message at a time until a Stop; returns its reason."""
        ctx, mailbox = self.ctx, self.mailbox
        while True:
            if not mailbox._items:
                await mailbox.wait()
            message = mailbox.get_nowait()
            kind = type(message)
            if kind is _Ask:
                self.current = message
                reply = await actor.receive(message.message, ctx)
                self.current = None
                if not message.future.done():
                    if type(reply) is ReplyError:
                        message.future.set_exception(reply.error)
                    else:
                        message.future.set_result(reply)
            elif kind is Stop:
                return message.reason
            else:
                await actor.receive(message, ctx)

    def _mark_started(self, ok: bool) -> None:
        if self.start_ok is None:
            self.start_ok = ok
            waiter = self._start_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(ok)

    def start_waiter(self) -> asyncio.Future[bool | None]:
        """A future resolved with ``start_ok`` once this incarnation has started or died."""
        if self._start_waiter is None or self._start_waiter.done():
            self._start_waiter = self.core.loop.create_future()
            if self.start_ok is not None:
                self._start_waiter.set_result(self.start_ok)
        return self._start_waiter

    async def wait_started(self) -> bool:
        """True once this incarnation's ``on_start`` returned; False if it died first."""
        if self.start_ok is None:
            return bool(await self.start_waiter())
        return self.start_ok

    def _fail_ask(self, ask: _Ask | None, error: BaseException | None, detail: str | None) -> None:
        if ask is not None and not ask.future.done():
            died = ActorDied(self.path, error, detail)
            died.__cause__ = error
            ask.future.set_exception(died)

    async def _crashed(self, error: Exception) -> None:
        self.last_error = error
        self.last_crash_at = time.time()
        kind, message, digest = describe_error(error)
        self.crash_event = crash_id = self.core.system.record(
            ActorCrashed(self.path, kind, message, digest, self.incarnation), self.start_event
        )
        if self.actor is not None:
            try:
                await self.actor.on_failure(error, self.ctx)
            except Exception as hook_error:  # noqa: BLE001 - a broken hook must not hide the crash
                self.core.log.warning("actor.on_failure_raised", path=self.path, error=repr(hook_error))
        if self.stopping:  # crashed on its last message before a stop: finished either way
            self._finish("crashed while stopping", error)
        self.core.child_exited(ChildExit(self, error, crash_id, self.incarnation))

    async def _stopped(self, actor: Actor, reason: str) -> None:
        try:
            await actor.on_stop(self.ctx)
        except Exception as error:  # noqa: BLE001 - stopping anyway; the error is recorded
            self.last_error = error
            self.core.log.warning("actor.on_stop_raised", path=self.path, error=repr(error))
        self._finish(reason)
        self.core.child_exited(ChildExit(self, None, None, self.incarnation))

    async def _killed(self) -> None:
        """Cancelled (past its shutdown timeout): take the subtree down, then report."""
        self._mark_started(False)
        self._fail_ask(self.current, None, "was cancelled")
        if self.supervisor is not None:
            await self.supervisor.kill_children()
        if not self.mailbox.closed:
            self._finish("killed: did not stop within its shutdown timeout")
            self.core.child_exited(ChildExit(self, None, None, self.incarnation))

    def _finish(self, reason: str, cause: BaseException | None = None) -> None:
        """Close the mailbox for good: tells to dead letters, asks fail with ``cause``."""
        if self.mailbox.closed:
            return
        left = self.mailbox.close()
        dead = 0
        for message in left:
            kind = type(message)
            if kind is _Ask:
                self._fail_ask(message, cause, "stopped")
            elif not getattr(kind, "z8_system_message", False):
                dead += 1
                self.core.dead_letters.add(self.path, message, journal=False)
        self.core.system.record(ActorStopped(self.path, reason, dead))
        self.core.unregister(self)

    def finish_after_crash(self, reason: str) -> None:
        """The parent decided not to restart a crashed incarnation."""
        self._finish(reason, self.last_error)
