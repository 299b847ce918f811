"""The policy engine: the gate an application runs every effect through.

It keeps every policy version ever adopted (read back from ``$policies``), judges each
effect by the version its agent is pinned to (the one in force at the agent's first
gated effect, until ``app.migrate_policy`` moves it), and keeps the budget accounts as
a fold over the journal (:mod:`z8.policies._budgets`). Adopting a policy is a journaled
act: ``PolicyAdopted`` carries the whole policy, so an auditor can read the exact rules
any verdict was given under.

The budget accounts are folded from the journal in log order, each position once: by a
follower as commits land, and up to the head before ``balances()``. So they are the
journal's, whichever process wrote the records, plus the holds this gate took for its
own decisions before they were committed (given back by ``discard`` if a decision is
refused). Admission reads the accounts as folded: a release or a charge committed in the
last milliseconds may not be counted yet, which only makes admission stricter, unless an
effect's real cost exceeds what it held or another process admitted in that window.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from z8.errors import InvalidPolicy, PolicyError, Z8Error
from z8.journal import Journal

from ._budgets import BudgetBalance, BudgetBook, charges
from ._compiled import CompiledPolicy
from ._policy import Policy, capability_of
from ._records import BUDGETS_STREAM, POLICY_STREAM, PolicyAdopted
from ._verdicts import Allow, Deny, EffectRequest, RequireApproval, Verdict

__all__ = ["PolicyEngine"]

_log = structlog.get_logger("z8.policies")
_BUDGET_RECORDS = frozenset({"z8.EffectIntended", "z8.EffectSucceeded", "z8.EffectFailed"})
_PAGE = 4096


class PolicyEngine:
    """Judges effects under the adopted policies and keeps the budgets.

    Built by the application from ``Application(policy=...)``; call :meth:`start` once
    the journal is open. It is the application's gate: ``engine(request) -> Verdict``.
    """

    def __init__(self, policy: Policy | None = None, *, by: str = "application") -> None:
        if policy is not None and not isinstance(policy, Policy):
            raise InvalidPolicy(f"policy= takes a z8.policies.Policy (or a TOML path), got {type(policy).__name__}")
        self._configured = policy
        self._by = by
        self._versions: dict[str, Policy] = {}
        self._compiled: dict[str, CompiledPolicy] = {}
        self._current: Policy | None = None
        self.book = BudgetBook()
        self._journal: Journal | None = None
        self._folded = 0  # the last global position folded into the accounts
        self._budgeted = False
        self._admitted: set[str] = set()  # held by this gate, their intents not yet folded from the log
        self._follow: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, journal: Journal) -> None:
        """Read the adopted versions, adopt the configured policy if it changed, and fold
        the budget accounts up to the log's head (from the last checkpoint)."""
        self._journal = journal
        for envelope in journal.read_stream(POLICY_STREAM):
            adopted = journal.decode(envelope)
            policy = Policy.decode(adopted.policy)
            self._versions[policy.version] = policy
            self._current = policy
        if self._configured is not None:
            await self.adopt(self._configured, by=self._by, reason="configured at start")
        head = journal.head_position()
        self._budgeted = any(v.budgets for v in self._versions.values())
        if self._budgeted:
            last = journal.read_stream(BUDGETS_STREAM, backward=True, limit=1)
            if last:
                checkpoint = journal.decode(last[0])
                self.book.restore(checkpoint)
                self._folded = checkpoint.position
            async for envelope in journal.iter_all(self._folded + 1):  # async: the backlog may be long
                if envelope.position > head:
                    break
                self._fold(envelope)
        # without budgets so far, no record before the head holds for one; the follower
        # runs anyway, for a policy with budgets adopted later
        self._folded = max(self._folded, head)
        self._follow = asyncio.create_task(self._follow_log(), name="z8.policies.budgets")

    async def aclose(self) -> None:
        """With budgets, journal a checkpoint of the accounts so the next start folds only
        what comes after it."""
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
            self._follow = None
        journal = self._journal
        if journal is None or journal.closed or not self._budgeted:
            return
        self.sync()
        if journal.head_position() <= self._folded and journal.stream_version(BUDGETS_STREAM):
            last = journal.read_stream(BUDGETS_STREAM, backward=True, limit=1)
            if last and journal.decode(last[0]).position == self._folded:
                return  # nothing new since the last checkpoint
        try:
            await journal.append(BUDGETS_STREAM, [self.book.checkpoint(self._folded)], actor="$policies",
                                 allow_reserved=True)
        except Z8Error as error:  # only costs a longer fold at the next start
            _log.warning("policies.checkpoint_failed", error=repr(error))

    def sync(self) -> None:
        """Fold the effect records committed since the last fold (in log order, so the
        accounts are exactly those of the journal up to its head, plus the holds this gate
        took for decisions not yet committed)."""
        journal = self._journal
        if journal is None or journal.closed:
            return
        while True:  # one read transaction when nothing is new
            page = journal.read_all(self._folded + 1, _PAGE)
            for envelope in page:
                self._fold(envelope)
            if page:
                self._folded = page[-1].position
            if len(page) < _PAGE:
                return

    async def _follow_log(self) -> None:
        """Keep the accounts close to the log's head between admissions (in batches, as
        commits land); ``sync`` and this fold each position once, in order."""
        journal = self._journal
        assert journal is not None
        async with journal.subscribe(self._folded + 1, types=_BUDGET_RECORDS) as records:
            async for envelope in records:
                if envelope.position <= self._folded:
                    continue  # sync() got there first
                try:
                    self._fold(envelope)
                except Exception:  # one bad record must not stop the accounts
                    _log.exception("policies.fold_failed", position=envelope.position)
                self._folded = envelope.position

    def _fold(self, envelope: Any) -> None:
        if not self._budgeted or envelope.type not in _BUDGET_RECORDS:
            return
        record = self._journal.decode(envelope)  # type: ignore[union-attr]
        if envelope.type == "z8.EffectIntended":
            self._admitted.discard(record.effect_id)
        self.book.observe(record)

    # --- versions -------------------------------------------------------------------------

    @property
    def current(self) -> Policy | None:
        """The version new agents are judged by (None before any policy is adopted)."""
        return self._current

    def versions(self) -> list[str]:
        """Every version adopted in this journal, oldest first."""
        return list(self._versions)

    def version(self, version: str) -> Policy:
        """The adopted policy named ``version``; PolicyError if none."""
        try:
            return self._versions[version]
        except KeyError:
            raise PolicyError(f"no policy version {version!r} was adopted here (adopted: {self.versions()})") from None

    async def adopt(self, policy: Policy, *, by: str, reason: str = "") -> bool:
        """Journal ``policy`` as the version in force; False when it already is.

        Raises InvalidPolicy when its version was adopted before with other content:
        a version names one content forever (change the version when the rules change).
        """
        if not isinstance(policy, Policy):
            raise InvalidPolicy(f"adopt takes a z8.policies.Policy, got {type(policy).__name__}")
        journal = self._journal
        if journal is None:
            raise PolicyError("the policy engine is not started")
        known = self._versions.get(policy.version)
        if known is not None and known.digest != policy.digest:
            raise InvalidPolicy(
                f"policy version {policy.version!r} was adopted before with other content "
                f"(digest {known.digest[:16]}…, now {policy.digest[:16]}…); give the changed policy a new version"
            )
        if self._current is not None and self._current.digest == policy.digest:
            return False
        previous = self._current.version if self._current is not None else ""
        await journal.append(POLICY_STREAM, [PolicyAdopted(policy.name, policy.version, policy.digest,
                                                           policy.encode(), by, reason, previous)],
                             actor=by, allow_reserved=True)
        self._versions[policy.version] = policy
        self._current = policy
        self._budgeted = self._budgeted or bool(policy.budgets)
        return True

    # --- the gate -------------------------------------------------------------------------

    def __call__(self, request: EffectRequest) -> Verdict:
        """The verdict on ``request``, budgets admitted (and held) when it is not denied."""
        if self._current is None:
            return Deny("no policy is adopted (deny by default)", "default-deny")
        version = request.policy_version or self._current.version
        compiled = self._compiled.get(version)
        if compiled is None:
            if version not in self._versions:
                return Deny(f"the agent is pinned to policy version {request.policy_version!r}, which this "
                            "application has not adopted (fails closed)", "unknown-version")
            compiled = self._compiled[version] = CompiledPolicy(self._versions[version])
        capability = capability_of(request)
        verdict = compiled.evaluate(request, capability)
        if isinstance(verdict, Deny):
            return verdict
        budgets = compiled.plan(request.agent, capability).budgets
        if not budgets:
            return verdict
        holds = self.book.admit(budgets, compiled.version, request)
        if isinstance(holds, Deny):
            return holds
        if self.book.hold(request.effect_id, holds):
            self._admitted.add(request.effect_id)
        if isinstance(verdict, Allow):
            return Allow(verdict.rule, verdict.policy_version, holds)
        assert isinstance(verdict, RequireApproval)
        return RequireApproval(verdict.approvers, verdict.quorum, verdict.timeout, verdict.rule,
                               verdict.policy_version, holds)

    def discard(self, effect_id: str) -> None:
        """The intent ``effect_id`` was not journaled (its decision was refused): give
        back what this gate held for it (nothing, if the hold was not this call's: an
        enqueue under a key already journaled)."""
        if effect_id in self._admitted:
            self._admitted.discard(effect_id)
            self.book.discard(effect_id)

    def charges(self, intent: Any, result: Any, elapsed: float | None) -> dict[str, float]:
        """What the success of ``intent`` (an ``EffectIntended``) costs each account
        (``elapsed`` None: not measured here, so time is charged at its reservation)."""
        if not intent.budgets:
            return {}
        policy = self._versions.get(intent.policy_version) or self._current
        return charges(policy, intent.budgets, result, elapsed) if policy is not None else dict(intent.budgets)

    def balances(self) -> list[BudgetBalance]:
        """Every budget account with activity as of the journal's head: spent, held, limit
        (under the current policy)."""
        self.sync()
        return self.book.balances(self._current)
