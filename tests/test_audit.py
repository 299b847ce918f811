"""The audit surface: verify(stream=...), run records, sealed bundles and their offline check.

The tamper tests flip real bytes — in LMDB's data file or in an exported bundle — and
assert the exact position (and version) where the break is reported.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

import z8
from z8.journal import Journal, open_journal, open_memory_journal
from z8.testing._journal_kit import flip_byte, reseal, stored_record, tamper

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Noted(msgspec.Struct, frozen=True):
    text: str


@pytest.fixture(params=["lmdb", "memory"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Journal:
    types = z8.TypeRegistry([Noted])
    made = open_journal(tmp_path / "j", types=types, durability="fast") if request.param == "lmdb" \
        else open_memory_journal(types=types)
    yield made
    made.close()


async def _interleaved(journal: Journal) -> None:
    """Positions: a1=1 b1=2 b2=3 a2=4 a3=5 b3=6 b4=7 a4=8 (a2,a3 consecutive; a3,a4 not)."""
    await journal.append("a", [Noted("a1")])
    await journal.append("b", [Noted("b1"), Noted("b2")])
    await journal.append("a", [Noted("a2"), Noted("a3")])
    await journal.append("b", [Noted("b3"), Noted("b4")])
    await journal.append("a", [Noted("a4")])


# === 1. verify(stream=...) ================================================================


async def test_verify_one_stream_passes_on_an_honest_log_and_names_the_stream_head(journal: Journal) -> None:
    await _interleaved(journal)
    report = journal.verify(stream="a")
    assert report.ok and report.checked == 4 and report.stream == "a"
    assert (report.head_version, report.head_position, report.head_hash) == (4, 8, journal.read_all(8)[0].hash)
    assert journal.verify(stream="b").checked == 4
    empty = journal.verify(stream="nobody")
    assert empty.ok and empty.checked == 0 and empty.head_position == 0
    assert "stream 'a': ok: 4 events" in str(report)


@pytest.mark.parametrize(("position", "version"), [(1, 1), (4, 2), (8, 4)])
async def test_verify_one_stream_finds_every_altered_byte_at_its_event(journal: Journal, position: int,
                                                                        version: int) -> None:
    await _interleaved(journal)
    original = stored_record(journal, position)
    for offset in range(len(original)):
        flip_byte(journal, position, offset)
        report = journal.verify(stream="a")
        assert (report.ok, report.first_bad, report.first_bad_version) == (False, position, version), (offset, report)
        assert journal.verify(stream="b").ok  # the other stream is untouched
        tamper(journal, position, original)
    assert journal.verify(stream="a").ok


async def test_verify_one_stream_finds_a_resealed_event_through_the_next_link_or_the_head(journal: Journal) -> None:
    await _interleaved(journal)
    reseal(journal, 4, data=msgspec.msgpack.encode(Noted("forged")))  # a2; a3 follows at position 5
    report = journal.verify(stream="a")
    assert (report.first_bad, report.first_bad_version) == (4, 2) and "rewritten" in report.reason
    assert journal.verify().first_bad == 4


async def test_verify_one_stream_finds_a_resealed_last_event_by_its_head(journal: Journal) -> None:
    await _interleaved(journal)
    reseal(journal, 8, actor="mallory")
    report = journal.verify(stream="a")
    assert (report.ok, report.first_bad, report.first_bad_version) == (False, 8, 4)
    assert "recorded head" in report.reason


async def test_verify_one_stream_finds_a_dropped_event(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j", types=z8.TypeRegistry([Noted]), durability="fast") as journal:
        await _interleaved(journal)
        tamper(journal, 5, None)  # a3: the stream index now points at nothing
        report = journal.verify(stream="a")
        assert (report.ok, report.first_bad, report.first_bad_version) == (False, 5, 3)
        assert "holds no event" in report.reason
        assert journal.verify().first_bad == 5


# === 2. a loan run: the record, its Markdown, its bundle =====================================

REASONING = ("Applicant meets every criterion for the Standard tier. Debt-to-income is within policy "
             "and income is verified, with no adverse flags. Approving at the standard rate.")


class ApplyForLoan(msgspec.Struct, frozen=True, tag=True):
    loan_id: str
    applicant: str
    amount: int


class CreditQuery(msgspec.Struct, frozen=True, tag=True):
    applicant: str


class CreditReport(msgspec.Struct, frozen=True, tag=True):
    score: int
    adverse_flags: int


class Disburse(msgspec.Struct, frozen=True, tag=True):
    amount: int


class Disbursed(msgspec.Struct, frozen=True, tag=True):
    reference: str


class LoanRequested(msgspec.Struct, frozen=True):
    applicant: str
    amount: int


class LoanDecided(msgspec.Struct, frozen=True):
    tier: str
    reasoning: str


class LoanApproved(msgspec.Struct, frozen=True):
    amount: int
    reference: str


async def credit_check(request: CreditQuery, ctx: z8.effects.EffectContext) -> CreditReport:
    return CreditReport(score=742, adverse_flags=0)


async def disburse(request: Disburse, ctx: z8.effects.EffectContext) -> Disbursed:
    return Disbursed(reference=f"wire-{request.amount}")


CREDIT = z8.effect(credit_check, name="credit_check", kind="read")
DISBURSE = z8.effect(disburse, name="disburse")


class LoanState(msgspec.Struct, frozen=True):
    pass


class Lender(z8.Agent):
    State = LoanState
    agent_effects = (CREDIT, DISBURSE)

    def decide(self, state: LoanState, msg: object, ctx: object) -> z8.Decision:
        match msg:
            case ApplyForLoan(applicant=applicant, amount=amount):
                return z8.Decision([LoanRequested(applicant, amount)], reply="received",
                                   effects=[z8.Call(CREDIT, CreditQuery(applicant))])
            case z8.effects.EffectSucceeded(effect="credit_check"):
                return z8.Decision([LoanDecided("Standard", REASONING)], effects=[z8.Call(DISBURSE, Disburse(25_000))])
            case z8.effects.EffectSucceeded(effect="disburse", result=result):
                return z8.Decision([LoanApproved(25_000, result.reference)])
        return z8.reject("unexpected", type=type(msg).__name__)

    def evolve(self, state: LoanState, event: object) -> LoanState:
        return state


def gate(request: z8.policies.EffectRequest) -> z8.policies.Verdict:
    if request.effect == "disburse":
        return z8.policies.RequireApproval(approvers=("alice", "bob"), rule="disburse-over-10k", policy_version="v3")
    return z8.policies.Allow(rule="reads-allowed", policy_version="v3")


def loan_app(path: Path) -> z8.Application:
    router = z8.Router().identify(Lender, by="loan_id", prefix="loan-").dispatch(ApplyForLoan, to=Lender)
    return z8.Application(router, path, types=z8.TypeRegistry([LoanRequested, LoanDecided, LoanApproved]),
                          durability="fast", gate=gate)


STREAM_TYPES = ["LoanRequested", "z8.EffectIntended", "z8.EffectSucceeded", "LoanDecided", "z8.EffectIntended",
                "z8.EffectApproved", "z8.EffectSucceeded", "LoanApproved"]


async def approved_loan(path: Path) -> z8.Application:
    """Run loan-42 to its end inside a started app (returned still running)."""
    from _polling import until

    app = loan_app(path)
    await app.start()
    await app.dispatch(ApplyForLoan("42", "Ada Lovelace", 25_000))
    parked = await until(lambda: [v.effect_id for v in app.pending_effects() if v.status == "parked"],
                         what="the disbursement to wait for approval")
    await app.approve(parked[0], by="alice", reason="income verified by phone")
    await until(lambda: app.journal.stream_version("loan-42") == len(STREAM_TYPES), what="the loan's outcome")
    assert [e.type for e in app.journal.read_stream("loan-42")] == STREAM_TYPES
    return app


async def test_the_run_record_of_an_approved_loan_answers_the_auditors_questions(tmp_path: Path) -> None:
    app = await approved_loan(tmp_path / "j")
    try:
        record = app.audit.run(stream="loan-42")
        events = app.journal.read_stream("loan-42")
        fingerprint = app.audit.fingerprint
    finally:
        await app.aclose()
    p = [e.position for e in events]
    assert record.scope == "stream" and [e.position for e in record.events] == p
    assert record.trigger.type == "LoanRequested" and record.trigger.position == p[0]
    assert record.trigger.data == {"applicant": "Ada Lovelace", "amount": 25_000}
    assert record.trigger.causation_id is not None and record.trigger.actor == "/app/lender/loan-42"

    credit, wire = "loan-42/1/0", record.verdicts[1].effect_id
    assert [(f.effect, f.kind, f.request, f.result, f.decided) for f in record.facts] == [
        ("credit_check", "read", {"type": "CreditQuery", "applicant": "Ada Lovelace"},
         {"type": "CreditReport", "score": 742, "adverse_flags": 0}, [f"LoanDecided #{p[3]}"]),
        ("disburse", "irreversible", {"type": "Disburse", "amount": 25_000},
         {"type": "Disbursed", "reference": "wire-25000"}, [f"LoanApproved #{p[7]}"]),
    ]
    assert [(r.position, r.type, r.field, r.text) for r in record.reasoning] == [
        (p[3], "LoanDecided", "reasoning", REASONING)]
    assert [(v.effect_id, v.effect, v.verdict, v.rule, v.policy_version, v.approvers, v.quorum, v.position)
            for v in record.verdicts] == [
        (credit, "credit_check", "allow", "reads-allowed", "v3", [], 1, p[1]),
        (wire, "disburse", "approval", "disburse-over-10k", "v3", ["alice", "bob"], 1, p[4]),
    ]
    assert [(a.effect_id, a.by, a.approve, a.reason, a.final, a.position) for a in record.approvals] == [
        (wire, "alice", True, "income verified by phone", True, p[5])]
    assert [(e.effect_id, e.status, e.verdict, e.attempts, e.approved_by, e.result) for e in record.effects] == [
        (credit, "succeeded", "allow", 1, [], {"type": "CreditReport", "score": 742, "adverse_flags": 0}),
        (wire, "succeeded", "approval", 1, ["alice"], {"type": "Disbursed", "reference": "wire-25000"}),
    ]
    assert record.outcome.type == "LoanApproved" and record.outcome.position == p[7]
    assert record.outcome.data == {"amount": 25_000, "reference": "wire-25000"}
    assert not record.personal_data_erased and record.erased == []

    seal = record.seal
    assert seal.intact and seal.events == 8 and seal.first_bad_position is None
    assert seal.links == sum(1 for a, b in zip(p, p[1:]) if b == a + 1)
    assert seal.fingerprint == fingerprint and (tmp_path / "j" / "audit.key").stat().st_mode & 0o777 == 0o600
    assert len(bytes.fromhex(seal.signature)) == 64 and len(bytes.fromhex(seal.digest)) == 32


async def test_the_markdown_reads_like_a_decision_memo(tmp_path: Path) -> None:
    app = await approved_loan(tmp_path / "j")
    try:
        record = app.audit.run(stream="loan-42")
    finally:
        await app.aclose()
    text = record.markdown()
    for heading in ("# Run record: loan-42", "## What triggered it", "## Facts weighed", "## Reasoning",
                    "## Policy verdicts", "## Approvals", "## Effects and their outcomes", "## Outcome", "## Seal"):
        assert heading in text
    assert f"> {REASONING}" in text
    assert "| `credit_check` | read |" in text and "score" in text
    assert "**approval**" in text and "disburse-over-10k" in text and "alice, bob (quorum 1)" in text
    assert "| alice | approved |" in text and "income verified by phone" in text
    assert "**LoanApproved**" in text and "wire-25000" in text
    assert record.seal.digest in text and record.seal.fingerprint in text



# === 3. the bundle, offline; tampering ========================================================


def flip_in_file(path: Path, needle: bytes, at: int) -> int:
    """Flip one bit of byte ``at`` of ``needle`` wherever it occurs in ``path`` (LMDB may
    keep stale copies of a page: every copy is altered). Returns how many copies."""
    content = bytearray(path.read_bytes())
    found, start = 0, 0
    while (index := content.find(needle, start)) != -1:
        content[index + at] ^= 0x20
        found, start = found + 1, index + len(needle)
    path.write_bytes(bytes(content))
    return found


async def exported(tmp_path: Path) -> tuple[Path, str, list[z8.Envelope]]:
    """An approved loan's bundle, written outside the journal, and the journal deleted."""
    import shutil

    app = await approved_loan(tmp_path / "j")
    (tmp_path / "out").mkdir()
    try:
        path = app.audit.run(stream="loan-42").export(tmp_path / "out" / "loan-42.json")
        fingerprint, events = app.audit.fingerprint, app.journal.read_stream("loan-42")
    finally:
        await app.aclose()
    shutil.rmtree(tmp_path / "j")
    return path, fingerprint, events


