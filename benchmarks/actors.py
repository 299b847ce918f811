"""Actor benchmarks: z8 actors against pykka ``ThreadingActor`` and raw asyncio.

Run ``python benchmarks/actors.py [--quick]``. Prints one JSON line per figure, as
``BENCHMARKS.md`` specifies: ``value`` is the median of ``runs`` repetitions, ``spread``
their [min, max], and ``ratio`` is above 1 when z8 is ahead (value / baseline for rates,
baseline / value for times, latencies and memory).

Each figure is printed once per peer: the same ``bench`` name with ``baseline`` naming
the peer measured in the same run, ``asyncio.*`` (raw asyncio queues and tasks: the
floor for an async actor in Python) or ``pykka.ThreadingActor.*`` (the Python actor
library a user would otherwise pick).

What is compared, so the ratios mean what they say:

- Every side does the same work per message: an async (z8, asyncio) or plain (pykka)
  handler that decrements a shared counter and, at the last message, wakes the waiting
  caller. A run ends when the last message has been *handled*, not when it was sent.
- z8 actors run under a ``Runtime`` root supervisor with the default bounded mailbox
  (1,024 messages, ``await ref.tell`` waits while it is full); the asyncio peer uses
  ``asyncio.Queue(maxsize=1024)`` with the same ``await put`` backpressure; pykka's inbox
  is an unbounded ``queue.Queue``.
- Tells and asks never touch the journal, so those figures do not depend on durability.
  Spawn and restart do: every start, crash and restart is recorded in ``$system``
  (recording never waits for the disk; a background task appends each loop tick's
  records in one journal write). ``params.durability`` says which mode was used.
- ``ask`` uses z8's default ``timeout=5.0`` (an ``asyncio.wait_for`` per ask); the
  asyncio peer awaits a bare future with no timeout; pykka's ``ask`` blocks with none.
- Spawn figures run in a fresh subprocess per measurement, so RSS is not contaminated
  by earlier runs; pykka needs one OS thread per actor and cannot reach 100,000, so it
  is measured at a count it manages and the ratio compares per-actor cost (stated in
  ``params``) rather than extrapolating.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

import pykka

from z8.actors import Actor, ActorContext
from z8.errors import ActorDied
from z8.supervision import Runtime

from _report import emit, percentile

MAILBOX = 1024  # z8's default actor_mailbox_size; the asyncio peer's Queue(maxsize=...)
HIGH_INTENSITY = {"max_restarts": 1_000_000, "within": 1.0}

ASYNCIO_TELL = "asyncio.Queue.loop"
ASYNCIO_ASK = "asyncio.Queue+Future.loop"
ASYNCIO_FANOUT = "asyncio.Queue.loop.per_consumer_task"
ASYNCIO_SPAWN = "asyncio.Task+Queue"
PYKKA_TELL = "pykka.ThreadingActor.tell"
PYKKA_ASK = "pykka.ThreadingActor.ask"
PYKKA_SPAWN = "pykka.ThreadingActor.start"
PYKKA_RESTART = "pykka.ThreadingActor.on_failure_restart"

logging.getLogger("pykka").setLevel(logging.CRITICAL)  # pykka logs every crash's traceback at ERROR


@dataclass(frozen=True)
class Sizes:
    """How much work each figure does per run."""

    runs: int
    tell_msgs: int
    pykka_tell_msgs: int
    asks: int
    pykka_asks: int
    fanout_actors: int
    fanout_msgs: int
    pykka_fanout_actors: int
    pykka_fanout_msgs: int
    pykka_small_fanout_actors: int
    pykka_small_fanout_msgs: int
    spawn_actors: int
    pykka_spawn_actors: int
    spawn_runs: int
    crashes: int
    pykka_crashes: int
    close: bool


FULL = Sizes(
    runs=5, tell_msgs=1_000_000, pykka_tell_msgs=1_000_000, asks=100_000, pykka_asks=20_000,
    fanout_actors=1000, fanout_msgs=1000, pykka_fanout_actors=1000, pykka_fanout_msgs=100,
    pykka_small_fanout_actors=100, pykka_small_fanout_msgs=1000,
    spawn_actors=100_000, pykka_spawn_actors=2000, spawn_runs=3, crashes=1000, pykka_crashes=1000, close=True,
)
QUICK = Sizes(
    runs=3, tell_msgs=200_000, pykka_tell_msgs=100_000, asks=20_000, pykka_asks=5000,
    fanout_actors=1000, fanout_msgs=100, pykka_fanout_actors=1000, pykka_fanout_msgs=15,
    pykka_small_fanout_actors=100, pykka_small_fanout_msgs=200,
    spawn_actors=100_000, pykka_spawn_actors=1000, spawn_runs=1, crashes=300, pykka_crashes=200, close=False,
)




def settle() -> None:
    gc.collect()


# --- the work every side does per message -------------------------------------------------


class Target:
    """How many messages are still expected, and who to wake at the last one."""

    __slots__ = ("remaining", "done")

    def __init__(self) -> None:
        self.remaining = 0
        self.done: Any = None

    def expect(self, count: int, done: Any) -> Any:
        self.remaining, self.done = count, done
        return done


class Sink(Actor):
    """z8: counts down, resolves the run's future at the last message; replies with the message."""

    def __init__(self, target: Target) -> None:
        self.target = target

    async def receive(self, message: Any, ctx: ActorContext) -> Any:
        target = self.target
        target.remaining -= 1
        if target.remaining == 0:
            target.done.set_result(None)
        return message


