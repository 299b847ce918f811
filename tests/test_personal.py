"""Personal data off the record: z8.Personal fields sealed per subject, erasure by key destruction.

Every test that looks at files opens a real LMDB journal in ``tmp_path`` and reads every
byte of every file under it (the vault included).
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import z8
from z8 import errors
from z8.journal import (
    ERASED,
    Journal,
    RawEvent,
    SubjectErased,
    TypeRegistry,
    open_journal,
    open_memory_journal,
)
from z8.journal._vault import LmdbVault

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- types ----------------------------------------------------------------------------------


class Address(msgspec.Struct, frozen=True):
    street: z8.Personal[str]
    city: str = "Springfield"


class Reference(msgspec.Struct, frozen=True):
    """A nested struct naming a subject of its own."""

    referee: z8.Subject
    phone: z8.Personal[str]


class Applied(msgspec.Struct, frozen=True):
    applicant: z8.Subject
    name: z8.Personal[str]
    income: z8.Personal[int]
    amount: int
    home: Address | None = None
    previous: list[Address] = []
    pair: tuple[Address, ...] = ()
    by_kind: dict[str, Address] = {}
    reference: Reference | None = None
    nickname: z8.Personal[str] | None = None


class Decided(msgspec.Struct, frozen=True, array_like=True, tag=True):
    """Array-like and tagged: the stored form keeps its layout."""

    applicant: z8.Subject
    approved: bool
    note: z8.Personal[str] = ""


class Plain(msgspec.Struct, frozen=True):
    amount: int


def registry() -> TypeRegistry:
    return TypeRegistry([Applied, Decided, Plain])


SECRETS = {
    "name": "Zebulon Quartermaine",
    "street": "Wibblestrasse 77",
    "street2": "Flumgasse 13",
    "phone": "+44 7700 900461",
    "nick": "Quasimodo-Fernsby",
    "note": "divorced-in-Albuquerque",
}
INCOME = 98_765_432_109  # msgpack stores it as 9 bytes (0xcf, 8-byte big-endian)


def applied(subject: str = "applicant-1") -> Applied:
    return Applied(
        subject, SECRETS["name"], INCOME, 250_000,
        home=Address(SECRETS["street"]), previous=[Address(SECRETS["street2"], "Shelbyville")],
        pair=(Address(SECRETS["street2"]),), by_kind={"work": Address(SECRETS["street"])},
        reference=Reference("referee-9", SECRETS["phone"]), nickname=SECRETS["nick"],
    )


def needles() -> list[bytes]:
    return [s.encode() for s in SECRETS.values()] + [msgspec.msgpack.encode(INCOME)]


def file_bytes(directory: Path) -> Iterator[tuple[Path, bytes]]:
    for root, _, files in os.walk(directory):
        for name in files:
            path = Path(root) / name
            yield path, path.read_bytes()


def found_in_files(directory: Path, wanted: list[bytes]) -> list[tuple[str, bytes]]:
    return [(str(path.relative_to(directory)), needle)
            for path, data in file_bytes(directory) for needle in wanted if needle in data]


def vault_keys(journal: Journal, subject: str) -> list[bytes]:
    return list(journal._vault._load(subject)[0].values())  # noqa: SLF001 - the test reads the vault


@pytest.fixture(params=["lmdb", "memory"])
def journal(request: Any, tmp_path: Path) -> Iterator[Journal]:
    if request.param == "lmdb":
        j: Journal = open_journal(tmp_path / "j", types=registry(), durability="fast")
    else:
        j = open_memory_journal(types=registry())
    yield j
    j.close()


# --- the API ---------------------------------------------------------------------------------


def test_the_markers_are_what_msgspec_sees_and_erased_is_one_falsy_value() -> None:
    assert msgspec.json.decode(b'{"street": "x"}', type=Address) == Address("x")
    assert repr(ERASED) == "z8.ERASED" and z8.ERASED is ERASED and not ERASED
    assert pickle.loads(pickle.dumps(ERASED)) is ERASED
    assert z8.Personal[int] != int and z8.Subject != str


async def test_personal_fields_round_trip_nested_optional_and_in_collections(journal: Journal) -> None:
    event = applied()
    [envelope] = await journal.append("loan-1", [event])
    assert journal.decode(envelope) == event
    assert journal.decode(journal.read_stream("loan-1")[0]) == event
    # absent optionals, defaults and an array-like tagged struct
    bare = Applied("applicant-2", "Ann", 1, 2)
    tagged = Decided("applicant-2", True, "ok")
    written = await journal.append("loan-2", [bare, tagged, Decided("applicant-2", False), Plain(3)])
    assert [journal.decode(e) for e in written] == [bare, tagged, Decided("applicant-2", False), Plain(3)]
    assert journal.verify().ok


async def test_only_ciphertext_is_stored_and_plain_types_are_unchanged(journal: Journal) -> None:
    [envelope, plain] = await journal.append("loan-1", [applied(), Plain(7)])
    for needle in needles():
        assert needle not in envelope.data
    assert b"applicant-1" in envelope.data  # the subject is how the key is found: not encrypted
    assert plain.data == msgspec.msgpack.encode(Plain(7))
    raw = msgspec.msgpack.decode(envelope.data)
    assert isinstance(raw["name"], msgspec.msgpack.Ext) and raw["name"].code == 90
    assert raw["amount"] == 250_000  # fields that are not personal stay readable by any tool


async def test_plaintext_is_in_no_file_before_erasure(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with open_journal(path, types=registry()) as journal:
        await journal.append("loan-1", [applied()])
        await journal.save_snapshot("loan-1", 1, journal.personal.dumps(applied()))
        assert journal.decode(journal.read_stream("loan-1")[0]) == applied()
    assert found_in_files(path, needles()) == []


async def test_erasure_reads_erased_keeps_the_chain_and_is_journaled(journal: Journal) -> None:
    first = await journal.append("loan-1", [applied(), Plain(1)])
    other = await journal.append("loan-2", [applied("applicant-2")])
    act = await journal.erase("applicant-1", by="dpo@bank", reason="GDPR art. 17 request #12")
    after = journal.decode(journal.read_stream("loan-1")[0])
    assert after.name is ERASED and after.income is ERASED and after.nickname is ERASED
    assert after.home == Address(ERASED) and after.previous == [Address(ERASED, "Shelbyville")]
    assert after.pair == (Address(ERASED),) and after.by_kind == {"work": Address(ERASED)}
    assert after.amount == 250_000 and after.applicant == "applicant-1"
    # the referee is a subject of its own: not erased with the applicant
    assert after.reference == Reference("referee-9", SECRETS["phone"])
    assert journal.decode(other[0]) == applied("applicant-2")
    assert journal.decode(first[1]) == Plain(1)
    assert act.stream == "$vault" and act.type == "z8.SubjectErased"
    assert journal.decode(act) == SubjectErased("applicant-1", "dpo@bank", "GDPR art. 17 request #12")
    assert journal.read_stream("$vault") == [act]
    assert journal.is_erased("applicant-1") and not journal.is_erased("applicant-2")
    report = journal.verify()
    assert report.ok and report.checked == 4


async def test_after_erasure_the_plaintext_and_the_keys_are_in_no_file(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = open_journal(path, types=registry())
    await journal.append("loan-1", [applied()])
    for i in range(50):  # other subjects' keys share the vault's pages
        await journal.append(f"loan-x{i}", [Decided(f"other-{i}", True, f"note {i}")])
    await journal.save_snapshot("loan-1", 1, journal.personal.dumps(applied()))
    keys = vault_keys(journal, "applicant-1")
    survivor = vault_keys(journal, "other-7")
    assert len(keys) == 1 and len(keys[0]) == 32
    assert found_in_files(path, keys) == [(os.path.join("vault", "data.mdb"), keys[0])]
    await journal.erase("applicant-1", by="dpo")
    assert journal.verify().ok
    journal.close()
    assert found_in_files(path, needles() + keys) == []
    assert found_in_files(path, survivor) != []  # the other subjects keep theirs
    assert not (path / "vault.new").exists() and not (path / "vault.old").exists()
    with open_journal(path, types=registry()) as journal:  # a restart still reads erased
        assert journal.decode(journal.read_stream("loan-1")[0]).name is ERASED
        assert journal.decode(journal.read_stream("loan-x7")[0]) == Decided("other-7", True, "note 7")
        assert journal.is_erased("applicant-1") and journal.verify().ok


async def test_new_personal_data_for_an_erased_subject_is_refused(journal: Journal) -> None:
    await journal.append("loan-1", [applied()])
    await journal.erase("applicant-1", by="dpo")
    with pytest.raises(errors.SubjectErased, match="applicant-1"):
        await journal.append("loan-1", [applied()])
    assert journal.stream_version("loan-1") == 1
    # an erased value written back (an agent folding what it read) needs no key
    [again] = await journal.append("loan-1", [Decided("applicant-1", False, ERASED)])
    assert journal.decode(again) == Decided("applicant-1", False, ERASED)
    # defaults are in the code, not personal data: fine for an erased subject too
    await journal.append("loan-1", [Decided("applicant-1", True)])


async def test_erasing_an_unknown_subject_journals_the_act_and_bars_it(journal: Journal) -> None:
    act = await journal.erase("never-seen", by="dpo", reason="no data held")
    assert journal.decode(act) == SubjectErased("never-seen", "dpo", "no data held")
    assert journal.is_erased("never-seen")
    with pytest.raises(errors.SubjectErased):
        await journal.append("s", [Decided("never-seen", True, "late data")])
    again = await journal.erase("never-seen", by="dpo")  # each request is an act of its own
    assert again.version == 2 and journal.verify().ok


async def test_erase_checks_its_arguments_and_the_hold_hook(journal: Journal) -> None:
    await journal.append("loan-1", [applied()])
    for bad in ("", "a\x00b", "x" * 256, 7):
        with pytest.raises(errors.VaultError):
            await journal.erase(bad, by="dpo")  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument):
        await journal.erase("applicant-1", by="")

    def held(subject: str) -> None:
        raise errors.LegalHoldActive(f"{subject} is held")

    journal._erase_guard = held  # noqa: SLF001 - the hook legal holds plug into
    with pytest.raises(errors.LegalHoldActive):
        await journal.erase("applicant-1", by="dpo")
    assert journal.read_stream("$vault") == [] and not journal.is_erased("applicant-1")
    assert journal.decode(journal.read_stream("loan-1")[0]) == applied()


async def test_a_legal_hold_on_the_subject_refuses_erasure_until_released(journal: Journal) -> None:
    await journal.append("loan-1", [applied()])
    await journal.hold(subject="applicant-1", by="legal", reason="litigation 2024-17")
    with pytest.raises(errors.LegalHoldActive):
        await journal.erase("applicant-1", by="dpo")
    assert journal.read_stream("$vault") == [] and journal.decode(journal.read_stream("loan-1")[0]) == applied()
    await journal.release_hold(subject="applicant-1", by="legal")
    await journal.erase("applicant-1", by="dpo")
    assert journal.decode(journal.read_stream("loan-1")[0]).name is ERASED


async def test_a_ciphertext_moved_to_another_subject_does_not_open(journal: Journal) -> None:
    """Moving a sealed value into another subject's record reads as an error (VaultError),
    or as ERASED when that subject is erased: it never reads as the other subject's data."""
    [a] = await journal.append("a", [Decided("subject-a", True, "secret of a")])
    await journal.append("b", [Decided("subject-b", True, "secret of b")])
    stolen = msgspec.msgpack.decode(a.data)
    forged = msgspec.msgpack.encode(["Decided", "subject-b", True, stolen[3]])
    [moved] = await journal.append("b", [RawEvent("Decided", forged)])
    with pytest.raises(errors.VaultError, match="subject-b"):
        journal.decode(moved)
    # moved to another field of the same subject: the field is bound too
    mine = msgspec.msgpack.decode((await journal.append("c", [applied("subject-a")]))[0].data)
    [swapped] = await journal.append("c", [RawEvent("Applied", msgspec.msgpack.encode({**mine, "nickname": mine["name"]}))])
    with pytest.raises(errors.VaultError, match="nickname"):
        journal.decode(swapped)
    await journal.erase("subject-b", by="dpo")
    assert journal.decode(moved).note is ERASED


