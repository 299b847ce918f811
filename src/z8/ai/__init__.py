"""AI agents: durable runs whose model calls and tool calls are effects.

(Being built: see issue 7. The message schema is in place.)
"""

from ._messages import Message, ModelRequest, ModelResponse, ToolCall, ToolSpec, Usage
from ._models import MODEL_CAPABILITY, MODEL_EFFECT, Models, ModelSpec, digest_messages
from ._providers import AnthropicProvider, OpenAIProvider, Provider, ScriptedProvider
from ._tools import Tool, tool

__all__ = ["Message", "ModelRequest", "ModelResponse", "ToolCall", "ToolSpec", "Usage",
           "Provider", "OpenAIProvider", "AnthropicProvider", "ScriptedProvider",
           "Models", "ModelSpec", "MODEL_EFFECT", "MODEL_CAPABILITY", "digest_messages",
           "Tool", "tool"]
