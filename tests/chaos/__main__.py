"""`python -m tests.chaos`: the fault-injection suite (`make chaos`)."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from pathlib import Path

from tests.chaos.load import Falco
from tests.chaos.report import details, rerun_command, table
from tests.chaos.run import RunOptions, RunResult, run_once
from tests.chaos.schedule import FAULT_KINDS, parse_kinds


def default_kinds() -> tuple[str, ...]:
    """Every kind this tree can inject (grpc-bad needs FalcoServer.emit_raw)."""
    return tuple(k for k in FAULT_KINDS if k != "grpc-bad" or Falco.can_emit_raw())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos",
        description="The real gateway under Falco-shaped load on both paths while a seeded "
        "schedule injects faults; checks the JetStream stream afterwards.",
    )
    parser.add_argument(
        "--seed", type=int, action="append", help="run this seed (repeatable); reruns exactly"
    )
    parser.add_argument(
        "--seeds", type=int, default=1, help="without --seed: this many random seeds"
    )
    parser.add_argument("--minutes", type=float, default=1.0, help="load and faults per seed")
    parser.add_argument(
        "--faults",
        default=",".join(default_kinds()),
        help=f"comma-separated fault kinds, or 'all' (known: {', '.join(FAULT_KINDS)})",
    )
    parser.add_argument("--rate", type=float, default=40.0, help="alerts/s on each path")
    parser.add_argument("--drain-bound", type=float, default=60.0, help="seconds")
    parser.add_argument("--rss-bound-mib", type=float, default=512.0)
    parser.add_argument("--workdir", type=Path, help="logs and stores (default: a temp dir)")
    args = parser.parse_args(argv)
    try:
        args.kinds = parse_kinds(args.faults)
    except ValueError as exc:
        parser.error(str(exc))
    if not 0 < args.rate <= 300:
        parser.error("--rate must be above 0 and at most 300 alerts/s per path")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seeds = args.seed or [random.SystemRandom().randrange(1, 1 << 31) for _ in range(args.seeds)]
    base = args.workdir or Path(tempfile.mkdtemp(prefix="chaos-run-"))
    results: list[RunResult] = []
    for seed in seeds:
        options = RunOptions(
            seed=seed,
            duration=args.minutes * 60,
            kinds=args.kinds,
            workdir=base / f"seed-{seed}",
            rate=args.rate,
            drain_bound=args.drain_bound,
            rss_bound_mib=args.rss_bound_mib,
        )
        print(f"seed {seed}: {args.minutes:g} min of {','.join(args.kinds)}", flush=True)
        try:
            result = asyncio.run(run_once(options))
        except Exception as exc:  # one seed's broken run must not hide the others' results
            result = RunResult(options, schedule=[])
            result.error = f"{type(exc).__name__}: {exc}"
        results.append(result)
        print(details(result), flush=True)
    print()
    print(table(results))
    failed = [r for r in results if not r.passed]
    print(f"\nlogs and stores: {base}")
    for r in failed:
        print(f"rerun: {rerun_command(r)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
