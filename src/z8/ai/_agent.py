"""AI agents: durable runs of a model, its tools and a reasoning strategy.

    class Triage(z8.ai.Agent):
        model = "fast"
        prompt = "You are a support triage assistant."
        tools = [lookup_customer]
        max_iterations = 4

    app = z8.Application(z8.ai.route(z8.Router(), Triage), path, effects=[models.effect])
    await app.dispatch(Triage.StartRun(run_id=run_id, query="double charged"))
    result = await z8.ai.await_run(app, run_id)

A run is an event-sourced agent whose stream (``run-{run_id}``) *is* the run record. Its
``decide`` is pure: it turns the strategy's asks into model-call effects
(``Call("z8.model", ModelRequest)``), the tool calls a model makes into tool effects, and
every outcome into a ``ModelStep`` or ``ToolStep`` event. The strategy's state (the memo)
and the calls still pending live in the agent's ``State``, folded from those events, so a
crash resumes from the journal (a journaled step is never asked again) and replay rebuilds
every step from the recorded outcomes with no model or tool call (:func:`z8.ai.replay`).

Several calls of one batch (tree or graph of thought) are several effects in one
decision; the strategy advances only when all of them have their outcome. ``max_iterations``
(rounds of model calls), ``token_budget``, a policy's token budget (the model effect denied
with ``BudgetExceeded``), ``timeout`` (a durable timer) and a failed model call each end
the run with ``RunFinished`` and a recorded reason; a tool held for approval leaves the run
``waiting`` until a human decides. The events and the state folded from them are in
:mod:`z8.ai._events`; the strategies in :mod:`z8.ai._strategies`.

Personal data: ``StartRun(subject=...)`` names whose personal data the run holds. Every
event of the run carries that subject, and the query, messages, answers, tool arguments
and results are sealed under its key; tools whose arguments declare a ``z8.Subject``
field get it filled in. After ``app.erase(subject)`` they read as ``z8.ERASED``: a run
still active then ends ``failed`` on its next input, and :func:`z8.ai.replay` raises
``SubjectErased``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec

from z8.actors._agent import Agent as _Agent
from z8.actors._agent import CommandContext, Decision, reject
from z8.actors._ledger import Call, CancelTimer, EffectFailed, EffectSucceeded, Timer
from z8.app._router import Router
from z8.errors import InvalidSpec
from z8.journal._personal import ERASED

from ._events import (
    EVENT_TYPES,
    EVOLVE,
    RUN_PREFIX,
    CallsIssued,
    Issued,
    ModelStep,
    RunEvent,
    RunFinished,
    RunForked,
    RunStarted,
    RunState,
    RunTimedOut,
    StrategyAdvanced,
    StrategyChosen,
    ToolStep,
    state_digest,
)
from ._messages import ModelRequest, ModelResponse, ToolCall, ToolSpec
from ._models import digest_messages
from ._router import classify_ask, choose
from ._strategies import Ask, Done, RunView, Strategy, strategy_named

__all__ = ["Agent", "route"]

TIMEOUT_TIMER = "z8.ai.timeout"
MODEL_RETRIES = 1
"""Re-asks of a call whose response was unusable (``InvalidModelResponse``) before the run fails."""
_STAMPED = (StrategyAdvanced, ModelStep, ToolStep, RunFinished)
"""The events that hold personal data and get the run's subject."""


# --- one decision ---------------------------------------------------------------------------------


class _Turn:
    """One decision being built: events folded as they are emitted, effects, timers."""

    __slots__ = ("state", "ctx", "evolve", "events", "effects", "timers")

    def __init__(self, state: RunState, ctx: CommandContext, evolve: Any) -> None:
        self.state = state
        self.ctx = ctx
        self.evolve = evolve
        self.events: list[Any] = []
        self.effects: list[Call] = []
        self.timers: list[Any] = []

    def emit(self, event: RunEvent) -> None:
        subject = self.state.subject
        if subject and type(event) in _STAMPED and event.subject is None:  # type: ignore[attr-defined]
            event = msgspec.structs.replace(event, subject=subject)
        self.state = self.evolve(self.state, event)  # the agent's evolve: a subclass's own folds too
        self.events.append(event)

    def call(self, effect: Any, request: Any) -> str:
        self.effects.append(Call(effect, request))
        return self.ctx.effect_id(len(self.effects) - 1)

    def decision(self, reply: Any = None) -> Decision:
        return Decision(self.events, reply, self.effects, self.timers)


