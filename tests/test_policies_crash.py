"""kill -9 of an application under a policy: budgets, approvals and denials survive it.

The bank (``examples/_bank_server.py``) is a real HTTP server in this process, on
127.0.0.1, applying each ``Idempotency-Key`` once and keeping every request it saw; here
it can hold an order before applying it, or hold the answer after applying it, until the
test releases it. A real child process (``tests/_procs/policies_worker.py``) runs a
payments application on one LMDB journal: ``Payer`` agents wire money through an
idempotent ``wire`` effect (capability ``bank.wire``, status query ``GET /wires/{key}``)
under a policy with a ``daily`` money pool (charged the amount the bank's receipt says), a
per-agent ``calls`` budget, a rule holding large wires for 2 of alice, bob and carol, and
no grant at all for the ``Other`` agent type. The test SIGKILLs the worker at a chosen
moment, reads the journal and the bank, and starts the next worker on the same journal.

1. **Budgets** (one test per kill moment): a first wire settles and the app stops cleanly
   (its accounts are checkpointed); a second one is killed before it reaches the bank,
   held by the bank before it is applied, applied with the answer held back, answered but
   not yet journaled, or just after its outcome was journaled. The restarted worker
   recovers it; each key is applied once at the bank, each effect has one final outcome,
   the accounts equal one charge per success (spent = what the bank applied, nothing
   held) in the restarted worker, in a fresh open, in a fold of the whole log and in the
   journal's own ``charged`` records, and the next wire past the limit (or past the
   agent's calls) is denied with ``BudgetExceeded``.
2. **Approvals**: a large wire parked for approval is killed while parked, after its first
   approval was journaled, or after the quorum with the wire held at the bank; after the
   restart it is listed ``parked``, its hold still counts, the approvals journaled before
   the kill still count (the same approver twice is refused), and it reaches the bank once,
   only after the quorum.
3. **Denials**: an agent with no grant is killed while its denial is being handed to it
   (or just after it was journaled); after the restart the denial is delivered once, the
   bank saw nothing, also when the restarted application's policy would now grant it.

With ``-m slow``: a storm of kills at every moment (and some clean stops) on one
journal, budgets carried across all of them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from _child_output import ChildOutput

import z8
from z8.actors import register_system_types
from z8.effects import EffectApproved, EffectFailed, EffectIntended, EffectStuck, EffectSucceeded
from z8.journal import open_journal
from z8.policies import PolicyEngine

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).parent / "_procs" / "policies_worker.py"
if str(ROOT / "examples") not in sys.path:
    sys.path.insert(0, str(ROOT / "examples"))
from _bank_server import Bank, Seen  # noqa: E402 - examples/ is no package

if "policies_worker" not in sys.modules:  # the worker's app, for the opens in this process
    _spec = importlib.util.spec_from_file_location("policies_worker", WORKER)
    _module = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
    sys.modules["policies_worker"] = _module
    _spec.loader.exec_module(_module)  # type: ignore[union-attr]
import policies_worker as pw  # noqa: E402

WAIT = 10.0
"""Seconds to wait for a worker's answer, or for the bank to see the moment to kill at."""
QUIET = 0.3
"""Seconds to watch for something that must not happen (a second delivery, an early wire)."""
FINAL = (EffectSucceeded, EffectFailed, EffectStuck)


# --- the bank, holding orders or answers on demand ----------------------------------------------


