"""Retention and legal hold: expiry is a journaled act, and ``verify()`` keeps passing."""

from __future__ import annotations

import datetime as dt
import math
import time
from hashlib import blake2b
from pathlib import Path

import msgspec
import pytest

from z8 import errors
from z8.journal import (
    Expired,
    Hold,
    Journal,
    RecordsExpired,
    Retention,
    TypeRegistry,
    compact_journal,
    open_journal,
    open_memory_journal,
)
from z8.journal import _retention
from z8.journal._envelope import is_tombstone, tombstone_of
from z8.journal._retention import ExpireOp, TombstoneOp

pytestmark = pytest.mark.anyio

DAY = 86_400 * 1_000_000_000
SECRET = "PAYLOAD-ZX81-SHOULD-VANISH"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Note(msgspec.Struct, frozen=True):
    text: str


def types() -> TypeRegistry:
    return TypeRegistry([Note])


async def seed(journal: Journal) -> int:
    """Loan-1 and Loan-2 last written before the returned instant; Loan-3 old then new;
    Loan-4, the stream 'Loan', LoanApp-1 and $jobs/x after it."""
    await journal.append("Loan-1", [Note(f"{SECRET}-1a"), Note(f"{SECRET}-1b")])
    await journal.append("Loan-2", [Note(f"{SECRET}-2a")])
    await journal.append("Loan-3", [Note("old part of a living stream")])
    await journal.append("Loan-1", [Note(f"{SECRET}-1c")])
    mid = time.time_ns()
    await journal.append("Loan-3", [Note("recent")])
    await journal.append("Loan-4", [Note("recent")])
    await journal.append("Loan", [Note("recent")])
    await journal.append("LoanApp-1", [Note("another category")])
    await journal.append("$jobs/x", [Note("runtime's own")], allow_reserved=True)
    return mid


def expired_streams(journal: Journal) -> list[str]:
    return [journal.decode(e).stream for e in journal.read_stream("$retention")]


@pytest.mark.parametrize("backend", ["lmdb", "memory"])
async def test_a_category_expires_whole_streams_whose_last_event_is_old(tmp_path: Path, backend: str) -> None:
    journal = open_journal(tmp_path / "j", types=types()) if backend == "lmdb" else open_memory_journal(types=types())
    mid = await seed(journal)
    await journal.save_snapshot("Loan-1", 3, b"state at v3")
    hashes = [e.hash for e in journal.read_stream("Loan-1")]
    report = await journal.expire(Retention("Loan", keep_days=30), now=mid + 30 * DAY + 1, by="ops", reason="policy R-7")

    assert [a.stream for a in report.expired] == ["Loan-1", "Loan-2"]
    assert report.records == 4 and report.tombstoned == 4 and report.examined == 5 and report.skipped == []
    act = report.expired[0]
    assert act == RecordsExpired("Loan-1", 1, 5, 3, blake2b(b"".join(hashes), digest_size=32).digest(), "ops",
                                 "Loan: keep 30 days after the last event", "policy R-7", mid + 30 * DAY + 1)
    [written] = [e for e in journal.read_stream("$retention") if journal.decode(e).stream == "Loan-1"]
    assert journal.decode(written) == act and written.actor == "ops"

    with pytest.raises(errors.RecordExpired, match="Loan-1"):
        journal.read_stream("Loan-1")
    assert journal.load_snapshot("Loan-1") is None
    stones = [e for e in journal.read_all() if e.stream == "Loan-1"]
    assert [(e.type, e.version, e.hash) for e in stones] == [("z8.expired", v, h) for v, h in zip((1, 2, 3), hashes)]
    assert journal.decode(stones[0]) == Expired() and journal.get(stones[0].event_id) == stones[0]
    assert not any(SECRET in journal.decode(e).text for e in journal.read_all() if e.type == "Note")
    assert [journal.decode(e).text for e in journal.read_stream("Loan-3")] == ["old part of a living stream", "recent"]
    assert journal.stream_version("Loan-1") == 3

    head = journal.head_position()
    with pytest.raises(errors.RecordExpired, match="nothing more can be written"):
        await journal.append("Loan-1", [Note("again")])
    with pytest.raises(errors.RecordExpired):
        await journal.save_snapshot("Loan-2", 1, b"s")
    assert journal.head_position() == head
    assert journal.verify().ok and journal.verify(stream="Loan-1").ok and journal.verify(stream="Loan-3").ok
    if backend == "lmdb":
        journal.close()
        journal = open_journal(tmp_path / "j", types=types())
        assert journal.verify().ok and journal.verify(stream="Loan-2").ok
        with pytest.raises(errors.RecordExpired):
            journal.read_stream("Loan-2")
    journal.close()


