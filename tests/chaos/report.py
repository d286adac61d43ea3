"""The chaos run's table, and what to rerun."""

from __future__ import annotations

from tests.chaos.run import RunResult
from tests.chaos.schedule import FAULT_KINDS, fingerprint

_SHORT = {
    "nats-kill": "nk",
    "nats-pause": "np",
    "gateway-kill": "gk",
    "disk-full": "df",
    "grpc-bad": "gb",
    "oversize": "os",
    "falco-restart": "fr",
}

COLUMNS = (
    ("seed", 10),
    ("faults injected", 34),
    ("sent", 7),
    ("accepted", 8),
    ("stored", 7),
    ("lost", 5),
    ("in transit", 10),
    ("dup", 4),
    ("refused", 7),
    ("dropped", 7),
    ("drain s", 7),
    ("RSS MiB", 7),
    ("verdict", 7),
)


def _faults(result: RunResult) -> str:
    return " ".join(f"{_SHORT[k]}{result.injected[k]}" for k in FAULT_KINDS if result.injected[k])


def table(results: list[RunResult]) -> str:
    head = " ".join(name.rjust(width) for name, width in COLUMNS)
    lines = [head, "-" * len(head)]
    for r in results:
        t = r.tally
        drain = "-" if r.drain_seconds is None else f"{r.drain_seconds:.1f}"
        cells = (
            r.options.seed,
            _faults(r) or "none",
            t.total_sent,
            t.accepted,
            t.stored,
            t.lost,
            t.in_transit,
            t.duplicated,
            t.refused,
            t.dropped,
            drain,
            f"{r.rss_max_mib:.0f}",
            "pass" if r.passed else "FAIL",
        )
        lines.append(" ".join(str(c).rjust(w) for c, (_, w) in zip(cells, COLUMNS, strict=True)))
    lines.append(
        "faults: "
        + ", ".join(f"{short}={kind}" for kind, short in _SHORT.items())
        + ". accepted: answered 2xx or handed over on the gRPC stream; in transit: gRPC"
        " alerts Falco had written onto the stream after the last one the gateway"
        " stored when it (or Falco) was killed: Falco's gRPC API has no ack; dropped:"
        " no answer (Falco drops those too)."
    )
    return "\n".join(lines)


def details(result: RunResult) -> str:
    """Everything about one run a person needs to act on it."""
    o, t = result.options, result.tally
    lines = [
        f"seed {o.seed}: {len(result.schedule)} faults scheduled over {o.duration:.0f}s "
        f"(schedule {fingerprint(result.schedule)}), kinds {','.join(o.kinds)}; "
        f"{result.elapsed:.0f}s in all",
        f"  sent http {t.sent.get('http', 0)}, grpc {t.sent.get('grpc', 0)}; "
        f"stream holds {result.stored_messages} messages ({t.extra} not counted as accepted: "
        "answers lost at a kill, or bad gRPC messages published); "
        f"5xx other than 503: {t.errors}; left in Falco's queue: {t.not_handed}",
        f"  HTTP statuses: {dict(sorted(result.statuses.items()))}",
        f"  gRPC in transit at a kill (no ack in Falco's API): {t.in_transit}"
        + (
            f" ({t.in_transit_after_kill} handed over after the kill, onto the dead connection)"
            f", handed over {t.transit_span[0]:+.3f}s to {t.transit_span[1]:+.3f}s from the kill"
            if t.in_transit
            else ""
        )
        + f"; gateway kills {result.injected['gateway-kill']}, "
        f"Falco restarts {result.injected['falco-restart']}",
    ]
    lines += [f"  not injected: {kind}: {why}" for kind, why in result.skipped.items()]
    lines += [f"  note: {n}" for n in sorted(set(result.notes))]
    for failure in result.failures:
        lines.append("  FAILED: " + failure.replace("\n", "\n    "))
    lines += [f"  e.g. {e}" for e in t.examples[:5]]
    return "\n".join(lines)


def rerun_command(result: RunResult) -> str:
    o = result.options
    return (
        f"python -m tests.chaos --seed {o.seed} --minutes {o.duration / 60:g} "
        f"--faults {','.join(o.kinds)} --rate {o.rate:g} --drain-bound {o.drain_bound:g}"
    )
