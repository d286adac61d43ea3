"""The performance targets, and PASS/MISS against a run's medians.

Throughput targets are ratios to a ceiling measured in the same run on the
same machine, so they hold across machines; latency and memory targets are
absolute. A target whose figures could not be measured is `n/a`, with the
reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bench.results import Results

Status = Literal["PASS", "MISS", "n/a"]


@dataclass(frozen=True)
class Target:
    name: str
    figure: str
    threshold: float
    kind: Literal["ratio_at_least", "at_most", "at_least"]
    ceiling: str = ""  # the figure the ratio is taken against
    # Ratios measured pair by pair (ceiling and gateway back to back, each repeat);
    # used instead of figure / ceiling when the run has them.
    paired: str = ""

    def describe(self) -> str:
        if self.kind == "ratio_at_least":
            return f">= {self.threshold:.0%}"
        sign = "<=" if self.kind == "at_most" else ">="
        return f"{sign} {self.threshold:,.6g}"


@dataclass(frozen=True)
class Verdict:
    target: Target
    status: Status
    measured: float | None
    ratio: float | None
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.target.name,
            "figure": self.target.figure,
            "ceiling": self.target.ceiling,
            "need": self.target.describe(),
            "measured": self.measured,
            "ratio": self.ratio,
            "status": self.status,
            "reason": self.reason,
        }


def targets(poll_interval_s: float) -> list[Target]:
    """The targets of the issue; the gRPC latency bound follows the poll cadence."""
    grpc_bound_ms = poll_interval_s * 1000 + 5
    return [
        Target(
            "HTTP, 1 connection: alerts/s vs bare Hypercorn",
            "gateway.http.c1.rate",
            0.75,
            "ratio_at_least",
            "ceiling.hypercorn.c1.rate",
            paired="gateway.http.c1.paired",
        ),
        Target(
            "HTTP, 16 connections: alerts/s vs bare Hypercorn",
            "gateway.http.c16.rate",
            0.75,
            "ratio_at_least",
            "ceiling.hypercorn.c16.rate",
            paired="gateway.http.c16.paired",
        ),
        Target(
            "gRPC: alerts/s vs raw grpc.aio drain",
            "gateway.grpc.rate",
            0.70,
            "ratio_at_least",
            "ceiling.grpc.rate",
        ),
        Target("gRPC: alerts/s, absolute floor", "gateway.grpc.rate", 15_000, "at_least"),
        Target(
            "JetStream, sustained (gRPC in): alerts/s vs in-flight JetStream publish",
            "gateway.js.grpc.rate",
            0.70,
            "ratio_at_least",
            "ceiling.jetstream.rate",
        ),
        Target(
            "JetStream, publish stage (spool backlog): alerts/s vs in-flight publish",
            "gateway.js.drain.rate",
            0.70,
            "ratio_at_least",
            "ceiling.jetstream.rate",
        ),
        Target("p99 end to end, HTTP, core, 1,000/s (ms)", "latency.core.http.p99", 5, "at_most"),
        Target(
            "p99 end to end, HTTP, JetStream, 1,000/s (ms)", "latency.js.http.p99", 5, "at_most"
        ),
        Target(
            "p99 end to end, gRPC, core, 1,000/s (ms)",
            "latency.core.grpc.p99",
            grpc_bound_ms,
            "at_most",
        ),
        Target(
            "p99 end to end, gRPC, JetStream, 1,000/s (ms)",
            "latency.js.grpc.p99",
            grpc_bound_ms,
            "at_most",
        ),
        Target("RSS, highest over the run (MB)", "memory.rss_peak", 80, "at_most"),
        Target(
            "RSS growth over the second half of the run (MB)",
            "memory.rss_growth",
            FLAT_TOLERANCE_MB,
            "at_most",
        ),
    ]


# "Flat": what the second half of the alerts adds to RSS stays within allocator
# noise. 2 MB over 50k alerts is 40 bytes an alert; anything kept per alert is more.
FLAT_TOLERANCE_MB = 2.0


def evaluate(results: Results, wanted: list[Target]) -> list[Verdict]:
    return [_verdict(results, target) for target in wanted]


def _verdict(results: Results, target: Target) -> Verdict:
    measured = results.median(target.figure)
    if measured is None:
        return Verdict(target, "n/a", None, None, _why_missing(results, target.figure))
    if target.kind == "ratio_at_least":
        paired = results.median(target.paired) if target.paired else None
        if paired is not None:
            status: Status = "PASS" if paired >= target.threshold else "MISS"
            return Verdict(target, status, measured, paired)
        ceiling = results.median(target.ceiling)
        if not ceiling:
            reason = _why_missing(results, target.ceiling)
            return Verdict(target, "n/a", measured, None, f"no ceiling: {reason}")
        ratio = measured / ceiling
        return Verdict(target, "PASS" if ratio >= target.threshold else "MISS", measured, ratio)
    ok = measured <= target.threshold if target.kind == "at_most" else measured >= target.threshold
    return Verdict(target, "PASS" if ok else "MISS", measured, None)


def _why_missing(results: Results, key: str) -> str:
    return results.unavailable.get(key, "not measured in this run")
