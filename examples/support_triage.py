"""Support triage: the seed's AI agent in five lines, durable — its stream is the run record.

    python examples/support_triage.py [--dir DIR] [--scripted]

``Triage`` is a ``z8.ai.Agent`` with two tools: ``lookup_customer`` (kind ``read``,
capability ``crm.lookup``) and ``refund`` (irreversible, idempotent by key, capability
``billing.refund``). A policy grants ``model.call``, ``crm.lookup`` and ``billing.refund``
to ``Triage`` and holds a refund above 100.00 for a support lead. The script shows:

1. a ticket "double charged" answered through ReAct: the model looks the customer up (a
   tool call), then answers;
2. that run's record (``app.audit.run(stream="run-<id>").markdown()``);
3. ``z8.ai.replay`` of the finished run from its journal: zero model calls, zero tool calls;
4. a fork of the run at step 1 with another prompt: the shared step is not asked again,
   the rest runs live with the new prompt;
5. a refund of 480.00 parked by the policy until ``app.approve(..., by="support.lead")``.

It checks each of these and exits non-zero when one fails.

**The model.** Offline by default: the model is ``z8.ai.ScriptedProvider`` running
:func:`support_model` below, a deterministic script standing in for a model (it is NOT a
language model, and the output says so). Name a real endpoint in the environment and the
same script talks to it over HTTP instead (``z8.ai.Models(env=True)``)::

    Z8_MODEL_FAST=openai:gpt-4o-mini           # the alias "fast" -> provider:model-id
    OPENAI_BASE_URL=https://api.openai.com/v1  # any OpenAI-compatible server: vLLM, Ollama
    OPENAI_API_KEY=sk-...                      # (http://localhost:11434/v1), LM Studio...

(``Z8_MODEL_FAST=anthropic:<model>`` with ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL``
works too, and ``Z8_MODELS_FILE`` names a TOML file of providers and aliases: see
``z8.ai.Models``.) Any of ``Z8_MODEL_FAST``, ``Z8_MODELS_FILE`` or ``OPENAI_BASE_URL``
switches to the live model (``fast`` defaults to ``openai:gpt-4o-mini``); ``--scripted``
forces the offline script. A live model decides for itself, so what depends on its
choices (which tool it calls, whether it asks for the refund) is reported, and only what
the runtime promises is checked.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import re
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

import z8
import z8.ai
from z8.ai import ModelRequest, ModelResponse, ToolCall
from z8.effects import EffectContext, EffectIntended
from z8.policies import Grant, Policy, Rule, When

LEAD = "support.lead"
"""Who may approve a large refund (named in the policy)."""
REFUND_APPROVAL_ABOVE = 100.0
LIVE_VARIABLES = ("Z8_MODEL_FAST", "Z8_MODELS_FILE", "OPENAI_BASE_URL")


# --- the CRM and the billing system: in memory, because this is a demo ---------------------------


class Charge(msgspec.Struct, frozen=True):
    id: str
    amount: float
    date: str
    description: str


class CustomerFile(msgspec.Struct, frozen=True):
    """What the CRM knows of a customer (``found`` False: no such email)."""

    found: bool
    email: str
    name: str = ""
    plan: str = ""
    charges: list[Charge] = []


class LookupCustomer(msgspec.Struct, frozen=True):
    email: str


class RefundOrder(msgspec.Struct, frozen=True):
    charge_id: str
    amount: float
    reason: str = ""


class RefundReceipt(msgspec.Struct, frozen=True):
    refund_id: str
    charge_id: str
    amount: float


CUSTOMERS = {
    "ada@example.com": CustomerFile(True, "ada@example.com", "Ada Lovelace", "Pro (monthly)", [
        Charge("ch_1001", 19.99, "2026-11-01", "Pro plan, November"),
        Charge("ch_1002", 19.99, "2026-11-01", "Pro plan, November"),
        Charge("ch_0917", 19.99, "2026-10-01", "Pro plan, October"),
    ]),
    "grace@example.com": CustomerFile(True, "grace@example.com", "Grace Hopper", "Team (annual)", [
        Charge("ch_2001", 480.00, "2026-11-03", "Team plan, annual renewal"),
        Charge("ch_2002", 480.00, "2026-11-03", "Team plan, annual renewal"),
    ]),
}


class Backoffice:
    """The CRM and the billing system the tools reach; counts what they were asked."""

    def __init__(self) -> None:
        self.lookups: list[str] = []
        self.refunds: dict[str, RefundReceipt] = {}  # by idempotency key: the same key refunds once
        self.refund_calls: list[str] = []

    def lookup(self, email: str) -> CustomerFile:
        self.lookups.append(email)
        return CUSTOMERS.get(email.strip().lower(), CustomerFile(False, email))

    def refund(self, order: RefundOrder, key: str) -> RefundReceipt:
        self.refund_calls.append(key)
        if key not in self.refunds:
            self.refunds[key] = RefundReceipt(f"re_{len(self.refunds) + 1:04d}", order.charge_id, order.amount)
        return self.refunds[key]


BACKOFFICE = Backoffice()


# --- the tools and the agent ---------------------------------------------------------------------


@z8.ai.tool(capability="crm.lookup", kind="read")
async def lookup_customer(args: LookupCustomer, ctx: EffectContext) -> CustomerFile:
    """Look a customer up by email: name, plan and recent card charges."""
    return BACKOFFICE.lookup(args.email)


@z8.ai.tool(capability="billing.refund", kind="irreversible", idempotent=True)
async def refund(args: RefundOrder, ctx: EffectContext) -> RefundReceipt:
    """Refund a card charge (by its id), in full or in part."""
    return BACKOFFICE.refund(args, ctx.key)  # ctx.key, the effect id: the billing system refunds once per key


class Triage(z8.ai.Agent):
    model = "fast"
    prompt = "You are a support triage assistant."
    tools = [lookup_customer, refund]
    max_iterations = 4


POLICY = Policy(
    "support", "2026-11-22.1",
    grants=(Grant("Triage", ("model.call", "crm.lookup", "billing.refund")),),
    rules=(Rule("large-refund", "approval", capability="billing.refund",
                when=(When("amount", ">", REFUND_APPROVAL_ABOVE),), approvers=(LEAD,)),),
)


# --- the offline model: a deterministic script, NOT a language model ------------------------------


def support_model(request: ModelRequest) -> ModelResponse:
    """What the offline demo's "model" answers: a fixed ReAct script over the conversation.

    No tool result yet: call ``lookup_customer`` with the ticket's email. The customer's
    file in hand: a ticket that asks for a refund gets a ``refund`` call for the duplicate
    charge; the refund's outcome (or any other ticket) gets the answer. A system prompt
    asking for one sentence gets a one-sentence answer (the fork changes the prompt)."""
    system = next((m.content for m in request.messages if m.role == "system"), "")
    task = next((m.content for m in request.messages if m.role == "user"), "")
    named = {c.id: c.name for m in request.messages for c in m.tool_calls}
    results = {m.name or named.get(m.tool_call_id or "", ""): m.content for m in request.messages if m.role == "tool"}
    if "lookup_customer" not in results:
        email = _email(task)
        return ModelResponse(
            text="Thought: I need the customer's account and recent charges before I can say anything.",
            tool_calls=(ToolCall("", "lookup_customer", json.dumps({"email": email})),))
    try:
        file = msgspec.json.decode(results["lookup_customer"], type=CustomerFile)
    except msgspec.DecodeError:
        return ModelResponse(text=f"Answer: I could not read the customer's file ({results['lookup_customer']}); "
                                  "escalating to a human.")
    if not file.found:
        return ModelResponse(text=f"Answer: no customer with email {file.email}; asking the customer to reply "
                                  "from the address on their account.")
    first, duplicate = _duplicate(file.charges)
    if duplicate is None:
        return ModelResponse(text=f"Answer: {file.name} has no duplicate charge; escalating to billing.")
    wants_refund = "refund" in task.lower()
    if wants_refund and "refund" not in results:
        return ModelResponse(
            text=f"Thought: {duplicate.id} repeats {first.id} ({duplicate.amount:.2f}, {duplicate.date}); "
                 "the customer asked for the refund, so I refund the duplicate.",
            tool_calls=(ToolCall("", "refund", json.dumps({"charge_id": duplicate.id, "amount": duplicate.amount,
                                                            "reason": f"duplicate of {first.id}"})),))
    if "refund" in results:
        outcome = results["refund"]
        if outcome.startswith("error"):
            return ModelResponse(text=f"Answer: the refund of {duplicate.id} was not made ({outcome}); "
                                      "escalating to billing.")
        receipt = msgspec.json.decode(outcome, type=RefundReceipt)
        return ModelResponse(text=f"Refund {receipt.refund_id} issued.\nAnswer: refunded {receipt.amount:.2f} on "
                                  f"{receipt.charge_id}, the duplicate of {first.id}; {file.name} keeps the "
                                  f"{file.plan} plan.")
    if "one sentence" in system:
        return ModelResponse(text=f"Answer: Sorry, {file.name.split()[0]}: you were charged "
                                  f"{duplicate.amount:.2f} twice on {duplicate.date}, and we are refunding "
                                  f"{duplicate.id} today.")
    return ModelResponse(text=(
        f"Thought: {file.name} ({file.plan}) was charged {duplicate.amount:.2f} twice on {duplicate.date} "
        f"({first.id} and {duplicate.id}, both '{duplicate.description}').\n"
        f"Answer: confirmed double charge: {duplicate.id} duplicates {first.id} ({duplicate.amount:.2f}). "
        f"Category billing/duplicate-charge, priority normal; refund {duplicate.id} and tell the customer."))


def _email(text: str) -> str:
    found = re.search(r"[\w.+-]+@[\w-]+\.[\w.]+", text)
    return found.group(0) if found else "unknown@example.com"


def _duplicate(charges: list[Charge]) -> tuple[Charge, Charge | None]:
    seen: dict[tuple[float, str, str], Charge] = {}
    for charge in charges:
        same = (charge.amount, charge.date, charge.description)
        if same in seen:
            return seen[same], charge
        seen[same] = charge
    return (charges[0] if charges else Charge("", 0.0, "", "")), None


# --- the model behind the alias "fast" ----------------------------------------------------------


class Counting:
    """A provider that counts the calls it passes on (to show that replay makes none)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    async def complete(self, request: ModelRequest, *, model_id: str, key: str) -> ModelResponse:
        self.calls += 1
        return await self.inner.complete(request, model_id=model_id, key=key)

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()