async def test_an_altered_ciphertext_is_refused(journal: Journal) -> None:
    [a] = await journal.append("a", [Decided("subject-a", True, "secret")])
    stored = msgspec.msgpack.decode(a.data)
    sealed = bytearray(stored[3].data)
    sealed[-1] ^= 1
    stored[3] = msgspec.msgpack.Ext(90, bytes(sealed))
    [bad] = await journal.append("a", [RawEvent("Decided", msgspec.msgpack.encode(stored))])
    with pytest.raises(errors.VaultError, match="altered"):
        journal.decode(bad)


# --- declarations ----------------------------------------------------------------------------


class NoSubject(msgspec.Struct):
    name: z8.Personal[str]


class TwoSubjects(msgspec.Struct):
    a: z8.Subject
    b: z8.Subject
    name: z8.Personal[str]


class PersonalInside(msgspec.Struct):
    who: z8.Subject
    names: list[z8.Personal[str]]


class Outer(msgspec.Struct):
    """Holds a struct with personal fields but names no subject for it."""

    address: Address


class Tree(msgspec.Struct):
    who: z8.Subject
    name: z8.Personal[str]
    children: list[Tree] = []


class PlainTree(msgspec.Struct):
    children: list[PlainTree] = []


@pytest.mark.parametrize("cls, match", [
    (NoSubject, "NoSubject has z8.Personal fields but no z8.Subject"),
    (Outer, "Outer has z8.Personal fields but no z8.Subject"),
    (TwoSubjects, "TwoSubjects has two z8.Subject fields"),
    (PersonalInside, "annotate a whole field"),
    (Tree, "recursive"),
])
def test_bad_declarations_raise_vault_error_naming_the_type(cls: type, match: str) -> None:
    with pytest.raises(errors.VaultError, match=match):
        TypeRegistry([cls])
    with pytest.raises(errors.VaultError, match=match):
        open_memory_journal().personal.dumps(_instance_of(cls))


