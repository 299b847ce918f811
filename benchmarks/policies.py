"""Policy benchmarks: the gate's cost per effect, its share of a durable effect, run-record export.

Run ``python benchmarks/policies.py [--quick]``. One JSON line per figure
(``../shared/BENCHMARKS.md``): ``value`` is the median of ``runs``, ``spread`` their [min, max],
and ``ratio`` is above 1 when z8 is ahead of the baseline.

- ``policies.evaluation``: ``PolicyEngine(policy)(EffectRequest)`` — what the outbox calls for
  every effect a decision asks for — in µs per call, on a realistic policy (:func:`realistic_policy`:
  10 grants, 20 rules with conditions including lookups in named lists of 10 to 300 entries,
  a money pool and a per-agent call budget, so an allowed wire is also admitted and held).
  The requests are a mix (:data:`MIX`): a wire that passes every wire rule and both budgets
  (the common and the slowest case), a wire denied by the first rule, one held for approval,
  a loan, an LLM call and an agent with no grant. Baseline: the time of one durable effect
  step with no policy, measured in ``policies.effect_overhead``: the ratio is how many
  evaluations fit in one effect.
- ``policies.effect_overhead``: the same workload (``agents`` agents, each running
  ``steps`` trivial async effects in turn, ``durability="sync"``: every intent and outcome
  fsynced) on two applications open in the same process, one with ``policy=None`` and one
  with the realistic policy, timed in alternation. ``value`` is µs per effect with the
  policy, the baseline without; ``params.overhead_pct`` is what the policy adds (target
  ≤ 5 %), ``params.paired_overhead_pct`` the per-pair figures. With the policy the runtime
  also journals each verdict, holds and charges the budgets (bigger records) and folds the
  budget accounts from the log: all of that is in the figure.
- ``audit.export``: a 10,000-event run's record built (``audit.run``), rendered as Markdown,
  exported as a sealed bundle and checked offline with ``verify_bundle``, in ms
  (``benchmarks/audit_export.py`` builds the run and times the parts).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

import z8
from z8.actors._system import register_system_types
from z8.effects import EffectContext, EffectSucceeded
from z8.journal import open_memory_journal
from z8.policies import Budget, EffectRequest, Grant, Policy, PolicyEngine, Rule, When

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit  # noqa: E402
from audit_export import export_10k  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    eval_calls: int
    eval_runs: int
    agents: int
    steps: int
    effect_runs: int
    export_runs: int
    fast_runs: int


FULL = Sizes(eval_calls=100_000, eval_runs=5, agents=100, steps=20, effect_runs=9, export_runs=3, fast_runs=5)
QUICK = Sizes(eval_calls=20_000, eval_runs=3, agents=50, steps=10, effect_runs=3, export_runs=1, fast_runs=2)


# --- the policy ----------------------------------------------------------------------------------


def realistic_policy() -> Policy:
    """What a firm running ten kinds of agent might write: 10 grants, 20 rules, 2 budgets."""
    grants = (
        Grant("Payments", ("bank.*",)), Grant("Treasury", ("bank.read", "bank.wire", "fx.*")),
        Grant("Lending", ("credit.check", "loan.disburse")), Grant("Claims", ("claims.*", "email.send")),
        Grant("Support", ("email.send", "llm.complete", "crm.*")), Grant("Research", ("llm.complete", "web.search")),
        Grant("Travel", ("travel.*",)), Grant("Onboarding", ("kyc.check", "email.send")),
        Grant("Procurement", ("po.create", "email.send")), Grant("Fleet", ("vehicle.*",), instance="fleet-eu-*"),
    )
    rules = (
        Rule("sanctioned-country", "deny", capability="bank.wire", when=(When("beneficiary.country", "in", "@sanctioned"),),
             reason="beneficiary country under sanctions"),
        Rule("blocked-counterparty", "deny", capability="bank.wire", when=(When("counterparty", "in", "@blocked"),),
             reason="counterparty is blocked"),
        Rule("unsupported-currency", "deny", capability="bank.wire", when=(When("currency", "not in", "@currencies"),)),
        Rule("wire-purpose", "deny", capability="bank.wire", when=(When("purpose", "missing"),),
             reason="a wire states its purpose"),
        Rule("wire-large", "approval", capability="bank.wire", when=(When("amount", ">", 1_000_000),),
             approvers=("treasurer-1", "treasurer-2", "cfo"), quorum=2, timeout=86_400),
        Rule("wire-new-counterparty", "approval", capability="bank.wire",
             when=(When("counterparty", "not in", "@known"), When("amount", ">", 10_000)),
             approvers=("treasurer-1", "treasurer-2"), timeout=86_400),
        Rule("loan-sanctioned", "deny", capability="loan.disburse", when=(When("country", "in", "@sanctioned"),)),
        Rule("loan-large", "approval", capability="loan.disburse", when=(When("amount", ">", 25_000),),
             approvers=("officer-1", "officer-2"), timeout=86_400),
        Rule("claims-flagged", "deny", capability="claims.pay", when=(When("flagged", "==", True),)),
        Rule("claims-large", "approval", capability="claims.pay", when=(When("amount", ">", 50_000),),
             approvers=("adjuster-1",)),
        Rule("email-bulk", "deny", capability="email.send", when=(When("recipients", ">", 100),)),
        Rule("email-external", "approval", capability="email.send", when=(When("domain", "not in", "@domains"),),
             approvers=("comms",)),
        Rule("llm-model", "deny", capability="llm.complete", when=(When("model", "not in", "@models"),)),
        Rule("llm-tokens", "deny", capability="llm.complete", when=(When("max_tokens", ">", 32_000),)),
        Rule("web-blocked", "deny", capability="web.search", when=(When("site", "in", "@blocked_sites"),)),
        Rule("travel-first", "approval", capability="travel.book", when=(When("cabin", "==", "first"),),
             approvers=("travel-desk",)),
        Rule("travel-cost", "approval", capability="travel.book", when=(When("price", ">", 5_000),),
             approvers=("travel-desk",)),
        Rule("kyc-sanctioned", "deny", capability="kyc.check", when=(When("country", "in", "@sanctioned"),)),
        Rule("po-large", "approval", capability="po.create", when=(When("amount", ">", 100_000),),
             approvers=("procurement-lead",)),
        Rule("vehicle-hazmat", "approval", capability="vehicle.dispatch", when=(When("cargo", "==", "hazmat"),),
             approvers=("dispatch-lead",)),
    )
    budgets = (
        Budget("wires-today", "money", 1e15, capabilities=("bank.wire",), reserve="amount"),
        Budget("calls-per-agent", "calls", 1e12, per="agent"),
    )
    lists = {
        "sanctioned": ("BY", "CU", "IR", "KP", "MM", "RU", "SD", "SS", "SY", "VE", "YE", "ZW"),
        "blocked": tuple(f"BLOCKED-{i:04d}" for i in range(100)),
        "known": tuple(f"SUPPLIER-{i:04d}" for i in range(299)) + ("ACME-GMBH",),
        "currencies": ("EUR", "USD", "GBP", "CHF", "JPY", "AUD", "CAD", "SEK", "NOK", "DKK"),
        "domains": ("example.com", "example.org", "partner.example"),
        "models": ("small", "medium", "large"),
        "blocked_sites": tuple(f"blocked{i}.example" for i in range(50)),
    }
    policy = Policy("firm", "bench.1", grants=grants, rules=rules, budgets=budgets, lists=lists)
    assert len(policy.grants) == 10 and len(policy.rules) == 20 and len(policy.budgets) == 2
    return policy


# --- what the workload's effect takes ------------------------------------------------------------


class Beneficiary(msgspec.Struct, frozen=True):
    country: str
    account: str


class Wire(msgspec.Struct, frozen=True):
    """A step of the workload, shaped like a wire, so that every wire rule has fields to check."""

    i: int
    total: int
    amount: int = 100
    currency: str = "EUR"
    counterparty: str = "ACME-GMBH"
    purpose: str = "invoice"
    beneficiary: Beneficiary = Beneficiary("DE", "DE89370400440532013000")


def _request(agent: str, effect: str, request: Any, stream: str = "") -> EffectRequest:
    return EffectRequest(agent, stream or f"{agent.lower()}-1", effect, "irreversible", request, effect)


MIX: list[tuple[str, EffectRequest]] = [
    ("wire passes every rule and both budgets", _request("Payments", "bank.wire", Wire(1, 1))),
    ("wire passes every rule and both budgets", _request("Payments", "bank.wire", Wire(1, 1, amount=9_000))),
    ("wire passes every rule and both budgets", _request("Treasury", "bank.wire", Wire(1, 1, currency="USD"))),
    ("wire denied by the first rule", _request("Payments", "bank.wire",
                                               Wire(1, 1, beneficiary=Beneficiary("KP", "x")))),
    ("wire held for approval", _request("Payments", "bank.wire", Wire(1, 1, amount=50_000, counterparty="NEW-1"))),
    ("loan held for approval", _request("Lending", "loan.disburse", {"amount": 40_000, "country": "PT"})),
    ("llm call allowed", _request("Research", "llm.complete", {"model": "small", "max_tokens": 2_000})),
    ("no grant: denied by default", _request("Research", "bank.wire", Wire(1, 1))),
]


# --- (a) evaluation ------------------------------------------------------------------------------


async def _started_engine(policy: Policy) -> tuple[PolicyEngine, Any]:
    journal = open_memory_journal()
    register_system_types(journal.types)
    engine = PolicyEngine(policy)
    await engine.start(journal)
    return engine, journal


def _time_calls(engine: PolicyEngine, requests: list[EffectRequest], calls: int) -> float:
    """µs per ``engine(request)``, cycling through ``requests`` (each with its own effect id);
    the holds an admission takes are given back between batches, outside the timing."""
    batch = 1000
    ids = [[msgspec.structs.replace(r, effect_id=f"e{b}/{i}") for i, r in enumerate(requests)]
           for b in range(batch)]
    elapsed = 0.0
    done = 0
    while done < calls:
        start = time.perf_counter()
        for group in ids:
            for request in group:
                engine(request)
        elapsed += time.perf_counter() - start
        done += batch * len(requests)
        for group in ids:
            for request in group:
                engine.discard(request.effect_id)
    return elapsed / done * 1e6


async def evaluation(sizes: Sizes) -> dict[str, Any]:
    engine, journal = await _started_engine(realistic_policy())
    try:
        requests = [r for _, r in MIX]
        _time_calls(engine, requests, 10_000)  # warm
        samples = []
        for _ in range(sizes.eval_runs):
            gc.collect()
            samples.append(_time_calls(engine, requests, sizes.eval_calls))
        kinds: dict[str, float] = {}
        for label, request in MIX:
            if label not in kinds:
                kinds[label] = round(_time_calls(engine, [request], sizes.eval_calls // 4), 2)
        verdicts = {label: type(engine(msgspec.structs.replace(r, effect_id="probe"))).__name__ for label, r in MIX}
        engine.discard("probe")
        return {"samples": samples, "kinds": kinds, "verdicts": verdicts}
    finally:
        await engine.aclose()
        await journal.aclose()


# --- (b) the same durable workload with and without the policy ------------------------------------

_last: dict[str, asyncio.Future[str]] = {}


@z8.effect(kind="irreversible", idempotent=True, capability="bank.wire")
async def wire(request: Wire, ctx: EffectContext) -> Wire:
    """The trivial effect; on an agent's last step it tells the benchmark which effect to await."""
    if request.i == request.total:
        waiting = _last.get(ctx.stream)
        if waiting is not None and not waiting.done():
            waiting.set_result(ctx.effect_id)
    return request


