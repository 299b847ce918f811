"""An AI agent fleet: 1,000 triage runs against a real model server, a SIGKILL half-way, no step asked twice.

    python examples/ai_fleet.py [--runs N] [--latency S] [--dir DIR]

1. A local OpenAI-compatible model server starts on 127.0.0.1 (``examples/_llm_server.py``,
   its own process): every answer takes ``--latency`` (20 ms), and it plays a ReAct model
   (three ``lookup_customer`` calls, then an answer). It counts every request by its
   ``Idempotency-Key``: the model call's effect id, the same on every re-send.
2. A worker process starts ``--runs`` runs of the seed's ``Triage`` agent at once, over
   HTTP (``z8.ai.OpenAIProvider``); each run is four model steps and three tool steps.
3. Half-way through the model steps the worker is killed with SIGKILL.
4. This process reopens the journal: the runtime re-issues the calls that were in flight
   at the kill, under the same keys, and every run carries on from its last journaled step.
5. Checks: every run finished exactly once (one ``RunFinished``, answered, 7 steps); the
   server saw one key per model step, and no key whose answer the journal held at the
   kill was ever sent again (a key seen twice was in flight at the kill); every run
   replays from its journal matching the record with zero requests to the server; the
   hash chain verifies.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the model server and the tool, also when loaded by path

import z8  # noqa: E402
import z8.ai  # noqa: E402
from _llm_server import ServerProcess  # noqa: E402
from support_triage import lookup_customer  # noqa: E402

MODEL_STEPS = 4
"""Model calls per run: the server's ReAct answers call a tool three times, then answer."""
IN_FLIGHT = 256
"""Runs being started at once by the worker."""


class Triage(z8.ai.Agent):
    model = "fast"
    prompt = "You are a support triage assistant."
    tools = [lookup_customer]
    max_iterations = 4


CONNECTIONS = 64
"""HTTP connections to the model server (z8.ai.PooledTransport): at most 3,200 requests/s
at 20 ms each, more than one process drives."""


def make_models(url: str) -> z8.ai.Models:
    return z8.ai.Models({"fast": "local:fleet-model"},
                        providers={"local": z8.ai.OpenAIProvider(url, "local-key", max_connections=CONNECTIONS)})


def fleet_app(path: Path, models: z8.ai.Models) -> z8.Application:
    return z8.Application(z8.ai.route(z8.Router(), Triage), path, effects=[models.effect])


def run_ids(runs: int) -> list[str]:
    return [f"t{n:05d}" for n in range(runs)]


# --- the worker: starts the runs, reports each journaled model step, waits to be killed ----------


async def run_worker(path: Path, url: str, runs: int) -> None:
    models = make_models(url)
    async with fleet_app(path, models) as app:
        steps = asyncio.get_running_loop().create_task(report_steps(app.journal))
        pending = iter(run_ids(runs))

        async def starter() -> None:
            for run_id in pending:  # one shared iterator: each run is started once
                await app.dispatch(Triage.StartRun(run_id=run_id, query=f"double charged (ticket {run_id})"),
                                   timeout=120)

        await asyncio.gather(*(starter() for _ in range(IN_FLIGHT)))
        print("started", flush=True)
        await steps  # the parent kills us before the runs end, on purpose


async def report_steps(journal: z8.Journal) -> None:
    model_steps = finished = 0
    async with journal.subscribe(journal.head_position() + 1,
                                 types={"z8.ai.ModelStep", "z8.ai.RunFinished"}) as records:
        async for envelope in records:
            if envelope.type == "z8.ai.ModelStep":
                model_steps += 1
            else:
                finished += 1
            print(f"steps {model_steps} {finished}", flush=True)


# --- the demo -----------------------------------------------------------------------------------


def scan(journal: z8.Journal) -> dict[str, Any]:
    """What the journal holds: model calls answered and pending, RunFinished per run."""
    answered: set[str] = set()
    intended: set[str] = set()
    finished: Counter[str] = Counter()
    statuses: Counter[tuple[str, int]] = Counter()
    for envelope in journal.read_all():
        if not envelope.stream.startswith("run-"):
            continue
        if envelope.type in ("z8.EffectIntended", "z8.EffectSucceeded", "z8.EffectFailed"):
            record = journal.decode(envelope)
            if record.effect == "z8.model":
                (intended if envelope.type == "z8.EffectIntended" else answered).add(record.effect_id)
        elif envelope.type == "z8.ai.RunFinished":
            end = journal.decode(envelope)
            finished[envelope.stream] += 1
            statuses[(end.status, end.steps)] += 1
    return {"answered": answered, "pending": intended - answered, "finished": finished, "statuses": statuses}


