"""Both journal backends keep the one contract shipped in z8.testing."""

from pathlib import Path

from z8.journal import Journal, TypeRegistry, open_journal, open_memory_journal
from z8.testing import JournalConformance


class TestLmdbJournal(JournalConformance):
    def make_journal(self, tmp_path: Path, types: TypeRegistry) -> Journal:
        return open_journal(tmp_path / "journal", types=types, durability="fast")


class TestLmdbJournalDurable(JournalConformance):
    """The same contract with fsync on every commit (the default)."""

    def make_journal(self, tmp_path: Path, types: TypeRegistry) -> Journal:
        return open_journal(tmp_path / "journal", types=types)


class TestMemoryJournal(JournalConformance):
    def make_journal(self, tmp_path: Path, types: TypeRegistry) -> Journal:
        return open_memory_journal(types=types)
