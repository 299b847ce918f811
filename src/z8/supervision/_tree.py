"""A snapshot of the live supervision tree, for people (``print``) and programs (``to_dict``)."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from z8.actors._actor import Cell

__all__ = ["TreeNode", "snapshot"]


class TreeNode(msgspec.Struct, frozen=True):
    """One actor in the tree at the moment of the snapshot."""

    path: str
    kind: str
    """``supervisor``, ``actor`` or ``thread``."""
    alive: bool
    strategy: str | None
    state: str | None
    """The FSM state, for actors that declare a machine."""
    mailbox: int
    """Messages waiting."""
    restarts: int
    last_crash: str | None
    uptime: float
    """Seconds since the current incarnation started."""
    children: tuple[TreeNode, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready)."""
        return msgspec.to_builtins(self)

    def walk(self) -> list[TreeNode]:
        """This node and every descendant, depth first in start order."""
        nodes = [self]
        for node in self.children:
            nodes.extend(node.walk())
        return nodes

    def find(self, path: str) -> TreeNode | None:
        """The node at ``path`` in this snapshot, if any."""
        return next((node for node in self.walk() if node.path == path), None)

    def __str__(self) -> str:
        return "\n".join(self._lines(0))

    __repr__ = __str__  # a REPL shows the tree, not a wall of fields

    def _lines(self, depth: int) -> list[str]:
        facts = [self.kind]
        if self.strategy:
            facts.append(self.strategy)
        if self.state:
            facts.append(f"state={self.state}")
        if self.mailbox:
            facts.append(f"mailbox={self.mailbox}")
        if self.restarts:
            facts.append(f"restarts={self.restarts}")
        if self.last_crash:
            facts.append(f"last crash: {self.last_crash}")
        facts.append(f"up {self.uptime:.1f}s" if self.alive else "stopped")
        name = self.path.rsplit("/", 1)[-1] if depth else self.path
        lines = [f"{'  ' * depth}{name}  [{', '.join(facts)}]"]
        for node in self.children:
            lines.extend(node._lines(depth + 1))
        return lines


def snapshot(cell: Cell) -> TreeNode:
    """The subtree rooted at ``cell`` as it is now."""
    supervisor = cell.supervisor
    error = cell.last_error
    return TreeNode(
        path=cell.path,
        kind=cell.kind,
        alive=not cell.mailbox.closed,
        strategy=supervisor.spec.strategy if supervisor is not None else None,
        state=cell.fsm_state,
        mailbox=len(cell.mailbox),
        restarts=cell.restarts,
        last_crash=f"{type(error).__name__}: {error}" if cell.last_crash_at and error else None,
        uptime=round(time.monotonic() - cell.started_at, 3),
        children=tuple(snapshot(c) for c in supervisor.children.values()) if supervisor is not None else (),
    )
