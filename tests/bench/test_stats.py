"""The benchmark's arithmetic: percentiles and the summary of repeats."""

from __future__ import annotations

import statistics

import pytest

from bench.scenarios import own_delays
from bench.stats import Summary, percentile, percentiles, rate


def test_percentile_matches_the_inclusive_quantiles_of_the_standard_library() -> None:
    # A skewed spread of distinct values, like latencies (no random: the same every run).
    values = [((i * 7919) % 1009) ** 1.7 for i in range(1001)]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    for q in (1, 25, 50, 90, 99):
        assert percentile(values, q) == pytest.approx(cuts[q - 1])


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 20], 99) == pytest.approx(19.9)
    assert percentile([4, 1, 3, 2], 0) == 1
    assert percentile([4, 1, 3, 2], 100) == 4
    assert percentile([5], 99) == 5


def test_percentile_of_a_hundred_values() -> None:
    values = list(range(1, 101))  # 1..100
    assert percentiles(values, [50, 99, 100]) == pytest.approx([50.5, 99.01, 100])


def test_percentile_refuses_nothing_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="within"):
        percentile([1.0], 101)
    with pytest.raises(ValueError, match="no values"):
        percentiles([], [50])


def test_summary_is_the_median_and_the_spread_of_the_repeats() -> None:
    summary = Summary.of([100, 90, 110])
    assert (summary.median, summary.low, summary.high, summary.n) == (100, 90, 110, 3)
    assert summary.spread_pct == pytest.approx(20)
    assert Summary.of([5]).spread_pct == 0
    with pytest.raises(ValueError, match="no samples"):
        Summary.of([])


def test_rate_needs_an_interval() -> None:
    assert rate(100, 2.0) == 50
    assert rate(1, 0.0) == 0


def test_own_delays_leave_out_waiting_for_the_previous_answer() -> None:
    # Request 1 on time; request 2 due at 10 but the answer to 1 came at 15, sent at
    # 16: 1 of its own; request 3 due at 30, previous answer at 20, sent at 34: 4.
    due, sent, answered = [0, 10, 30], [2, 16, 34], [15, 20, 40]
    assert own_delays(due, sent, answered) == {0: 2, 10: 1, 30: 4}
    # Sent before it was due (never happens, but no negative delays).
    assert own_delays([5], [4], [6]) == {5: 0}
