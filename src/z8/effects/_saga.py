"""Sagas: agents that undo what they did, most recent first, when they cannot finish.

A saga is a durable agent (so a process manager too: route the events or commands it
reacts to at it) whose steps are effects. Every ``reversible`` effect that succeeds is
remembered with its result. When ``decide`` gives up with ``self.compensate(reason)``,
the runtime runs the compensations of those effects in reverse order, one at a time,
each with the original effect's result as its request. The end is journaled as
``SagaEnded``: ``completed`` (``self.complete()``), ``compensated`` (everything undone),
or ``stuck`` — a compensation that failed is never retried blindly: the saga stops,
journals an ``Alert`` and waits for a human (``app.redrive``/``app.settle`` the failed
compensation to continue).
"""

from __future__ import annotations

from typing import Any, ClassVar

import structlog

from z8.actors._agent import Agent, CommandContext, Decision
from z8.actors._ledger import (
    Alert,
    Call,
    DoneEffect,
    EffectRecord,
    EffectSucceeded,
    EffectUnknown,
    SagaCompensating,
    SagaEnded,
)

__all__ = ["Saga", "SagaDecision"]

_log = structlog.get_logger("z8.saga")


class _Compensation(Call, frozen=True):
    compensates: str = ""


class SagaDecision(Decision, frozen=True):
    """A decision that also moves the saga (built by ``compensate``/``complete``)."""

    saga_records: list[Any] = []


class Saga(Agent):
    """Base for sagas; see the module docs. Subclass like any :class:`~z8.Agent`."""

    agent_keeps_done: ClassVar[bool] = True
    _z8_current: str = ""

    @property
    def saga_status(self) -> str:
        """running, compensating, completed, compensated or stuck."""
        return self._z8_ledger.saga

    def complete(self, events: list[Any] = (), reply: Any = None) -> SagaDecision:  # type: ignore[assignment]
        """End the saga as ``completed`` with ``events``."""
        return SagaDecision(list(events), reply, saga_records=[SagaEnded("completed")])

    def compensate(self, reason: str, events: list[Any] = (), reply: Any = None) -> SagaDecision:  # type: ignore[assignment]
        """Give up: journal ``events``, then undo every succeeded reversible effect, LIFO.

        A second call (the saga is already compensating or ended) only journals ``events``.
        A reversible step still in flight is undone when it lands; the saga ends
        ``compensated`` once nothing it started is pending.
        """
        ledger = self._z8_ledger
        if ledger.saga != "running":
            return SagaDecision(list(events), reply)
        done = list(ledger.done)
        order = [d.effect_id for d in reversed(done)]
        if done:
            return SagaDecision(list(events), reply, effects=[self._undo(done[-1])],
                                saga_records=[SagaCompensating(reason, order)])
        if self._busy(exclude={self._z8_current}):
            return SagaDecision(list(events), reply, saga_records=[SagaCompensating(reason, order)])
        return SagaDecision(list(events), reply, saga_records=[SagaCompensating(reason, []),
                                                               SagaEnded("compensated", reason)])

    def _undo(self, done: Any, typed: bool = False) -> _Compensation:
        host = self._z8_ctx._cell.core.effects  # noqa: SLF001 - the agent's own runtime
        compensation = host.effect(done.effect).compensation
        request = done.result if typed else compensation.decode_request(done.result, host.journal.personal)
        return _Compensation(compensation, request, compensates=done.effect_id)

    def _busy(self, exclude: set[str]) -> bool:
        """Whether anything this saga started (a step or a compensation) is still pending."""
        return any(effect_id not in exclude for effect_id in self._z8_ledger.effects)

    def _z8_decide(self, state: Any, message: Any, cctx: CommandContext) -> Any:
        ledger = self._z8_ledger
        effect_id = getattr(message, "effect_id", "")
        self._z8_current = effect_id
        pending = ledger.effects.get(effect_id)
        if pending is None or (pending.compensates is None and ledger.saga == "running"):
            return self.decide(state, message, cctx)
        # the runtime moves a saga that gave up; decide is not asked
        kind = type(message)
        if kind is EffectUnknown:
            return Decision()  # being resolved: wait for the final outcome
        if pending.compensates is None:  # a step that landed after the saga gave up
            if kind is EffectSucceeded and pending.kind == "reversible":
                return SagaDecision(effects=[self._undo(DoneEffect(effect_id, pending.effect, message.result),
                                                        typed=True)])
            return self._end_if_idle(exclude={effect_id})
        if kind is EffectSucceeded:
            undoing = {p.compensates for p in ledger.effects.values() if p.compensates}
            remaining = [d for d in ledger.done if d.effect_id not in undoing]
            if remaining:
                return SagaDecision(effects=[self._undo(remaining[-1])])
            return self._end_if_idle(exclude={effect_id})
        why = getattr(message, "message", "") or getattr(message, "reason", "")
        reason = f"compensation {effect_id} of {pending.compensates} failed: {why}"
        _log.error("saga.stuck", stream=cctx.stream, reason=reason)
        return SagaDecision(saga_records=[SagaEnded("stuck", reason), Alert("saga.stuck", cctx.stream, reason)])

    def _end_if_idle(self, exclude: set[str]) -> Decision:
        if self._z8_ledger.saga != "compensating" or self._busy(exclude):
            return Decision()
        return SagaDecision(saga_records=[SagaEnded("compensated")])

    def _records(self, outcome: Decision, cctx: CommandContext, core: Any) -> list[EffectRecord]:
        records = super()._records(outcome, cctx, core)
        if isinstance(outcome, SagaDecision):  # the saga's move first, then what it runs
            records[:0] = outcome.saga_records
        return records
