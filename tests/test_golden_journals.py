"""Journals recorded by earlier z8 versions still open, verify, decode and extend.

A change that breaks reading old data fails here. Regenerate the golden files only
for a deliberate format change (tests/golden/make_journal_v1.py) and bump FORMAT_VERSION.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import msgspec
import pytest

from z8 import errors
from z8.journal import open_journal
from z8.testing import Deposited, conformance_types

GOLDEN = Path(__file__).parent / "golden"
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def golden_copy(tmp_path: Path) -> Path:
    target = tmp_path / "journal-v1"
    shutil.copytree(GOLDEN / "journal-v1", target)
    return target


async def test_golden_journal_v1_replays(golden_copy: Path) -> None:
    manifest = json.loads((GOLDEN / "journal-v1.json").read_text())
    with open_journal(golden_copy, types=conformance_types()) as journal:
        assert journal.verify().ok
        stored = journal.read_all()
        assert [(e.position, e.stream, e.version, e.type, e.event_id, e.hash.hex()) for e in stored] == [
            (m["position"], m["stream"], m["version"], m["type"], m["event_id"], m["hash"]) for m in manifest
        ]
        assert [msgspec.msgpack.decode(e.data) for e in stored] == [m["data"] for m in manifest]
        typed = [journal.decode(e) for e in stored if e.type != "LegacyFee"]
        assert typed[1:4] and all(isinstance(t, msgspec.Struct) for t in typed)
        with pytest.raises(errors.UnknownEventType, match="LegacyFee"):
            journal.decode(stored[4])
        assert journal.causes(stored[2].event_id) == [stored[0], stored[2]]
        assert journal.trace("req-1") == stored[:4]
        assert journal.load_snapshot("acct-2").data == b"snapshot-state"
        assert journal.cursor("projection") == 3
        [appended] = await journal.append("acct-2", [Deposited(1)], 3)
        assert appended.prev_hash == stored[-1].hash and journal.verify().ok
