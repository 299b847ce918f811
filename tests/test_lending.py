"""The lending example, run as a reader would run it, and the journal and bundles it leaves.

``examples/lending.py --dir DIR`` runs once per module (a second or two); the tests then
open its journal and read its bundles: the large disbursement held by its rule under the
policy version, approved by the named officer and paid once; the sanctioned one denied;
the run record sealed and verifiable with no journal (and a changed bundle caught); the
declined applicant's personal data erased, in no file, and the chain still valid.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import z8
from z8.actors._system import register_system_types
from z8.audit import verify_bundle
from z8.cli import main
from z8.effects import EffectApproved, EffectFailed, EffectIntended, EffectSucceeded
from z8.journal import Journal, TypeRegistry, open_journal

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "lending.py"
if "lending" not in sys.modules:  # examples/ is no package: load the example by path, once
    _spec = importlib.util.spec_from_file_location("lending", EXAMPLE)
    _lending = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
    sys.modules["lending"] = _lending
    _spec.loader.exec_module(_lending)  # type: ignore[union-attr]
import lending  # noqa: E402

VERSION = "2024-06-14.1"


class Run:
    def __init__(self, directory: Path, stdout: str) -> None:
        self.directory = directory
        self.stdout = stdout
        self.bundle = directory / "loan-L-1002.bundle.json"
        found = re.search(r"^  z8 verify --bundle (\S+) --key ([0-9a-f]+)$", stdout, re.MULTILINE)
        assert found is not None, stdout  # the command printed for the reader
        self.command_bundle, self.fingerprint = Path(found.group(1)), found.group(2)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    directory = tmp_path_factory.mktemp("lending")
    done = subprocess.run([sys.executable, str(EXAMPLE), "--dir", str(directory)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "lending demo passed"
    return Run(directory, done.stdout)


@pytest.fixture
def journal(run: Run) -> Iterator[Journal]:
    types = register_system_types(TypeRegistry(lending.EVENTS))
    with open_journal(run.directory / "journal", types=types) as opened:
        yield opened


def stream(journal: Journal, name: str) -> list[Any]:
    return [journal.decode(e) for e in journal.read_stream(name)]


def of(records: list[Any], kind: type, effect: str | None = None) -> list[Any]:
    return [r for r in records if isinstance(r, kind) and (effect is None or getattr(r, "effect", None) == effect)]


def test_the_large_loan_waits_for_a_named_officer_and_is_paid_once(run: Run, journal: Journal) -> None:
    records = stream(journal, "loan-L-1002")
    [intent] = of(records, EffectIntended, "loan.disburse")
    assert (intent.verdict, intent.rule, intent.policy_version) == ("approval", "large-disbursement", VERSION)
    assert (intent.approvers, intent.quorum, intent.approval_timeout) == (["maria.okafor", "devi.raman"], 1, 86400)
    assert intent.capability == "loan.disburse" and intent.kind == "irreversible" and intent.idempotent
    [(account, held)] = intent.budgets.items()
    assert re.fullmatch(r"disbursed-today\[\d{4}-\d\d-\d\dT00:00:00Z\]", account) and held == 40_000.0
    [approval] = of(records, EffectApproved)
    assert (approval.effect_id, approval.by, approval.approve, approval.final) == (
        intent.effect_id, "maria.okafor", True, True)
    [paid] = of(records, EffectSucceeded, "loan.disburse")  # exactly one disbursement, on its first attempt
    assert (paid.effect_id, paid.attempts, paid.resolved) == (intent.effect_id, 1, False)
    assert paid.charged == {account: 40_000.0}
    assert records.index(approval) < records.index(paid)
    [decided] = of(records, lending.LoanDecided)
    assert decided.tier == "Standard" and decided.approved and all(c.met for c in decided.criteria)
    assert decided.reasoning.startswith("Applicant meets every criterion for the Standard tier: credit score 712")
    assert records[-1] == lending.LoanDisbursed("DSB-0002", 40_000)
    assert "approving as credit officer maria.okafor" in run.stdout
    assert "app.approve(by='loan-agent') refused" in run.stdout
    assert "core banking: 2 loans paid out, 2 disbursement calls" in run.stdout


def test_the_small_loan_is_allowed_by_the_grant_and_the_sanctioned_one_denied(journal: Journal) -> None:
    small = stream(journal, "loan-L-1001")
    [intent] = of(small, EffectIntended, "loan.disburse")
    assert (intent.verdict, intent.rule, intent.policy_version) == ("allow", "grant:Loan:loan.disburse", VERSION)
    assert not of(small, EffectApproved) and len(of(small, EffectSucceeded, "loan.disburse")) == 1

    sanctioned = stream(journal, "loan-L-1003")
    [intent] = of(sanctioned, EffectIntended, "loan.disburse")
    assert (intent.verdict, intent.rule, intent.error) == ("deny", "sanctioned-country", "PolicyDenied")
    [denied] = of(sanctioned, EffectFailed, "loan.disburse")
    assert denied.error == "PolicyDenied" and not of(sanctioned, EffectSucceeded, "loan.disburse")
    assert sanctioned[-1] == lending.DisbursementRefused("PolicyDenied", intent.reason)

    declined = stream(journal, "loan-L-1004")
    assert not of(declined, EffectIntended, "loan.disburse")
    assert of(declined, lending.LoanDecided)[0].tier == "Declined"
    adopted = stream(journal, "$policies")
    assert [(a.version, a.by) for a in adopted] == [(VERSION, "application")]


def test_the_run_record_reads_like_the_seed_and_carries_its_seal(run: Run) -> None:
    out = run.stdout
    assert "# Run record: loan-L-1002" in out
    assert "> Applicant meets every criterion for the Standard tier: credit score 712 ≥ 680" in out
    assert "Debt-to-income is within policy and income is verified, with no adverse flags." in out
    for heading in ("What triggered it", "Facts weighed", "Reasoning", "Policy verdicts", "Approvals",
                    "Effects and their outcomes", "Outcome", "Seal"):
        assert f"\n## {heading}\n" in out
    assert "| `loan-L-1002/3/0` | `loan.disburse` | **approval** | large-disbursement | 2024-06-14.1 |" in out
    assert "| maria.okafor | approved | yes | payslips and employer reference checked |" in out
    assert "**LoanDisbursed**" in out and "checked at export: intact" in out
    assert f"- Signing key: fingerprint **`{run.fingerprint}`**" in out


def test_the_bundle_verifies_offline_and_a_change_is_caught(run: Run, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert run.command_bundle == run.bundle and run.bundle.exists()
    assert f"verify_bundle -> ok (8 records, signed by key {run.fingerprint})" in run.stdout
    report = verify_bundle(run.bundle, key=run.fingerprint)
    assert report.ok and report.stream == "loan-L-1002" and report.checked == 8
    assert main(["verify", "--bundle", str(run.bundle), "--key", run.fingerprint]) == 0
    assert "ok: run bundle of stream 'loan-L-1002'" in capsys.readouterr().out
    forged = tmp_path / "forged.json"
    forged.write_text(run.bundle.read_text().replace("DSB-0002", "DSB-0009"))
    assert not verify_bundle(forged).ok
    assert main(["verify", "--bundle", str(forged)]) == 1
    assert main(["verify", "--bundle", str(run.bundle), "--key", "0" * 16]) == 1


def test_the_forgotten_applicant_is_erased_everywhere_and_the_chain_still_verifies(run: Run,
                                                                                  journal: Journal) -> None:
    assert journal.is_erased("applicant-7731") and not journal.is_erased("applicant-5820")
    [received] = of(stream(journal, "loan-L-1004"), lending.ApplicationReceived)
    assert received.name is z8.ERASED and received.annual_income is z8.ERASED and received.amount == 30_000
    [kept] = of(stream(journal, "loan-L-1002"), lending.ApplicationReceived)
    assert kept.name == "Tomás Ferreira"
    [act] = [journal.decode(e) for e in journal.read_stream("$vault")]
    assert (act.subject, act.by) == ("applicant-7731", "dpo@lender.example")
    assert journal.verify().ok
    bundle = run.directory / "loan-L-1004.bundle.json"
    assert verify_bundle(bundle, key=run.fingerprint).ok
    assert '"name":"[erased]"' in run.stdout and "## Personal data" in run.stdout
    for root, _, files in os.walk(run.directory):  # the name is in no file: journal, vault, bundles
        for name in files:
            assert b"Jonas Weber" not in (Path(root) / name).read_bytes(), name
    assert "journal.verify() after the erasure: ok" in run.stdout


def test_the_days_budget_holds_what_was_paid(run: Run) -> None:
    assert re.search(r"disbursed-today\[[^\]]+\]\s+spent\s+52,000\s+held\s+0\s+available\s+198,000 of 250,000", run.stdout)