class HoldingBank(Bank):
    """The example's bank; with ``hold = "apply"`` it holds each order before applying it, with
    ``hold = "reply"`` it applies the order and holds the answer, until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__(lambda day: None)
        self.hold = ""
        self.release = threading.Event()

    def _apply(self, book: dict[str, dict[str, Any]], prefix: str, key: str, order: dict[str, Any],
               seen: Seen) -> tuple[int, dict[str, Any]]:
        if self.hold == "apply":
            with self.changed:
                seen.outcome = "held"
                self.changed.notify_all()
            self.release.wait(WAIT)
        return super()._apply(book, prefix, key, order, seen)

    def _delay(self) -> None:
        if self.hold == "reply":
            self.release.wait(WAIT)

    def wait_for(self, predicate: Any, what: str) -> None:
        with self.changed:
            if not self.changed.wait_for(predicate, WAIT):
                raise AssertionError(f"the bank never saw {what}: {self.requests}")

    def let_go(self) -> None:
        """Stop holding; what it held is applied (or answered) now, for good."""
        self.hold = ""
        self.release.set()
        self.wait_idle()
        self.release.clear()

    def seen(self, key: str) -> list[tuple[str, str]]:
        with self.changed:
            return [(s.method, s.outcome) for s in self.requests if s.key == key]

    def applied(self) -> Counter[str]:
        with self.changed:
            return Counter(s.key for s in self.requests if s.method == "POST" and s.outcome == "applied")

    def posts(self) -> Counter[str]:
        """Orders received whole per key, replays of a key included (an order cut short by a
        kill mid-request never arrived: the bank acted on nothing)."""
        with self.changed:
            return Counter(s.key for s in self.requests if s.method == "POST" and s.outcome != "cut short")


# --- a worker process ------------------------------------------------------------------------


class Worker:
    """One child process running the payments app; commands over stdin, JSON lines back."""

    def __init__(self, tmp_path: Path, bank: Bank, run: int, config: dict[str, Any]) -> None:
        self.stderr_file = tmp_path / f"worker-{run}.stderr"
        args = [sys.executable, str(WORKER), str(tmp_path / "journal"), bank.url, str(run), json.dumps(config)]
        with open(self.stderr_file, "wb") as stderr:
            self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                         bufsize=0)
        self.output = ChildOutput(self.proc)
        self.lines: list[dict[str, Any]] = []
        self._n = 0
        self.wait(lambda line: line.get("ev") == "ready", "ready")

    def _fail(self, why: str) -> None:
        self.close()
        pytest.fail(f"{why}; the worker printed {self.lines[-20:]}; stderr:\n"
                    f"{self.stderr_file.read_text(errors='replace')[-4000:]}")

    def wait(self, wanted: Any, what: str, timeout: float = WAIT) -> dict[str, Any]:
        """The first line (from the start) that is ``wanted``, reading more until it comes."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if wanted(line):
                    return line
            seen = len(self.lines)
            if self.output.eof:
                self._fail(f"the worker exited (code {self.proc.poll()}) before {what}")
            try:
                self.output.read_until(len(self.output.lines) + 1, deadline)
            except TimeoutError:
                self._fail(f"no {what} within {timeout} s")
            for raw in self.output.lines[len(self.lines):]:
                try:
                    self.lines.append(json.loads(raw))
                except ValueError:
                    self.lines.append({"raw": raw.decode(errors="replace")})

    def send(self, op: str, **args: Any) -> int:
        self._n += 1
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, "n": self._n, **args}) + "\n").encode())
        return self._n

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        n = self.send(op, **args)
        answer = self.wait(lambda line: line.get("re") == n, f"an answer to {op} {args}")
        if "exception" in answer:
            self._fail(f"{op} {args} raised {answer['exception']}")
        return answer

    def event(self, ev: str, **fields: Any) -> dict[str, Any]:
        return self.wait(lambda line: line.get("ev") == ev and all(line.get(k) == v for k, v in fields.items()),
                         f"{ev} {fields}")

    def kill(self) -> None:
        if self.proc.poll() is not None:
            self._fail(f"the worker exited with {self.proc.returncode} before it was killed")
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.close()
        assert self.proc.returncode == -signal.SIGKILL

    def stop(self) -> None:
        self.send("stop")
        self.event("stopped")
        try:
            code = self.proc.wait(timeout=30)
        finally:
            self.close()
        assert code == 0, self.stderr_file.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


# --- reading the journal after a run ---------------------------------------------------------------


