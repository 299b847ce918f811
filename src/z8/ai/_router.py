"""The adaptive router (``strategy = "auto"``): classify the task, pick the cheapest
strategy that fits.

The classification is a temperature-0 ``classify`` model call (an effect like any other,
journaled as a ``ModelStep``), with a heuristic over the task's features as the fallback
when the model's answer names no class or the call fails. Among the strategies that fit
the class (and the agent: tools for ReAct, rounds within ``max_iterations``) the one with
the lowest cost rank wins. Everything that went into the choice — features, both
classifications, the candidates and the winner's cost rank — is journaled in
``StrategyChosen``, so the record says why a run reasoned the way it did. Pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import msgspec

from ._strategies import STRATEGIES, Ask, RunView, Strategy, _system, _task
from ._messages import Message

__all__ = ["CLASSES", "FITS", "Features", "Choice", "features", "heuristic_class", "parse_class",
           "classify_ask", "choose"]

CLASSES = ("simple", "reasoning", "tools", "exact", "writing", "exploratory", "synthesis")
"""The task classes, from a direct answer to combining several perspectives."""

FITS: dict[str, frozenset[str]] = {
    "one_shot": frozenset({"simple"}),
    "cot": frozenset({"simple", "reasoning"}),
    "react": frozenset({"simple", "reasoning", "tools"}),
    "exact": frozenset({"exact"}),
    "refine": frozenset({"writing", "reasoning"}),
    "tot": frozenset({"exploratory", "reasoning", "exact"}),
    "got": frozenset({"synthesis", "exploratory"}),
}
"""Which task classes each built-in strategy handles well."""

_DESCRIBE = {
    "simple": "a direct answer, no deliberation needed",
    "reasoning": "needs a few steps of thought",
    "tools": "needs facts only the tools can give",
    "exact": "a precise computation or answer that can be checked",
    "writing": "a text to draft and polish",
    "exploratory": "a search among alternative approaches or plans",
    "synthesis": "combine several perspectives or trade-offs into one answer",
}

_WORDS = {
    "exact": r"\b(calculate|compute|exact(ly)?|how many|solve|sum|product|equation|prove|count|convert|"
             r"integer|digits?|arithmetic)\b|\d\s*[-+*/^%=]\s*\d",
    "lookup": r"\b(look ?up|customer|account|order|invoice|status|record|charged?|refund|balance|find|check|"
              r"transaction|payment|subscription|ticket)\b",
    "writing": r"\b(write|draft|rewrite|improve|polish|essay|email|letter|summar(y|ize|ise)|blog|post|announce)\b",
    "explore": r"\b(plan|design|strateg(y|ies)|options?|alternatives?|brainstorm|best way|approach(es)?|puzzle|"
               r"schedule|route)\b",
    "synthesis": r"\b(compare|comparison|combine|synthesi[sz]e|pros and cons|trade-?offs?|perspectives?|merge|"
                 r"versus|vs\.?)\b",
    "reasoning": r"\b(why|explain|step by step|reason|because|should|would|if|diagnose|cause)\b",
}
_PATTERNS = {name: re.compile(pattern, re.IGNORECASE) for name, pattern in _WORDS.items()}


class Features(msgspec.Struct, frozen=True):
    """What the heuristic reads of a task (journaled with the choice)."""

    words: int
    questions: int
    numbers: bool
    tools: int
    context_keys: int
    exact: bool
    lookup: bool
    writing: bool
    explore: bool
    synthesis: bool
    reasoning: bool


class Choice(msgspec.Struct, frozen=True):
    """The router's choice and why."""

    strategy: str
    classification: str
    classified_by: str
    """``model`` (the classify call named a class) or ``heuristic``."""
    heuristic: str
    """What the heuristic alone says (recorded even when the model decided)."""
    cost_rank: int
    candidates: list[str]
    """The strategies that fit, cheapest first."""
    features: dict[str, object]
    reason: str


def features(query: str, context: Mapping[str, object], tools: int) -> Features:
    """The task's features, read from its text."""
    text = query + " " + " ".join(str(v) for v in context.values()) if context else query
    found = {name: bool(pattern.search(text)) for name, pattern in _PATTERNS.items()}
    return Features(len(query.split()), query.count("?"), bool(re.search(r"\d", query)), tools,
                    len(context), **found)


def heuristic_class(f: Features) -> str:
    """The class the features suggest (exact work first, then tool lookups, then the kind
    of text asked for; short plain questions are simple)."""
    if f.exact:
        return "exact"
    if f.tools and f.lookup:
        return "tools"
    if f.synthesis:
        return "synthesis"
    if f.explore:
        return "exploratory"
    if f.writing:
        return "writing"
    if f.tools:
        return "tools"
    if f.reasoning or f.words > 40:
        return "reasoning"
    return "simple"


def parse_class(text: str) -> str | None:
    """The class the classify call named: its first word if it is one, else the first
    class named anywhere; None when it names none."""
    words = re.findall(r"[a-z_]+", text.lower())
    if words and words[0] in CLASSES:
        return words[0]
    for word in words:
        if word in CLASSES:
            return word
    return None


def classify_ask(run: RunView) -> Ask:
    """The temperature-0 ``classify`` call."""
    names = ", ".join(t.name for t in run.tools) or "none"
    classes = "\n".join(f"- {name}: {_DESCRIBE[name]}" for name in CLASSES)
    instruction = (f"You route tasks to a reasoning method. The tools available are: {names}.\n"
                   f"Classify the task into exactly one class:\n{classes}\nReply with the class name only.")
    # the agent's own prompt says what the agent is for, which helps the classification
    return Ask("classify", (*_system(run, instruction), Message("user", _task(run))), temperature=0.0, max_tokens=16)


def choose(run: RunView, answer: str | None, max_iterations: int,
           strategies: Mapping[str, Strategy] = STRATEGIES) -> Choice:
    """The cheapest strategy that fits the task's class, the agent's tools and its
    ``max_iterations``. ``answer`` is the classify call's text (None: the call failed)."""
    f = features(run.query, run.context, len(run.tools))
    guess = heuristic_class(f)
    named = parse_class(answer) if answer is not None else None
    cls, by = (named, "model") if named is not None else (guess, "heuristic")
    if cls == "tools" and not run.tools:
        cls = "reasoning"  # nothing to look things up with: think instead
    ranked = sorted(strategies.values(), key=lambda s: (s.cost_rank, s.name))
    fitting = [s for s in ranked if cls in FITS.get(s.name, frozenset()) and (s.name != "react" or run.tools)]
    within = [s for s in fitting if s.min_rounds() <= max_iterations]
    if within:
        pick, note = within[0], ""
    else:
        cheap = [s for s in ranked if s.min_rounds() <= max_iterations] or ranked
        pick = cheap[0]
        note = (f"; no strategy for '{cls}' fits in {max_iterations} iteration(s)"
                f" ({', '.join(s.name for s in fitting) or 'none'}), so the cheapest that does")
    source = ("the model" if by == "model" else
              "the heuristic" + (" (the classify call failed)" if answer is None else
                                 f" (the model's answer {answer.strip()[:40]!r} names no class)"))
    agree = f", the heuristic says '{guess}'" if by == "model" else ""
    reason = (f"task classified as '{cls}' by {source}{agree}; chose {pick.name} (cost rank {pick.cost_rank}), "
              f"the cheapest of [{', '.join(s.name for s in within) or pick.name}]{note}")
    return Choice(pick.name, cls, by, guess, pick.cost_rank, [s.name for s in fitting],
                  msgspec.to_builtins(f), reason)
