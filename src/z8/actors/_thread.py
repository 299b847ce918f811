"""ThreadActor: an actor whose hooks are plain blocking methods, run on a thread of their own.

Each incarnation is hosted on a pykka ``ThreadingActor`` (one thread, started by
``on_start`` and ended after ``on_stop``, ``on_failure`` or the cell's cancellation).
The cell still runs the incarnation as one asyncio task: the hooks it awaits hand the
user's blocking method to the thread and await a future the thread settles through
``loop.call_soon_threadsafe``, so the event loop never waits on blocking code.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future as ThreadFuture
from typing import Any, ClassVar

import pykka

from z8.errors import ActorDied, InvalidArgument, RuntimeNotRunning

from ._actor import Actor, ActorContext

__all__ = ["ThreadActor", "ThreadContext"]

_HOOKS = ("on_start", "receive", "on_stop", "on_failure")
_LAST_HOOKS = ("on_stop", "on_failure")


class ThreadContext(ActorContext):
    """The ``ctx`` a :class:`ThreadActor`'s hooks receive, safe to use from its thread.

    Everything ``ActorContext`` offers works the same. ``transition`` is carried out on
    the runtime's event loop (where a refusal is journaled) while the thread waits;
    :meth:`run` is how blocking code reaches other actors.
    """

    __slots__ = ("_loop",)

    def __init__(self, ctx: ActorContext, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(ctx._cell)  # noqa: SLF001 - the same cell, seen from another thread
        self._loop = loop

    def stop(self) -> None:
        """Stop this actor after the current message, without waiting."""
        if self._on_loop():
            super().stop()
        else:
            _call_on_loop(self._loop, super().stop)

    def transition(self, target: str) -> None:
        """Move the FSM to ``target``, or raise ``TransitionBlocked`` (journaled) if not allowed."""
        if self._on_loop():
            super().transition(target)
        else:
            _call_on_loop(self._loop, super().transition, target)

    def run(self, awaitable: Coroutine[Any, Any, Any]) -> Any:
        """Run a coroutine on the runtime's loop, wait, and return its result (or raise).

        For the actor's own thread: ``ctx.run(ctx.lookup("/app/db").ask(query))``. Asking
        the actor itself this way waits until the ask times out, as it would in async code.
        """
        if self._on_loop():
            awaitable.close()
            raise InvalidArgument("ctx.run() is for a ThreadActor's thread; in async code, await the coroutine")
        return asyncio.run_coroutine_threadsafe(awaitable, self._loop).result()

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False


def _call_on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn`` on ``loop`` from another thread and wait for its result or exception."""
    done: ThreadFuture[Any] = ThreadFuture()

    def call() -> None:
        try:
            done.set_result(fn(*args))
        except BaseException as error:  # noqa: BLE001 - re-raised in the waiting thread
            done.set_exception(error)

    loop.call_soon_threadsafe(call)
    return done.result()


