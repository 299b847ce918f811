"""Loading a policy from TOML, with the line and the reason for anything malformed.

The file mirrors :class:`~z8.policies.Policy`::

    name = "lending"
    version = "2026-11-22.1"

    [lists]
    sanctioned = ["KP", "IR"]

    [[grants]]
    agent = "Loan"
    capabilities = ["credit.*", "loan.disburse"]

    [[rules]]
    name = "large-loan"
    capability = "loan.disburse"
    when = ["amount > 50000"]            # or [{ field = "amount", op = ">", value = 50000 }]
    then = "approval"
    approvers = ["risk-1", "risk-2"]
    timeout = 86400

    [[budgets]]
    name = "disbursed-today"
    unit = "money"
    limit = 1_000_000
    capabilities = ["loan.disburse"]
    reserve = "amount"

A condition string is ``field op value`` where ``op`` is one of
:data:`~z8.policies.OPERATORS` and ``value`` a TOML value or ``@list``.
"""

from __future__ import annotations

import re
import tomllib
from types import SimpleNamespace
from pathlib import Path
from typing import Any

import msgspec

from z8.errors import InvalidPolicy

from ._policy import OPERATORS, Policy, validate

__all__ = ["load_policy"]

_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s+(not in|in|exists|missing|>=|<=|==|!=|>|<)(?:\s+(.+?))?\s*$")
_PATH = re.compile(r"\$((?:\.[A-Za-z_]\w*|\[\d+\]|\[\"[^\"]*\"\])*)")


def load_policy(source: str | Path) -> Policy:
    """The policy in a TOML file (a ``Path``, or a ``str`` path ending in ``.toml``) or in
    TOML text. Raises ``InvalidPolicy`` naming the file, the line and the reason."""
    if isinstance(source, Path) or (isinstance(source, str) and source.endswith(".toml") and "\n" not in source):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise InvalidPolicy(f"cannot read policy file {str(path)!r}: {error.strerror or error}") from None
        label = str(path)
    elif isinstance(source, str):
        text, label = source, "<policy>"
    else:
        raise InvalidPolicy(f"load_policy takes a TOML path or TOML text, got {type(source).__name__}")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InvalidPolicy(f"{label}: {error}") from None
    try:
        raw = _conditions(raw)
    except _Bad as bad:
        raise InvalidPolicy(f"{label} line {_locate(text, bad.where)}: {bad.reason}") from None
    return _build(raw, text, label)


def _build(raw: dict[str, Any], text: str, label: str) -> Policy:
    try:
        # built without validation first, so a problem can be located before raising
        policy = msgspec.convert(raw, _Unchecked)
    except msgspec.ValidationError as error:
        message = str(error)
        match = _PATH.search(message)
        where = _parse_path(match.group(1)) if match else ()
        unknown = re.search(r"unknown field `([^`]*)`", message)
        if unknown:
            where = (*where, unknown.group(1))
        reason = message.split(" - at ")[0]
        raise InvalidPolicy(f"{label} line {_locate(text, where)}: {reason} (at {match.group(0) if match else '$'})") from None
    checked = msgspec.structs.asdict(policy)
    problems = validate(_as_policy_unchecked(checked))
    if problems:
        where, reason = problems[0]
        raise InvalidPolicy(f"{label} line {_locate(text, where)}: {reason}")
    return msgspec.convert(raw, Policy)


class _Bad(Exception):
    def __init__(self, where: tuple[Any, ...], reason: str) -> None:
        self.where, self.reason = where, reason


def _conditions(raw: dict[str, Any]) -> dict[str, Any]:
    """Turn condition strings (``"amount > 50000"``) into ``{field, op, value}`` tables."""
    rules = raw.get("rules")
    if not isinstance(rules, list):
        return raw
    for i, rule in enumerate(rules):
        when = rule.get("when") if isinstance(rule, dict) else None
        if isinstance(when, (str, dict)):
            when = rule["when"] = [when]
        if not isinstance(when, list):
            continue
        for j, cond in enumerate(when):
            if isinstance(cond, str):
                when[j] = _parse_condition(cond, ("rules", i, "when", j))
    return raw


