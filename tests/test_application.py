"""The application: routing commands to agents activated on demand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import test_agents  # noqa: F401 - loads examples/bank.py as the module "bank"
from bank import Account, Deposit, OpenAccount, Withdraw, bank_types
from z8.app import Application, Router
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