class RawSink:
    """asyncio peer: the same handler, called by a bare ``Queue`` loop."""

    def __init__(self, target: Target) -> None:
        self.target = target

    async def receive(self, message: Any) -> Any:
        target = self.target
        target.remaining -= 1
        if target.remaining == 0:
            target.done.set_result(None)
        return message


class PykkaSink(pykka.ThreadingActor):
    """pykka peer: the same handler; the waiter is a ``threading.Event``."""

    def __init__(self, target: Target, lock: threading.Lock | None = None) -> None:
        super().__init__()
        self.target = target
        self.lock = lock  # only when several actors share one target

    def on_receive(self, message: Any) -> Any:
        target = self.target
        if self.lock is None:
            target.remaining -= 1
            last = target.remaining == 0
        else:
            with self.lock:
                target.remaining -= 1
                last = target.remaining == 0
        if last:
            target.done.set()
        return message


async def raw_consumer(queue: asyncio.Queue[Any], sink: RawSink) -> None:
    receive = sink.receive
    while True:
        await receive(await queue.get())


async def raw_ask_consumer(queue: asyncio.Queue[Any], sink: RawSink) -> None:
    receive = sink.receive
    while True:
        message, future = await queue.get()
        reply = await receive(message)
        if not future.done():
            future.set_result(reply)


async def raw_ask(queue: asyncio.Queue[Any], message: Any) -> Any:
    future = asyncio.get_running_loop().create_future()
    await queue.put((message, future))
    return await future


def fresh_runtime(root: str, name: str, durability: str = "sync", **kwargs: Any) -> Runtime:
    return Runtime(os.path.join(root, name), durability=durability, **kwargs)  # type: ignore[arg-type]


# --- tell -----------------------------------------------------------------------------------


async def tell_z8(ref: Any, target: Target, count: int) -> float:
    done = target.expect(count, asyncio.get_running_loop().create_future())
    tell = ref.tell
    start = time.perf_counter()
    for i in range(count):
        await tell(i)
    await done
    return time.perf_counter() - start


async def tell_raw(queue: asyncio.Queue[Any], target: Target, count: int) -> float:
    done = target.expect(count, asyncio.get_running_loop().create_future())
    put = queue.put
    start = time.perf_counter()
    for i in range(count):
        await put(i)
    await done
    return time.perf_counter() - start


def tell_pykka(ref: pykka.ActorRef[Any], target: Target, count: int) -> float:
    done = target.expect(count, threading.Event())
    tell = ref.tell
    start = time.perf_counter()
    for i in range(count):
        tell(i)
    done.wait()
    return time.perf_counter() - start


