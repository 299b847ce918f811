"""The scripted provider: a deterministic, offline test and demo double (not a model).

It answers from a script, records what it was asked, and reports usage estimated from
word counts, so tests, examples and replays run without a network or a model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import msgspec

from z8.errors import InvalidModelResponse, ProviderError

from ._messages import ModelRequest, ModelResponse, ToolCall, Usage

__all__ = ["ScriptedProvider", "ScriptedCall"]


Scripted = ModelResponse | str | Callable[[ModelRequest], "ModelResponse | str"]


class ScriptedCall(msgspec.Struct, frozen=True):
    """One call a :class:`ScriptedProvider` answered: what it was asked, under which key."""

    request: ModelRequest
    model_id: str
    key: str


class ScriptedProvider:
    """A TEST AND DEMO DOUBLE, not a model: answers from a script, offline and deterministic.

    ``script`` is either a list consumed in order, one entry per call (a ``ModelResponse``,
    a plain text answer, or a function of the ``ModelRequest`` returning either), or one
    function of the request that answers every call. When a list runs out the call raises
    ``ProviderError`` (the model effect fails, as a real outage would). Tool calls without
    an id get ``call_{n}_{i}``. Usage left at zero is estimated by counting words (prompt:
    the request's messages and tool calls; completion: the answer's text and arguments), so
    budgets and records behave as with a real provider. ``calls`` records every call.
    ``latency`` (seconds) is slept before each answer, for demos and benchmarks.
    """

    name = "scripted"

    def __init__(self, script: Sequence[Scripted] | Callable[[ModelRequest], ModelResponse | str], *,
                 latency: float = 0.0) -> None:
        self._function = script if callable(script) else None
        self._script = [] if callable(script) else list(script)
        self.latency = latency
        self.calls: list[ScriptedCall] = []

    def __repr__(self) -> str:
        return f"<ScriptedProvider calls={len(self.calls)}>"

    @property
    def requests(self) -> list[ModelRequest]:
        """The requests answered so far, in order."""
        return [call.request for call in self.calls]

    @property
    def remaining(self) -> int:
        """How many scripted answers are left (0 for a function script)."""
        return len(self._script)

    async def complete(self, request: ModelRequest, *, model_id: str, key: str) -> ModelResponse:
        """The next scripted answer to ``request``; ProviderError when the script is spent."""
        n = len(self.calls)
        if self._function is not None:
            entry: Scripted = self._function
        elif self._script:
            entry = self._script.pop(0)
        else:
            raise ProviderError(f"scripted provider: the script ran out after {n} answers "
                                f"(request {request.purpose!r} for {model_id!r})")
        self.calls.append(ScriptedCall(request, model_id, key))
        if self.latency:
            await asyncio.sleep(self.latency)
        answer = entry(request) if callable(entry) else entry
        if isinstance(answer, str):
            answer = ModelResponse(text=answer)
        if not isinstance(answer, ModelResponse):
            raise InvalidModelResponse(f"scripted provider: answer {n} is a {type(answer).__name__}, "
                                       "not a ModelResponse or str")
        calls = tuple(c if c.id else ToolCall(f"call_{n}_{i}", c.name, c.arguments)
                      for i, c in enumerate(answer.tool_calls))
        usage = answer.usage if answer.usage.total_tokens else _estimate(request, answer)
        return msgspec.structs.replace(
            answer, tool_calls=calls, usage=usage, model=answer.model or model_id, provider=self.name,
            request_id=answer.request_id or f"scripted-{n + 1}",
            finish_reason=answer.finish_reason or ("tool_calls" if calls else "stop"))


def _words(text: str) -> int:
    return len(text.split())


def _estimate(request: ModelRequest, answer: ModelResponse) -> Usage:
    prompt = sum(_words(m.content) + sum(_words(c.arguments) for c in m.tool_calls) for m in request.messages)
    completion = _words(answer.text) + sum(_words(c.arguments) for c in answer.tool_calls)
    return Usage(prompt, completion, prompt + completion)
