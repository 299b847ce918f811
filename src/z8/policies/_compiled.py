"""A policy prepared for evaluation: the grants, rules and budgets that can apply to an
(agent type, capability) pair worked out once, conditions turned into lookups.

The engine keeps one per adopted version, so judging an effect costs a dict lookup for
the pair's plan plus its conditions; the selectors of rules that can never match the
pair are not looked at again. Named lists of hashable values become sets.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from typing import Any, Final

from ._verdicts import Allow, Deny, EffectRequest, RequireApproval, Verdict

__all__ = ["CompiledPolicy", "lookup", "glob", "MISSING"]

MISSING: Final = object()
_ORDERING: Final = frozenset({">", ">=", "<", "<=", "==", "!="})
_OPS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
    "in": lambda a, b: a in b, "not in": lambda a, b: a not in b,
}


class _Condition:
    __slots__ = ("path", "field", "op", "test", "value", "text")

    def __init__(self, when: Any, lists: dict[str, Any]) -> None:
        self.field, self.op = when.field, when.op
        self.path = tuple(when.field.split("."))
        self.test = _OPS.get(when.op)
        value = when.value
        if isinstance(value, str) and value.startswith("@") and when.op in ("in", "not in"):
            value = lists.get(value[1:], ())
        elif isinstance(value, (list, tuple)) and when.op in ("in", "not in"):
            value = _as_set(value)
        self.value = value
        self.text = when.describe()

    def holds(self, request: Any) -> bool:
        found = lookup(request, self.path)
        if self.op == "exists":
            return found is not MISSING
        if self.op == "missing":
            return found is MISSING
        if found is MISSING:
            raise ValueError(f"the request has no field {self.field!r}")
        if isinstance(found, float) and not math.isfinite(found) and self.op in _ORDERING:
            raise ValueError(f"{self.field!r} is not a finite number")
        try:
            return self.test(found, self.value)  # type: ignore[misc]
        except TypeError:  # the value is never quoted: it may be personal data
            raise ValueError(f"{self.text}: the request's {self.field!r} is a {type(found).__name__}") from None


class _Plan:
    """What can apply to one (agent type, capability) pair."""

    __slots__ = ("granted", "instances", "rules", "budgets")

    def __init__(self, granted: bool, instances: tuple[str, ...], rules: list[tuple[Any, list[_Condition]]],
                 budgets: tuple[Any, ...]) -> None:
        self.granted = granted
        self.instances = instances
        self.rules = rules
        self.budgets = budgets


class CompiledPolicy:
    """``policy`` ready to judge requests; :meth:`evaluate` is :meth:`Policy.evaluate`."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.version: str = policy.version
        self._lists = {name: _as_set(values) for name, values in policy.lists.items()}
        self._rules = [(rule, [_Condition(w, self._lists) for w in rule.when]) for rule in policy.rules]
        self._plans: dict[tuple[str, str], _Plan] = {}

    def plan(self, agent: str, capability: str) -> _Plan:
        key = (agent, capability)
        plan = self._plans.get(key)
        if plan is None:
            policy = self.policy
            picked = [g for g in policy.grants if glob(g.agent, agent) and any(glob(c, capability) for c in g.capabilities)]
            plan = self._plans[key] = _Plan(
                any(g.instance is None for g in picked),
                tuple(g.instance for g in picked if g.instance is not None),
                [(rule, conditions) for rule, conditions in self._rules
                 if glob(rule.capability, capability) and glob(rule.agent, agent)],
                tuple(b for b in policy.budgets
                      if any(glob(a, agent) for a in b.agents) and any(glob(c, capability) for c in b.capabilities)),
            )
        return plan

    def evaluate(self, request: EffectRequest, capability: str) -> Verdict:
        version = self.version
        plan = self.plan(request.agent, capability)
        if not plan.granted and not any(glob(pattern, request.stream) for pattern in plan.instances):
            return Deny(f"no grant lets {request.agent} use {capability!r} (deny by default)", "default-deny", version)
        for rule, conditions in plan.rules:
            try:
                holds = all(condition.holds(request.request) for condition in conditions)
            except ValueError as error:
                return Deny(f"rule {rule.name!r} cannot be evaluated: {error} (fails closed)", rule.name, version)
            if not holds:
                continue
            if rule.then == "deny":
                return Deny(rule.reason or f"denied by rule {rule.name!r}", rule.name, version)
            if rule.then == "approval":
                return RequireApproval(rule.approvers, rule.quorum, rule.timeout, rule.name, version)
            return Allow(rule.name, version)
        return Allow(f"grant:{request.agent}:{capability}", version)


def glob(pattern: str, name: str) -> bool:
    """Whether ``name`` matches ``pattern`` (``"*"``, an exact name, or an fnmatch glob)."""
    return pattern == "*" or pattern == name or (any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(name, pattern))


def lookup(value: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in a Struct or dict (nested), or MISSING."""
    for part in path:
        if isinstance(value, dict):
            value = value.get(part, MISSING)
        elif isinstance(value, (str, bytes, int, float)) or value is None:
            return MISSING
        else:
            value = getattr(value, part, MISSING)
        if value is MISSING:
            return MISSING
    return value


def _as_set(values: Any) -> Any:
    try:
        return frozenset(values)
    except TypeError:  # unhashable members: a tuple, scanned
        return tuple(values)
