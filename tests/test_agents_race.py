"""Two processes race on one agent: the loser reloads and decides again; nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import test_agents  # noqa: F401 - loads examples/bank.py as "bank"
from bank import Account, OpenAccount, bank_router, bank_types
from z8.actors import fold
from z8.app import Application
from z8.journal import open_journal

WORKER = Path(__file__).parent / "_procs" / "agents_race_worker.py"
COUNT = 150


def test_two_processes_racing_on_one_agent_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "j"

    async def open_account() -> None:
        async with Application(bank_router(), path, types=bank_types(), durability="fast") as app:
            await app.dispatch(OpenAccount("shared", "both"))

    asyncio.run(open_account())
    workers = [
        subprocess.Popen([sys.executable, str(WORKER), str(path), str(base), str(COUNT)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for base in (1_000, 2_000)
    ]
    for worker in workers:
        assert worker.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
    for worker in workers:
        worker.stdin.write("go\n")  # type: ignore[union-attr]
        worker.stdin.flush()  # type: ignore[union-attr]
    outputs = [worker.communicate(timeout=120)[0].splitlines() for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)

    accepted = {int(line.split()[1]): int(line.split()[2]) for out in outputs for line in out if line.startswith("ok")}
    conflicted = {int(line.split()[1]) for out in outputs for line in out if line.startswith("conflict")}
    assert len(accepted) + len(conflicted) == 2 * COUNT
    with open_journal(path, types=bank_types()) as journal:
        stream = journal.read_stream("account-shared")
        assert [e.version for e in stream] == list(range(1, len(stream) + 1))
        deposits = [journal.decode(e).amount for e in stream if e.type == "Deposited"]
        assert sorted(deposits) == sorted(accepted)  # every acknowledged deposit exactly once
        assert not conflicted & set(deposits)  # a conflict wrote nothing
        state = fold(Account, [journal.decode(e) for e in stream])
        assert state.balance == sum(deposits)
        for event in stream[1:]:  # each reply was the balance right after its own event
            amount = journal.decode(event).amount
            prefix = [journal.decode(e) for e in stream if e.version <= event.version]
            assert accepted[amount] == fold(Account, prefix).balance
        assert journal.verify().ok
    interleaved = {journal_amount // 1000 for journal_amount in deposits[:40]}
    assert interleaved == {1, 2} or len(conflicted) > 0, "the processes never overlapped: no race was tested"
