"""The one percentile of the project (node stats, chaos reports, benchmarks)."""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], p: float) -> float:
    """Nearest-rank p-th percentile, p in 0..100: the smallest value with at least p % of the
    values at or below it (p99 of 100 values is the 99th smallest). NaN for no values."""
    if not 0 <= p <= 100:
        raise ValueError(f"a percentile is between 0 and 100, got {p!r}")
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p * len(ordered) / 100))
    return float(ordered[rank - 1])
