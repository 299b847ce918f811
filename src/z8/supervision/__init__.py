"""Supervision trees: supervisors declared as data, restarting what crashes.

``supervisor(child(A), child(B), strategy="one_for_all", max_restarts=3, within=5)``
declares a tree; ``Runtime`` runs one under its root. Every start, crash, restart,
backoff and escalation is journaled in ``$system``.
"""

from ._runtime import Runtime, RuntimeHandle
from ._spec import Backoff, ChildSpec, RestartType, Strategy, SupervisorSpec, child, supervisor
from ._supervisor import StartChild, StopChild
from ._tree import TreeNode

__all__ = [
    "Backoff",
    "ChildSpec",
    "RestartType",
    "Runtime",
    "RuntimeHandle",
    "StartChild",
    "StopChild",
    "Strategy",
    "SupervisorSpec",
    "TreeNode",
    "child",
    "supervisor",
]
