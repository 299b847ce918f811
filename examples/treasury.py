"""The treasury agent's day: read balances, decide the sweeps once, wire, resolve a lost ack, post, close.

    python examples/treasury.py [--dir DIR]

``Treasury`` (an agent named ``treasury-<day>``) talks through ``httpx`` to a bank that is a
real HTTP server on 127.0.0.1 (``examples/_bank_server.py``). It reads the balances (a
``read`` effect), then decides the plan ONCE: which accounts sweep how much to the
money-market fund, the AUD hedge if the short is over the threshold, and why. The plan is
journaled in the same append as one ``wire`` intent per order, so no crash or late credit
can make it, or a key, come out differently. A wire is ``irreversible`` and ``idempotent``:
its effect id is the bank's ``Idempotency-Key``, and its ``resolve`` asks ``GET
/wires/{key}``. The bank applies one sweep but loses every acknowledgement of it: the runtime
re-sends it with the same key (nothing moves twice), records ``EffectUnknown``, asks the
bank, and finds the wire: ``EffectSucceeded(resolved=True)``. Then one ledger entry
(idempotent by key), and the day is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import msgspec

import z8
from z8.effects import NOT_FOUND, EffectContext, EffectFailed, EffectSucceeded

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bank, also when this file is loaded by path
from _bank_server import Bank  # noqa: E402

KEEP_MINOR = 1_000_000_00
"""What each operating account keeps overnight; the excess sweeps to the money-market fund."""
HEDGE_AT_MINOR = 500_000_00
"""An AUD short above this is hedged on the agreed forward."""
WIRE_RETRY = z8.Retry(attempts=3, backoff=z8.Backoff(min=0.05, max=0.5, jitter=0.2))


# --- what the agent and the bank exchange, and the agent's events --------------------------------


class CloseDay(msgspec.Struct, frozen=True):
    day: str


class Balance(msgspec.Struct, frozen=True):
    account: str
    currency: str
    balance_minor: int


class WireOrder(msgspec.Struct, frozen=True):
    day: str
    source: str
    target: str
    currency: str
    amount_minor: int
    purpose: str  # "sweep" or "hedge"


class PlannedWire(msgspec.Struct, frozen=True):
    key: str  # the wire's effect id: the Idempotency-Key the bank will see
    order: WireOrder


class GLEntry(msgspec.Struct, frozen=True):
    day: str
    lines: list[PlannedWire]  # each debits the target, credits the source; the key is its reference


class DayOpened(msgspec.Struct, frozen=True):
    day: str


class PlanDecided(msgspec.Struct, frozen=True):
    wires: list[PlannedWire]
    why: str


class WireSettled(msgspec.Struct, frozen=True):
    key: str
    wire_id: str = ""
    resolved: bool = False  # learnt from the bank's status query, not from the wire's own reply
    error: str = ""


class DayClosed(msgspec.Struct, frozen=True):
    ledger_entry: str
    wired: int
    failed: int


EVENTS = (DayOpened, PlanDecided, WireSettled, DayClosed)


# --- the bank's API as effects -------------------------------------------------------------------


class BankClient:
    """The bank over HTTP; ``ctx.key`` (the effect id) is every order's Idempotency-Key."""

    def __init__(self, url: str, caller: str = "treasury") -> None:
        self.http = httpx.AsyncClient(base_url=url, timeout=5.0, headers={"X-Caller": caller})

    async def read_balances(self, day: str, ctx: EffectContext) -> list[Balance]:
        reply = await self.http.get("/balances", params={"day": day})
        return msgspec.convert(reply.raise_for_status().json()["accounts"], list[Balance])

    async def wire(self, order: WireOrder, ctx: EffectContext) -> str:
        """The bank's id for the wire (W…)."""
        return await self._post("/wires", order, ctx.key)

    async def wire_status(self, order: WireOrder, ctx: EffectContext) -> Any:
        return await self._status("/wires", ctx.key)

    async def post_ledger(self, entry: GLEntry, ctx: EffectContext) -> str:
        return await self._post("/ledger", entry, ctx.key)

    async def ledger_status(self, entry: GLEntry, ctx: EffectContext) -> Any:
        return await self._status("/ledger", ctx.key)

    async def _post(self, path: str, body: Any, key: str) -> str:
        reply = await self.http.post(path, json=msgspec.to_builtins(body), headers={"Idempotency-Key": key})
        return reply.raise_for_status().json()["id"]

    async def _status(self, path: str, key: str) -> Any:
        reply = await self.http.get(f"{path}/{urllib.parse.quote(key, safe='')}")
        if reply.status_code == 404:
            return NOT_FOUND  # the bank never saw the key: the runtime may send it, same key
        return reply.raise_for_status().json()["id"]


