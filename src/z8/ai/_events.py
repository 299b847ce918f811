"""The events of an AI run, and the state folded from them.

A run's stream (``run-{run_id}``) holds these events (journaled as ``z8.ai.<Name>``)
between the runtime's effect records: the trigger (``RunStarted``, or ``RunForked``),
the strategy chosen and why, each round the strategy starts with the calls it waits for,
every model and tool step, and the end. :class:`RunState` is folded from them by pure
functions that never raise; :func:`state_digest` is what ``RunFinished`` records and
replay checks.

A run started with a ``subject`` holds that subject's personal data: its text fields
(the query and context, the strategy's memo, the model's answers and tool calls, tool
arguments and results, the final answer) are ``z8.Personal``, sealed in the journal under
the subject's key, and read as ``z8.ERASED`` once the subject is erased (the folds keep
such values as they are). Without a subject (``None``) they are stored in clear.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from z8.journal._personal import ERASED, Personal, Subject

from ._messages import ToolCall, Usage
from ._strategies import Step

__all__ = [
    "RunEvent", "RunStarted", "RunForked", "StrategyChosen", "StrategyAdvanced", "Issued", "CallsIssued",
    "ModelStep", "ToolStep", "RunFinished", "RunTimedOut", "RunState", "EVENT_TYPES", "EVOLVE", "FINISHED",
    "RUN_PREFIX", "state_digest",
]

RUN_PREFIX = "run-"
"""A run's stream is ``run-{run_id}``."""
FINISHED = frozenset({"answered", "max_iterations", "budget", "timeout", "failed"})
"""The statuses of a finished run (``RunFinished.status``)."""


# --- events -------------------------------------------------------------------------------------


class RunEvent(msgspec.Struct, frozen=True, omit_defaults=True, tag=lambda name: f"z8.ai.{name}"):
    """Base of the events of a run (journaled under ``z8.ai.<Name>``)."""


class RunStarted(RunEvent, frozen=True):
    """The run's trigger: the task and the agent's configuration when it started."""

    run_id: str
    agent: str
    query: Personal[str]
    model: str
    strategy: str
    """As configured: a strategy's name or ``auto`` (the router's pick is ``StrategyChosen``)."""
    prompt_digest: str
    max_iterations: int
    context: Personal[dict[str, Any]] = {}
    timeout: float | None = None
    tools: list[str] = []
    subject: Subject | None = None
    """Whose personal data the run holds (None: no one's)."""


class RunForked(RunEvent, frozen=True):
    """This run is a fork of ``source`` at ``at_step``: the next ``copied`` events are the
    source's, then it continues live with ``overrides`` (prompt, model, strategy…)."""

    run_id: str
    source: str
    at_step: int
    overrides: dict[str, Any] = {}
    copied: int = 0
    subject: Subject | None = None
    """The source run's subject (its copied events carry it too)."""


class StrategyChosen(RunEvent, frozen=True):
    """Which strategy the run follows and why (the router's features, classification and
    the candidates' cost ranks; or ``configured`` on the agent class, or a fork's override)."""

    strategy: str
    reason: str
    params: dict[str, Any] = {}
    classified_by: str = "configured"
    classification: str = ""
    heuristic: str = ""
    cost_rank: int = 0
    candidates: list[str] = []
    features: dict[str, Any] = {}


class StrategyAdvanced(RunEvent, frozen=True):
    """The strategy's new state (``memo``) and the round of model calls it starts."""

    round: int
    phase: str
    memo: Personal[Any] = None
    subject: Subject | None = None


class Issued(msgspec.Struct, frozen=True, array_like=True):
    """A call the run waits for: a model call (``purpose``, the ask's ``node`` and ``index``
    in the strategy's asks) or a tool call (``purpose`` the tool, ``node`` the call id)."""

    effect_id: str
    kind: str
    purpose: str
    node: str = ""
    index: int = 0
    tools: bool = False
    attempt: int = 0


class CallsIssued(RunEvent, frozen=True):
    """Effects the run now waits for; ``replaces`` those it no longer waits for (a fork
    re-asking them, a strategy switched)."""

    calls: list[Issued] = []
    replaces: list[str] = []


class ModelStep(RunEvent, frozen=True):
    """A model call's outcome as the run recorded it: the reasoning text, the tool calls
    (ids filled in), usage, the resolved model, the provider's request id and latency;
    ``error`` when the call failed."""

    step: int
    purpose: str
    text: Personal[str] = ""
    tool_calls: Personal[tuple[ToolCall, ...]] = ()
    usage: Usage = Usage()
    model: str = ""
    request_id: str = ""
    latency_ms: float = 0.0
    node: str = ""
    effect_id: str = ""
    error: str = ""
    subject: Subject | None = None


class ToolStep(RunEvent, frozen=True):
    """A tool call's outcome: its ``result``, or the ``error`` sent back to the model
    (unknown tool, invalid arguments, denied by policy, failed)."""

    step: int
    call_id: str
    tool: str
    arguments: Personal[str] = ""
    result: Personal[Any] = None
    error: str | None = None
    effect_id: str = ""
    subject: Subject | None = None


class RunFinished(RunEvent, frozen=True):
    """The run's end: ``status`` (answered, max_iterations, budget, timeout, failed), the
    answer, why, usage, how many steps, and the digest of the state folded up to here
    (replay checks it)."""

    status: str
    answer: Personal[str] = ""
    reason: str = ""
    usage: Usage = Usage()
    steps: int = 0
    strategy: str = ""
    state_digest: str = ""
    subject: Subject | None = None


class RunTimedOut(RunEvent, frozen=True):
    """The run's durable timeout timer (the message, not an event of the stream)."""

    run_id: str