def live_environment(environ: dict[str, str] | None = None) -> bool:
    """Whether the environment names a model endpoint (see the module docs)."""
    environ = dict(os.environ if environ is None else environ)
    return any(environ.get(name, "").strip() for name in LIVE_VARIABLES)


def make_models(live: bool) -> tuple[z8.ai.Models, Counting, str]:
    """The models (alias ``fast``), the counting provider behind ``fast``, and a label."""
    if not live:
        counting = Counting(z8.ai.ScriptedProvider(support_model))
        models = z8.ai.Models({"fast": "scripted:support-script"}, providers={"scripted": counting})
        return models, counting, ("SCRIPTED, OFFLINE: z8.ai.ScriptedProvider running support_model(), a "
                                  "deterministic script standing in for a model (not a language model); "
                                  f"set {' or '.join(LIVE_VARIABLES)} to use a real one")
    models = z8.ai.Models({"fast": "openai:gpt-4o-mini"}, env=True)
    provider, spec = models.resolve("fast")
    counting = Counting(provider)
    models.provider(spec.provider, counting)
    where = getattr(provider, "base_url", type(provider).__name__)
    return models, counting, f"LIVE: {spec.target} at {where} (from the environment)"


# --- the demo ----------------------------------------------------------------------------------

REFUND_QUERY = "Please refund the duplicate charge on our annual renewal."