class _Job:
    """One hook call for the thread; its outcome goes back to a future on the loop."""

    __slots__ = ("fn", "args", "future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args, self.loop = fn, args, loop
        self.future: asyncio.Future[Any] = loop.create_future()

    def run(self) -> None:
        try:
            result = self.fn(*self.args)
        except BaseException as error:  # noqa: BLE001 - the cell decides, exactly as for an Actor
            self.settle(None, error)
        else:
            self.settle(result, None)

    def settle(self, result: Any, error: BaseException | None) -> None:
        try:
            self.loop.call_soon_threadsafe(_resolve, self.future, result, error)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return  # the awaiting task was cancelled
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class _Host(pykka.ThreadingActor):
    """The pykka actor that owns the thread; it only runs the jobs its handle sends."""

    use_daemon_thread = True  # a blocking call that never returns must not hold the process open

    def __init__(self, handle: _HostHandle) -> None:
        super().__init__()
        self.handle = handle

    def on_start(self) -> None:
        self.handle.attached()

    def on_receive(self, message: Any) -> None:
        self.handle.run(message)

    def on_stop(self) -> None:
        self.handle.detached()


class _HostHandle:
    """The loop's side of one incarnation's thread: submit jobs, stop it, await its end.

    A lock orders submissions against the thread's end, so a job is either run or
    failed with ``ActorDied`` — never left unanswered — even if something outside z8
    stops the pykka actor (``pykka.ActorRegistry.stop_all()``).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str, path: str) -> None:
        self.loop, self.name, self.path = loop, name, path
        self.ident: int | None = None
        self.thread: threading.Thread | None = None
        self.exited: asyncio.Future[None] = loop.create_future()
        self._lock = threading.Lock()
        self._pending: set[_Job] = set()
        self._closed = False
        self.ref = _Host.start(self)

    # --- the thread's side -----------------------------------------------------------

    def attached(self) -> None:
        self.thread = threading.current_thread()
        self.thread.name = self.name
        self.ident = self.thread.ident

    def run(self, job: _Job) -> None:
        with self._lock:
            self._pending.discard(job)
        job.run()

    def detached(self) -> None:
        with self._lock:
            self._closed = True
            orphans, self._pending = self._pending, set()
        for job in orphans:
            job.settle(None, self._lost())
        try:
            self.loop.call_soon_threadsafe(_resolve, self.exited, None, None)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more

    # --- the loop's side -------------------------------------------------------------

    def on_thread(self) -> bool:
        return self.ident == threading.get_ident()

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        job = _Job(self.loop, fn, args)
        with self._lock:
            if not self._closed:
                self._pending.add(job)
                try:
                    self.ref.tell(job)
                    return job.future
                except pykka.ActorDeadError:
                    self._pending.discard(job)
        job.future.set_exception(self._lost())
        return job.future

    def stop(self) -> None:
        """Ask the thread to end after the jobs already sent (never waits)."""
        self.ref.stop(block=False)

    async def ended(self) -> None:
        """Wait until the thread has ended (after :meth:`stop` and the jobs before it)."""
        await self.exited
        while self.thread is not None and self.thread.is_alive():
            await asyncio.sleep(0.001)  # it has run its last line; this is the moment it needs to exit

    def _lost(self) -> ActorDied:
        return ActorDied(self.path, None, "lost its thread (its pykka actor was stopped from outside z8)")


class ThreadActor(Actor):
    """An actor for blocking code: write the hooks as plain methods; each runs on a thread.

    Subclass it exactly like :class:`Actor` but define ``on_start(self, ctx)``,
    ``receive(self, message, ctx)``, ``on_stop(self, ctx)`` and
    ``on_failure(self, error, ctx)`` with ``def``, not ``async def``; they may block
    (``time.sleep``, a blocking client, a C library). Refs, asks, supervision,
    restarts, dead letters and ``actor_`` settings behave as for ``Actor``, and an
    exception raised by a hook reaches the cell as the very same exception object.

    How: ``__init_subclass__`` replaces each hook a subclass defines (or inherits from a
    mixin) with a bridge the cell can await. Called by the cell, the bridge sends the
    method to the incarnation's thread — a pykka ``ThreadingActor`` started by
    ``on_start`` and ended after ``on_stop``/``on_failure``, or when the cell is
    cancelled — and awaits its result without blocking the event loop. Called from the
    thread itself (``super().receive(message, ctx)``), it runs the method directly.
    Defining a hook with ``async def`` raises ``InvalidArgument`` when the class is made.

    Hooks get a :class:`ThreadContext`: the usual context, plus ``ctx.run(coroutine)``
    to tell or ask other actors from blocking code (``ctx.run(ref.tell(m))``). Refs
    belong to the event loop: do not call ``ref.try_tell`` from the thread, whose
    wake-up of the receiver is not thread-safe. ``__init__`` runs on the event
    loop, so keep it quick and do blocking setup in ``on_start``. A blocking call cannot
    be interrupted: past its shutdown timeout the incarnation is abandoned and its
    (daemon) thread ends as soon as the call returns.
    """

    actor_kind: ClassVar[str] = "thread"
    _actor_host: _HostHandle | None = None
    _actor_ctx: ThreadContext | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _bridge_hooks(cls)

    def on_start(self, ctx: ThreadContext) -> None:  # type: ignore[override]
        """Called on the incarnation's new thread before its first message."""

    def receive(self, message: Any, ctx: ThreadContext) -> Any:  # type: ignore[override]
        """Handle one message on the thread; return the reply (sent back if the message was asked)."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement receive()")

    def on_stop(self, ctx: ThreadContext) -> None:  # type: ignore[override]
        """Called on the thread when the actor stops normally (not after a crash); the thread then ends."""

    def on_failure(self, error: BaseException, ctx: ThreadContext) -> None:  # type: ignore[override]
        """Called on the thread after a crash, before the supervisor decides; the thread then ends."""

    # --- the bridge (internal) ------------------------------------------------------------

    def _actor_call(self, hook: str, blocking: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        host = self._actor_host
        if host is not None and host.on_thread():
            return blocking(self, *args)  # super().hook(...) from the actor's own thread
        if hook == "on_start":
            host = self._actor_open(args[-1])
        elif host is None:
            return self._actor_no_thread(hook)
        call_args = (*args[:-1], self._actor_ctx or args[-1])
        future = host.submit(blocking, self, *call_args)
        if hook in _LAST_HOOKS:
            host.stop()  # queued behind the hook: the thread ends right after it
            return self._actor_last(host, future)
        return future

    def _actor_open(self, ctx: ActorContext) -> _HostHandle:
        loop = asyncio.get_running_loop()
        self._actor_ctx = ThreadContext(ctx, loop)
        self._actor_host = host = _HostHandle(loop, f"z8-thread:{ctx.path}#{ctx.incarnation}", ctx.path)
        task = asyncio.current_task()
        if task is not None:
            # Cancelled or killed by a BaseException, the cell calls no further hook.
            task.add_done_callback(lambda _: host.stop())
        return host

    def _actor_no_thread(self, hook: str) -> Any:
        if hook in _LAST_HOOKS:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)  # it never got a thread (on_start failed to make one)
            return done
        raise RuntimeNotRunning(f"{type(self).__qualname__} has no thread yet: a runtime starts it with on_start()")

    @staticmethod
    async def _actor_last(host: _HostHandle, future: asyncio.Future[Any]) -> Any:
        try:
            result = await future
        except asyncio.CancelledError:
            raise  # killed: the thread ends when the hook returns; nobody waits for it
        except BaseException:
            await host.ended()
            raise
        await host.ended()
        return result


def _bridge_hooks(cls: type[ThreadActor]) -> None:
    """Replace the blocking hooks ``cls`` defines or inherits from mixins with bridges."""
    for hook in _HOOKS:
        blocking = next(vars(klass)[hook] for klass in cls.__mro__ if hook in vars(klass))
        if getattr(blocking, "_z8_blocking", None) is not None:
            continue  # inherited from a ThreadActor class: bridged already
        if not inspect.isfunction(blocking) or inspect.iscoroutinefunction(blocking):
            raise InvalidArgument(
                f"{cls.__qualname__}.{hook} must be a plain method (def, not async def): a ThreadActor's "
                "hooks run on its own thread; subclass Actor for async hooks"
            )
        setattr(cls, hook, _bridge(hook, blocking))


def _bridge(hook: str, blocking: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(blocking)
    def bridge(self: ThreadActor, *args: Any) -> Any:
        return self._actor_call(hook, blocking, args)  # noqa: SLF001

    bridge._z8_blocking = blocking  # type: ignore[attr-defined]
    return bridge


_bridge_hooks(ThreadActor)
