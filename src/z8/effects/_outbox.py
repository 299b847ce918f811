"""The outbox: runs journaled effect intents, records their outcomes, fires durable timers.

One outbox per journal runs effects (an exclusive lock file in the journal directory
decides which process; the others stand by and take over when it dies). It follows the
journal: every ``z8.EffectIntended`` committed by an agent (or ``app.enqueue``) is seen,
run under its effect's contract, and its outcome handed to the owning agent, which
journals it and decides on it in one atomic append. Because the outbox's knowledge is
folded from the journal alone, a restart rebuilds it by reading the records from the
oldest unresolved one (a durable cursor, ``z8.outbox``) onwards, and then:

- an intent with no outcome is **resolved**: by the effect's ``resolve`` status query
  (same key) when it has one; re-issued with the same key when it is idempotent or a
  ``read``; otherwise parked as ``stuck`` for a human — an irreversible effect without an
  idempotency guarantee is never re-fired on its own;
- an effect awaiting approval stays parked (its approval timeout re-armed);
- dead-lettered and stuck effects are listed until a human redrives or settles them;
- timers are re-armed, and those that fell due while nothing ran fire at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import heapq
import itertools
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgspec
import structlog

from z8.actors._agent import CommandContext
from z8.actors._ledger import (
    DEAD,
    INTENDED,
    PARKED,
    RECORD_TYPES,
    STUCK,
    UNKNOWN,
    Call,
    Deliver,
    EffectApproved,
    EffectFailed,
    EffectIntended,
    EffectRecord,
    EffectRedriven,
    EffectRetrying,
    EffectStuck,
    EffectSucceeded,
    EffectUnknown,
    Ledger,
    OutboxStarted,
    OutboxStopped,
    TimerCancelled,
    TimerFired,
    TimerSet,
    admissible,
    status_after,
)
from z8.errors import (
    EffectNotFound,
    EffectStateError,
    InvalidArgument,
    InvalidEffect,
    SubjectErased,
    WrongExpectedVersion,
    Z8Error,
)
from z8.ids import uuid7
from z8.journal import NO_STREAM, Envelope, Journal
from z8.policies import Allow, Deny, EffectRequest, Gate, RequireApproval, Verdict

from ._effect import NOT_FOUND, Effect, EffectContext, Queue, classify

__all__ = ["Outbox", "EffectView", "JOBS_PREFIX", "CURSOR"]

JOBS_PREFIX = "$jobs/"
OUTBOX_STREAM = "$outbox"
CURSOR = "z8.outbox"
_RECORD_NAMES = frozenset(RECORD_TYPES)
_SETTLING = ("z8.EffectSucceeded", "z8.EffectFailed", "z8.EffectStuck", "z8.EffectRedriven")
_log = structlog.get_logger("z8.effects")

Send = Callable[[str, Deliver], Awaitable[bool]]
"""How the outbox hands a Deliver to the agent at an actor path (the application's router)."""


class EffectView(msgspec.Struct, frozen=True):
    """An effect without a final outcome, as listed by ``app.dead_letters()``/``app.stuck()``."""

    effect_id: str
    effect: str
    kind: str
    status: str
    stream: str
    owner: str
    request: Any
    attempts: int
    last_error: str
    position: int
    """The global position of its intent."""


class _Item:
    """What the outbox knows about one effect without a final outcome."""

    __slots__ = ("effect_id", "stream", "owner", "intent", "event_id", "correlation_id", "position",
                 "status", "attempts", "last_error", "running", "rerun", "recovering", "approvals", "queued",
                 "in_flight", "unstarted", "started")

    def __init__(self, envelope: Envelope, intent: EffectIntended) -> None:
        self.effect_id = intent.effect_id
        self.stream = envelope.stream
        self.owner = envelope.actor or ""
        self.intent = intent
        self.event_id = envelope.event_id
        self.correlation_id = envelope.correlation_id
        self.position = envelope.position
        self.status: str | None = status_after(None, intent)
        self.attempts = 0
        self.last_error = ""
        self.running = False
        self.rerun = False
        self.recovering = False
        self.queued = False
        self.in_flight = False
        self.unstarted = False
        self.started = 0.0  # monotonic time of the first attempt (what a seconds budget charges)
        self.approvals: set[str] = set()

    def view(self) -> EffectView:
        return EffectView(self.effect_id, self.intent.effect, self.intent.kind, self.status or "", self.stream,
                          self.owner, self.intent.request, self.attempts, self.last_error, self.position)


class _Lane:
    """A queue's waiting line: priority, then age; concurrency and a start rate."""

    def __init__(self, queue: Queue, start: Callable[[_Item], Awaitable[None]]) -> None:
        self.queue = queue
        self._start = start
        self._heap: list[tuple[int, int, _Item]] = []
        self._running = 0
        self._tokens = 1.0  # no burst: at most ``rate`` starts in any second
        self._refilled = 0.0
        self._pending_pump: asyncio.TimerHandle | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def submit(self, item: _Item) -> None:
        item.queued = True
        heapq.heappush(self._heap, (-item.intent.priority, item.position, item))
        self._pump()

    def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        limit, rate = self.queue.concurrency, self.queue.rate
        while self._heap and (limit is None or self._running < limit):
            if rate is not None:
                now = loop.time()
                self._tokens = min(1.0, self._tokens + (now - self._refilled) * rate)
                self._refilled = now
                if self._tokens < 1.0:
                    if self._pending_pump is None:
                        wait = (1.0 - self._tokens) / rate
                        self._pending_pump = loop.call_later(wait, self._repump)
                    return
                self._tokens -= 1.0
            _, _, item = heapq.heappop(self._heap)
            self._running += 1
            task = loop.create_task(self._start(item))
            self.tasks.add(task)
            task.add_done_callback(self._done)

    def _repump(self) -> None:
        self._pending_pump = None
        self._pump()

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self._running -= 1
        self._pump()

    def close(self) -> None:
        if self._pending_pump is not None:
            self._pending_pump.cancel()
        self._heap.clear()


class Outbox:
    """The effect executor of one application (internal: users call the application).

    ``send(path, deliver)`` hands a runtime message to the agent at ``path`` and returns
    whether it journaled it. ``clock`` is the runtime clock (Unix ns); a clock offering
    ``watch(callback)`` (like ``z8.testing.FakeClock``) wakes timers when it jumps.
    """

    def __init__(
        self,
        journal: Journal,
        send: Send,
        *,
        clock: Callable[[], int],
        effects: Iterable[Effect] = (),
        queues: Iterable[Queue] = (),
        gate: Gate | None = None,
        seed: int | None = None,
    ) -> None:
        self.journal = journal
        self._send = send
        self.clock = clock
        self.gate = gate
        self.effects: dict[str, Effect] = {}
        self._queues: dict[str, Queue] = {}
        for queue in queues:
            if not isinstance(queue, Queue):
                raise InvalidArgument(f"queues take z8.effects.Queue values, got {type(queue).__name__}")
            self._queues[queue.name] = queue
        for eff in effects:
            self.register(eff)
        self._lanes: dict[str, _Lane] = {}
        self._items: dict[str, _Item] = {}
        self._timers: dict[tuple[str, str], tuple[int, str, int]] = {}  # (stream, id) → (due, owner, position)
        self._heap: list[tuple[int, int, str, Any]] = []
        self._seq = itertools.count()
        self._waiters: dict[str, list[asyncio.Future[EffectRecord]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._rng = random.Random(seed)
        self._head = 0
        self._position = 0
        self._acked = 0
        self._lock_fd: int | None = None
        self._closing = False
        self.active = False
        """True once this process holds the outbox lease and runs effects."""
        self.on_start: list[Callable[[], Awaitable[None]]] = []
        """Called once the outbox is running (schedules arm themselves here)."""

    # --- declarations ---------------------------------------------------------------------

    def register(self, eff: Effect) -> None:
        """Make ``eff`` (and its compensation) runnable here; names must be unique."""
        if not isinstance(eff, Effect):
            raise InvalidEffect(f"declare effects with @z8.effects.effect; got {type(eff).__name__}")
        known = self.effects.get(eff.name)
        if known is not None and known is not eff:
            raise InvalidEffect(f"two different effects are named {eff.name!r}; effect names must be unique")
        self.effects[eff.name] = eff
        if eff.own_queue is not None:
            self._queues[eff.own_queue.name] = eff.own_queue
        elif eff.queue is not None and eff.queue not in self._queues:
            self._queues[eff.queue] = Queue(eff.queue)
        if eff.compensation is not None:
            self.register(eff.compensation)

    def effect(self, ref: Any) -> Effect:
        """The registered effect ``ref`` names (an Effect or its name); InvalidEffect if none."""
        name = ref.name if isinstance(ref, Effect) else ref
        eff = self.effects.get(name) if isinstance(name, str) else None
        if eff is None or (isinstance(ref, Effect) and eff is not ref):
            raise InvalidEffect(
                f"effect {name!r} is not registered with this application; list it in the agent's "
                "agent_effects or in Application(effects=[...])"
            )
        return eff

    def check_queue(self, name: str) -> None:
        """InvalidEffect unless queue ``name`` is declared."""
        if name not in self._queues:
            raise InvalidEffect(f"queue {name!r} is not declared; pass Application(queues=[Queue({name!r}, ...)])")

    def intent(
        self, agent: str, cctx: CommandContext, call: Any, effect_id: str, *,
        not_before: int | None = None, queue: str | None = None, priority: int = 0, compensates: str | None = None,
        policy: str = "",
    ) -> EffectIntended:
        """The journal record of ``call``, with the gate's verdict (fails closed).

        ``policy`` is the version the agent is pinned to. Budget amounts the gate holds
        for it are given back by :meth:`discard` if the record is never journaled.
        """
        if not isinstance(call, Call):
            raise InvalidEffect(f"effects are z8.Call(effect, request) values, got {type(call).__name__}")
        eff = self.effect(call.effect)
        raw = eff.encode_request(call.request, self.journal.personal)
        queue = queue if queue is not None else eff.queue
        if queue is not None:
            self.check_queue(queue)
        verdict = self._judge(EffectRequest(
            agent, cctx.stream, eff.name, eff.kind, call.request, eff.capability, effect_id,
            cctx.correlation_id or cctx.command_id, policy, eff.timeout, compensates is not None, cctx.now,
        ))
        fields: dict[str, Any] = {}
        if isinstance(verdict, Deny):
            fields = {"verdict": "deny", "reason": verdict.reason, "error": verdict.error or "PolicyDenied"}
        elif isinstance(verdict, RequireApproval):
            fields = {"verdict": "approval", "approvers": list(verdict.approvers), "quorum": verdict.quorum,
                      "approval_timeout": verdict.timeout, "budgets": verdict.budgets}
        else:
            fields = {"budgets": verdict.budgets}
        return EffectIntended(
            effect_id, eff.name, eff.kind, raw, eff.idempotent, rule=verdict.rule,
            policy_version=verdict.policy_version, not_before=not_before, queue=queue, priority=priority,
            compensates=compensates, decided_at=cctx.now, capability=eff.capability, **fields,
        )

    def _judge(self, request: EffectRequest) -> Verdict:
        if self.gate is None:
            return Allow()
        try:
            verdict = self.gate(request)
        except Exception as error:  # a broken gate denies: it never lets an effect through
            return Deny(f"the policy gate raised {error!r}")
        if not isinstance(verdict, (Allow, Deny, RequireApproval)):
            return Deny(f"the policy gate returned {type(verdict).__name__}, not a verdict")
        return verdict

    def discard(self, records: Iterable[Any]) -> None:
        """Intents that were never journaled (their decision's append was refused): give
        back what the gate held for them."""
        release = getattr(self.gate, "discard", None)
        if release is None:
            return
        for record in records:
            if type(record) is EffectIntended and record.budgets:
                release(record.effect_id)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Take the lease (or stand by for it) and begin: recover, then follow the journal."""
        self._head = self.journal.head_position()
        if self._try_lease():
            await self._begin()
        else:
            self._spawn(self._standby())

    async def _standby(self) -> None:
        while not self._closing:
            await asyncio.sleep(0.5)
            if self._try_lease():
                self._head = self.journal.head_position()
                await self._begin()
                return

    def _try_lease(self) -> bool:
        directory = getattr(self.journal, "path", None)
        if directory is None:  # an in-memory journal belongs to this process alone
            return True
        try:
            fd = os.open(os.path.join(directory, "outbox.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                return True  # a read-only journal directory: nothing here can append anyway
            _log.warning("outbox.no_lease", journal=directory, error=repr(error))
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    async def _begin(self) -> None:
        start = self.journal.cursor(CURSOR) + 1
        async for envelope in self.journal.iter_all(start):
            if envelope.position > self._head:
                break
            if envelope.type in _RECORD_NAMES:
                self._observe(envelope, self.journal.decode(envelope), live=False)
        self._position = self._acked = self._head
        self.active = True
        await self.journal.append(OUTBOX_STREAM, [OutboxStarted()], actor="$outbox", allow_reserved=True)
        self._recover()
        self._spawn(self._follow())
        self._spawn(self._clock_loop())
        self._spawn(self._checkpoint_loop())
        watch = getattr(self.clock, "watch", None)
        if callable(watch):
            loop = asyncio.get_running_loop()
            watch(lambda: loop.call_soon_threadsafe(self._wake.set))
        for hook in self.on_start:
            await hook()

    async def aclose(self, grace: float = 5.0) -> None:
        """Let running effects finish (up to ``grace`` seconds), then stop and checkpoint."""
        self._closing = True
        running = [t for lane in self._lanes.values() for t in lane.tasks]
        if running:
            await asyncio.wait(running, timeout=grace)
        for lane in self._lanes.values():
            lane.close()
            for task in lane.tasks:
                task.cancel()
        in_flight = {item.effect_id for item in self._items.values() if item.in_flight}
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *(t for lane in self._lanes.values() for t in lane.tasks),
                             return_exceptions=True)
        if self.active and not self.journal.closed:
            unstarted = [item.effect_id for item in self._items.values()
                         if item.status == INTENDED and item.effect_id not in in_flight]
            with contextlib.suppress(Z8Error):
                await self.journal.append(OUTBOX_STREAM, [OutboxStopped(unstarted)], actor="$outbox",
                                          allow_reserved=True)
                await self._checkpoint()
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.cancel()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- following the journal ------------------------------------------------------------

    async def _follow(self) -> None:
        async with self.journal.subscribe(self._head + 1, types=_RECORD_NAMES) as records:
            async for envelope in records:
                self._position = envelope.position
                try:
                    self._observe(envelope, self.journal.decode(envelope), live=True)
                except Exception:  # one bad record must not stop every effect
                    _log.exception("outbox.observe_failed", position=envelope.position)

    def _observe(self, envelope: Envelope, record: Any, *, live: bool) -> None:
        kind = type(record)
        if kind is OutboxStopped or kind is OutboxStarted:
            # after a clean stop, what had no attempt in flight is known not to have run; a
            # later start voids that (what it began may have run before a crash)
            unstarted = set(record.unstarted) if kind is OutboxStopped else set()
            for item in self._items.values():
                item.unstarted = item.effect_id in unstarted
            return
        if kind is EffectIntended:
            item = _Item(envelope, record)
            self._items[item.effect_id] = item
            if live:
                self._act(item)
            return
        if kind is TimerSet:
            self._arm_timer(envelope.stream, record.timer_id, record.due, envelope.actor or "", envelope.position)
            return
        if kind is TimerFired or kind is TimerCancelled:
            self._timers.pop((envelope.stream, record.timer_id), None)
            return
        effect_id = getattr(record, "effect_id", None)
        item = self._items.get(effect_id) if effect_id is not None else None
        if item is None:
            return
        if kind is EffectRetrying:
            item.attempts = max(item.attempts, record.attempt)
            item.last_error = f"{record.error}: {record.message}"
        elif kind is EffectFailed:
            item.attempts = max(item.attempts, record.attempts)
            item.last_error = f"{record.error}: {record.message}"
        elif kind is EffectApproved and record.approve:
            item.approvals.add(record.by)
        elif kind is EffectStuck:
            item.last_error = record.reason
        elif kind is EffectUnknown:
            item.attempts = max(item.attempts, record.attempts)
        before = item.status
        item.status = status_after(item.status, record)
        if item.status is None or item.status in (DEAD, STUCK):
            if item.status is None:
                del self._items[effect_id]
            for future in self._waiters.pop(effect_id, ()):
                if not future.done():
                    future.set_result(record)
            if item.status is None:
                return
        if kind is EffectRedriven:
            item.attempts = 0
        if live and item.status == INTENDED and before != INTENDED:
            self._act(item)  # approved, or redriven

    def _recover(self) -> None:
        now = self.clock()
        recovering: list[str] = []
        for item in list(self._items.values()):
            if item.status == PARKED:
                self._arm_approval(item)
            elif item.status == INTENDED and (item.intent.verdict == "deny"
                                              or (item.intent.not_before or 0) > now):
                self._act(item)  # it cannot have run: carry on as if live
            elif item.status == INTENDED and item.unstarted:
                self._act(item)  # stopped cleanly before it ever ran
            elif item.status in (INTENDED, UNKNOWN):
                recovering.append(item.effect_id)
                item.recovering = True
                self._lane(item).submit(item)
        if recovering:
            _log.warning("outbox.recovering", count=len(recovering), effects=recovering[:20])

    def _act(self, item: _Item) -> None:
        if item.status == PARKED:
            self._arm_approval(item)
            return
        if item.intent.verdict == "deny" and not item.approvals:
            self._spawn(self._finish(item, EffectFailed(item.effect_id, item.intent.effect,
                                                        item.intent.error or "PolicyDenied", item.intent.reason, 0)))
            return
        not_before = item.intent.not_before
        if not_before is not None and not_before > self.clock():
            self._push(not_before, "start", item.effect_id)
            return
        self._lane(item).submit(item)

    def _lane(self, item: _Item) -> _Lane:
        name = item.intent.queue or ""
        lane = self._lanes.get(name)
        if lane is None:
            queue = self._queues.get(name) or Queue(name or "default")
            lane = self._lanes[name] = _Lane(queue, self._run)
        return lane

    # --- running an effect ----------------------------------------------------------------

    async def _run(self, item: _Item) -> None:
        item.queued = False
        if self._closing or self._items.get(item.effect_id) is not item or item.status not in (INTENDED, UNKNOWN):
            return  # settled, parked or redriven meanwhile: nothing (more) to run
        if item.running:  # the previous run is still returning: run again once it has
            item.rerun = True
            return
        item.running = True
        recovering, item.recovering = item.recovering, False
        try:
            eff = self.effects.get(item.intent.effect)
            if eff is None:
                await self._finish(item, EffectStuck(item.effect_id, item.intent.effect,
                                                     "the effect is not registered in this application"))
                return
            if recovering and not await self._resolve(item, eff, after="a restart"):
                return
            await self._attempts(item, eff)
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("outbox.run_failed", effect_id=item.effect_id)
        finally:
            item.running = False
            if item.rerun:
                item.rerun = False
                if item.status == INTENDED and not self._closing:
                    self._lane(item).submit(item)

    async def _attempts(self, item: _Item, eff: Effect) -> None:
        request = eff.decode_request(item.intent.request, self.journal.personal)
        while not self._closing:
            item.attempts += 1
            if not item.started:
                item.started = time.monotonic()
            ctx = EffectContext(item.effect_id, eff.name, item.attempts, item.stream)
            item.in_flight = True
            try:
                result = await eff.call(eff.fn, request, ctx)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                verdict = classify(error, eff.retry)
                item.in_flight = verdict == "unknown"  # otherwise it certainly did not take effect
                if verdict == "unknown" and eff.safe_to_reissue:
                    verdict = "retry"
                    unknown_cause = True
                else:
                    unknown_cause = False
                name, text = type(error).__name__, str(error)[:500]
                item.last_error = f"{name}: {text}"
                if verdict == "retry" and item.attempts < eff.retry.attempts:
                    delay = eff.retry.backoff.delay(item.attempts, self._rng)
                    if not await self._deliver(item, [EffectRetrying(item.effect_id, eff.name, item.attempts, name,
                                                                     text, delay)], None):
                        return  # settled by someone else meanwhile
                    await asyncio.sleep(delay)
                    continue
                if verdict == "retry" and not unknown_cause:
                    await self._finish(item, EffectFailed(item.effect_id, eff.name, name, text, item.attempts,
                                                          exhausted=True))
                    _log.warning("effect.dead_lettered", effect_id=item.effect_id, error=item.last_error)
                    return
                if verdict == "fail":
                    await self._finish(item, EffectFailed(item.effect_id, eff.name, name, text, item.attempts))
                    return
                # the request may have taken effect: record that we do not know, then find out
                if not await self._finish(item, EffectUnknown(item.effect_id, eff.name, f"{name}: {text}",
                                                              item.attempts)):
                    return
                if not await self._resolve(item, eff, after=f"{name}: {text}"):
                    return
                if item.attempts >= eff.retry.attempts:
                    await self._stuck(item, eff, f"outcome still unknown after {item.attempts} attempts "
                                                 f"({name}: {text})")
                    return
                await asyncio.sleep(eff.retry.backoff.delay(item.attempts, self._rng))
                continue
            await self._finish(item, self._succeeded(item, eff, result))
            return

    def _succeeded(self, item: _Item, eff: Effect, result: Any, *, resolved: bool = False) -> EffectRecord:
        """The success record of ``result``; a failure when its personal data belongs to a
        subject erased meanwhile (the journal will not hold it, and asking again cannot help)."""
        try:
            encoded = eff.encode_result(result, self.journal.personal)
        except SubjectErased as erased:
            return EffectFailed(item.effect_id, eff.name, "SubjectErased",
                                f"the result was not recorded: {erased}", max(item.attempts, 1))
        return EffectSucceeded(item.effect_id, eff.name, encoded, max(item.attempts, 1), resolved=resolved)

    async def _resolve(self, item: _Item, eff: Effect, *, after: str) -> bool:
        """Learn the outcome of an attempt that may have taken effect; True: run it (again)."""
        if eff.resolve is not None:
            request = eff.decode_request(item.intent.request, self.journal.personal)
            for attempt in range(1, eff.retry.attempts + 1):
                ctx = EffectContext(item.effect_id, eff.name, attempt, item.stream)
                try:
                    found = await eff.call(eff.resolve, request, ctx)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    item.last_error = f"resolve: {type(error).__name__}: {error}"
                    if attempt < eff.retry.attempts:
                        await asyncio.sleep(eff.retry.backoff.delay(attempt, self._rng))
                    continue
                if found is NOT_FOUND:
                    if eff.kind != "irreversible" or eff.idempotent:
                        return True  # the counterparty never saw it: safe to issue, same key
                    await self._stuck(item, eff, f"after {after}, resolve found no record of the key; an "
                                                 "irreversible effect without idempotency is not re-fired on its own")
                    return False
                await self._finish(item, self._succeeded(item, eff, found, resolved=True))
                return False
            await self._stuck(item, eff, f"after {after}, resolve kept failing ({item.last_error})")
            return False
        if eff.safe_to_reissue:
            return True
        await self._stuck(item, eff, f"outcome unknown after {after}; {eff.kind} effect without idempotency "
                                     "or resolve: a human must redrive or settle it")
        return False

    async def _stuck(self, item: _Item, eff: Effect, reason: str) -> None:
        _log.error("effect.stuck", effect_id=item.effect_id, reason=reason)
        await self._finish(item, EffectStuck(item.effect_id, eff.name, reason))

    # --- recording outcomes ---------------------------------------------------------------

    async def _record(self, item: _Item, record: EffectRecord) -> None:
        """Journal a record about ``item`` that ``decide`` does not see."""
        await self._deliver(item, [record], None)

    async def _finish(self, item: _Item, record: EffectRecord, *, lead: list[EffectRecord] = ()) -> bool:  # type: ignore[assignment]
        """Journal an outcome and let the owner decide on it, atomically."""
        message: Any = record
        if type(record) is EffectSucceeded and item.intent.budgets:
            record = self._charged(item, record)
        if type(record) is EffectSucceeded:
            eff = self.effects.get(item.intent.effect)
            if eff is not None:
                message = msgspec.structs.replace(record, result=eff.decode_result(record.result, self.journal.personal))
        return await self._deliver(item, [*lead, record], message)

    def _charged(self, item: _Item, record: EffectSucceeded) -> EffectSucceeded:
        """``record`` with the real cost of the effect for each budget that held for it."""
        # not measured when no attempt ran here (an outcome learnt after a restart, or a
        # human's settlement): a time budget is then charged its reservation
        elapsed = time.monotonic() - item.started if item.started and record.settled_by is None else None
        measure = getattr(self.gate, "charges", None)
        charged = measure(item.intent, record.result, elapsed) if measure is not None else dict(item.intent.budgets)
        return msgspec.structs.replace(record, charged=charged, elapsed=round(elapsed or 0.0, 6))

    async def _deliver(self, item: _Item, records: list[EffectRecord], message: Any) -> bool:
        if not item.owner or item.stream.startswith(JOBS_PREFIX):
            return await self._append_job(item, records)
        return await self._hand(item.owner, Deliver(records, message, item.event_id, item.correlation_id))

    async def _hand(self, owner: str, deliver: Deliver) -> bool:
        """Hand ``deliver`` to the agent at ``owner``, re-activating it while it is restarting."""
        for attempt in range(20):
            try:  # a crash (this message's or another's) is retried: if the records were
                # written, the agent refuses them the second time (returns False)
                return await self._send(owner, deliver)
            except Z8Error as error:
                if self._closing:
                    return False
                _log.warning("outbox.deliver_retry", owner=owner, record=type(deliver.records[0]).__name__,
                             error=repr(error))
            await asyncio.sleep(min(0.01 * 2 ** attempt, 1.0))
        _log.error("outbox.deliver_failed", owner=owner, record=deliver.records[0])
        return False

    async def _append_job(self, item: _Item, records: list[EffectRecord]) -> bool:
        """A job's stream has no agent: check and append here, as an agent would."""
        for _ in range(5):
            ledger, version = Ledger(), 0
            for envelope in self.journal.read_stream(item.stream):
                ledger.apply(self.journal.decode(envelope))
                version = envelope.version
            if not admissible(ledger, records[0]):
                return False
            try:
                await self.journal.append(item.stream, records, version, causation_id=item.event_id,
                                          correlation_id=item.correlation_id, actor="$outbox", allow_reserved=True)
                return True
            except WrongExpectedVersion:
                continue
        return False

    # --- timers and deadlines -------------------------------------------------------------

    def _arm_timer(self, stream: str, timer_id: str, due: int, owner: str, position: int) -> None:
        self._timers[(stream, timer_id)] = (due, owner, position)
        self._push(due, "timer", (stream, timer_id, due))

    def _arm_approval(self, item: _Item) -> None:
        timeout = item.intent.approval_timeout
        if timeout is not None:
            self._push(item.intent.decided_at + int(timeout * 1e9), "approval", item.effect_id)

    def _push(self, due: int, kind: str, key: Any) -> None:
        first = not self._heap or due < self._heap[0][0]
        heapq.heappush(self._heap, (due, next(self._seq), kind, key))
        if first:
            self._wake.set()

    async def _clock_loop(self) -> None:
        while True:
            now = self.clock()
            while self._heap and self._heap[0][0] <= now:
                due, _, kind, key = heapq.heappop(self._heap)
                self._fire(kind, key, due)
            delay = (self._heap[0][0] - now) / 1e9 if self._heap else 3600.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(delay, 0.0005)):
                    await self._wake.wait()

    def _fire(self, kind: str, key: Any, due: int) -> None:
        if kind == "timer":
            stream, timer_id, due_at = key
            armed = self._timers.get((stream, timer_id))
            if armed is not None and armed[0] == due_at:
                self._spawn(self._fire_timer(stream, timer_id, armed))
        elif kind == "start":
            item = self._items.get(key)
            if item is not None and item.status == INTENDED:
                self._lane(item).submit(item)
        elif kind == "approval":
            item = self._items.get(key)
            if item is not None and item.status == PARKED:
                self._spawn(self._finish(item, EffectFailed(item.effect_id, item.intent.effect, "ApprovalExpired",
                                                            "no approval before the deadline", 0),
                                         lead=[EffectApproved(item.effect_id, "z8.timeout", False, "timed out")]))
        elif kind == "call":
            self._spawn(key())

    async def _fire_timer(self, stream: str, timer_id: str, armed: tuple[int, str, int]) -> None:
        due, owner, position = armed
        envelope = self.journal.read_all(position, 1)[0]
        record = self.journal.decode(envelope)
        message = self.journal.types.decode(record.message_type, record.message_schema, record.message,
                                            self.journal.personal)
        await self._hand(owner, Deliver([TimerFired(timer_id, due)], message, envelope.event_id,
                                        envelope.correlation_id))

    def call_at(self, due: int, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn()`` once the runtime clock reaches ``due`` (Unix ns)."""
        self._push(due, "call", fn)

    # --- checkpoints ----------------------------------------------------------------------

    def low_water_mark(self) -> int:
        """The position before which the outbox has nothing left to remember."""
        oldest = [item.position for item in self._items.values()]
        oldest.extend(position for _, _, position in self._timers.values())
        return min(oldest) - 1 if oldest else self._position

    async def _checkpoint(self) -> None:
        mark = self.low_water_mark()
        if mark > self._acked:
            self._acked = await self.journal.ack(CURSOR, mark)

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._checkpoint()
            except Z8Error as error:
                _log.warning("outbox.checkpoint_failed", error=repr(error))

    # --- what users and humans do ---------------------------------------------------------

    def item(self, effect_id: str) -> _Item:
        item = self._items.get(effect_id)
        if item is None:
            raise EffectNotFound(f"no effect {effect_id!r} is awaiting an outcome here")
        return item

    async def known(self, effect_id: str, timeout: float = 5.0) -> _Item:
        """The item of ``effect_id``, waiting (up to ``timeout`` s) for this outbox to
        reach its intent when it is journaled but not yet observed (an approval sent
        right after the decision that asked for the effect); EffectNotFound otherwise."""
        item = self._items.get(effect_id)
        if item is not None or not self.active or not isinstance(effect_id, str) or effect_id.count("/") < 2:
            return self.item(effect_id)
        stream, version, _ = effect_id.rsplit("/", 2)
        try:  # the decision's append starts at the id's version: its intent is at or after it
            envelopes = self.journal.read_stream(stream, int(version))
        except (Z8Error, ValueError):
            return self.item(effect_id)
        position = next((e.position for e in envelopes if e.type == "z8.EffectIntended"
                         and self.journal.decode(e).effect_id == effect_id), None)
        if position is None:
            return self.item(effect_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._position < position and not self._closing and loop.time() < deadline:
            await asyncio.sleep(0.005)
        return self.item(effect_id)

    def listing(self, *statuses: str) -> list[EffectView]:
        return [item.view() for item in self._items.values() if item.status in statuses]

    async def approve(self, effect_id: str, by: str, approve: bool, reason: str) -> None:
        item = await self.known(effect_id)
        if item.status != PARKED:
            raise EffectStateError(f"effect {effect_id!r} is {item.status}, not awaiting approval")
        approvers = item.intent.approvers
        if approvers and by not in approvers:
            raise EffectStateError(f"{by!r} may not approve {effect_id!r}; approvers are {approvers}")
        if by in item.approvals:
            raise EffectStateError(f"{by!r} has already approved {effect_id!r}; a quorum needs distinct approvers")
        act = EffectApproved(effect_id, by, approve, reason, final=len(item.approvals) + 1 >= item.intent.quorum)
        if approve:
            item.approvals.add(by)  # now, so a concurrent approval counts this one toward the quorum
            if not await self._deliver(item, [act], None):
                item.approvals.discard(by)
                raise EffectStateError(f"effect {effect_id!r} is no longer awaiting approval")
        elif not await self._finish(item, EffectFailed(effect_id, item.intent.effect, "ApprovalDenied",
                                                       reason or f"denied by {by}", 0), lead=[act]):
            raise EffectStateError(f"effect {effect_id!r} is no longer awaiting approval")

    async def redrive(self, effect_id: str, by: str) -> None:
        item = self.item(effect_id)
        if item.status not in (DEAD, STUCK):
            raise EffectStateError(f"effect {effect_id!r} is {item.status}; only dead-lettered or stuck effects "
                                   "are redriven")
        if not await self._deliver(item, [EffectRedriven(effect_id, by)], None):
            raise EffectStateError(f"effect {effect_id!r} could not be redriven (its owner refused)")

    async def settle(self, effect_id: str, by: str, *, result: Any, error: str | None) -> None:
        item = self.item(effect_id)
        if item.status not in (DEAD, STUCK, UNKNOWN) or (item.status == UNKNOWN and (item.running or item.queued)):
            raise EffectStateError(f"effect {effect_id!r} is {item.status}{' and being resolved' if item.running else ''}; "
                                   "settle only dead-lettered, stuck, or unknown effects no longer being resolved")
        name = item.intent.effect
        if error is None:
            record: EffectRecord = EffectSucceeded(effect_id, name, self.journal.personal.to_builtins(result), item.attempts,
                                                   settled_by=by)
        else:
            record = EffectFailed(effect_id, name, "Settled", error, item.attempts, settled_by=by)
        await self._finish(item, record)

    async def enqueue(self, eff: Any, request: Any, *, key: str | None, delay: float | None, queue: str | None,
                      priority: int, causation_id: str | None = None) -> str:
        """Journal a job (idempotent by ``key``) and return its effect id."""
        key = key if key is not None else uuid7()
        if not isinstance(key, str) or not key:
            raise InvalidArgument(f"a job key is a non-empty str, got {key!r}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise InvalidArgument(f"priority must be an int, got {priority!r}")
        if delay is not None and (isinstance(delay, bool) or not isinstance(delay, (int, float))
                                  or not 0 <= delay <= 3.2e9):
            raise InvalidArgument(f"delay must be seconds from 0 to about a century, got {delay!r}")
        stream = JOBS_PREFIX + key
        effect_id = f"{stream}/1/0"
        now = self.clock()
        cctx = CommandContext(now, uuid7(), stream, 0)
        not_before = now + int(delay * 1e9) if delay else None
        intent = self.intent("$jobs", cctx, Call(eff, request), effect_id, not_before=not_before, queue=queue,
                             priority=priority)
        try:
            await self.journal.append(stream, [intent], NO_STREAM, causation_id=causation_id,
                                      correlation_id=cctx.command_id, actor="$jobs", allow_reserved=True)
        except WrongExpectedVersion:  # already enqueued under this key
            self.discard([intent])
        except BaseException:
            self.discard([intent])
            raise
        return effect_id

    def outcome(self, effect_id: str) -> EffectRecord | None:
        """The settled outcome journaled for ``effect_id``: succeeded, failed (dead-lettered
        included) or stuck. None: none yet, or it was redriven since."""
        stream = effect_id.rsplit("/", 2)[0]
        final: EffectRecord | None = None
        for envelope in self.journal.read_stream(stream):
            if envelope.type in _SETTLING:
                record = self.journal.decode(envelope)
                if record.effect_id == effect_id:
                    final = None if type(record) is EffectRedriven else record
        return final

    async def wait(self, effect_id: str, timeout: float | None) -> EffectRecord:
        """The settled outcome of ``effect_id`` (see :meth:`outcome`), waiting for one."""
        if effect_id not in self._items or self._items[effect_id].status in (DEAD, STUCK):
            final = self.outcome(effect_id)
            if final is not None:
                return final
        future: asyncio.Future[EffectRecord] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(effect_id, []).append(future)
        if effect_id not in self._items:  # it may have finished meanwhile
            final = self.outcome(effect_id)
            if final is not None:
                return final
        return await asyncio.wait_for(future, timeout)