EVENT_TYPES: dict[str, type[msgspec.Struct]] = {
    f"z8.ai.{cls.__name__}": cls
    for cls in (RunStarted, RunForked, StrategyChosen, StrategyAdvanced, CallsIssued, ModelStep, ToolStep,
                RunFinished, RunTimedOut)
}
"""The journaled types of runs, by name (the application registers them)."""


# --- state ----------------------------------------------------------------------------------------


class RunState(msgspec.Struct, frozen=True):
    """A run, folded from its events. ``status``: ``new``, ``running`` (model calls
    pending), ``waiting`` (tool calls pending: running, or held for a human's approval),
    then the finished status. ``memo`` is the strategy's state, ``pending`` the calls the
    current batch waits for, ``steps`` every model and tool step. ``subject``: whose
    personal data the run holds (its text fields read as ``z8.ERASED`` once erased)."""

    run_id: str = ""
    agent: str = ""
    status: str = "new"
    query: Personal[str] = ""
    context: Personal[dict[str, Any]] = {}
    model: str = ""
    strategy: str = ""
    prompt_digest: str = ""
    max_iterations: int = 0
    timeout: float | None = None
    overrides: dict[str, Any] = {}
    forked_from: str = ""
    rounds: int = 0
    phase: str = ""
    memo: Personal[Any] = None
    batch_from: int = 1
    """The first step of the current batch."""
    pending: dict[str, Issued] = {}
    steps: Personal[list[Step]] = []
    usage: Usage = Usage()
    answer: Personal[str] = ""
    reason: str = ""
    subject: Subject | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def erased(self) -> bool:
        """Whether the run's subject was erased (its query reads as ``z8.ERASED``)."""
        return bool(self.subject) and self.query is ERASED


def state_digest(state: RunState) -> str:
    """BLAKE2b-128 of the state's msgpack encoding (what ``RunFinished.state_digest`` holds).
    A run without a subject has the digest it had before runs could name one; an erased
    value digests as a fixed marker."""
    fields = msgspec.to_builtins(state, enc_hook=_erased_marker)
    if fields.get("subject") is None:
        fields.pop("subject", None)
    return hashlib.blake2b(_ENCODE(fields), digest_size=16).hexdigest()


def _erased_marker(value: Any) -> Any:
    if value is ERASED:
        return "z8.ERASED"
    raise NotImplementedError(f"cannot digest a {type(value).__name__}")


_ENCODE = msgspec.msgpack.Encoder().encode
_replace = msgspec.structs.replace


def _status(pending: dict[str, Issued]) -> str:
    return "waiting" if any(p.kind == "tool" for p in pending.values()) else "running"


def _add(a: Usage, b: Usage) -> Usage:
    return Usage(a.prompt_tokens + b.prompt_tokens, a.completion_tokens + b.completion_tokens,
                 a.total_tokens + b.total_tokens)


def _result_text(result: Any) -> Any:
    if isinstance(result, str) or result is ERASED:
        return result
    return msgspec.json.encode(result).decode()


def _steps(s: RunState) -> list[Step]:
    return s.steps if s.steps is not ERASED else []  # an erased snapshot: the steps are gone


def _on_started(s: RunState, e: RunStarted) -> RunState:
    return _replace(s, run_id=s.run_id if s.forked_from else e.run_id, agent=e.agent, status="running",
                    query=e.query, context=e.context, model=e.model, strategy=e.strategy,
                    prompt_digest=e.prompt_digest, max_iterations=e.max_iterations, timeout=e.timeout,
                    subject=e.subject)


def _on_forked(s: RunState, e: RunForked) -> RunState:
    return _replace(s, run_id=e.run_id, forked_from=e.source, overrides=e.overrides, subject=e.subject)


def _on_chosen(s: RunState, e: StrategyChosen) -> RunState:
    return _replace(s, strategy=e.strategy)


def _on_advanced(s: RunState, e: StrategyAdvanced) -> RunState:
    return _replace(s, rounds=e.round, phase=e.phase, memo=e.memo, batch_from=len(_steps(s)) + 1)


def _on_issued(s: RunState, e: CallsIssued) -> RunState:
    pending = {k: v for k, v in s.pending.items() if k not in e.replaces} if e.replaces else dict(s.pending)
    pending.update((c.effect_id, c) for c in e.calls)
    return _replace(s, pending=pending, status=s.status if s.finished else _status(pending))


def _on_model(s: RunState, e: ModelStep) -> RunState:
    pending = {k: v for k, v in s.pending.items() if k != e.effect_id}
    step = Step(e.step, "model", e.purpose, e.node, e.text, e.tool_calls, e.error)
    return _replace(s, pending=pending, steps=[*_steps(s), step], usage=_add(s.usage, e.usage),
                    status=s.status if s.finished else _status(pending))


def _on_tool(s: RunState, e: ToolStep) -> RunState:
    pending = {k: v for k, v in s.pending.items() if k != e.effect_id} if e.effect_id else s.pending
    text = f"error: {e.error}" if e.error is not None else _result_text(e.result)
    step = Step(e.step, "tool", e.tool, e.call_id, text, (), e.error or "")
    return _replace(s, pending=pending, steps=[*_steps(s), step],
                    status=s.status if s.finished else _status(pending))


def _on_finished(s: RunState, e: RunFinished) -> RunState:
    return _replace(s, status=e.status, answer=e.answer, reason=e.reason, pending={})


EVOLVE: dict[type, Any] = {
    RunStarted: _on_started, RunForked: _on_forked, StrategyChosen: _on_chosen, StrategyAdvanced: _on_advanced,
    CallsIssued: _on_issued, ModelStep: _on_model, ToolStep: _on_tool, RunFinished: _on_finished,
}