def run_events(app: z8.Application, run_id: str) -> list[Any]:
    return [app.journal.decode(e) for e in app.journal.read_stream(f"run-{run_id}")]


def of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if type(e) is kind]


def short(value: Any, width: int = 150) -> str:
    text = value if isinstance(value, str) else json.dumps(msgspec.to_builtins(value))
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


def show_steps(events: list[Any], indent: str = "  ") -> None:
    for event in events:
        if type(event) is z8.ai.ModelStep:
            calls = ", ".join(f"{c.name}({c.arguments})" for c in event.tool_calls)
            print(f"{indent}step {event.step} model ({event.model}, {event.usage.total_tokens} tokens, "
                  f"{event.latency_ms:.0f} ms, request {event.request_id}): {short(event.text)}"
                  + (f"\n{indent}    -> tool call {calls}" if calls else ""))
        elif type(event) is z8.ai.ToolStep:
            outcome = f"error: {event.error}" if event.error is not None else short(event.result, 120)
            print(f"{indent}step {event.step} tool {event.tool}: {outcome}")
        elif type(event) is z8.ai.RunFinished:
            print(f"{indent}RunFinished: {event.status} — {event.reason}")


async def until(found: Callable[[], Any], timeout: float = 60.0) -> Any:
    async with asyncio.timeout(timeout):
        while not (value := found()):
            await asyncio.sleep(0.01)
        return value


