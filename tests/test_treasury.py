"""The treasury example's day, in-process, against its real HTTP bank on 127.0.0.1.

The plan is journaled once, each wire reaches the bank once per key, the ack the bank
loses on purpose ends as ``EffectSucceeded(resolved=True)`` through the status query,
the ledger is posted once and the chain verifies.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from z8.effects import EffectIntended, EffectRetrying, EffectSucceeded, EffectUnknown

ROOT = Path(__file__).resolve().parents[1]
if "treasury" not in sys.modules:  # examples/ is no package: load the example by path, once
    _spec = importlib.util.spec_from_file_location("treasury", ROOT / "examples" / "treasury.py")
    _treasury = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
    sys.modules["treasury"] = _treasury
    _spec.loader.exec_module(_treasury)  # type: ignore[union-attr]
import treasury  # noqa: E402
from _bank_server import Bank  # noqa: E402 - on sys.path once the example is loaded

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_the_day_closes_once_and_the_lost_ack_is_resolved(tmp_path: Path) -> None:
    day = await treasury.treasury(tmp_path)
    records, bank, plan = day["records"], day["bank"], day["plan"]
    keys = [w.key for w in plan.wires]
    orders = {w.key: w.order for w in plan.wires}
    assert len(keys) == 4 and [w.order.purpose for w in plan.wires].count("hedge") == 1

    assert sum(isinstance(r, treasury.PlanDecided) for r in records) == 1, "the plan is decided once"
    intents = [r for r in records if isinstance(r, EffectIntended) and r.effect == "wire"]
    assert [i.effect_id for i in intents] == keys, "the plan names each wire by its effect id"
    assert all(i.kind == "irreversible" and i.idempotent for i in intents)

    # each wire reached the bank exactly once per key, as planned
    assert sorted(bank.wires) == sorted(keys)
    for key in keys:
        assert bank.count("POST", "/wires", key=key, outcome="applied") == 1
        applied = {k: v for k, v in bank.wires[key].items() if k != "id"}
        assert applied == {f: getattr(orders[key], f) for f in orders[key].__struct_fields__}

    # the lost ack: re-sent with its key (replayed, never re-applied), then resolved by the status query
    (lost,) = [key for key in keys if orders[key].source == treasury.LOST_ACK]
    attempts = treasury.WIRE_RETRY.attempts
    assert bank.count("POST", "/wires", key=lost, lost=True) == attempts
    assert bank.count("POST", "/wires", key=lost, outcome="replayed") == attempts - 1
    assert bank.count("GET", "/wires/", key=lost, outcome="found") == 1
    assert [r.effect_id for r in records if isinstance(r, EffectRetrying)] == [lost] * (attempts - 1)
    assert [r.effect_id for r in records if isinstance(r, EffectUnknown)] == [lost]
    outcomes = {r.effect_id: r for r in records if isinstance(r, EffectSucceeded)}
    assert outcomes[lost].resolved and outcomes[lost].attempts == attempts
    assert outcomes[lost].result == bank.wires[lost]["id"]
    assert not any(outcomes[key].resolved for key in keys if key != lost)
    assert all(bank.count("POST", "/wires", key=key) == 1 for key in keys if key != lost)
    settled = [r for r in records if isinstance(r, treasury.WireSettled)]
    assert sorted(r.key for r in settled) == sorted(keys) and [r.key for r in settled if r.resolved] == [lost]

    # the ledger is posted once, with every wire, and the day closed once
    assert bank.count("POST", "/ledger") == 1 and len(bank.ledger) == 1
    (entry,) = bank.ledger.values()
    assert sorted(line["key"] for line in entry["lines"]) == sorted(keys)
    closed = [r for r in records if isinstance(r, treasury.DayClosed)]
    assert closed == [treasury.DayClosed(entry["id"], 4, 0)] and records[-1] == closed[0]
    assert bank.count("GET", "/balances") == 1
    assert day["verify_ok"]


async def test_a_closed_day_asks_the_bank_nothing_again(tmp_path: Path) -> None:
    """Restarted on the same journal against changed balances, the day stays as decided."""
    await treasury.treasury(tmp_path)
    changed = {treasury.DAY: [{"account": "USD-OPS-1", "currency": "USD", "balance_minor": 9_000_000_00}]}
    with Bank(changed.get) as bank:
        client = treasury.BankClient(bank.url)
        async with treasury.treasury_app(tmp_path / "treasury", client) as app:
            await treasury.close_days(app, [treasury.DAY], timeout=10)
            assert await app.dispatch(treasury.CloseDay(treasury.DAY)) == "closed"
            stream = app.journal.read_stream(f"treasury-{treasury.DAY}")
            assert sum(e.type == "PlanDecided" for e in stream) == 1
        await client.http.aclose()
    assert bank.requests == []


def test_the_plan_is_a_pure_function_of_the_balances() -> None:
    balances = [
        treasury.Balance("A", "USD", treasury.KEEP_MINOR + 5), treasury.Balance("B", "USD", treasury.KEEP_MINOR),
        treasury.Balance("C", "AUD", -treasury.HEDGE_AT_MINOR),  # at the threshold: not hedged
    ]
    orders, why = treasury.sweep_plan("d", balances)
    assert orders == [treasury.WireOrder("d", "A", "MMF-USD", "USD", 5, "sweep")]
    assert "within" not in why and "hedged" not in why
    short = [treasury.Balance("C", "AUD", -treasury.HEDGE_AT_MINOR - 1)]
    assert treasury.sweep_plan("d", short)[0] == [
        treasury.WireOrder("d", "FX-DESK", "FWD-AUDUSD", "AUD", treasury.HEDGE_AT_MINOR + 1, "hedge")
    ]
