"""The reasoning strategies and the router as pure state machines: decide/evolve of a
z8.ai.Agent driven with no runtime, no journal, no model (given/when/then and tests/_ai_drive.py).
"""

from __future__ import annotations

import msgspec
import pytest
from _ai_drive import by_purpose, drive, last_user, script

import z8.ai
from z8.ai import ModelResponse, ToolCall, Usage
from z8.ai._events import (
    CallsIssued,
    Issued,
    ModelStep,
    RunStarted,
    RunTimedOut,
    StrategyAdvanced,
    StrategyChosen,
    ToolStep,
)
from z8.ai._router import choose, features, heuristic_class, parse_class
from z8.ai._strategies import (
    ChainOfThought,
    ExactSearch,
    GraphOfThought,
    RunView,
    SelfRefine,
    TreeOfThought,
    conclusion,
    score,
    strategy_named,
)
from z8.effects import CancelTimer, EffectContext, EffectFailed, EffectSucceeded, EffectUnknown, Timer
from z8.errors import InvalidSpec
from z8.testing import given


class Lookup(msgspec.Struct, frozen=True):
    email: str


@z8.ai.tool(kind="read", capability="crm.read")
async def lookup_customer(args: Lookup, ctx: EffectContext) -> dict:
    """Find a customer by email."""
    raise AssertionError("pure tests never run tools")


@z8.ai.tool(kind="read")
def recent_charges(email: str, limit: int = 5) -> list:
    """The customer's latest card charges."""
    raise AssertionError("pure tests never run tools")


def agent(strategy: object = "react", **attrs: object) -> type[z8.ai.Agent]:
    namespace = {"model": "fast", "prompt": "You are a support triage assistant.", "strategy": strategy,
                 "tools": [lookup_customer, recent_charges], "max_iterations": 8, **attrs}
    return type("Triage", (z8.ai.Agent,), namespace)


def tool_call(name: str, arguments: str, call_id: str = "") -> ModelResponse:
    return ModelResponse(tool_calls=(ToolCall(call_id, name, arguments),))


CUSTOMER = {"id": "c-7", "plan": "pro"}


# --- parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("Reasoning.\nAnswer: 42", "42"),
    ("**Answer:** refund the duplicate", "refund the duplicate"),
    ("Final answer: yes\n", "yes"),
    ("steps\nAnswer:\nline one\nline two", "line one\nline two"),
    ("Answer: first\nmore\nAnswer: second", "second"),
    ("no conclusion here", None),
])
def test_conclusion_is_the_last_answer_line(text: str, expected: str | None) -> None:
    assert conclusion(text) == expected


@pytest.mark.parametrize("text, expected", [("Score: 7", 7.0), ("score=8.5/10", 8.5), ("I'd say 3", 3.0),
                                            ("Score: 14", 10.0), ("no idea", 0.0)])
def test_score_reads_a_rating_clamped_to_0_10(text: str, expected: float) -> None:
    assert score(text) == expected


def test_strategy_names_and_aliases() -> None:
    assert strategy_named("chain_of_thought").name == "cot"
    assert strategy_named("self-refine").name == "refine"
    with pytest.raises(InvalidSpec, match="unknown strategy 'magic'"):
        strategy_named("magic")
    with pytest.raises(InvalidSpec):
        TreeOfThought(k=0)


def test_agent_configuration_is_checked_when_the_class_is_made() -> None:
    with pytest.raises(InvalidSpec, match="max_iterations"):
        agent(max_iterations=0)
    with pytest.raises(InvalidSpec, match="unknown strategy"):
        agent("nope")
    with pytest.raises(InvalidSpec, match="not a tool"):
        agent(tools=[lambda x: x])
    with pytest.raises(InvalidSpec, match="unique"):
        agent(tools=[lookup_customer, lookup_customer])
    Triage = agent()
    assert Triage.StartRun.__qualname__ == "Triage.StartRun"
    assert Triage.agent_effects == (lookup_customer.effect, recent_charges.effect)


# --- given / when / then: single decisions ---------------------------------------------------------


