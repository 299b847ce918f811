"""Child process for the AI crash test (tests/test_ai_agent.py): start AI runs, then wait to be killed.

Usage: python ai_run_worker.py PATH URL RUNS

Opens an Application on the journal PATH (durability "sync") with the golden triage agent
(tests/_ai_golden.py) talking to the OpenAI-compatible server at URL, dispatches
``StartRun`` for runs ``c0`` … ``c{RUNS-1}``, prints ``STARTED`` and waits forever: the
test SIGKILLs it mid-run.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import z8  # noqa: E402
import z8.ai  # noqa: E402
from _ai_golden import GoldenTriage  # noqa: E402


async def main(path: str, url: str, runs: int) -> None:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    models = z8.ai.Models({"fast": "local:model"}, providers={"local": z8.ai.OpenAIProvider(url, "key")})
    async with z8.Application(z8.ai.route(z8.Router(), GoldenTriage), path, effects=[models.effect]) as app:
        for n in range(runs):
            await app.dispatch(GoldenTriage.StartRun(run_id=f"c{n}", query=f"double charged, case {n}"))
        print("STARTED", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