class Record:
    """The journal as a fresh process reads it (verified first): every record, decoded."""

    def __init__(self, tmp_path: Path) -> None:
        journal = open_journal(tmp_path / "journal", types=register_system_types(
            z8.TypeRegistry([pw.Pay, pw.OtherPay, pw.Paid, pw.Settled])))
        try:
            report = journal.verify()
            assert report.ok, f"verify() failed: {report}"
            self.records = [(e.position, e.stream, journal.decode(e)) for e in journal.read_all()]
        finally:
            journal.close()

    def of(self, kind: Any, effect_id: str | None = None) -> list[Any]:
        return [r for _, _, r in self.records
                if isinstance(r, kind) and (effect_id is None or getattr(r, "effect_id", None) == effect_id)]

    def position(self, record: Any) -> int:
        return next(p for p, _, r in self.records if r is record)

    def intent(self, effect_id: str) -> EffectIntended:
        [intent] = self.of(EffectIntended, effect_id)
        return intent

    def finals(self, effect_id: str) -> list[Any]:
        return [r for r in self.of(FINAL, effect_id) if not (isinstance(r, EffectFailed) and r.exhausted)]

    def settled(self, stream: str) -> list[pw.Settled]:
        return [r for _, s, r in self.records if s == stream and isinstance(r, pw.Settled)]

    def check_one_final_each(self) -> None:
        """Every intent has exactly one final outcome, decided on by its agent exactly once."""
        for intent in self.of(EffectIntended):
            finals = self.finals(intent.effect_id)
            assert len(finals) == 1, f"{intent.effect_id}: {len(finals)} final outcomes: {finals}"
            decided = [s for s in self.of(pw.Settled) if s.effect_id == intent.effect_id]
            assert len(decided) == 1, f"{intent.effect_id} was decided on {len(decided)} times"
        assert not self.of(EffectStuck), f"an effect got stuck: {self.of(EffectStuck)}"

    def checkpoints(self, *, opened: bool = False) -> list[Any]:
        """What each clean stop checkpointed (stream ``$budgets``): spent, or the holds
        of the effects still open."""
        return [r.open if opened else r.spent for _, s, r in self.records if s == "$budgets"]

    def charged(self) -> dict[str, float]:
        """Sum of what every success journaled as charged, per account."""
        total: Counter[str] = Counter()
        for record in self.of(EffectSucceeded):
            total.update(record.charged)
        return dict(total)


def folded_balances(tmp_path: Path) -> dict[str, list[float]]:
    """The budget accounts a fresh engine starts with (last checkpoint + the log after it)."""
    async def fold() -> dict[str, list[float]]:
        journal = open_journal(tmp_path / "journal", types=register_system_types(z8.TypeRegistry()))
        engine = PolicyEngine()
        try:
            await engine.start(journal)
            return {b.account: [b.spent, b.held, b.limit] for b in engine.balances()}
        finally:
            await engine.aclose()
            await journal.aclose()
    return asyncio.run(fold())


def scratch_balances(record: Record, config: dict[str, Any]) -> dict[str, list[float]]:
    """The accounts folded from every effect record from the first (no checkpoint used)."""
    engine = PolicyEngine()
    for _, _, r in record.records:
        engine.book.observe(r)
    return {b.account: [b.spent, b.held, b.limit] for b in engine.book.balances(pw.payments_policy(config))}


def in_process(tmp_path: Path, bank: Bank, config: dict[str, Any], use: Any) -> Any:
    """``await use(app)`` with the payments app opened in this process (no worker running),
    then a clean stop."""
    async def run() -> Any:
        async with httpx.AsyncClient(base_url=bank.url, headers={"X-Caller": "test"}) as http:
            async with pw.payments_app(tmp_path / "journal", http, config) as app:
                return await use(app)
    return asyncio.run(run())


