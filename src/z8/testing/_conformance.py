"""The journal conformance suite: the contract every ``Journal`` backend must keep.

Subclass :class:`JournalConformance` in a test module and implement ``make_journal``;
pytest then runs every check against your backend::

    class TestMyJournal(JournalConformance):
        def make_journal(self, tmp_path, types):
            return open_my_journal(tmp_path / "j", types=types)

Backends that cannot be tampered with at the storage level may skip the
``test_verify_*`` tamper checks by overriding ``supports_tamper = False``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from z8 import errors
from z8.ids import uuid7_time_ms
from z8.journal import ANY, ERASED, NO_STREAM, STREAM_EXISTS, Append, Journal, Personal, RawEvent, Subject, TypeRegistry

from ._journal_kit import flip_byte, reseal, stored_record, tamper

__all__ = ["JournalConformance", "Opened", "Deposited", "Withdrawn", "Profiled", "conformance_types"]


class Opened(msgspec.Struct, frozen=True):
    """Sample event: an account was opened."""

    owner: str


class Deposited(msgspec.Struct, frozen=True):
    """Sample event: money came in."""

    amount: int


class Withdrawn(msgspec.Struct, frozen=True):
    """Sample event: money went out."""

    amount: int


class Profiled(msgspec.Struct, frozen=True):
    """Sample event with personal data: ``name`` is sealed under ``owner``'s key."""

    owner: Subject
    name: Personal[str]
    tier: str = "standard"


class Unregistered(msgspec.Struct, frozen=True):
    x: int


def conformance_types() -> TypeRegistry:
    """The event types the suite appends."""
    return TypeRegistry([Opened, Deposited, Withdrawn])


