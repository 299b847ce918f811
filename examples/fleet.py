"""The fleet: 100,000 bank accounts, a crash in the middle, and an exact recovery.

    python examples/fleet.py [--accounts N] [--operations N] [--dir DIR]

1. A worker process opens the accounts and pours deposits and withdrawals into them
   through an ``Application`` (each command journaled, durably, before it is answered).
2. Half-way, the worker is killed with SIGKILL: no shutdown, no flush, nothing.
3. This process reopens the same journal and carries on; every account it touches is
   rehydrated from its stream (the state machine is the program counter: nothing is
   re-executed).
4. Every account's balance, as its agent holds it, is checked against the fold of its
   events read straight from the journal, and the hash chain is verified.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bank import Deposit, GetBalance, OpenAccount, Withdraw, bank_router, bank_types  # noqa: E402

import z8  # noqa: E402
from z8.errors import Rejected  # noqa: E402

IN_FLIGHT = 512


def operations(accounts: int, count: int, seed: int) -> Iterator[object]:
    rng = random.Random(seed)
    for _ in range(count):
        account = str(rng.randrange(accounts))
        if rng.random() < 0.6:
            yield Deposit(account, rng.randint(1, 500))
        else:
            yield Withdraw(account, rng.randint(1, 400))


async def pour(app: z8.Application, commands: Iterator[object], report: bool = False) -> tuple[int, int]:
    """Dispatch ``commands`` with IN_FLIGHT at a time; returns (accepted, rejected)."""
    accepted = rejected = 0

    async def worker() -> None:
        nonlocal accepted, rejected
        for command in commands:  # one shared iterator: each command is taken once
            try:
                await app.dispatch(command, timeout=60)
                accepted += 1
            except Rejected:
                rejected += 1
            if report and (accepted + rejected) % 1000 == 0:
                print(f"ack {accepted + rejected}", flush=True)

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return accepted, rejected


async def run_worker(path: Path, accounts: int, ops: int) -> None:
    async with z8.Application(bank_router(), path, types=bank_types()) as app:
        await pour(app, (OpenAccount(str(i), f"owner {i}") for i in range(accounts)))
        print("opened", flush=True)
        await pour(app, operations(accounts, ops, seed=1), report=True)
        print("finished", flush=True)  # the parent kills us before this, on purpose


def fold_balances(journal: z8.Journal) -> dict[str, int]:
    """Balances computed from the log itself, independently of any agent."""
    balances: dict[str, int] = {}
    for envelope in journal.read_all():
        if envelope.stream.startswith("account-"):
            event = journal.decode(envelope)
            amount = getattr(event, "amount", 0)
            sign = -1 if envelope.type == "Withdrawn" else 1
            balances[envelope.stream] = balances.get(envelope.stream, 0) + sign * amount
    return balances


async def main(directory: Path, accounts: int, ops: int) -> bool:
    path = directory / "fleet"
    start = time.perf_counter()
    worker = subprocess.Popen(
        [sys.executable, __file__, "--worker", "--dir", str(directory), "--accounts", str(accounts),
         "--operations", str(ops)],
        stdout=subprocess.PIPE, text=True,
    )
    assert worker.stdout is not None
    half = ops // 2
    for line in worker.stdout:
        if line.startswith("opened"):
            print(f"1. worker opened {accounts:,} accounts ({time.perf_counter() - start:.1f}s)")
        if line.startswith("ack") and int(line.split()[1]) >= half:
            break
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    print(f"2. killed the worker with SIGKILL after {half:,} acknowledged operations "
          f"({time.perf_counter() - start:.1f}s)")

    async with z8.Application(bank_router(), path, types=bank_types()) as app:
        journal = app.journal
        before = journal.head_position()
        accepted, rejected = await pour(app, operations(accounts, ops, seed=2))
        print(f"3. recovered and carried on: {accepted:,} more accepted, {rejected:,} rejected "
              f"(insufficient funds); the journal grew from {before:,} to {journal.head_position():,} events "
              f"({time.perf_counter() - start:.1f}s)")
        expected = fold_balances(journal)
        mismatches = 0
        for i in range(accounts):
            stream = f"account-{i}"
            held = await app.dispatch(GetBalance(str(i)))
            mismatches += held != expected.get(stream, 0)
        report = journal.verify()
    print(f"4. {accounts:,} balances checked against the fold of their events: {mismatches} mismatches; "
          f"verify(): {report} ({time.perf_counter() - start:.1f}s)")
    ok = mismatches == 0 and report.ok and len(expected) == accounts
    print("fleet demo " + ("passed" if ok else "FAILED"))
    return ok


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="where to put the journal (default: a temporary directory)")
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--operations", type=int, default=100_000)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(run_worker(args.dir / "fleet", args.accounts, args.operations))
        return
    directory = args.dir or Path(tempfile.mkdtemp(prefix="z8-fleet-"))
    ok = asyncio.run(main(directory, args.accounts, args.operations))
    if args.dir is None:
        shutil.rmtree(directory, ignore_errors=True)
    os._exit(0 if ok else 1)


if __name__ == "__main__":
    cli()
