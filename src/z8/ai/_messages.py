"""The wire and journal schema of model calls: messages, tool specs, requests, responses.

A model call is an effect (:func:`z8.ai.model_call`): its ``ModelRequest`` is the
journaled intent and its ``ModelResponse`` the journaled outcome, so replay reads the
response back and never calls the model. Providers translate these Structs to and from
their own HTTP APIs (OpenAI-compatible chat completions, Anthropic Messages).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

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
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    params: dict[str, Any] = {}
    purpose: str = "act"
    messages_digest: str | None = None
    """Set instead of the message text when the messages hold personal data: the
    journal keeps the BLAKE2b digest of the messages, not the messages."""


class ModelResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the model answered, with what the record needs: the resolved model id,
    the provider, token usage, latency and the provider's request id."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str = ""
    usage: Usage = Usage()
    model: str = ""
    provider: str = ""
    request_id: str = ""
    latency_ms: float = 0.0
