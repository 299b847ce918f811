"""examples/support_triage.py: offline with the scripted provider, and live against a real
OpenAI-compatible HTTP server on 127.0.0.1 named by the environment.

Each test runs the example as a process (as a person would), then reads its journal.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from _llm_server import LLMServer, Reply

import z8
import z8.ai
from z8.ai import Message, ModelRequest, ToolCall
from z8.effects import EffectApproved, EffectIntended, EffectSucceeded

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "support_triage.py"
LIVE_VARIABLES = ("Z8_MODEL_FAST", "Z8_MODELS_FILE", "OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL",
                  "ANTHROPIC_API_KEY")


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("support_triage_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_example(directory: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in LIVE_VARIABLES}
    result = subprocess.run([sys.executable, str(EXAMPLE), "--dir", str(directory)], capture_output=True, text=True,
                            timeout=120, env={**clean, **env})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert result.stdout.splitlines()[-1] == "support triage demo passed"
    return result


def stream(journal: Any, run_id: str) -> list[Any]:
    return [journal.decode(e) for e in journal.read_stream(f"run-{run_id}")]


def of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if type(e) is kind]


def model_outcomes(events: list[Any]) -> list[Any]:
    return [e for e in events if type(e) is EffectSucceeded and e.effect == "z8.model"]


def test_offline_the_scripted_run_record_replay_fork_and_approval_are_in_the_journal(tmp_path: Path) -> None:
    result = run_example(tmp_path)
    assert "SCRIPTED, OFFLINE" in result.stdout and "not a language model" in result.stdout
    assert "provider calls: 2 before, 2 after the replay (0 made); tool calls: 0 made" in result.stdout
    with z8.open_journal(tmp_path / "journal") as journal:
        assert journal.verify().ok
        z8.ai.runs(journal)  # registers the run types
        first = stream(journal, "T-1042")
        fork = stream(journal, "T-1042-fork")
        refund = stream(journal, "T-1043")
        example = load_example()
        report = z8.ai.replay(journal, "T-1042", example.Triage)
    # the seed's run: ReAct, one lookup, then the answer; the model is labelled scripted in the record
    assert [type(e).__name__ for e in first if type(e) in (z8.ai.ModelStep, z8.ai.ToolStep, z8.ai.RunFinished)] == [
        "ModelStep", "ToolStep", "ModelStep", "RunFinished"]
    assert [t.tool for t in of(first, z8.ai.ToolStep)] == ["lookup_customer"]
    assert {o.result["provider"] for o in model_outcomes(first)} == {"scripted"}
    (finished,) = of(first, z8.ai.RunFinished)
    assert finished.status == "answered" and "ch_1002 duplicates ch_1001" in finished.answer
    assert report.matched and report.model_calls == 2 and report.tool_calls == 1
    # the fork: shares step 1, asks the model once with the new prompt
    (forked,) = of(fork, z8.ai.RunForked)
    assert (forked.source, forked.at_step) == ("T-1042", 1) and "one sentence" in forked.overrides["prompt"]
    asked = [e.request for e in fork if type(e) is EffectIntended and e.effect == "z8.model"]
    assert len(asked) == 1 and "one sentence" in asked[0]["messages"][0]["content"]
    assert of(fork, z8.ai.RunFinished)[0].answer.startswith("Sorry, Ada")
    # the refund: parked by the rule, approved by the lead, made once
    (intent,) = [e for e in refund if type(e) is EffectIntended and e.effect == "refund"]
    assert (intent.verdict, intent.rule, intent.request["amount"]) == ("approval", "large-refund", 480.0)
    assert [(a.by, a.final) for a in of(refund, EffectApproved)] == [("support.lead", True)]
    assert [e.result["refund_id"] for e in refund if type(e) is EffectSucceeded and e.effect == "refund"] == [
        "re_0001"]


def test_the_cli_replays_the_example_run_from_a_shell(tmp_path: Path) -> None:
    run_example(tmp_path)
    done = subprocess.run([sys.executable, "-m", "z8.cli", "replay", str(tmp_path / "journal"), "T-1043",
                           "--agent", "support_triage:Triage"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "examples")})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "run 'T-1043' replayed" in done.stdout and "none made" in done.stdout


def openai_responder(model: Any) -> Any:
    """The server's answers from ``model`` (a function of a ModelRequest), reading the
    OpenAI chat-completions body the provider sent over the wire."""
    def respond(api: str, body: dict[str, Any]) -> Reply:
        assert api == "openai"
        messages = tuple(
            Message(m["role"], m.get("content") or "",
                    tuple(ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"])
                          for c in m.get("tool_calls") or ()),
                    m.get("tool_call_id"), m.get("name"))
            for m in body["messages"])
        answer = model(ModelRequest(body["model"], messages))
        return Reply(text=answer.text, tool_calls=[(c.name, c.arguments) for c in answer.tool_calls])
    return respond


def test_live_against_an_openai_compatible_server_named_by_the_environment(tmp_path: Path) -> None:
    """The example switches to the endpoint the environment names and goes through the
    same steps over real HTTP; the server sees one request per journaled model step (none
    for the replay) and the refund still waits for the lead."""
    example = load_example()
    with LLMServer.in_thread(responder=openai_responder(example.support_model), latency=0.005) as server:
        result = run_example(tmp_path, Z8_MODEL_FAST="openai:support-model", OPENAI_BASE_URL=server.openai_url,
                             OPENAI_API_KEY="sk-local-test")
        by_key, requests = dict(server.by_key), list(server.requests)
    assert f"LIVE: openai:support-model at {server.openai_url}" in result.stdout
    assert "SCRIPTED" not in result.stdout
    with z8.open_journal(tmp_path / "journal") as journal:
        z8.ai.runs(journal)
        runs = {run_id: stream(journal, run_id) for run_id in ("T-1042", "T-1042-fork", "T-1043")}
    journaled = {o.effect_id: o.result for events in runs.values() for o in model_outcomes(events)}
    # one request per journaled model step, each under its effect id as Idempotency-Key; the replay sent none
    assert sorted(by_key) == sorted(journaled) and set(by_key.values()) == {1}
    assert all(r.headers.get("authorization") == "Bearer sk-local-test" for r in requests)
    assert {(o["provider"], o["model"]) for o in journaled.values()} == {("openai", "support-model")}
    assert all(o["request_id"].startswith("req-") for o in journaled.values())
    assert of(runs["T-1042"], z8.ai.RunFinished)[0].answer.startswith("confirmed double charge: ch_1002")
    (intent,) = [e for e in runs["T-1043"] if type(e) is EffectIntended and e.effect == "refund"]
    assert intent.verdict == "approval"
    assert [a.by for a in of(runs["T-1043"], EffectApproved)] == ["support.lead"]
    assert "refunded 480.00 on ch_2002" in of(runs["T-1043"], z8.ai.RunFinished)[0].answer
