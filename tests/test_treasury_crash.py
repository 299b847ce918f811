"""kill -9 of a treasury worker: every intended wire reaches the bank exactly once, none stuck.

The bank (``examples/_bank_server.py``) is a real HTTP server in this process, on
127.0.0.1. It answers orders and balance reads 15-60 ms after acting on them and loses
5% of its answers to orders on purpose; every balance read finds one more late credit.
A real child process (``tests/_procs/treasury_worker.py``) runs the example's treasury
application on one LMDB journal and closes business days (10 accounts each: about nine
sweeps and a hedge a day, then one ledger entry); the test SIGKILLs it at a chosen
moment, checks the journal against the bank, and starts the next worker on the same
journal. The moments, in turn (k is 1-3, drawn each time):

* ``early``: anywhere in the worker's first 1.2 s (import, journal open, recovery, wires);
* ``ready``: 0-100 ms after the application started: while recovery asks the bank
  about what the last worker left;
* ``apply``: 0-2 ms after the bank applied this worker's k-th order, its reply held back;
* ``reply``: as soon as the bank sent its k-th reply, before the worker journals it;
* ``journaled``: as soon as the worker printed that the k-th outcome was committed.

The calendar grows so that every worker starts with at least two days to close. After
each kill the test records which phases the kill caught (an intent the bank never saw;
an order of this worker applied with no outcome journaled, its reply not yet sent or
sent; a kill just after an outcome was journaled; recovery's status queries) and checks:
the chain verifies; every outcome the worker saw committed is there; nothing reached the
bank without its intent journaled first, or as another order than the intent's; no day
was planned twice; no request for an effect settled before this worker started; and the
first request for an effect intended before it is the status query (recovery asks
before it re-sends; an irreversible effect that is not idempotent is never sent twice).
At the end a last worker runs to completion: every wire and ledger intent has exactly
one order applied at the bank and a final ``EffectSucceeded`` in the journal, each one a
kill caught applied but not journaled with ``resolved=True``; none stuck; no order wired
under two keys; each day closed once, with one plan made from its journaled balance read
and one ledger entry.

Set ``Z8_CRASH_SEED`` to replay a failing run (the seed is in every failure message).
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
from _child_output import ChildOutput

import z8
from z8.actors import register_system_types
from z8.effects import EffectIntended, EffectSucceeded
from z8.journal import open_journal

ROOT = Path(__file__).resolve().parents[1]
if "treasury" not in sys.modules:  # examples/ is no package: load the example by path, once
    _spec = importlib.util.spec_from_file_location("treasury", ROOT / "examples" / "treasury.py")
    _treasury = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
    sys.modules["treasury"] = _treasury
    _spec.loader.exec_module(_treasury)  # type: ignore[union-attr]
import treasury  # noqa: E402
from _bank_server import Bank, Seen  # noqa: E402 - on sys.path once the example is loaded

WORKER = Path(__file__).parent / "_procs" / "treasury_worker.py"
ACCOUNTS = 10
OPEN_DAYS = 2
"""Days still to close when a worker starts: it never runs out of wires before the kill."""
FIRST_DAY = datetime.date(2024, 7, 1)
STRATEGIES = ("early", "ready", "apply", "reply", "journaled")
REPLY_DELAY = (0.015, 0.06)
LOSE_SHARE = 0.05
WAIT = 10.0
"""Seconds to wait for a worker's READY, or for the bank to see the moment to kill at."""
ORDERS = ("/wires", "/ledger")
FINAL = (EffectSucceeded, z8.effects.EffectFailed, z8.effects.EffectStuck)


