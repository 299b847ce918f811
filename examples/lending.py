"""A loan desk: an agent decides each application by explicit criteria; a policy guards the money.

    python examples/lending.py [--dir DIR]

``Loan`` (an agent named ``loan-<id>``) reads the applicant's file from a credit bureau (a
``read`` effect, capability ``credit.check``), decides the tier by explicit criteria (credit
score, debt-to-income, amount against verified income, verified income, adverse flags) and
journals ``LoanDecided`` with its reasoning and criteria, then asks for the disbursement
(``loan.disburse``: irreversible, idempotent by key at the core-banking system).

The agent's code asks; the policy in ``lending_policy.toml`` decides what runs
(``Application(policy=path)``): only what it grants, no disbursement to a sanctioned
country, a disbursement above 25,000 waits for one of the named credit officers, and
every disbursement draws on the day's money budget. Four applications:

1. 12,000: Prime tier, paid at once.
2. 40,000: Standard tier; the disbursement is parked until an officer approves it (the
   agent's own approval is refused); then it is paid, once. Its sealed run record is
   printed (facts, reasoning, verdicts and approval, effects, outcome, seal), exported as
   a bundle under DIR and checked offline with ``z8.audit.verify_bundle``.
3. 9,000 to a borrower in a sanctioned country: approved on credit, denied by the gate.
4. 30,000: declined on its criteria; the applicant asks to be forgotten, ``app.erase``
   destroys their key: the run record shows ``[erased]`` and the chain still verifies.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

import z8
from z8.effects import NOT_FOUND, EffectContext, EffectFailed, EffectIntended, EffectSucceeded
from z8.errors import EffectStateError

POLICY = Path(__file__).resolve().parent / "lending_policy.toml"
OFFICER = "maria.okafor"
"""The credit officer who approves the large loan (named in the policy's approvers)."""
MAX_AMOUNT_TO_INCOME = 0.50


# --- commands, events, and what the bureau and the bank exchange ---------------------------------


class Apply(msgspec.Struct, frozen=True):
    loan_id: str
    applicant: str  # a pseudonymous id: whose personal data this is
    name: str
    annual_income: int
    amount: int
    term_months: int
    country: str


class ApplicationReceived(msgspec.Struct, frozen=True):
    applicant: z8.Subject
    name: z8.Personal[str]
    annual_income: z8.Personal[int]
    loan_id: str
    amount: int
    term_months: int
    country: str


class Criterion(msgspec.Struct, frozen=True):
    name: str
    required: str
    actual: str
    met: bool


class LoanDecided(msgspec.Struct, frozen=True):
    tier: str  # "Prime", "Standard" or "Declined"
    approved: bool
    apr: float
    monthly_payment: int
    reasoning: str
    criteria: list[Criterion]


class LoanDisbursed(msgspec.Struct, frozen=True):
    reference: str
    amount: int


class DisbursementRefused(msgspec.Struct, frozen=True):
    error: str  # PolicyDenied, ApprovalDenied, ApprovalExpired, BudgetExceeded, or the bank's
    detail: str


EVENTS = (ApplicationReceived, LoanDecided, LoanDisbursed, DisbursementRefused)


class CreditQuery(msgspec.Struct, frozen=True):
    applicant: str


class CreditReport(msgspec.Struct, frozen=True):
    bureau_ref: str
    score: int
    monthly_debt: int
    income_verified: bool
    adverse_flags: list[str] = []


class Disbursement(msgspec.Struct, frozen=True):
    loan_id: str
    applicant: str
    amount: int
    term_months: int
    apr: float
    tier: str
    country: str


class Payout(msgspec.Struct, frozen=True):
    reference: str
    amount: int
    loan_id: str


# --- the counterparties: in memory, because this is a demo ---------------------------------------


class CreditBureau:
    """Answers for the files it holds; keeps every query so the demo can count them."""

    def __init__(self, files: dict[str, CreditReport]) -> None:
        self.files = files
        self.queries: list[str] = []

    async def check(self, query: CreditQuery, ctx: EffectContext) -> CreditReport:
        self.queries.append(query.applicant)
        return self.files[query.applicant]


class CoreBanking:
    """Pays a loan out once per idempotency key (the effect id); the same key again pays nothing."""

    def __init__(self) -> None:
        self.payouts: dict[str, Payout] = {}
        self.calls: list[str] = []

    async def disburse(self, order: Disbursement, ctx: EffectContext) -> Payout:
        self.calls.append(ctx.key)
        if ctx.key not in self.payouts:
            self.payouts[ctx.key] = Payout(f"DSB-{len(self.payouts) + 1:04d}", order.amount, order.loan_id)
        return self.payouts[ctx.key]

    async def status(self, order: Disbursement, ctx: EffectContext) -> Any:
        return self.payouts.get(ctx.key, NOT_FOUND)


def lending_effects(bureau: CreditBureau, bank: CoreBanking) -> list[z8.effects.Effect]:
    """The effects, named by the capabilities the policy grants."""
    return [
        z8.effect(bureau.check, name="credit.check", kind="read"),
        z8.effect(bank.disburse, name="loan.disburse", kind="irreversible", idempotent=True, resolve=bank.status),
    ]


# --- the credit criteria (pure) ------------------------------------------------------------------


class Tier(msgspec.Struct, frozen=True):
    name: str
    min_score: int
    max_dti: float
    apr: float
    rate_name: str


TIERS = (Tier("Prime", 760, 0.30, 5.9, "the prime rate"), Tier("Standard", 680, 0.36, 7.9, "the standard rate"))


def monthly_payment(amount: int, apr: float, months: int) -> float:
    rate = apr / 100 / 12
    return amount * rate / (1 - (1 + rate) ** -months)


def criteria(tier: Tier, applied: ApplicationReceived, report: CreditReport) -> list[Criterion]:
    """Each criterion of ``tier``: what it requires, what the applicant has, and whether it is met."""
    payment = monthly_payment(applied.amount, tier.apr, applied.term_months)
    dti = (report.monthly_debt + payment) / (applied.annual_income / 12)
    share = applied.amount / applied.annual_income
    return [
        Criterion("credit score", f">= {tier.min_score}", str(report.score), report.score >= tier.min_score),
        Criterion("debt-to-income", f"<= {tier.max_dti:.0%}", f"{dti:.1%}", dti <= tier.max_dti),
        Criterion("amount to verified income", f"<= {MAX_AMOUNT_TO_INCOME:.0%}", f"{share:.1%}",
                  share <= MAX_AMOUNT_TO_INCOME),
        Criterion("income verified", "yes", "yes" if report.income_verified else "no", report.income_verified),
        Criterion("adverse flags", "none", ", ".join(report.adverse_flags) or "none", not report.adverse_flags),
    ]


_FAILS = {">=": "<", "<=": ">"}


def _stated(c: Criterion) -> str:
    """A criterion as the reasoning says it: ``credit score 712 ≥ 680``, ``debt-to-income 63.4% > 36%``."""
    if c.name == "income verified":
        return "income verified" if c.met else "income not verified"
    if c.name == "adverse flags":
        return "no adverse flags" if c.met else f"adverse flags: {c.actual}"
    op, _, bound = c.required.partition(" ")
    shown = {">=": "≥", "<=": "≤", "<": "<", ">": ">"}[op if c.met else _FAILS[op]]
    return f"{c.name} {c.actual} {shown} {bound}"


def decide_loan(applied: ApplicationReceived, report: CreditReport) -> LoanDecided:
    """The best tier whose every criterion holds, with the reasons; Declined when none does."""
    passed_over: list[str] = []
    for tier in TIERS:
        checked = criteria(tier, applied, report)
        missed = [c for c in checked if not c.met]
        if missed:
            passed_over.append(f"Not {tier.name}: " + "; ".join(_stated(c) for c in missed) + ".")
            continue
        payment = round(monthly_payment(applied.amount, tier.apr, applied.term_months))
        reasoning = " ".join([
            f"Applicant meets every criterion for the {tier.name} tier: {'; '.join(_stated(c) for c in checked)}.",
            "Debt-to-income is within policy and income is verified, with no adverse flags.",
            *passed_over,
            f"Approving at {tier.rate_name}: {tier.apr}% APR over {applied.term_months} months, {payment:,} a month.",
        ])
        return LoanDecided(tier.name, True, tier.apr, payment, reasoning, checked)
    lowest = TIERS[-1]
    checked = criteria(lowest, applied, report)
    reasoning = (
        f"Applicant does not meet the criteria for the {lowest.name} tier: "
        + "; ".join(_stated(c) for c in checked if not c.met)
        + ". Declining; a smaller amount or a longer term may qualify."
    )
    return LoanDecided("Declined", False, 0.0, 0, reasoning, checked)


# --- the agent -----------------------------------------------------------------------------------


class LoanState(msgspec.Struct, frozen=True):
    status: str = "new"
    applicant: z8.Subject = ""
    application: ApplicationReceived | None = None
    decision: LoanDecided | None = None


class Loan(z8.Agent):
    """One application: read the bureau, decide by the criteria, ask for the disbursement."""

    State = LoanState
    agent_machine = z8.Machine.of("new", {
        "new": ["checking"], "checking": ["disbursing", "declined"], "disbursing": ["disbursed", "refused"],
    })

    def decide(self, state: LoanState, message: object, ctx: z8.actors.CommandContext) -> z8.Decision:
        match message:
            case Apply() if state.status == "new":
                received = ApplicationReceived(message.applicant, message.name, message.annual_income,
                                               message.loan_id, message.amount, message.term_months, message.country)
                return z8.Decision([received], reply="received",
                                   effects=[z8.Call("credit.check", CreditQuery(message.applicant))])
            case Apply():
                return z8.Decision(reply=state.status)
            case EffectSucceeded(effect="credit.check", result=report) if state.status == "checking":
                assert state.application is not None
                decided = decide_loan(state.application, report)
                if not decided.approved:
                    return z8.Decision([decided])
                a = state.application
                order = Disbursement(a.loan_id, a.applicant, a.amount, a.term_months, decided.apr, decided.tier,
                                     a.country)
                return z8.Decision([decided], effects=[z8.Call("loan.disburse", order)])
            case EffectFailed(effect="credit.check", error=error, message=detail) if state.status == "checking":
                return z8.Decision([LoanDecided("Declined", False, 0.0, 0, f"No credit report ({error}: {detail}); "
                                                "cannot decide without one.", [])])
            case EffectSucceeded(effect="loan.disburse", result=payout) if state.status == "disbursing":
                return z8.Decision([LoanDisbursed(payout.reference, payout.amount)])
            case EffectFailed(effect="loan.disburse", error=error, message=detail) if state.status == "disbursing":
                return z8.Decision([DisbursementRefused(error, detail)])
        return z8.Decision()  # EffectUnknown, EffectStuck…: the runtime journals them; nothing to decide

    def evolve(self, state: LoanState, event: object) -> LoanState:
        match event:
            case ApplicationReceived():
                return LoanState("checking", event.applicant, event)
            case LoanDecided(approved=approved):
                return msgspec.structs.replace(state, status="disbursing" if approved else "declined", decision=event)
            case LoanDisbursed():
                return msgspec.structs.replace(state, status="disbursed")
            case DisbursementRefused():
                return msgspec.structs.replace(state, status="refused")
        return state


def lending_app(path: Path, bureau: CreditBureau, bank: CoreBanking) -> z8.Application:
    router = z8.Router().identify(Loan, by="loan_id", prefix="loan-").dispatch(Apply, to=Loan)
    return z8.Application(router, path, types=z8.TypeRegistry(EVENTS), effects=lending_effects(bureau, bank),
                          policy=POLICY)


# --- the demo ------------------------------------------------------------------------------------

APPLICATIONS = [
    Apply("L-1001", "applicant-4417", "Amara Osei", 84_000, 12_000, 36, "GB"),
    Apply("L-1002", "applicant-5820", "Tomás Ferreira", 96_000, 40_000, 60, "PT"),
    Apply("L-1003", "applicant-6093", "Dariush Karimi", 70_000, 9_000, 36, "IR"),
    Apply("L-1004", "applicant-7731", "Jonas Weber", 38_000, 30_000, 60, "DE"),
]
BUREAU = {
    "applicant-4417": CreditReport("EQX-88121", 781, 600, True),
    "applicant-5820": CreditReport("EQX-90433", 712, 900, True),
    "applicant-6093": CreditReport("EQX-91002", 730, 500, True),
    "applicant-7731": CreditReport("EQX-93310", 598, 1_400, True, ["late payments (2)"]),
}
LARGE, SANCTIONED, DECLINED = APPLICATIONS[1], APPLICATIONS[2], APPLICATIONS[3]


async def until(found: Callable[[], Any], timeout: float = 10.0) -> Any:
    async with asyncio.timeout(timeout):
        while not (value := found()):
            await asyncio.sleep(0.01)
        return value


def records(app: z8.Application, stream: str) -> list[Any]:
    return [app.journal.decode(e) for e in app.journal.read_stream(stream)]


def settled(app: z8.Application, stream: str) -> Any:
    """The application's last event once it is final (paid, refused, declined), else None."""
    for record in reversed(records(app, stream)):
        if isinstance(record, (LoanDisbursed, DisbursementRefused)) or (
                isinstance(record, LoanDecided) and not record.approved):
            return record
    return None


def disbursement_intent(app: z8.Application, stream: str) -> EffectIntended | None:
    return next((r for r in records(app, stream) if isinstance(r, EffectIntended) and r.effect == "loan.disburse"),
                None)


def describe(app: z8.Application, apply: Apply) -> None:
    stream = f"loan-{apply.loan_id}"
    print(f"\n{stream}: {apply.amount:,} over {apply.term_months} months, borrower in {apply.country}")
    for r in records(app, stream):
        if isinstance(r, EffectSucceeded) and r.effect == "credit.check":
            report = r.result
            print(f"  credit.check (read) -> score {report['score']}, debt {report['monthly_debt']:,}/month, "
                  f"income verified: {report['income_verified']}, flags: {report['adverse_flags'] or 'none'}")
        elif isinstance(r, LoanDecided):
            print(f"  LoanDecided: {r.tier} — {r.reasoning}")
        elif isinstance(r, EffectIntended) and r.effect == "loan.disburse":
            print(f"  loan.disburse {r.effect_id}: verdict {r.verdict} by rule {r.rule!r} of policy {r.policy_version}"
                  + (f" — {r.reason}" if r.reason else ""))
        elif isinstance(r, z8.effects.EffectApproved):
            print(f"  approved by {r.by}: {r.reason}")
        elif isinstance(r, LoanDisbursed):
            print(f"  LoanDisbursed: {r.amount:,} paid out, core-banking reference {r.reference}")
        elif isinstance(r, DisbursementRefused):
            print(f"  DisbursementRefused: {r.error} — {r.detail}")


def section(markdown: str, title: str) -> str:
    """One ``## title`` section of a run record's Markdown."""
    for part in markdown.split("\n## "):
        if part.startswith(title):
            return "## " + part.strip()
    return ""


async def lending(directory: Path) -> dict[str, Any]:
    """Run the four applications; print what happened, the large loan's run record, and its seal."""
    bureau, bank = CreditBureau(BUREAU), CoreBanking()
    out: dict[str, Any] = {"bank": bank, "bureau": bureau}
    async with lending_app(directory / "journal", bureau, bank) as app:
        policy = app.policies.current
        assert policy is not None
        print(f"policy {policy.name!r} version {policy.version} from {POLICY.name}: "
              f"{len(policy.grants)} grant, {len(policy.rules)} rules, {len(policy.budgets)} budgets")

        # 1. small: below the threshold, paid at once
        await app.dispatch(APPLICATIONS[0])
        await until(lambda: settled(app, "loan-L-1001"))
        describe(app, APPLICATIONS[0])

        # 2. large: parked for a credit officer
        await app.dispatch(LARGE)
        parked = await until(lambda: next((v for v in app.pending_effects()
                                           if v.stream == "loan-L-1002" and v.status == "parked"), None))
        intent = disbursement_intent(app, "loan-L-1002")
        assert intent is not None
        print(f"\nloan-L-1002: {parked.effect_id} is parked (no task holds it): rule {intent.rule!r} wants "
              f"{intent.quorum} of {', '.join(intent.approvers)} within {intent.approval_timeout:,.0f} s")
        try:
            await app.approve(parked.effect_id, by="loan-agent", reason="I am confident")
            out["self_approved"] = True
        except EffectStateError as refused:
            print(f"  app.approve(by='loan-agent') refused: {refused}")
            out["self_approved"] = False
        print(f"  app.approve(by={OFFICER!r}): approving as credit officer {OFFICER}")
        await app.approve(parked.effect_id, by=OFFICER, reason="payslips and employer reference checked")
        await until(lambda: settled(app, "loan-L-1002"))
        describe(app, LARGE)
        out["large_effect_id"] = parked.effect_id

        # 3. sanctioned: the agent approves on credit, the gate refuses the money
        await app.dispatch(SANCTIONED)
        await until(lambda: settled(app, "loan-L-1003"))
        describe(app, SANCTIONED)

        # 4. declined, then forgotten at the applicant's request
        await app.dispatch(DECLINED)
        await until(lambda: settled(app, "loan-L-1004"))
        describe(app, DECLINED)
        erased = await app.erase(DECLINED.applicant, by="dpo@lender.example",
                                 reason="GDPR Art. 17 request, application withdrawn")
        print(f"  the applicant withdrew and asked to be forgotten: app.erase({DECLINED.applicant!r}) journaled "
              f"{erased.type} at #{erased.position} in {erased.stream}; their key is destroyed")

        # the large loan's run record, sealed, exported and checked offline
        record = app.audit.run(stream="loan-L-1002")
        markdown = record.markdown()
        print("\n" + "=" * 30 + " run record of the approved large loan " + "=" * 30 + "\n")
        print(markdown)
        bundle = record.export(directory / "loan-L-1002.bundle.json")
        fingerprint = app.audit.fingerprint
        report = z8.audit.verify_bundle(bundle, key=fingerprint)
        print(f"bundle {bundle}: verify_bundle -> {'ok' if report.ok else 'FAILED'} "
              f"({report.checked} records, signed by key {report.fingerprint})")

        # the forgotten applicant's record: erased where it was personal, and still sealed
        forgotten = app.audit.run(stream="loan-L-1004")
        forgotten_md = forgotten.markdown()
        forgotten_bundle = forgotten.export(directory / "loan-L-1004.bundle.json")
        forgotten_report = z8.audit.verify_bundle(forgotten_bundle, key=fingerprint)
        print("\nrun record of loan-L-1004 after the erasure (excerpt):\n")
        print(section(forgotten_md, "What triggered it") + "\n")
        print(section(forgotten_md, "Personal data"))
        print(f"\nits bundle: verify_bundle -> {'ok' if forgotten_report.ok else 'FAILED'}")

        verified = await app.audit.verify()
        print(f"journal.verify() after the erasure: {'ok' if verified.ok else verified} ({verified.checked} events)")
        print(f"core banking: {len(bank.payouts)} loans paid out, {len(bank.calls)} disbursement calls "
              f"({', '.join(f'{p.loan_id} {p.reference}' for p in bank.payouts.values())}); "
              f"bureau: {len(bureau.queries)} reads")
        balances = app.budgets()
        print("budgets (app.budgets()):")
        for b in balances:
            print(f"  {b.account:<40} spent {b.spent:>9,.0f}  held {b.held:>7,.0f}  available {b.available:>9,.0f}"
                  f" of {b.limit:,.0f}")
        print(f"\ncheck the bundle yourself, with no journal:\n  z8 verify --bundle {bundle} --key {fingerprint}")
        out.update(
            records={f"loan-{a.loan_id}": records(app, f"loan-{a.loan_id}") for a in APPLICATIONS},
            markdown=markdown, bundle=bundle, report=report, fingerprint=fingerprint,
            forgotten_markdown=forgotten_md, forgotten_report=forgotten_report, verified=verified,
            balances={b.account: (b.spent, b.held) for b in balances},
        )
    return out


def expectations(run: dict[str, Any]) -> list[str]:
    """What must hold; each failure is named."""
    bank, recs = run["bank"], run["records"]
    paid = sorted(p.loan_id for p in bank.payouts.values())
    large = next(r for r in recs["loan-L-1002"] if isinstance(r, EffectIntended) and r.effect == "loan.disburse")
    approvals = [r for r in recs["loan-L-1002"] if isinstance(r, z8.effects.EffectApproved)]
    sanctioned = next(r for r in recs["loan-L-1003"] if isinstance(r, EffectIntended) and r.effect == "loan.disburse")
    checks = {
        "L-1001 and L-1002 are paid, nothing else": paid == ["L-1001", "L-1002"],
        "core banking was called once per disbursement": sorted(bank.calls) == sorted(bank.payouts),
        "the large disbursement was held for approval": (large.verdict, large.rule) == ("approval",
                                                                                       "large-disbursement"),
        "the agent could not approve its own loan": run["self_approved"] is False,
        f"{OFFICER} approved it, once": [(a.by, a.final) for a in approvals] == [(OFFICER, True)],
        "the sanctioned disbursement was denied by its rule": (sanctioned.verdict, sanctioned.rule) == (
            "deny", "sanctioned-country"),
        "the declined applicant asked for no money": not any(isinstance(r, EffectIntended) and r.effect ==
                                                             "loan.disburse" for r in recs["loan-L-1004"]),
        "the run record reads like the seed": "meets every criterion for the Standard tier" in run["markdown"],
        "the run record names the officer and the seal": OFFICER in run["markdown"] and "## Seal" in run["markdown"],
        "the bundle verifies offline": run["report"].ok,
        "the erased applicant shows as [erased]": "[erased]" in run["forgotten_markdown"]
        and DECLINED.name not in run["forgotten_markdown"],
        "the erased applicant's bundle still verifies": run["forgotten_report"].ok,
        "the journal verifies after the erasure": run["verified"].ok,
        "the day's budget holds exactly what was paid": [v for k, v in run["balances"].items()
                                                   if k.startswith("disbursed-today[")] == [(52_000.0, 0.0)],
    }
    return [name for name, ok in checks.items() if not ok]


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="where to put the journal and the bundles (default: a temporary "
                        "directory, removed at the end)")
    given = parser.parse_args().dir
    directory = given or Path(tempfile.mkdtemp(prefix="z8-lending-"))
    try:
        run = asyncio.run(lending(directory))
        failed = expectations(run)
    finally:
        if given is None:
            shutil.rmtree(directory, ignore_errors=True)
    if given is None:
        print("(the journal and bundle were in a temporary directory, now removed: keep them with --dir DIR)")
    for name in failed:
        print(f"FAILED: {name}", file=sys.stderr)
    print("lending demo " + ("FAILED" if failed else "passed"))
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    cli()
