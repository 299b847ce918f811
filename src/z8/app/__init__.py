"""Applications: a router over durable agent types, one supervisor per type.

``Router`` says which agent type (and identity) each command goes to;
``Application(router, journal)`` activates agents on demand and ``dispatch``es commands.
"""

from ._application import Application
from ._handlers import EventHandler, Retry, Skip, Stop, Verdict
from ._middleware import log_commands, validate_commands
from ._router import Middleware, Route, Router
from ._tuning import FLEET_GC_THRESHOLDS, tune_gc

__all__ = [
    "Application",
    "EventHandler",
    "Middleware",
    "Retry",
    "Route",
    "Router",
    "Skip",
    "Stop",
    "Verdict",
    "FLEET_GC_THRESHOLDS",
    "tune_gc",
    "log_commands",
    "validate_commands",
]
