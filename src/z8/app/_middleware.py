"""Middleware shipped with the router: validation and logging (authorization is yours)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import structlog

from z8.errors import InvalidCommand, Z8Error

__all__ = ["validate_commands", "log_commands"]

log = structlog.get_logger("z8.app")


async def validate_commands(command: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
    """Check a command built in Python against its own Struct types (msgspec checks types
    only when decoding), raising ``InvalidCommand`` that names the bad field."""
    if isinstance(command, msgspec.Struct):
        try:
            msgspec.convert(msgspec.to_builtins(command), type(command))
        except (msgspec.ValidationError, TypeError) as exc:
            raise InvalidCommand(f"{type(command).__name__}: {exc}") from exc
    return await call_next(command)


async def log_commands(command: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
    """Log every dispatch through structlog: command type, outcome, milliseconds."""
    start = time.perf_counter()
    try:
        reply = await call_next(command)
    except Z8Error as error:
        log.info("command.refused", command=type(command).__name__, error=type(error).__name__,
                 reason=str(error)[:200], ms=round((time.perf_counter() - start) * 1000, 3))
        raise
    log.debug("command.handled", command=type(command).__name__, ms=round((time.perf_counter() - start) * 1000, 3))
    return reply
