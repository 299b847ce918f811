"""Given/when/then for agents, with no runtime, journal or event loop.

    given(Account, AccountOpened("ada"), Deposited(100)) \\
        .when(Withdraw("acct-1", 30)) \\
        .then(Withdrawn(30), state=AccountState(balance=70))

    given(Account).when(Withdraw("acct-1", 1)).then_rejected("insufficient_funds")

``when`` runs ``decide`` on the state folded from the given events, then folds the
decision's events with ``evolve`` exactly as the runtime would before appending (the
bound machine included), so what passes here is what the runtime would write.
"""

from __future__ import annotations

from typing import Any

from z8.actors._agent import Agent, CommandContext, Decision, Rejection, fold, fold_decision

__all__ = ["given", "Scenario", "Outcome"]

_UNSET: Any = object()


def given(agent: type[Agent], *events: Any, stream: str = "agent-under-test") -> Scenario:
    """Start a scenario for ``agent`` whose stream already holds ``events``."""
    return Scenario(agent, list(events), stream)


class Scenario:
    """An agent type and its past; ``when`` runs one command against it."""

    def __init__(self, agent: type[Agent], events: list[Any], stream: str) -> None:
        self.agent = agent.__new__(agent)  # decide/evolve are pure: no __init__ needed
        self.events = events
        self.stream = stream

    @property
    def state(self) -> Any:
        """The state folded from the given events."""
        return fold(self.agent, self.events)

    def when(self, command: Any, *, now: int = 1_700_000_000_000_000_000, command_id: str = "command-1") -> Outcome:
        """Decide on ``command`` at time ``now`` (Unix ns; a fixed default keeps tests pure)."""
        state = self.state
        ctx = CommandContext(now, command_id, self.stream, len(self.events))
        outcome = self.agent.decide(state, command, ctx)
        if isinstance(outcome, Rejection):
            return Outcome(rejection=outcome, state=state)
        if not isinstance(outcome, Decision):
            raise AssertionError(f"decide returned {outcome!r}; it must return Decision(...) or reject(...)")
        after = fold_decision(self.agent, state, list(outcome.events), self.stream)  # raises InvalidDecision
        return Outcome(events=list(outcome.events), reply=outcome.reply, state=after)


class Outcome:
    """What one command did: events and reply, or a rejection; and the state after."""

    def __init__(
        self, *, events: list[Any] | None = None, reply: Any = None, state: Any = None, rejection: Rejection | None = None
    ) -> None:
        self.events = events or []
        self.reply = reply
        self.state = state
        self.rejection = rejection

    def then(self, *events: Any, reply: Any = _UNSET, state: Any = _UNSET) -> Outcome:
        """Assert the decision's events (in order), and optionally its reply and the new state."""
        if self.rejection is not None:
            raise AssertionError(f"expected events {list(events)}, but the command was rejected: {self.rejection}")
        if list(events) != self.events:
            raise AssertionError(f"expected events {list(events)}\n     got events {self.events}")
        if reply is not _UNSET and reply != self.reply:
            raise AssertionError(f"expected reply {reply!r}, got {self.reply!r}")
        if state is not _UNSET and state != self.state:
            raise AssertionError(f"expected state {state!r}\n      got state {self.state!r}")
        return self

    def then_rejected(self, reason: str, **detail: Any) -> Outcome:
        """Assert the command was rejected with ``reason`` (and, if given, that detail)."""
        if self.rejection is None:
            raise AssertionError(f"expected a rejection {reason!r}, but the command produced {self.events}")
        if self.rejection.reason != reason or (detail and self.rejection.detail != detail):
            raise AssertionError(f"expected rejection {reason!r} {detail or ''}, got {self.rejection}")
        return self