def test_start_run_journals_the_trigger_the_choice_and_the_first_round() -> None:
    Triage = agent("one_shot", timeout=30.0)
    outcome = given(Triage, stream="run-r1").when(Triage.StartRun(run_id="r1", query="double charged"))
    started, chosen, advanced, issued = outcome.events
    assert started == RunStarted("r1", "Triage", "double charged", "fast", "one_shot", started.prompt_digest, 8,
                                 {}, 30.0, ["lookup_customer", "recent_charges"])
    assert chosen == StrategyChosen("one_shot", "configured on the agent class", {}, "configured")
    assert advanced == StrategyAdvanced(1, "answer", {"phase": "answer"})
    assert issued == CallsIssued([Issued("run-r1/1/0", "model", "answer", "", 0, False)])
    assert outcome.reply == "r1"
    assert outcome.state.status == "running" and list(outcome.state.pending) == ["run-r1/1/0"]


def test_start_run_asks_the_model_with_the_prompt_and_sets_the_durable_timeout() -> None:
    Triage = agent("one_shot", timeout=30.0)
    scenario = given(Triage, stream="run-r1")
    decision = Triage().decide(scenario.state, Triage.StartRun(run_id="r1", query="double charged"),
                               _ctx("run-r1", 0))
    (call,) = decision.effects
    assert call.effect == "z8.model"
    assert call.request.model == "fast" and call.request.purpose == "answer" and call.request.max_tokens == 1024
    assert [m.role for m in call.request.messages] == ["system", "user"]
    assert call.request.messages[0].content == "You are a support triage assistant."
    assert decision.timers == [Timer(RunTimedOut("r1"), after=30.0, id="z8.ai.timeout")]


def test_starting_the_same_run_again_writes_nothing_and_another_query_is_refused() -> None:
    Triage = agent("one_shot")
    history = given(Triage, stream="run-r1").when(Triage.StartRun(run_id="r1", query="q")).events
    given(Triage, *history, stream="run-r1").when(Triage.StartRun(run_id="r1", query="q")).then(reply="r1")
    given(Triage, *history, stream="run-r1").when(Triage.StartRun(run_id="r1", query="other")) \
        .then_rejected("run_exists")
    given(Triage, stream="run-r1").when(Triage.StartRun(run_id="r1", query="  ")).then_rejected("empty_query")


def test_an_outcome_not_awaited_and_an_unknown_outcome_change_nothing() -> None:
    Triage = agent("one_shot")
    history = given(Triage, stream="run-r1").when(Triage.StartRun(run_id="r1", query="q")).events
    given(Triage, *history).when(EffectSucceeded("run-r1/9/0", "z8.model", {"text": "x"})).then()
    given(Triage, *history).when(EffectUnknown("run-r1/1/0", "z8.model", "timeout")).then()


def test_one_shot_answers_with_the_text() -> None:
    Triage = agent("one_shot")
    history = given(Triage, stream="run-r1").when(Triage.StartRun(run_id="r1", query="q")).events
    response = ModelResponse(text=" It is a duplicate. ", usage=Usage(10, 5, 15), model="m-1", request_id="req-1")
    outcome = given(Triage, *history).when(EffectSucceeded("run-r1/1/0", "z8.model", msgspec.to_builtins(response)))
    step, finished = outcome.events
    assert step == ModelStep(1, "answer", " It is a duplicate. ", (), Usage(10, 5, 15), "m-1", "req-1", 0.0, "",
                             "run-r1/1/0")
    assert (finished.status, finished.answer, finished.steps) == ("answered", "It is a duplicate.", 1)
    assert finished.usage == Usage(10, 5, 15) and finished.strategy == "one_shot"
    assert finished.state_digest == z8.ai._events.state_digest(given(Triage, *history, step).state)
    assert outcome.state.status == "answered" and outcome.state.pending == {}


def test_a_late_outcome_after_the_end_is_ignored() -> None:
    trace = drive(agent("one_shot"), "q", script("fine"))
    given(type(trace.agent), *trace.events).when(
        EffectSucceeded("run-r1/1/0", "z8.model", {"text": "again"})).then()


# --- the strategies, driven end to end ---------------------------------------------------------------


