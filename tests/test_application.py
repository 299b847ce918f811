"""The application: routing commands to agents activated on demand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import test_agents  # noqa: F401 - loads examples/bank.py as the module "bank"
from bank import Account, Deposit, OpenAccount, Withdraw, bank_types
from z8.app import Application, Router
from z8.journal import open_journal
from z8.errors import AgentCrashed, InvalidCommand, InvalidSpec, Rejected, Unroutable

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def bank_router() -> Router:
    return (
        Router()
        .identify(Account, by="account_id", prefix="account-")
        .dispatch(OpenAccount, Deposit, Withdraw, to=Account)
    )


async def test_commands_reach_agents_activated_on_demand(tmp_path: Path) -> None:
    async with Application(bank_router(), tmp_path / "j", types=bank_types(), durability="fast") as app:
        assert await app.dispatch(OpenAccount("42", "ada")) == "opened"
        assert await app.dispatch(Deposit("42", 10)) == 10
        assert await app.dispatch({"type": "Withdraw", "account_id": "42", "amount": 4}) == 6
        assert await app.dispatch(b'{"type": "Deposit", "account_id": "42", "amount": 1}') == 7
        with pytest.raises(Rejected, match="insufficient_funds"):
            await app.dispatch(Withdraw("42", 100))
        node = app.tree().find("/app/account/account-42")
        assert node is not None and node.kind == "actor"
        assert app.journal.stream_version("account-42") == 4


async def test_bad_commands_are_named(tmp_path: Path) -> None:
    async with Application(bank_router(), tmp_path / "j", types=bank_types(), durability="fast") as app:
        with pytest.raises(InvalidCommand, match=r"amount"):
            await app.dispatch({"type": "Deposit", "account_id": "1", "amount": "lots"})
        with pytest.raises(Unroutable, match="Refund"):
            await app.dispatch({"type": "Refund", "account_id": "1"})
        with pytest.raises(InvalidCommand, match="JSON object"):
            await app.dispatch('"just a string"')
        with pytest.raises(InvalidCommand, match="account_id"):
            await app.dispatch(Deposit("", 1))
        with pytest.raises(InvalidCommand, match="JSON"):
            await app.dispatch(b"{nope")


def test_routes_are_validated_when_declared() -> None:
    with pytest.raises(InvalidSpec, match="identify"):
        Router().dispatch(Deposit, to=Account)
    with pytest.raises(InvalidSpec, match="no field"):
        Router().identify(Account, by="owner_id").dispatch(Deposit, to=Account)
    router = bank_router()
    with pytest.raises(InvalidSpec, match="already routed"):
        router.dispatch(Deposit, to=Account)


async def test_middleware_wraps_every_dispatch(tmp_path: Path) -> None:
    seen: list[str] = []

    async def audit(command: Any, call_next: Any) -> Any:
        seen.append(f"before {type(command).__name__}")
        reply = await call_next(command)
        seen.append(f"after {reply}")
        return reply

    async def deny_big(command: Any, call_next: Any) -> Any:
        if getattr(command, "amount", 0) > 1000:
            raise PermissionError("too big for this caller")
        return await call_next(command)

    router = bank_router().use(audit).use(deny_big)
    async with Application(router, tmp_path / "j", types=bank_types(), durability="fast") as app:
        await app.dispatch(OpenAccount("1", "ada"))
        with pytest.raises(PermissionError):
            await app.dispatch(Deposit("1", 5000))
    assert seen == ["before OpenAccount", "after opened", "before Deposit"]


async def test_a_crashing_decision_surfaces_as_agent_crashed(tmp_path: Path) -> None:
    from test_agents import Fragile

    router = Router().identify(Fragile, by="account_id", prefix="account-")
    router.dispatch(OpenAccount, Deposit, Withdraw, to=Fragile)
    async with Application(router, tmp_path / "j", types=bank_types(), durability="fast") as app:
        await app.dispatch(OpenAccount("1", "ada"))
        await app.dispatch(Deposit("1", 9))
        with pytest.raises(AgentCrashed) as crashed:
            await app.dispatch(Withdraw("1", 0))
        assert isinstance(crashed.value.__cause__, ZeroDivisionError)
        assert await app.dispatch(Withdraw("1", 4)) == 5


# --- event handlers ---------------------------------------------------------------------------

from bank import Deposited, Withdrawn  # noqa: E402
from z8.app import EventHandler, Retry, Skip, Stop  # noqa: E402
from z8.errors import HandlerStopped  # noqa: E402


class Balances(EventHandler):
    """A projection: balance per account, kept in memory."""

    handler_name = "balances"
    handler_types = (Deposited, Withdrawn)
    handler_consistency = "strong"

    def __init__(self) -> None:
        self.balances: dict[str, int] = {}
        self.seen: list[int] = []

    async def handle(self, event: Any, envelope: Any) -> None:
        delta = event.amount if isinstance(event, Deposited) else -event.amount
        self.balances[envelope.stream] = self.balances.get(envelope.stream, 0) + delta
        self.seen.append(envelope.position)


async def test_a_strong_handler_has_seen_the_events_when_dispatch_returns(tmp_path: Path) -> None:
    balances = Balances()
    async with Application(bank_router(), tmp_path / "j", types=bank_types(), durability="fast",
                           handlers=[balances]) as app:
        await app.dispatch(OpenAccount("1", "ada"))
        for amount in (10, 20, 30):
            await app.dispatch(Deposit("1", amount), consistency="strong")
            assert balances.balances["account-1"] == sum(range(10, amount + 1, 10))
        await app.dispatch(Withdraw("1", 15), consistency="strong")
        assert balances.balances == {"account-1": 45}
        assert balances.seen == sorted(balances.seen)  # in log order
        with pytest.raises(Exception, match="consistency"):
            await app.dispatch(Deposit("1", 1), consistency="sometimes")  # type: ignore[arg-type]


async def test_a_handler_resumes_from_its_durable_cursor(tmp_path: Path) -> None:
    first = Balances()
    async with Application(bank_router(), tmp_path / "j", types=bank_types(), durability="fast",
                           handlers=[first]) as app:
        await app.dispatch(OpenAccount("1", "ada"))
        await app.dispatch(Deposit("1", 5), consistency="strong")
    second = Balances()
    async with Application(bank_router(), tmp_path / "j", types=bank_types(), durability="fast",
                           handlers=[second]) as app:
        await app.dispatch(Deposit("1", 7), consistency="strong")
        assert second.balances == {"account-1": 7}  # only what came after the acked cursor
    with open_journal(tmp_path / "j") as journal:
        assert journal.cursor("balances") >= second.seen[-1]  # acked durably


class Picky(EventHandler):
    """Fails on deposits of 13 (retried, then skipped) and of 666 (stops)."""

    handler_name = "picky"
    handler_types = (Deposited,)
    handler_consistency = "strong"

    def __init__(self) -> None:
        self.attempts: dict[int, int] = {}
        self.handled: list[int] = []

    async def handle(self, event: Any, envelope: Any) -> None:
        self.attempts[event.amount] = self.attempts.get(event.amount, 0) + 1
        if event.amount == 7 and self.attempts[7] < 3:
            raise ConnectionError("flaky downstream")
        if event.amount in (13, 666):
            raise ValueError(f"cannot take {event.amount}")
        self.handled.append(event.amount)

    async def on_error(self, error: Exception, event: Any, envelope: Any, attempt: int) -> Any:
        if isinstance(error, ConnectionError):
            return Retry(after=0.001)
        return Skip() if event.amount == 13 else Stop()


async def test_handler_verdicts_retry_skip_and_stop(tmp_path: Path) -> None:
    picky = Picky()
    async with Application(bank_router(), tmp_path / "j", types=bank_types(), durability="fast",
                           handlers=[picky]) as app:
        await app.dispatch(OpenAccount("1", "ada"))
        for amount in (7, 13, 2):
            await app.dispatch(Deposit("1", amount), consistency="strong")
        assert picky.handled == [7, 2] and picky.attempts == {7: 3, 13: 1, 2: 1}
        with pytest.raises(HandlerStopped, match="666"):
            await app.dispatch(Deposit("1", 666), consistency="strong")
        assert await app.dispatch(Deposit("1", 1)) == 689  # the agents go on; only the handler stopped


# --- the test kit's application fixtures --------------------------------------------------------

from z8.testing import FakeClock  # noqa: E402


class Stamped(Account):
    """Replies with the decision's ctx.now: the journaled time, from the runtime's clock."""

    def decide(self, state: Any, command: Any, ctx: Any) -> Any:
        outcome = super().decide(state, command, ctx)
        return outcome if not hasattr(outcome, "reply") else type(outcome)(outcome.events, reply=ctx.now)


async def test_the_app_fixture_runs_on_a_fake_clock(z8_app: Any, z8_clock: FakeClock) -> None:
    router = Router().identify(Stamped, by="account_id", prefix="account-")
    router.dispatch(OpenAccount, Deposit, Withdraw, to=Stamped)
    async with z8_app(router, types=bank_types()) as app:
        assert await app.dispatch(OpenAccount("1", "ada")) == z8_clock.now_ns
        z8_clock.advance(3600)
        assert await app.dispatch(Deposit("1", 5)) == 1_700_003_600_000_000_000
    with pytest.raises(ValueError):
        z8_clock.advance(-1)


async def test_shipped_middleware_validates_and_logs(tmp_path: Path) -> None:
    import structlog.testing

    from z8.app import log_commands, validate_commands

    router = bank_router().use(log_commands).use(validate_commands)
    async with Application(router, tmp_path / "j", types=bank_types(), durability="fast") as app:
        with structlog.testing.capture_logs() as logs:
            await app.dispatch(OpenAccount("1", "ada"))
            with pytest.raises(InvalidCommand, match=r"Deposit: Expected `int`, got `str` - at `\$.amount`"):
                await app.dispatch(Deposit("1", "ten"))  # type: ignore[arg-type]
            with pytest.raises(Rejected):
                await app.dispatch(Withdraw("1", 5))
        assert app.journal.stream_version("account-1") == 1
    assert [(e["event"], e["command"]) for e in logs] == [
        ("command.handled", "OpenAccount"), ("command.refused", "Deposit"), ("command.refused", "Withdraw"),
    ]
