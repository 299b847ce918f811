"""Actors: isolated state behind a bounded mailbox, one message at a time.

``Actor`` is the class you subclass; ``ActorRef`` is how others reach it (``tell``,
``try_tell``, ``ask``, ``stop``); ``ThreadActor`` is the same with plain blocking hooks, each
incarnation on a thread of its own; ``Machine`` declares the explicit state machine an
actor moves through; ``Agent`` is the durable, event-sourced actor whose state is its
journal stream (``decide``/``evolve``). Actors live in supervision trees (``z8.supervision``) run by a
``z8.Runtime``.
"""

from ._actor import Actor, ActorContext, ActorRef
from ._agent import Agent, CommandContext, Decision, Rejection, fold, reject
from ._core import DeadLetter
from ._machine import Machine
from ._system import SYSTEM_STREAM, register_system_types
from ._thread import ThreadActor, ThreadContext

__all__ = [
    "Actor",
    "ActorContext",
    "ActorRef",
    "Agent",
    "CommandContext",
    "Decision",
    "Rejection",
    "fold",
    "reject",
    "DeadLetter",
    "Machine",
    "SYSTEM_STREAM",
    "ThreadActor",
    "ThreadContext",
    "register_system_types",
]