def fresh_app_balances(tmp_path: Path, bank: Bank, config: dict[str, Any]) -> dict[str, list[float]]:
    """``app.budgets()`` of the payments app opened again in this process (the workers are gone)."""
    async def read(app: z8.Application) -> dict[str, list[float]]:
        assert app.pending_effects() == []
        return {b.account: [b.spent, b.held, b.limit] for b in app.budgets()}
    return in_process(tmp_path, bank, config, read)


# --- 1. budgets through a crash mid-effect --------------------------------------------------------

LIMIT, CALLS = 1000.0, 3
BUDGET_CONFIG = {"limit": LIMIT, "calls": CALLS}
FIRST, CRASHED, REST = 100.0, 500.0, 400.0
"""The settled wire, the one the kill catches, and the one that fills the pool to LIMIT."""

MOMENTS = {
    # moment: (worker pause, bank hold, what the restarted worker sends the bank for the key, resolved)
    "before the bank is reached": ("send", "", [("GET", "absent"), ("POST", "applied")], False),
    "at the bank, not applied": ("", "apply", [("GET", "found")], True),
    "applied, answer not sent": ("", "reply", [("GET", "found")], True),
    "answered, outcome not journaled": ("reply", "", [("GET", "found")], True),
    "just after the outcome was journaled": ("", "", [], False),
}


def _kill_at(worker: Worker, bank: HoldingBank, moment: str, key: str) -> None:
    """Wait for ``moment`` of the wire ``key`` (its intent is journaled), then SIGKILL."""
    if moment == "before the bank is reached":
        worker.event("calling", key=key)
    elif moment == "at the bank, not applied":
        bank.wait_for(lambda: ("POST", "held") in bank.seen(key), f"{key} held")
    elif moment == "applied, answer not sent":
        bank.wait_for(lambda: ("POST", "applied") in bank.seen(key), f"{key} applied")
    elif moment == "answered, outcome not journaled":
        worker.event("replied", key=key)
    else:
        worker.event("outcome", id=key)
    worker.kill()
    bank.let_go()


