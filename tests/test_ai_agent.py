"""AI agents in a real z8.Application on an LMDB journal, with the scripted provider.

Each test asserts what the journal holds (the run stream is the run record) and what the
provider was asked, not only the answer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest
from _polling import until

import z8
import z8.ai
from z8.ai import ModelRequest, ModelResponse, ToolCall, Usage
from z8.effects import EffectContext, EffectIntended
from z8.errors import RunNotFound
from z8.policies import Budget, Grant, Policy, Rule
from z8.testing import FakeClock

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- the seed's agent -----------------------------------------------------------------------------


class Lookup(msgspec.Struct, frozen=True):
    email: str


class Customer(msgspec.Struct, frozen=True):
    email: str
    plan: str


TOOL_LOG: list[tuple[str, Any]] = []


@z8.ai.tool(capability="crm.read", kind="read")
async def lookup_customer(args: Lookup, ctx: EffectContext) -> Customer:
    """Find a customer by email."""
    TOOL_LOG.append((ctx.key, args))
    return Customer(args.email, "pro")


@z8.ai.tool(capability="billing.refund", kind="irreversible", idempotent=True)
async def refund(charge: str, amount: float) -> str:
    """Refund a card charge."""
    TOOL_LOG.append(("refund", (charge, amount)))
    return f"refunded {amount} on {charge}"


class Triage(z8.ai.Agent):
    model = "fast"
    prompt = "You are a support triage assistant."
    tools = [lookup_customer, refund]
    max_iterations = 4


class Thinker(z8.ai.Agent):
    model = "deep"
    prompt = "You plan carefully."
    strategy = z8.ai.TreeOfThought(k=3, beam=1, depth=1)


class Router(z8.ai.Agent):
    model = "fast"
    prompt = "You answer questions."
    strategy = "auto"


@pytest.fixture(autouse=True)
def _reset() -> None:
    TOOL_LOG.clear()


def app_for(tmp_path: Path, models: z8.ai.Models, *agents: type, **options: Any) -> z8.Application:
    options.setdefault("durability", "fast")
    return z8.Application(z8.ai.route(z8.Router(), *(agents or (Triage,))), tmp_path / "journal",
                          effects=[models.effect], **options)


def provider(models: z8.ai.Models) -> z8.ai.ScriptedProvider:
    return models.resolve("fast")[0]


def run_events(app: z8.Application, run_id: str) -> list[Any]:
    return [app.journal.decode(e) for e in app.journal.read_stream(f"run-{run_id}")]


def of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if type(e) is kind]


def asks_tool(name: str, arguments: str, call_id: str = "t1", usage: Usage = Usage()) -> ModelResponse:
    return ModelResponse(text=f"I will call {name}.", tool_calls=(ToolCall(call_id, name, arguments),), usage=usage)


async def test_the_seed_agent_answers_durably_and_its_stream_is_the_run_record(tmp_path: Path) -> None:
    models = z8.ai.Models.scripted([asks_tool("lookup_customer", '{"email": "ada@example.com"}'),
                                    "Ada is on the pro plan.\nAnswer: refund the duplicate charge"])
    async with app_for(tmp_path, models) as app:
        assert await app.dispatch(Triage.StartRun(run_id="r1", query="double charged")) == "r1"
        result = await z8.ai.await_run(app, "r1", timeout=5)
        events = run_events(app, "r1")
    assert result == z8.ai.RunResult("r1", "answered", "refund the duplicate charge",
                                     "answered at step 3 after 1 tool call(s) in 2 round(s)", 3,
                                     result.usage, "react")
    assert result.usage.total_tokens > 0
    calls = provider(models).calls
    intents = [e for e in events if type(e) is EffectIntended and e.effect == "z8.model"]
    assert [c.key for c in calls] == [i.effect_id for i in intents]  # the effect id is the idempotency key
    first = msgspec.convert(intents[0].request, ModelRequest)
    assert first.messages[0].content.startswith("You are a support triage assistant.")
    assert [t.name for t in first.tools] == ["lookup_customer", "refund"]
    steps = of(events, z8.ai.ModelStep)
    assert [s.request_id for s in steps] == ["scripted-1", "scripted-2"]
    assert steps[0].model == "scripted-model" and steps[0].tool_calls[0].name == "lookup_customer"
    (tool,) = of(events, z8.ai.ToolStep)
    assert tool.result == {"email": "ada@example.com", "plan": "pro"} and tool.error is None
    assert TOOL_LOG == [(tool.effect_id, Lookup("ada@example.com"))]
    assert type(events[-1]) is z8.ai.RunFinished and events[-1].status == "answered"


async def test_await_run_of_a_finished_run_returns_at_once_and_an_unknown_run_is_refused(tmp_path: Path) -> None:
    models = z8.ai.Models.scripted(["Answer: 4"])
    async with app_for(tmp_path, models, Router) as app:
        await app.dispatch(Router.StartRun(run_id="r1", query="What is 2 + 2?"))
        first = await z8.ai.await_run(app, "r1", timeout=5)
        assert await z8.ai.await_run(app, "r1", timeout=0.01) == first
        with pytest.raises(RunNotFound, match="no run 'nope'"):
            await z8.ai.await_run(app, "nope")


class Quick(z8.ai.Agent):
    model = "fast"
    strategy = "one_shot"


async def test_many_waiting_runs_share_one_follower_of_the_journal(tmp_path: Path) -> None:
    from z8.ai._run import _Ends

    models = z8.ai.Models.scripted(lambda request: request.messages[-1].content.upper())
    provider(models).latency = 0.02
    async with app_for(tmp_path, models, Quick) as app:
        for n in range(50):
            await app.dispatch(Quick.StartRun(run_id=f"q{n}", query=f"question {n}"))
        waiting = [asyncio.ensure_future(z8.ai.await_run(app, f"q{n}", timeout=10)) for n in range(50)]
        await until(lambda: len(_Ends.of(app.journal).waiters) > 0)
        ends = _Ends.of(app.journal)
        results = await asyncio.gather(*waiting)
        assert ends.waiters == {} and ends.task is None  # stopped: nobody waits
    assert [r.answer for r in results] == [f"QUESTION {n}" for n in range(50)]


async def test_a_waiter_learns_that_the_journal_closed(tmp_path: Path) -> None:
    policy = Policy("support", "v1", grants=(Grant("Triage", ("model.call", "crm.*", "billing.*")),),
                    rules=(Rule("refunds", "approval", capability="billing.refund", approvers=("lead",)),))
    models = z8.ai.Models.scripted([asks_tool("refund", '{"charge": "ch-2", "amount": 3}')])
    app = app_for(tmp_path, models, policy=policy)
    async with app:
        await app.dispatch(Triage.StartRun(run_id="r1", query="refund"))
        await until(lambda: z8.ai.run_status(app, "r1").approvals)
        waiter = asyncio.ensure_future(z8.ai.await_run(app, "r1"))
        await asyncio.sleep(0.05)
    with pytest.raises(RunNotFound, match="the journal closed before the run finished"):
        await asyncio.wait_for(waiter, 5)


async def test_parallel_model_calls_are_one_decision_and_the_run_waits_for_all(tmp_path: Path) -> None:
    def answer(request: ModelRequest) -> str:
        if request.purpose == "expand":
            return f"idea {request.messages[-1].content.rsplit('(option ', 1)[1][0]}"
        if request.purpose == "evaluate":
            return "Score: 9" if "idea 2" in request.messages[-1].content else "Score: 4"
        return "Answer: go with idea 2"

    models = z8.ai.Models.scripted(answer)
    provider(models).latency = 0.01
    async with app_for(tmp_path, models, Thinker) as app:
        await app.dispatch(Thinker.StartRun(run_id="t", query="plan the migration"))
        result = await z8.ai.await_run(app, "t", timeout=5)
        intents = [e for e in run_events(app, "t") if type(e) is EffectIntended]
    assert result.answer == "go with idea 2" and result.strategy == "tot"
    decisions: dict[str, int] = {}
    for intent in intents:  # an effect id is {stream}/{version of its decision}/{index}
        decision = intent.effect_id.rsplit("/", 1)[0]
        decisions[decision] = decisions.get(decision, 0) + 1
    assert list(decisions.values()) == [3, 3, 1]  # expand x3, evaluate x3, answer
    assert [r.purpose for r in provider(models).requests].count("expand") == 3


async def test_a_tool_needing_approval_parks_the_run_until_a_human_approves(tmp_path: Path) -> None:
    policy = Policy("support", "v1", grants=(Grant("Triage", ("model.call", "crm.*", "billing.*")),),
                    rules=(Rule("refunds", "approval", capability="billing.refund", approvers=("lead",)),))
    models = z8.ai.Models.scripted([asks_tool("refund", '{"charge": "ch-2", "amount": 12.5}'), "Answer: refunded"])
    async with app_for(tmp_path, models, policy=policy) as app:
        await app.dispatch(Triage.StartRun(run_id="r1", query="refund the duplicate"))
        status = await until(lambda: (s := z8.ai.run_status(app, "r1")).approvals and s)
        assert status.status == "waiting" and TOOL_LOG == []
        with pytest.raises(TimeoutError, match="waiting at step 1 \\(1 tool call\\(s\\) await approval"):
            await z8.ai.await_run(app, "r1", timeout=0.2)
        await app.approve(status.approvals[0], by="lead")
        result = await z8.ai.await_run(app, "r1", timeout=5)
    assert result.status == "answered" and TOOL_LOG == [("refund", ("ch-2", 12.5))]


async def test_a_denied_tool_goes_back_to_the_model_as_a_tool_error(tmp_path: Path) -> None:
    policy = Policy("support", "v1", grants=(Grant("Triage", ("model.call", "crm.*", "billing.*")),),
                    rules=(Rule("refunds", "approval", capability="billing.refund", approvers=("lead",)),))
    models = z8.ai.Models.scripted([asks_tool("refund", '{"charge": "ch-2", "amount": 12.5}'),
                                    lambda r: "Answer: " + r.messages[-1].content])
    async with app_for(tmp_path, models, policy=policy) as app:
        await app.dispatch(Triage.StartRun(run_id="r1", query="refund the duplicate"))
        status = await until(lambda: (s := z8.ai.run_status(app, "r1")).approvals and s)
        await app.approve(status.approvals[0], by="lead", verdict="deny", reason="not this one")
        result = await z8.ai.await_run(app, "r1", timeout=5)
    assert result.answer == "error: ApprovalDenied: not this one" and TOOL_LOG == []


async def test_a_policy_token_budget_ends_the_run_with_status_budget(tmp_path: Path) -> None:
    class Metered(Triage):
        max_tokens = 500  # what each model call reserves

    policy = Policy("support", "v1", grants=(Grant("Metered", ("model.call", "crm.*")),),
                    budgets=(Budget("tokens", "tokens", 1000, capabilities=("model.call",), reserve="max_tokens",
                                    charge="usage.total_tokens"),))
    heavy = Usage(800, 100, 900)
    models = z8.ai.Models.scripted([asks_tool("lookup_customer", '{"email": "a@b.c"}', usage=heavy), "Answer: x"])
    async with app_for(tmp_path, models, Metered, policy=policy) as app:
        await app.dispatch(Metered.StartRun(run_id="r1", query="double charged"))
        result = await z8.ai.await_run(app, "r1", timeout=5)
    assert result.status == "budget" and result.reason.startswith("the act model call was refused:")
    assert len(provider(models).calls) == 1 and result.usage.total_tokens == 900


async def test_the_run_timeout_is_a_durable_timer_and_late_outcomes_are_ignored(tmp_path: Path) -> None:
    class Slow(Triage):
        timeout = 30.0

    clock = FakeClock()
    policy = Policy("support", "v1", grants=(Grant("Slow", ("model.call", "crm.*", "billing.*")),),
                    rules=(Rule("refunds", "approval", capability="billing.refund", approvers=("lead",)),))
    models = z8.ai.Models.scripted([asks_tool("refund", '{"charge": "ch-2", "amount": 1}')])
    async with app_for(tmp_path, models, Slow, policy=policy, clock=clock) as app:
        await app.dispatch(Slow.StartRun(run_id="r1", query="refund"))
        status = await until(lambda: (s := z8.ai.run_status(app, "r1")).approvals and s)
        clock.advance(31)
        result = await z8.ai.await_run(app, "r1", timeout=5)
        assert result.status == "timeout"
        assert result.reason == "the run's timeout of 30 s passed with 1 call(s) pending"
        await app.approve(status.approvals[0], by="lead")  # the tool still runs: its outcome changes nothing
        await until(lambda: TOOL_LOG)
        await until(lambda: app.journal.read_stream("run-r1", backward=True, limit=1)[0].type == "z8.EffectSucceeded")
        events = run_events(app, "r1")
    assert [type(e).__name__ for e in events[-4:]] == ["TimerFired", "RunFinished", "EffectApproved",
                                                        "EffectSucceeded"]  # journaled, decided on: nothing
    assert len(of(events, z8.ai.RunFinished)) == 1


async def test_a_model_call_that_fails_after_its_retries_fails_the_run(tmp_path: Path) -> None:
    models = z8.ai.Models.scripted([])  # the script is spent at once: ProviderError
    async with app_for(tmp_path, models) as app:
        await app.dispatch(Triage.StartRun(run_id="r1", query="double charged"))
        result = await z8.ai.await_run(app, "r1", timeout=5)
    assert result.status == "failed" and "the act model call failed: ProviderError" in result.reason


async def test_an_unusable_model_answer_is_asked_once_more_then_recorded(tmp_path: Path) -> None:
    models = z8.ai.Models.scripted([12345, "Answer: fine"])  # not a ModelResponse: InvalidModelResponse
    async with app_for(tmp_path, models) as app:
        await app.dispatch(Triage.StartRun(run_id="r1", query="double charged"))
        result = await z8.ai.await_run(app, "r1", timeout=5)
        steps = of(run_events(app, "r1"), z8.ai.ModelStep)
    assert result.answer == "fine"
    assert steps[0].error.startswith("InvalidModelResponse") and steps[1].error == ""


async def test_malformed_tool_calls_are_journaled_tool_errors_and_the_run_goes_on(tmp_path: Path) -> None:
    models = z8.ai.Models.scripted([
        ModelResponse(tool_calls=(ToolCall("a", "drop_tables", "{}"), ToolCall("b", "lookup_customer", '{"e": 1}'),
                                  ToolCall("c", "lookup_customer", '{"email": "a@b.c"}'))),
        "Answer: done"])
    async with app_for(tmp_path, models) as app:
        await app.dispatch(Triage.StartRun(run_id="r1", query="double charged"))
        result = await z8.ai.await_run(app, "r1", timeout=5)
        tools = of(run_events(app, "r1"), z8.ai.ToolStep)
    assert result.answer == "done"
    assert [(t.call_id, t.error is None) for t in tools] == [("a", False), ("b", False), ("c", True)]
    assert "unknown tool 'drop_tables'" in tools[0].error and "invalid arguments" in tools[1].error
    second = provider(models).requests[1]
    assert [m.tool_call_id for m in second.messages if m.role == "tool"] == ["a", "b", "c"]
    assert TOOL_LOG == [(tools[2].effect_id, Lookup("a@b.c"))]


async def test_a_run_resumes_after_a_restart_without_asking_the_model_again(tmp_path: Path) -> None:
    policy = Policy("support", "v1", grants=(Grant("Triage", ("model.call", "crm.*", "billing.*")),),
                    rules=(Rule("refunds", "approval", capability="billing.refund", approvers=("lead",)),))
    before = z8.ai.Models.scripted([asks_tool("refund", '{"charge": "ch-2", "amount": 3}')])
    async with app_for(tmp_path, before, policy=policy) as app:
        await app.dispatch(Triage.StartRun(run_id="r1", query="refund"))
        status = await until(lambda: (s := z8.ai.run_status(app, "r1")).approvals and s)
    after = z8.ai.Models.scripted(["Answer: refunded"])
    async with app_for(tmp_path, after, policy=policy) as app:
        assert z8.ai.run_status(app, "r1").status == "waiting"
        await app.approve(status.approvals[0], by="lead")
        result = await z8.ai.await_run(app, "r1", timeout=5)
    assert result.status == "answered" and result.steps == 3
    assert len(provider(before).calls) == 1 and len(provider(after).calls) == 1
    assert [r.purpose for r in provider(after).requests] == ["act"]
    assert [m.role for m in provider(after).requests[0].messages] == ["system", "user", "assistant", "tool"]


async def test_the_router_classifies_and_records_why_in_the_journal(tmp_path: Path) -> None:
    models = z8.ai.Models.scripted(["exact", "1. 56088\n2. 56000", "VALID", "INVALID"])
    async with app_for(tmp_path, models, Router) as app:
        await app.dispatch(Router.StartRun(run_id="r1", query="What is 123 * 456?"))
        result = await z8.ai.await_run(app, "r1", timeout=5)
        (chosen,) = of(run_events(app, "r1"), z8.ai.StrategyChosen)
    assert (chosen.strategy, chosen.classification, chosen.classified_by, chosen.cost_rank) == ("exact", "exact",
                                                                                                "model", 3)
    assert chosen.features["exact"] is True and "cheapest" in chosen.reason
    assert result.answer == "56088" and result.strategy == "exact"


async def test_runs_lists_every_run_with_its_status(tmp_path: Path) -> None:
    models = z8.ai.Models.scripted(["simple", "Paris", "simple"])  # b's answer is missing: it fails
    async with app_for(tmp_path, models, Router) as app:
        for run_id in ("a", "b"):
            await app.dispatch(Router.StartRun(run_id=run_id, query="Capital of France?"))
            await z8.ai.await_run(app, run_id, timeout=5)
        listed = z8.ai.runs(app)
    assert [(r.run_id, r.agent, r.status, r.strategy, r.answer, r.steps) for r in listed] == [
        ("a", "Router", "answered", "one_shot", "Paris", 2), ("b", "Router", "failed", "one_shot", "", 2)]


# --- a crash mid-run --------------------------------------------------------------------------------


async def test_runs_killed_mid_flight_resume_and_no_journaled_step_is_sent_again(tmp_path: Path) -> None:
    """SIGKILL a process running AI runs against a real OpenAI-compatible server; a new
    process finishes them, and the server never sees again a request whose answer was
    journaled (a request in flight at the kill may be sent again, with the same key)."""
    import signal
    import subprocess
    import sys

    from _ai_golden import GoldenTriage
    from _llm_server import LLMServer

    path, runs = tmp_path / "journal", 6
    with LLMServer.in_thread(latency=0.05, steps=4) as server:  # three tool calls, then the answer
        worker = subprocess.Popen([sys.executable, str(Path(__file__).parent / "_procs" / "ai_run_worker.py"),
                                   str(path), server.openai_url, str(runs)], stdout=subprocess.PIPE, text=True)
        try:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "STARTED"
            with z8.open_journal(path) as journal:
                def model_steps() -> int:
                    return sum(1 for e in journal.read_all() if e.type == "z8.ai.ModelStep")
                await until(lambda: model_steps() >= runs, timeout=20)  # about one step each: mid-run
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        with z8.open_journal(path) as journal:
            z8.ai.runs(journal)  # registers the run types
            journaled = {journal.decode(e).effect_id for e in journal.read_all()
                         if e.type == "z8.EffectSucceeded" and journal.decode(e).effect == "z8.model"}
            assert not any(e.type == "z8.ai.RunFinished" for e in journal.read_all())
        assert journaled
        models = z8.ai.Models({"fast": "local:model"},
                              providers={"local": z8.ai.OpenAIProvider(server.openai_url, "key")})
        async with z8.Application(z8.ai.route(z8.Router(), GoldenTriage), path, effects=[models.effect]) as app:
            results = [await z8.ai.await_run(app, f"c{n}", timeout=30) for n in range(runs)]
            reports = [z8.ai.replay(app, f"c{n}", GoldenTriage) for n in range(runs)]
        await models.aclose()
        by_key = dict(server.by_key)
    assert [(r.status, r.steps) for r in results] == [("answered", 7)] * runs  # 4 model + 3 tool steps
    assert all(r.matched and r.model_calls == 4 for r in reports)
    assert len(by_key) == 4 * runs  # one idempotency key per model step
    resent = {key for key, count in by_key.items() if count > 1}
    assert not resent & journaled and all(count <= 2 for count in by_key.values())