async def main(directory: Path, runs: int, latency: float) -> list[str]:
    path = directory / "journal"
    started = time.perf_counter()

    def clock() -> str:
        return f"{time.perf_counter() - started:.1f} s"

    total = runs * MODEL_STEPS
    with ServerProcess(latency=latency, steps=MODEL_STEPS) as server:
        print(f"1. model server {server.openai_url} (its own process): {latency * 1000:.0f} ms per answer, a ReAct "
              f"model ({MODEL_STEPS - 1} lookup_customer calls, then an answer), counting requests by Idempotency-Key")
        worker = subprocess.Popen([sys.executable, __file__, "--worker", "--dir", str(directory), "--url",
                                   server.openai_url, "--runs", str(runs)], stdout=subprocess.PIPE, text=True)
        assert worker.stdout is not None
        at_kill = (0, 0)
        try:
            for line in worker.stdout:
                if line.startswith("started"):
                    print(f"2. worker started {runs:,} runs of Triage at once ({clock()})")
                elif line.startswith("steps"):
                    _, steps, done = line.split()
                    at_kill = (int(steps), int(done))
                    if at_kill[0] >= total // 2:
                        break
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            worker.stdout.close()
        with z8.open_journal(path) as journal:
            before = scan(_registered(journal))
        sent_at_kill = server.stats()["requests"]
        print(f"3. SIGKILL after {at_kill[0]:,} of {total:,} model steps journaled ({at_kill[1]:,} runs finished; "
              f"{clock()}): {len(before['answered']):,} model answers in the journal, "
              f"{len(before['pending']):,} calls in flight; the server had answered or was answering "
              f"{sent_at_kill:,} requests")

        models = make_models(server.openai_url)
        try:
            async with fleet_app(path, models) as app:
                recovering = time.perf_counter()
                results = await asyncio.gather(*(z8.ai.await_run(app, run_id, timeout=600)
                                                  for run_id in run_ids(runs)))
                recovered = time.perf_counter() - recovering
                after = scan(app.journal)
                stats = server.stats()
                replaying = time.perf_counter()
                replayed = [z8.ai.replay(app, run_id, Triage, strict=False) for run_id in run_ids(runs)]
                replay_s = time.perf_counter() - replaying
                replay_requests = server.stats()["requests"] - stats["requests"]
                verified = await app.audit.verify()
        finally:
            await models.aclose()
    by_key = Counter(stats["by_key"])
    resent = {key for key, count in by_key.items() if count > 1}
    print(f"4. restarted: the in-flight calls were re-issued under their keys; all {len(results):,} runs finished "
          f"{recovered:.1f} s later ({clock()})")
    answered = sum(1 for r in results if r.status == "answered")
    once = sum(1 for n in after["finished"].values() if n == 1)
    print(f"5. {answered:,} runs answered, {once:,} with exactly one RunFinished; ends by (status, steps): "
          f"{dict(after['statuses'])}")
    print(f"   server: {stats['requests']:,} requests, {len(by_key):,} distinct keys for {total:,} model steps; "
          f"{len(resent):,} keys sent twice, every one in flight at the kill; keys whose answer was journaled "
          f"before the kill sent again: {len(resent & before['answered'])}")
    matched = sum(1 for r in replayed if r.matched)
    print(f"   replay of all {runs:,} runs from the journal in {replay_s:.1f} s: {matched:,} matched, "
          f"{sum(r.model_calls for r in replayed):,} model steps rebuilt, {replay_requests} requests to the server; "
          f"journal.verify(): {'ok' if verified.ok else verified} ({verified.checked:,} events)")
    checks = {
        "every run answered": answered == runs and all(r.steps == 2 * MODEL_STEPS - 1 for r in results),
        "every run finished exactly once": len(after["finished"]) == runs and once == runs,
        "the kill came mid-run": 0 < len(before["answered"]) < total and at_kill[1] < runs,
        "one key per model step": len(by_key) == total and set(by_key) == after["answered"],
        "no journaled step was sent again": not resent & before["answered"],
        "only calls in flight at the kill were sent twice": resent <= before["pending"]
        and max(by_key.values()) <= 2,
        "every run replays matching its record": matched == runs,
        "replay sent no request": replay_requests == 0,
        "the journal verifies": verified.ok,
    }
    return [name for name, ok in checks.items() if not ok]


def _registered(journal: z8.Journal) -> z8.Journal:
    z8.ai.runs(journal)  # registers the run event types on a journal opened without an application
    return journal


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="where to put the journal (default: a temporary directory)")
    parser.add_argument("--runs", type=int, default=1000, help="concurrent runs (default 1,000)")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per model answer (default 0.02)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        z8.tune_gc()  # the worker hosts the fleet: its entry point sets the process's collector
        asyncio.run(run_worker(args.dir / "journal", args.url, args.runs))
        return
    directory = args.dir or Path(tempfile.mkdtemp(prefix="z8-ai-fleet-"))
    try:
        failed = asyncio.run(main(directory, args.runs, args.latency))
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    for name in failed:
        print(f"FAILED: {name}", file=sys.stderr)
    print("ai fleet demo " + ("FAILED" if failed else "passed"))
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    cli()