async def test_everything_older_expires_with_keep_days_zero_and_dollar_streams_never(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j", types=types()) as journal:
        await seed(journal)
        report = await journal.expire(Retention("Loan", 0), Retention("LoanApp", 0), by="ops")
        assert sorted(a.stream for a in report.expired) == ["Loan", "Loan-1", "Loan-2", "Loan-3", "Loan-4", "LoanApp-1"]
        assert journal.read_stream("$jobs/x")[0].type == "Note" and journal.verify().ok
        assert (await journal.expire(Retention("Loan", 0), by="ops")).expired == []


async def test_expiring_twice_writes_once(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j", types=types()) as journal:
        mid = await seed(journal)
        rule = Retention("Loan", 30)
        first = await journal.expire(rule, now=mid + 30 * DAY, by="ops")
        head = journal.head_position()
        again = await journal.expire(rule, now=mid + 30 * DAY, by="ops")
        assert len(first.expired) == 2 and again.expired == [] and again.tombstoned == 0
        named = await journal.expire("Loan-1", by="ops")
        assert named.expired == [] and [s.reason for s in named.skipped] == ["already expired"]
        assert journal.head_position() == head and expired_streams(journal) == ["Loan-1", "Loan-2"]


async def test_spared_streams_are_kept_and_reported(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j", types=types()) as journal:
        mid = await seed(journal)
        report = await journal.expire(Retention("Loan", 30), now=mid + 30 * DAY, by="ops",
                                      spare={"Loan-1": "effect Loan-1/3/0 is stuck", "Loan-4": "young anyway"})
        assert [a.stream for a in report.expired] == ["Loan-2"]
        assert [(s.stream, s.reason) for s in report.skipped] == [("Loan-1", "effect Loan-1/3/0 is stuck")]


async def test_a_named_stream_expires_now_whatever_its_age(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j", types=types()) as journal:
        await seed(journal)
        report = await journal.expire("Loan-4", "LoanApp-1", by="dpo", reason="customer asked")
        assert [(a.stream, a.rule, a.by) for a in report.expired] == [
            ("Loan-4", "explicit", "dpo"), ("LoanApp-1", "explicit", "dpo")]
        assert journal.verify().ok


async def test_the_payload_bytes_leave_reads_at_once_and_the_file_on_compaction(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with open_journal(path, types=types()) as journal:
        mid = await seed(journal)
        await journal.append("Big-1", [Note(SECRET * 400)])  # an overflow page, not a leaf
        await journal.expire(Retention("Loan", 30), "Big-1", now=mid + 30 * DAY, by="ops")
        assert not any(SECRET.encode() in e.data for e in journal.read_all())
        head = journal.verify()
        with pytest.raises(errors.JournalAlreadyOpen):
            compact_journal(path)
    # LMDB keeps freed pages in its file until it reuses them: the bytes may still be
    # there now (they are, with this few writes); compaction keeps only live pages.
    before, after = compact_journal(path)
    assert SECRET.encode() not in (path / "data.mdb").read_bytes() and after < before
    assert not (path / "compact.tmp").exists()
    with open_journal(path, types=types()) as journal:
        report = journal.verify()
        assert report.ok and (report.head_position, report.head_hash) == (head.head_position, head.head_hash)
        assert journal.decode(journal.read_stream("Loan-3")[1]) == Note("recent")
    with pytest.raises(errors.JournalPathError):
        compact_journal(tmp_path / "nothing")


async def test_a_forged_tombstone_is_reported_at_its_position(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j", types=types()) as journal:
        mid = await seed(journal)
        await journal.expire(Retention("Loan", 30), now=mid + 30 * DAY, by="ops")
        [living] = journal.read_stream("Loan-4")
        record = journal._records(living.position, 1)[0][1]
        journal._rewrite_record(living.position, tombstone_of(record))  # keeps hash and prev_hash: links hold
        report = journal.verify()
        assert not report.ok and report.first_bad == living.position and "no z8.RecordsExpired" in report.reason
        by_stream = journal.verify(stream="Loan-4")
        assert not by_stream.ok and by_stream.first_bad == living.position and by_stream.first_bad_version == 1
        journal._rewrite_record(living.position, record)
        assert journal.verify().ok

        stone = journal._records(1, 1)[0][1]  # Loan-1 v1, expired: a tombstone whose hash is changed
        assert is_tombstone(stone)
        journal._rewrite_record(1, stone[:-1] + bytes([stone[-1] ^ 1]))
        report = journal.verify()
        assert not report.ok and report.first_bad == 1 and "rewritten" in report.reason


async def test_tombstones_that_do_not_match_their_act_are_reported(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j", types=types()) as journal:
        mid = await seed(journal)
        await journal.expire(Retention("Loan", 30), now=mid + 30 * DAY, by="ops")
        # An act claiming fewer records than were tombstoned (written as the journal would,
        # so its own hash holds): the covered set no longer matches it.
        check = _retention.ExpiryCheck(lambda version: journal.read_stream("$retention", version))
        act_position, act = check.acts["Loan-1"]
        check.acts["Loan-1"] = (act_position, msgspec.structs.replace(act, count=2))
        faults = [check.see(record, journal._get([p])[0]) for p, record in journal._records(1, 100)]
        [(position, reason)] = [f for f in faults if f]
        assert position == 1 and "do not match" in reason  # reported at the act's first position


async def test_a_held_stream_is_skipped_until_released(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j", types=types()) as journal:
        mid = await seed(journal)
        hold = await journal.hold(stream="Loan-2", by="legal", reason="case 7")
        assert hold == Hold(None, "Loan-2", "legal", "case 7", hold.placed_at, hold.position)
        head = journal.head_position()
        assert await journal.hold(stream="Loan-2", by="someone else") == hold  # already held: writes nothing
        assert journal.head_position() == head and journal.holds() == [hold]

        now = mid + 30 * DAY
        report = await journal.expire(Retention("Loan", 30), now=now, by="ops")
        assert [a.stream for a in report.expired] == ["Loan-1"]
        assert [(s.stream, s.reason) for s in report.skipped] == [("Loan-2", "legal hold by legal: case 7")]
        assert journal.read_stream("Loan-2")[0].type == "Note"
        with pytest.raises(errors.LegalHoldActive, match="Loan-2"):
            await journal.expire("Loan-2", by="ops")

        assert await journal.release_hold(stream="Loan-2", by="legal", reason="case closed") == hold
        assert journal.holds() == []
        report = await journal.expire(Retention("Loan", 30), now=now, by="ops")
        assert [a.stream for a in report.expired] == ["Loan-2"] and journal.verify().ok
        assert [e.type for e in journal.read_stream("$holds")] == ["z8.HoldPlaced", "z8.HoldReleased"]


async def test_holds_are_folded_from_the_journal_after_reopening(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j", types=types()) as journal:
        await journal.hold(subject="ada@example.com", by="legal", reason="litigation 12")
        await journal.hold(stream="Loan-9", by="legal")
        await journal.hold(subject="bob", by="legal")
        await journal.release_hold(subject="bob", by="legal")
    with open_journal(tmp_path / "j", types=types()) as journal:
        assert [(h.subject, h.stream) for h in journal.holds()] == [("ada@example.com", None), (None, "Loan-9")]
        with pytest.raises(errors.LegalHoldActive, match="litigation 12"):
            journal.check_erasable("ada@example.com")
        journal.check_erasable("bob")
        head = journal.head_position()
        with pytest.raises(errors.InvalidArgument, match="no legal hold"):
            await journal.release_hold(subject="bob", by="legal")
        for bad in ({}, {"subject": "a", "stream": "b"}, {"subject": ""}, {"subject": 3}):
            with pytest.raises(errors.InvalidArgument):
                await journal.hold(**bad, by="legal")
        with pytest.raises(errors.ReservedStreamName):
            await journal.hold(stream="$retention", by="legal")
        with pytest.raises(errors.InvalidArgument, match="by="):
            await journal.hold(subject="x", by="")
        assert journal.head_position() == head


async def test_a_hold_placed_after_selection_wins(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j", types=types()) as journal:
        mid = await seed(journal)
        stale = journal._hold_book().version
        await journal.hold(stream="Loan-2", by="legal")
        head = journal.head_position()
        op = ExpireOp([("Loan-2", 1, "explicit")], stale, "ops", "", mid, None)
        with pytest.raises(errors.WrongExpectedVersion, match=r"\$holds"):
            await journal._execute(op)
        assert journal.head_position() == head and journal.read_stream("Loan-2")[0].type == "Note"


async def test_a_stream_written_to_after_selection_is_kept(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j", types=types()) as journal:
        await seed(journal)
        await journal.append("Loan-2", [Note("alive again")])
        acts, skipped, _, _ = await journal._execute(ExpireOp([("Loan-2", 1, "explicit")], 0, "ops", "", 0, None))
        assert acts == [] and skipped[0].reason.startswith("written to since it was selected")
        assert journal.verify().ok and len(journal.read_stream("Loan-2")) == 2


async def test_an_act_whose_tombstones_were_not_written_is_finished_on_reopening(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with open_journal(path, types=types()) as journal:
        await seed(journal)
        # the act commits first; a crash before the tombstones leaves this state
        acts, _, done, more = await journal._execute(ExpireOp([("Loan-1", 3, "explicit")], 0, "ops", "", 0, 0))
        assert [a.stream for a in acts] == ["Loan-1"] and (done, more) == (0, True)
        with pytest.raises(errors.RecordExpired):
            journal.read_stream("Loan-1")  # expired from the act on, tombstones or not
        with pytest.raises(errors.RecordExpired):
            await journal.append("Loan-1", [Note("x")])
        assert SECRET in journal.decode(journal.read_all(1, 1)[0]).text  # not yet tombstoned
        assert journal.verify().ok  # the act covers records still whole, too
    with open_journal(path, types=types()) as journal:  # opening finishes what the act owes
        assert [e.type for e in journal.read_all() if e.stream == "Loan-1"] == ["z8.expired"] * 3
        assert journal.verify().ok
        assert (await journal._execute(TombstoneOp(None))) == (0, False)  # idempotent: nothing left


async def test_a_large_expiry_tombstones_in_chunks_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_retention, "TOMBSTONE_CHUNK", 4)
    with open_journal(tmp_path / "j", types=types()) as journal:
        await seed(journal)
        for i in range(3):
            await journal.append(f"Old-{i}", [Note(f"{SECRET}-{i}-{k}") for k in range(5)])
        # an interrupted expiry: the acts and 4 tombstones, the rest owed
        acts, _, done, more = await journal._execute(
            ExpireOp([(f"Old-{i}", 5, "explicit") for i in range(3)], 0, "ops", "", 0, 4))
        assert (len(acts), done, more) == (3, 4, True) and journal.verify().ok
        report = await journal.expire(Retention("Old", 0), by="ops")  # finishes the rest, 4 per transaction
        assert report.expired == [] and report.tombstoned == 11
        assert all(e.type == "z8.expired" for e in journal.read_all() if e.stream.startswith("Old-"))
        assert journal.verify().ok


async def test_bad_input_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    for category, days in (("Loan", -1), ("Loan", math.nan), ("Loan", math.inf), ("Loan", "30"), ("Loan", True),
                           ("", 3), ("Loan-1", 3), ("$jobs", 3), (None, 3)):
        with pytest.raises(errors.InvalidArgument):
            Retention(category, days)  # type: ignore[arg-type]
    with pytest.raises(msgspec.ValidationError, match="keep_days"):
        msgspec.json.decode(b'{"category": "Loan", "keep_days": -2}', type=Retention)
    with open_journal(tmp_path / "j", types=types()) as journal:
        mid = await seed(journal)
        head = journal.head_position()
        rule = Retention("Loan", 30)
        with pytest.raises(errors.InvalidArgument, match="needs what to expire"):
            await journal.expire(by="ops")
        with pytest.raises(errors.InvalidArgument, match="no events"):
            await journal.expire(rule, "Nope-1", now=mid + 30 * DAY, by="ops")
        with pytest.raises(errors.ReservedStreamName):
            await journal.expire("$jobs/x", by="ops")
        with pytest.raises(errors.InvalidArgument, match="by="):
            await journal.expire(rule, by="")
        with pytest.raises(errors.InvalidArgument, match="timezone"):
            await journal.expire(rule, now=dt.datetime(2030, 1, 1), by="ops")
        with pytest.raises(errors.InvalidArgument, match="now="):
            await journal.expire(rule, now="tomorrow", by="ops")  # type: ignore[arg-type]
        with pytest.raises(errors.InvalidArgument, match="Retention rules or stream names"):
            await journal.expire(("Loan", 30), by="ops")  # type: ignore[arg-type]
        assert journal.head_position() == head and journal.read_stream("Loan-1")
        later = dt.datetime.fromtimestamp(mid / 1e9 + 30 * 86_400, dt.timezone.utc)
        assert [a.stream for a in (await journal.expire(rule, now=later, by="ops")).expired] == ["Loan-1", "Loan-2"]


async def test_subscribers_and_handlers_read_through_expired_positions(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j", types=types()) as journal:
        mid = await seed(journal)
        await journal.expire(Retention("Loan", 30), now=mid + 30 * DAY, by="ops")
        seen = []
        async with journal.subscribe(name="projection") as sub:
            async for envelope in sub:
                seen.append((envelope.type, journal.decode(envelope)))
                if envelope.position == journal.head_position():
                    break
        assert seen[0] == ("z8.expired", Expired()) and len(seen) == journal.head_position()
        async with journal.subscribe(types={"Note"}) as notes:
            first = await notes.__anext__()
        assert first.stream == "Loan-3"  # Loan-1 and Loan-2 are z8.expired now


# --- the application ----------------------------------------------------------------------


def bank_app(path: Path, **options: object) -> object:
    import test_agents  # noqa: F401 - loads examples/bank.py as the module "bank"
    from bank import Account, Deposit, OpenAccount, Withdraw, bank_types

    from z8.app import Application, Router

    router = Router().identify(Account, by="account_id", prefix="account-").dispatch(
        OpenAccount, Deposit, Withdraw, to=Account)
    return Application(router, path, types=bank_types(), durability="fast", **options)  # type: ignore[arg-type]


async def test_the_application_expires_its_categories_under_holds(tmp_path: Path) -> None:
    import test_agents  # noqa: F401 - loads examples/bank.py as the module "bank"
    from bank import Deposit, OpenAccount

    from z8.testing import FakeClock

    clock = FakeClock(time.time_ns())
    async with bank_app(tmp_path / "j", retention=[Retention("account", 30)], clock=clock) as app:  # type: ignore[attr-defined]
        await app.dispatch(OpenAccount("1", "ada"))
        await app.dispatch(Deposit("1", 10))
        await app.dispatch(OpenAccount("2", "bob"))
        mid = time.time_ns()
        await app.dispatch(OpenAccount("3", "cy"))
        clock.set(mid + 30 * DAY)  # ages are counted from recorded_at, the journal's wall clock
        await app.hold(stream="account-2", by="legal", reason="dispute 4")
        assert [h.stream for h in app.holds()] == ["account-2"]

        report = await app.expire(by="retention-job")
        assert [a.stream for a in report.expired] == ["account-1"]
        assert [(s.stream, s.reason) for s in report.skipped] == [("account-2", "legal hold by legal: dispute 4")]
        assert app.tree().find("/app/account/account-1") is None  # its agent was stopped
        with pytest.raises(errors.RecordExpired):
            app.journal.read_stream("account-1")
        for _ in range(3):  # refused before its agent is started: nothing crash-loops
            with pytest.raises(errors.RecordExpired, match="account-1"):
                await app.dispatch(Deposit("1", 5))
        assert app.journal.stream_version("account-1") == 2
        assert await app.dispatch(Deposit("3", 5)) == 5

        await app.release_hold(stream="account-2", by="legal", reason="settled")
        assert [a.stream for a in (await app.expire(by="retention-job")).expired] == ["account-2"]
        assert (await app.expire(by="retention-job")).expired == []
        assert app.journal.verify().ok


async def test_the_application_checks_its_retention_rules(tmp_path: Path) -> None:
    from z8.errors import InvalidSpec

    with pytest.raises(InvalidSpec, match="one retention rule per category"):
        bank_app(tmp_path / "a", retention=[Retention("account", 1), Retention("account", 2)])
    with pytest.raises(InvalidSpec, match="Retention"):
        bank_app(tmp_path / "b", retention=[("account", 1)])
    async with bank_app(tmp_path / "c") as app:  # type: ignore[attr-defined]
        with pytest.raises(InvalidSpec, match="no retention rules"):
            await app.expire(by="ops")


async def test_a_held_subject_cannot_be_erased_until_released(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j", types=types()) as journal:
        await journal.hold(subject="ada", by="legal", reason="litigation 12")
        head = journal.head_position()
        with pytest.raises(errors.LegalHoldActive, match="litigation 12"):
            await journal.erase("ada", by="dpo")
        assert journal.head_position() == head and not journal.is_erased("ada")
        await journal.release_hold(subject="ada", by="legal")
        await journal.erase("ada", by="dpo")
        assert journal.is_erased("ada") and journal.verify().ok
