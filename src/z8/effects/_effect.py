"""Effect functions declared once, with their contract.

An effect is the only way an agent touches the world. Its declaration says what kind of
act it is (``read``, ``reversible`` with its compensation, ``irreversible``), how to retry
it, how long an attempt may take, how many may run at once and how fast, whether the
counterparty honours idempotency keys, and how to ask the counterparty what became of a
request (``resolve``). The runtime reads that contract; the agent only returns
``Call(effect, request)``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import typing
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import httpx
import msgspec

from z8.errors import InvalidEffect, InvalidSpec, OutcomeUnknown, PolicyDenied, Retryable, VaultError
from z8.journal import PersonalCodec
from z8.journal._personal import check_type, has_personal
from z8.supervision import Backoff

__all__ = ["Effect", "effect", "Retry", "EffectContext", "NOT_FOUND", "Kind", "Queue", "classify"]

Kind = Literal["read", "reversible", "irreversible"]
_KINDS = ("read", "reversible", "irreversible")


class _NotFound:
    """What ``resolve`` returns when the counterparty has no record of the key."""

    _instance: _NotFound | None = None

    def __new__(cls) -> _NotFound:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NOT_FOUND"


NOT_FOUND: Any = _NotFound()
"""Returned by a ``resolve`` function when the counterparty never saw the request."""


@dataclasses.dataclass(frozen=True)
class Retry:
    """How often, and after which errors, an effect's attempt is retried (same key).

    ``attempts`` counts every try, the first included. Retried: :class:`~z8.errors.Retryable`,
    connection failures before the request left (``httpx.ConnectError``…), HTTP 429 and 503,
    and the exception types in ``on``. An idempotent or ``read`` effect whose answer was
    lost is retried too; any other lost answer is *unknown*, never blindly retried.
    """

    attempts: int = 3
    backoff: Backoff = Backoff(min=0.2, max=30.0, jitter=0.2)
    on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise InvalidSpec(f"Retry: attempts must be an int >= 1, got {self.attempts!r}")
        if not isinstance(self.backoff, Backoff):
            raise InvalidSpec(f"Retry: backoff must be a z8.Backoff, got {type(self.backoff).__name__}")
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in self.on):
            raise InvalidSpec(f"Retry: on must be a tuple of exception types, got {self.on!r}")


@dataclasses.dataclass(frozen=True)
class Queue:
    """A named lane for effects and jobs: at most ``concurrency`` running at once, at
    most ``rate`` starts per second; among waiting items, higher ``priority`` goes first,
    then the oldest."""

    name: str
    concurrency: int | None = None
    rate: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidSpec(f"Queue: name must be a non-empty str, got {self.name!r}")
        if self.concurrency is not None and (isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int)
                                             or self.concurrency < 1):
            raise InvalidSpec(f"Queue {self.name!r}: concurrency must be an int >= 1 or None, got {self.concurrency!r}")
        if self.rate is not None and (isinstance(self.rate, bool) or not isinstance(self.rate, (int, float))
                                      or not self.rate > 0):
            raise InvalidSpec(f"Queue {self.name!r}: rate must be a number > 0 (starts per second) or None, got {self.rate!r}")


class EffectContext(msgspec.Struct, frozen=True):
    """What an effect function is told about the attempt it is making."""

    effect_id: str
    """The effect's id, also its idempotency ``key``: the same on every retry and replay."""
    effect: str
    attempt: int
    stream: str

    @property
    def key(self) -> str:
        """The idempotency key to hand to the counterparty (the effect id)."""
        return self.effect_id


EffectFn = Callable[[Any, EffectContext], Awaitable[Any] | Any]


