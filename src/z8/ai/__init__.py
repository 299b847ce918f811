"""AI agents: durable runs whose model calls and tool calls are effects.

``Agent`` (its runs, events and state), ``Models`` and the providers (over httpx, carried
by ``PooledTransport``), ``tool``, the strategies and the router, and the runs seen from
outside: ``await_run``, ``runs``, ``replay``, ``fork``.
"""

from ._messages import Message, ModelRequest, ModelResponse, ToolCall, ToolSpec, Usage
from ._models import MODEL_CAPABILITY, MODEL_EFFECT, Models, ModelSpec, digest_messages
from ._http import PooledTransport
from ._providers import AnthropicProvider, OpenAIProvider, Provider, ScriptedProvider
from ._tools import Tool, tool
from ._agent import Agent, route
from ._events import (
    CallsIssued, ModelStep, RunFinished, RunForked, RunStarted, RunState, RunTimedOut, StrategyAdvanced,
    StrategyChosen, ToolStep,
)
from ._run import ReplayReport, RunResult, RunStatus, await_run, fork, replay, run_status, runs
from ._strategies import (
    Ask, ChainOfThought, Done, ExactSearch, GraphOfThought, OneShot, ReAct, RunView, SelfRefine, Step, Strategy,
    TreeOfThought,
)

__all__ = ["Message", "ModelRequest", "ModelResponse", "ToolCall", "ToolSpec", "Usage",
           "Provider", "OpenAIProvider", "AnthropicProvider", "ScriptedProvider", "PooledTransport",
           "Models", "ModelSpec", "MODEL_EFFECT", "MODEL_CAPABILITY", "digest_messages",
           "Tool", "tool",
           "Agent", "route", "RunState", "RunStarted", "RunForked", "StrategyChosen", "StrategyAdvanced",
           "CallsIssued", "ModelStep", "ToolStep", "RunFinished", "RunTimedOut",
           "RunResult", "RunStatus", "ReplayReport", "await_run", "run_status", "runs", "replay", "fork",
           "Strategy", "Ask", "Done", "Step", "RunView", "OneShot", "ChainOfThought", "ReAct", "TreeOfThought",
           "GraphOfThought", "ExactSearch", "SelfRefine"]