class _Storm:
    def __init__(self, tmp_path: Path) -> None:
        self.seed = int(os.environ.get("Z8_CRASH_SEED", random.randrange(1 << 32)))
        self.rng = random.Random(self.seed)
        self.tmp_path, self.path = tmp_path, tmp_path / "journal"
        self.bank = Bank(self.books, reply_delay=REPLY_DELAY, lose_share=LOSE_SHARE, seed=self.seed)
        self.days: list[str] = []
        self.closed: set[str] = set()
        self.intents: dict[str, EffectIntended] = {}  # effect id -> intent, as of the last kill
        self.finals: dict[str, Any] = {}  # effect id -> its final outcome, as of the last kill
        self.posted: set[str] = set()  # keys the bank ever got an order for
        self.gaps: set[str] = set()  # keys a kill caught applied at the bank with no outcome journaled
        self.phases: Counter[str] = Counter()
        self.reads: Counter[str] = Counter()  # day -> GET /balances the bank answered
        self.last_phases: list[str] = []
        self.by_strategy: dict[str, Counter[str]] = {s: Counter() for s in STRATEGIES}
        self.records: list[Any] = []

    def ctx(self, run: int | str) -> str:
        return f"Z8_CRASH_SEED={self.seed} run {run}"

    def books(self, day: str) -> list[dict[str, Any]] | None:
        """The bank's balances for ``day``; every read finds one more late credit on the first
        account, so a plan made twice, or from another read than the journaled one, shows."""
        if day not in self.days:
            return None
        with self.bank.changed:  # called from the bank's threads
            self.reads[day] += 1
            late = 100 * self.reads[day]
        rng = random.Random(f"{self.seed}/{day}")
        keep, hedge_at = treasury.KEEP_MINOR, treasury.HEDGE_AT_MINOR
        accounts = [{"account": f"{ccy}-OPS-{i:02d}", "currency": ccy, "balance_minor": rng.randint(keep // 2, 4 * keep)}
                    for i, ccy in enumerate(["USD", "EUR", "GBP"] * (ACCOUNTS // 3) + ["USD"] * (ACCOUNTS % 3))]
        accounts[0]["balance_minor"] += late
        return [*accounts, {"account": "AUD-OPS", "currency": "AUD", "balance_minor": -rng.randint(0, 3 * hedge_at)}]

    # --- the children ----------------------------------------------------------------

    def spawn(self, run: int, *, finish: bool = False) -> tuple[subprocess.Popen[bytes], Path]:
        still_open = [day for day in self.days if day not in self.closed]
        while len(still_open) < OPEN_DAYS:
            day = (FIRST_DAY + datetime.timedelta(days=len(self.days))).isoformat()
            self.days.append(day)
            still_open.append(day)
        stderr_file = self.tmp_path / f"worker-{run}.stderr"
        args = [sys.executable, str(WORKER), str(self.path), self.bank.url, str(run), json.dumps(still_open)]
        with open(stderr_file, "wb") as stderr:
            proc = subprocess.Popen([*args, *(["finish"] if finish else [])], stdout=subprocess.PIPE,
                                    stderr=stderr, bufsize=0)
        return proc, stderr_file

    def kill_one(self, run: int, strategy: str) -> None:
        start = len(self.bank.requests)
        proc, stderr_file = self.spawn(run)
        output = ChildOutput(proc)
        try:
            moment = self._wait_for_moment(run, strategy, output, start)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
        if proc.returncode != -signal.SIGKILL:
            pytest.fail(f"{self.ctx(run)}: the worker exited with {proc.returncode} before it was killed:\n"
                        f"{stderr_file.read_text(errors='replace')[-4000:]}")
        self.bank.wait_idle()  # what the dead worker sent is applied (or not) for good now
        self.phases[f"strategy:{strategy}"] += 1
        if not moment:
            self.phases["moment missed"] += 1
        elif strategy == "journaled":
            self.phases["just after an outcome was journaled"] += 1
        self.observe(run, start, output.lines)
        self.by_strategy[strategy].update(self.last_phases)

    def _wait_for_moment(self, run: int, strategy: str, output: ChildOutput, start: int) -> bool:
        """Sleep until the moment ``strategy`` kills at; False if it never came (killed anyway)."""
        if strategy == "early":
            time.sleep(self.rng.uniform(0.0, 1.2))
            return True
        if not _wait_for_line(output, lambda line: line == b"READY", 1):
            return False
        k, caller = self.rng.randint(1, 3), str(run)
        if strategy == "ready":
            time.sleep(self.rng.uniform(0.0, 0.1))
            return True
        if strategy == "journaled":
            return _wait_for_line(output, lambda line: line.startswith(b"OUTCOME "), k)

        def orders(seen: Seen) -> bool:
            return seen.method == "POST" and seen.caller == caller and seen.outcome in ("applied", "replayed")

        if strategy == "apply":  # the bank holds the reply back REPLY_DELAY[0] at least
            came = self._bank_wait(lambda: sum(map(orders, self.bank.requests[start:])) >= k)
            time.sleep(self.rng.uniform(0.0, 0.002))
            return came
        # at once: the worker journals an answer within a few milliseconds of getting it
        return self._bank_wait(lambda: sum(orders(s) and s.replied for s in self.bank.requests[start:]) >= k)

    def _bank_wait(self, predicate: Any) -> bool:
        with self.bank.changed:
            return self.bank.changed.wait_for(predicate, WAIT)

    def finish(self, run: int) -> None:
        """A last worker, not killed: it closes every open day and exits."""
        start = len(self.bank.requests)
        proc, stderr_file = self.spawn(run, finish=True)
        try:
            out, _ = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        assert proc.returncode == 0, (
            f"{self.ctx('finish')}: exit {proc.returncode}:\n{stderr_file.read_text(errors='replace')[-4000:]}"
        )
        self.bank.wait_idle()
        self.observe(run, start, out.split(b"\n"))

    # --- the checks ------------------------------------------------------------------

    def observe(self, run: int, start: int, lines: list[bytes]) -> None:
        """Read the journal after a run; check it against the bank; note the phases the kill caught."""
        ctx = self.ctx(run)
        journal = open_journal(self.path, types=register_system_types(z8.TypeRegistry(treasury.EVENTS)))
        try:
            report = journal.verify()
            assert report.ok, f"{ctx}: verify() failed: {report}"
            self.records = [(e.stream, journal.decode(e)) for e in journal.read_all()]
        finally:
            journal.close()
        intents = {r.effect_id: r for _, r in self.records if isinstance(r, EffectIntended)}
        finals = {r.effect_id: r for _, r in self.records if isinstance(r, FINAL)}
        self.closed = {stream.removeprefix("treasury-") for stream, r in self.records
                       if isinstance(r, treasury.DayClosed)}
        requests = self.bank.requests[start:]
        self._check_run(ctx, requests, intents)
        for line in lines:  # what the worker saw committed is durable
            if line.startswith(b"OUTCOME "):
                key = line.split(b" ", 1)[1].decode()
                assert key in finals, f"{ctx}: the worker saw {key}'s outcome journaled; it is gone after the kill"
        self._note_phases(requests, intents, finals)
        self.intents, self.finals = intents, finals

    def _check_run(self, ctx: str, requests: list[Seen], intents: dict[str, EffectIntended]) -> None:
        plans = Counter(stream for stream, r in self.records if isinstance(r, treasury.PlanDecided))
        assert max(plans.values(), default=0) <= 1, f"{ctx}: a day was planned twice: {plans.most_common(2)}"
        for book in (self.bank.wires, self.bank.ledger):
            for key, order in book.items():
                assert key in intents, f"{ctx}: the bank applied {key} with no intent journaled before it"
                assert {k: v for k, v in order.items() if k != "id"} == intents[key].request, (
                    f"{ctx}: the bank applied {key} as {order}, the intent says {intents[key].request}"
                )
        first: dict[str, Seen] = {}
        for seen in requests:
            if seen.key:
                first.setdefault(seen.key, seen)
                assert seen.key not in self.finals, (
                    f"{ctx}: {seen.method} {seen.path} for {seen.key}, settled before this run: "
                    f"{self.finals[seen.key]!r}"
                )
        for key, seen in first.items():
            if key in self.intents:  # intended before this run, unsettled: recovery asks first
                assert seen.method == "GET", f"{ctx}: {key} was re-sent after a restart without a status query"
        for intent in intents.values():
            if intent.kind == "irreversible" and not intent.idempotent:
                posts = sum(1 for s in self.bank.requests if s.method == "POST" and s.key == intent.effect_id)
                assert posts <= 1, f"{ctx}: non-idempotent {intent.effect_id} was fired {posts} times"

    def _note_phases(self, requests: list[Seen], intents: dict[str, EffectIntended], finals: dict[str, Any]) -> None:
        posts = [s for s in requests if s.method == "POST" and s.path in ORDERS]
        self.posted.update(s.key for s in posts)
        pending = {key for key, i in intents.items() if key not in finals and i.effect != "read_balances"}
        applied = pending & (set(self.bank.wires) | set(self.bank.ledger))
        phases = {
            "no request": not requests,
            "resolving": any(s.method == "GET" and s.key for s in requests),
            "before request": bool(pending - self.posted),
            "applied, no outcome": bool(applied & {s.key for s in posts}),
            "applied, reply not sent": any(s.key in applied and not s.replied and not s.lost for s in posts),
            "reply sent, not journaled": any(s.key in applied and s.replied for s in posts),
        }
        self.last_phases = [name for name, hit in phases.items() if hit]
        self.phases.update(self.last_phases)
        self.gaps |= applied

    def check_end(self, ctx: str) -> dict[str, int]:
        wires = {k: i for k, i in self.intents.items() if i.effect == "wire"}
        posts = {k: i for k, i in self.intents.items() if i.effect == "post_ledger"}
        assert sorted(self.bank.wires) == sorted(wires), f"{ctx}: wires at the bank != wire intents"
        assert sorted(self.bank.ledger) == sorted(posts), f"{ctx}: ledger entries at the bank != posting intents"
        for key in self.intents:
            assert isinstance(self.finals.get(key), EffectSucceeded), f"{ctx}: {key} ended {self.finals.get(key)!r}"
            if key in wires or key in posts:
                applied = self.bank.count("POST", "/", key=key, outcome="applied")
                assert applied == 1, f"{ctx}: {key} was applied {applied} times"
        unresolved = [k for k in self.gaps if not self.finals[k].resolved]
        assert not unresolved, f"{ctx}: caught between apply and journal, not resolved by the query: {unresolved}"
        assert not any(isinstance(r, z8.effects.EffectStuck) for _, r in self.records), f"{ctx}: an effect got stuck"
        orders = Counter((w["day"], w["source"], w["purpose"]) for w in self.bank.wires.values())
        assert max(orders.values()) == 1, f"{ctx}: one order wired under two keys: {orders.most_common(1)}"
        assert self.closed == set(self.days), f"{ctx}: days left open: {set(self.days) - self.closed}"
        for day in self.days:
            stream = [r for s, r in self.records if s == f"treasury-{day}"]
            kinds = Counter(type(r).__name__ for r in stream)
            assert kinds["PlanDecided"] == kinds["DayClosed"] == 1, f"{ctx}: {day}: {kinds}"
            (plan,) = [r for r in stream if isinstance(r, treasury.PlanDecided)]
            (read,) = [r for r in stream if isinstance(r, EffectSucceeded) and r.effect == "read_balances"]
            orders, _ = treasury.sweep_plan(day, msgspec.convert(read.result, list[treasury.Balance]))
            assert [w.order for w in plan.wires] == orders, f"{ctx}: {day}: the plan is not the journaled read's"
            day_wires = sorted(k for k in wires if k.startswith(f"treasury-{day}/"))
            assert sorted(w.key for w in plan.wires) == day_wires, f"{ctx}: {day}: the plan names other wires"
            assert sum(w["day"] == day for w in self.bank.ledger.values()) == 1, f"{ctx}: {day}: ledger != 1"
        resolved = sum(1 for k in wires if self.finals[k].resolved)
        return {"days": len(self.days), "re-read days": sum(n > 1 for n in self.reads.values()),
                "wires": len(wires), "resolved": resolved,
                "requests": len(self.bank.requests), "lost replies": self.bank.count("POST", "/", lost=True)}


def _wait_for_line(output: ChildOutput, wanted: Any, count: int) -> bool:
    """Read the child's stdout until ``count`` lines are ``wanted`` (others are ignored)."""
    deadline = time.monotonic() + WAIT
    while sum(map(wanted, output.lines)) < count and not output.eof:
        try:
            output.read_until(len(output.lines) + 1, deadline)
        except TimeoutError:
            return False
    return sum(map(wanted, output.lines)) >= count


def _crash_storm(tmp_path: Path, *, kills: int, least: int) -> None:
    storm = _Storm(tmp_path)
    started = time.monotonic()
    with storm.bank:
        order = [STRATEGIES[i % len(STRATEGIES)] for i in range(kills)]
        storm.rng.shuffle(order)
        for run, strategy in enumerate(order):
            storm.kill_one(run, strategy)
        storm.finish(kills)
    totals = storm.check_end(storm.ctx("end"))
    phases = dict(sorted(storm.phases.items()))
    print(f"\n{kills} kills in {time.monotonic() - started:.1f}s, seed {storm.seed}: {totals}\nphases: {phases}")
    for strategy, hits in storm.by_strategy.items():
        print(f"  {strategy}: {dict(sorted(hits.items()))}")
    assert totals["wires"] >= 20, f"{storm.ctx('end')}: only {totals['wires']} wires: proved little"
    for phase in ("before request", "applied, no outcome", "applied, reply not sent", "reply sent, not journaled",
                  "just after an outcome was journaled", "resolving"):
        assert storm.phases[phase] >= least, f"{storm.ctx('end')}: phase {phase!r} hit {storm.phases[phase]} times"


def test_wires_reach_the_bank_once_through_sigkill(tmp_path: Path) -> None:
    """20 kills of the treasury worker (4 at each moment)."""
    _crash_storm(tmp_path, kills=20, least=3)


@pytest.mark.slow
def test_wires_reach_the_bank_once_through_a_sigkill_storm(tmp_path: Path) -> None:
    """100 kills of the treasury worker."""
    _crash_storm(tmp_path, kills=100, least=10)
