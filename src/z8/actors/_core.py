"""The runtime core every cell shares: the registry, dead letters and the system log.

This is the one explicit registry z8 allows itself (paths to live actors); it belongs
to one runtime, never to the process.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
import structlog

from z8.errors import ActorNotFound, DuplicateName
from z8.journal import Journal

from ._actor import ActorRef, Cell, ChildExit, Stop
from ._system import DeadLettered, SystemLog

__all__ = ["RuntimeCore", "DeadLetter", "DeadLetters"]


class DeadLetter(msgspec.Struct, frozen=True):
    """A message that reached no actor: its target path, type, the message, and when."""

    path: str
    message_type: str
    message: Any
    at: float


class DeadLetters:
    """Counts every dead letter, keeps the most recent, and journals a summary per tick."""

    def __init__(self, system: SystemLog, keep: int = 1000) -> None:
        self._system = system
        self.count = 0
        self._recent: deque[DeadLetter] = deque(maxlen=keep)
        self._pending: dict[str, list[str]] = {}

    def add(self, path: str, message: Any, *, journal: bool = True) -> None:
        self.count += 1
        self._recent.append(DeadLetter(path, type(message).__qualname__, message, time.time()))
        if journal:
            if not self._pending:
                asyncio.get_running_loop().call_soon(self._flush)
            self._pending.setdefault(path, []).append(type(message).__qualname__)

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        for path, kinds in pending.items():
            self._system.record(DeadLettered(path, len(kinds), sorted(set(kinds))[:20]))

    def recent(self) -> list[DeadLetter]:
        """The most recent dead letters, oldest first."""
        return list(self._recent)


class RuntimeCore:
    """Shared services of one runtime (internal; users hold a ``Runtime``)."""

    def __init__(
        self, journal: Journal, on_root_exit: Callable[[ChildExit], None], clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.journal = journal
        self.clock = clock
        """Unix time in ns for decisions (``ctx.now``): injectable, so tests use a fake clock."""
        self.system = SystemLog(journal)
        self.dead_letters = DeadLetters(self.system)
        self.log = structlog.get_logger("z8.runtime")
        self.effects: Any = None
        """The application's outbox (``z8.effects``), when one runs: agents journal intents through it."""
        self._cells: dict[str, Cell] = {}
        self._on_root_exit = on_root_exit

    # --- registry ------------------------------------------------------------------------

    def register(self, cell: Cell) -> None:
        holder = self._cells.get(cell.path)
        if holder is not None and holder is not cell:
            raise DuplicateName(f"the path {cell.path} is taken by a live actor; choose another name")
        self._cells[cell.path] = cell

    def unregister(self, cell: Cell) -> None:
        if self._cells.get(cell.path) is cell:
            del self._cells[cell.path]

    def lookup(self, path: str) -> ActorRef:
        cell = self._cells.get(path)
        if cell is None:
            raise ActorNotFound(f"no live actor at {path!r}")
        return cell.ref

    def cell(self, path: str) -> Cell | None:
        return self._cells.get(path)

    def __len__(self) -> int:
        return len(self._cells)

    # --- exits and stops ---------------------------------------------------------------------

    def child_exited(self, exit: ChildExit) -> None:
        parent = exit.cell.parent
        if parent is None:
            self._on_root_exit(exit)
        elif parent.mailbox.closed:
            if exit.error is not None:
                exit.cell.finish_after_crash("its supervisor is gone")
        else:
            parent.mailbox.put_system(exit)

    async def stop_cell(self, cell: Cell, timeout: float | None = None) -> None:
        """Stop ``cell`` after its current message; cancel it past the timeout (default:
        its spec's shutdown timeout). An actor stopping itself is not waited for."""
        if cell.task is asyncio.current_task():
            cell.ctx.stop()
            return
        await self.stop_cells([cell], timeout)

    async def stop_cells(self, cells: list[Cell], timeout: float | None = None) -> None:
        """Stop many cells at once: one wait for the group (``timeout``, or the longest
        shutdown timeout among them), then the stragglers are cancelled."""
        tasks = []
        limit: float | None = 0.0
        for cell in cells:
            task = cell.task
            if cell.mailbox.closed and (task is None or task.done()):
                if cell.expected_exit:  # taken down by its supervisor's strategy, due back: cancel that
                    cell.expected_exit, cell.stopping = False, True
                    self.child_exited(ChildExit(cell, None, None, cell.incarnation))
                continue
            cell.stopping = True
            if task is None or task.done():  # crashed and waiting for its supervisor's decision
                cell.finish_after_crash("stopped while waiting to restart")
                self.child_exited(ChildExit(cell, None, None, cell.incarnation))  # so it forgets the cell
                continue
            cell.mailbox.put_urgent(Stop("stopped"))
            tasks.append(task)
            limit = None if limit is None or cell.shutdown is None else max(limit, cell.shutdown)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=limit if timeout is None else timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