class Go(msgspec.Struct, frozen=True):
    payer_id: str
    steps: int


class Nothing(msgspec.Struct, frozen=True):
    pass


class Payments(z8.Agent):
    """Calls ``wire`` ``total`` times in turn: each outcome decides the next call."""

    State = Nothing
    agent_effects = (wire,)

    def decide(self, state: Nothing, message: Any, ctx: z8.actors.CommandContext) -> z8.Decision:
        if type(message) is EffectSucceeded:
            done: Wire = message.result
            if done.i >= done.total:
                return z8.Decision()
            return z8.Decision(effects=[z8.Call(wire, Wire(done.i + 1, done.total))])
        if isinstance(message, Go):
            return z8.Decision(effects=[z8.Call(wire, Wire(1, message.steps))], reply="started")
        return z8.Decision()  # a denial would land here: counted as a failure by run_steps

    def evolve(self, state: Nothing, event: Any) -> Nothing:
        return state


def payments_app(path: Path, policy: Policy | None, durability: str) -> z8.Application:
    router = z8.Router().identify(Payments, by="payer_id", prefix="payer-").dispatch(Go, to=Payments)
    return z8.Application(router, path, durability=durability, policy=policy)  # type: ignore[arg-type]


async def run_steps(app: z8.Application, ids: list[str], steps: int) -> float:
    """Start ``steps`` effects on each agent at once; seconds until every last outcome is durable."""
    loop = asyncio.get_running_loop()
    for agent_id in ids:
        _last[f"payer-{agent_id}"] = loop.create_future()

    async def finished(agent_id: str) -> Any:
        return await app.wait_effect(await asyncio.wait_for(_last[f"payer-{agent_id}"], 120.0), 120.0)

    start = time.perf_counter()
    waits = asyncio.gather(*(finished(agent_id) for agent_id in ids))
    await asyncio.gather(*(app.dispatch(Go(agent_id, steps)) for agent_id in ids))
    outcomes = await waits
    elapsed = time.perf_counter() - start
    _last.clear()
    if not all(type(o) is EffectSucceeded for o in outcomes):
        raise RuntimeError(f"a last step did not succeed: {[o for o in outcomes if type(o) is not EffectSucceeded][:3]}")
    return elapsed


