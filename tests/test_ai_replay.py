"""Replay and fork of AI runs recorded by a real z8.Application on LMDB.

Replay reads the journal only: the provider and the tools are never asked again (the
tests make both fail loudly if they were). A change to the agent's code makes replay
diverge and name the first step that differs; a fork shares a run's history up to a
step and continues live with a new prompt.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import msgspec
import pytest

import z8
import z8.ai
from z8 import cli
from z8.ai import ModelRequest, ModelResponse, ToolCall
from z8.effects import EffectContext, EffectIntended
from z8.errors import InvalidArgument, ReplayDiverged, RunNotFound

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Lookup(msgspec.Struct, frozen=True):
    email: str


TOOL_LOG: list[Any] = []


@z8.ai.tool(capability="crm.read", kind="read")
async def lookup_customer(args: Lookup, ctx: EffectContext) -> dict:
    """Find a customer by email."""
    TOOL_LOG.append(args)
    return {"email": args.email, "plan": "pro"}


class Triage(z8.ai.Agent):
    model = "fast"
    prompt = "You are a support triage assistant."
    tools = [lookup_customer]
    max_iterations = 4
    timeout = 600.0


class Deliberate(z8.ai.Agent):
    model = "deep"
    prompt = "You plan carefully."
    strategy = "auto"


class Model:
    """A scripted model that refuses to be asked once the recording is over."""

    def __init__(self) -> None:
        self.closed = False
        self.asked = 0
        self.requests: list[ModelRequest] = []

    def __call__(self, request: ModelRequest) -> ModelResponse | str:
        assert not self.closed, f"the model was asked again: {request.purpose}"
        self.requests.append(request)
        tool_results = [m for m in request.messages if m.role == "tool"]
        if request.purpose == "act" and not tool_results:
            return ModelResponse(text="Looking the customer up.",
                                 tool_calls=(ToolCall("t1", "lookup_customer", '{"email": "ada@example.com"}'),))
        if request.purpose == "act":
            return f"({request.messages[0].content[:14]})\nAnswer: refund the duplicate"
        if request.purpose == "classify":
            return "exploratory"
        if request.purpose == "expand":
            return "thought " + request.messages[-1].content.rsplit("(option ", 1)[1][0]
        if request.purpose == "evaluate":
            return "Score: 8" if "thought 2" in request.messages[-1].content.splitlines()[-1] else "Score: 5"
        return "Answer: follow thought 2"


@pytest.fixture
def model() -> Model:
    TOOL_LOG.clear()
    return Model()


async def record(path: Path, model: Model, *runs: tuple[type, str, str]) -> None:
    """Run each (agent, run_id, query) to its end in an application on ``path``, then close it."""
    models = z8.ai.Models.scripted(model)
    agents = sorted({agent for agent, _, _ in runs}, key=lambda a: a.__name__)
    async with z8.Application(z8.ai.route(z8.Router(), *agents), path, effects=[models.effect],
                              durability="fast") as app:
        for agent, run_id, query in runs:
            await app.dispatch(agent.StartRun(run_id=run_id, query=query))
            await z8.ai.await_run(app, run_id, timeout=10)


@pytest.fixture
async def recorded(tmp_path: Path, model: Model) -> Path:
    path = tmp_path / "journal"
    await record(path, model, (Triage, "r1", "I was double charged"), (Deliberate, "d1", "plan the migration"))
    model.closed, model.asked = True, len(model.requests)
    TOOL_LOG.append("closed")
    return path


async def test_replay_of_a_completed_run_matches_and_calls_nothing(recorded: Path, model: Model) -> None:
    with z8.open_journal(recorded) as journal:  # no application, no provider, no outbox
        report = z8.ai.replay(journal, "r1", Triage)
    assert report.matched and report.divergence == "" and report.diverged_at_step is None
    assert (report.decisions, report.steps, report.model_calls, report.tool_calls) == (4, 3, 2, 1)
    assert report.status == "answered" and report.answer == "refund the duplicate"
    assert report.state_digest == report.recorded_digest and len(report.state_digest) == 32
    assert [s.kind for s in report.state.steps] == ["model", "tool", "model"]
    assert len(model.requests) == model.asked and TOOL_LOG[-1] == "closed"  # nothing asked since the recording


async def test_replay_rebuilds_parallel_calls_the_routers_choice_and_timers(recorded: Path) -> None:
    with z8.open_journal(recorded) as journal:
        report = z8.ai.replay(journal, "d1", Deliberate)
        chosen = [journal.decode(e) for e in journal.read_stream("run-d1") if e.type == "z8.ai.StrategyChosen"]
    assert report.matched and report.state.strategy == "tot" and chosen[0].classification == "exploratory"
    assert report.model_calls == 1 + 3 + 3 + 6 + 6 + 1  # classify, expand, evaluate, expand, evaluate, answer
    assert report.answer == "follow thought 2"


async def test_a_changed_prompt_makes_replay_diverge_at_the_start(recorded: Path) -> None:
    class Reworded(Triage):
        agent_name = "Triage"
        prompt = "You are a terse support assistant."

    with z8.open_journal(recorded) as journal:
        with pytest.raises(ReplayDiverged) as raised:
            z8.ai.replay(journal, "r1", Reworded)
    report = raised.value.report
    assert not report.matched and report.diverged_at_step == 0
    assert str(raised.value).startswith("run 'r1': replay diverged at step 0 (decision 1 of 4, on the run's command)"
                                        ": event 1: RunStarted differs in prompt_digest")


async def test_a_changed_strategy_diverges_at_the_first_step_it_decides_differently(recorded: Path) -> None:
    class Hasty(z8.ai.ReAct, frozen=True):
        def advance(self, run: z8.ai.RunView, memo: Any, results: list[z8.ai.Step]) -> Any:
            if any(step.kind == "tool" for step in results):
                return z8.ai.Done("stop at the first lookup", "hasty")
            return super().advance(run, memo, results)

    class HastyTriage(Triage):
        agent_name = "Triage"
        strategy = Hasty()

    with z8.open_journal(recorded) as journal:
        report = z8.ai.replay(journal, "r1", HastyTriage, strict=False)
    assert not report.matched and report.diverged_at_step == 2
    assert "decision 3 of 4, on EffectSucceeded run-r1/" in report.divergence
    assert report.divergence.endswith("event 2: recorded StrategyAdvanced, today's code produces RunFinished")


async def test_a_changed_request_diverges_naming_the_call(recorded: Path) -> None:
    class Bigger(Triage):
        agent_name = "Triage"
        max_tokens = 4096

    with z8.open_journal(recorded) as journal:
        report = z8.ai.replay(journal, "r1", Bigger, strict=False)
    assert report.diverged_at_step == 0 and "call #0 (z8.model run-r1/1/0)" in report.divergence
    assert report.divergence.endswith("the request differs in max_tokens: recorded 1024, now 4096")


async def test_a_changed_evolve_is_caught_by_the_final_state_digest(recorded: Path) -> None:
    class Forgetful(Triage):
        agent_name = "Triage"

        def evolve(self, state: z8.ai.RunState, event: Any) -> z8.ai.RunState:
            state = super().evolve(state, event)
            if type(event) is z8.ai.RunStarted:  # a field decide never reads: only the digest can tell
                state = msgspec.structs.replace(state, prompt_digest="")
            return state

    with z8.open_journal(recorded) as journal:
        report = z8.ai.replay(journal, "r1", Forgetful, strict=False)
    assert not report.matched and report.diverged_at_step == 3
    assert "the final state differs: recorded digest" in report.divergence


async def test_replay_of_an_unknown_run_or_with_a_non_agent_is_refused(recorded: Path) -> None:
    with z8.open_journal(recorded) as journal:
        with pytest.raises(RunNotFound):
            z8.ai.replay(journal, "nope", Triage)
        with pytest.raises(InvalidArgument):
            z8.ai.replay(journal, "r1", object)  # type: ignore[arg-type]


# --- fork -----------------------------------------------------------------------------------------


async def test_fork_shares_history_up_to_a_step_then_continues_live_with_a_new_prompt(tmp_path: Path,
                                                                                       model: Model) -> None:
    path = tmp_path / "journal"
    await record(path, model, (Triage, "r1", "I was double charged"))
    asked_before, tools_before = len(model.requests), len(TOOL_LOG)
    models = z8.ai.Models.scripted(model)
    async with z8.Application(z8.ai.route(z8.Router(), Triage), path, effects=[models.effect],
                              durability="fast") as app:
        fork_id = await z8.ai.fork(app, "r1", at_step=2, prompt="You are terse.", new_run_id="r1-terse")
        result = await z8.ai.await_run(app, fork_id, timeout=10)
        source = [app.journal.decode(e) for e in app.journal.read_stream("run-r1")]
        forked = [app.journal.decode(e) for e in app.journal.read_stream("run-r1-terse")]
        status = z8.ai.run_status(app, fork_id)
    assert fork_id == "r1-terse" and result.status == "answered"
    assert result.answer == "refund the duplicate" and result.steps == 3
    # one new model call, with the new prompt and the shared tool result; the tool is not run again
    (live,) = model.requests[asked_before:]
    assert live.messages[0].content.startswith("You are terse.")
    assert [m.role for m in live.messages] == ["system", "user", "assistant", "tool"]
    assert len(TOOL_LOG) == tools_before
    head = forked[0]
    assert type(head) is z8.ai.RunForked and (head.source, head.at_step, head.overrides) == (
        "r1", 2, {"prompt": "You are terse."})
    shared = [e for e in source if not isinstance(e, z8.effects.EffectRecord)][:head.copied]
    assert forked[1:1 + head.copied] == shared  # the history, as recorded in the source
    assert [type(e).__name__ for e in forked[1 + head.copied:]][:2] == ["CallsIssued", "EffectIntended"]
    assert status.forked_from == "r1" and status.run_id == "r1-terse"
    with z8.open_journal(path) as journal:  # a fork replays like any run
        assert z8.ai.replay(journal, "r1-terse", Triage).matched


async def test_fork_at_step_zero_with_another_strategy_starts_it_fresh(tmp_path: Path, model: Model) -> None:
    path = tmp_path / "journal"
    await record(path, model, (Triage, "r1", "I was double charged"))
    models = z8.ai.Models.scripted(["Because of a retry.\nAnswer: a duplicate charge"])
    async with z8.Application(z8.ai.route(z8.Router(), Triage), path, effects=[models.effect],
                              durability="fast") as app:
        fork_id = await z8.ai.fork(app, "r1", at_step=0, strategy="cot")
        result = await z8.ai.await_run(app, fork_id, timeout=10)
        chosen = [app.journal.decode(e) for e in app.journal.read_stream(f"run-{fork_id}")
                  if e.type == "z8.ai.StrategyChosen"]
    assert fork_id.startswith("r1-fork-") and result.answer == "a duplicate charge" and result.strategy == "cot"
    assert [(c.strategy, c.classified_by) for c in chosen] == [("react", "configured"), ("cot", "fork")]
    assert chosen[1].reason == "fork of run r1 at step 0 with strategy=cot"


async def test_fork_refuses_a_step_past_the_end_and_unknown_settings(tmp_path: Path, model: Model) -> None:
    path = tmp_path / "journal"
    await record(path, model, (Triage, "r1", "I was double charged"))
    models = z8.ai.Models.scripted([])
    async with z8.Application(z8.ai.route(z8.Router(), Triage), path, effects=[models.effect],
                              durability="fast") as app:
        with pytest.raises(InvalidArgument, match="has 3 steps and has finished: fork at a step from 0 to 2"):
            await z8.ai.fork(app, "r1", at_step=3)
        with pytest.raises(InvalidArgument, match="cannot change \\['tools'\\]"):
            await z8.ai.fork(app, "r1", at_step=1, tools=[])
        with pytest.raises(z8.errors.InvalidSpec, match="unknown strategy"):
            await z8.ai.fork(app, "r1", at_step=1, strategy="magic")
        with pytest.raises(RunNotFound):
            await z8.ai.fork(app, "nope", at_step=0)


# --- the command line -------------------------------------------------------------------------------


class Reworded(Triage):
    agent_name = "Triage"
    prompt = "Something else."


async def test_cli_replay_and_runs(recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["replay", str(recorded), "r1", "--agent", "test_ai_replay:Triage"]) == 0
    out = capsys.readouterr().out
    assert "run 'r1' replayed: 4 decisions" in out and "2 model and 1 tool calls read from the journal, none made" in out
    assert cli.main(["replay", str(recorded), "r1", "--agent", "test_ai_replay:Reworded"]) == 1
    assert "replay diverged at step 0" in capsys.readouterr().out
    assert cli.main(["replay", str(recorded), "r1", "--agent", "test_ai_replay:Model"]) == 2
    assert "z8.ai.Agent subclass" in capsys.readouterr().err
    assert cli.main(["runs", str(recorded)]) == 0
    rows = [msgspec.json.decode(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["run_id"], r["agent"], r["status"], r["strategy"]) for r in rows] == [
        ("d1", "Deliberate", "answered", "tot"), ("r1", "Triage", "answered", "react")]
    assert cli.main(["runs", str(recorded), "--status", "waiting"]) == 0
    assert capsys.readouterr().out == ""


def test_the_model_effect_intents_hold_the_requests_replay_compares() -> None:
    # the contract replay relies on: a model call's request is journaled whole in its intent
    assert EffectIntended.__struct_fields__[:4] == ("effect_id", "effect", "kind", "request")


# --- golden runs ----------------------------------------------------------------------------------


def test_golden_ai_runs_still_replay_with_todays_code(tmp_path: Path) -> None:
    """Runs recorded by an earlier z8 (tests/golden/ai-run-v1, made by make_ai_run_v1.py)
    rebuild step for step: a change to what agents ask, or to how runs fold, fails here."""
    from _ai_golden import FORK, RUNS, GoldenTriage

    shutil.copytree(Path(__file__).parent / "golden" / "ai-run-v1", tmp_path / "golden")
    with z8.open_journal(tmp_path / "golden") as journal:
        assert journal.verify().ok
        for agent, run_id, _ in [*RUNS, (GoldenTriage, FORK[2], "")]:
            report = z8.ai.replay(journal, run_id, agent)
            assert report.matched and report.status == "answered", run_id
        assert {r.run_id: r.strategy for r in z8.ai.runs(journal)} == {
            "exact": "exact", "got": "got", "react": "react", "react-terse": "react", "refine": "refine",
            "tot": "tot"}
