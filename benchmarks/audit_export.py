"""Run-record export time for a 10,000-event run (issue 6's audit figure).

``export_10k(tmpdir)`` builds a 10,000-event agent stream in an LMDB journal — a trigger,
then 3,333 rounds of a read effect's intent, its result and the decision journaled with
it (with a ``reasoning`` field) — and times, on that one run:

- ``run_s``: ``audit.run(stream=…)``: read every stored record, check its hash and links,
  decode every payload, fold effects/verdicts/facts/reasoning, digest and sign;
- ``export_s``: ``record.export(path)``: the JSON bundle (records base64, summary, seal) written;
- ``markdown_s``: ``record.markdown()``;
- ``verify_s``: ``z8.audit.verify_bundle(path)`` with no journal (hashes, links, digest,
  signature);
- ``total_s``: ``run_s + export_s``, the figure for "run-record export time".

Run ``python benchmarks/audit_export.py [--runs N]`` for one JSON line per figure.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from z8.actors._ledger import EffectIntended, EffectSucceeded
from z8.actors._system import register_system_types
from z8.audit import Audit, verify_bundle
from z8.journal import Append, TypeRegistry, open_journal

try:
    from _report import emit
except ImportError:  # imported as benchmarks.audit_export
    from benchmarks._report import emit

EVENTS = 10_000
STREAM = "loan-bench"


class Requested(msgspec.Struct, frozen=True):
    applicant: str
    amount: int


class Decided(msgspec.Struct, frozen=True):
    step: int
    tier: str
    reasoning: str


async def _fill(path: Path) -> None:
    types = register_system_types(TypeRegistry([Requested, Decided]))
    with open_journal(path, types=types, durability="fast") as journal:
        events: list[Any] = [Requested("Ada Lovelace", 25_000)]
        for step in range((EVENTS - 1) // 3):
            effect_id = f"{STREAM}/{len(events) + 1}/0"
            events += [
                EffectIntended(effect_id, "credit_check", "read", {"applicant": "Ada Lovelace", "step": step},
                               rule="reads", policy_version="v3"),
                EffectSucceeded(effect_id, "credit_check", {"score": 700 + step % 100, "flags": 0}),
                Decided(step, "Standard", "Debt-to-income is within policy and income is verified."),
            ]
        for start in range(0, len(events), 500):
            await journal.append_many([Append(STREAM, events[start:start + 500])])


def export_10k(tmpdir: str | Path, runs: int = 3) -> dict[str, Any]:
    """Build the 10,000-event run under ``tmpdir`` and time its run record; medians of ``runs``."""
    import asyncio

    path = Path(tmpdir) / "journal"
    asyncio.run(_fill(path))
    samples: dict[str, list[float]] = {"run_s": [], "export_s": [], "markdown_s": [], "verify_s": [], "total_s": []}
    size = 0
    with open_journal(path, types=register_system_types(TypeRegistry([Requested, Decided]))) as journal:
        audit = Audit(journal)
        audit.signing_key  # noqa: B018 - create the key outside the timed region
        for index in range(runs):
            started = time.perf_counter()
            record = audit.run(stream=STREAM)
            built = time.perf_counter()
            target = record.export(Path(tmpdir) / f"run-{index}.json")
            exported = time.perf_counter()
            record.markdown()
            rendered = time.perf_counter()
            report = verify_bundle(target)
            checked = time.perf_counter()
            assert report.ok and report.checked == EVENTS, report
            size = target.stat().st_size
            for name, value in (("run_s", built - started), ("export_s", exported - built),
                                ("markdown_s", rendered - exported), ("verify_s", checked - rendered),
                                ("total_s", exported - started)):
                samples[name].append(value)
    figures: dict[str, Any] = {name: statistics.median(values) for name, values in samples.items()}
    figures.update(events=EVENTS, bundle_bytes=size, samples=samples)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one run (what run_all.py --quick asks)")
    args = parser.parse_args()
    if args.quick:
        args.runs = 1
    with tempfile.TemporaryDirectory() as tmpdir:
        figures = export_10k(tmpdir, args.runs)
    params = {"events": EVENTS, "bundle_bytes": figures["bundle_bytes"]}
    for name in ("total_s", "run_s", "export_s", "markdown_s", "verify_s"):
        emit(f"audit.run_record_10k.{name[:-2]}", [v * 1000 for v in figures["samples"][name]], "ms", None, None,
             params, lower_is_better=True)


if __name__ == "__main__":
    main()
