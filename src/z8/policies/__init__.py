"""Policies: the verdicts a policy gives about an effect, enforced by the runtime.

The gate is authority, not advice: an agent's decision cannot run an effect its
application's gate denies or holds for approval.
"""

from ._verdicts import Allow, Deny, EffectRequest, Gate, RequireApproval, Verdict

__all__ = ["Allow", "Deny", "RequireApproval", "Verdict", "EffectRequest", "Gate"]
