"""The runtime: a journal, the actor registry, and the root supervisor over everything."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Literal

import structlog

from z8.actors._actor import ActorRef, Cell, ChildExit
from z8.actors._core import DeadLetter, RuntimeCore
from z8.errors import InvalidArgument, RuntimeEscalated, RuntimeNotRunning
from z8.journal import Journal, open_journal

from ._spec import Backoff, ChildSpec, RestartType, Strategy, SupervisorSpec, check_name, child
from ._supervisor import Supervisor, cell_for
from ._tree import TreeNode, snapshot

__all__ = ["Runtime", "RuntimeHandle"]

log = structlog.get_logger("z8.runtime")


class Runtime:
    """Boots a root supervisor (``/{name}``) over a journal; use as an async context manager.

    ``journal`` is a directory for the embedded LMDB journal (opened and closed by the
    runtime) or an open ``Journal`` (left open). Static children start in order on
    entry and stop in reverse on exit. If the root supervisor escalates, the tree is
    stopped and leaving the ``async with`` (or ``wait()``) raises ``RuntimeEscalated``.
    ``clock`` (Unix ns) is what agents see as ``ctx.now``; pass a fake one in tests.
    """

    def __init__(
        self,
        journal: str | os.PathLike[str] | Journal = ".z8",
        *,
        name: str = "app",
        children: Sequence[ChildSpec] = (),
        strategy: Strategy = "one_for_one",
        max_restarts: int = 3,
        within: float = 5.0,
        backoff: Backoff | None = None,
        durability: Literal["sync", "fast"] = "sync",
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.name = check_name(name, "runtime name")
        self._clock = clock
        self.spec = SupervisorSpec(tuple(children), strategy, max_restarts, within, backoff or Backoff())
        self._journal_arg = journal
        self._durability = durability
        self._journal: Journal | None = None
        self._core: RuntimeCore | None = None
        self._root: Cell | None = None
        self._done: asyncio.Event | None = None
        self._escalation: str | None = None
        self._closing: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        await self.aclose()
        if self._escalation is not None and exc_type is None:
            raise RuntimeEscalated(self._escalation)

    async def start(self) -> None:
        """Open the journal and start the tree (children in order)."""
        if self._core is not None:
            raise RuntimeNotRunning("this runtime was already started; make a new Runtime")
        if isinstance(self._journal_arg, Journal):
            self._journal = self._journal_arg
        else:
            path = Path(self._journal_arg)
            self._journal = await asyncio.to_thread(open_journal, path, durability=self._durability)
        self._done = asyncio.Event()
        self._core = core = RuntimeCore(self._journal, self._on_root_exit, self._clock)
        root_spec = ChildSpec(self.name, self.spec, shutdown=None)
        self._root = root = cell_for(core, None, f"/{self.name}", root_spec)
        root.start()
        if not await root.wait_started():
            await self._done.wait()  # the root died in on_start: _on_root_exit is closing down
            raise RuntimeEscalated(self._escalation or f"the root supervisor /{self.name} failed to start")

    async def aclose(self) -> None:
        """Stop the tree (children in reverse order), flush ``$system``, close the journal.

        Idempotent; concurrent calls share one shutdown.
        """
        if self._core is None:
            return
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._shutdown())
        await asyncio.shield(self._closing)

    async def _shutdown(self) -> None:
        core, root = self._core, self._root
        assert core is not None and root is not None
        await core.stop_cell(root)
        await core.system.drain()
        core.system.closed = True
        if self._journal is not None and not isinstance(self._journal_arg, Journal):
            await self._journal.aclose()
        assert self._done is not None
        self._done.set()

    async def wait(self) -> None:
        """Wait until the runtime stops; raises ``RuntimeEscalated`` if the root gave up."""
        if self._done is None:
            raise RuntimeNotRunning("start the runtime first")
        await self._done.wait()
        if self._escalation is not None:
            raise RuntimeEscalated(self._escalation)

    def _on_root_exit(self, exit: ChildExit) -> None:
        if exit.error is not None:
            self._escalation = (
                f"the root supervisor /{self.name} escalated and the runtime stopped: "
                f"{type(exit.error).__name__}: {exit.error}"
            )
            log.error("runtime.escalated", report=self._escalation)
            exit.cell.finish_after_crash("root escalated")
        if self._closing is None:  # the root stopped without aclose(): close down
            self._closing = asyncio.get_running_loop().create_task(self._shutdown())

    # --- actors ----------------------------------------------------------------------------

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            raise RuntimeNotRunning("start the runtime first")
        return self._journal

    @property
    def escalation(self) -> str | None:
        """The root's escalation report, once it has given up."""
        return self._escalation

    def _root_supervisor(self) -> Supervisor:
        root = self._root
        if root is None or root.supervisor is None or root.mailbox.closed:
            raise RuntimeNotRunning("the runtime is not running")
        return root.supervisor  # type: ignore[no-any-return]

    def spawn(
        self,
        start: Any,
        *args: Any,
        name: str | None = None,
        restart: RestartType = "permanent",
        shutdown: float | None | Literal["default"] = "default",
        mailbox_size: int | None = None,
        under: str | None = None,
        **kwargs: Any,
    ) -> ActorRef:
        """Start an actor (or a nested ``SupervisorSpec``) as a child of the root, or of
        the supervisor at path ``under``; returns its ref at once."""
        parent = self._root_supervisor()
        if under is not None:
            cell = self._core.cell(under) if self._core is not None else None
            if cell is None or cell.supervisor is None:
                raise InvalidArgument(f"{under!r} is not a live supervisor")
            parent = cell.supervisor
        if parent.spec.strategy == "simple_one_for_one":
            return parent.add_child(parent.template(name or parent.next_name(), args, kwargs))
        spec = child(
            start, *args, id=name or parent.next_name(), restart=restart, shutdown=shutdown,
            mailbox_size=mailbox_size, **kwargs,
        )
        return parent.add_child(spec)

    def lookup(self, path: str) -> ActorRef:
        """The ref at ``path`` (raises ``ActorNotFound``)."""
        if self._core is None:
            raise RuntimeNotRunning("start the runtime first")
        return self._core.lookup(path)

    async def stop(self, target: ActorRef | str, timeout: float | None = None) -> None:
        """Stop one actor (its supervisor forgets it; it is not restarted)."""
        ref = self.lookup(target) if isinstance(target, str) else target
        await ref.stop(timeout)

    def tree(self) -> TreeNode:
        """A snapshot of the live tree; prints as an indented tree."""
        if self._root is None:
            raise RuntimeNotRunning("start the runtime first")
        return snapshot(self._root)

    def dead_letters(self) -> list[DeadLetter]:
        """Recent messages that reached no actor (``dead_letter_count`` counts them all)."""
        return self._core.dead_letters.recent() if self._core is not None else []

    @property
    def dead_letter_count(self) -> int:
        return self._core.dead_letters.count if self._core is not None else 0

    def run_in_thread(self) -> RuntimeHandle:
        """Start this runtime on a background thread; returns a handle of plain calls."""
        return RuntimeHandle(self)


