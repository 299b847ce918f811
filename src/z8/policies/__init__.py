"""Policies: what agents may do, enforced by the runtime before any effect runs.

The gate is authority, not advice: an agent's decision cannot run an effect its
application's policy denies or holds for approval. A :class:`Policy` is data with a
version (grants, deny by default; rules on the effect's request; budgets), loaded from
Python or TOML (:func:`load_policy`), adopted as a journaled act, and every verdict is
journaled with the effect: the rule that decided it and the policy version.
"""

from ._budgets import BudgetBalance
from ._engine import PolicyEngine
from ._load import load_policy
from ._policy import OPERATORS, Budget, Grant, Policy, Rule, When
from ._records import PolicyAdopted
from ._verdicts import Allow, Deny, EffectRequest, Gate, RequireApproval, Verdict

__all__ = [
    "Policy", "Grant", "Rule", "When", "Budget", "OPERATORS", "load_policy",
    "PolicyEngine", "PolicyAdopted", "BudgetBalance",
    "Allow", "Deny", "RequireApproval", "Verdict", "EffectRequest", "Gate",
]