class Effect:
    """A declared effect: call it only through ``Call(effect, request)`` in a decision
    (or ``app.enqueue``); the runtime runs it under its contract."""

    def __init__(
        self,
        fn: EffectFn,
        *,
        name: str | None = None,
        kind: Kind = "irreversible",
        compensate: Effect | EffectFn | None = None,
        retry: Retry = Retry(),
        timeout: float | None = 30.0,
        idempotent: bool = False,
        resolve: EffectFn | None = None,
        queue: str | None = None,
        concurrency: int | None = None,
        rate: float | None = None,
        capability: str | None = None,
    ) -> None:
        if not callable(fn):
            raise InvalidEffect(f"an effect wraps a function, got {type(fn).__name__}")
        self.name = name or fn.__name__
        label = f"effect {self.name!r}"
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise InvalidEffect(f"{label}: name must be a non-empty str without '/'")
        if kind not in _KINDS:
            raise InvalidEffect(f"{label}: kind must be one of {_KINDS}, got {kind!r}")
        if kind == "reversible" and compensate is None:
            raise InvalidEffect(f"{label}: a reversible effect declares its compensation (compensate=...)")
        if kind != "reversible" and compensate is not None:
            raise InvalidEffect(f"{label}: only a reversible effect has a compensation; declare kind='reversible'")
        if not isinstance(retry, Retry):
            raise InvalidEffect(f"{label}: retry must be a z8.effects.Retry, got {type(retry).__name__}")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            raise InvalidEffect(f"{label}: timeout must be seconds > 0 or None, got {timeout!r}")
        if resolve is not None and not callable(resolve):
            raise InvalidEffect(f"{label}: resolve must be a function (request, ctx) -> result | NOT_FOUND")
        if queue is not None and (concurrency is not None or rate is not None):
            raise InvalidEffect(f"{label}: limits live on the queue; give queue= or concurrency=/rate=, not both")
        if capability is not None and (not isinstance(capability, str) or not capability):
            raise InvalidEffect(f"{label}: capability must be a non-empty str (the name policies grant)")
        self.capability = capability or self.name
        """The name policies grant (default: the effect's name), e.g. ``"bank.wire"``."""
        self.fn = fn
        self.kind: Kind = kind
        self.retry = retry
        self.timeout = timeout
        self.idempotent = bool(idempotent)
        self.resolve = resolve
        if concurrency is not None or rate is not None:
            try:
                self.own_queue: Queue | None = Queue(f"effect:{self.name}", concurrency, rate)
            except InvalidSpec as bad:
                raise InvalidEffect(f"{label}: {bad}") from None
            queue = self.own_queue.name
        else:
            self.own_queue = None
        self.queue = queue
        if isinstance(compensate, Effect) or compensate is None:
            self.compensation = compensate
        else:
            self.compensation = Effect(compensate, name=f"{self.name}.compensate", kind="irreversible",
                                       retry=retry, timeout=timeout, idempotent=idempotent,
                                       capability=f"{self.capability}.compensate")
        self.request_type, self.result_type = _signature(fn, label)
        for tp in (self.request_type, self.result_type):  # z8.Personal fields need a z8.Subject
            check_type(tp, f"{label}: {getattr(tp, '__qualname__', tp)}")

    def __repr__(self) -> str:
        return f"<Effect {self.name} {self.kind}{' idempotent' if self.idempotent else ''}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Refused: an effect runs only as ``Call(effect, request)`` in a decision (or a job),
        where the policy judges it and the journal records it."""
        raise PolicyDenied(
            f"effect {self.name!r} was called directly; return z8.Call({self.name}, request) from decide "
            "instead, so the runtime can check the policy and journal it"
        )

    def resolver(self, fn: EffectFn) -> EffectFn:
        """Decorator: declare this effect's status query (request, ctx) -> result | NOT_FOUND."""
        self.resolve = fn
        return fn

    @property
    def safe_to_reissue(self) -> bool:
        """Whether re-running an attempt whose outcome is unknown cannot do harm twice."""
        return self.idempotent or self.kind == "read"

    def encode_request(self, request: Any, personal: PersonalCodec | None = None) -> Any:
        """The request as journal-ready builtins; raises InvalidEffect for a wrong type.

        ``personal`` (the journal's codec) seals ``z8.Personal`` fields; a request with
        such fields raises ``VaultError`` without it."""
        expected = self.request_type
        if expected is not Any and isinstance(expected, type) and not isinstance(request, expected):
            raise InvalidEffect(
                f"effect {self.name!r} takes a {expected.__name__} request, got {type(request).__name__}"
            )
        try:
            return _to_builtins(request, personal, f"effect {self.name!r}: the request")
        except TypeError as error:
            raise InvalidEffect(f"effect {self.name!r}: request cannot be journaled: {error}") from None

    def decode_request(self, raw: Any, personal: PersonalCodec | None = None) -> Any:
        """The request from its journaled builtins (``personal`` opens ``z8.Personal``
        fields; they read as ``z8.ERASED`` once their subject was erased)."""
        if self.request_type is Any:
            return raw
        if personal is not None:
            return personal.convert(raw, self.request_type)
        return msgspec.convert(raw, self.request_type)

    def encode_result(self, result: Any, personal: PersonalCodec | None = None) -> Any:
        """The result as journal-ready builtins, ``z8.Personal`` fields sealed by ``personal``."""
        return _to_builtins(result, personal, f"effect {self.name!r}: the result")

    def decode_result(self, raw: Any, personal: PersonalCodec | None = None) -> Any:
        """The result from its journaled builtins (as is if it does not fit the result type)."""
        if self.result_type is Any or raw is None:
            return raw
        try:
            if personal is not None:
                return personal.convert(raw, self.result_type)
            return msgspec.convert(raw, self.result_type)
        except msgspec.ValidationError:
            return raw

    async def call(self, fn: EffectFn, request: Any, ctx: EffectContext) -> Any:
        """Run ``fn`` (this effect's function or resolver) once, under the timeout."""
        if _is_async(fn):
            if self.timeout is None:
                return await fn(request, ctx)
            async with asyncio.timeout(self.timeout):
                return await fn(request, ctx)
        # A thread cannot be cancelled: past the timeout the attempt is still running, so
        # wait for it to end before reporting the timeout (resolving it while it may still
        # act would invite a second execution).
        thread = asyncio.ensure_future(asyncio.to_thread(fn, request, ctx))
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.shield(thread)
        except TimeoutError:
            await asyncio.gather(thread, return_exceptions=True)
            raise