def treasury_effects(bank: BankClient) -> list[z8.effects.Effect]:
    return [
        z8.effect(bank.read_balances, name="read_balances", kind="read"),
        z8.effect(bank.wire, name="wire", idempotent=True, resolve=bank.wire_status, retry=WIRE_RETRY, concurrency=2),
        z8.effect(bank.post_ledger, name="post_ledger", idempotent=True, resolve=bank.ledger_status),
    ]


# --- the policy and the agent --------------------------------------------------------------------


def sweep_plan(day: str, balances: list[Balance]) -> tuple[list[WireOrder], str]:
    """Pure: the day's orders, and why, from the day's balances alone."""
    orders = [WireOrder(day, b.account, f"MMF-{b.currency}", b.currency, b.balance_minor - KEEP_MINOR, "sweep")
              for b in balances if b.balance_minor > KEEP_MINOR]
    why = f"keep {KEEP_MINOR / 100:,.2f} per account: {len(orders)} sweep the excess to the money-market fund"
    short = -sum(b.balance_minor for b in balances if b.currency == "AUD" and b.balance_minor < 0)
    if short > HEDGE_AT_MINOR:
        orders.append(WireOrder(day, "FX-DESK", "FWD-AUDUSD", "AUD", short, "hedge"))
        why += f"; the AUD short of {short / 100:,.2f} is over {HEDGE_AT_MINOR / 100:,.2f}: hedged on the forward"
    return orders, why


class DayState(msgspec.Struct, frozen=True):
    status: str = "new"
    day: str = ""
    wires: dict[str, WireOrder] = {}  # the plan, by key
    settled: dict[str, WireSettled] = {}


class Treasury(z8.Agent):
    """One business day: read, plan once, wire, post the ledger once, close."""

    State = DayState
    agent_machine = z8.Machine.of("new", {"new": ["reading"], "reading": ["wiring", "posting"],
                                          "wiring": ["posting"], "posting": ["closed"]})

    def decide(self, state: DayState, message: object, ctx: z8.actors.CommandContext) -> z8.Decision:
        match message:
            case CloseDay(day=day) if state.status == "new":
                return z8.Decision([DayOpened(day)], reply="opened", effects=[z8.Call("read_balances", day)])
            case CloseDay():
                return z8.Decision(reply=state.status)
            case EffectSucceeded(effect="read_balances", result=balances) if state.status == "reading":
                orders, why = sweep_plan(state.day, balances)
                plan = PlanDecided([PlannedWire(ctx.effect_id(i), o) for i, o in enumerate(orders)], why)
                return self._then_post(state, plan, [z8.Call("wire", o) for o in orders])
            case EffectSucceeded(effect="wire", effect_id=key, result=wire_id, resolved=resolved):
                return self._then_post(state, WireSettled(key, wire_id, resolved), [])
            case EffectFailed(effect="wire", effect_id=key, error=error):
                return self._then_post(state, WireSettled(key, error=error), [])
            case EffectSucceeded(effect="post_ledger", result=entry_id) if state.status == "posting":
                failed = sum(1 for s in state.settled.values() if s.error)
                return z8.Decision([DayClosed(entry_id, len(state.settled) - failed, failed)])
        return z8.Decision()  # EffectUnknown, EffectStuck…: the runtime journals them; nothing to decide

    def _then_post(self, state: DayState, event: Any, calls: list[z8.Call]) -> z8.Decision:
        """Decide ``event``, and post the ledger if it settles the last planned wire."""
        after = self.evolve(state, event)
        if after.status == "posting" and state.status != "posting":
            lines = [PlannedWire(key, o) for key, o in after.wires.items() if not after.settled[key].error]
            calls = [*calls, z8.Call("post_ledger", GLEntry(after.day, lines))]
        return z8.Decision([event], effects=calls)

    def evolve(self, state: DayState, event: object) -> DayState:
        match event:
            case DayOpened(day=day):
                return msgspec.structs.replace(state, status="reading", day=day)
            case PlanDecided(wires=wires):
                return msgspec.structs.replace(state, status="wiring" if wires else "posting",
                                               wires={w.key: w.order for w in wires})
            case WireSettled(key=key) if key in state.wires and key not in state.settled:
                settled = {**state.settled, key: event}
                status = "posting" if len(settled) == len(state.wires) else state.status
                return msgspec.structs.replace(state, settled=settled, status=status)
            case DayClosed():
                return msgspec.structs.replace(state, status="closed")
        return state


