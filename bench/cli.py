"""`python -m bench`: measure the ceilings and the gateway, print the table, write JSON."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from bench import machine, report
from bench.procs import REPO, CpuPlan
from bench.results import Results, default_json_path, load_json, write_json
from bench.scenarios import EXTRA_PHASES, PHASES, Bench, Sizes
from bench.targets import evaluate, targets


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Benchmark of the gateway: the ceilings of its parts (Hypercorn, Quart, grpc.aio, "
            "nats-py core and JetStream) and the gateway itself on the same machine, their "
            "ratios, latency, memory and CPU; a Markdown table on stdout and JSON for "
            "comparing commits."
        ),
        epilog=(
            "environment: BENCH_SCALE multiplies every count (default 1); BENCH_REPEATS sets "
            "the repeats (default 3). Results go to bench-results/ (git-ignored)."
        ),
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, one repeat: checks the harness only"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=float(os.environ.get("BENCH_SCALE", "1")),
        help="multiply every count (and the latency runs' length) by this",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=int(os.environ["BENCH_REPEATS"]) if os.environ.get("BENCH_REPEATS") else None,
        help="runs of each figure; the median is reported (default 3, --quick 1)",
    )
    parser.add_argument(
        "--only",
        default=",".join(PHASES),
        help=(
            f"comma-separated phases to run, of: {', '.join(PHASES)} (default: all of these), "
            f"and the extra phases {', '.join(EXTRA_PHASES)} (py-spy needed for profile)"
        ),
    )
    parser.add_argument(
        "--json", type=Path, help="write the results here (default bench-results/<time>-<sha>)"
    )
    parser.add_argument("--compare", type=Path, help="an earlier JSON result to compare with")
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the gateway and the load to cores"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each phase, wait up to this long for other processes to leave the CPU",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the child processes' logs and stores"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    phases = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(phases) - set(PHASES) - set(EXTRA_PHASES))
    if unknown:
        known = ", ".join(PHASES + EXTRA_PHASES)
        print(f"bench: unknown phase {', '.join(unknown)}; phases: {known}")
        return 2
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.scale != 1:
        sizes = sizes.scaled(args.scale)
    if args.repeats is not None:
        sizes = dataclasses.replace(sizes, repeats=max(1, args.repeats))

    plan = CpuPlan.detect(pin=not args.no_pin)
    facts = machine.describe()  # before pinning, which narrows the usable cores
    plan.pin_self_to_load()
    started = datetime.datetime.now(datetime.UTC)
    results = Results()
    results.meta.update(
        started=started.isoformat(timespec="seconds"),
        machine=facts,
        machine_line=machine.summary_line(facts),
        pinning=plan.describe(),
        sizes=dataclasses.asdict(sizes),
        sizes_line=_sizes_line(sizes, args.quick),
        poll_interval=sizes.poll_interval,
        latency_rate=sizes.latency_rate,
        phases=phases,
        quick=args.quick,
    )
    # /tmp keeps the unix socket paths short.
    workdir = Path(tempfile.mkdtemp(prefix="fng-bench-", dir="/tmp"))
    clock = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - clock:5.0f}s] {text}", file=sys.stderr, flush=True)

    say(f"{len(phases)} phases; logs in {workdir}; {plan.describe()}")
    path = args.json or default_json_path(REPO / "bench-results", facts["commit"], started)
    out_dir = path.with_suffix("")  # profiles and other files of this run
    bench = Bench(sizes, plan, workdir, results, say, out_dir=out_dir)
    bench.wait_quiet = args.wait_quiet
    _run(bench.run(phases))
    results.meta["duration_s"] = round(time.monotonic() - clock, 1)
    errors = bench.errors

    verdicts = evaluate(results, targets(sizes.poll_interval))
    print(report.render(results, verdicts))
    for text in results.meta.pop("profile_text", []):
        print(text)
    document = results.as_json([v.as_json() for v in verdicts])
    write_json(path, document)
    say(f"results written to {path} in {results.meta['duration_s']:.0f}s")
    if args.compare:
        print(report.compare(load_json(args.compare), document))
    if errors or results.failed_checks or args.keep_logs:
        say(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if errors or results.failed_checks else 0


def _sizes_line(sizes: Sizes, quick: bool) -> str:
    text = (
        f"median of {sizes.repeats} run(s) each; HTTP {sizes.http_requests:,} requests, "
        f"gRPC {sizes.grpc_alerts:,} alerts, JetStream {sizes.jetstream_messages:,}, "
        f"latency {sizes.latency_seconds:g} s at {sizes.latency_rate:,.0f}/s, "
        f"memory {sizes.memory_alerts:,} alerts"
    )
    return text + (" (--quick: the figures mean nothing)" if quick else "")


def _run(main: Coroutine[Any, Any, None]) -> None:
    import uvloop

    uvloop.run(main)