def test_chain_of_thought_concludes_on_its_answer_line() -> None:
    trace = drive(agent("cot"), "Is 17 prime?", script("17 has no divisor but 1 and 17.\nAnswer: yes"))
    assert trace.finished.answer == "yes"
    assert "'Answer:' line of step 1" in trace.finished.reason
    assert "step by step" in trace.requests[0].messages[0].content


def test_chain_of_thought_asks_for_a_missing_conclusion_once_then_takes_the_last_line() -> None:
    trace = drive(agent("cot"), "Is 17 prime?", script("It has no divisors.\nSo it is prime.", "Answer: prime"))
    assert trace.finished.answer == "prime" and [r.purpose for r in trace.requests] == ["think", "conclude"]
    assert trace.requests[1].messages[-2].content == "It has no divisors.\nSo it is prime."
    trace = drive(agent("cot"), "Is 17 prime?", script("It has no divisors.\nSo it is prime.", "prime, surely"))
    assert trace.finished.answer == "So it is prime."
    assert trace.finished.reason == "no 'Answer:' line; the conclusion is the last line of step 1"
    no_retry = agent(ChainOfThought(conclude_retry=False))
    assert drive(no_retry, "q", script("a\nb")).finished.answer == "b"


def test_react_calls_a_tool_and_sends_the_result_back_as_a_tool_message() -> None:
    trace = drive(agent("react"), "double charged", script(
        ModelResponse(text="Let me look.", tool_calls=(ToolCall("t1", "lookup_customer", '{"email": "a@b.c"}'),)),
        "Answer: refund the duplicate charge"),
        tools={"lookup_customer": lambda args: CUSTOMER})
    assert trace.names() == ["RunStarted", "StrategyChosen", "StrategyAdvanced", "CallsIssued", "ModelStep",
                             "CallsIssued", "ToolStep", "StrategyAdvanced", "CallsIssued", "ModelStep", "RunFinished"]
    assert trace.tool_calls == [("lookup_customer", Lookup("a@b.c"))]
    tool_step = trace.of(ToolStep)[0]
    assert tool_step == ToolStep(2, "t1", "lookup_customer", '{"email": "a@b.c"}', CUSTOMER,
                                 effect_id="run-r1/6/0")
    second = trace.requests[1]
    assert [m.role for m in second.messages] == ["system", "user", "assistant", "tool"]
    assert second.messages[2].tool_calls == (ToolCall("t1", "lookup_customer", '{"email": "a@b.c"}'),)
    assert second.messages[3].tool_call_id == "t1" and second.messages[3].content == '{"id":"c-7","plan":"pro"}'
    assert [t.name for t in second.tools] == ["lookup_customer", "recent_charges"]
    assert trace.finished.answer == "refund the duplicate charge"
    assert trace.finished.reason == "answered at step 3 after 1 tool call(s) in 2 round(s)"


def test_react_parallel_tool_calls_are_one_decision_and_the_run_waits_for_both() -> None:
    Triage = agent("react")
    both = ModelResponse(tool_calls=(ToolCall("a", "lookup_customer", '{"email": "x@y.z"}'),
                                     ToolCall("b", "recent_charges", '{"email": "x@y.z", "limit": 2}')))
    trace = drive(Triage, "double charged", script(both, "done"),
                  tools={"lookup_customer": lambda a: CUSTOMER, "recent_charges": lambda a: [{"amount": 9}] * a.limit},
                  pick=lambda queue: len(queue) - 1)  # the last issued finishes first
    tool_decision = trace.decisions[1]
    assert [c.effect.name for c in tool_decision.effects] == ["lookup_customer", "recent_charges"]
    assert trace.names()[6:9] == ["ToolStep", "ToolStep", "StrategyAdvanced"]  # no new round after the first
    assert [s.call_id for s in trace.of(ToolStep)] == ["b", "a"]
    assert trace.finished.answer == "done"


