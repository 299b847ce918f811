"""The application: a router over agent types, each under its own supervisor."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from z8.actors._actor import ActorRef
from z8.actors._ledger import RECORD_TYPES, Deliver, EffectRecord, Ledger, PolicyMigrated
from z8.actors._system import register_system_types
from z8.effects import DEAD, STUCK, UNKNOWN, Effect, EffectView, Outbox, Queue, Schedule, Scheduler
from z8.errors import (
    ActorDied,
    AgentError,
    EffectNotFound,
    EffectStateError,
    HandlerStopped,
    InvalidArgument,
    InvalidSpec,
    RuntimeNotRunning,
)
from z8.journal import Envelope, ExpiryReport, Hold, Journal, Retention, TypeRegistry, open_journal
from z8.journal._personal import subject_of
from z8.policies import BudgetBalance, Gate, Policy, PolicyEngine, load_policy
from z8.supervision import Runtime, TreeNode, child, supervisor

from ._audit import Audit
from ._handlers import EventHandler, HandlerRunner
from ._router import Router

__all__ = ["Application"]


def _kebab(name: str) -> str:
    return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")


class Application:
    """Routes commands to durable agents, activating each identity on its first command.

    Every agent type gets a ``simple_one_for_one`` supervisor at ``/{name}/{type}``; an
    agent lives at ``/{name}/{type}/{identity}`` and its stream is its identity. Use as
    an async context manager.

    Effects: the application runs the outbox (:mod:`z8.effects`) for the effects its
    agents list in ``agent_effects`` and those passed as ``effects`` (jobs); ``queues``
    declare concurrency and rate limits, ``schedules`` cron jobs. ``policy`` (a
    :class:`z8.policies.Policy` or the path of a TOML policy) is judged before every
    effect runs: deny by default, verdicts and budgets journaled; it is adopted (journaled
    in ``$policies``) at start when it differs from the version in force. ``gate`` is the
    bare enforcement point instead (a function of ``EffectRequest``). ``retention`` lists
    how long each stream category is kept (see ``expire``). ``clock`` (Unix ns)
    is the runtime clock for ``ctx.now``, timers and delays; tests pass a FakeClock.
    """

    def __init__(
        self,
        router: Router,
        journal: str | os.PathLike[str] | Journal = ".z8",
        *,
        types: TypeRegistry | None = None,
        name: str = "app",
        durability: Literal["sync", "fast"] = "sync",
        max_restarts: int = 100,
        within: float = 1.0,
        handlers: Sequence[EventHandler] = (),
        clock: Callable[[], int] = time.time_ns,
        effects: Sequence[Effect] = (),
        queues: Sequence[Queue] = (),
        schedules: Sequence[Schedule] = (),
        gate: Gate | None = None,
        policy: Policy | str | os.PathLike[str] | None = None,
        retention: Sequence[Retention] = (),
    ) -> None:
        if policy is not None and gate is not None:
            raise InvalidSpec("give policy= or gate=, not both (a policy is the application's gate)")
        if isinstance(policy, (str, os.PathLike)):
            policy = load_policy(Path(policy))
        self.router = router
        self._journal_arg = journal
        self._types = types
        self._durability = durability
        self._owns_journal = not isinstance(journal, Journal)
        self._journal: Journal | None = journal if isinstance(journal, Journal) else None
        self.name = name
        self._paths = {agent: f"/{name}/{_kebab(agent.__name__)}" for agent in router.agents}
        self._specs = [
            child(supervisor(child(agent), strategy="simple_one_for_one", max_restarts=max_restarts, within=within),
                  id=_kebab(agent.__name__))
            for agent in router.agents
        ]
        self.handlers = list(handlers)
        names = [h.handler_name for h in self.handlers]
        if len(set(names)) != len(names):
            raise InvalidSpec(f"event handler names must be unique (they name durable cursors): {names}")
        if self.handlers:
            self._specs.append(child(
                supervisor(*(child(HandlerRunner, h, id=h.handler_name) for h in self.handlers)), id="handlers"
            ))
        self._clock = clock
        self._runtime: Runtime | None = None
        self._effects = [*effects, *(e for agent in router.agents for e in getattr(agent, "agent_effects", ()))]
        self._queues = list(queues)
        self._schedules = list(schedules)
        self._policies = PolicyEngine(policy) if policy is not None else None
        self._gate = gate if gate is not None else self._policies
        self._retention = _check_retention(retention)
        self._agent_at = {path: agent for agent, path in self._paths.items()}
        self._outbox: Outbox | None = None
        if len({s.id for s in self._schedules}) != len(self._schedules):
            raise InvalidSpec(f"schedule ids must be unique: {[s.id for s in self._schedules]}")
        Scheduler.check(self._schedules, {q.name for q in self._queues} | {
            e.queue for e in (*self._effects, *(s.effect for s in self._schedules)) if e.queue is not None})

    async def __aenter__(self) -> Application:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Open the journal (when given a path) and start the supervision tree."""
        if self._journal is None:
            self._journal = open_journal(Path(self._journal_arg), types=self._types, durability=self._durability)  # type: ignore[arg-type]
        # --- ai ---
        for agent in self.router.agents:  # journaled types an agent type declares (z8.ai run events)
            for type_name, cls in getattr(agent, "agent_types", {}).items():
                if cls not in self._journal.types:
                    self._journal.types.register(cls, name=type_name)
        if self._policies is not None:
            register_system_types(self._journal.types)
            await self._policies.start(self._journal)
        self._outbox = Outbox(self._journal, self._send, clock=self._clock, effects=self._effects,
                              queues=self._queues, gate=self._gate)
        for schedule in self._schedules:
            self._outbox.register(schedule.effect)
        if self._schedules:
            self._outbox.on_start.append(Scheduler(self._outbox, self._schedules).start)
        self._runtime = Runtime(self._journal, name=self.name, children=self._specs, clock=self._clock)
        await self._runtime.start()
        self._runtime._core.effects = self._outbox  # noqa: SLF001 - the runtime's outbox
        await self._outbox.start()

    async def aclose(self) -> None:
        """Let running effects finish (a few seconds at most), stop every agent and, if the
        application opened it, close the journal."""
        if self._outbox is not None:
            await self._outbox.aclose()
        if self._runtime is not None:
            await self._runtime.aclose()
        if self._policies is not None:
            await self._policies.aclose()
        if self._owns_journal and self._journal is not None:
            await self._journal.aclose()

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeNotRunning("start the application first")
        return self._runtime

    @property
    def journal(self) -> Journal:
        return self.runtime.journal

    def tree(self) -> TreeNode:
        """The live supervision tree: one supervisor per agent type, active agents under it."""
        return self.runtime.tree()

    async def dispatch(
        self,
        command: Any,
        *,
        consistency: Literal["eventual", "strong"] = "eventual",
        timeout: float | None = 5.0,
    ) -> Any:
        """Route ``command`` (a Struct, or a dict/JSON with a ``type``) and return the reply.

        The reply comes only after the decision's events are durable in the journal; with
        ``consistency="strong"``, also only after every strong event handler has handled
        them. Raises ``Unroutable``, ``InvalidCommand`` (naming the bad field),
        ``Rejected``, ``InvalidDecision``, ``AgentCrashed``, ``AskTimeout``, ``HandlerStopped``.
        """
        if consistency not in ("eventual", "strong"):
            raise InvalidArgument(f"consistency must be 'eventual' or 'strong', got {consistency!r}")
        if isinstance(command, (dict, bytes, str)):
            command = self.router.parse(command)
        call: Any = functools.partial(self._deliver, timeout=timeout)
        for middleware in reversed(self.router.middleware):  # the first added runs outermost
            call = functools.partial(middleware, call_next=call)
        reply = await call(command)
        if consistency == "strong":
            await self._settle(self.journal.head_position(), timeout)
        return reply

    async def _settle(self, position: int, timeout: float | None) -> None:
        """Wait until every strong handler has handled the log up to ``position``."""
        waits = []
        for handler in self.handlers:
            if handler.handler_consistency == "strong":
                cell = self.runtime._core.cell(f"/{self.name}/handlers/{handler.handler_name}")  # noqa: SLF001
                if cell is None or not isinstance(cell.actor, HandlerRunner):
                    raise HandlerStopped(f"handler {handler.handler_name!r} {handler.stopped or 'is not running'}")
                waits.append(cell.actor.wait_for(position))
        if waits:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)

    async def _deliver(self, command: Any, *, timeout: float | None) -> Any:
        route, identity = self.router.route(command)
        try:
            return await self._ask_agent(route.agent, identity, command, timeout)
        except ActorDied as died:
            if isinstance(died.cause, AgentError):
                raise died.cause from died.cause.__cause__
            raise

    async def _ask_agent(self, agent: type, identity: str, message: Any, timeout: float | None) -> Any:
        """Ask the agent ``identity``, activating it (again, if it passivated between
        lookup and ask). A crash comes out as ``ActorDied`` carrying its cause."""
        for _ in range(3):
            ref = self._activate(agent, identity)
            try:
                return await ref.ask(message, timeout)
            except ActorDied as died:
                if died.cause is not None:
                    raise
        raise RuntimeNotRunning(f"{identity} kept stopping before it could take {type(message).__name__}")

    # --- effects -------------------------------------------------------------------------

    @property
    def outbox(self) -> Outbox:
        """The effect executor (started with the application)."""
        if self._outbox is None:
            raise RuntimeNotRunning("start the application first")
        return self._outbox

    async def _send(self, path: str, deliver: Deliver) -> bool:
        parent, _, identity = path.rpartition("/")
        agent = self._agent_at.get(parent)
        if agent is None:
            raise EffectNotFound(f"no agent type of this application lives under {parent!r} (owner of an effect)")
        return bool(await self._ask_agent(agent, identity, deliver, None))

    def dead_letters(self) -> list[EffectView]:
        """Effects that failed after every retry, waiting for ``redrive`` or ``settle``."""
        return self.outbox.listing(DEAD)

    def stuck(self) -> list[EffectView]:
        """Effects whose outcome could not be learnt safely; a human must redrive or settle them."""
        return self.outbox.listing(STUCK)

    def pending_effects(self) -> list[EffectView]:
        """Every effect without a final outcome (running, parked, unknown, stuck, dead)."""
        return self.outbox.listing("intended", "parked", UNKNOWN, STUCK, DEAD)

    async def approve(self, effect_id: str, *, by: str, verdict: Literal["approve", "deny"] = "approve",
                      reason: str = "") -> None:
        """A human's verdict on an effect a policy holds for approval; journaled, then it runs
        (``approve``) or its agent gets ``EffectFailed(error="ApprovalDenied")`` (``deny``).
        Raises ``EffectNotFound``, or ``EffectStateError`` if it is not awaiting approval or
        ``by`` is not among its approvers."""
        if verdict not in ("approve", "deny"):
            raise InvalidArgument(f"verdict must be 'approve' or 'deny', got {verdict!r}")
        if not isinstance(by, str) or not by:
            raise InvalidArgument("approve needs by= (who decided)")
        await self.outbox.approve(effect_id, by, verdict == "approve", reason)

    async def redrive(self, effect_id: str, *, by: str = "operator") -> None:
        """Re-issue a dead-lettered or stuck effect with its original key (journaled)."""
        await self.outbox.redrive(effect_id, by)

    async def settle(self, effect_id: str, *, by: str, result: Any = None, error: str | None = None) -> None:
        """Record a human's finding for a stuck, dead-lettered or unknown effect: it
        succeeded with ``result``, or (``error`` given) it did not happen. The agent decides on it."""
        if not isinstance(by, str) or not by:
            raise InvalidArgument("settle needs by= (who established the outcome)")
        await self.outbox.settle(effect_id, by, result=result, error=error)

    async def enqueue(self, effect: Effect | str, request: Any = None, *, key: str | None = None,
                      delay: float | None = None, queue: str | None = None, priority: int = 0) -> str:
        """Journal a job: ``effect`` run with ``request`` (after ``delay`` seconds) in ``queue``.

        Idempotent by ``key``: enqueuing the same key again returns the same effect id and
        runs nothing more. Returns the job's effect id (``$jobs/{key}/1/0``); wait for it
        with :meth:`wait_effect`.
        """
        return await self.outbox.enqueue(effect, request, key=key, delay=delay, queue=queue, priority=priority)

    async def wait_effect(self, effect_id: str, timeout: float | None = 30.0) -> EffectRecord:
        """The settled outcome of an effect or job: ``EffectSucceeded``, ``EffectFailed``
        (``exhausted``: dead-lettered) or ``EffectStuck``, waiting up to ``timeout`` seconds."""
        return await self.outbox.wait(effect_id, timeout)

    # --- policies --------------------------------------------------------------------------

    @property
    def policies(self) -> PolicyEngine:
        """The policy engine (``Application(policy=...)``): versions adopted, budgets."""
        if self._policies is None:
            raise InvalidSpec("this application has no policy; pass Application(policy=...)")
        return self._policies

    async def adopt_policy(self, policy: Policy | str | os.PathLike[str], *, by: str, reason: str = "") -> bool:
        """Journal ``policy`` as the version new agents are judged by (False: it already
        is). Agents already pinned keep their version until :meth:`migrate_policy`."""
        if not isinstance(by, str) or not by:
            raise InvalidArgument("adopt_policy needs by= (who changed the policy)")
        if isinstance(policy, (str, os.PathLike)):
            policy = load_policy(Path(policy))
        return await self.policies.adopt(policy, by=by, reason=reason)

    async def migrate_policy(self, stream: str, *, by: str, to: str | None = None, reason: str = "") -> None:
        """Move the agent of ``stream`` to policy version ``to`` (default: the one in
        force), journaled in its stream as ``z8.PolicyMigrated``. Raises PolicyError for a
        version never adopted, EffectNotFound when no agent of this application owns ``stream``."""
        if not isinstance(by, str) or not by:
            raise InvalidArgument("migrate_policy needs by= (who migrated the agent)")
        engine = self.policies
        target = engine.version(to).version if to is not None else engine.current.version  # type: ignore[union-attr]
        last = self.journal.read_stream(stream, backward=True, limit=1) if isinstance(stream, str) else []
        if not last or not last[0].actor or last[0].actor.rpartition("/")[0] not in self._agent_at:
            raise EffectNotFound(f"no agent of this application owns stream {stream!r}")
        for _ in range(3):
            path = last[0].actor
            pinned = _pinned_policy(self.journal, stream)
            if pinned == target:
                return
            if await self._send(path, Deliver([PolicyMigrated(pinned, target, by, reason)])):
                return
        raise EffectStateError(f"{stream}: the agent kept refusing the migration to {target!r}")

    def budgets(self) -> list[BudgetBalance]:
        """Every budget account with activity: spent, held (outcome not yet known), limit."""
        return self.policies.balances()

    def _activate(self, agent: type, identity: str) -> ActorRef:
        runtime = self.runtime
        parent = self._paths[agent]
        cell = runtime._core.cell(f"{parent}/{identity}") if runtime._core else None  # noqa: SLF001
        if cell is not None and not cell.mailbox.closed and not cell.stopping:
            return cell.ref
        self.journal.check_not_expired(identity)  # its agent could not be rebuilt: it would crash-loop
        return runtime.spawn(agent, name=identity, under=parent)

    # --- retention ---------------------------------------------------------------------------

    async def hold(self, *, subject: str | None = None, stream: str | None = None, by: str,
                   reason: str = "") -> Hold:
        """Place a legal hold on ``subject`` or ``stream`` (journaled in ``$holds``): the stream
        is never expired, the subject never erased, until :meth:`release_hold`."""
        return await self.journal.hold(subject=subject, stream=stream, by=by, reason=reason)

    async def release_hold(self, *, subject: str | None = None, stream: str | None = None, by: str,
                           reason: str = "") -> Hold:
        """Release a legal hold (journaled); raises ``InvalidArgument`` when none stands."""
        return await self.journal.release_hold(subject=subject, stream=stream, by=by, reason=reason)

    def holds(self) -> list[Hold]:
        """The legal holds in force, oldest first."""
        return self.journal.holds()

    async def expire(self, *, now: int | None = None, by: str, reason: str = "") -> ExpiryReport:
        """Apply the application's ``retention`` rules at ``now`` (default: the app clock).

        Journaled per stream as ``z8.RecordsExpired`` in ``$retention`` (see
        :meth:`Journal.expire`). Besides held streams, it keeps (and reports) streams with
        an effect or timer still open, whose records the outbox will read again; the
        agents of expired streams are stopped, so a later command meets ``RecordExpired``.
        """
        if not self._retention:
            raise InvalidSpec("this application has no retention rules; pass Application(retention=[...])")
        outbox = self.outbox
        spare = {view.stream: f"effect {view.effect_id} is {view.status}" for view in self.pending_effects()}
        for stream, timer_id in list(outbox._timers):  # noqa: SLF001 - armed timers read their record when due
            spare.setdefault(stream, f"timer {timer_id!r} is armed")
        report = await self.journal.expire(*self._retention, now=self._clock() if now is None else now,
                                           by=by, reason=reason, spare=spare)
        for act in report.expired:
            for parent in self._paths.values():
                cell = self.runtime._core.cell(f"{parent}/{act.stream}")  # noqa: SLF001
                if cell is not None:
                    await self.runtime.stop(cell.ref)
        return report

    # --- audit ---------------------------------------------------------------------------

    @property
    def audit(self) -> Audit:
        """The audit surface over this application's journal: ``verify``, ``causes``,
        ``effects``, ``trace`` and sealed run records (``run(stream=…)``), see :mod:`z8.audit`."""
        journal = self.journal
        audit = self.__dict__.get("_audit")
        if audit is None or audit.journal is not journal:
            audit = self.__dict__["_audit"] = Audit(journal)
        return audit

    # --- personal data -----------------------------------------------------------------

    async def erase(self, subject: str, *, by: str, reason: str = "") -> Envelope:
        """Erase ``subject``'s personal data (:meth:`Journal.erase`): its keys are destroyed
        and the act journaled as ``z8.SubjectErased`` in ``$vault`` (returned); from then on
        every ``z8.Personal`` field of the subject reads as ``z8.ERASED`` — in events,
        snapshots, effect records and run records — and ``verify()`` still passes. Refused
        with ``LegalHoldActive`` while a legal hold covers the subject.

        Active agents whose state names the subject (its ``z8.Subject`` field) are stopped,
        so they drop the plaintext they hold and re-activate from the journal on their next
        command; their ``evolve`` then sees ``z8.ERASED`` in personal fields.
        """
        act = await self.journal.erase(subject, by=by, reason=reason)
        prefixes = tuple(f"{path}/" for path in self._paths.values())
        core = self.runtime._core  # noqa: SLF001 - the application's own runtime
        holding = [cell for path, cell in list(core._cells.items())  # noqa: SLF001
                   if path.startswith(prefixes) and subject_of(getattr(cell.actor, "_z8_state", None)) == subject]
        for cell in holding:
            await self.runtime.stop(cell.ref)
        return act


def _check_retention(rules: Sequence[Retention]) -> list[Retention]:
    """The application's retention rules: Retention objects, one per category."""
    rules = list(rules)
    if not all(isinstance(rule, Retention) for rule in rules):
        raise InvalidSpec(f"retention= takes z8.Retention(category, keep_days) rules, got {rules!r:.120}")
    categories = [rule.category for rule in rules]
    if len(set(categories)) != len(categories):
        raise InvalidSpec(f"one retention rule per category, got {categories}")
    return rules


def _pinned_policy(journal: Journal, stream: str) -> str:
    """The policy version the agent of ``stream`` is pinned to, from its records."""
    ledger = Ledger()
    for envelope in journal.read_stream(stream):
        if envelope.type in RECORD_TYPES:
            ledger.apply(journal.decode(envelope))
    return ledger.policy