def _budget_crash(tmp_path: Path, bank: HoldingBank, moment: str) -> None:
    pause, hold, after_restart, resolved = MOMENTS[moment]

    # a first wire settles and the app stops cleanly: its accounts are checkpointed
    async def pay_first(app: z8.Application) -> None:
        await app.dispatch(pw.Pay("a", FIRST))
        [intent] = [app.journal.decode(e) for e in app.journal.read_stream("payer-a") if e.type == "z8.EffectIntended"]
        assert intent.budgets == {"daily": FIRST, "calls@payer-a": 1.0}
        assert (await app.wait_effect(intent.effect_id, WAIT)).charged == {"daily": FIRST, "calls@payer-a": 1.0}
    in_process(tmp_path, bank, BUDGET_CONFIG, pay_first)
    assert Record(tmp_path).checkpoints() == [{"daily": FIRST, "calls@payer-a": 1.0}]

    worker = Worker(tmp_path, bank, 0, {**BUDGET_CONFIG, "pause": pause, "pause_amount": CRASHED})
    bank.hold = hold
    crashed = worker.call("pay", agent="payer", who="a", amount=CRASHED)
    key = crashed["id"]
    assert (crashed["verdict"], crashed["budgets"]) == ("allow", {"daily": CRASHED, "calls@payer-a": 1.0})
    _kill_at(worker, bank, moment, key)

    # as the kill left it: the hold survived (not reset, not charged twice)
    journaled = moment == "just after the outcome was journaled"
    record = Record(tmp_path)
    assert record.intent(key).budgets == {"daily": CRASHED, "calls@payer-a": 1.0}
    assert len(record.finals(key)) == (1 if journaled else 0)
    assert bank.applied()[key] == (0 if moment == "before the bank is reached" else 1)
    spent, held = (FIRST + CRASHED, 0.0) if journaled else (FIRST, CRASHED)
    calls_spent, calls_held = (2.0, 0.0) if journaled else (1.0, 1.0)
    as_killed = {"daily": [spent, held, LIMIT], "calls@payer-a": [calls_spent, calls_held, CALLS]}
    assert folded_balances(tmp_path) == as_killed
    assert scratch_balances(record, BUDGET_CONFIG) == as_killed
    before = len(bank.requests)

    # restart: recovery finishes the wire; the accounts hold one charge per success
    worker = Worker(tmp_path, bank, 1, BUDGET_CONFIG)
    settled = worker.call("settled", stream="payer-a", count=2)["settled"]
    assert [s["ok"] for s in settled] == [True, True], settled
    assert settled[1]["bank_id"] == bank.wires[key]["id"]
    assert worker.call("budgets")["budgets"] == {
        "daily": [FIRST + CRASHED, 0.0, LIMIT], "calls@payer-a": [2.0, 0.0, CALLS]}
    assert [(s.method, s.outcome) for s in bank.requests[before:] if s.key == key] == after_restart
    # the pool takes exactly what is left; then neither budget has room, crash or no crash
    rest = worker.call("pay", agent="payer", who="a", amount=REST)
    assert rest["verdict"] == "allow"
    assert worker.call("settled", stream="payer-a", count=3)["settled"][2]["ok"]
    over = worker.call("pay", agent="payer", who="b", amount=1.0)
    assert (over["verdict"], over["error"], over["rule"]) == ("deny", "BudgetExceeded", "budget:daily"), over
    assert worker.call("settled", stream="payer-b", count=1)["settled"] == [
        {"type": "Settled", "effect_id": over["id"], "ok": False, "error": "BudgetExceeded", "bank_id": ""}]
    fourth = worker.call("pay", agent="payer", who="a", amount=0.0)  # fits the pool, not a's calls
    assert (fourth["verdict"], fourth["error"], fourth["rule"]) == ("deny", "BudgetExceeded", "budget:calls"), fourth
    assert worker.call("settled", stream="payer-a", count=4)["settled"][3]["error"] == "BudgetExceeded"
    full = {"daily": [LIMIT, 0.0, LIMIT], "calls@payer-a": [float(CALLS), 0.0, CALLS]}
    assert worker.call("budgets")["budgets"] == full
    worker.stop()

    # the bank, the journal and a fresh open agree
    record = Record(tmp_path)
    record.check_one_final_each()
    succeeded = {r.effect_id: r for r in record.of(EffectSucceeded)}
    assert sorted(succeeded) == sorted(bank.wires), "successes != wires at the bank"
    assert bank.applied() == bank.posts() == Counter(dict.fromkeys(succeeded, 1)), bank.requests
    assert sum(w["amount"] for w in bank.wires.values()) == LIMIT
    assert succeeded[key].resolved is resolved
    assert succeeded[key].charged == {"daily": CRASHED, "calls@payer-a": 1.0}
    assert record.charged() == {"daily": LIMIT, "calls@payer-a": float(CALLS)}
    assert [(i.error, i.budgets) for i in record.of(EffectIntended) if i.verdict == "deny"] == [
        ("BudgetExceeded", {}), ("BudgetExceeded", {})]
    assert scratch_balances(record, BUDGET_CONFIG) == full
    assert folded_balances(tmp_path) == full  # from the last clean stop's checkpoint on
    assert fresh_app_balances(tmp_path, bank, BUDGET_CONFIG) == full


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_a_budget_survives_a_crash_mid_effect_without_double_charge(tmp_path: Path, moment: str) -> None:
    with HoldingBank() as bank:
        _budget_crash(tmp_path, bank, moment)


