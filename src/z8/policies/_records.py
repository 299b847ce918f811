"""The journal records of policy changes (stream ``$policies``)."""

from __future__ import annotations

import msgspec

__all__ = ["PolicyAdopted", "BudgetsCheckpoint", "POLICY_STREAM", "BUDGETS_STREAM", "POLICY_RECORD_TYPES"]

POLICY_STREAM = "$policies"
BUDGETS_STREAM = "$budgets"


class PolicyAdopted(msgspec.Struct, frozen=True):
    """Policy ``version`` became the one new agents are judged by. ``policy`` is its
    canonical encoding (``Policy.decode``), so every version ever in force can be read
    back from the journal; ``digest`` names that content."""

    name: str
    version: str
    digest: str
    policy: bytes
    by: str
    reason: str = ""
    previous: str = ""
    """The version in force before (empty for the first)."""


class BudgetsCheckpoint(msgspec.Struct, frozen=True):
    """The budget accounts as folded up to global ``position`` (stream ``$budgets``),
    written at a clean stop so the next start folds only what came after. Derived data:
    the log alone gives the same figures."""

    position: int
    spent: dict[str, float]
    open: dict[str, dict[str, float]]
    """Holds of effects without a final outcome: effect id → account → amount."""


POLICY_RECORD_TYPES: dict[str, type[msgspec.Struct]] = {
    "z8.PolicyAdopted": PolicyAdopted, "z8.BudgetsCheckpoint": BudgetsCheckpoint,
}
