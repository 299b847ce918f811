"""Regenerates tests/golden/journal-v1 (run only when the format deliberately changes).

    python tests/golden/make_journal_v1.py
"""

import asyncio
import json
import shutil
import tempfile
from pathlib import Path

import lmdb
import msgspec

from z8.journal import NO_STREAM, Append, RawEvent, open_journal
from z8.testing import Deposited, Opened, Withdrawn, conformance_types

HERE = Path(__file__).parent / "journal-v1"


async def write(path: Path) -> None:
    async with open_journal(path, types=conformance_types()) as journal:
        [opened] = await journal.append("acct-1", [Opened("ada")], NO_STREAM, correlation_id="req-1", actor="teller")
        await journal.append_many(
            [Append("acct-1", [Withdrawn(30)], 1), Append("acct-2", [Opened("bob"), Deposited(30)], NO_STREAM)],
            causation_id=opened.event_id, correlation_id="req-1", actor="teller",
        )
        await journal.append("acct-2", [RawEvent("LegacyFee", msgspec.msgpack.encode({"cents": 5}))])
        await journal.append("$system", [Opened("runtime")], allow_reserved=True)
        await journal.save_snapshot("acct-2", 2, b"snapshot-state", schema=1)
        await journal.ack("projection", 3)
        manifest = [
            {"position": e.position, "stream": e.stream, "version": e.version, "type": e.type,
             "event_id": e.event_id, "hash": e.hash.hex(), "data": msgspec.msgpack.decode(e.data)}
            for e in journal.read_all()
        ]
    (HERE.parent / "journal-v1.json").write_text(json.dumps(manifest, indent=1) + "\n")


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
