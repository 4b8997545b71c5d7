"""runtime.percentile: nearest rank, the smallest value with p % of the values at or below it."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.percentile import percentile


def test_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose: 100..1
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0], 50) == 1.0 and percentile([1.0, 2.0], 51) == 2.0


def test_no_values_is_nan_and_p_outside_0_100_is_refused() -> None:
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], 101)


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1), st.floats(0, 100))
def test_at_least_p_percent_at_or_below(values: list[float], p: float) -> None:
    value = percentile(values, p)
    assert value in values
    at_or_below = sum(v <= value for v in values)
    assert at_or_below >= p * len(values) / 100
    assert sum(v < value for v in values) < max(p * len(values) / 100, 1)