def test_react_waiting_status_while_a_tool_is_pending() -> None:
    Triage = agent("react")
    start = given(Triage, stream="run-r1").when(Triage.StartRun(run_id="r1", query="q")).events
    asked = EffectSucceeded("run-r1/1/0", "z8.model",
                            msgspec.to_builtins(tool_call("lookup_customer", '{"email": "a@b.c"}', "t1")))
    outcome = given(Triage, *start, stream="run-r1").when(asked)
    assert outcome.state.status == "waiting"
    assert outcome.state.pending["run-r1/5/0"] == Issued("run-r1/5/0", "tool", "lookup_customer", "t1")


@pytest.mark.parametrize("call, error", [
    (ToolCall("t1", "delete_everything", "{}"), "unknown tool 'delete_everything'; the tools are: "
                                                "lookup_customer, recent_charges"),
    (ToolCall("t1", "lookup_customer", '{"mail": 1}'), "invalid arguments for tool 'lookup_customer'"),
    (ToolCall("t1", "lookup_customer", "{not json"), "are not valid JSON"),
])
def test_react_bad_tool_calls_go_back_to_the_model_as_tool_errors(call: ToolCall, error: str) -> None:
    trace = drive(agent("react"), "q", script(ModelResponse(tool_calls=(call,)), "sorry"), tools={})
    (step,) = trace.of(ToolStep)
    assert error in step.error and step.effect_id == "" and step.arguments == call.arguments
    assert trace.tool_calls == []
    assert trace.requests[1].messages[-1].role == "tool"
    assert trace.requests[1].messages[-1].content == f"error: {step.error}"
    assert trace.finished.answer == "sorry"


def test_react_a_tool_denied_by_policy_is_a_tool_error_not_a_crash() -> None:
    denied = EffectFailed("", "lookup_customer", "PolicyDenied", "no grant for crm.read")
    trace = drive(agent("react"), "q", script(tool_call("lookup_customer", '{"email": "a@b.c"}', "t1"), "cannot"),
                  tools={"lookup_customer": lambda a: denied})
    assert trace.of(ToolStep)[0].error == "PolicyDenied: no grant for crm.read"
    assert trace.finished.status == "answered"


def test_react_tool_call_ids_are_filled_in_when_the_model_gives_none() -> None:
    trace = drive(agent("react"), "q", script(tool_call("lookup_customer", '{"email": "a@b.c"}'), "ok"),
                  tools={"lookup_customer": lambda a: CUSTOMER})
    assert trace.of(ModelStep)[0].tool_calls[0].id == "call-1-0"
    assert trace.of(ToolStep)[0].call_id == "call-1-0"


def test_tree_of_thought_expands_k_evaluates_keeps_the_best_beam_and_answers_along_it() -> None:
    scores = {"A": 2, "B": 9, "C": 5, "BA": 4, "BB": 8, "BC": 1, "CA": 7, "CB": 3, "CC": 6}

    def expand(request: z8.ai.ModelRequest) -> str:  # a label naming the thought's place in the tree
        text = last_user(request)
        option = int(text.rsplit("(option ", 1)[1].split(" ", 1)[0])
        parent = text.split("Reasoning so far:\n")[1].split("\n\n")[0].rsplit(". ", 1)[1] if "so far:" in text else ""
        return parent + "ABC"[option - 1]

    def evaluate(request: z8.ai.ModelRequest) -> str:
        last = last_user(request).rsplit("\n", 1)[-1]  # "n. <label>"
        return f"Score: {scores[last.split('. ', 1)[1]]}"

    model = by_purpose(expand=expand, evaluate=evaluate,
                       answer=lambda r: "Following it.\nAnswer: " + "/".join(
                           line.split(". ", 1)[1] for line in last_user(r).split("Line of reasoning:\n")[1].split("\n")))
    trace = drive(agent(TreeOfThought(k=3, beam=2, depth=2)), "plan the migration", model,
                  pick=lambda queue: len(queue) - 1)  # finish in reverse: order must not matter
    sizes = [len(d.effects) for d in trace.decisions if d.effects]
    assert sizes == [3, 3, 6, 6, 1]  # expand 3, evaluate 3, expand 2x3, evaluate 6, answer
    assert all(r.temperature == 0.0 for r in trace.requests if r.purpose == "evaluate")
    assert trace.finished.answer == "B/BB"  # best first level B (9), then its child BB (8) beats CA (7)
    assert "scored 8" in trace.finished.reason and trace.finished.status == "answered"
    assert [e.phase for e in trace.of(StrategyAdvanced)] == ["expand", "evaluate", "expand", "evaluate", "answer"]


