"""What a policy answers about one effect: allow it, deny it, or hold it for approval.

The verdict is computed by the runtime (never by the agent) when a decision asks for an
effect, and it is journaled with the effect's intent, so the record shows which rule of
which policy version let the effect run, stopped it, or sent it to a human.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

__all__ = ["Allow", "Deny", "RequireApproval", "Verdict", "EffectRequest", "Gate"]


class Allow(msgspec.Struct, frozen=True, tag="allow"):
    """The effect may run."""

    rule: str = ""
    """The rule that decided (empty when nothing more specific than the default)."""
    policy_version: str = ""
    budgets: dict[str, float] = {}
    """Amounts reserved from budget accounts at admission (journaled with the intent)."""


class Deny(msgspec.Struct, frozen=True, tag="deny"):
    """The effect must not run; the agent receives ``EffectFailed(error=<error>)``."""

    reason: str
    rule: str = ""
    policy_version: str = ""
    error: str = "PolicyDenied"
    """What the agent receives the denial as: ``PolicyDenied`` or ``BudgetExceeded``."""


class RequireApproval(msgspec.Struct, frozen=True, tag="approval"):
    """The effect waits, parked and holding no task, until ``app.approve(effect_id, by=…)``.

    With ``timeout`` (seconds on the runtime clock), an approval that has not come by
    then is a denial. ``approvers`` names who may approve (empty: anyone the caller of
    ``approve`` vouches for); ``quorum`` is how many distinct approvals are needed.
    """

    approvers: tuple[str, ...] = ()
    quorum: int = 1
    timeout: float | None = None
    rule: str = ""
    policy_version: str = ""
    budgets: dict[str, float] = {}
    """Amounts reserved from budget accounts at admission (journaled with the intent)."""


Verdict = Allow | Deny | RequireApproval


class EffectRequest(msgspec.Struct, frozen=True):
    """What a gate is asked about: who wants which effect, with which request."""

    agent: str
    """The agent type's name (e.g. ``"Treasury"``), or ``"$jobs"`` for an enqueued job."""
    stream: str
    effect: str
    kind: str
    request: Any
    capability: str = ""
    """The capability the effect needs (its declared ``capability``, by default its name)."""
    effect_id: str = ""
    correlation_id: str | None = None
    """The run the effect belongs to (budgets ``per="run"`` are kept by it)."""
    policy_version: str = ""
    """The version the agent is pinned to (empty: none yet, judge by the current one)."""
    timeout: float | None = None
    """The effect's declared timeout (seconds): what a ``seconds`` budget reserves."""
    compensation: bool = False
    """A saga's compensation: granted wherever the effect it undoes is."""
    now: int = 0
    """The decision's journaled time (``ctx.now``, Unix ns): what budget periods count by."""


Gate = Callable[[EffectRequest], Verdict]
"""A policy's enforcement point: called by the runtime for every effect before it runs."""