async def test_a_bundle_verifies_offline_with_no_journal_left(tmp_path: Path) -> None:
    path, fingerprint, events = await exported(tmp_path)
    assert not (tmp_path / "j").exists()
    report = z8.audit.verify_bundle(path)
    assert (report.ok, report.checked, report.events, report.first_bad_position, report.reason) == (
        True, 8, 8, None, None)
    assert report.fingerprint == fingerprint and report.stream == "loan-42"
    assert z8.audit.verify_bundle(path.read_bytes(), key=fingerprint).ok
    assert "ok: run bundle of stream 'loan-42': 8 events" in str(report)
    document = msgspec.json.decode(path.read_bytes())
    assert document["seal"]["public_key"] and [r["position"] for r in document["records"]] == [
        e.position for e in events]
    assert z8.audit.verify_bundle(path, key=document["seal"]["public_key"]).ok  # the key itself pins too
    wrong = z8.audit.verify_bundle(path, key="0123456789abcdef")
    assert not wrong.ok and wrong.first_bad_position is None and "not by the expected key 0123456789abcdef" in wrong.reason
    with pytest.raises(z8.errors.InvalidArgument):
        z8.audit.verify_bundle(path, key="not a key")


async def test_one_flipped_byte_in_the_lmdb_file_is_found_at_its_event_by_verify_and_by_the_bundle(
        tmp_path: Path) -> None:
    app = await approved_loan(tmp_path / "j")
    await app.aclose()
    with open_journal(tmp_path / "j") as journal:
        decided = journal.read_stream("loan-42")[3]
        assert decided.type == "LoanDecided" and journal.verify().ok
    assert flip_in_file(tmp_path / "j" / "data.mdb", b"every criterion", 6) >= 1  # "every Criterion"

    with open_journal(tmp_path / "j", types=z8.TypeRegistry([LoanRequested, LoanDecided, LoanApproved])) as journal:
        whole = journal.verify()
        assert (whole.ok, whole.first_bad) == (False, decided.position) and "altered" in whole.reason
        one = journal.verify(stream="loan-42")
        assert (one.ok, one.first_bad, one.first_bad_version, one.checked) == (False, decided.position, 4, 3)
        record = z8.audit.Audit(journal).run(stream="loan-42")
        assert (record.seal.intact, record.seal.first_bad_position, record.seal.first_bad_version) == (
            False, decided.position, 4)
        assert record.reasoning[0].text.startswith("Applicant meets every Criterion")  # what the file now says
        assert f"BROKEN at position {decided.position} (v4)" in record.markdown()
        path = record.export(tmp_path / "tampered.json")
    report = z8.audit.verify_bundle(path)
    assert (report.ok, report.first_bad_position, report.first_bad_version, report.checked) == (
        False, decided.position, 4, 3)
    assert "altered" in report.reason