def test_tree_of_thought_finishes_only_when_every_parallel_call_is_back() -> None:
    Triage = agent(TreeOfThought(k=3, beam=1, depth=1))
    start = given(Triage, stream="run-r1").when(Triage.StartRun(run_id="r1", query="q")).events
    first = given(Triage, *start, stream="run-r1").when(EffectSucceeded("run-r1/1/1", "z8.model", {"text": "t"}))
    assert [type(e).__name__ for e in first.events] == ["ModelStep"]
    assert sorted(first.state.pending) == ["run-r1/1/0", "run-r1/1/2"]


def test_graph_of_thought_generates_connects_aggregates_and_synthesizes() -> None:
    ideas = iter(["refund", "apology", "fix billing"])
    model = by_purpose(generate=lambda r: next(ideas), connect="1, 2\n3",
                       aggregate=lambda r: "agg(" + ",".join(
                           line.split(": ", 1)[1] for line in last_user(r).splitlines() if line.startswith("Idea")) + ")",
                       synthesize=lambda r: "Answer: " + " & ".join(
                           line.split(": ", 1)[1] for line in last_user(r).splitlines() if line.startswith("Combined")))
    trace = drive(agent("got"), "customer was double charged", model)
    assert [len(d.effects) for d in trace.decisions if d.effects] == [3, 1, 2, 1]
    assert trace.finished.answer == "agg(refund,apology) & agg(fix billing)"
    assert "grouped as 1+2; 3" in trace.finished.reason
    fallback = GraphOfThought()._groups("no numbers", 3)
    assert fallback == [[1, 2, 3]]


def test_exact_search_is_at_temperature_zero_and_answers_only_a_verified_candidate() -> None:
    model = by_purpose(enumerate="1. 41\n2. 42\n3. 42\n- 43",
                       verify=lambda r: "VALID" if r.messages[-1].content.endswith("42") else "INVALID: off by one")
    trace = drive(agent("exact"), "What is 6 * 7?", model)
    assert all(r.temperature == 0.0 for r in trace.requests)
    assert [r.purpose for r in trace.requests] == ["enumerate", "verify", "verify", "verify"]  # 41, 42, 43
    assert trace.finished.answer == "42" and "candidate 2 of 3" in trace.finished.reason


def test_exact_search_excludes_rejected_candidates_and_fails_rather_than_guess() -> None:
    rounds = iter(["7\n8", "8\n9"])
    trace = drive(agent("exact"), "q", by_purpose(enumerate=lambda r: next(rounds), verify="INVALID"))
    second_enumeration = [r for r in trace.requests if r.purpose == "enumerate"][1]
    assert "These were checked and are wrong:\n7\n8" in second_enumeration.messages[0].content
    assert [r.messages[-1].content.rsplit(" ", 1)[-1] for r in trace.requests if r.purpose == "verify"] == \
        ["7", "8", "9"]
    assert trace.finished.status == "failed" and trace.finished.answer == ""
    assert "none of 3 candidates verified in 2 round(s)" in trace.finished.reason
    assert drive(agent(ExactSearch(rounds=1)), "q", by_purpose(enumerate="", verify="VALID")).finished.status \
        == "failed"


def test_self_refine_drafts_critiques_revises_and_halts_on_no_changes() -> None:
    trace = drive(agent("refine"), "write a reply", script("draft 1", "Too short.", "draft 2", "NO CHANGES."))
    assert [r.purpose for r in trace.requests] == ["draft", "critique", "revise", "critique"]
    assert "Critique:\nToo short." in trace.requests[2].messages[-1].content
    assert trace.finished.answer == "draft 2"
    assert "found nothing to change after 1 revision(s)" in trace.finished.reason


