"""Run every benchmark script in this directory and print all their JSON lines.

``python benchmarks/run_all.py [--quick]`` runs each ``benchmarks/*.py`` except this one
(and ``_``-prefixed helper modules) as a subprocess of the same Python, in name order,
passing ``--quick`` through. Their lines go to stdout as they come; their stderr passes
through. Exits non-zero if any script failed, after running the rest.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scripts() -> list[Path]:
    return sorted(p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_"))


def run(script: Path, quick: bool) -> int:
    command = [sys.executable, str(script), *(["--quick"] if quick else [])]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
    return process.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description="Run every benchmark script and print all their lines.")
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script (CI mode)")
    quick = parser.parse_args().quick
    failed = [script.name for script in scripts() if run(script, quick) != 0]
    if failed:
        print(f"run_all: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
