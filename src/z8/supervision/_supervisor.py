"""The supervisor: an actor whose messages are its children's exits.

It starts children in order (each one's ``on_start`` done before the next begins),
stops them in reverse, and on a crash applies its strategy: restart the child
(``one_for_one``), all children (``one_for_all``), or the child and those started after
it (``rest_for_one``), after a backoff. Past its intensity it stops everything and
fails, so its parent decides. Every decision is journaled in ``$system``, linked to
the crash that caused it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from typing import Any

import msgspec

from z8.actors._actor import Actor, ActorContext, ActorRef, Cell, ChildExit, ReplyError
from z8.actors._system import ActorRestarted, RestartScheduled, SupervisorEscalatedEvent
from z8.errors import DuplicateName, InvalidSpec, RuntimeNotRunning, SupervisorEscalated, Z8Error

from ._spec import ChildSpec, SupervisorSpec, check_name

__all__ = ["Supervisor", "StartChild", "StopChild", "cell_for"]


class StartChild(msgspec.Struct, frozen=True):
    """Ask a supervisor to start a dynamic child; the reply is its ``ActorRef``."""

    spec: ChildSpec


class StopChild(msgspec.Struct, frozen=True):
    """Ask a supervisor to stop and forget a child by id."""

    id: str


class _RestartDue:
    __slots__ = ("cells", "cause", "delay")
    z8_system_message = True

    def __init__(self, cells: list[Cell], cause: str | None, delay: float) -> None:
        self.cells, self.cause, self.delay = cells, cause, delay


def cell_for(core: Any, parent: Cell | None, path: str, spec: ChildSpec) -> Cell:
    """A cell that will run ``spec`` at ``path`` (not started yet)."""
    start = spec.start
    if isinstance(start, SupervisorSpec):
        return Cell(core, path, _make_supervisor, parent, 1 << 30, None, spec.shutdown, "supervisor", spec)
    actor_class = start if isinstance(start, type) else None
    mailbox = spec.mailbox_size or getattr(actor_class, "actor_mailbox_size", Actor.actor_mailbox_size)
    machine = getattr(actor_class, "actor_machine", None)
    kind = getattr(actor_class, "actor_kind", "actor")
    return Cell(core, path, _make_actor, parent, mailbox, machine, spec.shutdown, kind, spec)


def _make_actor(spec: ChildSpec) -> Actor:
    return spec.start(*spec.args, **spec.kwargs)  # type: ignore[no-any-return]


def _make_supervisor(spec: ChildSpec) -> Actor:
    return Supervisor(spec.start)


class Supervisor(Actor):
    """Runs a :class:`SupervisorSpec` (internal: declare supervisors as specs)."""

    actor_kind = "supervisor"

    def __init__(self, spec: SupervisorSpec) -> None:
        self.spec = spec
        self.children: dict[str, Cell] = {}
        self._restarts: deque[float] = deque()
        self._attempts: dict[str, int] = {}
        self._rng = random.Random()
        self._cell: Cell | None = None
        self._serial = 0
        self._closing = False  # set once this incarnation starts taking its children down

    # --- lifecycle ------------------------------------------------------------------------

    async def on_start(self, ctx: ActorContext) -> None:
        self._cell = cell = ctx._cell  # noqa: SLF001 - the supervisor is the runtime's own actor
        cell.supervisor = self
        if self.spec.strategy == "simple_one_for_one":
            return
        for spec in self.spec.children:
            child = self._add(spec)
            # A child that dies before it started is restarted here, before its younger
            # siblings start; past the intensity the supervisor fails to start, so a tree
            # that cannot be built fails on entry instead of running half-built.
            while not await child.wait_started():
                if not await self._recover(child):
                    break

    async def _recover(self, child: Cell) -> bool:
        """Apply the restart policy to a child that crashed while starting; False if dropped."""
        exit = ChildExit(child, child.last_error, child.crash_event, child.incarnation)
        if child.spec.restart == "temporary":
            self._forget(child)
            child.finish_after_crash("crashed while starting; temporary children are not restarted")
            return False
        if self._intensity_exceeded():
            await self._escalate(exit)
        delay = self._backoff(child)
        cause = child.crash_event
        if delay > 0:
            cause = child.core.system.record(
                RestartScheduled(child.path, round(delay, 6), self._attempts[child.name]), cause
            )
            await asyncio.sleep(delay)
        await self._restart([child], cause, delay)
        return True

    async def on_stop(self, ctx: ActorContext) -> None:
        await self._stop_all()

    async def on_failure(self, error: BaseException, ctx: ActorContext) -> None:
        await self._stop_all()  # a crashed supervisor leaves no orphans behind

    async def receive(self, message: Any, ctx: ActorContext) -> Any:
        kind = type(message)
        if kind is ChildExit:
            await self._on_exit(message)
        elif kind is _RestartDue:
            await self._restart(message.cells, message.cause, message.delay)
        elif kind is StartChild:
            try:
                return self.add_child(message.spec)
            except Z8Error as refused:  # the asker's mistake, not the supervisor's crash
                return ReplyError(refused)
        elif kind is StopChild:
            victim = self.children.get(message.id)
            if victim is not None:
                await victim.core.stop_cell(victim)
        else:
            ctx._cell.core.dead_letters.add(ctx.path, message)  # noqa: SLF001
        return None

    # --- children ---------------------------------------------------------------------------

    def add_child(self, spec: ChildSpec) -> ActorRef:
        """Create and start a child now (its ``on_start`` runs on the next loop turn)."""
        return self._add(spec).ref

    def _add(self, spec: ChildSpec) -> Cell:
        cell = self._cell
        running = cell is not None and cell.actor is self and cell.task is not None and not cell.task.done()
        if not running or self._closing or cell.mailbox.closed or cell.stopping:  # type: ignore[union-attr]
            raise RuntimeNotRunning(
                f"supervisor {cell.path if cell else '?'} is not running (stopping, or crashed and waiting "
                f"to restart); cannot start {spec.id!r}"
            )
        check_name(spec.id, "child id")
        old = self.children.get(spec.id)
        if old is not None and old.stopping and not old.expected_exit and old.mailbox.closed:
            self._forget(old)  # stopped on request; its exit report is still queued: the name is free
        if spec.id in self.children:
            raise DuplicateName(f"{cell.path} already has a child named {spec.id!r}; names are unique among siblings")
        child = cell_for(cell.core, cell, f"{cell.path}/{spec.id}", spec)
        self.children[spec.id] = child
        try:
            child.start()
        except BaseException:
            del self.children[spec.id]
            raise
        return child

    def next_name(self) -> str:
        """A sibling name not taken yet, for dynamic children started without one."""
        while True:
            self._serial += 1
            if str(self._serial) not in self.children:
                return str(self._serial)

    def template(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ChildSpec:
        """The simple_one_for_one template filled in for one dynamic child."""
        if self.spec.strategy != "simple_one_for_one":
            raise InvalidSpec("only a simple_one_for_one supervisor starts children from its template")
        base = self.spec.children[0]
        return msgspec.structs.replace(base, id=name, args=args or base.args, kwargs={**base.kwargs, **kwargs})

    def _forget(self, child: Cell) -> None:
        del self.children[child.name]
        self._attempts.pop(child.name, None)

    async def _stop_all(self) -> None:
        """Stop every child: dynamic ones together (as OTP does for simple_one_for_one),
        then the declared ones one by one in reverse start order."""
        self._closing = True
        declared = {spec.id for spec in self.spec.children} if self.spec.strategy != "simple_one_for_one" else set()
        dynamic = [c for c in self.children.values() if c.name not in declared]
        for child in dynamic:
            child.expected_exit = True
        if dynamic:
            await dynamic[0].core.stop_cells(dynamic)
        await self._stop_cells([c for c in self.children.values() if c.name in declared])

    async def _stop_cells(self, cells: list[Cell]) -> None:
        for child in reversed(cells):  # stop in reverse start order
            child.expected_exit = True
            await child.core.stop_cell(child)

    async def kill_children(self) -> None:
        """Cancel every child at once (this supervisor was itself cancelled)."""
        self._closing = True
        for child in reversed(list(self.children.values())):
            child.expected_exit = True
            if child.task is not None and not child.task.done():
                child.task.cancel()
            else:
                child.finish_after_crash("its supervisor was killed")
        tasks = [c.task for c in self.children.values() if c.task is not None and not c.task.done()]
        if tasks:
            await asyncio.wait(tasks)

    # --- crashes ----------------------------------------------------------------------------

    async def _on_exit(self, exit: ChildExit) -> None:
        child = exit.cell
        if self.children.get(child.name) is not child or exit.incarnation != child.incarnation:
            return  # an exit we already handled, or of an incarnation since replaced
        if child.expected_exit:
            return  # we stopped it ourselves, as part of a strategy
        if exit.error is None or child.stopping:
            self._forget(child)  # stopped on request: forget it
            if exit.error is not None:
                child.finish_after_crash("stopped")
            return
        if child.spec.restart == "temporary":
            self._forget(child)
            child.finish_after_crash("crashed; temporary children are not restarted")
            return
        if self._intensity_exceeded():
            await self._escalate(exit)
        await self._apply_strategy(exit)

    def _intensity_exceeded(self) -> bool:
        now = time.monotonic()
        self._restarts.append(now)
        while self._restarts and now - self._restarts[0] > self.spec.within:
            self._restarts.popleft()
        return len(self._restarts) > self.spec.max_restarts

    async def _escalate(self, exit: ChildExit) -> None:
        cell = self._cell
        assert cell is not None
        error = exit.error
        cell.core.system.record(
            SupervisorEscalatedEvent(cell.path, len(self._restarts), self.spec.within, f"{type(error).__name__}: {error}"),
            exit.crash_id,
        )
        # on_failure stops the children (it runs for every crash of a supervisor)
        raise SupervisorEscalated(
            f"{cell.path} gave up: {len(self._restarts)} restarts within {self.spec.within}s exceeds "
            f"max_restarts={self.spec.max_restarts}; last crash of {exit.cell.path}: {type(error).__name__}: {error}"
        ) from error

    async def _apply_strategy(self, exit: ChildExit) -> None:
        child = exit.cell
        order = list(self.children.values())
        if self.spec.strategy == "one_for_all":
            group = order
        elif self.spec.strategy == "rest_for_one":
            group = order[order.index(child):]
        else:
            group = [child]
        await self._stop_cells([c for c in group if c is not child])
        delay = self._backoff(child)
        if delay > 0:
            cell = self._cell
            assert cell is not None
            scheduled = cell.core.system.record(
                RestartScheduled(child.path, round(delay, 6), self._attempts[child.name]), exit.crash_id
            )
            cell.core.loop.call_later(delay, cell.mailbox.put_system, _RestartDue(group, scheduled, delay))
        else:
            await self._restart(group, exit.crash_id, 0.0)

    def _backoff(self, child: Cell) -> float:
        backoff = self.spec.backoff
        reset_after = backoff.reset_after if backoff.reset_after is not None else self.spec.within
        if time.monotonic() - child.started_at > reset_after:
            self._attempts[child.name] = 0
        attempt = self._attempts[child.name] = self._attempts.get(child.name, 0) + 1
        return backoff.delay(attempt, self._rng)

    async def _restart(self, cells: list[Cell], cause: str | None, delay: float) -> None:
        """Start ``cells`` again in start order, each ``on_start`` done before the next."""
        live = []
        for child in cells:
            if self.children.get(child.name) is not child:
                continue  # removed while the restart was pending
            if child.stopping and not child.expected_exit:
                continue  # someone asked it to stop meanwhile
            if child.spec.restart == "temporary":  # a sibling taken down by the strategy
                self._forget(child)
                child.finish_after_crash("stopped with its siblings; temporary children are not restarted")
                continue
            live.append(child)
        for child in live:
            child.expected_exit = False
            child.stopping = False
            child.restarts += 1
            restarted = child.core.system.record(ActorRestarted(child.path, child.incarnation + 1, delay), cause)
            child.start(restarted)
            await self._await_start(child)

    @staticmethod
    async def _await_start(child: Cell) -> None:
        """Wait for ``child``'s on_start, but never past its shutdown timeout: a child
        stuck starting must not wedge its supervisor (which must still hear crashes
        and its own stop)."""
        if child.start_ok is not None or child.shutdown is None:
            await child.wait_started()
            return
        waiter = child.start_waiter()
        timer = child.core.loop.call_later(child.shutdown, _give_up_waiting, waiter)
        try:
            if await waiter is None:
                child.core.log.warning("supervisor.slow_restart", path=child.path, waited=child.shutdown)
        finally:
            timer.cancel()


def _give_up_waiting(waiter: asyncio.Future[bool | None]) -> None:
    if not waiter.done():
        waiter.set_result(None)  # neither started nor failed: stop waiting
