"""Child process for tests/test_agents_crash.py: dispatch bank commands until killed.

Usage: python agents_crash_worker.py PATH RUN SEED ACCOUNTS TASKS PROBES [audit IDS.json]

Opens ``Application(router, PATH, types=bank_types(), durability="sync")`` over the
shared journal directory, prints ``READY``, then:

1. probes PROBES random accounts (from 0..ACCOUNTS-1, half of them among the "hot"
   ones) with a ``Withdraw`` larger than any balance, one probe at a time, before any
   other command: each answer (``insufficient_funds`` with the live agent's balance, or
   ``not_open``) is the state the agent rehydrated from the journal;
2. runs TASKS concurrent tasks, each dispatching a random stream of ``OpenAccount`` /
   ``Deposit`` / ``Withdraw`` commands (and some invalid amounts) over ACCOUNTS
   accounts, one command at a time per task, forever; half of a task's deposits and
   withdrawals go to accounts it has seen open, the rest anywhere (many are then
   refused: ``not_open``).

Every command carries a token unique over the whole storm:
``token = RUN * 10**6 + task * 10**5 + seq`` (probes use task 9), ``seq`` counting the
task's commands from 0. ``OpenAccount.owner`` is ``o<token>``; a ``Deposit`` or
``Withdraw`` amount is ``k * 10**8 + token`` (``k`` >= 1), so the one event an accepted
command produces names its command: ``amount % 10**8``. After each dispatch *returns*
(or raises ``Rejected``), one JSON line is written to stdout with a single ``os.write``
(atomic on a pipe below PIPE_BUF):
``{"t": token, "k": kind, "a": account, "m": amount, "r": reply}`` or, for a rejection,
``... "x": reason, "d": detail``. Any other exception is reported as ``{"error": ...}``.

With ``audit IDS.json`` the worker instead probes every account listed in the file
(a JSON list of account ids; all their agents active at once in this process), prints
``{"done": true, "alive": <agents alive>}`` and exits cleanly.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import random
import sys
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bank", ROOT / "examples" / "bank.py")
bank = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["bank"] = bank
_spec.loader.exec_module(bank)  # type: ignore[union-attr]

from z8.app import Application, Router  # noqa: E402
from z8.errors import Rejected  # noqa: E402

MAX_LINE = 4000  # below PIPE_BUF (4096): one os.write of a line is atomic
TOKEN_RUN = 10**6
TOKEN_TASK = 10**5
AMOUNT_UNIT = 10**8
PROBE_TASK = 9
PROBE_AMOUNT = 10**15  # more than any balance a run can build
HOTTEST, HOT = 2, 40
"""Accounts 0..HOTTEST-1, and 0..HOT-1, take a large share of the traffic: long streams,
snapshots (every 100 events), rehydration from a snapshot plus its tail after a kill."""
DISPATCH_TIMEOUT = 30.0


def emit(line: object) -> None:
    data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
    assert len(data) < MAX_LINE, len(data)
    os.write(1, data)


def router() -> Router:
    return (
        Router()
        .identify(bank.Account, by="account_id", prefix="account-")
        .dispatch(bank.OpenAccount, bank.Deposit, bank.Withdraw, to=bank.Account)
    )


async def send(
    app: Application, token: int, kind: str, account: str, command: object, amount: int | None
) -> dict[str, object]:
    line: dict[str, object] = {"t": token, "k": kind, "a": account}
    if amount is not None:
        line["m"] = amount
    try:
        line["r"] = await app.dispatch(command, timeout=DISPATCH_TIMEOUT)
    except Rejected as refused:
        line["x"] = refused.reason
        line["d"] = refused.detail
    except Exception as error:  # noqa: BLE001 - anything else is a finding: report it
        line["error"] = f"{type(error).__name__}: {error}"
    emit(line)
    return line


def pick_account(rng: random.Random, accounts: int) -> str:
    roll = rng.random()
    if roll < 0.3:
        return str(rng.randrange(min(HOTTEST, accounts)))
    if roll < 0.5:
        return str(rng.randrange(min(HOT, accounts)))
    return str(rng.randrange(accounts))


async def probe(app: Application, run: int, seq: int, account: str) -> None:
    token = run * TOKEN_RUN + PROBE_TASK * TOKEN_TASK + seq
    amount = PROBE_AMOUNT + token
    await send(app, token, "P", account, bank.Withdraw(account, amount), amount)


async def commands(app: Application, run: int, task: int, accounts: int, rng: random.Random) -> None:
    seq = 0
    known: list[str] = []  # accounts this task saw open: half its commands go there
    while True:
        assert seq < TOKEN_TASK, "token space exhausted"
        token = run * TOKEN_RUN + task * TOKEN_TASK + seq
        seq += 1
        roll = rng.random()
        account = rng.choice(known) if known and roll >= 0.15 and rng.random() < 0.5 else pick_account(rng, accounts)
        amount: int | None = None
        if roll < 0.15:
            kind, command = "O", bank.OpenAccount(account, f"o{token}")
        elif roll < 0.55:
            kind, amount = "D", rng.randint(1, 3) * AMOUNT_UNIT + token
            command = bank.Deposit(account, amount)
        elif roll < 0.95:
            kind, amount = "W", rng.randint(1, 5) * AMOUNT_UNIT + token
            command = bank.Withdraw(account, amount)
        else:  # refused whatever the state: invalid_amount
            kind, amount = rng.choice((("ID", -token), ("IW", -token)))
            command = (bank.Deposit if kind == "ID" else bank.Withdraw)(account, amount)
        line = await send(app, token, kind, account, command, amount)
        if account not in known and ("r" in line or line.get("x") in ("already_open", "insufficient_funds")):
            known.append(account)
        if rng.random() < 0.1:
            await asyncio.sleep(0)


async def main() -> None:
    path, run, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    accounts, tasks, probes = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    audit = sys.argv[8] if sys.argv[7:8] == ["audit"] else None
    assert 0 <= run < 100 and 0 < tasks < PROBE_TASK
    rng = random.Random(seed)
    async with Application(router(), path, types=bank.bank_types(), durability="sync") as app:
        emit("READY")
        if audit:
            ids = json.loads(Path(audit).read_text())
            for start in range(0, len(ids), 256):  # 256 activations (rehydrations) in flight at a time
                chunk = ids[start:start + 256]
                await asyncio.gather(*(probe(app, run, start + i, a) for i, a in enumerate(chunk)))
            agents = app.tree().find("/app/account")
            alive = sum(1 for node in agents.walk()[1:] if node.alive) if agents is not None else -1
            emit({"done": True, "alive": alive})
            return
        for seq in range(probes):
            await probe(app, run, seq, pick_account(rng, accounts))
        await asyncio.gather(*(commands(app, run, t, accounts, random.Random(rng.random())) for t in range(tasks)))


if __name__ == "__main__":
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    asyncio.run(main())
