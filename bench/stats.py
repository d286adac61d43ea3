"""Percentiles and the summary of repeated figures.

Percentiles interpolate linearly between the two nearest ranks (numpy's default,
`statistics.quantiles(method="inclusive")`), so p50 of an even count is the mean
of the middle pair and p99 of 3,000 samples does not hinge on one sample.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of `values`; ValueError when there are none."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not within 0..100")
    ordered = sorted(values)
    return _ranked(ordered, q)


def percentiles(values: Sequence[float], qs: Sequence[float]) -> list[float]:
    """Several percentiles of `values`, sorting once."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    return [_ranked(ordered, q) for q in qs]


def _ranked(ordered: Sequence[float], q: float) -> float:
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return float(ordered[low])
    fraction = position - low
    return float(ordered[low] + (ordered[high] - ordered[low]) * fraction)


@dataclass(frozen=True)
class Summary:
    """A figure measured `n` times: its median and how far the repeats spread."""

    median: float
    low: float
    high: float
    n: int

    @property
    def spread_pct(self) -> float:
        """(max - min) / median, in percent: 0 for one repeat."""
        if self.n < 2 or self.median == 0:
            return 0.0
        return (self.high - self.low) / abs(self.median) * 100

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if not samples:
            raise ValueError("summary of no samples")
        return cls(
            median=float(statistics.median(samples)),
            low=float(min(samples)),
            high=float(max(samples)),
            n=len(samples),
        )


def rate(count: int, seconds: float) -> float:
    """Events per second; 0 when nothing was timed (one event has no interval)."""
    return count / seconds if seconds > 0 else 0.0
