"""A policy as data: capability grants (deny by default), rules, budgets, and a version.

Evaluation order for one effect (:meth:`Policy.evaluate`):

1. **Grants.** Some grant must give the agent type (and, when the grant names one, the
   instance) the effect's capability; otherwise ``Deny`` by the rule ``default-deny``.
   A saga's compensation is granted wherever the effect it undoes is.
2. **Rules**, in order; the first whose selectors match and whose every condition holds
   decides: ``allow``, ``deny`` or ``approval``. A condition naming a field the request
   does not have fails closed (the effect is denied, saying which rule and field).
3. No rule matched: ``Allow`` by the grant.
4. **Budgets** (for anything not denied): see :mod:`z8.policies._budgets`.

Everything here is pure: no clock, no I/O. A policy is validated when built, so a
policy that loaded is one the engine can evaluate.
"""

from __future__ import annotations

import math
import time
from hashlib import blake2b
from typing import Any, Final, Literal

import msgspec

from z8.errors import InvalidPolicy

from ._compiled import MISSING, CompiledPolicy, lookup
from ._verdicts import EffectRequest, Verdict

__all__ = ["Policy", "Grant", "Rule", "When", "Budget", "OPERATORS"]

OPERATORS: Final = (">", ">=", "<", "<=", "==", "!=", "in", "not in", "exists", "missing")
UNITS: Final = ("tokens", "money", "calls", "seconds")


