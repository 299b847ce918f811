"""Durable agents: pure decide/evolve, journaled decisions, rehydration, snapshots, crashes."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

import z8
from z8.errors import ActorDied, AgentCrashed, InvalidDecision, Rejected
from z8.journal import Journal, open_journal
from z8.testing import given

spec = importlib.util.spec_from_file_location("bank", Path(__file__).parents[1] / "examples" / "bank.py")
bank = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
sys.modules["bank"] = bank
spec.loader.exec_module(bank)  # type: ignore[union-attr]
from bank import (  # noqa: E402
    Account, AccountOpened, AccountState, Deposit, Deposited, OpenAccount, Withdraw, Withdrawn, bank_types,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def journal(tmp_path: Path) -> Any:
    with open_journal(tmp_path / "j", types=bank_types(), durability="fast") as j:
        yield j


# --- given/when/then: no runtime -----------------------------------------------------------


def test_given_when_then_decides_purely() -> None:
    given(Account).when(OpenAccount("a", "ada")).then(AccountOpened("ada"), reply="opened",
                                                      state=AccountState("open", "ada", 0))
    opened = given(Account, AccountOpened("ada"), Deposited(50))
    opened.when(Withdraw("a", 20)).then(Withdrawn(20), reply=30, state=AccountState("open", "ada", 30))
    opened.when(Withdraw("a", 80)).then_rejected("insufficient_funds", balance=50)
    given(Account).when(Deposit("a", 5)).then_rejected("not_open")
    with pytest.raises(AssertionError, match="expected events"):
        opened.when(Deposit("a", 1)).then(Deposited(2))


class Closed(msgspec.Struct, frozen=True):
    pass


class Careless(Account):
    """Closes accounts its machine says can never close."""

    def decide(self, state: Any, command: Any, ctx: Any) -> Any:
        return z8.Decision([Closed()])

    def evolve(self, state: Any, event: Any) -> Any:
        return msgspec.structs.replace(state, status="closed") if isinstance(event, Closed) else super().evolve(state, event)


def test_given_when_then_enforces_the_machine() -> None:
    with pytest.raises(InvalidDecision, match="'open' -> 'closed' is not allowed"):
        given(Careless, AccountOpened("ada")).when(Deposit("a", 1))


async def test_a_decision_the_machine_forbids_writes_nothing_and_is_journaled(tmp_path: Path) -> None:
    types = bank_types()
    types.register(Closed)
    with open_journal(tmp_path / "j", types=types, durability="fast") as journal:
        async with z8.Runtime(journal) as rt:
            acct = rt.spawn(Careless, name="account-1")
            await journal.append("account-1", [AccountOpened("ada")])
            with pytest.raises(InvalidDecision, match="not allowed"):
                await acct.ask(Deposit("1", 1))
            assert journal.stream_version("account-1") == 1
        refused = [e for e in journal.read_stream("$system") if e.type == "z8.TransitionRefused"]
        assert len(refused) == 1


# --- in a runtime -----------------------------------------------------------------------------


async def test_decisions_are_journaled_before_the_reply(journal: Journal) -> None:
    async with z8.Runtime(journal) as rt:
        acct = rt.spawn(Account, name="account-1")
        assert await acct.ask(OpenAccount("1", "ada")) == "opened"
        assert await acct.ask(Deposit("1", 100)) == 100
        stream = journal.read_stream("account-1")
        assert [journal.decode(e) for e in stream] == [AccountOpened("ada"), Deposited(100)]
        assert all(e.actor == "/app/account-1" and e.causation_id for e in stream)
        assert len({e.causation_id for e in stream}) == 2  # one command id per decision


async def test_a_rejection_writes_nothing(journal: Journal) -> None:
    async with z8.Runtime(journal) as rt:
        acct = rt.spawn(Account, name="account-1")
        await acct.ask(OpenAccount("1", "ada"))
        with pytest.raises(Rejected) as refused:
            await acct.ask(Withdraw("1", 5))
        assert refused.value.reason == "insufficient_funds" and refused.value.detail == {"balance": 0}
        assert journal.stream_version("account-1") == 1
        assert await acct.ask(Deposit("1", 5)) == 5  # the agent is fine


class Fragile(Account):
    """decide crashes on a zero-amount withdrawal; evolve chokes on a deposit of 13."""

    def decide(self, state: Any, command: Any, ctx: Any) -> Any:
        if isinstance(command, Withdraw) and command.amount == 0:
            raise ZeroDivisionError("boom")
        if isinstance(command, Deposit) and command.amount == 13:
            return z8.Decision([Deposited(13)])
        return super().decide(state, command, ctx)

    def evolve(self, state: Any, event: Any) -> Any:
        if isinstance(event, Deposited) and event.amount == 13:
            raise ValueError("unlucky")
        return super().evolve(state, event)


async def test_an_event_that_does_not_fold_writes_nothing(journal: Journal) -> None:
    async with z8.Runtime(journal) as rt:
        acct = rt.spawn(Fragile, name="account-1")
        await acct.ask(OpenAccount("1", "ada"))
        with pytest.raises(InvalidDecision, match="unlucky"):
            await acct.ask(Deposit("1", 13))
        assert journal.stream_version("account-1") == 1
        assert await acct.ask(Deposit("1", 2)) == 2


async def test_a_crash_in_decide_restarts_the_agent_from_its_journal(journal: Journal) -> None:
    async with z8.Runtime(journal, max_restarts=10) as rt:
        acct = rt.spawn(Fragile, name="account-1")
        await acct.ask(OpenAccount("1", "ada"))
        await acct.ask(Deposit("1", 40))
        with pytest.raises(ActorDied) as died:
            await acct.ask(Withdraw("1", 0))
        assert isinstance(died.value.cause, AgentCrashed)
        assert isinstance(died.value.cause.__cause__, ZeroDivisionError)
        assert await acct.ask(Withdraw("1", 15)) == 25  # the restarted incarnation rebuilt 40
        assert rt.tree().find("/app/account-1").restarts == 1


async def test_an_agent_resumes_after_the_runtime_restarts(journal: Journal) -> None:
    async with z8.Runtime(journal) as rt:
        acct = rt.spawn(Account, name="account-9")
        await acct.ask(OpenAccount("9", "bob"))
        for amount in (10, 20, 30):
            await acct.ask(Deposit("9", amount))
    async with z8.Runtime(journal) as rt:
        acct = rt.spawn(Account, name="account-9")
        assert await acct.ask(Withdraw("9", 60)) == 0
        with pytest.raises(Rejected):
            await acct.ask(OpenAccount("9", "bob"))


async def test_another_writer_moving_the_stream_makes_the_agent_decide_again(journal: Journal) -> None:
    async with z8.Runtime(journal) as rt:
        acct = rt.spawn(Account, name="account-1")
        await acct.ask(OpenAccount("1", "ada"))
        await journal.append("account-1", [Deposited(500)], 1)  # behind the agent's back
        assert await acct.ask(Withdraw("1", 300)) == 200  # caught up, decided again on 500
        assert [e.version for e in journal.read_stream("account-1")] == [1, 2, 3]


class Snappy(Account):
    snapshot_every = 5


async def test_snapshots_shorten_rehydration_and_outdated_ones_are_ignored(journal: Journal) -> None:
    async with z8.Runtime(journal) as rt:
        acct = rt.spawn(Snappy, name="account-1")
        await acct.ask(OpenAccount("1", "ada"))
        for _ in range(11):
            await acct.ask(Deposit("1", 1))
        for _ in range(100):
            if (snap := journal.load_snapshot("account-1")) is not None and snap.version >= 10:
                break
            await asyncio.sleep(0.01)
    assert snap is not None and snap.version == 10
    assert msgspec.msgpack.decode(snap.data, type=AccountState).balance == 9

    folded: list[Any] = []

    class Counting(Snappy):
        def evolve(self, state: Any, event: Any) -> Any:
            folded.append(event)
            return super().evolve(state, event)

    async with z8.Runtime(journal) as rt:
        acct = rt.spawn(Counting, name="account-1")
        assert await acct.ask(Deposit("1", 0 + 1)) == 12
    assert folded[:2] == [Deposited(1), Deposited(1)] and len(folded) == 3  # 2 after the snapshot, 1 new

    await journal.save_snapshot("account-1", 13, msgspec.msgpack.encode({"weird": True}), schema=99)
    folded.clear()
    async with z8.Runtime(journal) as rt:
        acct = rt.spawn(Counting, name="account-1")
        assert await acct.ask(Deposit("1", 1)) == 13  # the schema-99 snapshot was ignored
    assert len(folded) == 14  # rebuilt from all 13 events, then the new one


class Sleepy(Account):
    idle_timeout = 0.05


async def test_an_idle_agent_passivates_and_comes_back(journal: Journal) -> None:
    async with z8.Runtime(journal) as rt:
        acct = rt.spawn(Sleepy, name="account-1")
        await acct.ask(OpenAccount("1", "ada"))
        await acct.ask(Deposit("1", 7))
        for _ in range(100):
            if rt.tree().find("/app/account-1") is None:
                break
            await asyncio.sleep(0.01)
        assert not acct.alive and rt.tree().find("/app/account-1") is None
        again = rt.spawn(Sleepy, name="account-1")
        assert await again.ask(Deposit("1", 1)) == 8


async def test_an_agent_busier_than_its_idle_timeout_stays_until_it_is_quiet(journal: Journal) -> None:
    async with z8.Runtime(journal) as rt:
        acct = rt.spawn(Sleepy, name="account-1")
        await acct.ask(OpenAccount("1", "ada"))
        loop = asyncio.get_running_loop()
        busy_until = loop.time() + 0.3  # six idle timeouts, a message every 10 ms
        while loop.time() < busy_until:
            await acct.ask(Deposit("1", 1))
            await asyncio.sleep(0.01)
            assert acct.alive, "passivated while messages kept coming"
        quiet = loop.time()
        while acct.alive and loop.time() - quiet < 2:
            await asyncio.sleep(0.01)
        assert not acct.alive and 0.04 <= loop.time() - quiet < 1.0


async def test_an_agent_restarted_often_still_snapshots_every_n_events(journal: Journal) -> None:
    async with z8.Runtime(journal) as rt:
        for round_ in range(3):  # three short lives of 3 events each (plus the opening)
            acct = rt.spawn(Snappy, name="account-1")
            if round_ == 0:
                await acct.ask(OpenAccount("1", "ada"))
            for _ in range(3):
                await acct.ask(Deposit("1", 1))
            await acct.stop()
        for _ in range(100):
            if journal.load_snapshot("account-1") is not None:
                break
            await asyncio.sleep(0.01)
    snapshot = journal.load_snapshot("account-1")
    assert snapshot is not None and snapshot.version >= 5  # counted across lives, not per process
