"""The seed's bank: an Account agent whose state is its event stream.

    python examples/bank.py [--dir DIR]

Commands ``OpenAccount``, ``Deposit`` and ``Withdraw`` go to ``Account`` agents named
``account-<id>``. ``decide`` is pure and refuses what a bank would refuse
(``insufficient_funds``…); ``evolve`` folds events into state. The runtime journals every
accepted decision before replying; a crash or a restart rebuilds each account from its
stream, so balances are exactly the fold of their events.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from pathlib import Path

import msgspec

import z8
from z8.errors import Rejected


# --- commands and events ------------------------------------------------------------------


class OpenAccount(msgspec.Struct, frozen=True):
    account_id: str
    owner: str


class Deposit(msgspec.Struct, frozen=True):
    account_id: str
    amount: int


class Withdraw(msgspec.Struct, frozen=True):
    account_id: str
    amount: int


class GetBalance(msgspec.Struct, frozen=True):
    """A query: answered from state, writes nothing."""

    account_id: str


class AccountOpened(msgspec.Struct, frozen=True):
    owner: str


class Deposited(msgspec.Struct, frozen=True):
    amount: int


class Withdrawn(msgspec.Struct, frozen=True):
    amount: int


EVENTS = (AccountOpened, Deposited, Withdrawn)


# --- the agent ----------------------------------------------------------------------------


class AccountState(msgspec.Struct, frozen=True):
    status: str = "new"
    owner: str = ""
    balance: int = 0


class Account(z8.Agent):
    """A bank account: opened once, never overdrawn."""

    State = AccountState
    agent_machine = z8.Machine.of("new", {"new": ["open"], "open": []})
    snapshot_every = 100

    def decide(self, state: AccountState, command: object, ctx: z8.actors.CommandContext) -> z8.Decision | z8.actors.Rejection:
        match command:
            case OpenAccount(owner=owner):
                if state.status != "new":
                    return z8.reject("already_open")
                return z8.Decision([AccountOpened(owner)], reply="opened")
            case Deposit(amount=amount) | Withdraw(amount=amount) if amount <= 0:
                return z8.reject("invalid_amount", amount=amount)
            case _ if state.status != "open":
                return z8.reject("not_open")
            case GetBalance():
                return z8.Decision([], reply=state.balance)
            case Deposit(amount=amount):
                return z8.Decision([Deposited(amount)], reply=state.balance + amount)
            case Withdraw(amount=amount):
                if amount > state.balance:
                    return z8.reject("insufficient_funds", balance=state.balance)
                return z8.Decision([Withdrawn(amount)], reply=state.balance - amount)
        return z8.reject("unknown_command")

    def evolve(self, state: AccountState, event: object) -> AccountState:
        match event:
            case AccountOpened(owner=owner):
                return msgspec.structs.replace(state, status="open", owner=owner)
            case Deposited(amount=amount):
                return msgspec.structs.replace(state, balance=state.balance + amount)
            case Withdrawn(amount=amount):
                return msgspec.structs.replace(state, balance=state.balance - amount)
        return state


def bank_types() -> z8.TypeRegistry:
    return z8.TypeRegistry(EVENTS)


def bank_router() -> z8.Router:
    """Commands to ``Account`` agents named ``account-<account_id>``."""
    router = z8.Router().identify(Account, by="account_id", prefix="account-")
    return router.dispatch(OpenAccount, Deposit, Withdraw, GetBalance, to=Account)


# --- the demo -----------------------------------------------------------------------------


async def main(directory: Path) -> bool:
    journal = z8.open_journal(directory / "bank", types=bank_types())
    async with z8.Runtime(journal, name="bank") as runtime:
        ada = runtime.spawn(Account, name="account-ada")
        print("open:", await ada.ask(OpenAccount("ada", "Ada Lovelace")))
        print("deposit 100 ->", await ada.ask(Deposit("ada", 100)))
        print("withdraw 30 ->", await ada.ask(Withdraw("ada", 30)))
        try:
            await ada.ask(Withdraw("ada", 1_000))
        except Rejected as refused:
            print("withdraw 1000 ->", refused)
        await ada.stop()  # the agent leaves memory; its stream stays

    async with z8.Runtime(journal, name="bank") as runtime:  # a new process would do the same
        ada = runtime.spawn(Account, name="account-ada")
        balance = await ada.ask(Deposit("ada", 1))
        print("after a restart, deposit 1 ->", balance, "(rebuilt from the journal)")
    events = [journal.decode(e) for e in journal.read_stream("account-ada")]
    print("account-ada's stream:", events)
    ok = balance == 71 and journal.verify().ok
    journal.close()
    print("bank demo " + ("passed" if ok else "FAILED"))
    return ok


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="where to put the journal (default: a temporary directory)")
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="z8-bank-"))
    ok = asyncio.run(main(directory))
    if args.dir is None:
        shutil.rmtree(directory, ignore_errors=True)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    cli()
