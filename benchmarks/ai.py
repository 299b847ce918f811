"""AI agent benchmarks: concurrent ReAct runs against a real local model server, step overhead, RSS, replay.

Run ``python benchmarks/ai.py [--quick] [--runs N] [--connections C]``. One JSON line per
figure (``../shared/BENCHMARKS.md``): ``value`` is the median of ``runs`` repetitions,
``spread`` their [min, max]; ``params.loadavg_at_start`` says how busy the shared machine was.

The workload. ``Bench`` is a 4-step ReAct agent (``z8.ai.Agent``, ``max_iterations=4``)
with one trivial ``read`` tool. Its model is ``examples/_llm_server.py`` in its own process,
an OpenAI-compatible HTTP/1.1 server on 127.0.0.1 that waits ``LATENCY`` (20 ms) before
each answer and plays a ReAct model: a tool call in each of the first three answers, then
``Answer: done``. So a run is 4 **steps**: a step is one ReAct round, one model call over
HTTP (``z8.ai.OpenAIProvider``: httpx over ``z8.ai.PooledTransport``, ``--connections`` (64)
keep-alive connections) and, in the
first three, the tool call it asks for; journaled as ModelStep + ToolStep with their
effects' intents and outcomes (about 9 records a step). The application runs with
``durability="sync"``: every append is fsynced before anything depends on it. The process
calls ``z8.tune_gc()``, as a fleet's entry point should (``z8.app._tuning``), after one
first repetition with the interpreter's default collector thresholds, reported apart
(``default_gc_*`` in ``ai.step_overhead``'s params).

With 20 ms per answer, ``--connections`` bounds the rate: C connections carry at most
C / 20 ms requests a second (64: 3,200 steps/s, 0.31 ms a step), so the figure measures
the runtime only when C is well above what the runtime can drive.

- ``ai.runs.concurrent`` (runs/s): ``--runs`` runs (10,000; 500 with ``--quick``) started
  at once on a fresh journal, timed from the first ``StartRun`` dispatched to the last
  ``RunFinished`` seen by ``z8.ai.await_run``; every run must answer with 7 steps and the
  server must see each model call's ``Idempotency-Key`` once. Baseline: the same provider
  alone (``OpenAIProvider.complete`` on the recorded requests of a run, ``--runs`` x 4 calls
  at once, same connections, no runtime, no journal), as runs/s (calls/s / 4): the ratio is
  the share of the bare HTTP client's rate that durable runs keep.
- ``ai.step_overhead`` (ms per step): the wall time the fleet spends per step beyond the
  provider's latency, at ``--runs`` concurrent runs::

      value = (T - 4 x LATENCY) / (runs x 4)

  where ``T`` is the wall time of ``ai.runs.concurrent`` and ``4 x LATENCY`` the part of it
  no runtime can avoid (one run's four calls, in turn). With the latency overlapped across
  runs, it is the inverse of the step rate: what one step costs the fleet. Target ≤ 1 ms.
  ``params`` break it down:

  - ``loop_cpu_ms_per_step``: CPU of the event-loop thread (``time.thread_time``) per step;
    ``process_cpu_ms_per_step``: the whole process (with the journal's writer thread);
    ``server_cpu_ms_per_step``: the model server's process (it shares the 2 cores);
    ``gc_ms_per_step``: wall time in Python's cyclic garbage collector (``gc.callbacks``).
  - ``provider_alone_cpu_ms_per_call``: the baseline's process CPU per HTTP call (httpx
    and the provider's encode/decode, with no runtime around it).
  - ``no_http_*``: the same runs and formula with ``z8.ai.ScriptedProvider`` sleeping 20 ms
    per answer in place of the HTTP round trip: the runtime's overhead alone.
  - ``latency_overhead_ms_per_step``: one run at a time (``seq_runs`` runs, in turn): the
    median of (run wall time - 4 x LATENCY) / 4, split into ``http_ms_per_step`` (the
    recorded ``ModelStep.latency_ms`` minus LATENCY: client, loopback and server) and
    ``runtime_ms_per_step`` (the rest: journal appends with their fsyncs, the outbox,
    decide/evolve, the tool).
- ``ai.rss.peak`` (MB): the process's peak RSS (``ru_maxrss``) after the first two concurrent
  repetitions (default collector thresholds, then tuned), with ``kb_per_run`` over the RSS
  before them.
- ``ai.replay`` (steps/s): every run of the last repetition replayed from its journal with
  ``z8.ai.replay`` (no application open: the journal alone), steps = model and tool steps
  rebuilt (7 a run); each must match its record and the server must get no request.
  Baseline: the same runs live (steps/s of the concurrent run), so the ratio is how much
  faster a recorded run is rebuilt than it was run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

import z8
import z8.ai
from z8.effects import EffectContext, EffectIntended

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))
from _llm_server import ServerProcess  # noqa: E402
from _report import emit  # noqa: E402

LATENCY = 0.020
STEPS = 4
"""Model calls (ReAct rounds) per run."""
JOURNALED_STEPS = 2 * STEPS - 1
"""ModelStep + ToolStep events per run (the last round calls no tool)."""


@dataclass(frozen=True)
class Sizes:
    runs: int
    reps: int
    seq_runs: int
    quick: bool


FULL = Sizes(runs=10_000, reps=3, seq_runs=100, quick=False)
QUICK = Sizes(runs=500, reps=1, seq_runs=20, quick=True)


# --- the agent ------------------------------------------------------------------------------------


class Lookup(msgspec.Struct, frozen=True):
    email: str


class Customer(msgspec.Struct, frozen=True):
    email: str
    plan: str


@z8.ai.tool(kind="read", capability="crm.lookup")
async def lookup_customer(args: Lookup, ctx: EffectContext) -> Customer:
    """Find a customer by email."""
    return Customer(args.email, "pro")


class Bench(z8.ai.Agent):
    model = "fast"
    prompt = "You are a support triage assistant."
    tools = [lookup_customer]
    max_iterations = STEPS


def make_models(url: str, connections: int) -> z8.ai.Models:
    provider = z8.ai.OpenAIProvider(url, "bench-key", max_connections=connections)
    return z8.ai.Models({"fast": "local:bench-model"}, providers={"local": provider})


def scripted_react(request: z8.ai.ModelRequest) -> z8.ai.ModelResponse:
    """What the server answers, without HTTP: a tool call in each of the first three rounds, then the answer."""
    if sum(1 for m in request.messages if m.role == "tool") < STEPS - 1:
        call = z8.ai.ToolCall("", "lookup_customer", '{"email": "ada@example.com"}')
        return z8.ai.ModelResponse(text="Thought: calling lookup_customer.", tool_calls=(call,))
    return z8.ai.ModelResponse(text="Answer: done")


def bench_app(path: Path, models: z8.ai.Models) -> z8.Application:
    return z8.Application(z8.ai.route(z8.Router(), Bench), path, effects=[models.effect], durability="sync")


# --- measurements ---------------------------------------------------------------------------------


def settle() -> None:
    gc.collect()


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class GCTimer:
    """Wall time spent in the cyclic garbage collector while active (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0.0
        self._start = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            spent = time.perf_counter() - self._start
            self.seconds += spent
            if info.get("generation") == 2:
                self.full += spent

    def __enter__(self) -> GCTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


def run_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{n:05d}" for n in range(count)]


async def run_all(app: z8.Application, ids: list[str]) -> list[z8.ai.RunResult]:
    await asyncio.gather(*(app.dispatch(Bench.StartRun(run_id=r, query=f"double charged ({r})"), timeout=600)
                           for r in ids))
    return await asyncio.gather(*(z8.ai.await_run(app, r, timeout=1800) for r in ids))


def check(results: list[z8.ai.RunResult]) -> None:
    bad = [r for r in results if r.status != "answered" or r.steps != JOURNALED_STEPS]
    if bad:
        raise RuntimeError(f"{len(bad)} runs did not answer in {JOURNALED_STEPS} steps, e.g. {bad[:2]}")


async def concurrent(server: ServerProcess, path: Path, sizes: Sizes, connections: int, rep: int) -> dict[str, Any]:
    """One repetition: ``sizes.runs`` runs at once on a fresh journal."""
    models = make_models(server.openai_url, connections)
    try:
        async with bench_app(path, models) as app:
            check(await run_all(app, run_ids(f"warm{rep}-", 20)))  # connections, code paths, LMDB pages
            ids = run_ids(f"c{rep}-", sizes.runs)
            settle()
            rss_before = rss_mb()
            requests_before = server.stats()["requests"]
            server_cpu = process_cpu(server.process.pid)
            loop_cpu, cpu, start = time.thread_time(), time.process_time(), time.perf_counter()
            with GCTimer() as collector:
                results = await run_all(app, ids)
            wall = time.perf_counter() - start
            loop_cpu, cpu = time.thread_time() - loop_cpu, time.process_time() - cpu
            server_cpu = process_cpu(server.process.pid) - server_cpu
            check(results)
            stats = server.stats()
            requests = stats["requests"] - requests_before
            sample = [e.request for e in (app.journal.decode(x) for x in app.journal.read_stream(f"run-{ids[0]}"))
                      if type(e) is EffectIntended and e.effect == "z8.model"]
    finally:
        await models.aclose()
    return {"wall": wall, "loop_cpu": loop_cpu, "cpu": cpu, "server_cpu": server_cpu, "requests": requests,
            "gc": collector.seconds, "gc_full": collector.full,
            "max_per_key": max(stats["by_key"].values()), "rss_before": rss_before, "peak_rss": peak_rss_mb(),
            "ids": ids, "sample_requests": sample}


async def runtime_only(path: Path, sizes: Sizes) -> dict[str, Any]:
    """The same runs with z8.ai.ScriptedProvider sleeping LATENCY per answer: no HTTP at all."""
    models = z8.ai.Models.scripted(scripted_react, model="bench-model")
    models.resolve("fast")[0].latency = LATENCY
    async with bench_app(path, models) as app:
        check(await run_all(app, run_ids("warm-", 20)))
        settle()
        loop_cpu, cpu, start = time.thread_time(), time.process_time(), time.perf_counter()
        check(await run_all(app, run_ids("r-", sizes.runs)))
        wall = time.perf_counter() - start
        loop_cpu, cpu = time.thread_time() - loop_cpu, time.process_time() - cpu
    steps = sizes.runs * STEPS
    return {"overhead": (wall - STEPS * LATENCY) / steps * 1000, "loop_cpu": loop_cpu / steps * 1000,
            "cpu": cpu / steps * 1000}


async def provider_alone(server: ServerProcess, requests: list[Any], calls: int, connections: int) -> dict[str, Any]:
    """The baseline: the same HTTP calls through the provider alone, all at once."""
    provider = z8.ai.OpenAIProvider(server.openai_url, "bench-key", max_connections=connections)
    decoded = [msgspec.convert(r, z8.ai.ModelRequest) for r in requests]
    try:
        await asyncio.gather(*(provider.complete(decoded[i % len(decoded)], model_id="bench-model",
                                                 key=f"warm-{i}") for i in range(20)))
        settle()
        cpu, start = time.process_time(), time.perf_counter()
        await asyncio.gather(*(provider.complete(decoded[i % len(decoded)], model_id="bench-model",
                                                 key=f"alone-{i}") for i in range(calls)))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        await provider.aclose()
    return {"calls_per_s": calls / wall, "cpu_per_call": cpu / calls}


async def sequential(server: ServerProcess, path: Path, count: int, connections: int) -> dict[str, Any]:
    """Runs one at a time: per-run latency, and the provider's recorded share of it."""
    models = make_models(server.openai_url, connections)
    totals, http = [], []
    try:
        async with bench_app(path, models) as app:
            check(await run_all(app, run_ids("seqwarm-", 5)))
            for run_id in run_ids("s-", count):
                start = time.perf_counter()
                await app.dispatch(Bench.StartRun(run_id=run_id, query="double charged"))
                result = await z8.ai.await_run(app, run_id, timeout=60)
                totals.append(time.perf_counter() - start)
                check([result])
                steps = [app.journal.decode(e) for e in app.journal.read_stream(f"run-{run_id}")
                         if e.type == "z8.ai.ModelStep"]
                http.append(sum(s.latency_ms for s in steps) / 1000)
    finally:
        await models.aclose()
    per_step = [(t - STEPS * LATENCY) / STEPS * 1000 for t in totals]
    http_share = [(h - STEPS * LATENCY) / STEPS * 1000 for h in http]
    runtime_share = [(t - h) / STEPS * 1000 for t, h in zip(totals, http)]
    return {"per_step": statistics.median(per_step), "http": statistics.median(http_share),
            "runtime": statistics.median(runtime_share), "run_ms": statistics.median(totals) * 1000}


def replay_all(path: Path, ids: list[str], server: ServerProcess) -> dict[str, Any]:
    with z8.open_journal(path) as journal:
        requests = server.stats()["requests"]
        settle()
        steps, start = 0, time.perf_counter()
        for run_id in ids:
            report = z8.ai.replay(journal, run_id, Bench)  # strict: a divergence raises
            steps += report.steps
        wall = time.perf_counter() - start
        sent = server.stats()["requests"] - requests
    if sent:
        raise RuntimeError(f"replay sent {sent} requests to the model server")
    return {"steps_per_s": steps / wall, "steps": steps, "requests": sent}


# --- the figures ----------------------------------------------------------------------------------


async def main(sizes: Sizes, connections: int, base: str | None) -> None:
    root = Path(tempfile.mkdtemp(prefix="z8-bench-ai-", dir=base))
    load = [round(x, 2) for x in os.getloadavg()]
    common = {
        "agent": f"z8.ai.Agent, ReAct, {STEPS} model calls (3 with a tool call, a trivial read) = {STEPS} steps, "
                 f"{JOURNALED_STEPS} journaled steps a run",
        "model_server": f"examples/_llm_server.py in its own process, OpenAI-compatible HTTP/1.1 on 127.0.0.1, "
                        f"{LATENCY * 1000:.0f} ms before each answer",
        "provider": f"z8.ai.OpenAIProvider (httpx), max_connections={connections}",
        "durability": "sync", "loadavg_at_start": load, "cores": os.cpu_count(),
        **({"quick_note": f"--quick: {QUICK.runs} runs once; the full run {FULL.runs:,} x {FULL.reps}"}
           if sizes.quick else {}),
    }
    try:
        with ServerProcess(latency=LATENCY, steps=STEPS) as server:
            default_gc = await concurrent(server, root / "default-gc", sizes, connections, -1)
            shutil.rmtree(root / "default-gc", ignore_errors=True)
            z8.tune_gc()  # what a fleet's entry point does (z8.app._tuning); the rest is measured with it
            reps = []
            for rep in range(sizes.reps):
                path = root / f"conc{rep}"
                reps.append(await concurrent(server, path, sizes, connections, rep))
                if rep < sizes.reps - 1:
                    shutil.rmtree(path, ignore_errors=True)
            alone = await provider_alone(server, reps[0]["sample_requests"], sizes.runs * STEPS, connections)
            seq = await sequential(server, root / "seq", sizes.seq_runs, connections)
            replay = replay_all(root / f"conc{sizes.reps - 1}", reps[-1]["ids"], server)
        scripted = await runtime_only(root / "scripted", sizes)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    steps = sizes.runs * STEPS
    runs_per_s = [sizes.runs / r["wall"] for r in reps]
    emit("ai.runs.concurrent", runs_per_s, "runs/s", "z8.ai.OpenAIProvider.complete alone (runs/s = calls/s / 4)",
         [alone["calls_per_s"] / STEPS], {
             **common, "runs": sizes.runs, "concurrent": sizes.runs,
             "timed": "first StartRun dispatched to the last RunFinished seen by z8.ai.await_run",
             "requests_per_rep": [r["requests"] for r in reps],
             "max_requests_per_idempotency_key": max(r["max_per_key"] for r in reps),
             "baseline_note": "the bare HTTP client's rate on the same requests and connections: the ratio is "
                              "the share of it that durable runs keep",
         })
    overhead = [(r["wall"] - STEPS * LATENCY) / steps * 1000 for r in reps]
    cpu_per_step = statistics.median(r["cpu"] / steps * 1000 for r in reps)
    emit("ai.step_overhead", overhead, "ms", None, None, {
        **common, "runs": sizes.runs, "target": "<= 1 ms",
        "definition": "(T - 4 x 20 ms) / (runs x 4 steps), T = wall time of ai.runs.concurrent: the wall time "
                      "per step beyond the provider's latency at this concurrency (the inverse step rate)",
        "loop_cpu_ms_per_step": round(statistics.median(r["loop_cpu"] / steps * 1000 for r in reps), 3),
        "process_cpu_ms_per_step": round(cpu_per_step, 3),
        "server_cpu_ms_per_step": round(statistics.median(r["server_cpu"] / steps * 1000 for r in reps), 3),
        "gc_ms_per_step": round(statistics.median(r["gc"] / steps * 1000 for r in reps), 3),
        "gc_full_ms_per_step": round(statistics.median(r["gc_full"] / steps * 1000 for r in reps), 3),
        "gc_note": "wall time inside Python's cyclic garbage collector during the run (gc.callbacks), all "
                   f"generations and generation 2 alone, with z8.tune_gc() thresholds {z8.app.FLEET_GC_THRESHOLDS}",
        "default_gc_overhead_ms": round((default_gc["wall"] - STEPS * LATENCY) / steps * 1000, 3),
        "default_gc_ms_per_step": round(default_gc["gc"] / steps * 1000, 3),
        "default_gc_loop_cpu_ms_per_step": round(default_gc["loop_cpu"] / steps * 1000, 3),
        "default_gc_note": "one more repetition, first, with the interpreter's default thresholds (700, 10, 10): "
                           "what a process that does not call z8.tune_gc() gets",
        "provider_alone_cpu_ms_per_call": round(alone["cpu_per_call"] * 1000, 3),
        "no_http_overhead_ms_per_step": round(scripted["overhead"], 3),
        "no_http_loop_cpu_ms_per_step": round(scripted["loop_cpu"], 3),
        "no_http_process_cpu_ms_per_step": round(scripted["cpu"], 3),
        "no_http_note": "the same runs and formula with z8.ai.ScriptedProvider sleeping 20 ms per answer instead "
                        "of HTTP: the runtime alone",
        "latency_overhead_ms_per_step": round(seq["per_step"], 3),
        "latency_http_ms_per_step": round(seq["http"], 3),
        "latency_runtime_ms_per_step": round(seq["runtime"], 3),
        "latency_run_ms": round(seq["run_ms"], 2),
        "latency_note": f"{sizes.seq_runs} runs one at a time: median of (run wall time - 4 x 20 ms) / 4; http = "
                        "recorded ModelStep.latency_ms - 20 ms (client, loopback, server); runtime = the rest "
                        "(appends with fsync, outbox, decide/evolve, tool)",
    }, lower_is_better=True)
    first = reps[0]
    emit("ai.rss.peak", [first["peak_rss"]], "MB", None, None, {
        **common, "runs": sizes.runs,
        "kb_per_run": round((first["peak_rss"] - default_gc["rss_before"]) * 1024 / sizes.runs, 1),
        "rss_before_mb": round(default_gc["rss_before"], 1),
        "peak_after_default_gc_rep_mb": round(default_gc["peak_rss"], 1),
        "measured": "ru_maxrss after the first two concurrent repetitions (default GC thresholds, then "
                    "z8.tune_gc()); runs kept active (idle_timeout 60 s)",
    }, lower_is_better=True)
    live = statistics.median(sizes.runs * JOURNALED_STEPS / r["wall"] for r in reps)
    emit("ai.replay", [replay["steps_per_s"]], "steps/s", "the same runs live (steps/s)", [live], {
        **common, "runs": sizes.runs, "steps_replayed": replay["steps"], "requests_during_replay": replay["requests"],
        "replayed": "z8.ai.replay(journal, run_id, Bench) for every run of the last repetition, in turn, on the "
                    "journal alone (no application); steps = ModelStep + ToolStep rebuilt; each matched its record",
    })


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK.runs} runs once (well under 60 s)")
    parser.add_argument("--runs", type=int, help="concurrent runs (default 10,000; 500 with --quick)")
    parser.add_argument("--reps", type=int, help="repetitions of the concurrent run")
    parser.add_argument("--connections", type=int, default=64, help="the provider's HTTP connections (default 64)")
    parser.add_argument("--dir", default=None, help="where to make the scratch directory (default: system temp dir)")
    args = parser.parse_args()
    chosen = QUICK if args.quick else FULL
    chosen = Sizes(args.runs or chosen.runs, args.reps or chosen.reps, chosen.seq_runs, chosen.quick)
    asyncio.run(main(chosen, args.connections, args.dir))
