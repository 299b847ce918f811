"""pytest plugin (entry point ``pytest11``): fixtures for tests of z8 applications."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from pathlib import Path

import pytest

from z8.journal import Journal, open_journal, open_memory_journal

from ._clock import FakeClock


@pytest.fixture
def z8_journal(tmp_path: Path) -> Iterator[Journal]:
    """A real LMDB journal in a temporary directory (``durability="fast"``: tests need
    crash safety, not power-loss safety), closed after the test."""
    journal = open_journal(tmp_path / "z8-journal", durability="fast")
    yield journal
    journal.close()


@pytest.fixture
def z8_memory_journal() -> Iterator[Journal]:
    """An in-memory journal, closed after the test."""
    journal = open_memory_journal()
    yield journal
    journal.close()


@pytest.fixture
def z8_clock() -> FakeClock:
    """A fake clock (Unix ns) that moves only when the test calls ``advance``."""
    return FakeClock()


@pytest.fixture
def z8_app(tmp_path: Path, z8_clock: FakeClock) -> Any:
    """A factory of Applications on a temporary journal with the fake clock:
    ``async with z8_app(router, types=types) as app: await app.dispatch(...)``."""
    from z8.app import Application

    def make(router: Any, **options: Any) -> Application:
        options.setdefault("durability", "fast")
        options.setdefault("clock", z8_clock)
        return Application(router, tmp_path / "z8-app", **options)

    return make