def _instance_of(cls: type) -> Any:
    return {
        NoSubject: lambda: NoSubject("x"),
        Outer: lambda: Outer(Address("x")),
        TwoSubjects: lambda: TwoSubjects("a", "b", "n"),
        PersonalInside: lambda: PersonalInside("w", ["n"]),
        Tree: lambda: Tree("w", "n"),
    }[cls]()


def test_a_subject_is_a_whole_str_field_and_plain_recursive_types_are_fine() -> None:
    TypeRegistry([PlainTree])  # recursion without personal data is no concern

    class Muddled(msgspec.Struct):
        who: z8.Subject | int
        name: z8.Personal[str]

    with pytest.raises(errors.VaultError, match="Muddled.who"):
        TypeRegistry([Muddled])


def test_a_registry_without_a_journal_refuses_personal_types() -> None:
    types = registry()
    with pytest.raises(errors.VaultError, match="through a journal"):
        types.encode(applied())
    assert types.encode(Plain(1)) == ("Plain", 1, msgspec.msgpack.encode(Plain(1)))


async def test_a_personal_value_needs_a_subject_unless_it_is_the_default() -> None:
    journal = open_memory_journal(types=registry())
    await journal.append("s", [Decided("", True)])  # the default note is in the code, not personal
    with pytest.raises(errors.VaultError, match="no subject"):
        await journal.append("s", [Decided("", True, "a real note")])
    assert journal.stream_version("s") == 1