def _parse_condition(text: str, where: tuple[Any, ...]) -> dict[str, Any]:
    match = _CONDITION.match(text)
    if match is None:
        raise _Bad(where, f"condition {text!r} is not 'field op value' (op one of {', '.join(OPERATORS)})")
    field, op, rest = match.groups()
    if op in ("exists", "missing"):
        if rest:
            raise _Bad(where, f"condition {text!r}: {op!r} takes no value")
        return {"field": field, "op": op}
    if not rest:
        raise _Bad(where, f"condition {text!r} has no value")
    if rest.startswith("@"):
        return {"field": field, "op": op, "value": rest}
    try:
        value = tomllib.loads(f"v = {rest}")["v"]
    except tomllib.TOMLDecodeError:
        raise _Bad(where, f"condition {text!r}: {rest!r} is not a TOML value (quote strings)") from None
    return {"field": field, "op": op, "value": value}


def _parse_path(path: str) -> tuple[Any, ...]:
    parts: list[Any] = []
    for token in re.findall(r"\.([A-Za-z_]\w*)|\[(\d+)\]|\[\"([^\"]*)\"\]", path):
        name, index, key = token
        parts.append(name or (int(index) if index else key))
    return tuple(parts)


def _locate(text: str, where: tuple[Any, ...]) -> int:
    """The best line number for ``where`` (a path into the policy), 1-based."""
    lines = text.splitlines()
    if not where:
        return 1
    head, rest = where[0], where[1:]
    start, end = 0, len(lines)
    if rest and isinstance(rest[0], int):
        header = re.compile(rf"^\s*\[\[\s*{re.escape(head)}\s*\]\]")
        found = [n for n, line in enumerate(lines) if header.match(line)]
        if len(found) > rest[0]:
            start = found[rest[0]]
            end = next((n for n in range(start + 1, len(lines)) if lines[n].lstrip().startswith("[")), len(lines))
            key = next((k for k in rest[1:] if isinstance(k, str)), None)
            if key is None:
                return start + 1
            return _key_line(lines, key, start, end) or start + 1
    elif rest and isinstance(rest[0], str):
        table = re.compile(rf"^\s*\[\s*{re.escape(head)}\s*\]")
        at = next((n for n, line in enumerate(lines) if table.match(line)), None)
        if at is not None:
            return _key_line(lines, rest[0], at, len(lines)) or at + 1
    return _key_line(lines, head, 0, len(lines)) or 1


def _key_line(lines: list[str], key: str, start: int, end: int) -> int | None:
    pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
    return next((n + 1 for n in range(start, end) if pattern.match(lines[n])), None)


class _Unchecked(msgspec.Struct, forbid_unknown_fields=True):
    """Policy's shape without its validation (so problems can be located first)."""

    name: str
    version: str
    grants: list[_Grant] = []
    rules: list[_Rule] = []
    budgets: list[_Budget] = []
    lists: dict[str, list[Any]] = {}
    description: str = ""


class _When(msgspec.Struct, forbid_unknown_fields=True):
    field: str
    op: str
    value: Any = None


class _Grant(msgspec.Struct, forbid_unknown_fields=True):
    agent: str
    capabilities: list[str]
    instance: str | None = None


class _Rule(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    then: str
    capability: str = "*"
    agent: str = "*"
    when: list[_When] = []
    reason: str = ""
    approvers: list[str] = []
    quorum: int = 1
    timeout: float | None = None


class _Budget(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    unit: str
    limit: float
    per: str = "pool"
    agents: list[str] = msgspec.field(default_factory=lambda: ["*"])
    capabilities: list[str] = msgspec.field(default_factory=lambda: ["*"])
    reserve: float | str | None = None
    charge: str | None = None
    period: float | None = None


def _as_policy_unchecked(fields: dict[str, Any]) -> Any:
    """The policy's fields as an object :func:`validate` can inspect (validation of a real
    Policy raises at the first problem, before it can be located)."""
    return SimpleNamespace(**fields)
