"""The audit surface: verify(stream=...), run records, sealed bundles and their offline check.

The tamper tests flip real bytes — in LMDB's data file or in an exported bundle — and
assert the exact position (and version) where the break is reported.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

import z8
from z8.journal import Journal, open_journal, open_memory_journal
from z8.testing._journal_kit import flip_byte, reseal, stored_record, tamper

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Noted(msgspec.Struct, frozen=True):
    text: str


@pytest.fixture(params=["lmdb", "memory"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Journal:
    types = z8.TypeRegistry([Noted])
    made = open_journal(tmp_path / "j", types=types, durability="fast") if request.param == "lmdb" \
        else open_memory_journal(types=types)
    yield made
    made.close()


async def _interleaved(journal: Journal) -> None:
    """Positions: a1=1 b1=2 b2=3 a2=4 a3=5 b3=6 b4=7 a4=8 (a2,a3 consecutive; a3,a4 not)."""
    await journal.append("a", [Noted("a1")])
    await journal.append("b", [Noted("b1"), Noted("b2")])
    await journal.append("a", [Noted("a2"), Noted("a3")])
    await journal.append("b", [Noted("b3"), Noted("b4")])
    await journal.append("a", [Noted("a4")])


# === 1. verify(stream=...) ================================================================


async def test_verify_one_stream_passes_on_an_honest_log_and_names_the_stream_head(journal: Journal) -> None:
    await _interleaved(journal)
    report = journal.verify(stream="a")
    assert report.ok and report.checked == 4 and report.stream == "a"
    assert (report.head_version, report.head_position, report.head_hash) == (4, 8, journal.read_all(8)[0].hash)
    assert journal.verify(stream="b").checked == 4
    empty = journal.verify(stream="nobody")
    assert empty.ok and empty.checked == 0 and empty.head_position == 0
    assert "stream 'a': ok: 4 events" in str(report)


@pytest.mark.parametrize(("position", "version"), [(1, 1), (4, 2), (8, 4)])
async def test_verify_one_stream_finds_every_altered_byte_at_its_event(journal: Journal, position: int,
                                                                        version: int) -> None:
    await _interleaved(journal)
    original = stored_record(journal, position)
    for offset in range(len(original)):
        flip_byte(journal, position, offset)
        report = journal.verify(stream="a")
        assert (report.ok, report.first_bad, report.first_bad_version) == (False, position, version), (offset, report)
        assert journal.verify(stream="b").ok  # the other stream is untouched
        tamper(journal, position, original)
    assert journal.verify(stream="a").ok


async def test_verify_one_stream_finds_a_resealed_event_through_the_next_link_or_the_head(journal: Journal) -> None:
    await _interleaved(journal)
    reseal(journal, 4, data=msgspec.msgpack.encode(Noted("forged")))  # a2; a3 follows at position 5
    report = journal.verify(stream="a")
    assert (report.first_bad, report.first_bad_version) == (4, 2) and "rewritten" in report.reason
    assert journal.verify().first_bad == 4


async def test_verify_one_stream_finds_a_resealed_last_event_by_its_head(journal: Journal) -> None:
    await _interleaved(journal)
    reseal(journal, 8, actor="mallory")
    report = journal.verify(stream="a")
    assert (report.ok, report.first_bad, report.first_bad_version) == (False, 8, 4)
    assert "recorded head" in report.reason


async def test_verify_one_stream_finds_a_dropped_event(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j", types=z8.TypeRegistry([Noted]), durability="fast") as journal:
        await _interleaved(journal)
        tamper(journal, 5, None)  # a3: the stream index now points at nothing
        report = journal.verify(stream="a")
        assert (report.ok, report.first_bad, report.first_bad_version) == (False, 5, 3)
        assert "holds no event" in report.reason
        assert journal.verify().first_bad == 5
