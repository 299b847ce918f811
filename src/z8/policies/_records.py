"""The journal records of policy changes (stream ``$policies``)."""

from __future__ import annotations

import msgspec

__all__ = ["PolicyAdopted", "POLICY_STREAM", "POLICY_RECORD_TYPES"]

POLICY_STREAM = "$policies"


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


POLICY_RECORD_TYPES: dict[str, type[msgspec.Struct]] = {"z8.PolicyAdopted": PolicyAdopted}
