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
    EffectFailed,
    EffectRecord,
    EffectStuck,
    EffectSucceeded,
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

    @property
    def saga_status(self) -> str:
        """running, compensating, completed, compensated or stuck."""
        return self._z8_ledger.saga

    def complete(self, events: list[Any] = (), reply: Any = None) -> SagaDecision:  # type: ignore[assignment]
        """End the saga as ``completed`` with ``events``."""
        return SagaDecision(list(events), reply, saga_records=[SagaEnded("completed")])

    def compensate(self, reason: str, events: list[Any] = (), reply: Any = None) -> SagaDecision:  # type: ignore[assignment]
        """Give up: journal ``events``, then undo every succeeded reversible effect, LIFO."""
        done = list(self._z8_ledger.done)
        if not done:
            return SagaDecision(list(events), reply, saga_records=[
                SagaCompensating(reason, []), SagaEnded("compensated", reason)])
        return SagaDecision(list(events), reply, effects=[self._undo(done[-1])],
                            saga_records=[SagaCompensating(reason, [d.effect_id for d in reversed(done)])])

    def _undo(self, done: Any) -> _Compensation:
        host = self._z8_ctx._cell.core.effects  # noqa: SLF001 - the agent's own runtime
        original = host.effect(done.effect)
        compensation = original.compensation
        return _Compensation(compensation, compensation.decode_request(done.result), compensates=done.effect_id)

    def _z8_decide(self, state: Any, message: Any, cctx: CommandContext) -> Any:
        pending = self._z8_ledger.effects.get(getattr(message, "effect_id", ""))
        if pending is None or pending.compensates is None:
            return self.decide(state, message, cctx)
        # an outcome of a compensation: the runtime moves the saga, decide is not asked
        kind = type(message)
        if kind is EffectSucceeded:
            remaining = [d for d in self._z8_ledger.done if d.effect_id != pending.compensates]
            if remaining:
                return SagaDecision(effects=[self._undo(remaining[-1])])
            return SagaDecision(saga_records=[SagaEnded("compensated")])
        if kind in (EffectFailed, EffectStuck):
            why = getattr(message, "message", "") or getattr(message, "reason", "")
            reason = f"compensation {message.effect_id} of {pending.compensates} failed: {why}"
            _log.error("saga.stuck", stream=cctx.stream, reason=reason)
            return SagaDecision(saga_records=[SagaEnded("stuck", reason), Alert("saga.stuck", cctx.stream, reason)])
        return Decision()  # unknown: being resolved; wait for the final outcome

    def _records(self, outcome: Decision, cctx: CommandContext, core: Any) -> list[EffectRecord]:
        records = super()._records(outcome, cctx, core)
        if isinstance(outcome, SagaDecision):  # the saga's move first, then what it runs
            records[:0] = outcome.saga_records
        return records