class JournalConformance:
    """Checks of the ``Journal`` contract; subclass and implement ``make_journal``."""

    pytestmark = pytest.mark.anyio
    supports_tamper = True

    def make_journal(self, tmp_path: Path, types: TypeRegistry) -> Journal:
        raise NotImplementedError("subclass JournalConformance and return a fresh journal")

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    def journal(self, tmp_path: Path) -> Any:
        journal = self.make_journal(tmp_path, conformance_types())
        yield journal
        journal.close()

    # --- appends and versions -----------------------------------------------------------

    async def test_append_returns_sealed_envelopes(self, journal: Journal) -> None:
        written = await journal.append("acct-1", [Opened("ada"), Deposited(10)], NO_STREAM, actor="test")
        assert [(e.stream, e.version, e.position) for e in written] == [("acct-1", 1, 1), ("acct-1", 2, 2)]
        assert [e.type for e in written] == ["Opened", "Deposited"]
        assert written[1].prev_hash == written[0].hash and written[0].actor == "test"
        assert written[0].event_id < written[1].event_id
        assert abs(uuid7_time_ms(written[0].event_id) - time.time() * 1000) < 60_000
        assert journal.decode(written[1]) == Deposited(10)
        assert journal.read_stream("acct-1") == written

    async def test_versions_and_positions_interleave_gap_free(self, journal: Journal) -> None:
        for i in range(5):
            await journal.append(f"s-{i % 2}", [Deposited(i)])
        assert journal.stream_version("s-0") == 3 and journal.stream_version("s-1") == 2
        assert journal.head_position() == 5
        assert [e.position for e in journal.read_all()] == [1, 2, 3, 4, 5]
        assert [e.version for e in journal.read_stream("s-0")] == [1, 2, 3]

    async def test_expected_versions(self, journal: Journal) -> None:
        await journal.append("a", [Deposited(1)], NO_STREAM)
        await journal.append("a", [Deposited(2)], 1)
        await journal.append("a", [Deposited(3)], STREAM_EXISTS)
        await journal.append("a", [Deposited(4)], ANY)
        await journal.append("b", [Deposited(1)], 0)
        assert journal.stream_version("a") == 4

    @pytest.mark.parametrize("expected", [NO_STREAM, 0, 1, 3])
    async def test_wrong_expected_version_writes_nothing(self, journal: Journal, expected: Any) -> None:
        await journal.append("a", [Deposited(1), Deposited(2)])
        before = journal.read_all()
        with pytest.raises(errors.WrongExpectedVersion) as caught:
            await journal.append("a", [Deposited(3)], expected)
        assert caught.value.expected == expected and caught.value.actual == 2
        assert "expected" in str(caught.value) and "2" in str(caught.value)
        assert journal.read_all() == before and journal.head_position() == 2

    async def test_stream_exists_on_missing_stream_is_rejected(self, journal: Journal) -> None:
        with pytest.raises(errors.WrongExpectedVersion):
            await journal.append("nope", [Deposited(1)], STREAM_EXISTS)
        assert journal.head_position() == 0

    async def test_append_many_is_atomic(self, journal: Journal) -> None:
        await journal.append("a", [Deposited(1)])
        with pytest.raises(errors.WrongExpectedVersion):
            await journal.append_many([Append("b", [Deposited(1)], NO_STREAM), Append("a", [Deposited(2)], 0)])
        assert journal.stream_version("b") == 0 and journal.head_position() == 1
        written = await journal.append_many(
            [Append("b", [Deposited(1)], NO_STREAM), Append("a", [Deposited(2)], 1), Append("b", [Withdrawn(1)], 1)],
            correlation_id="req-1",
        )
        assert [(e.stream, e.version, e.position) for e in written] == [("b", 1, 2), ("a", 2, 3), ("b", 2, 4)]
        assert all(e.correlation_id == "req-1" for e in written)
        assert journal.verify().ok

    async def test_concurrent_appends_lose_nothing(self, journal: Journal) -> None:
        async def one(i: int) -> Any:
            return await journal.append(f"c-{i % 7}", [Deposited(i)])

        results = await asyncio.gather(*(one(i) for i in range(300)))
        assert sorted(e.position for r in results for e in r) == list(range(1, 301))
        assert sum(journal.stream_version(f"c-{k}") for k in range(7)) == 300
        assert journal.verify().ok

    async def test_concurrent_exact_versions_admit_one_winner(self, journal: Journal) -> None:
        await journal.append("race", [Deposited(0)])
        outcomes = await asyncio.gather(
            *(journal.append("race", [Deposited(i)], 1) for i in range(10)), return_exceptions=True
        )
        assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
        assert all(isinstance(o, errors.WrongExpectedVersion) for o in outcomes if isinstance(o, BaseException))
        assert journal.stream_version("race") == 2

    async def test_raw_events_round_trip(self, journal: Journal) -> None:
        data = msgspec.msgpack.encode({"amount": 5})
        [written] = await journal.append("raw", [RawEvent("Deposited", data)])
        assert written.data == data and journal.decode(written) == Deposited(5)
        [other] = await journal.append("raw", [RawEvent("SomethingElse", b"\x01")])
        assert journal.read_stream("raw")[1].type == "SomethingElse"
        with pytest.raises(errors.UnknownEventType, match="SomethingElse"):
            journal.decode(other)

    # --- reads ----------------------------------------------------------------------------

    async def test_read_stream_directions_and_limits(self, journal: Journal) -> None:
        await journal.append("s", [Deposited(i) for i in range(1, 11)])
        await journal.append("s2", [Deposited(99)])
        await journal.append("s", [Deposited(11)])
        assert [journal.decode(e).amount for e in journal.read_stream("s", 9)] == [9, 10, 11]
        assert [e.version for e in journal.read_stream("s", 3, limit=2)] == [3, 4]
        assert [e.version for e in journal.read_stream("s", backward=True, limit=3)] == [11, 10, 9]
        assert [e.version for e in journal.read_stream("s", 2, backward=True)] == [2, 1]
        assert [e.version for e in journal.read_stream("s", 50, backward=True, limit=1)] == [11]
        assert journal.read_stream("s", 12) == [] and journal.read_stream("missing") == []
        assert journal.read_stream("s", limit=0) == []
        assert journal.read_stream("s2") == journal.read_stream("s2", backward=True)

    async def test_stream_names_sharing_a_prefix_stay_apart(self, journal: Journal) -> None:
        await journal.append("a", [Deposited(1)])
        await journal.append("ab", [Deposited(2)])
        await journal.append("a-1", [Deposited(3)])
        assert [journal.decode(e).amount for e in journal.read_stream("a")] == [1]
        assert [journal.decode(e).amount for e in journal.read_stream("a", backward=True)] == [1]

    async def test_read_all_and_iteration(self, journal: Journal) -> None:
        for i in range(25):
            await journal.append(f"s-{i % 3}", [Deposited(i)])
        assert [e.position for e in journal.read_all(20)] == [20, 21, 22, 23, 24, 25]
        assert [e.position for e in journal.read_all(5, limit=3)] == [5, 6, 7]
        assert journal.read_all(26) == []
        assert [e.position async for e in journal.iter_all(3, batch_size=4)] == list(range(3, 26))
        assert [e.version async for e in journal.iter_stream("s-0", 2, batch_size=3)] == list(range(2, 10))

    async def test_get_by_event_id(self, journal: Journal) -> None:
        [first] = await journal.append("s", [Deposited(1)])
        assert journal.get(first.event_id) == first
        with pytest.raises(errors.EventNotFound):
            journal.get("not-an-event-id")

    # --- types and schema evolution --------------------------------------------------------

    async def test_upcasters_lift_old_payloads(self, journal: Journal) -> None:
        await journal.append("u", [RawEvent("Deposited", msgspec.msgpack.encode({"cents": 250}), schema=1)])

        class DepositedV2(msgspec.Struct, frozen=True):
            amount: int
            currency: str

        types = TypeRegistry()
        types.register(DepositedV2, name="Deposited", schema=3)

        @types.upcaster("Deposited", from_schema=1)
        def cents_to_amount(old: dict) -> dict:
            return {"amount": old["cents"]}

        [envelope] = journal.read_stream("u")
        with pytest.raises(errors.UpcastError, match="from schema 2 to 3"):
            types.decode(envelope.type, envelope.schema, envelope.data)

        @types.upcaster("Deposited", from_schema=2)
        def add_currency(old: dict) -> dict:
            return {**old, "currency": "EUR"}

        assert types.decode(envelope.type, envelope.schema, envelope.data) == DepositedV2(250, "EUR")
        with pytest.raises(errors.UpcastError, match="newer code"):
            types.decode("Deposited", 4, envelope.data)

    async def test_unregistered_payloads_are_rejected(self, journal: Journal) -> None:
        with pytest.raises(errors.UnregisteredEvent, match="Unregistered"):
            await journal.append("s", [Unregistered(1)])
        for bad in ({"amount": 1}, "Deposited", 42, None):
            with pytest.raises(errors.InvalidEvent):
                await journal.append("s", [bad])
        assert journal.head_position() == 0

    # --- bad input ---------------------------------------------------------------------------

    @pytest.mark.parametrize("stream", ["", "x" * 256, "é" * 128, "a\x00b", 7, None, b"bytes"])
    async def test_bad_stream_names(self, journal: Journal, stream: Any) -> None:
        with pytest.raises(errors.InvalidStreamName):
            await journal.append(stream, [Deposited(1)])
        with pytest.raises(errors.InvalidStreamName):
            journal.read_stream(stream)
        assert journal.head_position() == 0

    async def test_reserved_prefix_is_the_runtimes(self, journal: Journal) -> None:
        with pytest.raises(errors.ReservedStreamName, match=r"\$"):
            await journal.append("$system", [Deposited(1)])
        [written] = await journal.append("$system", [Deposited(1)], allow_reserved=True)
        assert journal.read_stream("$system") == [written]

    @pytest.mark.parametrize("expected", [-1, True, 1.0, "1", None])
    async def test_bad_expected_versions(self, journal: Journal, expected: Any) -> None:
        with pytest.raises(errors.InvalidExpectedVersion):
            await journal.append("s", [Deposited(1)], expected)
        assert journal.head_position() == 0

    @pytest.mark.parametrize("events", [[], Deposited(1), "events", None, b""])
    async def test_bad_event_lists(self, journal: Journal, events: Any) -> None:
        with pytest.raises(errors.InvalidEvent):
            await journal.append("s", events)

    async def test_bad_metadata_and_read_arguments(self, journal: Journal) -> None:
        with pytest.raises(errors.InvalidArgument, match="causation_id"):
            await journal.append("s", [Deposited(1)], causation_id=5)  # type: ignore[arg-type]
        for call in (
            lambda: journal.read_all(0), lambda: journal.read_all(-3), lambda: journal.read_all(1, -1),
            lambda: journal.read_stream("s", 0), lambda: journal.read_stream("s", limit=True),
            lambda: journal.read_all("1"),  # type: ignore[arg-type]
        ):
            with pytest.raises(errors.InvalidPosition):
                call()

    async def test_closed_journal_refuses_everything(self, journal: Journal) -> None:
        await journal.append("s", [Deposited(1)])
        journal.close()
        journal.close()  # idempotent
        with pytest.raises(errors.JournalClosed):
            await journal.append("s", [Deposited(2)])
        for call in (journal.read_all, journal.head_position, journal.verify, lambda: journal.read_stream("s")):
            with pytest.raises(errors.JournalClosed, match="closed"):
                call()

    # --- snapshots and cursors -----------------------------------------------------------------

    async def test_snapshots_keep_the_newest(self, journal: Journal) -> None:
        await journal.append("s", [Deposited(i) for i in range(5)])
        assert journal.load_snapshot("s") is None
        assert await journal.save_snapshot("s", 3, b"state@3", schema=2)
        assert not await journal.save_snapshot("s", 2, b"state@2")
        snapshot = journal.load_snapshot("s")
        assert (snapshot.version, snapshot.data, snapshot.schema) == (3, b"state@3", 2)
        with pytest.raises(errors.InvalidSnapshot, match="version 5"):
            await journal.save_snapshot("s", 6, b"future")
        with pytest.raises(errors.InvalidSnapshot):
            await journal.save_snapshot("s", 1, "not bytes")  # type: ignore[arg-type]
        assert journal.load_snapshot("s").version == 3

    async def test_cursors_only_move_forward(self, journal: Journal) -> None:
        await journal.append("s", [Deposited(i) for i in range(5)])
        assert journal.cursor("proj") == 0
        assert await journal.ack("proj", 3) == 3
        assert await journal.ack("proj", 2) == 3
        with pytest.raises(errors.InvalidPosition, match="head"):
            await journal.ack("proj", 9)
        assert journal.cursor("proj") == 3

    # --- subscriptions -----------------------------------------------------------------------

    async def test_subscription_catches_up_then_follows_the_tail(
        self, journal: Journal, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # With the cross-process poll pushed out to a minute, only the commit's own
        # wake-up can deliver the live events before the deadline below.
        monkeypatch.setattr("z8.journal._subscription.CROSS_PROCESS_POLL", 60.0)
        await journal.append("s", [Deposited(1), Deposited(2)])
        seen: list[int] = []

        async def consume() -> None:
            async with journal.subscribe() as sub:
                async for envelope in sub:
                    seen.append(envelope.position)
                    if len(seen) == 5:
                        return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        assert seen == [1, 2]
        for i in range(3):
            await journal.append("s", [Deposited(i)])
        await asyncio.wait_for(task, 10)
        assert seen == [1, 2, 3, 4, 5]

    async def test_subscription_filters(self, journal: Journal) -> None:
        await journal.append("acct-1", [Opened("a"), Deposited(1)])
        await journal.append("loan-1", [Deposited(2)])
        await journal.append("acct-2", [Deposited(3)])
        async with journal.subscribe(types={"Deposited"}, stream_prefix="acct-") as sub:
            got = [await sub.__anext__() for _ in range(2)]
        assert [(e.stream, e.position) for e in got] == [("acct-1", 2), ("acct-2", 4)]

    async def test_named_subscription_resumes_after_ack(self, journal: Journal) -> None:
        await journal.append("s", [Deposited(i) for i in range(6)])
        async with journal.subscribe(name="proj") as sub:
            for _ in range(4):
                envelope = await sub.__anext__()
            await sub.ack()
        assert envelope.position == 4 and journal.cursor("proj") == 4
        async with journal.subscribe(from_position=1, name="proj") as again:
            assert (await again.__anext__()).position == 5

    async def test_subscription_ends_when_the_journal_closes(self, journal: Journal) -> None:
        sub = journal.subscribe()

        async def drain() -> list[Any]:
            return [e async for e in sub]

        task = asyncio.create_task(drain())
        await asyncio.sleep(0.05)
        await journal.aclose()
        assert await asyncio.wait_for(task, 2) == []

    # --- provenance --------------------------------------------------------------------------

    async def test_causes_effects_and_trace(self, journal: Journal) -> None:
        [root] = await journal.append("order-1", [Opened("o")], correlation_id="req-9", causation_id="cmd-1")
        [child] = await journal.append("pay-1", [Deposited(5)], causation_id=root.event_id, correlation_id="req-9")
        await journal.append("noise", [Deposited(0)], correlation_id="other")
        [grand, sibling] = await journal.append(
            "ledger", [Deposited(5), Withdrawn(1)], causation_id=child.event_id, correlation_id="req-9"
        )
        [side] = await journal.append("mail", [Opened("m")], causation_id=root.event_id, correlation_id="req-9")
        assert journal.causes(grand.event_id) == [root, child, grand]
        assert journal.causes(root.event_id) == [root]
        assert journal.effects(root.event_id) == [child, grand, sibling, side]
        assert journal.effects(side.event_id) == []
        assert journal.trace("req-9") == [root, child, grand, sibling, side]
        assert journal.trace("unknown") == []
        with pytest.raises(errors.EventNotFound):
            journal.causes("no-such-event")

    # --- verification --------------------------------------------------------------------------

    async def _filled(self, journal: Journal, n: int = 12) -> None:
        for i in range(n):
            await journal.append(f"s-{i % 3}", [Deposited(i)], correlation_id=f"c{i}")

    async def test_verify_passes_on_an_honest_log(self, journal: Journal) -> None:
        assert journal.verify().ok and journal.verify().checked == 0
        await self._filled(journal)
        report = journal.verify()
        assert report.ok and report.checked == 12 and report.head_position == 12
        assert report.head_hash == journal.read_all(12)[0].hash

    @pytest.mark.parametrize("position", [1, 6, 12])
    async def test_verify_catches_every_altered_byte(self, journal: Journal, position: int) -> None:
        if not self.supports_tamper:
            pytest.skip("backend cannot be tampered with")
        await self._filled(journal)
        original = stored_record(journal, position)
        for offset in range(len(original)):
            flip_byte(journal, position, offset)
            report = journal.verify()
            assert not report.ok and report.first_bad == position, (offset, report)
            tamper(journal, position, original)
        assert journal.verify().ok

    @pytest.mark.parametrize("position", [1, 7, 12])
    async def test_verify_catches_a_dropped_event(self, journal: Journal, position: int) -> None:
        if not self.supports_tamper:
            pytest.skip("backend cannot be tampered with")
        await self._filled(journal)
        tamper(journal, position, None)
        report = journal.verify()
        assert not report.ok and report.first_bad == position, report

    async def test_verify_catches_two_swapped_events(self, journal: Journal) -> None:
        if not self.supports_tamper:
            pytest.skip("backend cannot be tampered with")
        await self._filled(journal)
        five, six = stored_record(journal, 5), stored_record(journal, 6)
        tamper(journal, 5, six)
        tamper(journal, 6, five)
        report = journal.verify()
        assert not report.ok and report.first_bad == 5 and "swapped" in report.reason

    @pytest.mark.parametrize("position", [1, 6, 11])
    async def test_verify_catches_a_resealed_forgery(self, journal: Journal, position: int) -> None:
        if not self.supports_tamper:
            pytest.skip("backend cannot be tampered with")
        await self._filled(journal)
        reseal(journal, position, data=msgspec.msgpack.encode(Deposited(1_000_000)))
        report = journal.verify()
        assert not report.ok and report.first_bad == position and "rewritten" in report.reason, report

    async def test_verify_catches_a_resealed_last_event(self, journal: Journal) -> None:
        if not self.supports_tamper:
            pytest.skip("backend cannot be tampered with")
        await self._filled(journal)
        reseal(journal, 12, actor="mallory")
        report = journal.verify()
        assert not report.ok and report.first_bad == 12 and "head hash" in report.reason, report

    # --- caller-chosen ids and per-event causation -------------------------------------

    async def test_chosen_event_ids_make_appends_idempotent(self, journal: Journal) -> None:
        from z8.ids import uuid7
        from z8.journal import Event

        first, second = uuid7(), uuid7()
        written = await journal.append(
            "s", [Event(Opened("a"), event_id=first), Event(Deposited(1), event_id=second, causation_id=first)],
            causation_id="cmd-1",
        )
        assert [e.event_id for e in written] == [first, second]
        assert [e.causation_id for e in written] == ["cmd-1", first]
        assert journal.causes(second) == written
        with pytest.raises(errors.DuplicateEvent) as caught:
            await journal.append_many([Append("t", [Deposited(2)]), Append("s", [Event(Deposited(3), event_id=second)])])
        assert caught.value.event_id == second
        assert journal.head_position() == 2 and journal.stream_version("t") == 0
        with pytest.raises(errors.DuplicateEvent):
            await journal.append("u", [Event(Deposited(1), event_id="x"), Event(Deposited(1), event_id="x")])
        outcomes = await asyncio.gather(
            *(journal.append("v", [Event(Deposited(i), event_id="same")]) for i in range(5)), return_exceptions=True
        )
        assert sum(isinstance(o, errors.DuplicateEvent) for o in outcomes) == 4
        assert journal.head_position() == 3 and journal.verify().ok
        for bad in ("", 5):
            with pytest.raises(errors.InvalidArgument):
                await journal.append("w", [Event(Deposited(1), event_id=bad)])  # type: ignore[arg-type]

    async def test_over_long_ids_are_refused_before_they_reach_the_writer(self, journal: Journal) -> None:
        from z8.journal import Event

        long_id = "é" * 200  # 400 UTF-8 bytes: past the 255-byte key limit
        ok = journal.append("fine", [Deposited(1)])
        with pytest.raises(errors.InvalidArgument, match="UTF-8 bytes"):
            await journal.append("s", [Event(Deposited(1), causation_id=long_id)])
        with pytest.raises(errors.InvalidArgument, match="correlation_id"):
            await journal.append("s", [Deposited(1)], correlation_id=long_id)
        assert len(await ok) == 1 and journal.head_position() == 1

    # --- personal data ------------------------------------------------------------------

    async def test_personal_fields_are_stored_sealed_and_read_back(self, journal: Journal) -> None:
        journal.types.register(Profiled)
        [written] = await journal.append("p", [Profiled("owner-1", "Ada Quintessa Lovelock")])
        assert b"Quintessa" not in written.data and b"owner-1" in written.data
        assert journal.decode(written) == Profiled("owner-1", "Ada Quintessa Lovelock")
        assert journal.decode(journal.read_stream("p")[0]) == Profiled("owner-1", "Ada Quintessa Lovelock")

    async def test_erase_reads_erased_keeps_the_chain_and_is_journaled(self, journal: Journal) -> None:
        journal.types.register(Profiled)
        await journal.append("p", [Profiled("owner-1", "Ada"), Profiled("owner-2", "Grace"), Deposited(1)])
        act = await journal.erase("owner-1", by="dpo", reason="request")
        assert (act.stream, act.type) == ("$vault", "z8.SubjectErased")
        assert [journal.decode(e) for e in journal.read_stream("p")] == [
            Profiled("owner-1", ERASED), Profiled("owner-2", "Grace"), Deposited(1)]
        assert journal.is_erased("owner-1") and not journal.is_erased("owner-2")
        with pytest.raises(errors.SubjectErased):
            await journal.append("p", [Profiled("owner-1", "Ada again")])
        assert journal.stream_version("p") == 3 and journal.verify().ok

    async def test_a_sealed_value_moved_to_another_subject_does_not_open(self, journal: Journal) -> None:
        journal.types.register(Profiled)
        [a, _] = await journal.append("p", [Profiled("owner-1", "Ada"), Profiled("owner-2", "Grace")])
        stored = msgspec.msgpack.decode(a.data)
        [moved] = await journal.append("p", [RawEvent("Profiled", msgspec.msgpack.encode({**stored, "owner": "owner-2"}))])
        with pytest.raises(errors.VaultError):
            journal.decode(moved)
