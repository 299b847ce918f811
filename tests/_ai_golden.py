"""The agents and the scripted model of the golden AI journal (tests/golden/ai-run-v1).

Changing what these agents ask (prompts, strategies, requests) makes the golden runs
diverge on replay: that is the point. Regenerate the journal only for a deliberate
change: ``python tests/golden/make_ai_run_v1.py``.
"""

from __future__ import annotations

import msgspec

import z8.ai
from z8.ai import ModelRequest, ModelResponse, ToolCall, Usage
from z8.effects import EffectContext


class Lookup(msgspec.Struct, frozen=True):
    email: str


@z8.ai.tool(capability="crm.read", kind="read")
async def lookup_customer(args: Lookup, ctx: EffectContext) -> dict:
    """Find a customer by email."""
    return {"email": args.email, "plan": "pro", "charges": [19.99, 19.99]}


class GoldenTriage(z8.ai.Agent):
    model = "fast"
    prompt = "You are a support triage assistant."
    tools = [lookup_customer]
    max_iterations = 4
    timeout = 600.0


class GoldenAuto(z8.ai.Agent):
    model = "deep"
    prompt = "You reason carefully."
    strategy = "auto"


RUNS = [
    (GoldenTriage, "react", "I was double charged, my email is ada@example.com"),
    (GoldenAuto, "tot", "Plan the migration of the billing database"),
    (GoldenAuto, "exact", "What is 123 * 456?"),
    (GoldenAuto, "refine", "Write an email apologising for the double charge"),
    (GoldenAuto, "got", "Compare the pros and cons of refunds versus credits"),
]
FORK = ("react", 2, "react-terse", {"prompt": "You are terse."})
"""A fork of the react run at step 2 with another prompt."""


def model(request: ModelRequest) -> ModelResponse | str:
    """A deterministic model for the golden runs."""
    last = request.messages[-1].content
    usage = Usage(len(str(request.messages).split()), 7, len(str(request.messages).split()) + 7)
    if request.purpose == "classify":
        for word in ("exact", "writing", "synthesis"):
            if {"exact": "123", "writing": "email", "synthesis": "Compare"}[word] in last:
                return ModelResponse(text=word, usage=usage)
        return ModelResponse(text="exploratory", usage=usage)
    if request.purpose == "act":
        if not any(m.role == "tool" for m in request.messages):
            call = ToolCall("call-1", "lookup_customer", '{"email": "ada@example.com"}')
            return ModelResponse(text="Let me look the customer up.", tool_calls=(call,), usage=usage)
        return ModelResponse(text=f"Two identical charges.\nAnswer: refund one ({request.messages[0].content[:12]})",
                             usage=usage)
    answers = {
        "expand": lambda: "step " + last.rsplit("(option ", 1)[1][0],
        "evaluate": lambda: "Score: " + str(3 + len(last) % 7),
        "answer": lambda: "Answer: migrate in two phases",
        "enumerate": lambda: "56088\n56000",
        "verify": lambda: "VALID" if last.endswith("56088") else "INVALID: wrong",
        "draft": lambda: "Sorry for the double charge.",
        "critique": lambda: "NO CHANGES" if "refund" in last else "Mention the refund.",
        "revise": lambda: "Sorry for the double charge; we refunded it.",
        "generate": lambda: "idea " + last.rsplit("Idea ", 1)[1][0],
        "connect": lambda: "1, 2\n3",
        "aggregate": lambda: "combined " + str(last.count("Idea")),
        "synthesize": lambda: "Answer: credits for small amounts, refunds otherwise",
    }
    return ModelResponse(text=answers[request.purpose](), usage=usage)