async def bench_tell(sizes: Sizes, root: str) -> None:
    target = Target()
    z8, raw, pyk = [], [], []
    n, pn = sizes.tell_msgs, sizes.pykka_tell_msgs
    queue: asyncio.Queue[Any] = asyncio.Queue(MAILBOX)
    consumer = asyncio.create_task(raw_consumer(queue, RawSink(target)))
    pref = PykkaSink.start(target)
    async with fresh_runtime(root, "tell") as rt:
        ref = rt.spawn(Sink, target, name="sink")
        await tell_z8(ref, target, 10_000)  # warm-up
        await tell_raw(queue, target, 10_000)
        tell_pykka(pref, target, 10_000)
        for _ in range(sizes.runs):
            settle()
            z8.append(n / await tell_z8(ref, target, n))
            settle()
            raw.append(n / await tell_raw(queue, target, n))
            settle()
            pyk.append(pn / tell_pykka(pref, target, pn))
    consumer.cancel()
    pref.stop()
    params = {
        "actors": 1, "senders": 1, "messages_per_run": n, "message": "int",
        "mode": "one task awaits ref.tell(i) in a loop; timed until the actor has handled the last message",
        "z8_mailbox": MAILBOX, "journal": "not touched by tell",
    }
    emit("actors.tell", z8, "msgs/s", ASYNCIO_TELL, raw, {
        **params, "peer": f"asyncio.Queue(maxsize={MAILBOX}); one task: await handler(await queue.get())",
    })
    emit("actors.tell", z8, "msgs/s", PYKKA_TELL, pyk, {
        **params, "pykka_messages_per_run": pn,
        "peer": "one ThreadingActor; main thread calls actor_ref.tell(i) (unbounded inbox), "
        "then waits for an Event set at the last message",
    })


# --- ask ------------------------------------------------------------------------------------


async def ask_z8(ref: Any, count: int, timeout: float | None = 5.0) -> float:
    ask = ref.ask
    start = time.perf_counter()
    for i in range(count):
        await ask(i, timeout)
    return time.perf_counter() - start