def treasury_app(path: Path | str, bank: BankClient) -> z8.Application:
    router = z8.Router().identify(Treasury, by="day", prefix="treasury-").dispatch(CloseDay, to=Treasury)
    return z8.Application(router, path, types=z8.TypeRegistry(EVENTS), effects=treasury_effects(bank))


async def close_days(app: z8.Application, days: list[str], timeout: float = 30.0) -> None:
    """Start each day (one already started runs on by itself) and return once all are closed."""
    still_open = {f"treasury-{day}" for day in days}
    async with asyncio.timeout(timeout):
        async with app.journal.subscribe(types={"DayClosed"}, stream_prefix="treasury-") as closed:
            for day in days:
                await app.dispatch(CloseDay(day))
            async for envelope in closed:
                still_open.discard(envelope.stream)
                if not still_open:
                    return


# --- the demo ------------------------------------------------------------------------------------

DAY = "2024-06-14"
BOOKS = {DAY: [
    {"account": "USD-OPS-1", "currency": "USD", "balance_minor": 3_250_000_00},
    {"account": "USD-OPS-2", "currency": "USD", "balance_minor": 1_480_500_00},
    {"account": "USD-PAYROLL", "currency": "USD", "balance_minor": 940_000_00},
    {"account": "EUR-OPS", "currency": "EUR", "balance_minor": 2_100_000_00},
    {"account": "AUD-OPS", "currency": "AUD", "balance_minor": -820_000_00},
]}
LOST_ACK = "EUR-OPS"  # the account whose sweep the bank applies without ever answering


async def treasury(directory: Path) -> dict[str, Any]:
    """Close DAY against a fresh bank; print the day as the journal and the bank tell it."""
    with Bank(BOOKS.get, reply_delay=(0.0, 0.01)) as bank:
        bank.lose_acks(LOST_ACK, times=WIRE_RETRY.attempts)
        client = BankClient(bank.url)
        async with treasury_app(directory / "treasury", client) as app:
            await close_days(app, [DAY])
            records = [app.journal.decode(e) for e in app.journal.read_stream(f"treasury-{DAY}")]
            report = app.journal.verify()
        await client.http.aclose()
    plan = next(r for r in records if isinstance(r, PlanDecided))
    print(f"treasury {DAY}: the plan, decided once and journaled with its reasons:\n  {plan.why}")
    for w in plan.wires:
        o = w.order
        print(f"  {o.purpose} {o.source:<9} -> {o.target:<10} {o.amount_minor / 100:>14,.2f} {o.currency}  key {w.key}")
    for r in records:
        if isinstance(r, z8.effects.EffectRetrying):
            print(f"  {r.effect_id}: no reply ({r.error}); sent again with the same key")
        elif isinstance(r, z8.effects.EffectUnknown):
            print(f"  {r.effect_id}: outcome unknown after {r.attempts} attempts; asking GET /wires/{{key}}")
        elif isinstance(r, WireSettled):
            how = "  <- the status query found it: EffectSucceeded(resolved=True)" if r.resolved else ""
            print(f"  wire {r.key}: {r.wire_id or r.error}{how}")
        elif isinstance(r, DayClosed):
            print(f"  ledger entry {r.ledger_entry} posted once; day closed: {r.wired} wires, {r.failed} failed")
    print(f"bank: {len(bank.requests)} requests: GET /balances {bank.count('GET', '/balances')}, "
          f"POST /wires {bank.count('POST', '/wires')} ({len(bank.wires)} wires applied, "
          f"{bank.count('POST', '/wires', outcome='replayed')} same-key replays, "
          f"{bank.count('POST', '/wires', lost=True)} replies lost), "
          f"GET /wires/{{key}} {bank.count('GET', '/wires/')}, POST /ledger {bank.count('POST', '/ledger')}")
    print(f"journal.verify(): {'ok' if report.ok else report} ({report.checked} events)")
    return {"records": records, "bank": bank, "plan": plan, "verify_ok": report.ok}


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="where to put the journal (default: a temporary directory)")
    given = parser.parse_args().dir
    directory = given or Path(tempfile.mkdtemp(prefix="z8-treasury-"))
    try:
        day = asyncio.run(treasury(directory))
    finally:
        if given is None:
            shutil.rmtree(directory, ignore_errors=True)
    resolved = [r for r in day["records"] if isinstance(r, WireSettled) and r.resolved]
    ok = (day["verify_ok"] and sorted(day["bank"].wires) == sorted(w.key for w in day["plan"].wires)
          and len(resolved) == 1 and len(day["bank"].ledger) == 1 and isinstance(day["records"][-1], DayClosed))
    print("treasury demo " + ("passed" if ok else "FAILED"))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    cli()
