"""Policies: grants (deny by default), rules, approvals, versions, budgets.

Every test runs a real ``z8.Application`` on an LMDB journal in ``tmp_path`` with a
``z8.policies.Policy`` and asserts what the journal holds: the verdict, the rule and the
policy version with each effect, the acts in ``$policies``, the budget holds and charges.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import msgspec
import pytest
from _polling import until

import z8
from z8.effects import EffectContext, EffectFailed, EffectIntended, EffectSucceeded, Retry, effect
from z8.errors import (
    EffectNotFound,
    EffectStateError,
    InvalidPolicy,
    PolicyDenied,
    PolicyError,
)
from z8.policies import Budget, Grant, Policy, PolicyAdopted, Rule, When, load_policy
from z8.testing import FakeClock

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- a payer agent -------------------------------------------------------------------------


class Wire(msgspec.Struct, frozen=True):
    amount: float
    to: str


class Receipt(msgspec.Struct, frozen=True):
    ref: str
    tokens: int = 0


class Pay(msgspec.Struct, frozen=True, tag=True):
    payer_id: str
    amount: float
    to: str = "ACME"
    count: int = 1


class Paid(msgspec.Struct, frozen=True, tag=True):
    amount: float
    to: str


class Settled(msgspec.Struct, frozen=True, tag=True):
    effect_id: str
    ok: bool
    error: str = ""


CALLS: list[str] = []
FAIL: set[float] = set()


@effect(kind="irreversible", idempotent=True, capability="bank.wire", retry=Retry(attempts=1))
async def wire(request: Wire, ctx: EffectContext) -> Receipt:
    CALLS.append(ctx.key)
    if request.amount in FAIL:
        raise ValueError("refused by the bank")
    return Receipt(f"r-{ctx.key}", tokens=int(request.amount) // 10)


class PayerState(msgspec.Struct):
    outcomes: list[Settled] = []


class Payer(z8.Agent):
    State = PayerState
    agent_effects = [wire]

    def decide(self, state: PayerState, command: Any, ctx: z8.CommandContext) -> Any:
        if isinstance(command, (Pay, OtherPay)):
            return z8.Decision(events=[Paid(command.amount, command.to)],
                               effects=[z8.Call(wire, Wire(command.amount, command.to))] * command.count)
        if isinstance(command, EffectSucceeded):
            return z8.Decision(events=[Settled(command.effect_id, True)])
        if isinstance(command, EffectFailed):
            return z8.Decision(events=[Settled(command.effect_id, False, command.error)])
        return z8.reject(f"unknown command {type(command).__name__}")

    def evolve(self, state: PayerState, event: Any) -> PayerState:
        if isinstance(event, Settled):
            return PayerState([*state.outcomes, event])
        return state


class Other(Payer):
    """Another agent type, with no grant of its own."""


class OtherPay(msgspec.Struct, frozen=True, tag=True):
    other_id: str
    amount: float
    to: str = "ACME"
    count: int = 1


def router() -> z8.Router:
    r = z8.Router()
    r.identify(Payer, by="payer_id", prefix="payer-")
    r.dispatch(Pay, to=Payer)
    r.identify(Other, by="other_id", prefix="other-")
    r.dispatch(OtherPay, to=Other)
    return r


def types() -> z8.TypeRegistry:
    return z8.TypeRegistry([Pay, Paid, Settled, OtherPay])


def app_for(tmp_path: Path, policy: Any, **kw: Any) -> z8.Application:
    return z8.Application(router(), tmp_path / "journal", types=types(), policy=policy, **kw)


def base_policy(version: str = "v1", **changes: Any) -> Policy:
    fields: dict[str, Any] = dict(
        name="payments", version=version,
        grants=(Grant("Payer", ("bank.*",)),),
        rules=(
            Rule("sanctioned", "deny", capability="bank.wire", when=(When("to", "in", "@sanctioned"),),
                 reason="counterparty is sanctioned"),
            Rule("large", "approval", capability="bank.wire", when=(When("amount", ">", 10_000),),
                 approvers=("alice", "bob", "carol"), quorum=2),
        ),
        lists={"sanctioned": ("EVIL",)},
    )
    fields.update(changes)
    return Policy(**fields)


async def outcomes(app: z8.Application, stream: str, count: int = 1) -> list[Settled]:
    def read() -> list[Settled] | None:
        found = [app.journal.decode(e) for e in app.journal.read_stream(stream) if e.type == "Settled"]
        return found if len(found) >= count else None
    return await until(read)


def intents(app: z8.Application, stream: str) -> list[EffectIntended]:
    return [app.journal.decode(e) for e in app.journal.read_stream(stream) if e.type == "z8.EffectIntended"]


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    FAIL.clear()


# --- loading ---------------------------------------------------------------------------------


POLICY_TOML = textwrap.dedent('''
    name = "payments"
    version = "2026-11-22.1"

    [lists]
    sanctioned = ["EVIL"]

    [[grants]]
    agent = "Payer"
    capabilities = ["bank.*"]

    [[rules]]
    name = "sanctioned"
    capability = "bank.wire"
    when = ["to in @sanctioned"]
    then = "deny"
    reason = "counterparty is sanctioned"

    [[rules]]
    name = "large"
    capability = "bank.wire"
    when = [{ field = "amount", op = ">", value = 10000 }]
    then = "approval"
    approvers = ["alice", "bob"]
    timeout = 3600

    [[budgets]]
    name = "daily"
    unit = "money"
    limit = 1_000_000
    capabilities = ["bank.wire"]
    reserve = "amount"
''')


def test_a_toml_policy_loads_into_the_same_data_as_python(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY_TOML)
    policy = load_policy(path)
    assert policy.version == "2026-11-22.1"
    assert policy.grants == (Grant("Payer", ("bank.*",)),)
    assert policy.rules[0].when == (When("to", "in", "@sanctioned"),)
    assert policy.rules[1] == Rule("large", "approval", capability="bank.wire", when=(When("amount", ">", 10000),),
                                   approvers=("alice", "bob"), timeout=3600)
    assert policy.budgets == (Budget("daily", "money", 1_000_000, capabilities=("bank.wire",), reserve="amount"),)
    assert load_policy(POLICY_TOML) == policy  # TOML text works too
    assert load_policy(POLICY_TOML).digest == policy.digest


@pytest.mark.parametrize(("edit", "line", "reason"), [
    (('then = "deny"', 'then = "maybe"'), 16, "then must be 'allow', 'deny' or 'approval'"),
    (('when = ["to in @sanctioned"]', 'when = ["to within @sanctioned"]'), 15, "is not 'field op value'"),
    (('when = ["to in @sanctioned"]', 'when = ["to in @friends"]'), 15, "'@friends' names no list"),
    (('op = ">"', 'op = ">>"'), 22, "unknown operator '>>'"),
    (('reserve = "amount"', 'reserved = "amount"'), 32, "unknown field `reserved`"),
    (('limit = 1_000_000', 'limit = "lots"'), 30, "Expected `float`"),
    (('capabilities = ["bank.*"]', 'capabilities = "bank.*"'), 10, "Expected `array`"),
    (('timeout = 3600', 'timeout = -5'), 25, "timeout must be seconds > 0"),
    (('version = "2026-11-22.1"', 'version = '), 3, "Invalid value"),
])
def test_a_malformed_policy_is_rejected_with_the_line_and_the_reason(
        tmp_path: Path, edit: tuple[str, str], line: int, reason: str) -> None:
    assert edit[0] in POLICY_TOML
    path = tmp_path / "bad.toml"
    path.write_text(POLICY_TOML.replace(edit[0], edit[1]))
    with pytest.raises(InvalidPolicy) as caught:
        load_policy(path)
    message = str(caught.value)
    assert f"{path} line {line}" in message or (reason == "Invalid value" and f"line {line}" in message)
    assert reason in message


def test_a_python_policy_is_validated_when_built() -> None:
    with pytest.raises(InvalidPolicy, match="quorum 3 exceeds its 2 approvers"):
        Policy("p", "1", rules=(Rule("r", "approval", approvers=("a", "b"), quorum=3),))
    with pytest.raises(InvalidPolicy, match="two rules share this name"):
        Policy("p", "1", rules=(Rule("r", "allow"), Rule("r", "deny")))
    with pytest.raises(InvalidPolicy, match="version must be a non-empty string"):
        Policy("p", "")
    with pytest.raises(InvalidPolicy, match="a tokens budget says what to reserve"):
        Policy("p", "1", budgets=(Budget("b", "tokens", 10),))


# --- grants: deny by default -------------------------------------------------------------------


async def test_an_agent_with_no_grant_cannot_run_an_effect_even_when_its_code_tries(tmp_path: Path) -> None:
    async with app_for(tmp_path, base_policy()) as app:
        await app.dispatch(OtherPay("x", 5.0))
        [seen] = await outcomes(app, "other-x")
        assert seen == Settled("other-x/1/0", False, "PolicyDenied")
        [intent] = intents(app, "other-x")
        assert (intent.verdict, intent.rule, intent.policy_version, intent.capability) == (
            "deny", "default-deny", "v1", "bank.wire")
        assert "no grant lets Other use 'bank.wire'" in intent.reason
        assert CALLS == []  # the bank was never called
        with pytest.raises(PolicyDenied, match="called directly"):
            await wire(Wire(1.0, "ACME"), EffectContext("k", "wire", 1, "s"))
        assert CALLS == []


async def test_an_instance_grant_lets_only_the_named_instances(tmp_path: Path) -> None:
    policy = base_policy(grants=(Grant("Payer", ("bank.wire",), instance="payer-eu*"),))
    async with app_for(tmp_path, policy) as app:
        await app.dispatch(Pay("eu1", 5.0))
        await app.dispatch(Pay("us1", 5.0))
        assert (await outcomes(app, "payer-eu1"))[0].ok
        assert (await outcomes(app, "payer-us1"))[0] == Settled("payer-us1/1/0", False, "PolicyDenied")
        assert CALLS == ["payer-eu1/1/0"]


async def test_no_policy_adopted_denies_everything(tmp_path: Path) -> None:
    # an application with a policy always has one adopted; the engine alone fails closed
    engine = z8.policies.PolicyEngine()
    verdict = engine(z8.policies.EffectRequest("Payer", "payer-1", "wire", "irreversible", Wire(1, "A")))
    assert isinstance(verdict, z8.policies.Deny) and verdict.rule == "default-deny"


# --- rules ----------------------------------------------------------------------------------


async def test_rules_decide_in_order_and_the_verdict_is_journaled_with_rule_and_version(tmp_path: Path) -> None:
    async with app_for(tmp_path, base_policy()) as app:
        await app.dispatch(Pay("a", 50.0, to="EVIL"))
        await app.dispatch(Pay("b", 50.0))
        await app.dispatch(Pay("c", 50_000.0, to="EVIL"))  # sanctioned comes first: denied, not held
        assert (await outcomes(app, "payer-a"))[0] == Settled("payer-a/1/0", False, "PolicyDenied")
        assert (await outcomes(app, "payer-b"))[0].ok
        assert (await outcomes(app, "payer-c"))[0].error == "PolicyDenied"
        verdicts = {s: (i.verdict, i.rule, i.policy_version, i.reason)
                    for s in ("payer-a", "payer-b", "payer-c") for i in intents(app, s)}
        assert verdicts == {
            "payer-a": ("deny", "sanctioned", "v1", "counterparty is sanctioned"),
            "payer-b": ("allow", "grant:Payer:bank.wire", "v1", ""),
            "payer-c": ("deny", "sanctioned", "v1", "counterparty is sanctioned"),
        }
        assert CALLS == ["payer-b/1/0"]


async def test_a_rule_on_a_field_the_request_lacks_fails_closed(tmp_path: Path) -> None:
    policy = base_policy(rules=(Rule("by-country", "deny", when=(When("country", "==", "XX"),)),))
    async with app_for(tmp_path, policy) as app:
        await app.dispatch(Pay("a", 5.0))
        assert (await outcomes(app, "payer-a"))[0].error == "PolicyDenied"
        [intent] = intents(app, "payer-a")
        assert intent.rule == "by-country" and "no field 'country'" in intent.reason and "fails closed" in intent.reason
        assert CALLS == []


async def test_a_quorum_of_named_approvers_lets_a_large_wire_run_once(tmp_path: Path) -> None:
    async with app_for(tmp_path, base_policy()) as app:
        await app.dispatch(Pay("a", 20_000.0))
        [intent] = intents(app, "payer-a")
        assert (intent.verdict, intent.rule, intent.approvers, intent.quorum) == (
            "approval", "large", ["alice", "bob", "carol"], 2)
        with pytest.raises(EffectStateError):
            await app.approve("payer-a/1/0", by="mallory")
        await app.approve("payer-a/1/0", by="alice", reason="known customer")
        with pytest.raises(EffectStateError):
            await app.approve("payer-a/1/0", by="alice")  # the same person twice is not a quorum
        assert CALLS == []
        await app.approve("payer-a/1/0", by="carol")
        assert (await outcomes(app, "payer-a"))[0].ok
        assert CALLS == ["payer-a/1/0"]
        approvals = [app.journal.decode(e) for e in app.journal.read_stream("payer-a") if e.type == "z8.EffectApproved"]
        assert [(a.by, a.final) for a in approvals] == [("alice", False), ("carol", True)]


async def test_a_timed_out_approval_is_a_denial(tmp_path: Path) -> None:
    clock = FakeClock()
    policy = base_policy(rules=(Rule("large", "approval", when=(When("amount", ">", 100),), approvers=("alice",),
                                     timeout=60),))
    async with app_for(tmp_path, policy, clock=clock) as app:
        await app.dispatch(Pay("a", 500.0))
        clock.advance(61)
        assert (await outcomes(app, "payer-a"))[0] == Settled("payer-a/1/0", False, "ApprovalExpired")
        assert CALLS == []


async def test_a_held_effect_survives_a_restart_and_runs_once_after_approval(tmp_path: Path) -> None:
    async with app_for(tmp_path, base_policy()) as app:
        await app.dispatch(Pay("a", 20_000.0))
        await until(lambda: [v for v in app.pending_effects() if v.status == "parked"] or None)
    async with app_for(tmp_path, base_policy()) as app:
        [held] = app.pending_effects()
        assert (held.effect_id, held.status) == ("payer-a/1/0", "parked")
        await app.approve("payer-a/1/0", by="alice")
        await app.approve("payer-a/1/0", by="bob")
        assert (await outcomes(app, "payer-a"))[0].ok
    async with app_for(tmp_path, base_policy()) as app:
        assert app.pending_effects() == []
    assert CALLS == ["payer-a/1/0"]


# --- versions -------------------------------------------------------------------------------


def adopted(app: z8.Application) -> list[PolicyAdopted]:
    return [app.journal.decode(e) for e in app.journal.read_stream("$policies")]


async def test_policy_changes_are_journaled_and_pinned_agents_keep_their_version(tmp_path: Path) -> None:
    strict = base_policy("v2", rules=(Rule("tiny", "deny", when=(When("amount", ">", 1),), reason="v2 is strict"),))
    async with app_for(tmp_path, base_policy("v1")) as app:
        await app.dispatch(Pay("old", 5.0))
        assert (await outcomes(app, "payer-old"))[0].ok
        assert await app.adopt_policy(strict, by="compliance", reason="tighten") is True
        assert await app.adopt_policy(strict, by="compliance") is False  # already in force: nothing written
        await app.dispatch(Pay("old", 5.0))  # pinned to v1 by its first effect
        await app.dispatch(Pay("new", 5.0))  # judged by v2
        assert [o.ok for o in await outcomes(app, "payer-old", 2)] == [True, True]
        assert (await outcomes(app, "payer-new"))[0].error == "PolicyDenied"
        assert [i.policy_version for i in intents(app, "payer-old")] == ["v1", "v1"]
        assert [i.policy_version for i in intents(app, "payer-new")] == ["v2"]
        await app.migrate_policy("payer-old", by="compliance", reason="apply v2 to open runs")
        await app.dispatch(Pay("old", 5.0))
        third = (await outcomes(app, "payer-old", 3))[2]
        assert third.error == "PolicyDenied" and intents(app, "payer-old")[2].policy_version == "v2"
        migrated = [app.journal.decode(e) for e in app.journal.read_stream("payer-old") if e.type == "z8.PolicyMigrated"]
        assert [(m.previous, m.to, m.by) for m in migrated] == [("v1", "v2", "compliance")]
        history = adopted(app)
        assert [(a.version, a.previous, a.by) for a in history] == [("v1", "", "application"), ("v2", "v1", "compliance")]
        assert Policy.decode(history[1].policy) == strict  # the exact rules are on the record
        with pytest.raises(PolicyError, match="no policy version 'v9'"):
            await app.migrate_policy("payer-old", by="x", to="v9")
        with pytest.raises(EffectNotFound):
            await app.migrate_policy("payer-nobody", by="x")
    # restarting with the configured v1 adopts it again (a rollback, journaled); with the same
    # content as the one in force it writes nothing
    async with app_for(tmp_path, strict) as app:
        assert [a.version for a in adopted(app)] == ["v1", "v2"]
        await app.dispatch(Pay("old", 5.0))  # the pin survives the restart (rebuilt from the journal)
        assert intents(app, "payer-old")[3].policy_version == "v2"


async def test_a_version_names_one_content_forever(tmp_path: Path) -> None:
    async with app_for(tmp_path, base_policy("v1")) as app:
        changed = base_policy("v1", lists={"sanctioned": ("EVIL", "WORSE")})
        with pytest.raises(InvalidPolicy, match="was adopted before with other content"):
            await app.adopt_policy(changed, by="someone")
        assert [a.version for a in adopted(app)] == ["v1"]


# --- budgets ----------------------------------------------------------------------------------


def budget_policy(*budgets: Budget) -> Policy:
    return base_policy(rules=(), budgets=budgets)


async def test_a_pool_budget_admits_until_its_limit_then_denies_with_budget_exceeded(tmp_path: Path) -> None:
    policy = budget_policy(Budget("daily", "money", 100, capabilities=("bank.wire",), reserve="amount"))
    async with app_for(tmp_path, policy) as app:
        await app.dispatch(Pay("a", 60.0))
        await app.dispatch(Pay("b", 30.0))
        await app.dispatch(Pay("c", 20.0))  # 60 + 30 + 20 > 100
        assert (await outcomes(app, "payer-a"))[0].ok and (await outcomes(app, "payer-b"))[0].ok
        assert (await outcomes(app, "payer-c"))[0].error == "BudgetExceeded"
        [intent] = intents(app, "payer-c")
        assert intent.rule == "budget:daily" and "needs 20" in intent.reason and "limit of 100" in intent.reason
        [balance] = await until(lambda: [b for b in app.budgets() if b.held == 0] or None)
        assert (balance.account, balance.spent, balance.held, balance.available) == ("daily", 90.0, 0.0, 10.0)
        assert CALLS == ["payer-a/1/0", "payer-b/1/0"]


async def test_a_failure_releases_its_hold_and_a_success_charges_the_real_cost(tmp_path: Path) -> None:
    FAIL.add(70.0)
    policy = budget_policy(
        Budget("money", "money", 100, reserve="amount"),
        Budget("tokens", "tokens", 1000, per="agent", reserve=50, charge="tokens"),
    )
    async with app_for(tmp_path, policy) as app:
        await app.dispatch(Pay("a", 70.0))
        assert (await outcomes(app, "payer-a"))[0].error == "ValueError"
        await app.dispatch(Pay("a", 90.0))  # fits again: the failure gave the 70 back
        assert (await outcomes(app, "payer-a", 2))[1].ok
        succeeded = [app.journal.decode(e) for e in app.journal.read_stream("payer-a") if e.type == "z8.EffectSucceeded"]
        assert succeeded[0].charged == {"money": 90.0, "tokens@payer-a": 9.0}  # tokens: the result's 90 // 10
        expected = {"money": (90.0, 0.0), "tokens@payer-a": (9.0, 0.0)}
        await until(lambda: {b.account: (b.spent, b.held) for b in app.budgets()} == expected or None)


async def test_a_refused_decision_gives_its_holds_back(tmp_path: Path) -> None:
    policy = budget_policy(Budget("calls", "calls", 3, per="agent"))
    async with app_for(tmp_path, policy) as app:
        await app.dispatch(Pay("a", 1.0, count=2))
        await outcomes(app, "payer-a", 2)
        await app.dispatch(Pay("a", 1.0, count=2))  # the second call of this one goes past 3
        settled = await outcomes(app, "payer-a", 4)
        assert [s.error for s in settled[2:]] == ["", "BudgetExceeded"]
        expected = {"calls@payer-a": (3.0, 0.0)}
        await until(lambda: {b.account: (b.spent, b.held) for b in app.budgets()} == expected or None)


async def test_budgets_are_rebuilt_from_the_journal_after_a_restart(tmp_path: Path) -> None:
    policy = budget_policy(Budget("daily", "money", 100, reserve="amount"))
    async with app_for(tmp_path, policy) as app:
        await app.dispatch(Pay("a", 60.0))
        await outcomes(app, "payer-a")
    async with app_for(tmp_path, policy) as app:
        assert [(b.account, b.spent) for b in app.budgets()] == [("daily", 60.0)]
        await app.dispatch(Pay("b", 50.0))
        assert (await outcomes(app, "payer-b"))[0].error == "BudgetExceeded"


async def test_a_held_effect_holds_its_budget_until_it_is_decided(tmp_path: Path) -> None:
    policy = base_policy(rules=(Rule("large", "approval", when=(When("amount", ">", 50),), approvers=("alice",)),),
                         budgets=(Budget("daily", "money", 100, reserve="amount"),))
    async with app_for(tmp_path, policy) as app:
        await app.dispatch(Pay("a", 80.0))
        [intent] = intents(app, "payer-a")
        assert intent.verdict == "approval" and intent.budgets == {"daily": 80.0}
        await app.dispatch(Pay("b", 30.0))  # 80 held + 30 > 100
        assert (await outcomes(app, "payer-b"))[0].error == "BudgetExceeded"
        await app.approve("payer-a/1/0", by="alice", verdict="deny")
        assert (await outcomes(app, "payer-a"))[0].error == "ApprovalDenied"
        await until(lambda: app.budgets() == [] or None)
        await app.dispatch(Pay("b", 30.0))
        assert (await outcomes(app, "payer-b", 2))[1].ok


async def test_policy_and_gate_are_exclusive_and_a_bad_policy_argument_is_refused(tmp_path: Path) -> None:
    with pytest.raises(z8.errors.InvalidSpec):
        app_for(tmp_path, base_policy(), gate=lambda request: z8.policies.Allow())
    with pytest.raises(InvalidPolicy):
        app_for(tmp_path, {"name": "not a policy"})
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nversion = "1"\n[[rules]]\nname = "r"\nthen = "nope"\n')
    with pytest.raises(InvalidPolicy, match="line 5: rule .r.: then must be"):
        app_for(tmp_path, bad)


async def test_a_clean_stop_checkpoints_the_accounts_and_the_next_start_folds_from_there(tmp_path: Path) -> None:
    policy = budget_policy(Budget("daily", "money", 100, reserve="amount"), Budget("calls", "calls", 10, per="agent"))
    async with app_for(tmp_path, policy) as app:
        await app.dispatch(Pay("a", 60.0))
        await outcomes(app, "payer-a")
    async with app_for(tmp_path, policy) as app:
        [checkpoint] = [app.journal.decode(e) for e in app.journal.read_stream("$budgets")]
        assert checkpoint.spent == {"daily": 60.0, "calls@payer-a": 1.0} and checkpoint.open == {}
        await app.dispatch(Pay("b", 30.0))
        await outcomes(app, "payer-b")
    async with app_for(tmp_path, policy) as app:
        assert len(app.journal.read_stream("$budgets")) == 2
        balances = {b.account: b.spent for b in app.budgets()}
        assert balances == {"daily": 90.0, "calls@payer-a": 1.0, "calls@payer-b": 1.0}
        # the checkpoint is derived data: a fold of the whole log gives the same figures
        fresh = z8.policies.PolicyEngine()
        for envelope in app.journal.read_all():
            if envelope.type in ("z8.EffectIntended", "z8.EffectSucceeded", "z8.EffectFailed"):
                fresh.book.observe(app.journal.decode(envelope))
        assert {b.account: b.spent for b in fresh.book.balances(policy)} == balances


def test_the_accounts_are_a_fold_of_the_log_and_a_gate_hold_is_counted_once() -> None:
    from z8.policies._budgets import BudgetBook
    intent = EffectIntended("payer-a/1/0", "wire", "irreversible", {}, budgets={"daily": 60.0})
    success = EffectSucceeded("payer-a/1/0", "wire", charged={"daily": 55.0})
    book = BudgetBook()
    assert book.hold(intent.effect_id, intent.budgets) is True  # admission, before the append
    assert book.hold(intent.effect_id, intent.budgets) is False  # a second admission of the same id
    book.observe(intent)  # the log: the intent (already held) ...
    assert (book.spent, book.held) == ({}, {"daily": 60.0})
    book.observe(success)  # ... and its outcome, charged its real cost
    book.observe(success)  # a record folded twice changes nothing
    assert (book.spent, book.held) == ({"daily": 55.0}, {})


async def test_a_budget_with_a_period_opens_a_new_account_each_window_by_the_decisions_time(tmp_path: Path) -> None:
    day = 86_400
    clock = FakeClock(1_800_000_000 * 1_000_000_000)  # 2027-01-15T08:00:00Z
    policy = budget_policy(Budget("daily", "money", 100, reserve="amount", period=day))
    async with app_for(tmp_path, policy, clock=clock) as app:
        await app.dispatch(Pay("a", 70.0))
        await app.dispatch(Pay("b", 40.0))  # the same day: 70 + 40 > 100
        assert (await outcomes(app, "payer-b"))[0].error == "BudgetExceeded"
        clock.advance(day)
        await app.dispatch(Pay("b", 40.0))  # the next day's account
        assert (await outcomes(app, "payer-b", 2))[1].ok
        expected = {"daily[2027-01-15T00:00:00Z]": 70.0, "daily[2027-01-16T00:00:00Z]": 40.0}
        await until(lambda: {b.account: b.spent for b in app.budgets()} == expected or None)
        assert {b.limit for b in app.budgets()} == {100.0}
    with pytest.raises(InvalidPolicy, match="period must be seconds >= 1"):
        budget_policy(Budget("daily", "money", 100, reserve="amount", period=0))


async def test_a_policy_with_budgets_adopted_at_run_time_keeps_its_accounts(tmp_path: Path) -> None:
    async with app_for(tmp_path, base_policy("v1", rules=())) as app:
        await app.dispatch(Pay("a", 10.0))  # before any budget: never counted
        await outcomes(app, "payer-a")
        await app.adopt_policy(base_policy("v2", rules=(), budgets=(Budget("daily", "money", 100, reserve="amount"),)),
                               by="finance")
        await app.dispatch(Pay("b", 60.0))  # judged by v2: held, then charged
        await outcomes(app, "payer-b")
        await app.dispatch(Pay("c", 50.0))  # 60 + 50 > 100, once the first charge is folded
        assert (await outcomes(app, "payer-c"))[0].error == "BudgetExceeded"
        assert [(b.account, b.spent, b.held) for b in app.budgets()] == [("daily", 60.0, 0.0)]
