"""The router: which agent type, and which identity, a command goes to."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from z8.actors._agent import Agent
from z8.errors import InvalidCommand, InvalidSpec, Unroutable

__all__ = ["Router", "Route", "Middleware"]

Middleware = Callable[[Any, Callable[[Any], Awaitable[Any]]], Awaitable[Any]]
"""``async def mw(command, call_next) -> reply``: wraps every dispatch (auth, logging…)."""


class Route(msgspec.Struct, frozen=True):
    """Where one command type goes: the agent type, the identity field, the stream prefix."""

    agent: type[Agent]
    by: str
    prefix: str


class Router:
    """Routes command types to agent types (Commanded's ``identify``/``dispatch``).

        router = Router()
        router.identify(Account, by="account_id", prefix="account-")
        router.dispatch(OpenAccount, Deposit, Withdraw, to=Account)
    """

    def __init__(self) -> None:
        self._identities: dict[type[Agent], tuple[str, str]] = {}
        self._routes: dict[type, Route] = {}
        self._by_name: dict[str, type] = {}
        self.middleware: list[Middleware] = []

    def identify(self, agent: type[Agent], *, by: str, prefix: str = "") -> Router:
        """Agents of this type are named ``prefix + str(command.<by>)``."""
        if not (isinstance(agent, type) and issubclass(agent, Agent)):
            raise InvalidSpec(f"identify() takes an Agent subclass, got {agent!r}")
        if not isinstance(by, str) or not by or not isinstance(prefix, str) or "/" in prefix:
            raise InvalidSpec(f"identify({agent.__name__}): by must name a field and prefix hold no '/'")
        self._identities[agent] = (by, prefix)
        return self

    def dispatch(self, *commands: type, to: type[Agent]) -> Router:
        """Send these command types to agent type ``to`` (identified first)."""
        if to not in self._identities:
            raise InvalidSpec(f"identify({to.__name__}, by=...) before dispatching commands to it")
        by, prefix = self._identities[to]
        for command in commands:
            if not (isinstance(command, type) and issubclass(command, msgspec.Struct)):
                raise InvalidSpec(f"commands are msgspec Structs; got {command!r}")
            if by not in command.__struct_fields__:
                raise InvalidSpec(f"{command.__name__} has no field {by!r} to identify {to.__name__} by")
            if command in self._routes:
                raise InvalidSpec(f"{command.__name__} is already routed to {self._routes[command].agent.__name__}")
            self._routes[command] = Route(to, by, prefix)
            self._by_name[command.__name__] = command
        return self

    def use(self, middleware: Middleware) -> Router:
        """Add a middleware; they run in the order added, around the dispatch."""
        self.middleware.append(middleware)
        return self

    @property
    def agents(self) -> list[type[Agent]]:
        return list(self._identities)

    def route(self, command: Any) -> tuple[Route, str]:
        """(route, identity) for a command, or ``Unroutable``."""
        route = self._routes.get(type(command))
        if route is None:
            raise Unroutable(f"no route for {type(command).__name__}; add router.dispatch({type(command).__name__}, to=...)")
        value = getattr(command, route.by)
        if value is None or value == "":
            raise InvalidCommand(f"{type(command).__name__}.{route.by} is empty: it names the agent")
        return route, f"{route.prefix}{value}"

    def parse(self, data: dict[str, Any] | bytes | str, type_name: str | None = None) -> Any:
        """A command from JSON or a dict (``{"type": "Deposit", ...}``), validated by msgspec."""
        if isinstance(data, (bytes, str)):
            try:
                data = msgspec.json.decode(data)
            except msgspec.DecodeError as exc:
                raise InvalidCommand(f"the command is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidCommand(f"a command is a JSON object, got {type(data).__name__}")
        fields = dict(data)
        name = type_name or fields.pop("type", None)
        command_type = self._by_name.get(name) if isinstance(name, str) else None
        if command_type is None:
            raise Unroutable(f"unknown command type {name!r}; known: {sorted(self._by_name)}")
        try:
            return msgspec.convert(fields, command_type)
        except msgspec.ValidationError as exc:
            raise InvalidCommand(f"{name}: {exc}") from exc
