"""Child process for tests/test_treasury_crash.py: close treasury days until killed.

Usage: python treasury_worker.py JOURNAL BANK_URL RUN DAYS_JSON [finish]

Runs the example's ``treasury_app`` (examples/treasury.py) on the shared LMDB journal
directory JOURNAL against the bank at BANK_URL (a real HTTP server in the test process;
every request carries ``X-Caller: RUN``). Once the application has started (and its
outbox begun recovering what the last, killed, worker left), it prints ``READY``, then
sends ``CloseDay`` for every day in the JSON list DAYS_JSON and waits until each is
closed: then it prints ``DONE``. Without ``finish`` it then idles until it is killed;
with ``finish`` it stops the application and exits 0. Meanwhile it prints
``OUTCOME <effect id>`` once an effect's outcome is journaled (committed), so the test
can kill just after one.

The test reads only those lines from stdout and ignores any other (structlog is sent
to stderr here, but a library could still print).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
from pathlib import Path

import structlog

import z8

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("treasury", ROOT / "examples" / "treasury.py")
treasury = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["treasury"] = treasury
_spec.loader.exec_module(treasury)  # type: ignore[union-attr]

FINISH_TIMEOUT = 120.0
OUTCOMES = {"z8.EffectSucceeded", "z8.EffectFailed"}


def emit(word: str) -> None:
    os.write(1, f"{word}\n".encode())  # one write: the line arrives whole


async def report_outcomes(app: z8.Application, start: int) -> None:
    """``OUTCOME <effect id>`` as soon as an effect's outcome is journaled."""
    async with app.journal.subscribe(start, types=OUTCOMES) as outcomes:
        async for envelope in outcomes:
            emit(f"OUTCOME {app.journal.decode(envelope).effect_id}")


async def exit_with_parent(parent: int) -> None:
    """A worker left behind by a test that died would idle forever: leave with it."""
    while os.getppid() == parent:
        await asyncio.sleep(0.5)
    os._exit(3)


async def main() -> None:
    path, url, run, days = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    finish = sys.argv[5:6] == ["finish"]
    client = treasury.BankClient(url, caller=run)
    watchdog = asyncio.create_task(exit_with_parent(os.getppid()))
    async with treasury.treasury_app(path, client) as app:
        emit("READY")
        reporter = asyncio.create_task(report_outcomes(app, app.journal.head_position() + 1))
        await treasury.close_days(app, days, timeout=FINISH_TIMEOUT)
        emit("DONE")
        if not finish:
            await asyncio.Event().wait()  # until SIGKILL
        reporter.cancel()
    watchdog.cancel()
    await client.http.aclose()


if __name__ == "__main__":
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    asyncio.run(main())
