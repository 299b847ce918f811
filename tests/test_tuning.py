"""z8.tune_gc: the process's collector thresholds for a fleet, set only when asked."""

from __future__ import annotations

import gc

import pytest

import z8
from z8.app import FLEET_GC_THRESHOLDS
from z8.errors import InvalidArgument


def test_tune_gc_sets_the_fleet_thresholds_and_returns_the_previous_ones() -> None:
    before = gc.get_threshold()
    try:
        assert z8.tune_gc() == before
        assert gc.get_threshold() == FLEET_GC_THRESHOLDS
        assert z8.tune_gc((1000, 5, 5)) == FLEET_GC_THRESHOLDS and gc.get_threshold() == (1000, 5, 5)
    finally:
        gc.set_threshold(*before)


@pytest.mark.parametrize("bad", [(0, 10, 10), (700, 10), (700.0, 10, 10), "700,10,10"])
def test_tune_gc_refuses_thresholds_that_are_not_three_positive_ints(bad: object) -> None:
    before = gc.get_threshold()
    with pytest.raises(InvalidArgument, match="three positive int thresholds"):
        z8.tune_gc(bad)  # type: ignore[arg-type]
    assert gc.get_threshold() == before


def test_opening_an_application_leaves_the_thresholds_alone(tmp_path) -> None:
    import asyncio

    before = gc.get_threshold()

    async def main() -> None:
        async with z8.Application(z8.Router(), tmp_path / "journal"):
            assert gc.get_threshold() == before

    asyncio.run(main())
    assert gc.get_threshold() == before
