"""Durable cron schedules: each firing is a job keyed by (schedule, due time).

A firing enqueues its job with key ``"{schedule}@{due}"`` *before* journaling
``ScheduleFired`` in ``$schedules/{id}``; a crash between the two re-fires the same due
time on restart, and the key makes that enqueue a no-op. So every due time runs at most
once, and none is lost while the process is up. For the due times that passed while
nothing ran, the missed-fire policy decides: ``skip`` them, run the latest ``once``, or
run ``all`` of them (at most ``max_catch_up``).

Cron expressions are parsed by ``croniter`` (maintained under pallets-eco).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import zoneinfo
from typing import TYPE_CHECKING, Any, Literal

import structlog
from croniter import croniter

from z8.actors._ledger import ScheduleFired
from z8.errors import InvalidSchedule, WrongExpectedVersion, Z8Error
from z8.journal import NO_STREAM

from ._effect import Effect

if TYPE_CHECKING:
    from ._outbox import Outbox

__all__ = ["Schedule", "Scheduler", "SCHEDULES_PREFIX"]

_log = structlog.get_logger("z8.effects")

SCHEDULES_PREFIX = "$schedules/"
Missed = Literal["skip", "once", "all"]


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Run ``effect(request)`` as a job at every time ``cron`` names (in ``tz``).

    ``missed`` is what happens to due times that passed while the application was down:
    ``skip`` (the default), ``once`` (run the latest), ``all`` (run each, oldest first,
    at most ``max_catch_up``).
    """

    id: str
    cron: str
    effect: Effect
    request: Any = None
    missed: Missed = "skip"
    queue: str | None = None
    tz: str = "UTC"
    max_catch_up: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id or "@" in self.id:
            raise InvalidSchedule(f"schedule id must be a non-empty str without '@', got {self.id!r}")
        if not isinstance(self.cron, str) or not croniter.is_valid(self.cron):
            raise InvalidSchedule(f"schedule {self.id!r}: {self.cron!r} is not a valid cron expression")
        if not isinstance(self.effect, Effect):
            raise InvalidSchedule(f"schedule {self.id!r}: effect must be a declared z8 effect")
        if self.missed not in ("skip", "once", "all"):
            raise InvalidSchedule(f"schedule {self.id!r}: missed must be 'skip', 'once' or 'all', got {self.missed!r}")
        try:
            zoneinfo.ZoneInfo(self.tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            raise InvalidSchedule(f"schedule {self.id!r}: unknown time zone {self.tz!r}") from None

    def after(self, ns: int) -> int:
        """The first due time strictly after ``ns`` (Unix ns)."""
        start = _dt.datetime.fromtimestamp(ns / 1e9, zoneinfo.ZoneInfo(self.tz))
        return int(croniter(self.cron, start).get_next(float) * 1e9)


class Scheduler:
    """Arms every schedule on the outbox's clock (internal: the application owns it)."""

    def __init__(self, outbox: Outbox, schedules: list[Schedule]) -> None:
        self.outbox = outbox
        self.schedules = schedules

    @staticmethod
    def check(schedules: list[Schedule], queues: set[str]) -> None:
        """Refuse a schedule whose job could never be enqueued (run when the app is built)."""
        for schedule in schedules:
            try:
                schedule.effect.encode_request(schedule.request)
            except Z8Error as bad:
                raise InvalidSchedule(f"schedule {schedule.id!r}: {bad}") from None
            if schedule.queue is not None and schedule.queue not in queues:
                raise InvalidSchedule(f"schedule {schedule.id!r}: queue {schedule.queue!r} is not declared")

    async def start(self) -> None:
        for schedule in self.schedules:
            last = self.outbox.journal.read_stream(SCHEDULES_PREFIX + schedule.id, backward=True, limit=1)
            if not last:  # a new schedule: nothing was missed before it existed
                self._arm(schedule, schedule.after(self.outbox.clock()))
            else:
                await self._catch_up(schedule, self.outbox.journal.decode(last[0]).due)

    async def _catch_up(self, schedule: Schedule, last: int) -> None:
        """Fire what fell due after ``last`` per the missed-fire policy, then arm the next."""
        now = self.outbox.clock()
        missed: list[int] = []
        due = schedule.after(last)
        while due <= now and len(missed) < schedule.max_catch_up:
            missed.append(due)
            due = schedule.after(due)
        if schedule.missed == "once":
            missed = missed[-1:]
        elif schedule.missed == "skip":
            missed = []
        for at in missed:
            await self._fire(schedule, at)
        self._arm(schedule, schedule.after(now) if due <= now else due)

    def _arm(self, schedule: Schedule, due: int) -> None:
        async def fire() -> None:
            try:
                await self._fire(schedule, due)
            except Exception:  # one failed firing must not end the schedule
                _log.exception("schedule.fire_failed", schedule=schedule.id, due=due)
            finally:
                # the clock may have passed more due times while this one fired (a jump,
                # a stalled loop): those are missed ones, handled by the policy
                await self._catch_up(schedule, due)

        self.outbox.call_at(due, fire)

    async def _fire(self, schedule: Schedule, due: int) -> None:
        key = f"{schedule.id}@{due}"
        await self.outbox.enqueue(schedule.effect, schedule.request, key=key, delay=None, queue=schedule.queue,
                                  priority=0)
        stream = SCHEDULES_PREFIX + schedule.id
        journal = self.outbox.journal
        for _ in range(3):
            try:
                await journal.append(stream, [ScheduleFired(schedule.id, due, key)], journal.stream_version(stream) or NO_STREAM,
                                     actor="$scheduler", allow_reserved=True)
                return
            except WrongExpectedVersion:
                continue
