"""The wire and journal schema of model calls: messages, tool specs, requests, responses.

A model call is an effect (:func:`z8.ai.model_call`): its ``ModelRequest`` is the
journaled intent and its ``ModelResponse`` the journaled outcome, so replay reads the
response back and never calls the model. Providers translate these Structs to and from
their own HTTP APIs (OpenAI-compatible chat completions, Anthropic Messages).

A request that names a ``subject`` holds that subject's personal data: its messages, and
the response's text and tool calls, are ``z8.Personal`` (sealed in the journal under the
subject's key; ``z8.ERASED`` once the subject is erased). The request then also carries
``messages_digest``, in clear, so the record still shows which messages were sent.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from z8.journal._personal import Personal, Subject

__all__ = ["Message", "ToolSpec", "ToolCall", "Usage", "ModelRequest", "ModelResponse"]

Role = Literal["system", "user", "assistant", "tool"]


class ToolCall(msgspec.Struct, frozen=True):
    """A tool call the model asked for. ``arguments`` is the raw JSON text the model
    produced: it is validated against the tool's schema before any call."""

    id: str
    name: str
    arguments: str


class Message(msgspec.Struct, frozen=True, omit_defaults=True):
    """One chat message. ``tool_calls`` on an assistant message; ``tool_call_id`` (and
    ``name``) on a tool result."""

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


class ToolSpec(msgspec.Struct, frozen=True):
    """A tool offered to the model: name, description, JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


class Usage(msgspec.Struct, frozen=True):
    """Tokens a model call used, as the provider reported them (what token budgets charge)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ModelRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    """What one model call asks. ``model`` is an alias (``"fast"``) or a provider model
    id; it is resolved by the application's model configuration when the call runs, and
    the resolved id is journaled in the response. ``purpose`` names the strategy step
    (``"act"``, ``"critique"``, ``"evaluate"``…) for the run record."""

    model: str
    messages: Personal[tuple[Message, ...]]
    tools: tuple[ToolSpec, ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    params: dict[str, Any] = {}
    purpose: str = "act"
    messages_digest: str | None = None
    """The BLAKE2b digest of the messages (:func:`z8.ai.digest_messages`), kept in clear
    beside sealed messages; a run with a subject sets it."""
    subject: Subject | None = None
    """Whose personal data the messages hold (None: no one's; default None)."""


class ModelResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the model answered, with what the record needs: the resolved model id,
    the provider, token usage, latency and the provider's request id. ``subject`` is the
    request's (the model effect copies it), so the answer is sealed like the question."""

    text: Personal[str] = ""
    tool_calls: Personal[tuple[ToolCall, ...]] = ()
    finish_reason: str = ""
    usage: Usage = Usage()
    model: str = ""
    provider: str = ""
    request_id: str = ""
    latency_ms: float = 0.0
    subject: Subject | None = None
