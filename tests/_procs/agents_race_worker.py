"""Deposits into one shared account from its own process: ``agents_race_worker.py PATH BASE COUNT``.

Prints one line per dispatch: ``ok AMOUNT BALANCE`` or ``conflict AMOUNT``.
"""

import asyncio
import importlib.util
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("bank", Path(__file__).parents[2] / "examples" / "bank.py")
bank = importlib.util.module_from_spec(spec)
sys.modules["bank"] = bank
spec.loader.exec_module(bank)

from z8.app import Application  # noqa: E402
from z8.errors import ConcurrencyConflict  # noqa: E402


async def main(path: str, base: int, count: int) -> None:
    async with Application(bank.bank_router(), path, types=bank.bank_types(), durability="sync") as app:
        print("ready", flush=True)
        sys.stdin.readline()  # start together
        for i in range(count):
            amount = base + i
            try:
                balance = await app.dispatch(bank.Deposit("shared", amount))
                print(f"ok {amount} {balance}", flush=True)
            except ConcurrencyConflict:
                print(f"conflict {amount}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