async def ask_raw(queue: asyncio.Queue[Any], count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        await raw_ask(queue, i)
    return time.perf_counter() - start


def ask_pykka(ref: pykka.ActorRef[Any], count: int) -> float:
    ask = ref.ask
    start = time.perf_counter()
    for i in range(count):
        ask(i)
    return time.perf_counter() - start


async def bench_ask(sizes: Sizes, root: str) -> None:
    target = Target()
    target.remaining = 1 << 62  # never reaches zero: asks are timed by their replies
    z8, z8_none, raw, pyk = [], [], [], []
    n, pn = sizes.asks, sizes.pykka_asks
    queue: asyncio.Queue[Any] = asyncio.Queue(MAILBOX)
    consumer = asyncio.create_task(raw_ask_consumer(queue, RawSink(target)))
    pref = PykkaSink.start(target)
    async with fresh_runtime(root, "ask") as rt:
        ref = rt.spawn(Sink, target, name="echo")
        await ask_z8(ref, 2000)
        await ask_z8(ref, 2000, None)
        await ask_raw(queue, 2000)
        ask_pykka(pref, 1000)
        for _ in range(sizes.runs):
            settle()
            z8.append(n / await ask_z8(ref, n))
            settle()
            z8_none.append(n / await ask_z8(ref, n, None))
            settle()
            raw.append(n / await ask_raw(queue, n))
            settle()
            pyk.append(pn / ask_pykka(pref, pn))
    consumer.cancel()
    pref.stop()
    params = {
        "actors": 1, "callers": 1, "asks_per_run": n, "message": "int (the reply is the message)",
        "mode": "one task awaits ref.ask(i) in turn (sequential round trips)",
        "z8_timeout": "5.0 (the default: asyncio.wait_for per ask)",
        "z8_timeout_none_asks_per_s": round(statistics.median(z8_none), 1),
        "z8_timeout_none_spread": [round(min(z8_none), 1), round(max(z8_none), 1)],
        "journal": "not touched by ask",
    }
    emit("actors.ask", z8, "asks/s", ASYNCIO_ASK, raw, {
        **params,
        "peer": f"asyncio.Queue(maxsize={MAILBOX}) of (message, Future); caller awaits the bare future (no timeout)",
    })
    emit("actors.ask", z8, "asks/s", PYKKA_ASK, pyk, {
        **params, "pykka_asks_per_run": pn,
        "peer": "one ThreadingActor; main thread calls actor_ref.ask(i) (blocking, no timeout)",
    })


# --- fan-out --------------------------------------------------------------------------------


async def fanout_z8(refs: list[Any], target: Target, per_actor: int) -> float:
    done = target.expect(len(refs) * per_actor, asyncio.get_running_loop().create_future())
    tells = [ref.tell for ref in refs]
    start = time.perf_counter()
    for i in range(per_actor):
        for tell in tells:
            await tell(i)
    await done
    return time.perf_counter() - start


async def fanout_raw(queues: list[asyncio.Queue[Any]], target: Target, per_actor: int) -> float:
    done = target.expect(len(queues) * per_actor, asyncio.get_running_loop().create_future())
    puts = [queue.put for queue in queues]
    start = time.perf_counter()
    for i in range(per_actor):
        for put in puts:
            await put(i)
    await done
    return time.perf_counter() - start


def fanout_pykka(refs: list[pykka.ActorRef[Any]], target: Target, per_actor: int) -> float:
    done = target.expect(len(refs) * per_actor, threading.Event())
    tells = [ref.tell for ref in refs]
    start = time.perf_counter()
    for i in range(per_actor):
        for tell in tells:
            tell(i)
    done.wait()
    return time.perf_counter() - start


async def bench_fanout(sizes: Sizes, root: str) -> None:
    target = Target()
    actors, per = sizes.fanout_actors, sizes.fanout_msgs
    pactors, pper = sizes.pykka_fanout_actors, sizes.pykka_fanout_msgs
    sactors, sper = sizes.pykka_small_fanout_actors, sizes.pykka_small_fanout_msgs
    z8, raw, pyk, small = [], [], [], []
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue(MAILBOX) for _ in range(actors)]
    consumers = [asyncio.create_task(raw_consumer(q, RawSink(target))) for q in queues]
    lock = threading.Lock()
    prefs = [PykkaSink.start(target, lock) for _ in range(pactors)]
    few = prefs[:sactors]
    async with fresh_runtime(root, "fanout") as rt:
        refs = [rt.spawn(Sink, target, name=f"s{i}") for i in range(actors)]
        await fanout_z8(refs, target, 5)
        await fanout_raw(queues, target, 5)
        fanout_pykka(prefs, target, 2)
        for _ in range(sizes.runs):
            settle()
            z8.append(actors * per / await fanout_z8(refs, target, per))
            settle()
            raw.append(actors * per / await fanout_raw(queues, target, per))
            settle()
            pyk.append(pactors * pper / fanout_pykka(prefs, target, pper))
            settle()
            small.append(sactors * sper / fanout_pykka(few, target, sper))
    for task in consumers:
        task.cancel()
    for pref in prefs:
        pref.stop(block=False)
    for pref in prefs:
        pref.actor_stopped.wait()
    params = {
        "actors": actors, "messages_per_actor": per, "messages_per_run": actors * per, "senders": 1,
        "mode": "one task tells message i to every actor in turn, for i in range(messages_per_actor); "
        "timed until every actor has handled all its messages",
        "z8_mailbox": MAILBOX, "journal": "not touched by tell",
    }
    emit("actors.fanout", z8, "msgs/s", ASYNCIO_FANOUT, raw, {
        **params, "peer": f"one task per consumer, each looping on its own asyncio.Queue(maxsize={MAILBOX})",
    })
    emit("actors.fanout", z8, "msgs/s", PYKKA_TELL, pyk, {
        **params, "pykka_actors": pactors, "pykka_messages_per_actor": pper,
        "pykka_messages_per_run": pactors * pper,
        "peer": f"{pactors} ThreadingActors (one OS thread each; the shared countdown takes a lock); "
        "main thread tells round-robin; fewer messages per actor than z8 because with 1,000 threads pykka "
        "handles ~14k msgs/s (a 1,000 x 1,000 run takes over a minute)",
        "pykka_small": f"the same with only {sactors} of those actors x {sper} messages each (context: "
        "pykka's rate depends mostly on how many threads compete for the GIL)",
        "pykka_small_msgs_per_s": round(statistics.median(small), 1),
        "pykka_small_spread": [round(min(small), 1), round(max(small), 1)],
    })


