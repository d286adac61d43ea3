"""Targets, the printed table and the JSON written for comparing commits."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import report
from bench.results import Results, default_json_path, load_json, write_json
from bench.targets import FLAT_TOLERANCE_MB, Target, evaluate, targets


def _results() -> Results:
    results = Results()
    for value in (1000, 1100, 900):
        results.add("ceiling.hypercorn.c1.rate", "bare, 1 conn", "req/s", value)
    for value in (800, 790, 810):
        results.add("gateway.http.c1.rate", "gateway, 1 conn", "alerts/s", value)
    results.add("ceiling.hypercorn.c16.rate", "bare, 16 conn", "req/s", 2000)
    results.add("gateway.http.c16.rate", "gateway, 16 conn", "alerts/s", 1000)
    results.add("latency.core.grpc.p99", "gRPC p99", "ms", 104)
    results.add("memory.rss_peak", "RSS peak", "MB", 81)
    results.mark_unavailable(["gateway.js.grpc.rate"], "n/a (gateway has no JetStream mode)")
    return results


def test_targets_pass_miss_and_not_available() -> None:
    verdicts = {v.target.figure: v for v in evaluate(_results(), targets(0.1))}
    assert verdicts["gateway.http.c1.rate"].status == "PASS"  # 800 / 1000 = 80% >= 75%
    assert verdicts["gateway.http.c1.rate"].ratio == pytest.approx(0.8)
    assert verdicts["gateway.http.c16.rate"].status == "MISS"  # 50%
    assert verdicts["latency.core.grpc.p99"].status == "PASS"  # 104 <= 100 + 5
    assert verdicts["memory.rss_peak"].status == "MISS"  # 81 > 80
    js = verdicts["gateway.js.grpc.rate"]
    assert (js.status, js.reason) == ("n/a", "n/a (gateway has no JetStream mode)")
    assert verdicts["gateway.grpc.rate"].status == "n/a"  # not measured at all


def test_grpc_latency_bound_follows_the_poll_cadence() -> None:
    bounds = {t.figure: t.threshold for t in targets(0.25)}
    assert bounds["latency.core.grpc.p99"] == pytest.approx(255)
    assert bounds["latency.core.http.p99"] == 5
    assert bounds["memory.rss_growth"] == FLAT_TOLERANCE_MB


def test_a_ratio_without_its_ceiling_is_not_available() -> None:
    results = Results()
    results.add("gateway.grpc.rate", "gRPC", "alerts/s", 10_000)
    target = Target("gRPC", "gateway.grpc.rate", 0.7, "ratio_at_least", "ceiling.grpc.rate")
    (verdict,) = evaluate(results, [target])
    assert verdict.status == "n/a"
    assert verdict.measured == 10_000


def test_a_paired_ratio_takes_precedence_over_the_phases_ratio() -> None:
    results = Results()
    results.add("gateway.http.c1.rate", "HTTP", "alerts/s", 1_500)
    results.add("ceiling.hypercorn.c1.rate", "bare", "req/s", 3_000)  # an earlier, faster phase
    target = Target(
        "HTTP", "gateway.http.c1.rate", 0.75, "ratio_at_least", "ceiling.hypercorn.c1.rate",
        paired="gateway.http.c1.paired",
    )  # fmt: skip
    (verdict,) = evaluate(results, [target])
    assert (verdict.status, verdict.ratio) == ("MISS", 0.5)
    for ratio in (0.7, 0.8, 0.9):
        results.add("gateway.http.c1.paired", "paired", "", ratio)
    (verdict,) = evaluate(results, [target])
    assert (verdict.status, verdict.ratio, verdict.measured) == ("PASS", 0.8, 1_500)


def test_report_shows_each_target_with_its_result() -> None:
    results = _results()
    text = report.render(results, evaluate(results, targets(0.1)))
    assert "| HTTP, 1 connection: alerts/s vs bare Hypercorn" in text
    assert "80%" in text
    assert "PASS" in text
    assert "MISS" in text
    assert "n/a (gateway has no JetStream mode)" in text
    assert "1,000 +-10% req/s" in text  # median of 900..1100, half the range


def test_json_round_trip_and_comparison(tmp_path: Path) -> None:
    results = _results()
    results.meta["machine"] = {"commit": "abc123"}
    document = results.as_json([v.as_json() for v in evaluate(results, targets(0.1))])
    path = tmp_path / "run.json"
    write_json(path, document)
    loaded = load_json(path)
    figure = loaded["figures"]["ceiling.hypercorn.c1.rate"]
    assert figure["median"] == 1000
    assert figure["samples"] == [1000, 1100, 900]
    assert {t["status"] for t in loaded["targets"]} >= {"PASS", "MISS", "n/a"}

    newer = _results()
    newer.add("gateway.http.c1.rate", "gateway, 1 conn", "alerts/s", 900)  # median 805
    comparison = report.compare(loaded, newer.as_json([]))
    assert "gateway.http.c1.rate" in comparison
    assert "+1%" in comparison


def test_load_json_refuses_other_files(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"schema": 99}')
    with pytest.raises(ValueError, match="schema"):
        load_json(path)


def test_default_json_path_names_time_and_commit(tmp_path: Path) -> None:
    import datetime

    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    assert default_json_path(tmp_path, "abc", when).name == "20260102T030405Z-abc.json"