async def effect_overhead(sizes: Sizes, root: Path, durability: str, pairs: int) -> dict[str, Any]:
    """``pairs`` timed runs on each application, alternating which goes first; µs per effect."""
    ids = [str(a) for a in range(sizes.agents)]
    count = sizes.agents * sizes.steps
    plain: list[float] = []
    gated: list[float] = []
    load = os.getloadavg()
    async with payments_app(root / f"none-{durability}", None, durability) as without, \
            payments_app(root / f"policy-{durability}", realistic_policy(), durability) as with_:
        for app in (without, with_):
            await run_steps(app, ids, 3)  # warm: activates every agent (and pins it to the policy)
        for run in range(pairs):
            order = [(without, plain), (with_, gated)] if run % 2 == 0 else [(with_, gated), (without, plain)]
            for app, samples in order:
                gc.collect()
                samples.append(await run_steps(app, ids, sizes.steps) / count * 1e6)
        intents = [e for e in with_.journal.read_stream("payer-0") if e.type == "z8.EffectIntended"]
        verdict = with_.journal.decode(intents[-1])
    paired = [(g - p) / p * 100 for p, g in zip(plain, gated, strict=True)]
    return {"plain": plain, "gated": gated, "load": load, "paired": paired,
            "verdict": [verdict.verdict, verdict.rule, verdict.policy_version]}