def test_self_refine_halts_after_max_rounds_or_an_unchanged_revision() -> None:
    trace = drive(agent(SelfRefine(max_rounds=2)), "q", script("d1", "bad", "d2", "still bad", "d3"))
    assert trace.finished.answer == "d3" and "stopped after 2 revision(s)" in trace.finished.reason
    trace = drive(agent("refine"), "q", script("same", "meh", "same"))
    assert "changed nothing" in trace.finished.reason


# --- limits and failures ----------------------------------------------------------------------------


def test_max_iterations_ends_a_run_that_keeps_calling_tools() -> None:
    forever = tool_call("lookup_customer", '{"email": "a@b.c"}')
    trace = drive(agent("react", max_iterations=4), "q", lambda r: forever,
                  tools={"lookup_customer": lambda a: CUSTOMER})
    assert len(trace.requests) == 4
    assert trace.finished.status == "max_iterations"
    assert trace.finished.reason == "max_iterations (4) reached: react wanted round 5 (act)"


def test_the_agents_token_budget_stops_the_next_round() -> None:
    heavy = ModelResponse(tool_calls=(ToolCall("", "lookup_customer", '{"email": "a@b.c"}'),),
                          usage=Usage(600, 100, 700))
    trace = drive(agent("react", token_budget=1000), "q", lambda r: heavy,
                  tools={"lookup_customer": lambda a: CUSTOMER})
    assert len(trace.requests) == 2 and trace.finished.status == "budget"
    assert trace.finished.reason == "token_budget (1000) reached: 1400 tokens used"


def test_a_model_call_denied_by_the_token_budget_ends_the_run_budget() -> None:
    denied = EffectFailed("", "z8.model", "BudgetExceeded", "budget 'tokens' (limit 100) would reach 1124")
    trace = drive(agent("one_shot"), "q", script(denied))
    assert trace.finished.status == "budget"
    assert trace.finished.reason == "the answer model call was refused: budget 'tokens' (limit 100) would reach 1124"
    assert trace.of(ModelStep)[0].error.startswith("BudgetExceeded")


def test_a_failed_model_call_fails_the_run_and_an_unusable_response_is_asked_once_more() -> None:
    failed = EffectFailed("", "z8.model", "ProviderError", "503 after 3 attempts", exhausted=True)
    trace = drive(agent("one_shot"), "q", script(failed))
    assert (trace.finished.status, trace.finished.reason) == (
        "failed", "the answer model call failed: ProviderError: 503 after 3 attempts")
    bad = EffectFailed("", "z8.model", "InvalidModelResponse", "not JSON")
    trace = drive(agent("one_shot"), "q", script(bad, "fine"))
    assert trace.finished.answer == "fine" and len(trace.requests) == 2
    assert trace.requests[0] == trace.requests[1]
    assert [i.attempt for e in trace.of(CallsIssued) for i in e.calls] == [0, 1]
    trace = drive(agent("one_shot"), "q", script(bad, bad))
    assert trace.finished.status == "failed" and "InvalidModelResponse" in trace.finished.reason


def test_the_timeout_ends_the_run_with_its_partial_answer_and_a_normal_end_cancels_it() -> None:
    Triage = agent("react", timeout=5.0)
    trace = drive(Triage, "q", script(tool_call("lookup_customer", '{"email": "a@b.c"}')), limit=1)
    outcome = given(Triage, *trace.events).when(RunTimedOut("r1"))
    (finished,) = outcome.events
    assert finished.status == "timeout" and finished.reason == "the run's timeout of 5 s passed with 1 call(s) pending"
    assert outcome.state.pending == {}
    given(Triage, *trace.events, finished).when(RunTimedOut("r1")).then()
    done = drive(Triage, "q", script("answer"))
    assert done.decisions[-1].timers == [CancelTimer("z8.ai.timeout")]


def test_decide_is_pure_the_same_inputs_give_the_same_decisions() -> None:
    def run() -> list:
        return drive(agent(TreeOfThought(k=2, beam=1, depth=1)), "q",
                     by_purpose(expand="idea", evaluate="Score: 3", answer="Answer: x")).decisions

    assert run() == run()


# --- the router --------------------------------------------------------------------------------------