class RuntimeHandle:
    """A runtime running on its own thread, driven by plain (blocking) calls.

    For scripts and REPLs: ``h = Runtime(...).run_in_thread(); h.tell("/app/x", msg);
    print(h.tree()); h.close()``.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="z8-runtime", daemon=True)
        self._thread.start()
        try:
            self._call(runtime.start())
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            raise

    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def _ref(self, target: ActorRef | str) -> ActorRef:
        return self.runtime.lookup(target) if isinstance(target, str) else target

    def tree(self) -> TreeNode:
        return self._call(_wrap(self.runtime.tree))  # type: ignore[no-any-return]

    def lookup(self, path: str) -> ActorRef:
        return self._call(_wrap(lambda: self.runtime.lookup(path)))  # type: ignore[no-any-return]

    def spawn(self, start: Any, *args: Any, **kwargs: Any) -> ActorRef:
        return self._call(_wrap(lambda: self.runtime.spawn(start, *args, **kwargs)))  # type: ignore[no-any-return]

    def tell(self, target: ActorRef | str, message: Any) -> None:
        self._call(self._tell(target, message))

    async def _tell(self, target: ActorRef | str, message: Any) -> None:
        await self._ref(target).tell(message)

    def ask(self, target: ActorRef | str, message: Any, timeout: float = 5.0) -> Any:
        return self._call(self._ask(target, message, timeout))

    async def _ask(self, target: ActorRef | str, message: Any, timeout: float) -> Any:
        return await self._ref(target).ask(message, timeout)

    def stop(self, target: ActorRef | str | None = None) -> None:
        """Stop one actor, or (no argument) the whole runtime."""
        if target is None:
            self.close()
        else:
            self._call(self.runtime.stop(target))

    def close(self) -> None:
        """Stop the runtime and its thread."""
        if self._loop.is_closed():
            return
        try:
            self._call(self.runtime.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> RuntimeHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _wrap(fn: Any) -> Any:
    return fn()