async def test_upcasters_see_sealed_fields_and_pass_them_on() -> None:
    old = TypeRegistry()

    @old.register(name="Note", schema=1)
    class NoteV1(msgspec.Struct):
        who: z8.Subject
        text: z8.Personal[str]

    journal = open_memory_journal(types=old)
    [written] = await journal.append("n", [NoteV1("s-1", "hello there")])
    new = TypeRegistry()

    @new.register(name="Note", schema=2)
    class NoteV2(msgspec.Struct):
        who: z8.Subject
        text: z8.Personal[str]
        lang: str

    @new.upcaster("Note", from_schema=1)
    def add_lang(payload: dict[str, Any]) -> dict[str, Any]:
        assert isinstance(payload["text"], msgspec.msgpack.Ext)
        return {**payload, "lang": "en"}

    assert new.decode("Note", 1, written.data, journal.personal) == NoteV2("s-1", "hello there", "en")


# --- the vault's files -------------------------------------------------------------------------


async def test_an_erasure_journaled_but_not_applied_is_applied_at_the_next_open(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with open_journal(path, types=registry()) as journal:
        await journal.append("loan-1", [applied()])
        keys = vault_keys(journal, "applicant-1")
        # a crash fell between the journaled act and the key's destruction
        await journal.append("$vault", [SubjectErased("applicant-1", "dpo")], allow_reserved=True)
    assert found_in_files(path, keys) != []
    with open_journal(path, types=registry()) as journal:
        assert journal.decode(journal.read_stream("loan-1")[0]).name is ERASED
    assert found_in_files(path, keys) == []


async def test_an_interrupted_compaction_is_finished_at_the_next_open(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with open_journal(path, types=registry()) as journal:
        await journal.append("loan-1", [applied()])
        keys = vault_keys(journal, "applicant-1")
    # the keys were deleted and the flag set, then the process died before the copy
    vault = LmdbVault(path)
    original = vault._compact  # noqa: SLF001
    vault._compact = lambda: None  # type: ignore[method-assign]  # noqa: SLF001
    vault.destroy("applicant-1")
    vault._compact = original  # type: ignore[method-assign]  # noqa: SLF001
    vault.close()
    (path / "vault.old").mkdir()  # and leftovers of an earlier compaction
    (path / "vault.old" / "data.mdb").write_bytes(b"junk" + keys[0])
    assert found_in_files(path, keys) != []
    with open_journal(path, types=registry()) as journal:
        assert journal.decode(journal.read_stream("loan-1")[0]).name is ERASED
    assert found_in_files(path, keys) == [] and not (path / "vault.old").exists()


async def test_a_crash_between_the_renames_keeps_the_compacted_vault(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with open_journal(path, types=registry()) as journal:
        await journal.append("loan-1", [applied(), applied("applicant-2")])
        await journal.erase("applicant-1", by="dpo")
    shutil.move(path / "vault", path / "vault.new")  # as if renamed away and not yet back
    with open_journal(path, types=registry()) as journal:
        [one, two] = [journal.decode(e) for e in journal.read_stream("loan-1")]
        assert one.name is ERASED and two == applied("applicant-2")


async def test_a_lost_vault_is_an_error_not_an_erasure(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with open_journal(path, types=registry()) as journal:
        await journal.append("loan-1", [applied()])
    shutil.rmtree(path / "vault")
    with open_journal(path, types=registry()) as journal:
        with pytest.raises(errors.VaultError, match="vault was lost"):
            journal.decode(journal.read_stream("loan-1")[0])


async def test_keys_are_durable_before_the_append_and_shared_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with open_journal(path, types=registry(), durability="fast") as journal:
        await journal.append("loan-1", [applied()])
        assert not journal._vault.pending  # noqa: SLF001 - stored before the append ran
        kid = vault_keys(journal, "applicant-1")
    with open_journal(path, types=registry()) as journal:
        await journal.append("loan-1", [applied()])  # reuses the stored key
        assert vault_keys(journal, "applicant-1") == kid
        assert [journal.decode(e) for e in journal.read_stream("loan-1")] == [applied(), applied()]


# --- agents, effects, timers, snapshots through an Application ---------------------------------


class Apply(msgspec.Struct, frozen=True, tag=True):
    loan_id: str
    applicant: str
    name: str
    income: int
    amount: int


class Approve(msgspec.Struct, frozen=True, tag=True):
    loan_id: str


class Rename(msgspec.Struct, frozen=True, tag=True):
    loan_id: str
    name: str


class GetLoan(msgspec.Struct, frozen=True, tag=True):
    loan_id: str


class LoanApplied(msgspec.Struct, frozen=True, tag=True):
    applicant: z8.Subject
    name: z8.Personal[str]
    income: z8.Personal[int]
    amount: int


class CreditChecked(msgspec.Struct, frozen=True, tag=True):
    applicant: z8.Subject
    score: z8.Personal[int]
    remark: z8.Personal[str]


class Remind(msgspec.Struct, frozen=True, tag=True):
    """A timer's message with personal data."""

    applicant: z8.Subject
    note: z8.Personal[str]


class Reminded(msgspec.Struct, frozen=True, tag=True):
    applicant: z8.Subject
    note: z8.Personal[str]


class Approved(msgspec.Struct, frozen=True, tag=True):
    applicant: z8.Subject


class Renamed(msgspec.Struct, frozen=True, tag=True):
    applicant: z8.Subject
    name: z8.Personal[str]


class LoanState(msgspec.Struct, frozen=True):
    applicant: z8.Subject = ""
    name: z8.Personal[str] = ""
    income: z8.Personal[int] = 0
    score: z8.Personal[int] = 0
    remark: z8.Personal[str] = ""
    greeting: z8.Personal[str] = ""
    amount: int = 0
    status: str = "new"
    events: int = 0


class CreditRequest(msgspec.Struct, frozen=True):
    applicant: z8.Subject
    name: z8.Personal[str]
    income: z8.Personal[int]


class CreditReport(msgspec.Struct, frozen=True):
    applicant: z8.Subject
    score: z8.Personal[int]
    remark: z8.Personal[str]


LOAN = {"name": "Philomena Cattermole-Xu", "remark": "missed-payments-at-Grubbs-Bank",
        "note": "phone-Philomena-before-noon", "greeting": "Dear Ms Cattermole-Xu"}
LOAN_INCOME, LOAN_SCORE = 98_765_432_101, 77_777_777_777  # stored as 8-byte ints
seen_requests: list[Any] = []


async def _credit_check(request: CreditRequest, ctx: Any) -> CreditReport:
    seen_requests.append(request)
    return CreditReport(request.applicant, LOAN_SCORE, LOAN["remark"])


credit_check = z8.effect(_credit_check, name="credit_check", kind="read")


def loan_needles() -> list[bytes]:
    return [v.encode() for v in LOAN.values()] + [msgspec.msgpack.encode(LOAN_INCOME),
                                                  msgspec.msgpack.encode(LOAN_SCORE)]


class Loan(z8.Agent):
    """Folds personal data into its state; ``evolve`` tolerates z8.ERASED."""

    State = LoanState
    snapshot_every = 2
    agent_effects = (credit_check,)

    def decide(self, state: LoanState, msg: Any, ctx: Any) -> Any:
        match msg:
            case Apply(applicant=who, name=name, income=income, amount=amount):
                return z8.Decision(
                    [LoanApplied(who, name, income, amount)], reply="applied",
                    effects=[z8.Call(credit_check, CreditRequest(who, name, income))],
                    timers=[z8.Timer(Remind(who, LOAN["note"]), after=0.01)],
                )
            case z8.effects.EffectSucceeded(result=CreditReport() as report):
                return z8.Decision([CreditChecked(report.applicant, report.score, report.remark)])
            case Remind(applicant=who, note=note):
                return z8.Decision([Reminded(who, note)])
            case Approve():
                return z8.Decision([Approved(state.applicant)], reply="approved")
            case Rename(name=name):
                return z8.Decision([Renamed(state.applicant, name)])
            case GetLoan():
                return z8.Decision(reply=state)
        return z8.reject("unknown", type=type(msg).__name__)

    def evolve(self, state: LoanState, event: Any) -> LoanState:
        count = state.events + 1
        match event:
            case LoanApplied(applicant=who, name=name, income=income, amount=amount):
                # personal values may be z8.ERASED here: use them as values, never as str/int
                greeting = z8.ERASED if name is z8.ERASED else f"Dear Ms {name.split()[-1]}"
                return LoanState(who, name, income, amount=amount, greeting=greeting, status="applied",
                                 events=count)
            case CreditChecked(score=score, remark=remark):
                return msgspec.structs.replace(state, score=score, remark=remark, status="checked", events=count)
            case Approved():
                return msgspec.structs.replace(state, status="approved", events=count)
            case Renamed(name=name):
                return msgspec.structs.replace(state, name=name, events=count)
        return msgspec.structs.replace(state, events=count)


def loan_types() -> TypeRegistry:
    return TypeRegistry([LoanApplied, CreditChecked, Remind, Reminded, Approved, Renamed])


def loan_app(path: Path) -> z8.Application:
    router = z8.Router().identify(Loan, by="loan_id", prefix="loan-").dispatch(
        Apply, Approve, Rename, GetLoan, to=Loan)
    return z8.Application(router, path, types=loan_types(), durability="fast")


async def _until(predicate: Any, what: str) -> Any:
    import asyncio

    for _ in range(1000):
        if value := predicate():
            return value
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def _events(app: z8.Application, stream: str) -> list[Any]:
    return [app.journal.decode(e) for e in app.journal.read_stream(stream)]


async def test_an_agent_with_personal_events_state_effects_and_timers_survives_erasure(tmp_path: Path) -> None:
    path = tmp_path / "j"
    seen_requests.clear()
    applied_state = LoanState("appl-7", LOAN["name"], LOAN_INCOME, LOAN_SCORE, LOAN["remark"], LOAN["greeting"],
                              100, "checked", 0)
    async with loan_app(path) as app:
        assert await app.dispatch(Apply("L1", "appl-7", LOAN["name"], LOAN_INCOME, 100)) == "applied"
        await _until(lambda: any(type(e) is Reminded for e in _events(app, "loan-L1")), "the timer")
        await _until(lambda: any(type(e) is CreditChecked for e in _events(app, "loan-L1")), "the credit check")
        assert seen_requests == [CreditRequest("appl-7", LOAN["name"], LOAN_INCOME)]  # the effect saw plaintext
        state = await app.dispatch(GetLoan("L1"))
        assert msgspec.structs.replace(state, events=0) == applied_state
        await _until(lambda: app.journal.load_snapshot("loan-L1"), "a snapshot")
        keys = vault_keys(app.journal, "appl-7")
    # only ciphertext was written: events, snapshots, the effect's request and result, the timer's message
    assert found_in_files(path, loan_needles()) == []
    async with loan_app(path) as app:  # rehydrates (snapshot + events) with the plaintext back
        state = await app.dispatch(GetLoan("L1"))
        assert msgspec.structs.replace(state, events=0) == applied_state
        act = await app.erase("appl-7", by="dpo@bank", reason="request 42")
        assert act.stream == "$vault"
        # the agent that held the plaintext was stopped: it re-activates from the journal
        after = await app.dispatch(GetLoan("L1"))
        assert (after.name, after.income, after.score, after.remark, after.greeting) == (ERASED,) * 5
        assert (after.applicant, after.amount, after.status) == ("appl-7", 100, "checked")
        assert await app.dispatch(Approve("L1")) == "approved"  # and it still decides
        with pytest.raises(errors.SubjectErased):  # new personal data for the subject is refused, nothing written
            await app.dispatch(Rename("L1", "Someone Else"))
        assert (await app.dispatch(GetLoan("L1"))).status == "approved"
        # every copy reads as erased: events, the effect's records, the timer's message
        journal = app.journal
        by_type = {type(e).__name__: e for e in _events(app, "loan-L1")}
        assert by_type["LoanApplied"] == LoanApplied("appl-7", ERASED, ERASED, 100)
        assert by_type["CreditChecked"] == CreditChecked("appl-7", ERASED, ERASED)
        assert by_type["Reminded"] == Reminded("appl-7", ERASED)
        intent = by_type["EffectIntended"]
        assert credit_check.decode_request(intent.request, journal.personal) == CreditRequest("appl-7", ERASED, ERASED)
        succeeded = by_type["EffectSucceeded"]
        assert credit_check.decode_result(succeeded.result, journal.personal) == CreditReport("appl-7", ERASED, ERASED)
        timer = by_type["TimerSet"]
        assert journal.types.decode(timer.message_type, timer.message_schema, timer.message,
                                    journal.personal) == Remind("appl-7", ERASED)
        assert journal.verify().ok
    assert found_in_files(path, loan_needles() + keys) == []
    async with loan_app(path) as app:  # a restart after erasure: still erased, still folds
        after = await app.dispatch(GetLoan("L1"))
        assert after.name is ERASED and after.status == "approved"
        assert app.journal.verify().ok


async def test_an_effect_whose_types_hold_personal_data_must_name_a_subject() -> None:
    async def leaky(request: NoSubject, ctx: Any) -> None:
        return None

    with pytest.raises(errors.VaultError, match="NoSubject has z8.Personal fields"):
        z8.effect(leaky)
    with pytest.raises(errors.VaultError, match="journal's codec"):
        credit_check.encode_request(CreditRequest("a", "b", 1))  # never plaintext, even by mistake


async def test_an_agent_state_with_personal_fields_and_no_subject_is_refused(tmp_path: Path) -> None:
    class Anonymous(msgspec.Struct):
        secret: z8.Personal[str] = ""

    class Careless(Loan):
        State = Anonymous

    router = z8.Router().identify(Careless, by="loan_id", prefix="c-").dispatch(GetLoan, to=Careless)
    async with z8.Application(router, tmp_path / "j", types=loan_types(), durability="fast") as app:
        with pytest.raises(errors.ActorDied) as died:  # it cannot start: its state could not be stored
            await app.dispatch(GetLoan("1"))
        assert isinstance(died.value.__cause__, errors.VaultError)
        assert "Careless.State has z8.Personal fields but no z8.Subject" in str(died.value.__cause__)


# --- two processes share one journal and its vault ---------------------------------------------


class Note(msgspec.Struct, frozen=True):
    who: z8.Subject
    text: z8.Personal[str]


class _Peer:
    def __init__(self, path: Path) -> None:
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "_procs" / "personal_peer.py"), str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        assert self.ask(None) == "READY"

    def ask(self, command: str | None) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if command is not None:
            self.proc.stdin.write(command + "\n")
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        self.proc.wait(timeout=30)


async def test_another_process_shares_the_keys_and_follows_an_erasure(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "j"
    journal = open_journal(path, types=TypeRegistry([Note]), durability="fast")
    peer = _Peer(path)
    try:
        assert peer.ask("append n-1 peer-1 peer-secret-one") == "ok"  # the peer makes the key
        assert [journal.decode(e).text for e in journal.read_stream("n-1")] == ["peer-secret-one"]
        await journal.append("n-2", [Note("peer-2", "parent-secret-two")])
        assert peer.ask("read n-2") == repr(["parent-secret-two"])
        doomed = vault_keys(journal, "peer-1")
        await journal.erase("peer-1", by="dpo")  # compacts: the vault's files are swapped
        await asyncio.sleep(0.15)  # the peer drops keys cached before a swap within 0.1 s
        assert peer.ask("read n-1") == repr([ERASED])
        assert peer.ask("append n-3 peer-3 after-the-swap") == "ok"  # its new key lands in the live vault
        assert [journal.decode(e).text for e in journal.read_stream("n-3")] == ["after-the-swap"]
        assert peer.ask("read n-2") == repr(["parent-secret-two"])
    finally:
        peer.close()
        journal.close()
    assert found_in_files(path, [b"peer-secret-one", *doomed]) == []
    with open_journal(path, types=TypeRegistry([Note])) as journal:
        assert journal.verify().ok and journal.decode(journal.read_stream("n-3")[0]).text == "after-the-swap"


def test_a_type_whose_annotations_do_not_resolve_yet_is_checked_when_it_is_used() -> None:
    class Later(msgspec.Struct):
        who: z8.Subject
        friend: Undefined  # type: ignore[name-defined]  # noqa: F821 - defined below

    async def body(request: Later, ctx: Any) -> None:
        return None

    z8.effect(body)  # declaring the effect does not fail on it
    with pytest.raises(errors.VaultError, match="cannot read the field types of"):
        open_memory_journal().personal.dumps(Later("a", None))


# --- an optional subject: no one's data ---------------------------------------------------------


class Memo(msgspec.Struct, frozen=True):
    """Names an optional subject: None means the struct holds no one's personal data."""

    who: z8.Subject | None = None
    text: z8.Personal[str] = ""
    home: Address | None = None
    reference: Reference | None = None


async def test_an_optional_subject_that_is_none_stores_personal_fields_as_they_are(tmp_path: Path) -> None:
    with open_journal(tmp_path / "j", types=TypeRegistry([Memo]), durability="fast") as journal:
        nobody = Memo(None, SECRETS["note"], Address(SECRETS["street"]), Reference("referee-9", SECRETS["phone"]))
        await journal.append("memo-1", [nobody])
        stored = msgspec.msgpack.decode(journal.read_stream("memo-1")[0].data)
        assert stored["text"] == SECRETS["note"] and stored["home"]["street"] == SECRETS["street"]
        assert isinstance(stored["reference"]["phone"], msgspec.msgpack.Ext)  # its own subject still seals
        assert journal.decode(journal.read_stream("memo-1")[0]) == nobody
        someone = Memo("writer-1", SECRETS["nick"])
        await journal.append("memo-2", [someone])
        assert journal.decode(journal.read_stream("memo-2")[0]) == someone
        await journal.erase("writer-1", by="dpo")
        await journal.erase("referee-9", by="dpo")
        assert journal.decode(journal.read_stream("memo-2")[0]).text is ERASED
        assert journal.decode(journal.read_stream("memo-1")[0]).text == SECRETS["note"]
        assert journal.decode(journal.read_stream("memo-1")[0]).reference.phone is ERASED
        assert journal.verify().ok
    found = found_in_files(tmp_path / "j", [SECRETS["nick"].encode(), SECRETS["phone"].encode()])
    assert found == []


async def test_an_optional_subject_that_is_empty_or_a_plain_one_that_is_empty_is_an_error() -> None:
    journal = open_memory_journal(types=TypeRegistry([Memo, Decided]))
    with pytest.raises(errors.VaultError, match="no subject"):
        await journal.append("s", [Memo("", "a real note")])
    with pytest.raises(errors.VaultError, match="no subject"):
        await journal.append("s", [Decided("", True, "a real note")])
    assert journal.stream_version("s") == 0
    assert journal.personal.loads(journal.personal.dumps(Memo(None, "x")), Memo) == Memo(None, "x")


class Jotting(msgspec.Struct, frozen=True):
    """No nested structs and an optional subject: decoded as itself first when it is no one's."""

    who: z8.Subject | None = None
    body: z8.Personal[Any] = None
    tags: z8.Personal[list[str]] = []


async def test_a_record_that_is_no_ones_and_one_that_is_someones_both_read_back_exactly(tmp_path: Path) -> None:
    from z8.journal._personal import _info

    assert _info(Jotting).clear == "who"  # the fast path applies to this type
    with open_journal(tmp_path / "j", types=TypeRegistry([Jotting]), durability="fast") as journal:
        codec = journal.personal
        nobody = Jotting(None, {"text": SECRETS["note"]}, ["a"])
        someone = Jotting("writer-2", {"text": SECRETS["nick"]}, [SECRETS["street"]])
        for value in (nobody, someone):
            assert codec.loads(codec.dumps(value), Jotting) == value
            assert codec.convert(msgspec.msgpack.decode(msgspec.msgpack.encode(codec.to_builtins(value))), Jotting) == value
        await journal.append("note-1", [nobody, someone])
        await journal.erase("writer-2", by="dpo")
        first, second = (journal.decode(e) for e in journal.read_stream("note-1"))
        assert first == nobody
        assert second.who == "writer-2" and second.body is ERASED and second.tags is ERASED  # never a raw ciphertext
    assert found_in_files(tmp_path / "j", [SECRETS["nick"].encode(), SECRETS["street"].encode()]) == []
