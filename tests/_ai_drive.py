"""Drive a z8.ai.Agent's pure decide/evolve with no runtime: a stand-in for the outbox
that answers model calls from a function and tool calls from plain functions.

It lays out stream versions as the runtime does (lead record, events, intents, timers),
so effect ids match what a real run would journal. Outcomes are delivered in the order
``pick`` chooses (default: first issued first), to check that strategies do not depend
on the order parallel calls finish in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from z8.actors._agent import CommandContext, Decision, Rejection, fold_decision
from z8.ai import ModelRequest, ModelResponse
from z8.effects import EffectFailed, EffectSucceeded

Answer = Callable[[ModelRequest], "ModelResponse | str | EffectFailed"]


class Trace:
    def __init__(self, agent: Any, stream: str) -> None:
        self.agent = agent
        self.stream = stream
        self.state = agent.State()
        self.version = 0
        self.events: list[Any] = []
        self.decisions: list[Decision] = []
        self.requests: list[ModelRequest] = []
        self.tool_calls: list[tuple[str, Any]] = []
        self.queue: list[tuple[str, Any]] = []  # (effect id, Call)
        self.timers: list[Any] = []

    def names(self) -> list[str]:
        return [type(e).__name__ for e in self.events]

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if type(e) is kind]

    @property
    def finished(self) -> Any:
        found = self.of(_finished_type())
        return found[-1] if found else None

    def decide(self, message: Any, *, lead: int = 0) -> Decision | Rejection:
        ctx = CommandContext(1_700_000_000_000_000_000, f"cmd-{self.version}", self.stream, self.version)
        outcome = self.agent.decide(self.state, message, ctx)
        if isinstance(outcome, Rejection):
            return outcome
        self.state = fold_decision(self.agent, self.state, list(outcome.events), self.stream)
        self.decisions.append(outcome)
        self.events.extend(outcome.events)
        first = self.version + 1  # ctx.effect_id: the append's first record (the lead, if any)
        for index, call in enumerate(outcome.effects):
            self.queue.append((f"{self.stream}/{first}/{index}", call))
        self.timers.extend(outcome.timers)
        self.version += lead + len(outcome.events) + len(outcome.effects) + len(outcome.timers)
        return outcome


def _finished_type() -> type:
    from z8.ai._events import RunFinished

    return RunFinished


def drive(agent_cls: type, query: str, model: Answer, *, tools: dict[str, Callable[[Any], Any]] | None = None,
          context: dict[str, Any] | None = None, pick: Callable[[list[tuple[str, Any]]], int] | None = None,
          run_id: str = "r1", limit: int = 200) -> Trace:
    """Start a run and answer its calls until nothing is pending (or ``limit`` outcomes)."""
    agent = agent_cls.__new__(agent_cls)
    trace = Trace(agent, f"run-{run_id}")
    out = trace.decide(agent_cls.StartRun(run_id=run_id, query=query, context=context or {}))
    assert not isinstance(out, Rejection), out
    for _ in range(limit):
        if not trace.queue:
            break
        effect_id, call = trace.queue.pop(pick(trace.queue) if pick else 0)
        trace.decide(outcome(trace, effect_id, call, model, tools or {}), lead=1)
    return trace


def outcome(trace: Trace, effect_id: str, call: Any, model: Answer, tools: dict[str, Callable[[Any], Any]]) -> Any:
    """The outcome the outbox would deliver for ``call``."""
    if call.effect == "z8.model":
        trace.requests.append(call.request)
        answer = model(call.request)
        if isinstance(answer, EffectFailed):
            return msgspec.structs.replace(answer, effect_id=effect_id)
        if isinstance(answer, str):
            answer = ModelResponse(text=answer)
        return EffectSucceeded(effect_id, "z8.model", answer)
    name = call.effect.name
    trace.tool_calls.append((name, call.request))
    result = tools[name](call.request)
    if isinstance(result, EffectFailed):
        return msgspec.structs.replace(result, effect_id=effect_id)
    return EffectSucceeded(effect_id, name, result)


def script(*answers: Any) -> Answer:
    """Answer model calls from a list, in order (a str, a ModelResponse, an EffectFailed,
    or a function of the request)."""
    queue = list(answers)

    def answer(request: ModelRequest) -> Any:
        assert queue, f"unexpected model call {request.purpose!r}"
        entry = queue.pop(0)
        return entry(request) if callable(entry) else entry

    return answer


def by_purpose(**answers: Any) -> Answer:
    """Answer by the request's purpose: a str, or a function of the request."""
    def answer(request: ModelRequest) -> Any:
        entry = answers[request.purpose]
        return entry(request) if callable(entry) else entry

    return answer


def last_user(request: ModelRequest) -> str:
    return request.messages[-1].content
