"""Process settings for a host of many concurrent agents.

CPython's cyclic garbage collector runs a young collection every 700 net allocations of
container objects and, every so often, a full one that walks every live object. A fleet
of thousands of concurrent runs keeps hundreds of thousands of live objects (each run's
actor, state, mailbox, pending calls) and promotes many short-lived in-flight objects
(coroutines, futures, requests) past the young generations, so full collections come
often and each walks the whole fleet: in ``benchmarks/ai.py`` (2,000 to 10,000
concurrent runs) the collector takes 0.4-0.6 ms of every agent step, a third of the
runtime's CPU. Reference counting frees almost everything the runtime allocates; the
collector is only needed for cycles, which it still finds with larger thresholds.

The thresholds are the process's, not the runtime's: z8 never changes them on its own.
Call :func:`tune_gc` once in the process's entry point, as the application's owner.
"""

from __future__ import annotations

import gc

from z8.errors import InvalidArgument

__all__ = ["tune_gc", "FLEET_GC_THRESHOLDS"]

FLEET_GC_THRESHOLDS = (20_000, 20, 20)
"""Young collections every 20,000 net allocations (not 700); the middle and full ones
20 times rarer each (not 10). Measured in ``benchmarks/ai.py``: the collector's share of
a step falls from about 0.5 ms to under 0.1 ms; cyclic garbage waits longer, a few MB."""


def tune_gc(thresholds: tuple[int, int, int] = FLEET_GC_THRESHOLDS) -> tuple[int, int, int]:
    """Set the process's garbage-collector thresholds for a fleet of concurrent agents
    (``gc.set_threshold``) and return the previous ones (to undo:
    ``gc.set_threshold(*previous)``). Call it from the process's entry point: it applies
    to the whole interpreter, every library in it included."""
    if len(thresholds) != 3 or not all(isinstance(t, int) and t > 0 for t in thresholds):
        raise InvalidArgument(f"tune_gc takes three positive int thresholds, got {thresholds!r}")
    previous = gc.get_threshold()
    gc.set_threshold(*thresholds)
    return previous  # type: ignore[return-value]