# --- the agent ------------------------------------------------------------------------------------


class Agent(_Agent):
    """An AI agent: subclass and set ``model``, ``prompt``, ``tools``, ``max_iterations``,
    ``strategy``. Each subclass gets its commands ``StartRun(run_id, query, context={},
    subject=None)`` and ``ForkRun`` (see :func:`z8.ai.fork`); route them with :func:`route`.
    ``subject`` names whose personal data the run holds (a pseudonymous id, journaled in
    clear): the run's texts are then sealed under it and erased with it (``app.erase``).

    ``strategy``: ``"react"`` (default), ``"one_shot"``, ``"cot"``, ``"tot"``, ``"got"``,
    ``"exact"``, ``"refine"``, ``"auto"`` (the router picks per task), or a
    :class:`~z8.ai.Strategy` instance with its parameters.
    """

    model: ClassVar[str] = "default"
    """The model alias (resolved by the application's ``Models``)."""
    prompt: ClassVar[str] = ""
    """The system prompt."""
    tools: ClassVar[Sequence[Any]] = ()
    """``@z8.ai.tool`` functions the model may call."""
    max_iterations: ClassVar[int] = 8
    """Rounds of model calls the strategy may start (the router's classify call is not counted)."""
    strategy: ClassVar[str | Strategy] = "react"
    timeout: ClassVar[float | None] = None
    """Seconds a run may take (a durable timer); None: no limit."""
    temperature: ClassVar[float | None] = None
    """For asks that do not set their own (evaluations and exact search use 0)."""
    max_tokens: ClassVar[int | None] = 1024
    """Per model call (what a policy's token budget reserves)."""
    token_budget: ClassVar[int | None] = None
    """Total tokens a run may use: no new round starts past it (None: no limit)."""
    model_effect: ClassVar[str] = "z8.model"
    """The model-call effect's name (``z8.ai.Models.effect``)."""
    agent_name: ClassVar[str | None] = None
    """The name journaled in ``RunStarted`` (default: the class name)."""
    idle_timeout: ClassVar[float | None] = 60.0
    agent_types: ClassVar[dict[str, type]] = EVENT_TYPES
    """Journaled types the application registers for this agent."""

    State = RunState
    StartRun: ClassVar[type[msgspec.Struct]]
    ForkRun: ClassVar[type[msgspec.Struct]]
    _z8_tools: ClassVar[dict[str, Any]] = {}
    _z8_specs: ClassVar[tuple[ToolSpec, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _check(cls)
        cls._z8_tools = {t.spec.name: t for t in cls.tools}
        cls._z8_specs = tuple(t.spec for t in cls.tools)
        cls.agent_effects = tuple(t.effect for t in cls.tools)
        cls.StartRun = _command(cls, "StartRun", [("run_id", str), ("query", str),
                                                  ("context", dict[str, Any], msgspec.field(default_factory=dict)),
                                                  ("subject", str | None, None)])
        cls.ForkRun = _command(cls, "ForkRun", [
            ("run_id", str), ("source", str), ("at_step", int),
            ("history", list[Any], msgspec.field(default_factory=list)),
            ("overrides", dict[str, Any], msgspec.field(default_factory=dict))])

    # --- evolve --------------------------------------------------------------------------------

    def evolve(self, state: RunState, event: Any) -> RunState:
        """Fold one run event (pure; events of other types leave the state as it is)."""
        fold = EVOLVE.get(type(event))
        return fold(state, event) if fold is not None else state

    # --- decide --------------------------------------------------------------------------------

    def decide(self, state: RunState, message: Any, ctx: CommandContext) -> Any:
        """Pure: a run's next step for a command, an effect's outcome or its timeout."""
        kind = type(message)
        if state.erased and not state.finished and kind is not self.StartRun and kind is not self.ForkRun:
            return self._erased(state, ctx)
        if kind is EffectSucceeded or kind is EffectFailed:
            return self._outcome(state, message, ctx)
        if kind is self.StartRun:
            return self._start(state, message, ctx)
        if kind is self.ForkRun:
            return self._fork(state, message, ctx)
        if kind is RunTimedOut:
            return self._timed_out(state, ctx)
        if kind.__module__ == "z8.actors._ledger":
            return Decision()  # unknown or stuck outcomes: the final one will come
        return reject("unknown_message", type=kind.__name__)

    def _start(self, state: RunState, cmd: Any, ctx: CommandContext) -> Any:
        if state.status != "new":
            if state.query == cmd.query:
                return Decision(reply=state.run_id)  # the same run asked again: nothing to do
            return reject("run_exists", run_id=state.run_id)
        if not isinstance(cmd.query, str) or not cmd.query.strip():
            return reject("empty_query")
        if cmd.subject is not None and (not isinstance(cmd.subject, str) or not cmd.subject):
            return reject("invalid_subject", detail="subject names whose personal data the run holds: a non-empty "
                          f"str (a pseudonymous id) or None, got {type(cmd.subject).__name__} {cmd.subject!r:.40}")
        turn = _Turn(state, ctx, self.evolve)
        configured = self.strategy if isinstance(self.strategy, str) else self.strategy.name
        configured = configured if configured == "auto" or not isinstance(self.strategy, str) \
            else strategy_named(configured).name
        turn.emit(RunStarted(cmd.run_id, self.agent_name or type(self).__name__, cmd.query, self.model, configured,
                             _digest(self.prompt), self.max_iterations, dict(cmd.context), self.timeout,
                             list(self._z8_tools), cmd.subject))
        if self.timeout:
            turn.timers.append(Timer(RunTimedOut(cmd.run_id), after=self.timeout, id=TIMEOUT_TIMER))
        self._choose(turn, configured, "configured on the agent class", "configured")
        return turn.decision(reply=cmd.run_id)

    def _fork(self, state: RunState, cmd: Any, ctx: CommandContext) -> Any:
        if state.status != "new":
            return reject("run_exists", run_id=state.run_id)
        turn = _Turn(state, ctx, self.evolve)
        subject = next((e.subject for e in cmd.history if type(e) is RunStarted), None)
        turn.emit(RunForked(cmd.run_id, cmd.source, cmd.at_step, dict(cmd.overrides), len(cmd.history), subject))
        for event in cmd.history:
            if type(event) not in EVOLVE:
                return reject("fork_history", detail=f"{type(event).__name__} is not a run event")
            turn.emit(event)
        s = turn.state
        if s.status == "new" or s.finished:
            return reject("fork_history", detail="the copied history must start the run and not end it")
        if s.erased:
            return reject("fork_history", detail="the copied history's personal data was erased")
        timeout = self._setting(s, "timeout")
        if timeout:
            turn.timers.append(Timer(RunTimedOut(cmd.run_id), after=timeout, id=TIMEOUT_TIMER))
        wanted = cmd.overrides.get("strategy")
        name = None if wanted is None or wanted == "auto" else strategy_named(wanted).name
        if wanted is not None and (name or wanted) != s.strategy:
            if s.pending:
                turn.emit(CallsIssued([], list(s.pending)))
            self._choose(turn, name or wanted, f"fork of run {cmd.source} at step {cmd.at_step} with strategy={wanted}",
                         "fork")
        elif s.pending:
            self._reissue(turn, list(s.pending.values()))
        else:
            self._advance(turn)
        return turn.decision(reply=cmd.run_id)

    def _erased(self, state: RunState, ctx: CommandContext) -> Any:
        """The run's subject was erased: it ends ``failed``, recording nothing personal."""
        turn = _Turn(state, ctx, self.evolve)
        self._finish(turn, "failed", "", f"run {state.run_id!r}: its personal data was erased (subject "
                                         f"{state.subject!r}) while it was {state.status}; it cannot continue")
        return turn.decision()

    def _timed_out(self, state: RunState, ctx: CommandContext) -> Any:
        if state.status == "new" or state.finished:
            return Decision()
        turn = _Turn(state, ctx, self.evolve)
        timeout = self._setting(state, "timeout")
        self._finish(turn, "timeout", self._partial(state),
                     f"the run's timeout of {timeout:g} s passed with {len(state.pending)} call(s) pending")
        return turn.decision()

    def _outcome(self, state: RunState, outcome: Any, ctx: CommandContext) -> Any:
        issued = state.pending.get(outcome.effect_id)
        if issued is None or state.finished:
            return Decision()  # not awaited (any more): a late outcome after the run ended
        turn = _Turn(state, ctx, self.evolve)
        if issued.kind == "model":
            self._on_model(turn, issued, outcome)
        else:
            self._on_tool(turn, issued, outcome)
        if not turn.state.finished and not turn.state.pending:
            self._advance(turn)
        return turn.decision()

    # --- steps ---------------------------------------------------------------------------------

    def _on_model(self, turn: _Turn, issued: Issued, outcome: Any) -> None:
        number = len(turn.state.steps) + 1
        response = None
        if type(outcome) is EffectSucceeded:
            try:
                response = outcome.result if isinstance(outcome.result, ModelResponse) \
                    else msgspec.convert(outcome.result, ModelResponse)
            except msgspec.ValidationError as bad:
                error, message = "InvalidModelResponse", f"the model effect returned no ModelResponse: {bad}"
        else:
            error, message = outcome.error, outcome.message
        if response is None:
            turn.emit(ModelStep(number, issued.purpose, node=issued.node, effect_id=issued.effect_id,
                                error=f"{error}: {message}" if message else error))
            what = f"the {issued.purpose} model call"
            if error == "BudgetExceeded":
                self._finish(turn, "budget", self._partial(turn.state), f"{what} was refused: {message}")
            elif error == "InvalidModelResponse" and issued.attempt < MODEL_RETRIES:
                self._reissue(turn, [issued], attempt=issued.attempt + 1)
            elif issued.purpose != "classify" or error == "PolicyDenied":  # a failed classify: the heuristic decides
                self._finish(turn, "failed", self._partial(turn.state), f"{what} failed: {error}: {message}")
            return
        asked = response.tool_calls if response.tool_calls is not ERASED else ()  # erased after it was journaled
        calls = tuple(c if c.id else ToolCall(f"call-{number}-{i}", c.name, c.arguments) for i, c in enumerate(asked))
        turn.emit(ModelStep(number, issued.purpose, response.text, calls, response.usage, response.model,
                            response.request_id, response.latency_ms, issued.node, issued.effect_id))
        if issued.tools and calls:
            self._call_tools(turn, calls)

    def _call_tools(self, turn: _Turn, calls: Sequence[ToolCall]) -> None:
        """Run the tool calls a model asked for; arguments are checked first, and an
        unknown tool or invalid arguments go back to the model as a tool error."""
        issued = []
        for call in calls:
            tool = self._z8_tools.get(call.name)
            if tool is None:
                known = ", ".join(self._z8_tools) or "none"
                error: str | None = f"unknown tool {call.name!r}; the tools are: {known}"
            else:
                args, error = tool.parse(call.arguments, subject=turn.state.subject)
            if error is not None:
                turn.emit(ToolStep(len(turn.state.steps) + 1, call.id, call.name, call.arguments, error=error))
            else:
                issued.append(Issued(turn.call(tool.effect, args), "tool", call.name, call.id))
        if issued:
            turn.emit(CallsIssued(issued))

    def _on_tool(self, turn: _Turn, issued: Issued, outcome: Any) -> None:
        number = len(turn.state.steps) + 1
        arguments = _arguments(turn.state, issued.node)
        if type(outcome) is EffectSucceeded:
            turn.emit(ToolStep(number, issued.node, issued.purpose, arguments, msgspec.to_builtins(outcome.result),
                               effect_id=issued.effect_id))
        else:
            error = f"{outcome.error}: {outcome.message}" if outcome.message else outcome.error
            turn.emit(ToolStep(number, issued.node, issued.purpose, arguments, error=error,
                               effect_id=issued.effect_id))

    # --- the strategy --------------------------------------------------------------------------

    def _choose(self, turn: _Turn, name: str, reason: str, by: str) -> None:
        """Start strategy ``name``, or ask the router's classify call for ``auto``."""
        if name == "auto":
            ask = classify_ask(self._view(turn.state))
            turn.emit(CallsIssued([Issued(turn.call(self.model_effect, self._request(turn.state, ask)), "model",
                                          ask.purpose, ask.node, 0)]))
            return
        strategy = self._strategy(name)
        turn.emit(StrategyChosen(strategy.name, reason, strategy.params(), by, cost_rank=strategy.cost_rank))
        self._round(turn, strategy, strategy.start(self._view(turn.state)))

    def _advance(self, turn: _Turn) -> None:
        """Every call of the batch has its outcome: the router's choice, or the strategy's
        next memo (a new round) or its end."""
        s = turn.state
        view = self._view(s)
        results = list(s.steps[s.batch_from - 1:])
        classified = [r for r in results if r.purpose == "classify" and r.kind == "model"]
        if classified:
            answer = None if classified[-1].error else classified[-1].text
            choice = choose(view, answer, self._setting(s, "max_iterations"))
            strategy = self._strategy(choice.strategy)
            turn.emit(StrategyChosen(choice.strategy, choice.reason, strategy.params(), choice.classified_by,
                                     choice.classification, choice.heuristic, choice.cost_rank, choice.candidates,
                                     choice.features))
            self._round(turn, strategy, strategy.start(self._view(turn.state)))
            return
        strategy = self._strategy(s.strategy)
        out = strategy.advance(view, s.memo, results)
        if isinstance(out, Done):
            self._finish(turn, out.status, out.answer, out.reason)
        else:
            self._round(turn, strategy, out)

    def _round(self, turn: _Turn, strategy: Strategy, memo: Any) -> None:
        s = turn.state
        limit = self._setting(s, "max_iterations")
        phase = str(getattr(memo, "phase", "") if not isinstance(memo, dict) else memo.get("phase", ""))
        view = self._view(s)
        if s.rounds >= limit:
            self._finish(turn, "max_iterations", strategy.partial(view, memo),
                         f"max_iterations ({limit}) reached: {strategy.name} wanted round {s.rounds + 1} ({phase})")
            return
        if self.token_budget is not None and s.usage.total_tokens >= self.token_budget:
            self._finish(turn, "budget", strategy.partial(view, memo),
                         f"token_budget ({self.token_budget}) reached: {s.usage.total_tokens} tokens used")
            return
        asks = strategy.asks(view, memo)
        if not asks:
            self._finish(turn, "failed", strategy.partial(view, memo), f"{strategy.name} asked for no call ({phase})")
            return
        turn.emit(StrategyAdvanced(s.rounds + 1, phase, msgspec.to_builtins(memo)))
        turn.emit(CallsIssued([
            Issued(turn.call(self.model_effect, self._request(turn.state, ask)), "model", ask.purpose, ask.node,
                   index, ask.tools)
            for index, ask in enumerate(asks)]))

    def _reissue(self, turn: _Turn, calls: list[Issued], attempt: int | None = None) -> None:
        """Ask again (new effects) for calls the run waits for: after an unusable response,
        or in a fork (whose prompt or model may differ)."""
        s = turn.state
        view = self._view(s)
        asks = None
        fresh = []
        for old in calls:
            again = attempt if attempt is not None else old.attempt
            if old.kind == "tool":
                call = _tool_call(s, old.node)
                tool = self._z8_tools.get(old.purpose)
                args, error = tool.parse(call.arguments, subject=s.subject) if tool is not None and call is not None \
                    else (None, f"tool {old.purpose!r} is not available to this agent")
                if error is None:
                    fresh.append(Issued(turn.call(tool.effect, args), "tool", old.purpose, old.node))
                else:  # every tool call gets its answer, or the model's conversation is broken
                    turn.emit(ToolStep(len(turn.state.steps) + 1, old.node, old.purpose,
                                       call.arguments if call is not None else "", error=error,
                                       effect_id=old.effect_id))
                continue
            if old.purpose == "classify":
                ask: Ask | None = classify_ask(view)
            else:
                asks = asks if asks is not None else self._strategy(s.strategy).asks(view, s.memo)
                ask = asks[old.index] if old.index < len(asks) else None
            if ask is not None:
                fresh.append(Issued(turn.call(self.model_effect, self._request(s, ask)), "model", old.purpose,
                                    old.node, old.index, old.tools, again))
        turn.emit(CallsIssued(fresh, [c.effect_id for c in calls if c.effect_id in turn.state.pending]))
        if not turn.state.pending:
            self._advance(turn)

    def _finish(self, turn: _Turn, status: str, answer: str, reason: str) -> None:
        s = turn.state
        steps = len(s.steps) if s.steps is not ERASED else 0
        turn.emit(RunFinished(status, answer, reason, s.usage, steps, s.strategy, state_digest(s)))
        if self._setting(s, "timeout") and status != "timeout":
            turn.timers.append(CancelTimer(TIMEOUT_TIMER))

    # --- helpers -------------------------------------------------------------------------------

    def _setting(self, state: RunState, name: str) -> Any:
        """A run setting: a fork's override, else what the run started with."""
        if name in state.overrides:
            return state.overrides[name]
        return getattr(state, name)

    def _strategy(self, name: str) -> Strategy:
        own = self.strategy
        if isinstance(own, Strategy) and own.name == name:
            return own
        return strategy_named(name)

    def _view(self, state: RunState) -> RunView:
        prompt = state.overrides.get("prompt", self.prompt) if state.overrides else self.prompt
        return RunView(prompt, state.query, state.context, self._z8_specs, state.steps)

    def _request(self, state: RunState, ask: Ask) -> ModelRequest:
        """The model call for ``ask``; with the run's subject, its messages are sealed
        under it and their digest is kept in clear."""
        subject = state.subject
        return ModelRequest(
            self._setting(state, "model"), ask.messages, self._z8_specs if ask.tools else (),
            ask.temperature if ask.temperature is not None else self.temperature,
            ask.max_tokens or self.max_tokens, purpose=ask.purpose,
            messages_digest=digest_messages(ask.messages) if subject else None, subject=subject,
        )

    def _partial(self, state: RunState) -> str:
        if not state.strategy or state.strategy == "auto":
            return ""
        return self._strategy(state.strategy).partial(self._view(state), state.memo)


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _tool_call(state: RunState, call_id: str) -> ToolCall | None:
    for step in reversed(state.steps):
        if step.kind == "model":
            for call in step.tool_calls:
                if call.id == call_id:
                    return call
    return None


def _arguments(state: RunState, call_id: str) -> str:
    call = _tool_call(state, call_id)
    return call.arguments if call is not None else ""


def _command(cls: type, name: str, fields: list[Any]) -> type[msgspec.Struct]:
    command = msgspec.defstruct(name, fields, frozen=True, module=cls.__module__)
    command.__qualname__ = f"{cls.__qualname__}.{name}"
    return command


def _check(cls: type[Agent]) -> None:
    """InvalidSpec for a configuration that cannot run, naming the attribute."""
    where = cls.__qualname__
    if not isinstance(cls.model, str) or not cls.model:
        raise InvalidSpec(f"{where}.model must be a model alias (a non-empty str), got {cls.model!r}")
    if not isinstance(cls.prompt, str):
        raise InvalidSpec(f"{where}.prompt must be a str, got {type(cls.prompt).__name__}")
    if isinstance(cls.max_iterations, bool) or not isinstance(cls.max_iterations, int) or cls.max_iterations < 1:
        raise InvalidSpec(f"{where}.max_iterations must be an int >= 1, got {cls.max_iterations!r}")
    if cls.timeout is not None and (isinstance(cls.timeout, bool) or not isinstance(cls.timeout, (int, float))
                                    or cls.timeout <= 0):
        raise InvalidSpec(f"{where}.timeout must be seconds > 0 or None, got {cls.timeout!r}")
    if isinstance(cls.strategy, str):
        if cls.strategy != "auto":
            strategy_named(cls.strategy)
    elif not isinstance(cls.strategy, Strategy):
        raise InvalidSpec(f"{where}.strategy must be a strategy name, 'auto' or a z8.ai.Strategy, "
                          f"got {cls.strategy!r}")
    names = []
    for tool in cls.tools:
        if not all(hasattr(tool, a) for a in ("effect", "spec", "parse")):
            raise InvalidSpec(f"{where}.tools: {tool!r} is not a tool; declare it with @z8.ai.tool")
        names.append(tool.spec.name)
    if len(set(names)) != len(names):
        raise InvalidSpec(f"{where}.tools: tool names must be unique, got {names}")


def route(router: Router, *agents: type[Agent]) -> Router:
    """Route each AI agent's ``StartRun`` and ``ForkRun`` by ``run_id`` to the stream
    ``run-{run_id}``; returns the router."""
    for agent in agents:
        if not (isinstance(agent, type) and issubclass(agent, Agent)):
            raise InvalidSpec(f"z8.ai.route takes z8.ai.Agent subclasses, got {agent!r}")
        router.identify(agent, by="run_id", prefix=RUN_PREFIX)
        router.dispatch(agent.StartRun, agent.ForkRun, to=agent)
    return router