@pytest.mark.parametrize("query, tools, expected", [
    ("What is 1234 * 5678?", 0, "exact"),
    ("I was double charged on my card", 2, "tools"),
    ("Compare the pros and cons of the two plans", 0, "synthesis"),
    ("Plan the rollout of the new release", 0, "exploratory"),
    ("Write an email announcing the outage", 0, "writing"),
    ("Why does the invoice differ from the quote?", 0, "reasoning"),
    ("Capital of France?", 0, "simple"),
])
def test_the_heuristic_classifies_by_features(query: str, tools: int, expected: str) -> None:
    assert heuristic_class(features(query, {}, tools)) == expected


def test_choose_takes_the_cheapest_strategy_that_fits_and_says_why() -> None:
    view = RunView("p", "Why is the sky blue?")
    choice = choose(view, "reasoning", 8)
    assert (choice.strategy, choice.classified_by, choice.cost_rank) == ("cot", "model", 1)
    assert choice.candidates == ["cot", "refine", "tot"]
    assert choice.reason.startswith("task classified as 'reasoning' by the model, the heuristic says 'reasoning'; "
                                    "chose cot (cost rank 1)")
    assert parse_class("Exploratory.") == "exploratory" and parse_class("I think: synthesis") == "synthesis"
    unsure = choose(view, "hmm", 8)
    assert unsure.classified_by == "heuristic" and "names no class" in unsure.reason
    assert choose(view, None, 8).reason.count("classify call failed") == 1
    # tree of thought needs 5 rounds: with 3, the cheapest that fits the budget instead
    assert choose(RunView("p", "q"), "exploratory", 4).strategy == "got"
    small = choose(RunView("p", "q"), "exploratory", 3)
    assert small.strategy == "one_shot" and "fits in 3 iteration(s)" in small.reason
    assert choose(RunView("p", "q"), "tools", 8).strategy == "cot"  # no tools to call: think


def test_auto_classifies_at_temperature_zero_then_runs_the_choice_recording_why() -> None:
    model = by_purpose(classify="tools", act="Answer: a refund is due")
    trace = drive(agent("auto"), "I was double charged", model)
    classify = trace.requests[0]
    assert classify.purpose == "classify" and classify.temperature == 0.0 and classify.max_tokens == 16
    assert "lookup_customer, recent_charges" in classify.messages[0].content
    (chosen,) = trace.of(StrategyChosen)
    assert (chosen.strategy, chosen.classification, chosen.classified_by, chosen.heuristic, chosen.cost_rank) == (
        "react", "tools", "model", "tools", 2)
    assert chosen.features["lookup"] is True and chosen.features["tools"] == 2
    assert trace.of(RunStarted)[0].strategy == "auto"
    assert trace.finished.strategy == "react" and trace.finished.answer == "a refund is due"
    assert trace.of(StrategyAdvanced)[0].round == 1  # the classify call is not a round


def test_auto_falls_back_to_the_heuristic_when_the_classify_call_fails() -> None:
    failed = EffectFailed("", "z8.model", "ProviderError", "down")
    trace = drive(agent("auto", tools=[]), "Capital of France?", script(failed, "Paris"))
    (chosen,) = trace.of(StrategyChosen)
    assert (chosen.strategy, chosen.classified_by) == ("one_shot", "heuristic")
    assert trace.finished.answer == "Paris"


def test_evolve_ignores_events_that_are_not_run_events() -> None:
    Triage = agent()
    state = Triage.State()
    assert Triage().evolve(state, EffectUnknown("x", "y", "z")) is state


def _ctx(stream: str, version: int) -> z8.actors.CommandContext:
    return z8.actors.CommandContext(1_700_000_000_000_000_000, "cmd", stream, version)


def test_a_model_call_the_policy_denies_fails_the_run_even_for_the_router() -> None:
    denied = EffectFailed("", "z8.model", "PolicyDenied", "no grant for model.call")
    for strategy in ("one_shot", "auto"):
        trace = drive(agent(strategy), "q", script(denied))
        assert trace.finished.status == "failed" and "PolicyDenied: no grant for model.call" in trace.finished.reason
