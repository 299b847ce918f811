"""Reasoning strategies: pure state machines over model calls.

A strategy never calls a model and never reads a clock. Given the run (prompt, task,
tools and every journaled step so far) and its own small state, the *memo*, it says
which model calls come next (:meth:`Strategy.asks`), and once every call of that batch has
its outcome it folds the results into the next memo or a :class:`Done`
(:meth:`Strategy.advance`). The agent (:class:`z8.ai.Agent`) journals each memo in a
``StrategyAdvanced`` event, turns asks into model-call effects, runs the tool calls a
model asks for, and journals every response as a ``ModelStep``. So every step is an event,
a crash resumes from the journal, and replay runs these same functions over the recorded
results without calling anything.

``asks`` depends only on the run and the memo: the calls of a batch can be rebuilt at any
time (a fork re-asks the calls still pending at its cut with its own prompt or model).
The memo holds step numbers, never copies of the text (the run's steps hold the text).

This file holds the seven built-in strategies (one module: they share the message and
parsing helpers, and each is a short state machine).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import msgspec

from z8.errors import InvalidSpec

from ._messages import Message, ToolCall, ToolSpec

__all__ = [
    "Step", "RunView", "Ask", "Done", "Strategy",
    "OneShot", "ChainOfThought", "ReAct", "TreeOfThought", "GraphOfThought", "ExactSearch", "SelfRefine",
    "STRATEGIES", "strategy_named", "conclusion", "score",
]


def _counts(strategy: Any, *fields: str) -> None:
    """InvalidSpec unless each of ``strategy``'s ``fields`` is an int >= 1."""
    for field in fields:
        value = getattr(strategy, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidSpec(f"{type(strategy).__name__}: {field} must be an int >= 1, got {value!r}")


# --- what strategies read and say ---------------------------------------------------------


class Step(msgspec.Struct, frozen=True, array_like=True):
    """One journaled step of a run as strategies read it (folded from ``ModelStep`` and
    ``ToolStep``). ``step`` is its 1-based number in the run."""

    step: int
    kind: Literal["model", "tool"]
    purpose: str
    """A model step: the purpose of its ask; a tool step: the tool's name."""
    node: str = ""
    """A model step: its ask's node; a tool step: the tool call id."""
    text: str = ""
    """A model step: the model's text; a tool step: the result (or error) sent back to the model."""
    tool_calls: tuple[ToolCall, ...] = ()
    error: str = ""
    """Set when the call failed (a model step whose response was unusable, a tool error)."""


class RunView(msgspec.Struct, frozen=True):
    """What a strategy may read of its run: the effective prompt, the task, the tools
    offered, and every step so far (``steps[n - 1]`` is step ``n``)."""

    prompt: str
    query: str
    context: dict[str, Any] = {}
    tools: tuple[ToolSpec, ...] = ()
    steps: Sequence[Step] = ()

    def step(self, number: int) -> Step:
        """Step ``number`` (1-based)."""
        return self.steps[number - 1]

    def text(self, number: int) -> str:
        """The text of step ``number`` ("" for 0: no step)."""
        return self.steps[number - 1].text if number > 0 else ""


class Ask(msgspec.Struct, frozen=True):
    """A model call a strategy wants made. ``purpose`` names the step for the record
    (``answer``, ``act``, ``expand``, ``evaluate``, ``critique``…); ``node`` tells the
    strategy which of its calls a result answers; ``tools``: offer the agent's tools
    (the agent then runs the tool calls the model makes before the batch is complete)."""

    purpose: str
    messages: tuple[Message, ...]
    node: str = ""
    temperature: float | None = None
    tools: bool = False
    max_tokens: int | None = None


class Done(msgspec.Struct, frozen=True):
    """A strategy's end: the answer, and why it is the answer (journaled in ``RunFinished``)."""

    answer: str
    reason: str
    status: Literal["answered", "failed"] = "answered"


class Strategy(msgspec.Struct, frozen=True):
    """Base of strategies. Fields are the strategy's parameters (journaled with the choice).

    Subclasses set ``name``, ``cost_rank`` (the router picks the cheapest that fits:
    lower is cheaper) and ``Memo`` (a Struct), and implement ``start``, ``asks`` and
    ``advance``, all pure. The agent stores the memo as plain data; ``load`` gives it back
    typed.
    """

    name: ClassVar[str] = ""
    cost_rank: ClassVar[int] = 0
    Memo: ClassVar[type[msgspec.Struct]]

    def min_rounds(self) -> int:
        """The fewest rounds of model calls a run of this strategy needs (the router only
        picks strategies that fit the agent's ``max_iterations``)."""
        return 1

    def params(self) -> dict[str, Any]:
        """The parameters, as journaled in ``StrategyChosen``."""
        return msgspec.to_builtins(self)

    def load(self, memo: Any) -> Any:
        """The memo as this strategy's ``Memo`` (it is journaled, and folded, as plain data)."""
        return memo if isinstance(memo, self.Memo) else msgspec.convert(memo, self.Memo)

    def start(self, run: RunView) -> Any:
        """The first memo."""
        raise NotImplementedError

    def asks(self, run: RunView, memo: Any) -> list[Ask]:
        """The model calls of the batch ``memo`` is waiting for (rebuildable at any time)."""
        raise NotImplementedError

    def advance(self, run: RunView, memo: Any, results: list[Step]) -> Any:
        """Every call of the batch has its outcome (``results``, in journal order, tool
        steps included): the next memo, or :class:`Done`."""
        raise NotImplementedError

    def partial(self, run: RunView, memo: Any) -> str:
        """The best answer so far, for a run stopped early (max_iterations, timeout): by
        default the last model text."""
        for step in reversed(run.steps):
            if step.kind == "model" and not step.error and step.text.strip() and step.purpose != "classify":
                return conclusion(step.text) or step.text.strip()
        return ""


# --- parsing and message helpers ------------------------------------------------------------

_ANSWER = re.compile(r"^[\s*_#>]*(?:final\s+)?answer[\s*_]*[:：]\s*(.*)$", re.IGNORECASE)
_SCORE = re.compile(r"score[\s*_]*[:=]?\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)]|\(\d+\))\s*")
_NO_CHANGES = re.compile(r"^[\s*_\"'`]*no\s+changes?\b", re.IGNORECASE)

ANSWER_RULE = "End with a final line that starts with 'Answer:' followed by the answer."


def conclusion(text: str) -> str | None:
    """The answer on the last ``Answer:`` line of ``text`` (or the lines after it when that
    line is empty), None when there is none."""
    lines = text.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        match = _ANSWER.match(lines[index])
        if match:
            rest = match.group(1).strip().strip("*_").strip()
            if not rest:
                rest = "\n".join(lines[index + 1:]).strip()
            return rest or None
    return None


def score(text: str) -> float:
    """A 0-10 rating from an evaluation: the number after ``Score:``, else the first number;
    0 when there is none (an unreadable evaluation never wins)."""
    match = _SCORE.search(text) or _NUMBER.search(text)
    if match is None:
        return 0.0
    return min(10.0, max(0.0, float(match.group(1) if match.re is _SCORE else match.group(0))))


def _system(run: RunView, extra: str = "") -> tuple[Message, ...]:
    text = "\n\n".join(part for part in (run.prompt.strip(), extra) if part)
    return (Message("system", text),) if text else ()


def _task(run: RunView) -> str:
    if not run.context:
        return run.query
    return f"{run.query}\n\nContext:\n{msgspec.json.encode(run.context).decode()}"


def _ask(run: RunView, purpose: str, instruction: str, body: str = "", *, node: str = "",
         temperature: float | None = None, max_tokens: int | None = None) -> Ask:
    """A single-turn ask: the system prompt plus ``instruction``, the task (and ``body``)."""
    user = f"Task:\n{_task(run)}" + (f"\n\n{body}" if body else "")
    return Ask(purpose, (*_system(run, instruction), Message("user", user)), node, temperature,
               max_tokens=max_tokens)


def _usable(results: Sequence[Step], purpose: str | None = None) -> dict[str, Step]:
    """The successful model steps of a batch by node (the last one wins: a re-asked call)."""
    found: dict[str, Step] = {}
    for step in results:
        if step.kind == "model" and not step.error and (purpose is None or step.purpose == purpose):
            found[step.node] = step
    return found


def _lines(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        line = _BULLET.sub("", line).strip().strip("*_`").strip()
        if line:
            out.append(line)
    return out


# --- one shot --------------------------------------------------------------------------------


class OneShot(Strategy, frozen=True):
    """One model call; its text is the answer. For high-volume, low-risk questions."""

    name: ClassVar[str] = "one_shot"
    cost_rank: ClassVar[int] = 0

    class Memo(msgspec.Struct, frozen=True):
        phase: str = "answer"

    def start(self, run: RunView) -> Any:
        return self.Memo()

    def asks(self, run: RunView, memo: Any) -> list[Ask]:
        return [Ask("answer", (*_system(run), Message("user", _task(run))))]

    def advance(self, run: RunView, memo: Any, results: list[Step]) -> Any:
        step = _usable(results, "answer").get("")
        if step is None:
            return Done("", "the model gave no usable answer", "failed")
        return Done(step.text.strip(), f"one-shot answer (step {step.step})")


# --- chain of thought -------------------------------------------------------------------------


class ChainOfThought(Strategy, frozen=True):
    """Step-by-step reasoning with a parsed, on-record conclusion: the ``Answer:`` line.

    When the reasoning has no ``Answer:`` line, one follow-up call asks for it
    (``conclude_retry``); failing that, the last line of the reasoning is the conclusion
    and the reason says so.
    """

    conclude_retry: bool = True
    name: ClassVar[str] = "cot"
    cost_rank: ClassVar[int] = 1

    class Memo(msgspec.Struct, frozen=True):
        phase: str = "think"
        thought: int = 0
        """The step holding the reasoning."""

    def start(self, run: RunView) -> Any:
        return self.Memo()

    def asks(self, run: RunView, memo: Any) -> list[Ask]:
        memo = self.load(memo)
        think = Ask("think", (*_system(run, f"Think through the problem step by step. {ANSWER_RULE}"),
                              Message("user", _task(run))))
        if memo.phase == "think":
            return [think]
        return [Ask("conclude", (*think.messages, Message("assistant", run.text(memo.thought)),
                                 Message("user", "State your final answer on one line starting with 'Answer:'.")),
                    temperature=0.0)]

    def advance(self, run: RunView, memo: Any, results: list[Step]) -> Any:
        memo = self.load(memo)
        step = _usable(results).get("")
        if step is None:
            return Done("", f"the model gave no usable {memo.phase} step", "failed")
        answer = conclusion(step.text)
        if answer is not None:
            return Done(answer, f"chain of thought concluded on the 'Answer:' line of step {step.step}")
        if memo.phase == "think" and self.conclude_retry:
            return self.Memo("conclude", step.step)
        lines = _lines(run.text(memo.thought or step.step))
        last = lines[-1] if lines else ""
        return Done(last, f"no 'Answer:' line; the conclusion is the last line of step {memo.thought or step.step}",
                    "answered" if last else "failed")


# --- ReAct --------------------------------------------------------------------------------------


class ReAct(Strategy, frozen=True):
    """Reasoning interleaved with tool calls: each round the model sees the conversation
    (its earlier turns and the tool results) with the tools offered; a turn without tool
    calls is the answer."""

    name: ClassVar[str] = "react"
    cost_rank: ClassVar[int] = 2

    class Memo(msgspec.Struct, frozen=True):
        phase: str = "act"
        round: int = 1

    def min_rounds(self) -> int:
        return 2

    def start(self, run: RunView) -> Any:
        return self.Memo()

    def asks(self, run: RunView, memo: Any) -> list[Ask]:
        guide = "Use the tools when you need facts you do not have. When you can answer, reply without calling a tool."
        messages: list[Message] = [*_system(run, guide if run.tools else ""), Message("user", _task(run))]
        for step in run.steps:
            if step.kind == "model" and step.purpose == "act" and not step.error:
                messages.append(Message("assistant", step.text, step.tool_calls))
            elif step.kind == "tool":
                messages.append(Message("tool", step.text, tool_call_id=step.node, name=step.purpose))
        return [Ask("act", tuple(messages), tools=True)]

    def advance(self, run: RunView, memo: Any, results: list[Step]) -> Any:
        memo = self.load(memo)
        step = _usable(results, "act").get("")
        if step is None:
            return Done("", "the model gave no usable turn", "failed")
        if step.tool_calls:
            return self.Memo("act", memo.round + 1)
        tools = sum(1 for s in run.steps if s.kind == "tool")
        answer = conclusion(step.text) or step.text.strip()
        return Done(answer, f"answered at step {step.step} after {tools} tool call(s) in {memo.round} round(s)")


# --- tree of thought ------------------------------------------------------------------------------


class _Node(msgspec.Struct, frozen=True, array_like=True):
    id: int
    parent: int
    """-1 for a first thought."""
    step: int
    """The step holding the thought."""
    level: int
    score: float = -1.0


class TreeOfThought(Strategy, frozen=True):
    """Generate ``k`` next thoughts from every line kept, evaluate each (temperature 0,
    ``Score: N`` of 10), keep the best ``beam``, to ``depth`` levels; then answer along the
    best line. Generations and evaluations of a level run in parallel (one batch each)."""

    k: int = 3
    beam: int = 2
    depth: int = 2
    temperature: float = 0.8
    name: ClassVar[str] = "tot"
    cost_rank: ClassVar[int] = 5

    class Memo(msgspec.Struct, frozen=True):
        phase: str = "expand"
        level: int = 0
        nodes: list[_Node] = []
        frontier: list[int] = []
        fresh: list[int] = []

    def __post_init__(self) -> None:
        _counts(self, *("k", "beam", "depth"))

    def min_rounds(self) -> int:
        return 2 * self.depth + 1

    def start(self, run: RunView) -> Any:
        return self.Memo()

    def _path(self, run: RunView, memo: Any, node: int) -> str:
        nodes = {n.id: n for n in memo.nodes}
        chain = []
        while node >= 0:
            chain.append(run.text(nodes[node].step).strip())
            node = nodes[node].parent
        return "\n".join(f"{i}. {text}" for i, text in enumerate(reversed(chain), 1))

    def asks(self, run: RunView, memo: Any) -> list[Ask]:
        memo = self.load(memo)
        if memo.phase == "expand":
            out = []
            for parent in memo.frontier or [-1]:
                path = self._path(run, memo, parent)
                so_far = f"Reasoning so far:\n{path}" if path else "No reasoning yet."
                for j in range(self.k):
                    out.append(_ask(run, "expand", "Propose the next step of reasoning toward solving the task: "
                                    "one short paragraph, no final answer yet.",
                                    f"{so_far}\n\nPropose next step (option {j + 1} of {self.k}).",
                                    node=f"{parent}.{j}", temperature=self.temperature))
            return out
        if memo.phase == "evaluate":
            return [_ask(run, "evaluate", "Rate how promising a line of reasoning is for solving the task. "
                         "Reply with 'Score: N' where N is 0 (hopeless) to 10 (certainly right).",
                         f"Line of reasoning:\n{self._path(run, memo, node)}", node=str(node), temperature=0.0)
                    for node in memo.fresh]
        best = memo.frontier[0] if memo.frontier else -1
        return [_ask(run, "answer", f"Give the final answer following the line of reasoning. {ANSWER_RULE}",
                     f"Line of reasoning:\n{self._path(run, memo, best)}")]

    def advance(self, run: RunView, memo: Any, results: list[Step]) -> Any:
        memo = self.load(memo)
        if memo.phase == "expand":
            found = _usable(results, "expand")
            nodes, fresh = list(memo.nodes), []
            for parent in memo.frontier or [-1]:
                for j in range(self.k):
                    step = found.get(f"{parent}.{j}")
                    if step is not None and step.text.strip():
                        nodes.append(_Node(len(nodes), parent, step.step, memo.level + 1))
                        fresh.append(len(nodes) - 1)
            if not fresh:
                return Done("", f"no usable thought at level {memo.level + 1}", "failed")
            return self.Memo("evaluate", memo.level + 1, nodes, memo.frontier, fresh)
        if memo.phase == "evaluate":
            found = _usable(results, "evaluate")
            nodes = list(memo.nodes)
            for node in memo.fresh:
                step = found.get(str(node))
                nodes[node] = msgspec.structs.replace(nodes[node], score=score(step.text) if step else 0.0)
            ranked = sorted(memo.fresh, key=lambda n: (-nodes[n].score, n))[: self.beam]
            phase = "answer" if memo.level >= self.depth else "expand"
            return self.Memo(phase, memo.level, nodes, ranked, [])
        step = _usable(results, "answer").get("")
        if step is None:
            return Done("", "the model gave no usable final answer", "failed")
        best = memo.nodes[memo.frontier[0]]
        line = self._line(memo, best.id)
        answer = conclusion(step.text) or step.text.strip()
        return Done(answer, f"tree of thought: {len(memo.nodes)} thoughts over {self.depth} level(s), beam "
                            f"{self.beam}; the best line (steps {', '.join(map(str, line))}) scored {best.score:g}; "
                            f"answered at step {step.step}")

    @staticmethod
    def _line(memo: Any, node: int) -> list[int]:
        nodes = {n.id: n for n in memo.nodes}
        steps = []
        while node >= 0:
            steps.append(nodes[node].step)
            node = nodes[node].parent
        return steps[::-1]


# --- graph of thought ----------------------------------------------------------------------------


class GraphOfThought(Strategy, frozen=True):
    """A small DAG of ideas: generate ``k`` ideas (parallel), connect them (one call groups
    the ideas that belong together, at most ``groups``), aggregate each group into one
    stronger idea (parallel), then synthesize the aggregates into the answer."""

    k: int = 3
    groups: int = 2
    temperature: float = 0.8
    name: ClassVar[str] = "got"
    cost_rank: ClassVar[int] = 6

    class Memo(msgspec.Struct, frozen=True):
        phase: str = "generate"
        ideas: list[int] = []
        """The steps holding the ideas (idea i is ideas[i - 1])."""
        groups: list[list[int]] = []
        """Idea numbers (1-based) per group: the edges idea → aggregate."""
        aggregates: list[int] = []

    def __post_init__(self) -> None:
        _counts(self, *("k", "groups"))

    def min_rounds(self) -> int:
        return 4

    def start(self, run: RunView) -> Any:
        return self.Memo()

    def _ideas(self, run: RunView, memo: Any, numbers: Sequence[int]) -> str:
        return "\n".join(f"Idea {n}: {run.text(memo.ideas[n - 1]).strip()}" for n in numbers)

    def asks(self, run: RunView, memo: Any) -> list[Ask]:
        memo = self.load(memo)
        if memo.phase == "generate":
            return [_ask(run, "generate", "Give one distinct idea or partial solution for the task, in a short "
                         "paragraph.", f"Idea {j + 1} of {self.k}: take an angle the others may not.",
                         node=str(j), temperature=self.temperature) for j in range(self.k)]
        every = range(1, len(memo.ideas) + 1)
        if memo.phase == "connect":
            return [_ask(run, "connect", f"Group the ideas that belong together, at most {self.groups} groups. "
                         "Reply with one group per line, as idea numbers separated by commas (e.g. '1, 3').",
                         self._ideas(run, memo, every), temperature=0.0)]
        if memo.phase == "aggregate":
            return [_ask(run, "aggregate", "Combine these ideas into one stronger idea: keep what is right in "
                         "each, resolve their conflicts. One paragraph.", self._ideas(run, memo, group),
                         node=str(index)) for index, group in enumerate(memo.groups)]
        merged = "\n".join(f"Combined idea {i}: {run.text(step).strip()}"
                           for i, step in enumerate(memo.aggregates, 1))
        return [_ask(run, "synthesize", f"Synthesize the combined ideas into the answer to the task. {ANSWER_RULE}",
                     merged)]

    def advance(self, run: RunView, memo: Any, results: list[Step]) -> Any:
        memo = self.load(memo)
        if memo.phase == "generate":
            found = _usable(results, "generate")
            ideas = [found[str(j)].step for j in range(self.k) if str(j) in found and found[str(j)].text.strip()]
            if not ideas:
                return Done("", "no usable idea was generated", "failed")
            return self.Memo("connect", ideas)
        if memo.phase == "connect":
            step = _usable(results, "connect").get("")
            groups = self._groups(step.text if step else "", len(memo.ideas))
            return self.Memo("aggregate", memo.ideas, groups)
        if memo.phase == "aggregate":
            found = _usable(results, "aggregate")
            aggregates = [found[str(i)].step for i in range(len(memo.groups)) if str(i) in found]
            if not aggregates:
                return Done("", "no group could be aggregated", "failed")
            return self.Memo("synthesize", memo.ideas, memo.groups, aggregates)
        step = _usable(results, "synthesize").get("")
        if step is None:
            return Done("", "the model gave no usable synthesis", "failed")
        edges = "; ".join("+".join(map(str, group)) for group in memo.groups)
        answer = conclusion(step.text) or step.text.strip()
        return Done(answer, f"graph of thought: {len(memo.ideas)} ideas, grouped as {edges}, aggregated into "
                            f"{len(memo.aggregates)} and synthesized at step {step.step}")

    def _groups(self, text: str, count: int) -> list[list[int]]:
        groups: list[list[int]] = []
        for line in text.splitlines():
            numbers = sorted({int(n) for n in re.findall(r"\d+", line) if 1 <= int(n) <= count})
            if numbers and numbers not in groups:
                groups.append(numbers)
            if len(groups) == self.groups:
                break
        return groups or [list(range(1, count + 1))]


# --- exact search --------------------------------------------------------------------------------


class ExactSearch(Strategy, frozen=True):
    """Explicit search at temperature zero, for answers that must be exact: enumerate up to
    ``candidates`` answers (deterministic), verify each (in parallel, temperature 0,
    ``VALID``/``INVALID``), take the first verified in the enumerated order. Rejected
    candidates are excluded from the next enumeration, up to ``rounds``; nothing verified
    ends the run ``failed`` (an unverified answer is never given)."""

    candidates: int = 5
    rounds: int = 2
    name: ClassVar[str] = "exact"
    cost_rank: ClassVar[int] = 3

    class Memo(msgspec.Struct, frozen=True):
        phase: str = "enumerate"
        round: int = 1
        candidates: list[str] = []
        rejected: list[str] = []

    def __post_init__(self) -> None:
        _counts(self, *("candidates", "rounds"))

    def min_rounds(self) -> int:
        return 2

    def start(self, run: RunView) -> Any:
        return self.Memo()

    def asks(self, run: RunView, memo: Any) -> list[Ask]:
        memo = self.load(memo)
        if memo.phase == "enumerate":
            excluded = ("\n\nThese were checked and are wrong:\n" + "\n".join(memo.rejected)) if memo.rejected else ""
            return [_ask(run, "enumerate", f"List up to {self.candidates} candidate answers, one per line, most "
                         "likely first. Answers only, no commentary." + excluded, temperature=0.0)]
        return [_ask(run, "verify", "Check the candidate answer rigorously, step by step. Reply 'VALID' if it is "
                     "exactly right, otherwise 'INVALID: <why>'. Put the verdict on the first line.",
                     f"Candidate answer: {candidate}", node=str(index), temperature=0.0)
                for index, candidate in enumerate(memo.candidates)]

    def advance(self, run: RunView, memo: Any, results: list[Step]) -> Any:
        memo = self.load(memo)
        if memo.phase == "enumerate":
            step = _usable(results, "enumerate").get("")
            seen = set(memo.rejected)
            found: list[str] = []
            for line in _lines(step.text if step else ""):
                if line not in seen:
                    seen.add(line)
                    found.append(line)
            if not found:
                return Done("", f"round {memo.round}: the model enumerated no new candidate", "failed")
            return self.Memo("verify", memo.round, found[: self.candidates], memo.rejected)
        verdicts = _usable(results, "verify")
        for index, candidate in enumerate(memo.candidates):
            step = verdicts.get(str(index))
            if step is not None and _valid(step.text):
                return Done(candidate, f"exact search: candidate {index + 1} of {len(memo.candidates)} "
                                       f"(round {memo.round}) verified at step {step.step}")
        rejected = [*memo.rejected, *memo.candidates]
        if memo.round >= self.rounds:
            return Done("", f"exact search: none of {len(rejected)} candidates verified in {memo.round} "
                            "round(s); no answer is given", "failed")
        return self.Memo("enumerate", memo.round + 1, [], rejected)


def _valid(text: str) -> bool:
    first = _lines(text)[:1]
    return bool(first) and re.match(r"^(?:verdict\s*:\s*)?valid\b", first[0], re.IGNORECASE) is not None


# --- self-refine ----------------------------------------------------------------------------------


class SelfRefine(Strategy, frozen=True):
    """Draft, critique, revise. Halts when a critique finds nothing to change (it starts
    with ``NO CHANGES``), when a revision changes nothing, or after ``max_rounds``
    revisions (the latest revision is the answer)."""

    max_rounds: int = 2
    name: ClassVar[str] = "refine"
    cost_rank: ClassVar[int] = 4

    class Memo(msgspec.Struct, frozen=True):
        phase: str = "draft"
        revisions: int = 0
        draft: int = 0
        """The step holding the current draft."""
        critique: int = 0

    def __post_init__(self) -> None:
        _counts(self, "max_rounds")

    def min_rounds(self) -> int:
        return 2

    def start(self, run: RunView) -> Any:
        return self.Memo()

    def asks(self, run: RunView, memo: Any) -> list[Ask]:
        memo = self.load(memo)
        if memo.phase == "draft":
            return [Ask("draft", (*_system(run), Message("user", _task(run))))]
        draft = f"Answer:\n{run.text(memo.draft).strip()}"
        if memo.phase == "critique":
            return [_ask(run, "critique", "Critique the answer for correctness and completeness. If it needs no "
                         "changes, reply exactly 'NO CHANGES'. Otherwise list what to fix.", draft, temperature=0.0)]
        return [_ask(run, "revise", "Revise the answer to address the critique. Reply with the revised answer only.",
                     f"{draft}\n\nCritique:\n{run.text(memo.critique).strip()}")]

    def advance(self, run: RunView, memo: Any, results: list[Step]) -> Any:
        memo = self.load(memo)
        step = _usable(results).get("")
        if step is None:
            if memo.draft:  # keep what we have rather than nothing
                return Done(run.text(memo.draft).strip(), f"the {memo.phase} call failed; the answer is the draft "
                                                          f"of step {memo.draft}")
            return Done("", "the model gave no usable draft", "failed")
        if memo.phase == "draft":
            return self.Memo("critique", 0, step.step)
        if memo.phase == "critique":
            if _NO_CHANGES.match(step.text):
                return Done(run.text(memo.draft).strip(), f"self-refine: the critique at step {step.step} found "
                                                          f"nothing to change after {memo.revisions} revision(s)")
            return self.Memo("revise", memo.revisions, memo.draft, step.step)
        revisions = memo.revisions + 1
        if step.text.strip() == run.text(memo.draft).strip():
            return Done(step.text.strip(), f"self-refine: revision {revisions} (step {step.step}) changed nothing")
        if revisions >= self.max_rounds:
            return Done(step.text.strip(), f"self-refine: stopped after {revisions} revision(s), the most allowed; "
                                           f"the answer is the revision of step {step.step}")
        return self.Memo("critique", revisions, step.step)


# --- names ----------------------------------------------------------------------------------------

STRATEGIES: dict[str, Strategy] = {
    s.name: s for s in (OneShot(), ChainOfThought(), ReAct(), ExactSearch(), SelfRefine(), TreeOfThought(),
                        GraphOfThought())
}
"""The built-in strategies with their default parameters, by name, cheapest first."""

_ALIASES = {
    "one-shot": "one_shot", "oneshot": "one_shot", "chain_of_thought": "cot", "chain-of-thought": "cot",
    "tree_of_thought": "tot", "tree-of-thought": "tot", "graph_of_thought": "got", "graph-of-thought": "got",
    "self_refine": "refine", "self-refine": "refine", "exact_search": "exact",
}


def strategy_named(name: str) -> Strategy:
    """The built-in strategy ``name`` (or an alias: ``chain_of_thought``, ``self-refine``…);
    ``InvalidSpec`` naming the choices otherwise."""
    found = STRATEGIES.get(_ALIASES.get(name, name)) if isinstance(name, str) else None
    if found is None:
        raise InvalidSpec(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}, 'auto', "
                          "or pass a z8.ai.Strategy")
    return found
