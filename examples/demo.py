"""The z8 demo: money moved once, loans a policy guards, AI runs that survive a kill, sagas, a fleet of 100,000.

    python examples/demo.py [--dir DIR] [--accounts N] [--operations N] [--ai-runs N]

1. ``treasury.py`` — a treasury day against a real HTTP bank on 127.0.0.1: balances read,
   a sweep plan decided once, wires keyed by the decision, an acknowledgement lost on
   purpose and resolved by a status query with the same key, the ledger posted once.
2. ``lending.py`` — a loan agent decides by explicit criteria under a TOML policy: a
   large disbursement waits for a named credit officer, a sanctioned country is denied,
   the approved loan's sealed run record is printed, exported and verified offline, and
   a declined applicant's personal data is erased with the chain still valid.
3. ``ai_fleet.py`` — an AI agent fleet: 1,000 runs of the seed's triage agent at once
   against a real OpenAI-compatible model server on 127.0.0.1 (20 ms per answer), the
   worker SIGKILLed half-way through the model steps and restarted; every run finishes
   exactly once, the server never sees again a request whose answer was journaled
   (counted by Idempotency-Key), and every run replays with zero model calls.
4. ``travel.py`` — a saga books an outbound flight, a hotel and a return; the return
   fails, and the hotel then the outbound are cancelled, most recent first.
5. ``fleet.py`` — 100,000 account agents, a worker SIGKILLed half-way, an exact recovery.

Each part runs as its own process, on its own journal under ``--dir``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="where to put the journals (default: a temporary directory)")
    parser.add_argument("--accounts", type=int, default=100_000, help="accounts in the fleet")
    parser.add_argument("--operations", type=int, default=100_000, help="operations poured into the fleet")
    parser.add_argument("--ai-runs", type=int, default=1000, help="concurrent runs in the AI agent fleet")
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="z8-demo-"))
    parts = [
        ("treasury", []),
        ("lending", []),
        ("ai_fleet", ["--runs", str(args.ai_runs)]),
        ("travel", []),
        ("fleet", ["--accounts", str(args.accounts), "--operations", str(args.operations)]),
    ]
    for name, extra in parts:
        print(f"\n=== {name} {'=' * (60 - len(name))}\n", flush=True)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, str(HERE / f"{name}.py"), "--dir", str(root / name), *extra])
        if done.returncode != 0:
            print(f"\n{name} FAILED (exit {done.returncode})")
            return done.returncode
        print(f"\n({name}: {time.perf_counter() - started:.1f} s)", flush=True)
    print("\ndemo passed: every part checked its own journal and verified its hash chain")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