def _to_builtins(value: Any, personal: PersonalCodec | None, what: str) -> Any:
    if personal is not None:
        return personal.to_builtins(value)
    if has_personal(value):
        raise VaultError(f"{what} holds z8.Personal fields: it is journaled only with the journal's codec")
    return msgspec.to_builtins(value)


@functools.lru_cache(maxsize=None)
def _is_async(fn: EffectFn) -> bool:
    """Whether ``fn`` is a coroutine function (asked once per function, not per attempt)."""
    return inspect.iscoroutinefunction(fn)


def effect(
    fn: EffectFn | None = None,
    *,
    name: str | None = None,
    kind: Kind = "irreversible",
    compensate: Effect | EffectFn | None = None,
    retry: Retry = Retry(),
    timeout: float | None = 30.0,
    idempotent: bool = False,
    resolve: EffectFn | None = None,
    queue: str | None = None,
    concurrency: int | None = None,
    rate: float | None = None,
    capability: str | None = None,
) -> Any:
    """Declare an effect: ``@effect(kind="irreversible", idempotent=True, resolve=status)``.

    The function takes ``(request, ctx: EffectContext)`` (async, or blocking: then it runs
    in a worker thread) and returns a result the journal can encode. Its type hints name
    the request and result types. The default kind is ``irreversible``, the safest.
    ``capability`` is the name policies grant (default: the effect's name).
    """
    def wrap(f: EffectFn) -> Effect:
        return Effect(f, name=name, kind=kind, compensate=compensate, retry=retry, timeout=timeout,
                      idempotent=idempotent, resolve=resolve, queue=queue, concurrency=concurrency, rate=rate,
                      capability=capability)

    return wrap(fn) if fn is not None else wrap


def _signature(fn: EffectFn, label: str) -> tuple[Any, Any]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: accept anything
        hints = {}
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        params = []
    if len(params) < 1:
        raise InvalidEffect(f"{label}: the function must take (request, ctx)")
    return hints.get(params[0], Any), hints.get("return", Any)


_UNKNOWN = (OutcomeUnknown, TimeoutError, httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError,
            httpx.ReadError, httpx.WriteError)
_RETRY = (Retryable, httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def classify(error: BaseException, retry: Retry) -> Literal["retry", "unknown", "fail"]:
    """Whether a failed attempt may be retried, left the world in an unknown state, or failed."""
    if isinstance(error, _RETRY) or (retry.on and isinstance(error, retry.on)):
        return "retry"
    if isinstance(error, _UNKNOWN):
        return "unknown"
    if isinstance(error, httpx.HTTPStatusError):
        status = error.response.status_code
        if status in (429, 503):
            return "retry"
        return "unknown" if status >= 500 else "fail"
    return "fail"
