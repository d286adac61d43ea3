"""The whole harness at tiny sizes: it runs, counts what it sent, writes JSON,
and reports the JetStream rows as n/a when the gateway has no JetStream mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from bench.procs import REPO, CpuPlan, child_env, python_module
from bench.results import Results
from bench.scenarios import Bench, Sizes
from bench.targets import evaluate, targets


def test_quick_run_writes_the_table_and_the_json(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    argv = [sys.executable, "-m", "bench", "--quick", "--only", "http-ceilings,core"]
    done = subprocess.run(
        [*argv, "--json", str(out)],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "### Targets" in done.stdout
    assert "Checks: all" in done.stdout
    document = orjson.loads(out.read_bytes())
    figures = document["figures"]
    for key in (
        "ceiling.hypercorn.c1.rate",
        "ceiling.quart.c16.p99",
        "ceiling.relay.c16.rate",
        "ceiling.nats_core.rate",
        "gateway.http.c1.rate",
        "gateway.http.c16.cpu10k",
        "gateway.grpc.rate",
        "latency.core.http.p99",
        "latency.core.grpc.p99",
    ):
        assert figures[key]["samples"], key
    assert document["checks"]
    assert all(check["ok"] for check in document["checks"])
    assert document["meta"]["machine"]["python"]
    statuses = {t["figure"]: t["status"] for t in document["targets"]}
    assert statuses["memory.rss_peak"] == "n/a"  # the memory phase did not run


async def test_jetstream_rows_are_not_available_without_a_jetstream_mode(tmp_path: Path) -> None:
    results = Results()
    bench = Bench(Sizes.quick(), CpuPlan.detect(pin=False), tmp_path, results, lambda _: None)
    bench.gateway_command = python_module("tests.bench.fake_gateway")
    await bench.run(["jetstream"])
    reason = "n/a (gateway has no JetStream mode)"
    assert results.unavailable["gateway.js.grpc.rate"] == reason
    assert results.unavailable["latency.js.http.p99"] == reason
    assert results.median("ceiling.jetstream.rate")  # the ceiling needs no gateway
    verdicts = {v.target.figure: v for v in evaluate(results, targets(0.1))}
    assert verdicts["gateway.js.grpc.rate"].status == "n/a"
    assert verdicts["gateway.js.grpc.rate"].reason == reason
    assert not results.failed_checks
