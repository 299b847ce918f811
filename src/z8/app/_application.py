"""The application: a router over agent types, each under its own supervisor."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from z8.actors._actor import ActorRef
from z8.errors import ActorDied, AgentError, HandlerStopped, InvalidArgument, InvalidSpec, RuntimeNotRunning
from z8.journal import Journal, TypeRegistry, open_journal
from z8.supervision import Runtime, TreeNode, child, supervisor

from ._handlers import EventHandler, HandlerRunner
from ._router import Router

__all__ = ["Application"]


def _kebab(name: str) -> str:
    return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")


class Application:
    """Routes commands to durable agents, activating each identity on its first command.

    Every agent type gets a ``simple_one_for_one`` supervisor at ``/{name}/{type}``; an
    agent lives at ``/{name}/{type}/{identity}`` and its stream is its identity. Use as
    an async context manager.
    """

    def __init__(
        self,
        router: Router,
        journal: str | os.PathLike[str] | Journal = ".z8",
        *,
        types: TypeRegistry | None = None,
        name: str = "app",
        durability: Literal["sync", "fast"] = "sync",
        max_restarts: int = 100,
        within: float = 1.0,
        handlers: Sequence[EventHandler] = (),
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.router = router
        self._journal_arg = journal
        self._types = types
        self._durability = durability
        self._owns_journal = not isinstance(journal, Journal)
        self._journal: Journal | None = journal if isinstance(journal, Journal) else None
        self.name = name
        self._paths = {agent: f"/{name}/{_kebab(agent.__name__)}" for agent in router.agents}
        self._specs = [
            child(supervisor(child(agent), strategy="simple_one_for_one", max_restarts=max_restarts, within=within),
                  id=_kebab(agent.__name__))
            for agent in router.agents
        ]
        self.handlers = list(handlers)
        names = [h.handler_name for h in self.handlers]
        if len(set(names)) != len(names):
            raise InvalidSpec(f"event handler names must be unique (they name durable cursors): {names}")
        if self.handlers:
            self._specs.append(child(
                supervisor(*(child(HandlerRunner, h, id=h.handler_name) for h in self.handlers)), id="handlers"
            ))
        self._clock = clock
        self._runtime: Runtime | None = None

    async def __aenter__(self) -> Application:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Open the journal (when given a path) and start the supervision tree."""
        if self._journal is None:
            self._journal = open_journal(Path(self._journal_arg), types=self._types, durability=self._durability)  # type: ignore[arg-type]
        self._runtime = Runtime(self._journal, name=self.name, children=self._specs, clock=self._clock)
        await self._runtime.start()

    async def aclose(self) -> None:
        """Stop every agent and, if the application opened it, close the journal."""
        if self._runtime is not None:
            await self._runtime.aclose()
        if self._owns_journal and self._journal is not None:
            await self._journal.aclose()

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeNotRunning("start the application first")
        return self._runtime

    @property
    def journal(self) -> Journal:
        return self.runtime.journal

    def tree(self) -> TreeNode:
        """The live supervision tree: one supervisor per agent type, active agents under it."""
        return self.runtime.tree()

    async def dispatch(
        self,
        command: Any,
        *,
        consistency: Literal["eventual", "strong"] = "eventual",
        timeout: float | None = 5.0,
    ) -> Any:
        """Route ``command`` (a Struct, or a dict/JSON with a ``type``) and return the reply.

        The reply comes only after the decision's events are durable in the journal; with
        ``consistency="strong"``, also only after every strong event handler has handled
        them. Raises ``Unroutable``, ``InvalidCommand`` (naming the bad field),
        ``Rejected``, ``InvalidDecision``, ``AgentCrashed``, ``AskTimeout``, ``HandlerStopped``.
        """
        if consistency not in ("eventual", "strong"):
            raise InvalidArgument(f"consistency must be 'eventual' or 'strong', got {consistency!r}")
        if isinstance(command, (dict, bytes, str)):
            command = self.router.parse(command)
        call: Any = functools.partial(self._deliver, timeout=timeout)
        for middleware in reversed(self.router.middleware):  # the first added runs outermost
            call = functools.partial(middleware, call_next=call)
        reply = await call(command)
        if consistency == "strong":
            await self._settle(self.journal.head_position(), timeout)
        return reply

    async def _settle(self, position: int, timeout: float | None) -> None:
        """Wait until every strong handler has handled the log up to ``position``."""
        waits = []
        for handler in self.handlers:
            if handler.handler_consistency == "strong":
                cell = self.runtime._core.cell(f"/{self.name}/handlers/{handler.handler_name}")  # noqa: SLF001
                if cell is None or not isinstance(cell.actor, HandlerRunner):
                    raise HandlerStopped(f"handler {handler.handler_name!r} {handler.stopped or 'is not running'}")
                waits.append(cell.actor.wait_for(position))
        if waits:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)

    async def _deliver(self, command: Any, *, timeout: float | None) -> Any:
        route, identity = self.router.route(command)
        for _ in range(3):
            ref = self._activate(route.agent, identity)
            try:
                return await ref.ask(command, timeout)
            except ActorDied as died:
                if isinstance(died.cause, AgentError):
                    raise died.cause from died.cause.__cause__
                if died.cause is not None:
                    raise
                # the agent stopped (passivated) between lookup and ask: activate it again
        raise RuntimeNotRunning(f"{identity} kept stopping before it could take {type(command).__name__}")

    def _activate(self, agent: type, identity: str) -> ActorRef:
        runtime = self.runtime
        parent = self._paths[agent]
        cell = runtime._core.cell(f"{parent}/{identity}") if runtime._core else None  # noqa: SLF001
        if cell is not None and not cell.mailbox.closed and not cell.stopping:
            return cell.ref
        return runtime.spawn(agent, name=identity, under=parent)
