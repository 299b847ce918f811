"""``z8 effects PATH`` lists what a human must look at: stuck, dead-lettered, parked effects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from _polling import until

import z8
from z8.effects import Call, EffectFailed, EffectStuck
from z8.errors import OutcomeUnknown, Retryable
from z8.policies import Allow, EffectRequest, RequireApproval
from z8.supervision import Backoff

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Send(msgspec.Struct, tag=True):
    id: str
    what: str


class Noted(msgspec.Struct, tag=True):
    outcome: str


class Box(msgspec.Struct):
    outcomes: list[str] = []


@z8.effect(kind="irreversible")
async def wire(request: str, ctx: z8.effects.EffectContext) -> str:
    if request == "lose-ack":
        raise OutcomeUnknown("the bank took the wire; the reply was lost")
    if request == "flaky":
        raise Retryable("connection refused")
    return "ok"


class Sender(z8.Agent):
    State = Box
    agent_effects = (z8.effect(wire.fn, name="wire", kind="irreversible",
                               retry=z8.Retry(attempts=2, backoff=Backoff(min=0.001, max=0.002))),)

    def decide(self, state: Box, message: object, ctx: object) -> z8.Decision:
        if isinstance(message, Send):
            return z8.Decision(effects=[Call("wire", message.what)], reply="sent")
        return z8.Decision(events=[Noted(type(message).__name__)])

    def evolve(self, state: Box, event: Noted) -> Box:
        return Box([*state.outcomes, event.outcome])


def gate(request: EffectRequest) -> Allow | RequireApproval:
    return RequireApproval(approvers=("cfo",)) if request.request == "big" else Allow()


async def test_cli_lists_stuck_dead_and_parked_effects(tmp_path: Path) -> None:
    types = z8.TypeRegistry([Send, Noted])
    router = z8.Router().identify(Sender, by="id").dispatch(Send, to=Sender)
    async with z8.Application(router, tmp_path / "j", types=types, gate=gate) as app:
        for name in ("lose-ack", "flaky", "big", "fine"):
            await app.dispatch(Send(name, name))
        await until(lambda: len(app.stuck()) == 1 and len(app.dead_letters()) == 1
                    and app.journal.stream_version("fine") == 3, what="a stuck, a dead and a settled effect")
        assert [v.stream for v in app.stuck()] == ["lose-ack"]
        assert [v.stream for v in app.dead_letters()] == ["flaky"]
        assert isinstance(app.journal.decode(app.journal.read_stream("flaky")[-2]), EffectFailed)
        assert isinstance(app.journal.decode(app.journal.read_stream("lose-ack")[-2]), EffectStuck)
    out = subprocess.run([sys.executable, "-m", "z8.cli", "effects", str(tmp_path / "j")],
                         capture_output=True, text=True, check=True).stdout
    rows = {row["stream"]: row for row in map(json.loads, out.splitlines())}
    assert {s: r["status"] for s, r in rows.items()} == {"lose-ack": "stuck", "flaky": "dead", "big": "parked"}
    assert rows["lose-ack"]["effect_id"] == "lose-ack/1/0"
    only = subprocess.run([sys.executable, "-m", "z8.cli", "effects", str(tmp_path / "j"), "--status", "dead"],
                          capture_output=True, text=True, check=True).stdout
    assert [json.loads(line)["stream"] for line in only.splitlines()] == ["flaky"]