def test_a_seconds_budget_charges_a_wire_that_a_crash_cut_short(tmp_path: Path) -> None:
    config = {**BUDGET_CONFIG, "seconds": 100.0}
    with HoldingBank() as bank:
        worker = Worker(tmp_path, bank, 0, config)
        control = worker.call("pay", agent="payer", who="a", amount=FIRST)
        assert control["budgets"] == {"daily": FIRST, "calls@payer-a": 1.0, "time": 10.0}  # the wire's timeout
        worker.event("outcome", id=control["id"])
        bank.hold = "reply"
        crashed = worker.call("pay", agent="payer", who="a", amount=CRASHED)["id"]
        bank.wait_for(lambda: ("POST", "applied") in bank.seen(crashed), f"{crashed} applied")
        time.sleep(0.5)  # the wire is in flight for half a second at least
        worker.kill()
        bank.let_go()
        worker = Worker(tmp_path, bank, 1, config)
        assert [s["ok"] for s in worker.call("settled", stream="payer-a", count=2)["settled"]] == [True, True]
        worker.stop()
    record = Record(tmp_path)
    record.check_one_final_each()
    succeeded = {r.effect_id: r for r in record.of(EffectSucceeded)}
    assert 0 < succeeded[control["id"]].charged["time"] < 10.0  # measured, when nothing crashed
    assert succeeded[crashed].resolved
    assert succeeded[crashed].charged["daily"] == CRASHED
    assert succeeded[crashed].charged["time"] >= 0.5, succeeded[crashed]


# --- 2. a gated effect through a crash while it waits -----------------------------------------------

APPROVAL_CONFIG = {"limit": 50_000.0, "calls": 3, "approval_over": 10_000}
LARGE = 20_000.0

WAITS = {
    # variant: (approvals before the kill, approvals after the restart, bank requests after the restart)
    "parked": ([], ["alice", "bob"], [("POST", "applied")]),
    "after the first approval": (["alice"], ["carol"], [("POST", "applied")]),
    "after the quorum, at the bank": (["alice", "bob"], [], [("GET", "found")]),
}
CHECKPOINTED = "after the first approval"
"""The variant whose wire is asked for by an app that then stops cleanly, parked: the
checkpoint of its accounts holds the wire's reservation open."""


def _approve(worker: Worker, bank: HoldingBank, key: str, by: str, *, final: bool) -> None:
    assert worker.call("approve", id=key, by=by)["error"] == ""
    worker.event("approved", id=key, by=by)
    if not final:  # short of the quorum: nothing runs
        time.sleep(QUIET)
        assert bank.seen(key) == [], f"{key} reached the bank before the quorum"


def _until_parked(worker: Worker, key: str) -> None:
    deadline = time.monotonic() + WAIT
    while (pending := worker.call("pending")["pending"]) != [[key, "parked"]]:
        assert time.monotonic() < deadline, f"{key} never parked: {pending}"
        time.sleep(0.01)