# --- spawn (each measurement in a fresh subprocess) -------------------------------------------


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Started:
    """Counts on_starts; wakes the spawner at the last."""

    __slots__ = ("remaining", "done")

    def __init__(self, count: int, done: Any) -> None:
        self.remaining, self.done = count, done

    def one(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set_result(None)


class Idle(Actor):
    def __init__(self, started: Started) -> None:
        self.started = started

    async def on_start(self, ctx: ActorContext) -> None:
        self.started.one()

    async def receive(self, message: Any, ctx: ActorContext) -> Any:
        return message


async def child_spawn_z8(count: int, root: str, close: bool) -> dict[str, Any]:
    rt = Runtime(os.path.join(root, "spawn"), durability="fast", **HIGH_INTENSITY)
    await rt.start()
    warm = Started(1, asyncio.get_running_loop().create_future())
    await rt.spawn(Idle, warm, name="warm", restart="temporary").ask(0)
    gc.collect()
    base = rss_mib()
    started = Started(count, asyncio.get_running_loop().create_future())
    start = time.perf_counter()
    for i in range(count):
        rt.spawn(Idle, started, name=f"a{i}", restart="temporary")
    spawned = time.perf_counter() - start
    await started.done
    seconds = time.perf_counter() - start
    t = time.perf_counter()
    await rt._core.system.drain()  # type: ignore[union-attr]  # noqa: SLF001 - measuring the $system flush
    flush = time.perf_counter() - t
    rss, peak = rss_mib(), peak_rss_mib()
    live = len(rt._core)  # type: ignore[arg-type]  # noqa: SLF001
    result = {
        "seconds": seconds, "spawn_calls_s": spawned, "flush_s": flush, "rss": rss, "peak": peak, "base": base,
        "live_cells": live, "aclose_s": None, "dead_letters": None,
    }
    if close:  # stopping 100,000 actors takes longer than spawning them; --quick skips it
        t = time.perf_counter()
        await rt.aclose()
        result["aclose_s"] = time.perf_counter() - t
        # read from the core: Runtime.dead_letter_count reads 0 once the registry is empty (RuntimeCore has __len__)
        result["dead_letters"] = rt._core.dead_letters.count  # type: ignore[union-attr]  # noqa: SLF001
    return result


async def child_spawn_raw(count: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()

    async def idle(queue: asyncio.Queue[Any], started: Started) -> None:
        started.one()
        await queue.get()

    gc.collect()
    base = rss_mib()
    started = Started(count, loop.create_future())
    start = time.perf_counter()
    queues = []
    tasks = []
    for _ in range(count):
        queue: asyncio.Queue[Any] = asyncio.Queue(MAILBOX)
        queues.append(queue)
        tasks.append(loop.create_task(idle(queue, started)))
    spawned = time.perf_counter() - start
    await started.done
    seconds = time.perf_counter() - start
    rss, peak = rss_mib(), peak_rss_mib()
    return {"seconds": seconds, "spawn_calls_s": spawned, "rss": rss, "peak": peak, "base": base}


class PykkaIdle(pykka.ThreadingActor):
    def __init__(self, started: Started, lock: threading.Lock) -> None:
        super().__init__()
        self.started, self.lock = started, lock

    def on_start(self) -> None:
        with self.lock:
            self.started.remaining -= 1
            last = self.started.remaining == 0
        if last:
            self.started.done.set()


def child_spawn_pykka(count: int) -> dict[str, Any]:
    gc.collect()
    base = rss_mib()
    started = Started(count, threading.Event())
    lock = threading.Lock()
    start = time.perf_counter()
    refs = [PykkaIdle.start(started, lock) for _ in range(count)]
    spawned = time.perf_counter() - start
    started.done.wait()
    seconds = time.perf_counter() - start
    rss, peak = rss_mib(), peak_rss_mib()
    threads = threading.active_count()
    del refs  # the child process ends with os._exit right after reporting
    return {"seconds": seconds, "spawn_calls_s": spawned, "rss": rss, "peak": peak, "base": base, "threads": threads}


def run_child(side: str, count: int, scratch: str, close: bool = False) -> dict[str, Any]:
    command = [sys.executable, os.path.abspath(__file__), "--child", side, "--count", str(count), "--dir", scratch]
    if close:
        command.append("--close")
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise RuntimeError(f"spawn measurement {side} x {count} failed (exit {out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_spawn(sizes: Sizes, root: str) -> None:
    n, pn = sizes.spawn_actors, sizes.pykka_spawn_actors
    z8: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    pyk: list[dict[str, Any]] = []
    for r in range(sizes.spawn_runs):
        scratch = tempfile.mkdtemp(prefix=f"spawn{r}-", dir=root)
        z8.append(run_child("z8", n, scratch, sizes.close))
        raw.append(run_child("asyncio", n, scratch))
        pyk.append(run_child("pykka", pn, scratch))

    def col(rows: list[dict[str, Any]], key: str) -> list[float]:
        return [row[key] for row in rows]

    def med(rows: list[dict[str, Any]], key: str, digits: int = 3) -> float | None:
        values = [v for v in col(rows, key) if v is not None]
        return round(statistics.median(values), digits) if values else None

    def per_actor_delta(rows: list[dict[str, Any]], count: int) -> float:
        return statistics.median([(row["peak"] - row["base"]) * 1024 / count for row in rows])  # KiB per actor

    z8_secs, z8_peak = col(z8, "seconds"), col(z8, "peak")
    common = {
        "actors": n, "subprocess_per_measurement": True,
        "z8": "rt.spawn(Idle, name=..., restart='temporary') under the Runtime root (one_for_one), durability='fast'; "
        "timed from the first spawn call until every actor's on_start has run (which includes encoding the one "
        "$system batch of ActorStarted events on the loop; the write itself finishes z8_system_flush_after_s later)",
        "gc": "default thresholds; the cyclic GC is a large share of every side's spawn time",
        "durability": "fast",
        "z8_spawn_calls_s": med(z8, "spawn_calls_s"),
        "z8_system_flush_after_s": med(z8, "flush_s"),
        "z8_aclose_s": med(z8, "aclose_s"),
        "z8_aclose": "rt.aclose() after the spawn: stops the 100,000 children one by one (not measured with --quick)",
        "z8_dead_letters_after_close": z8[-1]["dead_letters"],
        "z8_rss_after_mib": med(z8, "rss", 1),
        "z8_rss_before_spawn_mib": med(z8, "base", 1),
        "z8_kib_per_actor": round(per_actor_delta(z8, n), 2),
        "targets": "100,000 actors in <= 2 s and <= 800 MiB RSS",
    }
    raw_note = {
        "peer": f"{n} asyncio tasks, each with its own asyncio.Queue(maxsize={MAILBOX}), started and awaiting get()",
        "asyncio_kib_per_actor": round(per_actor_delta(raw, n), 2),
    }
    pykka_secs_per = statistics.median(col(pyk, "seconds")) / pn
    z8_secs_per = statistics.median(z8_secs) / n
    pykka_kib = per_actor_delta(pyk, pn)
    z8_kib = per_actor_delta(z8, n)
    pykka_note = {
        "pykka_actors": pn,
        "peer": f"{pn} ThreadingActor.start() calls (one OS thread each), timed until every on_start has run; "
        "pykka cannot start 100,000 threads, so it is not extrapolated",
        "pykka_threads_alive": pyk[-1]["threads"],
        "pykka_kib_per_actor": round(pykka_kib, 2),
    }
    emit("actors.spawn", z8_secs, "s", ASYNCIO_SPAWN, col(raw, "seconds"), {**common, **raw_note}, lower_is_better=True)
    emit("actors.spawn", z8_secs, "s", PYKKA_SPAWN, col(pyk, "seconds"), {
        **common, **pykka_note,
        "ratio_is": "per-actor time: (baseline_value / pykka_actors) / (value / actors)",
        "pykka_ms_per_actor": round(pykka_secs_per * 1e3, 4), "z8_ms_per_actor": round(z8_secs_per * 1e3, 4),
    }, ratio=pykka_secs_per / z8_secs_per)
    rss_common = {**common, "rss": "peak RSS of the whole process (getrusage ru_maxrss), interpreter included"}
    emit("actors.spawn.rss", z8_peak, "MiB", ASYNCIO_SPAWN, col(raw, "peak"), {**rss_common, **raw_note},
         lower_is_better=True)
    emit("actors.spawn.rss", z8_peak, "MiB", PYKKA_SPAWN, col(pyk, "peak"), {
        **rss_common, **pykka_note,
        "ratio_is": "per-actor RSS growth: pykka_kib_per_actor / z8_kib_per_actor "
        "(peak RSS minus RSS before spawning, per actor)",
    }, ratio=pykka_kib / z8_kib)


# --- restart --------------------------------------------------------------------------------


class Boom(Exception):
    pass


class Probe:
    """Timestamps the actor itself writes: when it raised, when the next incarnation started."""

    def __init__(self) -> None:
        self.crash_at = 0.0
        self.start_at = 0.0
        self.ready = threading.Event()
        self.ref: Any = None


class Crashy(Actor):
    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    async def on_start(self, ctx: ActorContext) -> None:
        self.probe.start_at = time.perf_counter()

    async def receive(self, message: Any, ctx: ActorContext) -> Any:
        if message == "crash":
            self.probe.crash_at = time.perf_counter()
            raise Boom("crash on request")
        return message


class PykkaCrashy(pykka.ThreadingActor):
    def __init__(self, probe: Probe) -> None:
        super().__init__()
        self.probe = probe

    def on_start(self) -> None:
        self.probe.start_at = time.perf_counter()
        self.probe.ref = self.actor_ref
        self.probe.ready.set()

    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            self.probe.crash_at = time.perf_counter()
            raise Boom("crash on request")
        return message

    def on_failure(self, *exc_info: Any) -> None:
        PykkaCrashy.start(self.probe)  # pykka has no supervisor: the dying actor starts its successor


async def restarts_z8(ref: Any, probe: Probe, count: int) -> tuple[list[float], list[float]]:
    inside, caller = [], []
    for _ in range(count):
        try:
            await ref.ask("crash")
        except ActorDied:
            died = time.perf_counter()
        else:
            raise RuntimeError("the crash ask returned instead of raising ActorDied")
        await ref.ask("ping")
        caller.append(time.perf_counter() - died)
        inside.append(probe.start_at - probe.crash_at)
    return inside, caller


def restarts_pykka(probe: Probe, count: int) -> tuple[list[float], list[float]]:
    inside, caller = [], []
    for _ in range(count):
        probe.ready.clear()
        sent = time.perf_counter()
        probe.ref.tell("crash")
        probe.ready.wait()
        probe.ref.ask("ping")
        caller.append(time.perf_counter() - sent)
        inside.append(probe.start_at - probe.crash_at)
    return inside, caller


class Latencies:
    """Per-run p50 and p99 (ms) of a list of per-event latencies in seconds."""

    def __init__(self) -> None:
        self.p50: list[float] = []
        self.p99: list[float] = []

    def add(self, samples: list[float]) -> None:
        ordered = sorted(samples)
        self.p50.append(percentile(ordered, 0.50) * 1e3)
        self.p99.append(percentile(ordered, 0.99) * 1e3)


async def bench_restart(sizes: Sizes, root: str) -> None:
    probe = Probe()
    pprobe = Probe()
    z8, z8_caller, pk, pk_caller = Latencies(), Latencies(), Latencies(), Latencies()
    PykkaCrashy.start(pprobe)
    pprobe.ready.wait()
    async with fresh_runtime(root, "restart", "sync", **HIGH_INTENSITY) as rt:
        ref = rt.spawn(Crashy, probe, name="crashy")
        await ref.ask("ping")
        await restarts_z8(ref, probe, 50)
        restarts_pykka(pprobe, 20)
        for _ in range(sizes.runs):
            settle()
            inside, caller = await restarts_z8(ref, probe, sizes.crashes)
            z8.add(inside)
            z8_caller.add(caller)
            settle()
            inside, caller = restarts_pykka(pprobe, sizes.pykka_crashes)
            pk.add(inside)
            pk_caller.add(caller)
        t = time.perf_counter()
        await rt._core.system.drain()  # type: ignore[union-attr]  # noqa: SLF001
        drain = time.perf_counter() - t
    pprobe.ref.stop()

    def m(values: list[float]) -> float:
        return round(statistics.median(values), 4)

    params = {
        "crashes_per_run": sizes.crashes, "pykka_crashes_per_run": sizes.pykka_crashes,
        "measures": "per crash: from the moment receive raises (timestamp taken by the actor) to the start of the "
        "next incarnation's on_start; value is the median of per-run medians",
        "z8": "Runtime(max_restarts=1_000_000, within=1.0), one_for_one, no backoff; the crash is an ask "
        "(caller gets ActorDied), then the caller asks 'ping' on the same ref (served by the new incarnation)",
        "durability": "sync ($system records of crash, restart and start are queued, never awaited)",
        "p99_ms": m(z8.p99),
        "caller_ms": "caller-observed: from ActorDied raised in the caller to the reply of the next ask",
        "caller_p50_ms": m(z8_caller.p50), "caller_p99_ms": m(z8_caller.p99),
        "z8_system_flush_after_s": round(drain, 4),
        "target": "<= 1 ms median",
        "peer": "pykka has no supervisor: a tell raises in on_receive, pykka stops the actor and calls on_failure, "
        "which starts a fresh ThreadingActor (new thread, no mailbox hand-over); crash logging silenced",
        "pykka_p99_ms": m(pk.p99),
        "pykka_caller_ms": "from the crashing tell to the reply of a ping ask on the new actor",
        "pykka_caller_p50_ms": m(pk_caller.p50), "pykka_caller_p99_ms": m(pk_caller.p99),
    }
    emit("actors.restart", z8.p50, "ms", PYKKA_RESTART, pk.p50, params, lower_is_better=True)


async def main(sizes: Sizes, base: str | None) -> None:
    root = tempfile.mkdtemp(prefix="z8-bench-actors-", dir=base)
    try:
        await bench_tell(sizes, root)
        await bench_ask(sizes, root)
        await bench_fanout(sizes, root)
        await bench_restart(sizes, root)
        bench_spawn(sizes, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(result: dict[str, Any]) -> None:
    """Print a child's result and end the process at once.

    Each measurement is its own process, so there is nothing to clean up; tearing down
    100,000 actors, tasks or threads (``asyncio.run`` cancels every task) would only
    add seconds to the run.
    """
    print(json.dumps(result), flush=True)
    os._exit(0)


async def areport(measure: Any) -> None:
    report(await measure)


def child_main(side: str, count: int, scratch: str, close: bool) -> None:
    if side == "z8":
        asyncio.run(areport(child_spawn_z8(count, scratch, close)))
    elif side == "asyncio":
        asyncio.run(areport(child_spawn_raw(count)))
    else:
        report(child_spawn_pykka(count))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs (well under 60 s)")
    parser.add_argument("--dir", default=None, help="where to make the scratch directory (default: system temp dir)")
    parser.add_argument("--child", choices=("z8", "asyncio", "pykka"), help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--close", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.count, args.dir, args.close)
    else:
        asyncio.run(main(QUICK if args.quick else FULL, args.dir))