# --- main ----------------------------------------------------------------------------------------


async def main(sizes: Sizes, quick: bool) -> None:
    root = Path(tempfile.mkdtemp(prefix="z8-bench-policies-"))
    try:
        evaluated = await evaluation(sizes)
        effects = await effect_overhead(sizes, root, "sync", sizes.effect_runs)
        fast = await effect_overhead(sizes, root, "fast", sizes.fast_runs)
        per_effect = statistics.median(effects["plain"])
        emit("policies.evaluation", evaluated["samples"], "us", "durable effect step, policy=None (us)",
             effects["plain"], {
                 "policy": "10 grants, 20 rules (conditions incl. lists of 10-300 entries), 2 budgets",
                 "mix": [label for label, _ in MIX], "us_by_kind": evaluated["kinds"],
                 "verdict_by_kind": evaluated["verdicts"], "calls_per_run": sizes.eval_calls,
                 "share_of_effect_pct": round(statistics.median(evaluated["samples"]) / per_effect * 100, 2),
                 "measures": "PolicyEngine(policy)(EffectRequest) in one thread, budgets admitted and held; "
                             "ratio = one durable effect's time / one evaluation",
             }, lower_is_better=True)
        with_policy = statistics.median(effects["gated"])
        emit("policies.effect_overhead", effects["gated"], "us", "same workload, policy=None, same run",
             effects["plain"], {
                 "agents": sizes.agents, "effects_per_agent": sizes.steps, "effects_per_run": sizes.agents * sizes.steps,
                 "durability": "sync (every intent and outcome fsynced)",
                 "overhead_pct": round(statistics.median(effects["paired"]), 2), "target_pct": 5.0,
                 "overhead_of_medians_pct": round((with_policy - per_effect) / per_effect * 100, 2),
                 "paired_overhead_pct": [round(x, 2) for x in effects["paired"]],
                 "per_effect_us_policy": round(with_policy, 1), "per_effect_us_none": round(per_effect, 1),
                 "fast_overhead_pct": round(statistics.median(fast["paired"]), 2),
                 "fast_per_effect_us": {"policy": round(statistics.median(fast["gated"]), 1),
                                        "none": round(statistics.median(fast["plain"]), 1)},
                 "fast": "the same pairs with durability='fast' (no fsync): the CPU-bound case, where the "
                         "policy's cost shows most",
                 "journaled_verdict": effects["verdict"], "loadavg_at_start": [round(x, 2) for x in effects["load"]],
                 "measures": "value: us per effect with the realistic policy; baseline: without; ratio < 1 is the "
                             "policy's cost (verdict journaled, budgets held/charged/folded); overhead_pct: median "
                             "of the paired runs",
             }, lower_is_better=True)
        # export_10k runs its own event loop: in a thread of its own, this loop idle meanwhile
        export = await asyncio.to_thread(export_10k, root / "export", sizes.export_runs)
        parts = export["samples"]
        totals = [(r + e + m + v) * 1000 for r, e, m, v in zip(parts["run_s"], parts["export_s"], parts["markdown_s"],
                                                                 parts["verify_s"], strict=True)]
        emit("audit.export", totals, "ms", None, None, {
            "events": export["events"], "bundle_bytes": export["bundle_bytes"],
            "parts_ms": {name[:-2]: round(export[name] * 1000, 1)
                         for name in ("run_s", "export_s", "markdown_s", "verify_s")},
            "measures": "audit.run(stream) (read, check, decode, fold, digest, sign) + record.export(path) + "
                        "record.markdown() + verify_bundle(path) with no journal",
            **({"quick_note": "--quick: one run"} if quick else {}),
        }, lower_is_better=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs (well under 60 s)")
    args = parser.parse_args()
    asyncio.run(main(QUICK if args.quick else FULL, args.quick))
