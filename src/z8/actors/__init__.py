"""Actors: isolated state behind a bounded mailbox, one message at a time.

``Actor`` is the class you subclass; ``ActorRef`` is how others reach it (``tell``,
``try_tell``, ``ask``, ``stop``); ``Machine`` declares the explicit state machine an
actor moves through. Actors live in supervision trees (``z8.supervision``) run by a
``z8.Runtime``.
"""

from ._actor import Actor, ActorContext, ActorRef
from ._core import DeadLetter
from ._machine import Machine
from ._system import SYSTEM_STREAM, register_system_types

__all__ = ["Actor", "ActorContext", "ActorRef", "DeadLetter", "Machine", "SYSTEM_STREAM", "register_system_types"]
