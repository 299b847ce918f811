"""Supervision as data: child specs, supervisor specs and backoff, validated when built."""

from __future__ import annotations

import random
from typing import Any, Literal

import msgspec

from z8.errors import InvalidSpec

__all__ = ["Backoff", "ChildSpec", "SupervisorSpec", "child", "supervisor", "Strategy", "RestartType"]

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one"]
RestartType = Literal["permanent", "transient", "temporary"]
_STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one")
_RESTARTS = ("permanent", "transient", "temporary")


def _number(owner: str, name: str, value: object, *, minimum: float = 0.0, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value != value or value < minimum:  # NaN too
        kind = "an int" if integer else "a number"
        raise InvalidSpec(f"{owner}: {name} must be {kind} >= {minimum}, got {value!r}")


class Backoff(msgspec.Struct, frozen=True):
    """Delay before restarting a child that keeps crashing.

    The k-th consecutive restart of a child waits ``min(max, min * 2**(k-1))`` seconds,
    spread by ±``jitter`` (a fraction). A child that ran for ``reset_after`` seconds
    (default: the supervisor's ``within``) without crashing starts again at k = 1.
    """

    min: float = 0.0
    """First delay; 0 (the default) restarts at once, every time."""
    max: float = 30.0
    """Longest delay."""
    jitter: float = 0.1
    """Random spread, as a fraction of the delay (0 to 1)."""
    reset_after: float | None = None
    """Seconds of uptime after which the count of consecutive restarts resets."""

    def __post_init__(self) -> None:
        _number("Backoff", "min", self.min)
        _number("Backoff", "max", self.max)
        _number("Backoff", "jitter", self.jitter)
        if self.jitter > 1:
            raise InvalidSpec(f"Backoff: jitter is a fraction between 0 and 1, got {self.jitter}")
        if self.max < self.min:
            raise InvalidSpec(f"Backoff: max ({self.max}) is below min ({self.min})")
        if self.reset_after is not None:
            _number("Backoff", "reset_after", self.reset_after)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before the ``attempt``-th consecutive restart (1-based)."""
        if self.min == 0:
            return 0.0
        base = min(self.max, self.min * 2 ** min(attempt - 1, 60))
        return max(0.0, base * (1 + self.jitter * (2 * rng.random() - 1)))


class ChildSpec(msgspec.Struct, frozen=True):
    """One child of a supervisor: what to start, how to restart it, how long to stop it.

    ``start`` is an ``Actor`` subclass (constructed with ``args``/``kwargs``), a
    ``SupervisorSpec`` (a nested supervisor), or a callable returning an ``Actor``.
    """

    id: str
    start: Any
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    restart: RestartType = "permanent"
    """``permanent``: restarted after a crash; ``transient``: likewise (it differs from
    permanent only for actors that exit normally, which z8 actors do only when
    stopped); ``temporary``: never restarted."""
    shutdown: float | None = 5.0
    """Seconds to wait for a graceful stop before the task is cancelled; None waits as
    long as it takes (``child()`` uses None for nested supervisors, as OTP does)."""
    mailbox_size: int | None = None
    """Overrides the actor class's ``actor_mailbox_size``."""

    def __post_init__(self) -> None:
        check_name(self.id, "ChildSpec.id")
        if self.restart not in _RESTARTS:
            raise InvalidSpec(f"child {self.id!r}: restart must be one of {_RESTARTS}, got {self.restart!r}")
        if self.shutdown is not None:
            _number(f"child {self.id!r}", "shutdown", self.shutdown)
        if self.mailbox_size is not None:
            _number(f"child {self.id!r}", "mailbox_size", self.mailbox_size, minimum=1, integer=True)
        if not (isinstance(self.start, SupervisorSpec) or callable(self.start)):
            raise InvalidSpec(f"child {self.id!r}: start must be an Actor class, a factory or a SupervisorSpec")


class SupervisorSpec(msgspec.Struct, frozen=True):
    """A supervisor: its children (started in order, stopped in reverse), strategy and intensity.

    Past ``max_restarts`` restarts within ``within`` seconds the supervisor stops its
    children and escalates to its parent. With ``simple_one_for_one`` the single child
    spec is a template for children started dynamically (``start_child``).
    """

    children: tuple[ChildSpec, ...] = ()
    strategy: Strategy = "one_for_one"
    max_restarts: int = 3
    within: float = 5.0
    backoff: Backoff = Backoff()

    def __post_init__(self) -> None:
        if self.strategy not in _STRATEGIES:
            raise InvalidSpec(f"strategy must be one of {_STRATEGIES}, got {self.strategy!r}")
        _number("supervisor", "max_restarts", self.max_restarts, integer=True)
        _number("supervisor", "within", self.within)
        if not isinstance(self.backoff, Backoff):
            raise InvalidSpec(f"supervisor: backoff must be a Backoff(min, max, jitter), got {self.backoff!r}")
        if self.within == 0:
            raise InvalidSpec("supervisor: within must be > 0 seconds")
        seen: set[str] = set()
        for spec in self.children:
            if not isinstance(spec, ChildSpec):
                raise InvalidSpec(f"supervisor children must be ChildSpec (use child(...)), got {spec!r}")
            if spec.id in seen:
                raise InvalidSpec(f"two children share the id {spec.id!r}; ids are unique among siblings")
            seen.add(spec.id)
        if self.strategy == "simple_one_for_one" and len(self.children) != 1:
            raise InvalidSpec("simple_one_for_one takes exactly one child spec: the template for dynamic children")


def check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name or "/" in name or len(name) > 200:
        raise InvalidSpec(f"{what} must be a non-empty str without '/' (at most 200 chars), got {name!r}")
    return name


def child(
    start: Any,
    *args: Any,
    id: str | None = None,
    restart: RestartType = "permanent",
    shutdown: float | None | Literal["default"] = "default",
    mailbox_size: int | None = None,
    **kwargs: Any,
) -> ChildSpec:
    """A child spec; ``id`` defaults to the class name in kebab case.

    ``shutdown`` defaults to 5 seconds for actors and to no limit (None) for a nested
    supervisor, which needs the time its own children take to stop.
    """
    if shutdown == "default":
        shutdown = None if isinstance(start, SupervisorSpec) else 5.0
    if id is None:
        base = getattr(start, "__name__", None) or type(start).__name__
        id = "".join("-" + c.lower() if c.isupper() else c for c in base).lstrip("-")
    return ChildSpec(id, start, tuple(args), dict(kwargs), restart, shutdown, mailbox_size)


def supervisor(
    *children: ChildSpec,
    strategy: Strategy = "one_for_one",
    max_restarts: int = 3,
    within: float = 5.0,
    backoff: Backoff | None = None,
) -> SupervisorSpec:
    """A supervisor spec over ``children``."""
    return SupervisorSpec(tuple(children), strategy, max_restarts, within, backoff or Backoff())