@pytest.mark.parametrize("variant", list(WAITS))
def test_a_gated_effect_survives_a_sigkill_while_waiting_and_runs_once_after_approval(
        tmp_path: Path, variant: str) -> None:
    before_kill, after_restart, bank_after = WAITS[variant]
    everyone = before_kill + after_restart
    with HoldingBank() as bank:
        if variant == CHECKPOINTED:
            async def park(app: z8.Application) -> str:
                await app.dispatch(pw.Pay("a", LARGE))
                for _ in range(int(WAIT / 0.01)):
                    if [v.status for v in app.pending_effects()] == ["parked"]:
                        break
                    await asyncio.sleep(0.01)
                return app.pending_effects()[0].effect_id
            key = in_process(tmp_path, bank, APPROVAL_CONFIG, park)
            assert Record(tmp_path).checkpoints(opened=True) == [{key: {"daily": LARGE, "calls@payer-a": 1.0}}]
            worker = Worker(tmp_path, bank, 0, APPROVAL_CONFIG)
        else:
            worker = Worker(tmp_path, bank, 0, APPROVAL_CONFIG)
            large = worker.call("pay", agent="payer", who="a", amount=LARGE)
            key = large["id"]
            assert large["budgets"] == {"daily": LARGE, "calls@payer-a": 1.0}
        _until_parked(worker, key)
        bank.hold = "reply"
        for by in before_kill:
            _approve(worker, bank, key, by, final=by == everyone[-1])
        if before_kill == everyone:
            bank.wait_for(lambda: ("POST", "applied") in bank.seen(key), f"{key} applied")
        worker.kill()
        bank.let_go()
        assert bank.applied()[key] == (1 if before_kill == everyone else 0)
        record = Record(tmp_path)
        assert [a.by for a in record.of(EffectApproved, key)] == before_kill
        assert record.finals(key) == []
        before = len(bank.requests)

        worker = Worker(tmp_path, bank, 1, APPROVAL_CONFIG)
        if after_restart:
            assert worker.call("pending")["pending"] == [[key, "parked"]]
            assert worker.call("approve", id=key, by="mallory")["error"] == "EffectStateError"
            # its hold survived the kill: another large wire does not fit beside it
            other = worker.call("pay", agent="payer", who="b", amount=40_000.0)
            assert (other["verdict"], other["error"]) == ("deny", "BudgetExceeded"), other
            for by in before_kill:  # approvals journaled before the kill still count: not twice
                assert worker.call("approve", id=key, by=by)["error"] == "EffectStateError"
            for by in after_restart:
                _approve(worker, bank, key, by, final=by == everyone[-1])
        settled = worker.call("settled", stream="payer-a", count=1)["settled"]
        assert [(s["effect_id"], s["ok"]) for s in settled] == [(key, True)]
        assert worker.call("budgets")["budgets"] == {"daily": [LARGE, 0.0, 50_000.0], "calls@payer-a": [1.0, 0.0, 3]}
        assert worker.call("pending")["pending"] == []
        worker.stop()

    assert [(s.method, s.outcome) for s in bank.requests[before:] if s.key == key] == bank_after
    assert bank.applied() == bank.posts() == Counter({key: 1})
    record = Record(tmp_path)
    record.check_one_final_each()
    intent = record.intent(key)
    assert (intent.verdict, intent.rule, intent.policy_version, intent.approvers, intent.quorum) == (
        "approval", "large", "v1", ["alice", "bob", "carol"], 2)
    approvals = record.of(EffectApproved, key)
    assert [(a.by, a.approve, a.final) for a in approvals] == [(by, True, by == everyone[-1]) for by in everyone]
    [done] = record.finals(key)
    assert isinstance(done, EffectSucceeded) and done.resolved is (before_kill == everyone)
    assert record.position(done) > record.position(approvals[-1])  # it ran only after the quorum


# --- 3. no grant, across a crash ---------------------------------------------------------------

DENIALS = {
    # variant: (kill at, the restarted worker's policy grants Other)
    "while the denial is delivered": ("delivering", False),
    "just after the denial was journaled": ("outcome", False),
    "delivered after a restart whose policy grants it": ("delivering", True),
}


@pytest.mark.parametrize("variant", list(DENIALS))
def test_an_agent_with_no_grant_cannot_run_an_effect_even_across_a_crash(tmp_path: Path, variant: str) -> None:
    kill_at, regrant = DENIALS[variant]
    with HoldingBank() as bank:
        worker = Worker(tmp_path, bank, 0, {**BUDGET_CONFIG, "pause": "deliver" if kill_at == "delivering" else ""})
        worker.send("pay", agent="other", who="x", amount=5.0)  # no answer may come: frozen delivering
        if kill_at == "delivering":  # frozen: the reporter may never print the intent
            key = worker.event("delivering")["id"]
        else:
            key = worker.event("intent", verdict="deny")["id"]
            worker.event("outcome", id=key)
        worker.kill()
        record = Record(tmp_path)
        intent = record.intent(key)
        assert (intent.verdict, intent.rule, intent.policy_version, intent.error, intent.budgets) == (
            "deny", "default-deny", "v1", "PolicyDenied", {})
        assert len(record.finals(key)) == len(record.settled("other-x")) == (1 if kill_at == "outcome" else 0)

        worker = Worker(tmp_path, bank, 1, {**BUDGET_CONFIG, "grant_other": regrant})
        settled = worker.call("settled", stream="other-x", count=1)["settled"]
        assert [(s["effect_id"], s["ok"], s["error"]) for s in settled] == [(key, False, "PolicyDenied")]
        time.sleep(QUIET)  # delivered once: no second Settled comes
        assert worker.call("settled", stream="other-x", count=2, timeout=0)["settled"] == settled
        if not regrant:  # and it still cannot
            again = worker.call("pay", agent="other", who="x", amount=5.0)
            assert (again["verdict"], again["rule"]) == ("deny", "default-deny")
            assert worker.call("settled", stream="other-x", count=2)["settled"][1]["error"] == "PolicyDenied"
        worker.stop()
    assert bank.requests == []
    record = Record(tmp_path)
    record.check_one_final_each()
    assert [type(r).__name__ for r in record.finals(key)] == ["EffectFailed"]
    assert record.of(EffectSucceeded) == []


