"""The test kit shipped to z8 users.

- :class:`JournalConformance`: the journal contract as a pytest suite; subclass it to
  check your own ``Journal`` backend (importing it needs pytest).
- :func:`tamper`, :func:`flip_byte`, :func:`reseal`, :func:`stored_record`: reach under
  the contract to prove ``verify()`` catches what an attacker with file access could do.
- :func:`given`: given/when/then for agents, no runtime needed.
- :class:`FakeClock`: what agents see as ``ctx.now``, moved only by the test.
- pytest fixtures (registered automatically when z8 is installed): ``z8_journal`` (an
  LMDB journal in ``tmp_path``), ``z8_memory_journal``, ``z8_clock`` (a FakeClock) and
  ``z8_app`` (a factory of Applications on a temporary journal with that clock).
"""

from typing import Any

from ._agents import Outcome, Scenario, given
from ._clock import FakeClock
from ._journal_kit import flip_byte, reseal, stored_record, tamper

__all__ = [
    "given",
    "FakeClock",
    "Scenario",
    "Outcome",
    "JournalConformance",
    "Opened",
    "Deposited",
    "Withdrawn",
    "conformance_types",
    "flip_byte",
    "reseal",
    "stored_record",
    "tamper",
]

_NEEDS_PYTEST = {"JournalConformance", "Opened", "Deposited", "Withdrawn", "conformance_types"}


def __getattr__(name: str) -> Any:
    # The conformance suite imports pytest; the tamper helpers must work without it
    # (the demo uses them on a machine that installed z8 without its dev extra).
    if name in _NEEDS_PYTEST:
        from . import _conformance

        return getattr(_conformance, name)
    raise AttributeError(f"module 'z8.testing' has no attribute {name!r}")
