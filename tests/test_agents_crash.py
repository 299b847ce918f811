"""kill -9 of a worker running durable agents: acknowledged commands survive exactly once.

A real child process (``tests/_procs/agents_crash_worker.py``) runs an
``Application`` of bank ``Account`` agents over 10,000 account ids on a real LMDB
journal (``durability="sync"``), dispatching OpenAccount / Deposit / Withdraw commands
from several concurrent tasks and printing one line per dispatch that *returned* (its
reply or its rejection). The parent SIGKILLs it at a random moment — sometimes while
it is still importing, opening the journal or rehydrating agents, usually after a
random number of acknowledged commands — reopens the journal, checks it, closes it and
starts the next worker on the same directory, so state must carry over every kill.

Every command carries a token unique over the storm (``OpenAccount.owner`` is
``o<token>``, an amount is ``k * 10**8 + token``), so the one event an accepted
command produces names the command. After each kill the parent checks:

* ``journal.verify()`` passes; positions are gap-free; every event seen after an
  earlier kill is still there, unchanged (same id and hash), in the same place;
* every acknowledged accepted command's event is in its account's stream exactly
  once, of the right type and payload; every acknowledged *rejected* command left no
  event; an event whose command was not acknowledged belongs to the one command each
  task had in flight when the kill came (nothing else may write);
* each account stream has gap-free versions, starts with its one ``AccountOpened``,
  never goes negative; its state — ``fold(Account, events)``, ``rehydrate`` through
  its snapshot, and the snapshot itself — is the fold of its events;
* replies match the journal: a Deposit/Withdraw reply is the balance at the version
  its event was written at; a rejection is one the agent could give having seen at
  least everything durable before the command was sent (``not_open`` only for an
  account with nothing durable yet, ``insufficient_funds`` with a balance the stream
  really had, at or after that point). Each worker first probes some accounts, one at
  a time, with an impossible withdrawal: the balance (or ``not_open``) it answers is
  exactly the fold of what the journal held when it started.

At the end a last worker activates every account touched (plus untouched ones) at
once and probes them all: each live agent's state equals the fold of its stream.

Set ``Z8_CRASH_SEED`` to replay a failing run (the seed is in every failure message).
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pytest
from _child_output import ChildOutput

from z8.actors import SYSTEM_STREAM, fold, register_system_types
from z8.effects import OUTBOX_STREAM
from z8.actors._agent import rehydrate
from z8.journal import Journal, open_journal

ROOT = Path(__file__).resolve().parents[1]
if "bank" not in sys.modules:  # test_agents loads examples/bank.py as "bank" too
    _spec = importlib.util.spec_from_file_location("bank", ROOT / "examples" / "bank.py")
    _bank = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
    sys.modules["bank"] = _bank
    _spec.loader.exec_module(_bank)  # type: ignore[union-attr]
from bank import Account, AccountOpened, AccountState, Deposited, Withdrawn, bank_types  # noqa: E402

WORKER = Path(__file__).parent / "_procs" / "agents_crash_worker.py"
STARTUP_TIMEOUT = 30.0
AUDIT_TIMEOUT = 120.0
EARLY_KILL_SHARE = 0.15
"""Share of kills that land at a random moment after spawn, without waiting for output."""
PROBE_KILL_SHARE = 0.1
"""Share of kills that land among the probes (agents being activated and rehydrated)."""
# The worker's token scheme (see its docstring).
TOKEN_RUN, TOKEN_TASK, AMOUNT_UNIT, PROBE_TASK = 10**6, 10**5, 10**8, 9
STREAM_PREFIX = "account-"
KINDS = {"O": AccountOpened, "D": Deposited, "W": Withdrawn}


def _parse(raw: list[bytes], ctx: str) -> list[dict[str, Any]]:
    if raw and raw[0] == b'"READY"':
        raw = raw[1:]
    assert b'"READY"' not in raw, f"{ctx}: READY printed twice"
    lines = [json.loads(line) for line in raw]
    errors = [line for line in lines if "error" in line]
    assert not errors, f"{ctx}: a dispatch failed with neither a reply nor a rejection: {errors[:5]}"
    return lines


class _Stream:
    """What the parent knows of one account stream: its events, in version order."""

    __slots__ = ("tokens", "balances", "owner")

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.balances: list[int] = [0]
        """``balances[v]``: the balance once version ``v`` is applied (0 for an empty stream)."""
        self.owner = ""

    @property
    def version(self) -> int:
        return len(self.tokens)


class _Storm:
    def __init__(self, tmp_path: Path, accounts: int, tasks: int, probes: int, max_lines: int) -> None:
        self.seed = int(os.environ.get("Z8_CRASH_SEED", random.randrange(1 << 32)))
        self.rng = random.Random(self.seed)
        self.tmp_path, self.path = tmp_path, tmp_path / "journal"
        self.accounts, self.tasks, self.probes, self.max_lines = accounts, tasks, probes, max_lines
        self.history: list[tuple[str, bytes]] = []  # (event id, hash) of every event seen so far, in log order
        self.streams: dict[str, _Stream] = defaultdict(_Stream)
        self.where: dict[int, tuple[str, int, str, int | str]] = {}
        """token -> (stream, version, kind, amount or owner) of the event it wrote."""
        self.acked: dict[int, dict[str, Any]] = {}  # token -> the worker's line
        self.unacked_written: list[int] = []  # tokens written by the current run without an acknowledgement
        self.agent = Account.__new__(Account)  # evolve/State only: no runtime needed
        self.stats: dict[str, int] = defaultdict(int)
        self.commanded: set[str] = set()  # accounts whose agents took a command (and so were activated)

    def ctx(self, run: int | str) -> str:
        return f"Z8_CRASH_SEED={self.seed} accounts={self.accounts} run {run}"

    # --- the children ----------------------------------------------------------------

    def _args(self, run: int, *extra: str) -> list[str]:
        return [
            sys.executable, str(WORKER), str(self.path), str(run), str(self.rng.randrange(1 << 30)),
            str(self.accounts), str(self.tasks), str(self.probes), *extra,
        ]

    def kill_one(self, run: int, kills: int) -> list[dict[str, Any]]:
        """Start a worker, SIGKILL it at a random moment, return its acknowledged commands."""
        ctx = self.ctx(f"{run + 1}/{kills}")
        stderr_file = self.tmp_path / f"worker-{run}.stderr"
        with open(stderr_file, "wb") as stderr:
            proc = subprocess.Popen(self._args(run), stdout=subprocess.PIPE, stderr=stderr, bufsize=0)
        output = ChildOutput(proc)
        try:
            roll = self.rng.random()
            if roll < EARLY_KILL_SHARE:
                time.sleep(self.rng.uniform(0.0, 0.6))  # import, journal open, app start, first probes
            else:
                wanted = self.probes + self.rng.randint(1, self.max_lines)
                if roll < EARLY_KILL_SHARE + PROBE_KILL_SHARE:
                    wanted = self.rng.randint(0, self.probes)
                output.read_until(1 + wanted, time.monotonic() + STARTUP_TIMEOUT)
                if self.rng.random() < 0.5:
                    time.sleep(self.rng.uniform(0.0, 0.005))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            output.drain(time.monotonic() + 30)  # lines already in the pipe were acknowledged too
        except TimeoutError as exc:
            pytest.fail(f"{ctx}: {exc}; worker stderr:\n{stderr_file.read_text(errors='replace')[-4000:]}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
        if proc.returncode != -signal.SIGKILL:
            pytest.fail(
                f"{ctx}: the worker exited with {proc.returncode} before it was killed:\n"
                f"{stderr_file.read_text(errors='replace')[-4000:]}"
            )
        return _parse(output.lines, ctx)

    def audit(self, run: int, ids: list[str]) -> list[dict[str, Any]]:
        """A last worker, not killed: activate every listed account at once and probe it."""
        ctx = self.ctx("audit")
        ids_file = self.tmp_path / "audit-ids.json"
        ids_file.write_text(json.dumps(ids))
        stderr_file = self.tmp_path / "audit.stderr"
        with open(stderr_file, "wb") as stderr:
            proc = subprocess.run(
                self._args(run, "audit", str(ids_file)), stdout=subprocess.PIPE, stderr=stderr, timeout=AUDIT_TIMEOUT,
            )
        assert proc.returncode == 0, (
            f"{ctx}: exit {proc.returncode}:\n{stderr_file.read_text(errors='replace')[-4000:]}"
        )
        raw = proc.stdout.split(b"\n")
        assert raw[-1] == b"", f"{ctx}: the audit's output ends mid-line"
        lines = _parse(raw[:-1], ctx)
        assert lines and lines[-1].get("done"), f"{ctx}: the audit did not finish: {lines[-3:]}"
        alive = lines.pop()["alive"]
        assert alive == len(ids), f"{ctx}: {alive} account agents alive at the end of the audit, {len(ids)} probed"
        return lines

    # --- the checks ------------------------------------------------------------------

    def check(self, run: int, lines: list[dict[str, Any]], ctx: str, *, audit: bool = False) -> None:
        """Reopen the journal after a run and check it against the run's acknowledgements."""
        types = register_system_types(bank_types())
        journal = open_journal(self.path, types=types)  # one open per path per process: closed below
        try:
            by_task = self._register_acks(run, lines, ctx)
            before = {name: stream.version for name, stream in self.streams.items()}
            self.unacked_written = []
            self._check_log(journal, ctx)
            touched = [name for name, stream in self.streams.items() if stream.version != before.get(name, 0)]
            if audit:
                assert not touched, f"{ctx}: probes (all refused) wrote to {touched[:5]}"
            self._check_acks(run, by_task, before, ctx, audit=audit)
            for name in touched:
                self._check_stream(journal, name, ctx)
        finally:
            journal.close()

    def _register_acks(self, run: int, lines: list[dict[str, Any]], ctx: str) -> dict[int, list[dict[str, Any]]]:
        """Index a run's acknowledgements by token and by task (in the task's order)."""
        by_task: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for line in lines:
            token = line["t"]
            assert token // TOKEN_RUN == run, f"{ctx}: a line from another run: {line}"
            assert token not in self.acked, f"{ctx}: token {token} acknowledged twice"
            self.acked[token] = line
            by_task[token // TOKEN_TASK % 10].append(line)
        for task, task_lines in by_task.items():
            seqs = [line["t"] % TOKEN_TASK for line in task_lines]
            assert seqs == list(range(len(seqs))), f"{ctx}: task {task} acknowledged out of order: {seqs[:20]}"
        return by_task

    def _check_log(self, journal: Journal, ctx: str) -> None:
        report = journal.verify()
        assert report.ok, f"{ctx}: verify() failed: {report}"
        head = journal.head_position()
        assert report.head_position == head and report.checked == head, f"{ctx}: {report} vs head {head}"
        log = journal.read_all()
        assert [e.position for e in log] == list(range(1, head + 1)), f"{ctx}: positions are not gap-free 1..{head}"
        seen = [(e.event_id, e.hash) for e in log[: len(self.history)]]
        assert seen == self.history, f"{ctx}: events seen after an earlier kill changed or vanished"
        for envelope in log[len(self.history):]:
            self.history.append((envelope.event_id, envelope.hash))
            self.stats["events"] += 1
            event = journal.decode(envelope)  # every stored event decodes with the app's registry
            if envelope.stream in (SYSTEM_STREAM, OUTBOX_STREAM):  # the runtime's own records
                continue
            self._record_event(envelope.stream, envelope.version, event, ctx)
        ids = {event_id for event_id, _ in self.history}
        assert len(ids) == len(self.history), f"{ctx}: an event id is stored twice"

    def _record_event(self, name: str, version: int, event: Any, ctx: str) -> None:
        """Check one new account event in isolation and against its stream so far."""
        where = f"{ctx}: {name} v{version} {event!r}"
        assert name.startswith(STREAM_PREFIX), f"{where}: a stream no command routes to"
        assert 0 <= int(name[len(STREAM_PREFIX):]) < self.accounts, f"{where}: an account no worker used"
        stream = self.streams[name]
        assert version == stream.version + 1, f"{where}: version {version}, {stream.version + 1} was due (a gap)"
        if isinstance(event, AccountOpened):
            assert version == 1, f"{where}: opened again (or after other events)"
            assert event.owner.startswith("o"), f"{where}: not an owner the worker gave"
            token, stream.owner, balance, kind, payload = int(event.owner[1:]), event.owner, 0, "O", event.owner
        else:
            assert isinstance(event, (Deposited, Withdrawn)), f"{where}: not a bank event"
            assert version > 1, f"{where}: money moved in an account never opened"
            assert event.amount > 0, f"{where}: a non-positive amount was accepted"
            token = event.amount % AMOUNT_UNIT
            sign, kind, payload = (1, "D", event.amount) if isinstance(event, Deposited) else (-1, "W", event.amount)
            balance = stream.balances[-1] + sign * event.amount
            assert balance >= 0, f"{where}: the balance went negative ({balance})"
        assert token not in self.where, (
            f"{where}: token {token} already written at {self.where[token]} (a command applied twice)"
        )
        self.where[token] = (name, version, kind, payload)
        stream.tokens.append(token)
        stream.balances.append(balance)
        if token not in self.acked:  # only the command its task had in flight may have written it
            self.unacked_written.append(token)

    def _check_acks(
        self, run: int, by_task: dict[int, list[dict[str, Any]]], before: dict[str, int], ctx: str, *, audit: bool
    ) -> None:
        """Check this run's acknowledgements against the journal, task by task in order."""
        for task, task_lines in by_task.items():
            if task == PROBE_TASK:
                for line in task_lines:
                    self._check_probe(line, before, ctx)
                continue
            assert not audit, f"{ctx}: the audit ran commands"
            floors: dict[str, int] = {}  # account -> newest version this task saw acknowledged
            for line in task_lines:
                name = STREAM_PREFIX + line["a"]
                self.commanded.add(name)
                floor = max(before.get(name, 0), floors.get(name, 0))
                version = self._check_line(line, name, floor, ctx)
                if version is not None:
                    floors[name] = version
        # An event nobody acknowledged: the command its task had in flight when the kill came.
        for token in self.unacked_written:
            task = token // TOKEN_TASK % 10
            in_flight = (run, len(by_task.get(task, ())))
            assert (token // TOKEN_RUN, token % TOKEN_TASK) == in_flight, (
                f"{ctx}: token {token} ({self.where[token]}) was written without being acknowledged, and it is "
                f"not the command task {task} had in flight (run {run}, seq {in_flight[1]})"
            )
            self.stats["in_flight_written"] += 1
        missing = [t for t, line in self.acked.items() if "r" in line and t not in self.where]
        assert not missing, (
            f"{ctx}: {len(missing)} acknowledged commands have no event, e.g. {[self.acked[t] for t in missing[:3]]}"
        )

    def _check_line(self, line: dict[str, Any], name: str, floor: int, ctx: str) -> int | None:
        """One acknowledged command of a task; returns the version it wrote, if any."""
        token, kind, stream = line["t"], line["k"], self.streams.get(name)
        where = f"{ctx}: {line}"
        if "r" in line:
            self.stats["accepted"] += 1
            assert kind in KINDS, f"{where}: accepted, but the command could only be refused"
            assert token in self.where, f"{where}: acknowledged, but its event is not in the journal"
            stream_name, version, written, payload = self.where[token]
            assert stream_name == name, f"{where}: its event went to {stream_name}"
            assert (written, payload) == (kind, line.get("m", f"o{token}")), (
                f"{where}: its event is {written} {payload}"
            )
            assert stream is not None and version > floor, f"{where}: written at v{version}, at or below v{floor}"
            expected = "opened" if kind == "O" else stream.balances[version]
            assert line["r"] == expected, f"{where}: replied {line['r']}, the journal says {expected} at v{version}"
            return version
        self.stats["rejected"] += 1
        reason = line["x"]
        assert token not in self.where, f"{where}: refused, but an event was written at {self.where[token]}"
        if kind in ("ID", "IW"):
            assert reason == "invalid_amount", f"{where}: a non-positive amount refused for another reason"
        elif reason == "not_open":
            assert floor == 0, f"{where}: refused as not open, yet v{floor} was durable before it was sent"
        elif reason == "already_open":
            assert kind == "O" and stream is not None and stream.version >= 1, f"{where}: nothing opened it"
        elif reason == "insufficient_funds":
            balance = line["d"]["balance"]
            assert kind == "W" and line["m"] > balance, f"{where}: refused although the funds were there"
            assert stream is not None and any(
                stream.balances[v] == balance for v in range(max(floor, 1), stream.version + 1)
            ), f"{where}: balance {balance} is no balance the stream had at v{floor} or later"
        else:
            pytest.fail(f"{where}: unexpected rejection")
        return None

    def _check_probe(self, line: dict[str, Any], before: dict[str, int], ctx: str) -> None:
        """A probe ran before any other command of its worker: it saw exactly the journal."""
        name = STREAM_PREFIX + line["a"]
        version = before.get(name, 0)
        where = f"{ctx}: probe {line} with {name} at v{version}"
        assert line["k"] == "P" and "r" not in line, f"{where}: an impossible withdrawal was accepted"
        self.stats["probes"] += 1
        if version == 0:
            assert line["x"] == "not_open", f"{where}: the stream is empty"
        else:
            assert line["x"] == "insufficient_funds", f"{where}: the account is open"
            expected = self.streams[name].balances[version]
            assert line["d"]["balance"] == expected, (
                f"{where}: the agent rehydrated balance {line['d']['balance']}, the fold of its stream is {expected}"
            )

    def _check_stream(self, journal: Journal, name: str, ctx: str) -> None:
        """One changed stream: store, fold, rehydration and snapshot all agree."""
        stream = self.streams[name]
        where = f"{ctx}: {name}"
        assert journal.stream_version(name) == stream.version, f"{where}: stream_version disagrees with the log"
        envelopes = journal.read_stream(name)
        assert [e.version for e in envelopes] == list(range(1, stream.version + 1)), f"{where}: read_stream has gaps"
        assert [e.event_id for e in envelopes] == [
            self.history[e.position - 1][0] for e in envelopes
        ], f"{where}: read_stream disagrees with the log"
        events = [journal.decode(e) for e in envelopes]
        folded = fold(Account, events)
        assert folded == AccountState("open", stream.owner, stream.balances[-1]), (
            f"{where}: fold gives {folded}, the events sum to {stream.balances[-1]}"
        )
        state, version = rehydrate(self.agent, journal, name)
        assert (state, version) == (folded, stream.version), (
            f"{where}: rehydrate gives {state} at v{version}, the fold is {folded} at v{stream.version}"
        )
        snapshot = journal.load_snapshot(name)
        if snapshot is not None:
            self.stats["snapshots"] += 1
            assert 1 <= snapshot.version <= stream.version, f"{where}: a snapshot at v{snapshot.version}"
            saved = msgspec.msgpack.decode(snapshot.data, type=AccountState)
            assert saved == fold(Account, events[: snapshot.version]), (
                f"{where}: the snapshot at v{snapshot.version} is {saved}, not the fold of its events"
            )


def _crash_storm(
    tmp_path: Path, *, kills: int, accounts: int, tasks: int, probes: int, max_lines: int, audit_untouched: int | None
) -> None:
    storm = _Storm(tmp_path, accounts, tasks, probes, max_lines)
    started = time.monotonic()
    for run in range(kills):
        lines = storm.kill_one(run, kills)
        storm.stats["lines"] += len(lines)
        storm.check(run, lines, storm.ctx(f"{run + 1}/{kills}"))
    storm_time = time.monotonic() - started
    stats = storm.stats
    storm_probes, commanded = stats["probes"], len(storm.commanded)
    longest = max((stream.version for stream in storm.streams.values()), default=0)
    ids = [name[len(STREAM_PREFIX):] for name in storm.streams]
    untouched = [str(i) for i in range(accounts) if STREAM_PREFIX + str(i) not in storm.streams]
    if audit_untouched is not None:
        untouched = storm.rng.sample(untouched, min(audit_untouched, len(untouched)))
    ids += untouched
    storm.rng.shuffle(ids)
    audit_lines = storm.audit(kills, ids)
    assert sorted(line["a"] for line in audit_lines) == sorted(ids), f"{storm.ctx('audit')}: not every account answered"
    storm.check(kills, audit_lines, storm.ctx("audit"), audit=True)
    print(
        f"\n{kills} kills over {accounts} accounts: {stats['lines']} acknowledged commands ({stats['accepted']} "
        f"accepted, {stats['rejected']} refused, {storm_probes} probes), {stats['in_flight_written']} written while "
        f"in flight; {commanded} accounts commanded, {len(storm.streams)} opened, longest stream {longest}, "
        f"{stats['snapshots']} snapshot checks; {stats['events']} events in the log; audit of {len(ids)} live "
        f"agents; storm {storm_time:.1f}s, total {time.monotonic() - started:.1f}s, seed {storm.seed}"
    )
    assert stats["accepted"] > 0 and stats["rejected"] > 0, "nothing accepted or nothing refused: proved nothing"
    assert storm_probes > 0 and len(storm.streams) > 0, "no probe answered, or no account opened: proved nothing"


def test_acknowledged_commands_survive_sigkill(tmp_path: Path) -> None:
    """~10 kills of a worker over 10,000 account ids (a subset touched per run)."""
    _crash_storm(tmp_path, kills=10, accounts=10_000, tasks=6, probes=20, max_lines=2000, audit_untouched=200)


@pytest.mark.slow
def test_acknowledged_commands_survive_sigkill_storm(tmp_path: Path) -> None:
    """50 kills over 10,000 agents; the audit activates all 10,000 at once."""
    _crash_storm(tmp_path, kills=50, accounts=10_000, tasks=8, probes=100, max_lines=4000, audit_untouched=None)
