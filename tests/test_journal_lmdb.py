"""What only the embedded LMDB journal promises: persistence, map growth, its path."""

from __future__ import annotations

from pathlib import Path

import lmdb
import msgspec
import pytest

from z8 import errors
from z8.journal import NO_STREAM, TypeRegistry, open_journal
from z8.testing import Deposited, conformance_types

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_everything_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with open_journal(path, types=conformance_types()) as journal:
        written = await journal.append("acct", [Deposited(i) for i in range(3)], NO_STREAM, correlation_id="r")
        await journal.save_snapshot("acct", 2, b"s2")
        await journal.ack("proj", 2)
    with open_journal(path, types=conformance_types()) as journal:
        assert journal.read_stream("acct") == written
        assert journal.stream_version("acct") == 3 and journal.head_position() == 3
        assert journal.load_snapshot("acct").data == b"s2"
        assert journal.trace("r") == written and journal.get(written[1].event_id) == written[1]
        async with journal.subscribe(name="proj") as sub:
            assert (await sub.__anext__()).position == 3
        [more] = await journal.append("acct", [Deposited(9)], 3)
        assert more.prev_hash == written[-1].hash and journal.verify().ok


async def test_a_full_map_grows_without_the_user_seeing_it(tmp_path: Path) -> None:
    types = TypeRegistry()

    @types.register
    class Blob(msgspec.Struct):
        data: bytes

    with open_journal(tmp_path / "j", types=types, map_size=1 << 16) as journal:
        for i in range(40):
            await journal.append(f"b-{i % 4}", [Blob(bytes(50_000)), Blob(b"x")])
        await journal.append("big", [Blob(bytes(3_000_000))])  # larger than the map at any point before
        assert journal.head_position() == 81 and journal.verify().ok
        assert journal._env.info()["map_size"] > 4_000_000  # noqa: SLF001 - proves growth happened


def test_a_path_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    target = tmp_path / "not-a-dir"
    target.write_text("hello")
    with pytest.raises(errors.JournalPathError, match="is a file"):
        open_journal(target)


def test_one_open_per_path_per_process(tmp_path: Path) -> None:
    journal = open_journal(tmp_path / "j")
    with pytest.raises(errors.JournalAlreadyOpen, match="already open"):
        open_journal(tmp_path / "j" / ".." / "j")
    journal.close()
    open_journal(tmp_path / "j").close()


@pytest.mark.parametrize("kwargs", [{"durability": "eventually"}, {"map_size": 10}, {"map_size": "1G"}])
def test_bad_options_are_rejected(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(errors.InvalidArgument):
        open_journal(tmp_path / "j", **kwargs)
    open_journal(tmp_path / "j").close()  # a rejected open holds nothing


def test_a_journal_from_newer_code_is_refused(tmp_path: Path) -> None:
    open_journal(tmp_path / "j").close()
    env = lmdb.open(str(tmp_path / "j"), max_dbs=16)
    with env.begin(write=True) as txn:
        txn.put(b"format", (99).to_bytes(4, "big"), db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(errors.JournalCorrupt, match="upgrade z8"):
        open_journal(tmp_path / "j")
    with pytest.raises(errors.JournalCorrupt):
        open_journal(tmp_path / "j")  # and the refused open released the path


async def test_large_events_and_many_streams(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j", types=conformance_types(), durability="fast") as journal:
        names = [f"acct-{i:05d}" for i in range(2000)]
        for name in names:
            await journal.append(name, [Deposited(1)], NO_STREAM)
        assert all(journal.stream_version(n) == 1 for n in names[::97])
        assert journal.verify().checked == 2000
