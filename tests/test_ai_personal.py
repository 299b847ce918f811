"""Personal data in AI runs: a run started with a subject seals its texts under that
subject's key, end to end (events, model requests and responses, tool arguments and
results), and erasing the subject reaches all of it.

Real LMDB journals in ``tmp_path``; the model is the local OpenAI-compatible server
(``tests/_llm_server.py``) or, where a test needs to hold a call, a provider of its own.
The plaintext checks scan every byte of the journal directory, as test_personal does.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest
from _llm_server import LLMServer, text, tool_call
from _polling import until

import z8
import z8.ai
from z8 import cli
from z8.ai import ModelRequest, ModelResponse, ModelStep, RunFinished, RunForked, RunStarted, ToolCall, ToolStep
from z8.effects import EffectContext, EffectFailed, EffectIntended
from z8.errors import Rejected, SubjectErased

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


SUBJECT = "customer-7f3a"
QUERY = "My card 4111-1111-1111-1111 was charged twice; I am ada.lovelace@example.org"
THOUGHT = "Looking up the account of Ada Byron-Lovelace."
EMAIL = "ada.lovelace@example.org"
PLAN = "platinum-7731"
ANSWER = "refund 42.17 EUR to Ada Byron-Lovelace"
NEEDLES = [b"4111-1111", b"ada.lovelace", b"Byron-Lovelace", PLAN.encode(), b"42.17 EUR"]


class Lookup(msgspec.Struct, frozen=True):
    email: z8.Personal[str]
    who: z8.Subject | None = None
    """Filled in by the run (the model neither sees nor sets it)."""


class Customer(msgspec.Struct, frozen=True):
    who: z8.Subject | None
    email: z8.Personal[str]
    plan: z8.Personal[str]


TOOL_LOG: list[Lookup] = []


@z8.ai.tool(kind="read")
async def lookup_customer(args: Lookup, ctx: EffectContext) -> Customer:
    """Find a customer by email."""
    TOOL_LOG.append(args)
    return Customer(args.who, args.email, PLAN)


class Note(msgspec.Struct, frozen=True):
    who: z8.Subject
    text: z8.Personal[str]


@z8.ai.tool(kind="read")
def take_note(args: Note) -> str:
    """Note something about the customer (needs a subject)."""
    return "noted"


class Support(z8.ai.Agent):
    model = "fast"
    prompt = "You are a support assistant."
    tools = [lookup_customer]
    max_iterations = 4


@pytest.fixture(autouse=True)
def _reset() -> None:
    TOOL_LOG.clear()


def app_for(path: Path, models: z8.ai.Models) -> z8.Application:
    return z8.Application(z8.ai.route(z8.Router(), Support), path, effects=[models.effect], durability="fast")


def served(server: LLMServer) -> z8.ai.Models:
    server.script(tool_call("lookup_customer", {"email": EMAIL, "who": "mallory"}, text=THOUGHT),
                  text(f"Answer: {ANSWER}"))
    return z8.ai.Models({"fast": "openai:gpt-test"}, environ={"OPENAI_BASE_URL": server.openai_url})


def events(app: z8.Application, run_id: str) -> list[Any]:
    return [app.journal.decode(e) for e in app.journal.read_stream(f"run-{run_id}")]


def of(items: list[Any], kind: type) -> list[Any]:
    return [e for e in items if type(e) is kind]


def plaintext_in(directory: Path, needles: list[bytes] = NEEDLES) -> list[tuple[str, bytes]]:
    found = []
    for root, _, files in os.walk(directory):
        for name in files:
            data = (Path(root) / name).read_bytes()
            found += [(name, needle) for needle in needles if needle in data]
    return found


class Stalled:
    """A provider whose calls wait for ``release`` (then answer ``answer``): a call pending."""

    name = "stalled"

    def __init__(self, answer: str = f"Answer: {ANSWER}") -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.answer = answer
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest, *, model_id: str, key: str) -> ModelResponse:
        self.requests.append(request)
        self.entered.set()
        await self.release.wait()
        return ModelResponse(text=self.answer)


def stalled_models(provider: Any) -> z8.ai.Models:
    return z8.ai.Models({"fast": "s:m"}, providers={"s": provider})


async def start_stalled(app: z8.Application, stalled: Stalled, run_id: str) -> None:
    """Start a run with the subject and wait until its first model call is in flight."""
    await app.dispatch(Support.StartRun(run_id=run_id, query=QUERY, subject=SUBJECT))
    await asyncio.wait_for(stalled.entered.wait(), 15)


# --- a run with a subject -------------------------------------------------------------------------


async def test_a_run_with_a_subject_journals_none_of_its_texts_in_clear(tmp_path: Path, server: LLMServer) -> None:
    models = served(server)
    async with app_for(tmp_path / "journal", models) as app:
        await app.dispatch(Support.StartRun(run_id="p1", query=QUERY, subject=SUBJECT))
        result = await z8.ai.await_run(app, "p1", timeout=15)
        run = events(app, "p1")
        status = z8.ai.run_status(app, "p1")
        report = z8.ai.replay(app, "p1", Support)
        tool_intent = next(e for e in run if type(e) is EffectIntended and e.effect == "lookup_customer")
        model_intent = next(e for e in run if type(e) is EffectIntended and e.effect == "z8.model")
    await models.aclose()
    assert (result.status, result.answer) == ("answered", ANSWER)
    assert status.query == QUERY and report.matched and report.model_calls == 2 and report.tool_calls == 1
    [started] = of(run, RunStarted)
    assert (started.query, started.subject) == (QUERY, SUBJECT)
    assert [s.text for s in of(run, ModelStep)] == [THOUGHT, f"Answer: {ANSWER}"]
    [tool] = of(run, ToolStep)
    assert msgspec.json.decode(tool.arguments)["email"] == EMAIL and tool.result["plan"] == PLAN
    assert all(e.subject == SUBJECT for e in run if type(e) in (ModelStep, ToolStep, RunFinished))
    assert TOOL_LOG == [Lookup(EMAIL, SUBJECT)]  # the run's subject, not the one the model sent
    assert isinstance(tool_intent.request["email"], msgspec.msgpack.Ext) and tool_intent.request["who"] == SUBJECT
    assert isinstance(model_intent.request["messages"], msgspec.msgpack.Ext)
    assert model_intent.request["subject"] == SUBJECT and model_intent.request["messages_digest"].startswith("blake2b:")
    assert server.requests[0].body["messages"][1]["content"] == QUERY  # the model saw the text
    offered = server.requests[0].body["tools"][0]["function"]["parameters"]
    assert list(offered["properties"]) == ["email"] and offered["required"] == ["email"]
    assert plaintext_in(tmp_path / "journal") == []


async def test_a_pending_model_call_of_a_run_with_a_subject_is_resent_after_a_restart(tmp_path: Path) -> None:
    stalled = Stalled()
    path = tmp_path / "journal"
    async with app_for(path, stalled_models(stalled)) as app:
        await start_stalled(app, stalled, "p2")  # the call is in flight when the app stops
    assert plaintext_in(path) == []
    models = z8.ai.Models.scripted([f"Answer: {ANSWER}"])
    async with app_for(path, models) as app:
        result = await z8.ai.await_run(app, "p2", timeout=15)
        assert z8.ai.replay(app, "p2", Support).matched
    [again] = models.resolve("fast")[0].calls
    assert again.request.messages == stalled.requests[0].messages and again.request.messages[1].content == QUERY
    assert (result.status, result.answer) == ("answered", ANSWER)
    assert plaintext_in(path) == []


async def test_a_fork_of_a_run_with_a_subject_holds_the_same_subject(tmp_path: Path) -> None:
    asks = ModelResponse(text=THOUGHT, tool_calls=(ToolCall("t1", "lookup_customer", f'{{"email": "{EMAIL}"}}'),))
    models = z8.ai.Models.scripted([asks, f"Answer: {ANSWER}", "Answer: forked, for Byron-Lovelace"])
    path = tmp_path / "journal"
    async with app_for(path, models) as app:
        await app.dispatch(Support.StartRun(run_id="p7", query=QUERY, subject=SUBJECT))
        await z8.ai.await_run(app, "p7", timeout=15)
        await z8.ai.fork(app, "p7", at_step=2, new_run_id="p7b")
        result = await z8.ai.await_run(app, "p7b", timeout=15)
        assert z8.ai.replay(app, "p7b", Support).matched
        assert plaintext_in(path) == []
        await app.erase(SUBJECT, by="dpo")
        run = events(app, "p7b")
        with pytest.raises(SubjectErased):
            z8.ai.replay(app, "p7b", Support)
        with pytest.raises(SubjectErased, match="run 'p7' cannot be forked: its personal data was erased"):
            await z8.ai.fork(app, "p7", at_step=1)
    assert result.status == "answered" and result.answer == "forked, for Byron-Lovelace"
    assert of(run, RunForked)[0].subject == SUBJECT and of(run, RunStarted)[0].query is z8.ERASED
    assert all(s.text is z8.ERASED for s in of(run, ModelStep)) and of(run, RunFinished)[0].answer is z8.ERASED


# --- erasure --------------------------------------------------------------------------------------


async def test_erasing_the_subject_reaches_every_text_of_the_run(tmp_path: Path, server: LLMServer) -> None:
    models = served(server)
    path = tmp_path / "journal"
    async with app_for(path, models) as app:
        await app.dispatch(Support.StartRun(run_id="p3", query=QUERY, subject=SUBJECT))
        await z8.ai.await_run(app, "p3", timeout=15)
        await app.erase(SUBJECT, by="dpo", reason="request 2024-17")
        run = events(app, "p3")
        status = z8.ai.run_status(app, "p3")
        result = await z8.ai.await_run(app, "p3")
        record = app.audit.run(stream="run-p3")
        with pytest.raises(SubjectErased, match="run 'p3' cannot be replayed: its personal data was erased"):
            z8.ai.replay(app, "p3", Support)
        intent = next(e for e in run if type(e) is EffectIntended and e.effect == "z8.model")
        request = app.journal.personal.convert(intent.request, ModelRequest)
        assert app.journal.verify().ok
    await models.aclose()
    assert of(run, RunStarted)[0].query is z8.ERASED and of(run, RunStarted)[0].subject == SUBJECT
    assert all(s.text is z8.ERASED and s.tool_calls is z8.ERASED for s in of(run, ModelStep))
    assert all(s.arguments is z8.ERASED and s.result is z8.ERASED for s in of(run, ToolStep))
    assert of(run, RunFinished)[0].answer is z8.ERASED and result.answer is z8.ERASED
    assert status.query is z8.ERASED and status.status == "answered"
    assert request.messages is z8.ERASED and request.messages_digest.startswith("blake2b:")
    assert record.personal_data_erased and any("RunStarted.query" in place for place in record.erased)
    assert plaintext_in(path) == []


async def test_the_cli_prints_an_erased_run_without_failing(tmp_path: Path, server: LLMServer,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    models = served(server)
    path = tmp_path / "journal"
    async with app_for(path, models) as app:
        await app.dispatch(Support.StartRun(run_id="p8", query=QUERY, subject=SUBJECT))
        await z8.ai.await_run(app, "p8", timeout=15)
    await models.aclose()
    assert cli.main(["events", str(path), "--stream", "run-p8"]) == 0
    assert '"query":"[personal data]"' in capsys.readouterr().out
    async with app_for(path, models) as app:
        await app.erase(SUBJECT, by="dpo")
    assert cli.main(["runs", str(path)]) == 0
    [row] = [msgspec.json.decode(line) for line in capsys.readouterr().out.splitlines()]
    assert (row["run_id"], row["status"], row["query"], row["answer"]) == ("p8", "answered", "[erased]", "[erased]")
    assert cli.main(["replay", str(path), "p8", "--agent", "test_ai_personal:Support"]) == 2
    assert "its personal data was erased" in capsys.readouterr().err


async def test_a_run_erased_while_its_model_call_is_pending_ends_failed(tmp_path: Path) -> None:
    stalled = Stalled()
    async with app_for(tmp_path / "journal", stalled_models(stalled)) as app:
        await start_stalled(app, stalled, "p4")
        await app.erase(SUBJECT, by="dpo")
        stalled.release.set()  # the answer comes back for an erased subject: it is not recorded
        result = await z8.ai.await_run(app, "p4", timeout=15)
        run = events(app, "p4")
        assert app.journal.verify().ok
    assert result.status == "failed" and "its personal data was erased" in result.reason
    [failed] = of(run, EffectFailed)
    assert failed.error == "SubjectErased"
    assert of(run, RunFinished)[0].answer == ""  # nothing that needs the erased key
    assert plaintext_in(tmp_path / "journal") == []


async def test_a_run_erased_while_stopped_fails_when_its_call_is_run_again(tmp_path: Path) -> None:
    stalled = Stalled()
    path = tmp_path / "journal"
    async with app_for(path, stalled_models(stalled)) as app:
        await start_stalled(app, stalled, "p5")
        await app.erase(SUBJECT, by="dpo")
    models = z8.ai.Models.scripted([f"Answer: {ANSWER}"])
    async with app_for(path, models) as app:  # the pending call's messages read as ERASED: it fails for good
        result = await z8.ai.await_run(app, "p5", timeout=15)
        run = events(app, "p5")
    assert models.resolve("fast")[0].calls == []
    assert result.status == "failed" and "its personal data was erased" in result.reason
    assert [f.error for f in of(run, EffectFailed)] == ["SubjectErased"]


# --- without a subject, and bad input ---------------------------------------------------------------


async def test_a_run_without_a_subject_is_journaled_in_clear_as_before(tmp_path: Path, server: LLMServer) -> None:
    models = served(server)
    async with app_for(tmp_path / "journal", models) as app:
        await app.dispatch(Support.StartRun(run_id="p6", query=QUERY))
        result = await z8.ai.await_run(app, "p6", timeout=15)
        report = z8.ai.replay(app, "p6", Support)
        stored = msgspec.msgpack.decode(app.journal.read_stream("run-p6")[0].data)
    await models.aclose()
    assert (result.status, result.answer) == ("answered", ANSWER)
    assert report.matched and report.state_digest == report.recorded_digest
    assert stored["query"] == QUERY and "subject" not in stored
    assert TOOL_LOG == [Lookup(EMAIL, None)]
    assert plaintext_in(tmp_path / "journal", [b"4111-1111"])


@pytest.mark.parametrize("subject", [42, "", b"customer"])
async def test_a_bad_subject_is_rejected_and_nothing_is_journaled(tmp_path: Path, subject: Any) -> None:
    async with app_for(tmp_path / "journal", z8.ai.Models.scripted([])) as app:
        with pytest.raises(Rejected, match="invalid_subject"):
            await app.dispatch(Support.StartRun(run_id="bad", query=QUERY, subject=subject))
        assert app.journal.stream_version("run-bad") == 0


def test_the_subject_field_of_a_tool_is_not_offered_to_the_model() -> None:
    assert lookup_customer.subject_field == "who"
    assert set(lookup_customer.spec.parameters["properties"]) == {"email"}
    args, error = lookup_customer.parse('{"email": "a@b.c", "who": "mallory"}', subject="s-1")
    assert error is None and args == Lookup("a@b.c", "s-1")
    args, error = lookup_customer.parse('{"email": "a@b.c", "who": "mallory"}')
    assert error is None and args == Lookup("a@b.c", None)
    assert lookup_customer.parse("[1]", subject="s-1")[1] is not None

    assert take_note.parse('{"text": "x"}', subject="s-1") == (Note("s-1", "x"), None)
    assert "this run names no subject" in take_note.parse('{"text": "x", "who": "mallory"}')[1]


def test_decide_on_an_erased_run_ends_it_and_refuses_to_fork_it() -> None:
    from z8.actors._ledger import EffectFailed as Failed
    from z8.testing import given

    started = given(Support, stream="run-e1").when(Support.StartRun(run_id="e1", query=QUERY, subject=SUBJECT))
    erased = [msgspec.structs.replace(e, query=z8.ERASED) if type(e) is RunStarted else e for e in started.events]
    pending = next(iter(given(Support, *erased).state.pending))
    outcome = given(Support, *erased, stream="run-e1").when(Failed(pending, "z8.model", "SubjectErased", "gone", 1))
    [finished] = outcome.events
    assert (finished.status, finished.answer, finished.subject) == ("failed", "", SUBJECT)
    assert "its personal data was erased (subject 'customer-7f3a') while it was running" in finished.reason
    given(Support, stream="run-e2").when(Support.ForkRun(run_id="e2", source="e1", at_step=0, history=erased)) \
        .then_rejected("fork_history", detail="the copied history's personal data was erased")
