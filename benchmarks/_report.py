"""The output contract of ``../shared/BENCHMARKS.md``, shared by every benchmark script."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from typing import Any


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def emit(
    bench: str, samples: list[float], unit: str, baseline: str | None, baseline_samples: list[float] | None,
    params: dict[str, Any], *, lower_is_better: bool = False, ratio: float | None = None,
) -> None:
    """Print one figure; ``ratio`` overrides the plain one (per-actor comparisons)."""
    value = statistics.median(samples)
    base = statistics.median(baseline_samples) if baseline_samples else None
    if ratio is None and base is not None:
        ratio = base / value if lower_is_better else value / base
    digits = 3 if unit in ("ms", "s") else 1
    line = {
        "bench": bench,
        "value": round(value, digits),
        "unit": unit,
        "baseline": baseline,
        "baseline_value": None if base is None else round(base, digits),
        "ratio": None if ratio is None else round(ratio, 3),
        "runs": len(samples),
        "spread": [round(min(samples), digits), round(max(samples), digits)],
        "params": params if not baseline_samples else {
            **params, "baseline_spread": [round(min(baseline_samples), digits), round(max(baseline_samples), digits)],
        },
    }
    print(json.dumps(line), flush=True)
