"""Child process for tests/test_policies_crash.py: a payments app under a policy, driven over stdin.

Usage: python policies_worker.py JOURNAL BANK_URL RUN CONFIG_JSON

Runs :func:`payments_app` on the LMDB journal directory JOURNAL against the bank at
BANK_URL (``examples/_bank_server.py``, a real HTTP server in the test process; every
request carries ``X-Caller: RUN``). CONFIG_JSON: ``limit`` (the ``daily`` money pool),
``calls`` (the per-agent ``calls`` budget), ``seconds`` (if given, a ``time`` pool of
wall-clock seconds: reserves the wire's timeout, charges the time it took),
``approval_over`` (a wire above it needs 2 of alice, bob, carol), ``grant_other`` (also
grant the ``Other`` agent type; the policy is then version ``v2``), and ``pause``, which
freezes this run at a chosen moment so that the test can SIGKILL it there:

* ``send``: every wire attempt prints ``{"ev": "calling", "key": K}`` and never sends;
* ``reply``: every wire attempt sends, gets the bank's answer, prints
  ``{"ev": "replied", "key": K}`` and never returns it to the runtime;
* ``deliver``: an agent deciding on an ``EffectFailed`` prints ``{"ev": "delivering",
  "id": ID}`` and blocks the whole process (its outcome is never journaled);

and ``pause_amount``: with it, ``send`` and ``reply`` freeze only the wires of that amount.

Once started it prints ``{"ev": "ready"}``, then, as the journal commits them,
``{"ev": "intent", "id", "verdict"}``, ``{"ev": "approved", "id", "by"}`` and
``{"ev": "outcome", "id", "type", "error"}``. It reads one JSON command a line from
stdin and answers each with ``{"re": N, ...}`` (N: the command's ``n``):

* ``pay`` (``agent``: payer | other, ``who``, ``amount``): dispatch, answer the intent's
  effect id, verdict, rule, error and budgets;
* ``settled`` (``stream``, ``count``): wait for that many ``Settled`` events, answer them;
* ``pending``: ``app.pending_effects()`` as (effect id, status);
* ``approve`` (``id``, ``by``): ``app.approve``; answers the error's type, if any;
* ``budgets``: ``app.budgets()`` as account -> [spent, held, limit], once nothing is held
  (or after 3 s);
* ``stop``: close the application and exit 0.

Every line is one ``os.write`` below PIPE_BUF, so it arrives whole.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.parse
from typing import Any

import httpx
import msgspec
import structlog

import z8
from z8.effects import NOT_FOUND, EffectContext, EffectFailed, EffectSucceeded, Retry
from z8.policies import Budget, Grant, Policy, Rule, When

PAUSE = ""
"""The moment this process freezes at (set from CONFIG_JSON; empty in the test process)."""
PAUSE_AMOUNT: float | None = None
"""With it, ``send`` and ``reply`` freeze only the wires of this amount."""
APPROVERS = ("alice", "bob", "carol")
BUDGET_WAIT = 3.0


# --- the payments app ------------------------------------------------------------------------


class Wire(msgspec.Struct, frozen=True):
    amount: float
    to: str


class Receipt(msgspec.Struct, frozen=True):
    id: str
    amount: float
    to: str


class Pay(msgspec.Struct, frozen=True, tag=True):
    payer_id: str
    amount: float
    to: str = "ACME"


class OtherPay(msgspec.Struct, frozen=True, tag=True):
    other_id: str
    amount: float
    to: str = "ACME"


class Paid(msgspec.Struct, frozen=True, tag=True):
    amount: float
    to: str


class Settled(msgspec.Struct, frozen=True, tag=True):
    effect_id: str
    ok: bool
    error: str = ""
    bank_id: str = ""


class PayerState(msgspec.Struct):
    settled: int = 0


class Payer(z8.Agent):
    """Asks for one wire per command; records how each ended."""

    State = PayerState

    def decide(self, state: PayerState, command: Any, ctx: z8.CommandContext) -> Any:
        if isinstance(command, (Pay, OtherPay)):
            return z8.Decision(events=[Paid(command.amount, command.to)],
                               effects=[z8.Call("wire", Wire(command.amount, command.to))])
        if isinstance(command, EffectSucceeded):
            return z8.Decision(events=[Settled(command.effect_id, True, bank_id=command.result.id)])
        if isinstance(command, EffectFailed):
            if PAUSE == "deliver":
                emit(ev="delivering", id=command.effect_id)
                time.sleep(60)  # frozen here, the outcome not yet journaled, until SIGKILL
            return z8.Decision(events=[Settled(command.effect_id, False, command.error)])
        return z8.Decision()

    def evolve(self, state: PayerState, event: Any) -> PayerState:
        return PayerState(state.settled + 1) if isinstance(event, Settled) else state


class Other(Payer):
    """Another agent type: the policy grants it nothing (unless ``grant_other``)."""


def payments_policy(config: dict[str, Any]) -> Policy:
    grants = [Grant("Payer", ("bank.wire",))]
    if config.get("grant_other"):
        grants.append(Grant("Other", ("bank.wire",)))
    return Policy(
        name="payments", version="v2" if config.get("grant_other") else "v1", grants=tuple(grants),
        rules=(Rule("large", "approval", capability="bank.wire",
                    when=(When("amount", ">", config.get("approval_over", 10_000)),), approvers=APPROVERS, quorum=2),),
        budgets=(
            Budget("daily", "money", config["limit"], capabilities=("bank.wire",), reserve="amount", charge="amount"),
            Budget("calls", "calls", config.get("calls", 3), per="agent", capabilities=("bank.wire",)),
            *([Budget("time", "seconds", config["seconds"], capabilities=("bank.wire",))] if "seconds" in config else []),
        ),
    )


def wire_effect(http: httpx.AsyncClient) -> z8.effects.Effect:
    async def wire(request: Wire, ctx: EffectContext) -> Receipt:
        """POST /wires with the effect id as Idempotency-Key; the bank applies a key once."""
        paused = PAUSE_AMOUNT is None or request.amount == PAUSE_AMOUNT
        if PAUSE == "send" and paused:
            emit(ev="calling", key=ctx.key)
            await asyncio.Event().wait()  # never sends, until SIGKILL
        reply = await http.post("/wires", json=msgspec.to_builtins(request), headers={"Idempotency-Key": ctx.key})
        receipt = msgspec.convert(reply.raise_for_status().json(), Receipt)
        if PAUSE == "reply" and paused:
            emit(ev="replied", key=ctx.key)
            await asyncio.Event().wait()  # the answer never reaches the runtime, until SIGKILL
        return receipt

    async def wire_status(request: Wire, ctx: EffectContext) -> Any:
        reply = await http.get(f"/wires/{urllib.parse.quote(ctx.key, safe='')}")
        if reply.status_code == 404:
            return NOT_FOUND
        return msgspec.convert(reply.raise_for_status().json(), Receipt)

    return z8.effect(wire, name="wire", capability="bank.wire", idempotent=True, resolve=wire_status,
                     retry=Retry(attempts=3, backoff=z8.Backoff(min=0.02, max=0.1, jitter=0.1)), timeout=10.0)


def payments_app(path: str | os.PathLike[str], http: httpx.AsyncClient, config: dict[str, Any]) -> z8.Application:
    router = (z8.Router().identify(Payer, by="payer_id", prefix="payer-").dispatch(Pay, to=Payer)
              .identify(Other, by="other_id", prefix="other-").dispatch(OtherPay, to=Other))
    return z8.Application(router, path, types=z8.TypeRegistry([Pay, OtherPay, Paid, Settled]),
                          effects=[wire_effect(http)], policy=payments_policy(config))


# --- the process -------------------------------------------------------------------------------


def emit(**fields: Any) -> None:
    os.write(1, (json.dumps(fields) + "\n").encode())  # one write: the line arrives whole


async def report(app: z8.Application, start: int) -> None:
    """What the journal commits, as it commits it (for the test to kill just after)."""
    wanted = {"z8.EffectIntended", "z8.EffectApproved", "z8.EffectSucceeded", "z8.EffectFailed"}
    async with app.journal.subscribe(start, types=wanted) as records:
        async for envelope in records:
            record = app.journal.decode(envelope)
            if envelope.type == "z8.EffectIntended":
                emit(ev="intent", id=record.effect_id, verdict=record.verdict)
            elif envelope.type == "z8.EffectApproved":
                emit(ev="approved", id=record.effect_id, by=record.by, final=record.final)
            else:
                emit(ev="outcome", id=record.effect_id, type=envelope.type.removeprefix("z8."),
                     error=getattr(record, "error", ""))


async def exit_with_parent(parent: int) -> None:
    """A worker left behind by a test that died would idle forever: leave with it."""
    while os.getppid() == parent:
        await asyncio.sleep(0.5)
    os._exit(3)


async def command(app: z8.Application, cmd: dict[str, Any]) -> dict[str, Any]:
    op = cmd["op"]
    if op == "pay":
        message = (Pay if cmd["agent"] == "payer" else OtherPay)(cmd["who"], float(cmd["amount"]))
        await app.dispatch(message)
        stream = f"{cmd['agent']}-{cmd['who']}"
        intent = [app.journal.decode(e) for e in app.journal.read_stream(stream) if e.type == "z8.EffectIntended"][-1]
        return {"id": intent.effect_id, "verdict": intent.verdict, "rule": intent.rule, "error": intent.error,
                "budgets": intent.budgets, "policy_version": intent.policy_version}
    if op == "settled":
        deadline = time.monotonic() + cmd.get("timeout", 10.0)
        while True:
            found = [msgspec.to_builtins(app.journal.decode(e)) for e in app.journal.read_stream(cmd["stream"])
                     if e.type == "Settled"]
            if len(found) >= cmd["count"] or time.monotonic() > deadline:
                return {"settled": found}
            await asyncio.sleep(0.005)
    if op == "pending":
        return {"pending": [[v.effect_id, v.status] for v in app.pending_effects()]}
    if op == "approve":
        try:
            await app.approve(cmd["id"], by=cmd["by"])
        except z8.errors.Z8Error as error:
            return {"error": type(error).__name__, "message": str(error)}
        return {"error": ""}
    if op == "budgets":
        deadline = time.monotonic() + BUDGET_WAIT
        while any(b.held for b in app.budgets()) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return {"budgets": {b.account: [b.spent, b.held, b.limit] for b in app.budgets()}}
    raise ValueError(f"unknown op {op!r}")


async def main() -> None:
    global PAUSE, PAUSE_AMOUNT
    path, url, run, config = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    PAUSE, PAUSE_AMOUNT = config.get("pause", ""), config.get("pause_amount")
    watchdog = asyncio.create_task(exit_with_parent(os.getppid()))
    http = httpx.AsyncClient(base_url=url, timeout=5.0, headers={"X-Caller": run})
    async with payments_app(path, http, config) as app:
        reporter = asyncio.create_task(report(app, app.journal.head_position() + 1))
        emit(ev="ready")
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                break
            cmd = json.loads(line)
            if cmd["op"] == "stop":
                break
            try:
                answer = await command(app, cmd)
            except Exception as error:  # the test sees it, in its own words
                answer = {"exception": f"{type(error).__name__}: {error}"}
            emit(re=cmd["n"], **answer)
        reporter.cancel()
    await http.aclose()
    watchdog.cancel()
    emit(ev="stopped")


if __name__ == "__main__":
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    asyncio.run(main())
