"""Budget accounts: what each account has spent and holds, folded from the journal.

An account is a budget's name (``per="pool"``), or ``name@stream`` / ``name@run`` for
per-agent and per-run budgets. Its figures come from effect records only:

- ``EffectIntended.budgets`` *holds* the amounts reserved at admission;
- ``EffectSucceeded.charged`` *spends* the real cost (the reservation when not given)
  and releases the hold;
- a final ``EffectFailed`` (denied, expired, failed, settled as not done) releases it;
- an effect dead-lettered, unknown or stuck keeps its hold: it may still have cost.

Because the figures are a fold over journaled records, a crash neither resets an account
nor charges an effect twice: an effect has one final outcome, and replaying the log
gives the same totals. Holds taken at admission are counted at once (before their intent
is committed), so two decisions in flight cannot both take the last of a budget; a
decision whose append is refused gives its holds back (:meth:`BudgetBook.discard`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from ._policy import Budget, Policy
from ._records import BudgetsCheckpoint
from ._verdicts import Deny, EffectRequest

__all__ = ["BudgetBook", "BudgetBalance"]


class BudgetBalance(msgspec.Struct, frozen=True):
    """One account's figures: ``spent`` (charged), ``held`` (reserved, outcome not yet
    known) and what is ``available`` under ``limit``."""

    account: str
    budget: str
    unit: str
    limit: float
    spent: float
    held: float

    @property
    def available(self) -> float:
        return max(self.limit - self.spent - self.held, 0.0)


class BudgetBook:
    """The accounts of every budget, folded from effect records (see the module doc)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self.held: dict[str, float] = {}
        self._open: dict[str, dict[str, float]] = {}  # effect id → its holds

    # --- admission ------------------------------------------------------------------------

    def admit(self, budgets: Sequence[Budget], version: str, request: EffectRequest) -> dict[str, float] | Deny:
        """The holds ``request`` needs under ``budgets`` (those of policy ``version`` that
        pick it), or the denial when one would go past its limit (or its amount cannot be
        read: fails closed)."""
        holds: dict[str, float] = {}
        for budget in budgets:
            account = budget.account(request)
            try:
                amount = budget.amount(request)
            except ValueError as error:
                return Deny(f"budget {budget.name!r} cannot price this effect: {error} (fails closed)",
                            f"budget:{budget.name}", version, "BudgetExceeded")
            used = self.spent.get(account, 0.0) + self.held.get(account, 0.0) + holds.get(account, 0.0)
            if used + amount > budget.limit:
                return Deny(_exceeded(budget, account, amount, self.spent.get(account, 0.0),
                                      self.held.get(account, 0.0)),
                            f"budget:{budget.name}", version, "BudgetExceeded")
            holds[account] = holds.get(account, 0.0) + amount
        return holds

    def hold(self, effect_id: str, holds: dict[str, float]) -> bool:
        """Count ``holds`` for ``effect_id`` once; False when it held already (or nothing)."""
        if not holds or effect_id in self._open:
            return False
        self._open[effect_id] = dict(holds)
        for account, amount in holds.items():
            self.held[account] = self.held.get(account, 0.0) + amount
        return True

    def discard(self, effect_id: str) -> None:
        """Give back the holds of an intent that was never journaled."""
        self._release(effect_id)

    # --- the fold -------------------------------------------------------------------------

    def observe(self, record: Any) -> None:
        """Fold one effect record, in log order (others are ignored)."""
        name = type(record).__name__
        if name == "EffectIntended":
            self.hold(record.effect_id, record.budgets)
        elif name == "EffectSucceeded":
            holds = self._release(record.effect_id)
            if holds is not None:
                for account, amount in (record.charged or holds).items():
                    self.spent[account] = self.spent.get(account, 0.0) + amount
        elif name == "EffectFailed" and not record.exhausted:
            self._release(record.effect_id)

    def _release(self, effect_id: str) -> dict[str, float] | None:
        holds = self._open.pop(effect_id, None)
        for account, amount in (holds or {}).items():
            left = self.held.get(account, 0.0) - amount
            if left > 1e-9:
                self.held[account] = left
            else:
                self.held.pop(account, None)
        return holds

    def checkpoint(self, position: int) -> BudgetsCheckpoint:
        """The accounts as a record (see :class:`BudgetsCheckpoint`)."""
        return BudgetsCheckpoint(position, dict(self.spent), {k: dict(v) for k, v in self._open.items()})

    def restore(self, checkpoint: BudgetsCheckpoint) -> None:
        """Start from ``checkpoint`` (the records after its position are folded next)."""
        self.spent = dict(checkpoint.spent)
        self.held, self._open = {}, {}
        for effect_id, holds in checkpoint.open.items():
            self.hold(effect_id, holds)

    # --- reading --------------------------------------------------------------------------

    def balances(self, policy: Policy | None) -> list[BudgetBalance]:
        """Every account with activity, with its budget's limit under ``policy``."""
        budgets = {b.name: b for b in (policy.budgets if policy is not None else ())}
        out = []
        for account in sorted(set(self.spent) | set(self.held)):
            name = budget_of(account)
            budget = budgets.get(name)
            out.append(BudgetBalance(account, name, budget.unit if budget else "?",
                                     budget.limit if budget else float("nan"),
                                     self.spent.get(account, 0.0), self.held.get(account, 0.0)))
        return out


def charges(policy: Policy, holds: dict[str, float], result: Any, elapsed: float | None) -> dict[str, float]:
    """The real cost of a success for each account that held for it."""
    budgets = {b.name: b for b in policy.budgets}
    out: dict[str, float] = {}
    for account, reserved in holds.items():
        budget: Budget | None = budgets.get(budget_of(account))
        out[account] = budget.cost(reserved, result, elapsed) if budget is not None else reserved
    return out


def budget_of(account: str) -> str:
    """The budget an account belongs to (``name``, ``name@scope``, ``name[window]``…)."""
    return account.split("@", 1)[0].split("[", 1)[0]


def _exceeded(budget: Budget, account: str, amount: float, spent: float, held: float) -> str:
    return (f"budget {account!r} ({budget.unit}): this effect needs {amount:g}, but {spent:g} is spent and "
            f"{held:g} held of a limit of {budget.limit:g}")