class When(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A condition on the effect's request: ``field op value``.

    ``field`` is a dotted path into the request (``"amount"``, ``"beneficiary.country"``).
    ``value`` may name one of the policy's ``lists`` as ``"@name"`` (for ``in``/``not in``).
    """

    field: str
    op: str
    value: Any = None

    def describe(self) -> str:
        return f"{self.field} {self.op}" + ("" if self.op in ("exists", "missing") else f" {self.value!r}")


class Grant(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Agents of type ``agent`` (``"*"``: any) may use ``capabilities`` (globs allowed,
    e.g. ``"bank.*"``); with ``instance``, only the agents whose stream matches it."""

    agent: str
    capabilities: tuple[str, ...]
    instance: str | None = None


class Rule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``then`` (``allow`` / ``deny`` / ``approval``) for the effects the selectors pick
    when every ``when`` condition holds. Selectors are globs; ``"*"`` picks everything."""

    name: str
    then: Literal["allow", "deny", "approval"]
    capability: str = "*"
    agent: str = "*"
    when: tuple[When, ...] = ()
    reason: str = ""
    """For ``deny``: what the agent and the record are told."""
    approvers: tuple[str, ...] = ()
    quorum: int = 1
    timeout: float | None = None
    """For ``approval``: seconds on the runtime clock before an unanswered approval is a denial."""


class Budget(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A limit on what the picked effects may cost, reserved before and charged after.

    ``per``: ``pool`` (one account shared by every picked agent), ``agent`` (an account
    per agent instance) or ``run`` (an account per correlation id). ``reserve``: what is
    held at admission, a number or a dotted path into the request (default: 1 for
    ``calls``, the effect's timeout for ``seconds``). ``charge``: the real cost once it
    succeeded, a dotted path into the result, ``"elapsed"`` (seconds it took), or None
    (the reserved amount; default ``"elapsed"`` for ``seconds``). A failure releases the
    reservation; an effect whose outcome is unknown keeps it held until it is known.
    """

    name: str
    unit: Literal["tokens", "money", "calls", "seconds"]
    limit: float
    per: Literal["pool", "agent", "run"] = "pool"
    agents: tuple[str, ...] = ("*",)
    capabilities: tuple[str, ...] = ("*",)
    reserve: float | str | None = None
    charge: str | None = None
    period: float | None = None
    """Seconds of a window (86400: a day, UTC-aligned): each window has its own account,
    chosen by the decision's journaled time (``ctx.now``), never the wall clock. None:
    one account for all time."""

    def account(self, request: EffectRequest) -> str:
        """The account this request draws on: ``name``, ``name@stream`` or ``name@run``,
        with ``[window start, UTC]`` appended when the budget has a ``period``."""
        if self.per == "agent":
            account = f"{self.name}@{request.stream}"
        elif self.per == "run":
            account = f"{self.name}@{request.correlation_id or request.stream}"
        else:
            account = self.name
        if self.period is None:
            return account
        start = int(request.now // 1_000_000_000 // self.period * self.period)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
        return f"{account}[{stamp}]"

    def amount(self, request: EffectRequest) -> float:
        """What admission reserves for ``request`` (ValueError when it cannot be read)."""
        if isinstance(self.reserve, (int, float)):
            return float(self.reserve)
        if isinstance(self.reserve, str):
            return _number(_lookup(request.request, self.reserve), f"request field {self.reserve!r}")
        if self.unit == "calls":
            return 1.0
        return float(request.timeout or 0.0)  # seconds: at most the timeout

    def cost(self, reserved: float, result: Any, elapsed: float | None) -> float:
        """The real cost of a success (the reservation when it cannot be read, or when the
        time was not measured: an outcome learnt after a restart)."""
        charge = self.charge if self.charge is not None else ("elapsed" if self.unit == "seconds" else None)
        if charge is None:
            return reserved
        if charge == "elapsed":
            return reserved if elapsed is None else elapsed
        try:
            return _number(_lookup(result, charge), f"result field {charge!r}")
        except ValueError:
            return reserved


class Policy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What agents may do, as data: versioned, journaled when adopted, deny by default.

    Build it in Python (``Policy(name=..., version=..., grants=[...], rules=[...])``) or
    load it from TOML with :func:`z8.policies.load_policy`. Invalid content raises
    ``InvalidPolicy`` when built. ``version`` names this content: adopting different
    content under a version already adopted is refused.
    """

    name: str
    version: str
    grants: tuple[Grant, ...] = ()
    rules: tuple[Rule, ...] = ()
    budgets: tuple[Budget, ...] = ()
    lists: dict[str, tuple[Any, ...]] = {}
    """Named lists a condition can use as ``"@name"`` (approved counterparties, …)."""
    description: str = ""

    def __post_init__(self) -> None:
        problems = validate(self)
        if problems:
            raise InvalidPolicy(f"policy {self.name!r} version {self.version!r}: {problems[0][1]}")

    @property
    def digest(self) -> str:
        """BLAKE2b-256 (hex) of the canonical encoding: two policies with the same digest
        are the same policy."""
        return blake2b(self.encode(), digest_size=32).hexdigest()

    def encode(self) -> bytes:
        """The canonical encoding (as decoded back: ``100`` and ``100.0`` encode alike)."""
        return _ENCODE(_DECODE(_ENCODE(self)))

    @classmethod
    def decode(cls, data: bytes) -> Policy:
        return _DECODE(data)

    def evaluate(self, request: EffectRequest) -> Verdict:
        """The verdict of this policy on ``request`` (budgets not included: they need the
        accounts, which the engine keeps; the engine also keeps this policy compiled)."""
        return CompiledPolicy(self).evaluate(request, capability_of(request))


_ENCODE = msgspec.msgpack.Encoder(order="deterministic").encode
_DECODE = msgspec.msgpack.Decoder(Policy).decode


# --- validation -------------------------------------------------------------------------


Problem = tuple[tuple[Any, ...], str]
"""(where: a path like ("rules", 2, "when", 0, "op"), why)."""


def validate(policy: Policy) -> list[Problem]:
    """Every problem with ``policy``, each with where it is (for line numbers in TOML)."""
    problems: list[Problem] = []
    if not isinstance(policy.name, str) or not policy.name:
        problems.append((("name",), "name must be a non-empty string"))
    if not isinstance(policy.version, str) or not policy.version:
        problems.append((("version",), "version must be a non-empty string (e.g. '2026-11-22.1')"))
    for field in ("grants", "rules", "budgets"):
        if not isinstance(getattr(policy, field), (list, tuple)):
            problems.append(((field,), f"{field} must be a list"))
            return problems
    for i, grant in enumerate(policy.grants):
        if not isinstance(grant.capabilities, (list, tuple)):
            problems.append((("grants", i, "capabilities"), f"grant #{i + 1}: capabilities must be a list of names"))
            continue
        if not grant.agent:
            problems.append((("grants", i, "agent"), f"grant #{i + 1}: agent must name an agent type or '*'"))
        if not grant.capabilities or not all(isinstance(c, str) and c for c in grant.capabilities):
            problems.append((("grants", i, "capabilities"), f"grant #{i + 1}: capabilities must list capability names"))
    names: set[str] = set()
    for i, rule in enumerate(policy.rules):
        problems.extend(_rule_problems(policy, i, rule, names))
    accounts: set[str] = set()
    for i, budget in enumerate(policy.budgets):
        problems.extend(_budget_problems(i, budget, accounts))
    for name, values in policy.lists.items():
        if not isinstance(values, (list, tuple)):
            problems.append((("lists", name), f"list {name!r} must be an array"))
    return problems


def _rule_problems(policy: Policy, i: int, rule: Rule, names: set[str]) -> list[Problem]:
    where, label = ("rules", i), f"rule {rule.name!r}" if rule.name else f"rule #{i + 1}"
    out: list[Problem] = []
    if not rule.name:
        out.append(((*where, "name"), f"rule #{i + 1}: name must be a non-empty string"))
    elif rule.name in names:
        out.append(((*where, "name"), f"{label}: two rules share this name; rule names must be unique"))
    names.add(rule.name)
    if not isinstance(rule.approvers, (list, tuple)) or not isinstance(rule.when, (list, tuple)):
        out.append(((*where, "approvers"), f"{label}: approvers and when must be lists"))
        return out
    if rule.then not in ("allow", "deny", "approval"):
        out.append(((*where, "then"), f"{label}: then must be 'allow', 'deny' or 'approval', got {rule.then!r}"))
    for j, when in enumerate(rule.when):
        if when.op not in OPERATORS:
            out.append(((*where, "when", j, "op"), f"{label}: unknown operator {when.op!r} (use one of {', '.join(OPERATORS)})"))
        elif when.op in ("in", "not in"):
            value = when.value
            if isinstance(value, str) and value.startswith("@"):
                if value[1:] not in policy.lists:
                    out.append(((*where, "when", j, "value"), f"{label}: {value!r} names no list in [lists]"))
            elif not isinstance(value, (list, tuple)):
                out.append(((*where, "when", j, "value"), f"{label}: {when.op!r} needs an array or '@list', got {value!r}"))
        if not when.field:
            out.append(((*where, "when", j, "field"), f"{label}: a condition needs a field"))
    if rule.then == "approval":
        if not isinstance(rule.quorum, int) or rule.quorum < 1:
            out.append(((*where, "quorum"), f"{label}: quorum must be an integer >= 1"))
        elif rule.approvers and rule.quorum > len(set(rule.approvers)):
            out.append(((*where, "quorum"), f"{label}: quorum {rule.quorum} exceeds its {len(set(rule.approvers))} approvers"))
        if rule.timeout is not None and not (isinstance(rule.timeout, (int, float)) and 0 < rule.timeout < math.inf):
            out.append(((*where, "timeout"), f"{label}: timeout must be seconds > 0"))
    elif rule.approvers or rule.timeout is not None:
        out.append(((*where, "then"), f"{label}: approvers/timeout only apply to then = 'approval'"))
    return out


def _budget_problems(i: int, budget: Budget, accounts: set[str]) -> list[Problem]:
    where, label = ("budgets", i), f"budget {budget.name!r}" if budget.name else f"budget #{i + 1}"
    out: list[Problem] = []
    if not budget.name or "@" in budget.name or "[" in budget.name:
        out.append(((*where, "name"), f"budget #{i + 1}: name must be a non-empty string without '@' or '['"))
    elif budget.name in accounts:
        out.append(((*where, "name"), f"{label}: two budgets share this name"))
    accounts.add(budget.name)
    if not isinstance(budget.agents, (list, tuple)) or not isinstance(budget.capabilities, (list, tuple)) \
            or not budget.agents or not budget.capabilities:
        out.append(((*where, "capabilities"), f"{label}: agents and capabilities must be non-empty lists"))
    if budget.unit not in UNITS:
        out.append(((*where, "unit"), f"{label}: unit must be one of {', '.join(UNITS)}, got {budget.unit!r}"))
    if budget.per not in ("pool", "agent", "run"):
        out.append(((*where, "per"), f"{label}: per must be 'pool', 'agent' or 'run', got {budget.per!r}"))
    if not (isinstance(budget.limit, (int, float)) and 0 <= budget.limit < math.inf):
        out.append(((*where, "limit"), f"{label}: limit must be a finite number >= 0"))
    if budget.unit in ("tokens", "money") and budget.reserve is None:
        out.append(((*where, "reserve"), f"{label}: a {budget.unit} budget says what to reserve (a number or a request field)"))
    if budget.period is not None and not (isinstance(budget.period, (int, float)) and 1 <= budget.period < math.inf):
        out.append(((*where, "period"), f"{label}: period must be seconds >= 1 (86400: a day)"))
    if isinstance(budget.reserve, (int, float)) and not (0 <= budget.reserve < math.inf):
        out.append(((*where, "reserve"), f"{label}: reserve must be a finite number >= 0"))
    return out


# --- helpers ------------------------------------------------------------------------------


def capability_of(request: EffectRequest) -> str:
    """The capability checked: a compensation needs what the effect it undoes needed."""
    capability = request.capability or request.effect
    if request.compensation and capability.endswith(".compensate"):
        return capability[: -len(".compensate")]
    return capability


def _lookup(value: Any, path: str) -> Any:
    found = lookup(value, tuple(path.split(".")))
    if found is MISSING:
        raise ValueError(f"no field {path!r}")
    return found


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        # the value is never quoted: it may be personal data
        raise ValueError(f"{what} is not an amount >= 0 (a {type(value).__name__})")
    return float(value)