def heading(title: str) -> None:
    print(f"\n--- {title} {'-' * max(0, 86 - len(title))}\n")


async def support(directory: Path, live: bool) -> dict[str, Any]:
    models, counting, label = make_models(live)
    out: dict[str, Any] = {"live": live, "backoffice": BACKOFFICE}
    router = z8.ai.route(z8.Router(), Triage)
    try:
        async with z8.Application(router, directory / "journal", effects=[models.effect], policy=POLICY) as app:
            print(f"model 'fast': {label}")
            print(f"policy {POLICY.name!r} {POLICY.version}: Triage may use model.call, crm.lookup, billing.refund; "
                  f"a refund above {REFUND_APPROVAL_ABOVE:.2f} waits for {LEAD}\n")
            print(textwrap.indent(inspect.getsource(Triage), "    "))

            # 1. the seed's run: "double charged", ReAct
            heading('1. StartRun(query="double charged") — ReAct: tool call, then the answer')
            run_id = "T-1042"
            print("    await app.dispatch(Triage.StartRun(run_id=run_id, query=\"double charged\", "
                  "context={\"ticket\": ..., \"from\": ...}))\n    answer = await z8.ai.await_run(app, run_id)\n")
            await app.dispatch(Triage.StartRun(run_id=run_id, query="double charged",
                                               context={"ticket": "T-1042", "from": "ada@example.com"}))
            answer = await z8.ai.await_run(app, run_id, timeout=300)
            first = run_events(app, run_id)
            show_steps(first)
            print(f"\n  answer: {answer.answer}\n  ({answer.steps} steps, {answer.usage.total_tokens} tokens, "
                  f"status {answer.status})")
            out.update(run_id=run_id, answer=answer, first=first, calls_after_run=counting.calls)

            # 2. the run record
            heading(f'2. the run record: app.audit.run(stream="run-{run_id}").markdown()')
            record = app.audit.run(stream=f"run-{run_id}")
            markdown = record.markdown()
            print(markdown)
            out["markdown"] = markdown

            # 3. replay: zero model calls, zero tool calls
            heading(f"3. z8.ai.replay(app, {run_id!r}, Triage) — from the journal, nothing called")
            model_before, tools_before = counting.calls, len(BACKOFFICE.lookups) + len(BACKOFFICE.refund_calls)
            report = z8.ai.replay(app, run_id, Triage)
            model_after, tools_after = counting.calls, len(BACKOFFICE.lookups) + len(BACKOFFICE.refund_calls)
            print(f"  matched: {report.matched}; {report.decisions} decisions and {report.events} events rebuilt; "
                  f"{report.model_calls} model steps and {report.tool_calls} tool steps read from the journal")
            print(f"  state digest {report.state_digest} (recorded {report.recorded_digest}); answer: "
                  f"{short(report.answer, 100)}")
            print(f"  provider calls: {model_before} before, {model_after} after the replay "
                  f"({model_after - model_before} made); tool calls: {tools_after - tools_before} made")
            out.update(report=report, replay_model_calls=model_after - model_before,
                       replay_tool_calls=tools_after - tools_before)

            # 4. fork at step 1 with another prompt
            new_prompt = "You are a support triage assistant. Reply to the customer directly, in one sentence."
            heading(f"4. z8.ai.fork(app, {run_id!r}, at_step=1, prompt=...) — a new prompt against the recorded run")
            print(f"  prompt: {new_prompt!r}")
            calls_before = counting.calls
            fork_id = await z8.ai.fork(app, run_id, at_step=1, new_run_id=f"{run_id}-fork", prompt=new_prompt)
            forked = await z8.ai.await_run(app, fork_id, timeout=300)
            fork_events = run_events(app, fork_id)
            (marker,) = of(fork_events, z8.ai.RunForked) or [None]
            print(f"  RunForked(source={marker.source!r}, at_step={marker.at_step}, copied {marker.copied} events); "
                  "steps of the fork:")
            show_steps(fork_events, "    ")
            print(f"  the fork's answer: {forked.answer}\n  the source's:      {answer.answer}")
            print(f"  model calls made by the fork: {counting.calls - calls_before} "
                  "(step 1 came from the source's record)")
            out.update(fork_id=fork_id, forked=forked, fork_events=fork_events,
                       fork_model_calls=counting.calls - calls_before, new_prompt=new_prompt)

            # 5. a refund above the limit, parked for a human
            heading(f"5. a refund above {REFUND_APPROVAL_ABOVE:.2f} waits for {LEAD}")
            refund_id = "T-1043"
            await app.dispatch(Triage.StartRun(run_id=refund_id, query=REFUND_QUERY,
                                               context={"ticket": refund_id, "from": "grace@example.com"}))

            def parked_or_done() -> Any:
                status = z8.ai.run_status(app, refund_id)
                return status if status.approvals or status.status not in ("running", "waiting") else None

            status = await until(parked_or_done, timeout=300)
            approved_by = None
            if status.approvals:
                effect_id = status.approvals[0]
                intent = next(r for r in run_events(app, refund_id)
                              if isinstance(r, EffectIntended) and r.effect_id == effect_id)
                print(f"  the model asked: refund {short(intent.request, 100)}")
                print(f"  {effect_id}: verdict {intent.verdict!r} by rule {intent.rule!r} of policy "
                      f"{intent.policy_version}; run status {status.status!r}; refunds made so far: "
                      f"{len(BACKOFFICE.refund_calls)}")
                out["parked_refunds"] = len(BACKOFFICE.refund_calls)
                try:
                    await z8.ai.await_run(app, refund_id, timeout=0.3)
                    out["finished_while_parked"] = True
                except TimeoutError as waiting:
                    print(f"  await_run(timeout=0.3): {waiting}")
                    out["finished_while_parked"] = False
                await app.approve(effect_id, by=LEAD, reason="duplicate annual charge confirmed on the statement")
                approved_by = LEAD
                print(f"  app.approve({effect_id!r}, by={LEAD!r})")
            else:
                print(f"  the model did not ask for a refund above {REFUND_APPROVAL_ABOVE:.2f}: nothing was parked")
            refunded = await z8.ai.await_run(app, refund_id, timeout=300)
            refund_events = run_events(app, refund_id)
            show_steps(refund_events)
            print(f"\n  answer: {refunded.answer}")
            print(f"  billing system: {len(BACKOFFICE.refunds)} refund(s) made, {len(BACKOFFICE.refund_calls)} "
                  "call(s)" + "".join(f"; {r.refund_id} {r.amount:.2f} on {r.charge_id}"
                                     for r in BACKOFFICE.refunds.values()))
            verified = await app.audit.verify()
            print(f"\njournal.verify(): {'ok' if verified.ok else verified} ({verified.checked} events)")
            out.update(refund_id=refund_id, refunded=refunded, refund_events=refund_events, approved_by=approved_by,
                       verified=verified, provider_calls=counting.calls)
    finally:
        await models.aclose()
    return out