# --- the storm ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_budgets_through_a_storm_of_sigkills(tmp_path: Path) -> None:
    """40 workers on one journal, each killed at one of the budget moments (or, one in six,
    stopped cleanly: a checkpoint); each recovers the last one's wire and starts its own. At
    the end the pool is exactly full and each agent's calls exactly used: one charge per
    success, each key applied once at the bank."""
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    rounds, payers = 40, 4
    amounts = [float(10 * (i + 1)) for i in range(rounds)]  # distinct: a pause picks its wire by amount
    calls = Counter(i % payers for i in range(rounds))
    config = {"limit": sum(amounts), "calls": max(calls.values())}
    hits: Counter[str] = Counter()
    with HoldingBank() as bank:
        for run, amount in enumerate(amounts):
            moment = rng.choice([*MOMENTS, "clean stop"])
            pause, hold, _, _ = MOMENTS.get(moment, ("", "", [], False))
            worker = Worker(tmp_path, bank, run, {**config, "pause": pause, "pause_amount": amount})
            bank.hold = hold
            paid = worker.call("pay", agent="payer", who=f"p{run % payers}", amount=amount)
            assert paid["verdict"] == "allow", f"seed {seed} run {run}: {paid}"
            if moment == "clean stop":
                worker.event("outcome", id=paid["id"])
                worker.stop()
            else:
                _kill_at(worker, bank, moment, paid["id"])
            hits[moment] += 1
            Record(tmp_path)  # verifies
        worker = Worker(tmp_path, bank, rounds, config)
        for p in range(payers):
            settled = worker.call("settled", stream=f"payer-p{p}", count=calls[p], timeout=30)["settled"]
            assert [s["ok"] for s in settled] == [True] * calls[p], f"seed {seed}: {settled}"
        expected = {"daily": [sum(amounts), 0.0, sum(amounts)],
                    **{f"calls@payer-p{p}": [float(calls[p]), 0.0, config["calls"]] for p in range(payers)}}
        assert worker.call("budgets")["budgets"] == expected, f"seed {seed}"
        over = worker.call("pay", agent="payer", who="p1", amount=1.0)
        assert over["error"] == "BudgetExceeded", f"seed {seed}: {over}"
        denied = worker.call("settled", stream="payer-p1", count=calls[1] + 1)["settled"][-1]
        assert (denied["effect_id"], denied["error"]) == (over["id"], "BudgetExceeded"), f"seed {seed}: {denied}"
        worker.stop()
        assert fresh_app_balances(tmp_path, bank, config) == expected, f"seed {seed}"
    record = Record(tmp_path)
    record.check_one_final_each()
    assert sorted(r.effect_id for r in record.of(EffectSucceeded)) == sorted(bank.wires)
    assert bank.applied() == bank.posts() == Counter(dict.fromkeys(bank.wires, 1)), f"seed {seed}: {bank.requests}"
    assert record.charged() == {k: v[0] for k, v in expected.items()}
    assert scratch_balances(record, config) == expected, f"seed {seed}"
    print(f"\n{rounds} workers, seed {seed}: {dict(hits)}")
