"""Regenerates tests/golden/ai-run-v1: AI runs recorded with the agents of tests/_ai_golden.py.

    python tests/golden/make_ai_run_v1.py

Run it only for a deliberate change of what the agents ask (their replay then diverges:
tests/test_ai_replay.py says where).
"""

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

import lmdb

sys.path.insert(0, str(Path(__file__).parent.parent))

import z8  # noqa: E402
import z8.ai  # noqa: E402
from _ai_golden import FORK, RUNS, GoldenAuto, GoldenTriage, model  # noqa: E402

HERE = Path(__file__).parent / "ai-run-v1"


async def write(path: Path) -> None:
    models = z8.ai.Models.scripted(model)
    router = z8.ai.route(z8.Router(), GoldenTriage, GoldenAuto)
    async with z8.Application(router, path, effects=[models.effect]) as app:
        for agent, run_id, query in RUNS:
            await app.dispatch(agent.StartRun(run_id=run_id, query=query))
            result = await z8.ai.await_run(app, run_id, timeout=10)
            print(run_id, result.status, result.strategy, repr(result.answer))
        source, at_step, fork_id, overrides = FORK
        await z8.ai.fork(app, source, at_step=at_step, new_run_id=fork_id, **overrides)
        print(fork_id, (await z8.ai.await_run(app, fork_id, timeout=10)).answer)


def main() -> None:
    scratch = Path(tempfile.mkdtemp())
    asyncio.run(write(scratch / "j"))
    shutil.rmtree(HERE, ignore_errors=True)
    HERE.mkdir(parents=True)
    env = lmdb.open(str(scratch / "j"), max_dbs=16, readonly=True, lock=False)
    env.copy(str(HERE), compact=True)
    env.close()
    shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
