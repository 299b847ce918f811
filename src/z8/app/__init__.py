"""Applications: a router over durable agent types, one supervisor per type.

``Router`` says which agent type (and identity) each command goes to;
``Application(router, journal)`` activates agents on demand and ``dispatch``es commands.
"""

from ._application import Application
from ._router import Middleware, Route, Router

__all__ = ["Application", "Middleware", "Route", "Router"]