def expectations(run: dict[str, Any]) -> list[str]:
    """What must hold; each failure is named. A live model's own choices are not checked."""
    live, answer, first = run["live"], run["answer"], run["first"]
    model_steps = of(first, z8.ai.ModelStep)
    tool_steps = of(first, z8.ai.ToolStep)
    intents = [e for e in first if isinstance(e, EffectIntended) and e.effect == "z8.model"]
    fork_requests = [e.request for e in run["fork_events"] if isinstance(e, EffectIntended) and e.effect == "z8.model"]
    refund_tools = [t for t in of(run["refund_events"], z8.ai.ToolStep) if t.tool == "refund"]
    report = run["report"]
    checks: dict[str, bool] = {
        "the run answered": answer.status == "answered" and bool(answer.answer),
        "every model call is journaled with its request and its step": len(intents) == len(model_steps) >= 1,
        "each model step records the model id, usage and the provider's request id": all(
            s.model and s.request_id and s.usage.total_tokens > 0 for s in model_steps),
        "the run record quotes the model's reasoning": bool(model_steps)
        and short(model_steps[-1].text, 40)[:30] in " ".join(run["markdown"].split())
        and "No reasoning was journaled" not in run["markdown"],
        "the run record has its seal": "## Seal" in run["markdown"],
        "replay matched the record": report.matched and report.state_digest == report.recorded_digest,
        "replay made zero model calls": run["replay_model_calls"] == 0,
        "replay made zero tool calls": run["replay_tool_calls"] == 0,
        "replay rebuilt every model step from the journal": report.model_calls == len(model_steps),
        "the fork starts with RunForked at step 1": bool(of(run["fork_events"], z8.ai.RunForked))
        and of(run["fork_events"], z8.ai.RunForked)[0].at_step == 1,
        "the fork did not ask step 1 again": not fork_requests or all(
            any(m["role"] == "tool" for m in r["messages"]) for r in fork_requests),
        "the fork asked the model with the new prompt": bool(fork_requests) and all(
            r["messages"][0]["content"].startswith(run["new_prompt"]) for r in fork_requests),
        "the fork finished": run["forked"].status in ("answered", "max_iterations"),
        "the refund run finished": run["refunded"].status in ("answered", "max_iterations"),
        "every refund above the limit waited for the lead": all(
            run["approved_by"] == LEAD for t in refund_tools if t.result is not None
            and float(t.result.get("amount", 0)) > REFUND_APPROVAL_ABOVE),
        "no refund was made while parked": run.get("parked_refunds", 0) == 0
        and not run.get("finished_while_parked", False),
        "the billing system refunded once per key": len(run["backoffice"].refund_calls) == len(
            run["backoffice"].refunds),
        "the journal verifies": run["verified"].ok,
    }
    if not live:  # the script's own choices: checked offline only
        checks.update({
            "ReAct: a lookup_customer call, then the answer": [t.tool for t in tool_steps] == ["lookup_customer"]
            and len(model_steps) == 2 and not model_steps[-1].tool_calls,
            "the answer names the duplicate charge": "ch_1002" in answer.answer,
            "the fork answered in one sentence with the new prompt": run["forked"].answer.startswith("Sorry, Ada")
            and run["fork_model_calls"] == 1,
            "the refund was parked, approved by the lead, then made once": run["approved_by"] == LEAD
            and [t.result.get("amount") for t in refund_tools] == [480.0] and len(run["backoffice"].refunds) == 1,
            "the refund run answered with the refund": "refunded 480.00 on ch_2002" in run["refunded"].answer,
        })
    return [name for name, ok in checks.items() if not ok]


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="where to put the journal (default: a temporary directory, "
                        "removed at the end)")
    parser.add_argument("--scripted", action="store_true", help="use the offline script even when the "
                        "environment names a model endpoint")
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="z8-support-"))
    live = live_environment() and not args.scripted
    try:
        run = asyncio.run(support(directory, live))
        failed = expectations(run)
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    print(f"\nchecked: {'live model' if live else 'offline script (scripted provider)'}; model calls made: "
          f"{run['provider_calls']}")
    for name in failed:
        print(f"FAILED: {name}", file=sys.stderr)
    print("support triage demo " + ("FAILED" if failed else "passed"))
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    cli()
