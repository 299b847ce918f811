"""pytest plugin (entry point ``pytest11``): fixtures for tests of z8 applications."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from z8.journal import Journal, open_journal, open_memory_journal


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
