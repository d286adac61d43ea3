"""The printed report: Markdown tables, ready to paste into docs/performance.md.

Each figure is the median of its repeats, followed by +-N%: half the range
between the lowest and the highest repeat, relative to the median.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.results import Results
from bench.targets import Verdict

# Not a ceiling: what the least relay of Falco's POSTs to NATS keeps of bare Hypercorn.
RELAY_LABEL = "reference: least relay (parse, nats-py publish)"

DASH = "-"


def render(results: Results, verdicts: Sequence[Verdict]) -> str:
    meta = results.meta
    parts = [
        f"- Machine: {meta.get('machine_line', 'unknown')}",
        f"- Pinning: {meta.get('pinning', 'unknown')}",
        f"- Sizes: {meta.get('sizes_line', '')}",
        f"- Machine load besides the benchmark: {_background(results)}",
        "",
        "#### Ceilings (the same load, without the gateway)",
        "",
        _ceilings(results),
        "",
        "#### The gateway (core NATS unless marked JetStream)",
        "",
        _gateway(results),
        "",
        f"#### End-to-end latency at {meta.get('latency_rate', 1000):,.0f} alerts/s "
        "(alert emitted -> NATS subscriber has it)",
        "",
        _latency(results),
        "",
        "#### Memory and CPU",
        "",
        _memory(results),
        "",
        "#### Targets",
        "",
        _targets(verdicts),
        "",
        _checks(results),
    ]
    errors = meta.get("errors") or []
    if errors:
        parts += ["", "ERRORS (the figures of these phases are missing or partial):"]
        parts += [f"- {e}" for e in errors]
    warnings = meta.get("warnings") or []
    if warnings:
        parts += ["", "Warnings:", *(f"- {w}" for w in warnings)]
    return "\n".join(parts).rstrip() + "\n"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in rows:
        cells = (str(c).ljust(w) for c, w in zip(row, widths, strict=True))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def value(results: Results, key: str, digits: int = 0, spread: bool = True) -> str:
    """`1,234 +-2%`, or n/a with the reason, or a dash when not measured."""
    figure = results.figures.get(key)
    if figure is None or not figure.samples:
        reason = results.unavailable.get(key)
        return reason if reason else DASH
    s = figure.summary
    text = f"{s.median:,.{digits}f}"
    if spread and s.n > 1:
        text += f" +-{s.spread_pct / 2:.0f}%"
    return text


def _ratio(results: Results, key: str, ceiling: str, name: str) -> str:
    measured = results.median(key)
    base = results.median(ceiling)
    if measured is None or not base:
        return DASH
    return f"{measured / base:.0%} of {name}"


def _paired(results: Results, key: str) -> str:
    """The pair-by-pair ratio, when the run has it, ahead of the phase-to-phase ones."""
    ratio = results.median(key)
    return "" if ratio is None else f"{ratio:.0%} of Hypercorn alongside; "


def _pct(results: Results, key: str) -> str:
    text = value(results, key, 0, False)
    return text if text == DASH or text.startswith("n/a") else text + "%"


def _unit(text: str, unit: str) -> str:
    return text if text == DASH or text.startswith("n/a") else f"{text} {unit}"


def _join(*parts: str) -> str:
    shown = [p for p in parts if p != DASH]
    return ", ".join(shown) if shown else DASH


def _ceilings(results: Results) -> str:
    rows = []
    for name, label in (
        ("hypercorn", "bare ASGI on Hypercorn"),
        ("quart", "Quart on Hypercorn"),
        ("relay", RELAY_LABEL),
    ):
        for connections in (1, 16):
            key = f"ceiling.{name}.c{connections}"
            share = ""
            if name == "relay":
                ratio = _ratio(
                    results, f"{key}.rate", f"ceiling.hypercorn.c{connections}.rate", "bare"
                )
                share = f" ({ratio})" if ratio != DASH else ""
            rows.append(
                [
                    f"{label}, {connections} conn{share}",
                    _unit(value(results, f"{key}.rate"), "req/s"),
                    value(results, f"{key}.p50", 2, False),
                    value(results, f"{key}.p99", 2, False),
                    _pct(results, f"{key}.busy"),
                    value(results, f"{key}.cpu10k", 2, False),
                ]
            )
    size = results.median("ceiling.grpc.bytes")
    busy = _pct(results, "ceiling.grpc.busy")
    feed = _pct(results, "ceiling.grpc.feed_busy")
    rows.append(
        [
            "raw grpc.aio client draining Falco's sub stream"
            + (f" ({size:,.0f}-byte responses)" if size else ""),
            _unit(value(results, "ceiling.grpc.rate"), "alerts/s"),
            DASH,
            DASH,
            busy if busy == DASH else f"{busy} (stand-in {feed})",
            DASH,
        ]
    )
    convert = _ratio(results, "ceiling.grpc_convert.rate", "ceiling.grpc.rate", "raw")
    rows.append(
        [
            "reference: the raw drain + the gateway's normalizer and payload"
            + (f" ({convert})" if convert != DASH else ""),
            _unit(value(results, "ceiling.grpc_convert.rate"), "alerts/s"),
            DASH,
            DASH,
            _pct(results, "ceiling.grpc_convert.busy"),
            DASH,
        ]
    )
    rows.append(
        [
            "nats-py core publish, 1 KB",
            _unit(value(results, "ceiling.nats_core.rate"), "msgs/s"),
            DASH,
            DASH,
            DASH,
            DASH,
        ]
    )
    rows.append(
        [
            "nats-py JetStream publish, 1 KB, 256 acks in flight, file store",
            _unit(value(results, "ceiling.jetstream.rate"), "msgs/s"),
            DASH,
            DASH,
            DASH,
            DASH,
        ]
    )
    header = ["ceiling", "rate", "p50 ms", "p99 ms", "core busy", "CPU s/10k"]
    return table(header, rows)


def _gateway(results: Results) -> str:
    rows = []
    for connections, who in ((1, "one Falco"), (16, "many Falcos")):
        key = f"gateway.http.c{connections}"
        rows.append(
            [
                f"HTTP, {connections} conn ({who})",
                value(results, f"{key}.rate"),
                _paired(results, f"{key}.paired")
                + _ratio(
                    results, f"{key}.rate", f"ceiling.hypercorn.c{connections}.rate", "Hypercorn"
                )
                + ", "
                + _ratio(results, f"{key}.rate", f"ceiling.quart.c{connections}.rate", "Quart"),
                value(results, f"{key}.p50", 2, False),
                value(results, f"{key}.p99", 2, False),
                _pct(results, f"{key}.busy"),
                value(results, f"{key}.cpu10k", 2, False),
            ]
        )
    rows.append(
        [
            "gRPC, a burst in Falco's queue",
            value(results, "gateway.grpc.rate"),
            _ratio(results, "gateway.grpc.rate", "ceiling.grpc.rate", "raw grpc.aio"),
            DASH,
            DASH,
            _pct(results, "gateway.grpc.busy"),
            value(results, "gateway.grpc.cpu10k", 2, False),
        ]
    )
    rows.append(
        [
            "JetStream, gRPC burst in",
            value(results, "gateway.js.grpc.rate"),
            _ratio(results, "gateway.js.grpc.rate", "ceiling.jetstream.rate", "JetStream publish"),
            DASH,
            DASH,
            _pct(results, "gateway.js.grpc.busy"),
            value(results, "gateway.js.grpc.cpu10k", 2, False),
        ]
    )
    rows.append(
        [
            "JetStream, spool backlog into the stream",
            value(results, "gateway.js.drain.rate"),
            _ratio(results, "gateway.js.drain.rate", "ceiling.jetstream.rate", "JetStream publish"),
            DASH,
            DASH,
            _pct(results, "gateway.js.drain.busy"),
            value(results, "gateway.js.drain.cpu10k", 2, False),
        ]
    )
    header = ["path", "alerts/s on NATS", "share of ceiling", "answer p50 ms", "answer p99 ms"]
    return table([*header, "core busy", "CPU s/10k"], rows)


def _latency(results: Results) -> str:
    rows = []
    poll = results.meta.get("poll_interval", 0.1)
    for mode, nats_name in (("core", "core"), ("js", "JetStream")):
        for path in ("http", "grpc"):
            key = f"latency.{mode}.{path}"
            if path == "http":
                from_send = value(results, f"{key}.send_p99", 2, False)
                own = value(results, f"{key}.own_p99", 2, False)
                note = f"answer p99 {value(results, f'{key}.resp_p99', 2, False)} ms"
            else:
                from_send = own = DASH
                note = f"the gateway asks Falco every {poll:g} s"
            rows.append(
                [
                    "HTTP, 1 conn" if path == "http" else "gRPC",
                    nats_name,
                    value(results, f"{key}.p50", 2),
                    value(results, f"{key}.p99", 2),
                    value(results, f"{key}.max", 2, False),
                    own,
                    from_send,
                    note,
                ]
            )
    header = ["path", "NATS", "p50 ms", "p99 ms", "max ms", "p99 without the load generator's "
              "own delays ms", "p99 from the POST ms", "note"]  # fmt: skip
    return table(header, rows)


def _background(results: Results) -> str:
    phases = results.meta.get("background") or {}
    if not phases:
        return "unknown"
    worst = max(phases.values(), key=lambda p: p["share"] + p["steal_share"])
    parts = ", ".join(
        f"{name} {p['share']:.0%}"
        + (f" (+{p['steal_share']:.0%} stolen)" if p["steal_share"] >= 0.005 else "")
        for name, p in phases.items()
    )
    quiet = worst["share"] + worst["steal_share"] <= 0.03
    return f"{'quiet' if quiet else 'BUSY'}: other processes' share of the CPU per phase: {parts}"


def _memory(results: Results) -> str:
    keys = (
        "memory.rss_start",
        "memory.rss_end",
        "memory.rss_peak",
        "memory.rss_growth",
        "memory.cpu10k",
        "memory.nodedup.rss_end",
        "memory.nodedup.rss_growth",
    )
    rows = []
    for key in keys:
        figure = results.figures.get(key)
        if figure is None:
            continue
        digits = 2 if figure.unit == "s" else 1
        rows.append([figure.label, f"{value(results, key, digits)} {figure.unit}"])
    if not rows:
        return "not measured in this run"
    series = results.series.get("memory.rss_mb")
    if series:
        points = ", ".join(f"{a / 1000:g}k: {mb:.1f}" for a, mb in series)
        rows.append(["RSS MB after each step", points])
    return table(["figure", "value"], rows)


def _targets(verdicts: Sequence[Verdict]) -> str:
    rows = []
    for v in verdicts:
        measured = DASH if v.measured is None else f"{v.measured:,.{_digits(v.measured)}f}"
        ratio = DASH if v.ratio is None else f"{v.ratio:.0%}"
        if not v.reason:
            status: str = v.status
        elif v.reason.startswith(v.status):
            status = v.reason
        else:
            status = f"{v.status}: {v.reason}"
        rows.append([v.target.name, measured, ratio, v.target.describe(), status])
    return table(["target", "measured", "ratio", "need", "result"], rows)


def _digits(number: float) -> int:
    return 0 if abs(number) >= 100 else 2


def _checks(results: Results) -> str:
    failed = results.failed_checks
    if not failed:
        return f"Checks: all {len(results.checks)} passed (every alert sent arrived on NATS once)."
    lines = [f"Checks: {len(failed)} of {len(results.checks)} FAILED; the figures are not valid:"]
    lines += [f"- {c.name}: {c.detail}" for c in failed]
    return "\n".join(lines)


def compare(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Figure by figure, the medians of two runs (JSON documents) and the change."""
    rows = []
    old_figures = old.get("figures", {})
    for key, figure in new.get("figures", {}).items():
        before = old_figures.get(key)
        if before is None:
            continue
        a, b = before["median"], figure["median"]
        change = f"{(b - a) / a:+.0%}" if a else DASH
        rows.append([key, f"{a:,.4g}", f"{b:,.4g}", change, figure["unit"]])
    title = (
        f"Compared with {old.get('meta', {}).get('machine', {}).get('commit', '?')} "
        f"({old.get('meta', {}).get('started', '?')}):"
    )
    if not rows:
        return title + " no figures in common.\n"
    return title + "\n\n" + table(["figure", "before", "now", "change", "unit"], rows) + "\n"
