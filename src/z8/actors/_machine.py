"""Explicit finite state machines that actors declare (``actor_machine``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from z8.errors import InvalidMachine

__all__ = ["Machine"]


class Machine(msgspec.Struct, frozen=True):
    """States, the transitions allowed between them, and where an actor starts.

    Build one with :meth:`Machine.of`; it is validated when built. An actor declares it
    as ``actor_machine`` and moves with ``ctx.transition(target)``; a transition not
    listed raises ``TransitionBlocked`` and is journaled in ``$system``.
    """

    initial: str
    transitions: dict[str, frozenset[str]]
    """state -> the states it may move to (every state is a key, terminal ones map to ∅)."""

    @classmethod
    def of(cls, initial: str, transitions: Mapping[str, Iterable[str]]) -> Machine:
        """``Machine.of("idle", {"idle": ["busy"], "busy": ["idle", "done"], "done": []})``."""
        table = {state: frozenset(targets) for state, targets in transitions.items()}
        for targets in list(table.values()):
            for target in targets:
                table.setdefault(target, frozenset())
        if not isinstance(initial, str) or initial not in table:
            raise InvalidMachine(f"initial state {initial!r} is not among the machine's states {sorted(table)}")
        for state in table:
            if not isinstance(state, str) or not state:
                raise InvalidMachine(f"states must be non-empty str, got {state!r}")
        return cls(initial, table)

    @property
    def states(self) -> frozenset[str]:
        return frozenset(self.transitions)

    def allows(self, source: str, target: str) -> bool:
        """True when ``source -> target`` is a declared transition."""
        return target in self.transitions.get(source, ())
