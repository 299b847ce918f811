"""Review of issue 6 (policies, budgets, audit, personal data): confirmed bugs.

Each test is a repro of one bug and is marked ``xfail(strict=True)``: it fails today for
the reason given, and the suite turns red (XPASS) once the bug is fixed, so the mark
can be dropped. Real ``z8.Application`` on LMDB in ``tmp_path`` where a runtime is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from _polling import until
from test_policies import (
    CALLS,
    FAIL,
    Paid,
    Pay,
    Payer,
    PayerState,
    Settled,
    Wire,
    app_for,
    base_policy,
    intents,
    wire,
)

import z8
from z8.effects import EffectContext, EffectIntended, EffectSucceeded, Retry, effect
from z8.policies import Budget, EffectRequest, Grant, Policy, Rule, When, load_policy

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    FAIL.clear()


# --- budgets -----------------------------------------------------------------------------------


class Note(msgspec.Struct, frozen=True):
    text: str


SENT: list[str] = []


@effect(kind="irreversible", idempotent=True, capability="jobs.send", retry=Retry(attempts=1))
async def send(request: Note, ctx: EffectContext) -> None:
    SENT.append(ctx.key)


@pytest.mark.xfail(strict=True, reason=(
    "Outbox.enqueue: a second enqueue under a key already journaled has the same effect id "
    "($jobs/k/1/0); the gate's hold() is a no-op for it (already open), then WrongExpectedVersion "
    "-> discard([intent]) releases the ORIGINAL job's hold. The pool forgets a parked/running job"))
async def test_re_enqueueing_a_job_key_does_not_release_the_original_jobs_hold(tmp_path: Path) -> None:
    policy = Policy(
        name="jobs", version="v1",
        grants=(Grant("$jobs", ("jobs.*",)),),
        rules=(Rule("hold-all", "approval", capability="jobs.send", approvers=("alice",)),),
        budgets=(Budget("sends", "calls", 2, capabilities=("jobs.send",)),),
    )
    async with app_for(tmp_path, policy, effects=[send]) as app:
        first = await app.enqueue(send, Note("one"), key="k")
        await until(lambda: [v for v in app.pending_effects() if v.effect_id == first] or None)
        assert {b.account: b.held for b in app.budgets()} == {"sends": 1.0}
        assert await app.enqueue(send, Note("one"), key="k") == first  # idempotent: nothing new
        # the parked job still holds its call
        assert {b.account: b.held for b in app.budgets()} == {"sends": 1.0}


@pytest.mark.xfail(strict=True, reason=(
    "Agent._records: a decision whose timer is invalid raises InvalidDecision from _timer_record "
    "after host.intent() admitted (and held) the decision's effects; the caller's `records` was "
    "never assigned, so _discard(core, []) gives nothing back and the hold leaks forever "
    "(and is written into the next BudgetsCheckpoint)"))
async def test_a_decision_refused_for_a_bad_timer_gives_its_effect_holds_back(tmp_path: Path) -> None:
    policy = base_policy(rules=(), grants=(Grant("*", ("bank.*",)),), budgets=(Budget("daily", "money", 100, reserve="amount"),))

    class BadTimer(msgspec.Struct, frozen=True, tag=True):
        payer_id: str
        amount: float

    class TimerPayer(Payer):
        def decide(self, state: PayerState, command: Any, ctx: z8.CommandContext) -> Any:
            if isinstance(command, BadTimer):
                return z8.Decision(effects=[z8.Call(wire, Wire(command.amount, "ACME"))],
                                   timers=[z8.Timer(after=-1.0, message=command)])
            return super().decide(state, command, ctx)

    router = z8.Router()
    router.identify(TimerPayer, by="payer_id", prefix="payer-")
    router.dispatch(BadTimer, to=TimerPayer)
    router.dispatch(Pay, to=TimerPayer)
    app = z8.Application(router, tmp_path / "journal", policy=policy,
                         types=z8.TypeRegistry([BadTimer, Pay, Paid, Settled]))
    async with app:
        with pytest.raises(z8.errors.InvalidDecision):
            await app.dispatch(BadTimer("a", 80.0))
        assert intents(app, "payer-a") == []  # nothing was written
        assert app.budgets() == []  # ... so nothing may stay held



@pytest.mark.xfail(strict=True, reason=(
    "BudgetBook.observe(ahead=True) before the log follower reached an intent this process did "
    "not admit (decided by another process sharing the journal, the outbox leaseholder runs it): "
    "_release() finds no hold so nothing is spent, and the follower then skips both the intent and "
    "the outcome: the success is never charged (and the checkpoint persists the under-count)"))
def test_an_outcome_written_before_the_follower_saw_a_foreign_intent_is_charged() -> None:
    from z8.policies._budgets import BudgetBook
    intent = EffectIntended("payer-a/1/0", "wire", "irreversible", {}, budgets={"daily": 60.0})
    success = EffectSucceeded("payer-a/1/0", "wire", charged={"daily": 55.0})
    book = BudgetBook()
    book.observe(success, ahead=True)  # the outbox, as it writes the outcome
    book.observe(intent)  # the log follower, in log order
    book.observe(success)
    assert (book.spent, book.held) == ({"daily": 55.0}, {})


# --- rules ---------------------------------------------------------------------------------------


@pytest.mark.xfail(strict=True, reason=(
    "_compiled._Condition: any str value starting with '@' is taken as a list reference, for every "
    "operator; `handle == \"@root\"` compares to lists.get('root', ()) == () and never matches, so "
    "the deny rule silently never fires (validate() only checks '@' for in/not in)"))
def test_an_equality_on_a_string_starting_with_at_is_a_literal() -> None:
    policy = Policy(
        name="p", version="v1", grants=(Grant("Bot", ("social.post",)),),
        rules=(Rule("no-root", "deny", when=(When("handle", "==", "@root"),), reason="never as @root"),),
    )
    verdict = policy.evaluate(EffectRequest("Bot", "bot-1", "post", "irreversible", {"handle": "@root"},
                                            capability="social.post"))
    assert isinstance(verdict, z8.policies.Deny)


@pytest.mark.xfail(strict=True, reason=(
    "load_policy: the same in TOML: `when = ['handle == \"@root\"']` loads fine and the rule never "
    "matches (no error at load either)"))
def test_a_toml_equality_on_an_at_string_is_refused_or_literal() -> None:
    text = '''
name = "p"
version = "v1"
[[grants]]
agent = "Bot"
capabilities = ["social.post"]
[[rules]]
name = "no-root"
then = "deny"
when = ['handle == "@root"']
'''
    try:
        policy = load_policy(text)
    except z8.errors.InvalidPolicy:
        return  # refusing it at load is a fine answer too
    verdict = policy.evaluate(EffectRequest("Bot", "bot-1", "post", "irreversible", {"handle": "@root"},
                                            capability="social.post"))
    assert isinstance(verdict, z8.policies.Deny)


@pytest.mark.xfail(strict=True, reason=(
    "Policy.__post_init__/validate: a grant's capabilities given as a str (a common slip: "
    "capabilities='bank.*') passes validation (it iterates the characters), and the '*' "
    "character then matches EVERY capability: Policy.evaluate allows anything"))
def test_a_grant_with_capabilities_as_a_string_is_refused() -> None:
    with pytest.raises(z8.errors.InvalidPolicy):
        Policy(name="p", version="v1", grants=(Grant("Clerk", "bank.*"),))  # type: ignore[arg-type]


def test_a_grant_with_capabilities_as_a_string_grants_everything_today() -> None:
    """What the slip above does today (not a failing test: the evidence)."""
    policy = Policy(name="p", version="v1", grants=(Grant("Clerk", "bank.*"),))  # type: ignore[arg-type]
    verdict = policy.evaluate(EffectRequest("Clerk", "clerk-1", "nuke", "irreversible", {},
                                            capability="infra.delete_everything"))
    assert isinstance(verdict, z8.policies.Allow)


# --- personal data ---------------------------------------------------------------------------------


class ScoreRequest(msgspec.Struct, frozen=True):
    applicant: z8.Subject
    income: z8.Personal[str]


class Score(msgspec.Struct, frozen=True, tag=True):
    applicant_id: z8.Subject
    income: z8.Personal[str]


class Scored(msgspec.Struct, frozen=True, tag=True):
    applicant: z8.Subject
    ok: bool


@effect(kind="read", capability="credit.score")
async def score(request: ScoreRequest, ctx: EffectContext) -> None:
    return None


class ScorerState(msgspec.Struct):
    done: int = 0


class Scorer(z8.Agent):
    State = ScorerState
    agent_effects = [score]  # noqa: RUF012

    def decide(self, state: ScorerState, command: Any, ctx: z8.CommandContext) -> Any:
        if isinstance(command, Score):
            return z8.Decision(effects=[z8.Call(score, ScoreRequest(command.applicant_id, command.income))])
        if isinstance(command, z8.effects.EffectFailed):
            return z8.Decision(events=[Scored(ctx.stream, False)])
        return z8.Decision(events=[Scored(ctx.stream, True)])

    def evolve(self, state: ScorerState, event: Any) -> ScorerState:
        return ScorerState(state.done + 1)


SECRET_INCOME = "ninety-one-thousand-Quibbleworth"


@pytest.mark.xfail(strict=True, reason=(
    "_compiled._Condition.holds: a condition that cannot compare the request's value raises "
    "ValueError(f'... cannot compare {found!r}'), and the fail-closed Deny reason quotes it: the "
    "z8.Personal value is journaled in clear in EffectIntended.reason and EffectFailed.message, "
    "outside the vault, and survives app.erase() in the LMDB files"))
async def test_a_rule_that_cannot_compare_a_personal_field_does_not_write_it_in_clear(tmp_path: Path) -> None:
    policy = Policy(
        name="credit", version="v1", grants=(Grant("Scorer", ("credit.*",)),),
        rules=(Rule("high-income", "approval", capability="credit.score",
                    when=(When("income", ">", 50_000),), approvers=("officer",)),),
    )
    router = z8.Router()
    router.identify(Scorer, by="applicant_id", prefix="")
    router.dispatch(Score, to=Scorer)
    app = z8.Application(router, tmp_path / "journal", policy=policy, types=z8.TypeRegistry([Score, Scored]))
    async with app:
        await app.dispatch(Score("applicant-7", SECRET_INCOME))
        await until(lambda: [e for e in app.journal.read_stream("applicant-7") if e.type == "Scored"] or None)
        [intent] = [app.journal.decode(e) for e in app.journal.read_stream("applicant-7")
                    if e.type == "z8.EffectIntended"]
        assert intent.verdict == "deny"  # failed closed, as it should
        await app.erase("applicant-7", by="dpo")
    leaks = [str(path) for path in (tmp_path / "journal").rglob("*")
             if path.is_file() and SECRET_INCOME.encode() in path.read_bytes()]
    assert leaks == []


@pytest.mark.xfail(strict=True, reason=(
    "_retention._select: a legal hold on a SUBJECT only refuses its erasure; retention still "
    "expires (tombstones) every stream holding that subject's records, so the records the hold "
    "was placed to preserve are destroyed (issue 6: 'a legal hold freezes a subject or stream')"))
async def test_a_legal_hold_on_a_subject_keeps_its_streams_from_expiring(tmp_path: Path) -> None:
    from z8.journal import Retention, TypeRegistry, open_journal
    journal = open_journal(tmp_path / "journal", types=TypeRegistry([Scored]))
    try:
        await journal.append("Loan-1", [Scored("applicant-7", True)])
        await journal.hold(subject="applicant-7", by="legal", reason="dispute 2031-17")
        report = await journal.expire(Retention("Loan", 0), now=2**62, by="records")
        assert [act.stream for act in report.expired] == []
    finally:
        await journal.aclose()


@pytest.mark.xfail(strict=True, reason=(
    "_compiled._Condition.holds: NaN compares False with everything, so `amount > 10000` does not "
    "hold for amount=nan and the approval/deny rule is skipped: the effect is allowed by the grant "
    "(a value a rule cannot meaningfully compare should fail closed like a type mismatch)"))
def test_a_nan_amount_does_not_slip_past_a_threshold_rule() -> None:
    policy = base_policy(budgets=())
    verdict = policy.evaluate(EffectRequest("Payer", "payer-a", "wire", "irreversible",
                                            Wire(float("nan"), "ACME"), capability="bank.wire"))
    assert not isinstance(verdict, z8.policies.Allow)
