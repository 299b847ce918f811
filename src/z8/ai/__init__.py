"""AI agents: durable runs whose model calls and tool calls are effects.

(Being built: see issue 7. The message schema is in place.)
"""

from ._messages import Message, ModelRequest, ModelResponse, ToolCall, ToolSpec, Usage

__all__ = ["Message", "ModelRequest", "ModelResponse", "ToolCall", "ToolSpec", "Usage"]