def _bundle(path: Path) -> dict:
    return msgspec.json.decode(path.read_bytes())


def _write(document: dict) -> bytes:
    return msgspec.json.encode(document)


def _flip_record(document: dict, index: int, offset: int) -> dict:
    import base64

    record = bytearray(base64.b64decode(document["records"][index]["record"]))
    record[offset % len(record)] ^= 0x01
    document["records"][index]["record"] = base64.b64encode(bytes(record)).decode()
    return document


async def test_one_flipped_byte_of_any_event_in_a_bundle_is_found_at_that_event(tmp_path: Path) -> None:
    import base64

    path, _, events = await exported(tmp_path)
    for index, event in enumerate(events):
        for offset in (0, 17, len(stored := base64.b64decode(_bundle(path)["records"][index]["record"])) // 2, -1):
            report = z8.audit.verify_bundle(_write(_flip_record(_bundle(path), index, offset)))
            assert (report.ok, report.first_bad_position, report.first_bad_version, report.checked) == (
                False, event.position, event.version, index), (index, offset, report)
    for offset in range(len(stored)):  # every byte of the last record
        report = z8.audit.verify_bundle(_write(_flip_record(_bundle(path), 7, offset)))
        assert (report.ok, report.first_bad_position) == (False, events[7].position), (offset, report)


async def test_a_byte_flipped_in_the_bundle_file_itself_is_found_at_its_event(tmp_path: Path) -> None:
    path, _, events = await exported(tmp_path)
    content = path.read_bytes()
    encoded = _bundle(path)["records"][4]["record"].encode()
    at = content.index(encoded) + len(encoded) // 2
    for replacement in (b"A" if content[at:at + 1] != b"A" else b"B", b"!"):  # another base64 digit; not one
        altered = content[:at] + replacement + content[at + 1:]
        report = z8.audit.verify_bundle(altered)
        assert (report.ok, report.first_bad_position, report.first_bad_version) == (
            False, events[4].position, 5), report


async def test_an_edited_summary_a_dropped_event_and_a_changed_seal_are_each_reported(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path, fingerprint, events = await exported(tmp_path)

    def check(document: dict, *, key: str | None = None) -> z8.audit.BundleReport:
        return z8.audit.verify_bundle(_write(document), key=key)

    story = _bundle(path)
    story["run"]["reasoning"][0]["text"] = "Applicant is my cousin."
    report = check(story)
    assert not report.ok and report.first_bad_position is None and "summary was altered" in report.reason

    dropped = _bundle(path)
    del dropped["records"][5], dropped["run"]["events"][5]  # the approval, gone from the bundle
    report = check(dropped)
    assert (report.ok, report.first_bad_position, report.first_bad_version) == (False, events[6].position, 6)
    assert "version 6 of stream 'loan-42' is missing" in report.reason

    for field, reason in (("digest", "digest does not match"), ("signature", "signature does not verify"),
                          ("public_key", "fingerprint is not the fingerprint of its public key")):
        seal = _bundle(path)
        value = seal["seal"][field]
        seal["seal"][field] = value[:10] + ("0" if value[10] != "0" else "1") + value[11:]
        report = check(seal)
        assert not report.ok and reason in report.reason, (field, report)

    mallory = Ed25519PrivateKey.generate()
    forged = _bundle(path)
    public = mallory.public_key().public_bytes_raw()
    forged["seal"].update(public_key=public.hex(), fingerprint=z8.audit.fingerprint_of(mallory.public_key()))
    report = check(forged)
    assert not report.ok and "signature does not verify" in report.reason
    forged["seal"]["signature"] = mallory.sign(bytes.fromhex(forged["seal"]["digest"])).hex()
    assert check(forged).ok  # a consistent re-signing: only pinning the key tells it apart
    report = check(forged, key=fingerprint)
    assert not report.ok and f"not by the expected key {fingerprint}" in report.reason


@pytest.mark.parametrize(("content", "message"), [
    (b"not json at all", "not JSON"),
    (b'{"hello": "world"}', "no \"format\""),
    (b'{"format": "z8.run-bundle", "format_version": 99}', "format version 99"),
    (b'{"format": "z8.run-bundle", "format_version": 1, "run": {}}', "malformed"),
])
def test_a_file_that_is_not_a_bundle_is_invalid_bundle(content: bytes, message: str) -> None:
    with pytest.raises(z8.errors.InvalidBundle, match=message):
        z8.audit.verify_bundle(content)


def test_a_missing_bundle_file_is_invalid_bundle(tmp_path: Path) -> None:
    with pytest.raises(z8.errors.InvalidBundle, match="cannot read"):
        z8.audit.verify_bundle(tmp_path / "nothing.json")


# === 4. other runs: by correlation, in memory, with erased personal data ======================


async def test_the_audit_surface_verifies_in_a_thread_and_walks_provenance() -> None:
    journal = open_memory_journal(types=z8.TypeRegistry([Noted]))
    [root] = await journal.append("a", [Noted("root")], correlation_id="req-1")
    [child] = await journal.append("b", [Noted("child")], causation_id=root.event_id, correlation_id="req-1")
    await journal.append("c", [Noted("elsewhere")])
    audit = z8.audit.Audit(journal)
    assert (await audit.verify()).checked == 3 and (await audit.verify("b")).checked == 1
    assert audit.causes(child.event_id) == [root, child] and audit.effects(root.event_id) == [child]
    assert audit.trace("req-1") == [root, child]
    record = audit.run("a", correlation="req-1")
    assert record.scope == "correlation" and [e.position for e in record.events] == [1]
    with pytest.raises(z8.errors.InvalidArgument):
        audit.run()


async def test_a_run_by_correlation_follows_the_request_across_streams_and_verifies(tmp_path: Path) -> None:
    app = await approved_loan(tmp_path / "j")
    try:
        stream = app.journal.read_stream("loan-42")
        correlation = stream[0].correlation_id
        record = app.audit.run(correlation=correlation)
        traced = [e.position for e in app.journal.trace(correlation)]
    finally:
        await app.aclose()
    assert record.scope == "correlation" and record.stream is None
    assert [e.position for e in record.events] == traced
    assert {e.position for e in stream if e.correlation_id == correlation} <= set(traced)
    assert record.trigger.position == traced[0] and record.seal.intact
    assert z8.audit.verify_bundle(record.bundle()).ok


async def test_a_memory_journal_seals_with_one_key_per_journal() -> None:
    journal = open_memory_journal(types=z8.TypeRegistry([Noted]))
    await _interleaved(journal)
    first, second = z8.audit.Audit(journal), z8.audit.Audit(journal)
    record = first.run("a")
    assert first.fingerprint == second.fingerprint == record.seal.fingerprint
    assert z8.audit.Audit(open_memory_journal()).fingerprint != first.fingerprint
    report = z8.audit.verify_bundle(record.bundle(), key=first.public_key)
    assert report.ok and report.checked == 4 and record.outcome.data == {"text": "a4"}
    unsigned = first.run("a", sign=False)
    assert len(unsigned.seal.digest) == 64 and (unsigned.seal.signature, unsigned.seal.fingerprint) == ("", "")
    assert "Not signed" in unsigned.markdown()
    with pytest.raises(z8.errors.AuditError):
        unsigned.bundle()


class _Erased:
    def __repr__(self) -> str:
        return "z8.ERASED"


class Applied(msgspec.Struct, frozen=True):
    applicant: str
    amount: int
    reason: str


class _ErasingRegistry(z8.TypeRegistry):
    """Reads ``applicant`` as erased, as the vault does once the subject's key is gone."""

    def decode(self, type_name: str, schema: int, data: bytes, *rest: object) -> object:
        event = super().decode(type_name, schema, data, *rest)
        return msgspec.structs.replace(event, applicant=_Erased())


async def test_erased_personal_data_shows_as_erased_and_the_record_says_so() -> None:
    journal = open_memory_journal(types=_ErasingRegistry([Applied]))
    await journal.append("loan-7", [Applied("Grace Hopper", 900, reason="within the small-loan limit")])
    record = z8.audit.Audit(journal).run("loan-7")
    assert record.personal_data_erased and record.erased == ["#1 Applied.applicant"]
    assert record.events[0].data == {"applicant": "[erased]", "amount": 900, "reason": "within the small-loan limit"}
    assert record.reasoning[0].text == "within the small-loan limit"
    text = record.markdown()
    assert "## Personal data" in text and "`#1 Applied.applicant`" in text and "Grace Hopper" not in text
    assert b"Grace Hopper" not in msgspec.json.encode(record.summary())
    assert z8.audit.verify_bundle(record.bundle()).ok


# === 5. the command line ======================================================================


def z8_cli(*args: str | Path) -> tuple[int, str, str]:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "z8.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=60)
    return done.returncode, done.stdout, done.stderr


async def test_the_cli_verifies_journals_streams_and_bundles_with_exit_codes(tmp_path: Path) -> None:
    app = await approved_loan(tmp_path / "j")
    await app.aclose()
    journal = tmp_path / "j"
    assert z8_cli("verify", journal)[0] == 0
    code, out, _ = z8_cli("verify", journal, "--stream", "loan-42")
    assert code == 0 and "stream 'loan-42': ok: 8 events verified" in out

    code, out, _ = z8_cli("audit", journal, "--stream", "loan-42")
    assert code == 0 and "# Run record: loan-42" in out and "Not signed" in out and REASONING in out
    assert not (journal / "audit.key").exists()  # printing writes nothing into the journal directory

    bundle = tmp_path / "run.json"
    code, out, _ = z8_cli("audit", journal, "--stream", "loan-42", "--bundle", bundle)
    assert code == 0 and f"wrote {bundle}: 8 events" in out
    assert (journal / "audit.key").stat().st_mode & 0o777 == 0o600
    fingerprint = _bundle(bundle)["seal"]["fingerprint"]
    code, out, _ = z8_cli("verify", "--bundle", bundle, "--key", fingerprint)
    assert code == 0 and out.startswith("ok: run bundle of stream 'loan-42': 8 events")
    code, out, _ = z8_cli("verify", "--bundle", bundle, "--key", "0123456789abcdef")
    assert code == 1 and "not by the expected key" in out

    position = _bundle(bundle)["records"][3]["position"]
    (tmp_path / "altered.json").write_bytes(_write(_flip_record(_bundle(bundle), 3, 40)))
    code, out, _ = z8_cli("verify", "--bundle", tmp_path / "altered.json")
    assert code == 1 and out.startswith(f"ALTERED at position {position} (v4)")

    (tmp_path / "notes.txt").write_text("dear auditor")
    for bad in (("verify", "--bundle", tmp_path / "notes.txt"), ("verify", "--bundle", tmp_path / "none.json"),
                ("verify",), ("verify", "--bundle", bundle, "--key", "nonsense"),
                ("audit", journal)):
        code, _, err = z8_cli(*bad)
        assert code == 2 and err.startswith("z8: "), (bad, err)

    assert flip_in_file(journal / "data.mdb", b"every criterion", 6) >= 1
    code, out, _ = z8_cli("verify", journal, "--stream", "loan-42")
    assert code == 1 and f"BROKEN at position {position} (v4)" in out
    code, out, _ = z8_cli("audit", journal, "--stream", "loan-42", "--bundle", tmp_path / "from-tampered.json")
    assert code == 1 and f"BROKEN at position {position}" in out
    code, out, _ = z8_cli("verify", "--bundle", tmp_path / "from-tampered.json")
    assert code == 1 and out.startswith(f"ALTERED at position {position} (v4)")


async def test_an_ai_runs_record_quotes_its_model_steps_as_reasoning_and_ends_with_run_finished(tmp_path: Path) -> None:
    import z8.ai
    from z8.ai import ModelResponse, ToolCall

    @z8.ai.tool(capability="crm.read", kind="read")
    async def find_order(order: str) -> str:
        """Look an order up."""
        return f"{order}: charged twice"

    class Support(z8.ai.Agent):
        model = "fast"
        prompt = "You are a support assistant."
        tools = [find_order]

    models = z8.ai.Models.scripted([
        ModelResponse(text="The customer says they were charged twice; I will look the order up.",
                      tool_calls=(ToolCall("t1", "find_order", '{"order": "o-7"}'),)),
        "The order shows a duplicate charge.\nAnswer: refund the second charge of o-7",
    ])
    app = z8.Application(z8.ai.route(z8.Router(), Support), tmp_path / "journal", effects=[models.effect],
                         durability="fast")
    async with app:
        await app.dispatch(Support.StartRun(run_id="a1", query="charged twice"))
        await z8.ai.await_run(app, "a1", timeout=5)
        record = app.audit.run(stream="run-a1")
    steps = [r.text for r in record.reasoning if r.type == "z8.ai.ModelStep"]
    assert steps[0] == "The customer says they were charged twice; I will look the order up."
    assert "refund the second charge of o-7" in steps[1]
    assert record.outcome is not None and record.outcome.type == "z8.ai.RunFinished"
    assert record.trigger is not None and record.trigger.type == "z8.ai.RunStarted"
    assert {f.effect for f in record.facts} >= {"find_order"}
    text = record.markdown()
    assert "No reasoning was journaled" not in text and "I will look the order up" in text
