"""The operator kit's generated files: the Grafana dashboard, and deploy/'s copies.

    python scripts/operator_kit.py          write them
    python scripts/operator_kit.py --check  exit 1, naming the file, if one is out of date

The dashboard is written from PANELS below (the source of truth) to the chart's
files/grafana-dashboard.json (its ConfigMap, metrics.grafanaDashboard) and to
deploy/grafana-dashboard.json (to import by hand). The alert rules are written by hand in the
chart's files/prometheus-rules.yaml and copied to deploy/prometheus-rules.yaml. tests/operator/
runs every panel's query and every rule against a real Prometheus scraping a real gateway.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHART_FILES = ROOT / "charts" / "falco-nats-gateway" / "files"
DEPLOY = ROOT / "deploy"

# Grafana's template variables: every query is limited to the chosen jobs and instances.
_TARGET = 'job=~"$job", instance=~"$instance"'
RATE = "$__rate_interval"


def sel(metric: str, extra: str = "") -> str:
    """`metric{job=~"$job", instance=~"$instance"[, extra]}`."""
    return f"{metric}{{{_TARGET}{', ' + extra if extra else ''}}}"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    width: int = 12
    height: int = 8
    # A link state or a ratio: a fixed scale reads better than an automatic one.
    max: float | None = None
    options: dict[str, Any] = field(default_factory=dict)


def quantile(q: float) -> Query:
    buckets = sel("falco_nats_gateway_publish_latency_seconds_bucket")
    return Query(
        f"histogram_quantile({q}, sum by (le) (rate({buckets}[{RATE}])))", f"p{round(q * 100)}"
    )


ALERTS = "falco_nats_gateway_alerts_total"
DUPLICATE = sel(ALERTS, 'outcome="duplicate"')
RECEIVED = sel(ALERTS, 'outcome="received"')
LOST = sel(ALERTS, 'outcome=~"refused|undeliverable|expired"')

PANELS: tuple[Panel, ...] = (
    Panel(
        "Alerts/s by path and outcome",
        "What became of every alert, per ingest path (grpc, http): received, filtered "
        "(minimum_priority), duplicate, rejected, refused, accepted, published, expired, "
        "undeliverable.",
        "cps",
        (
            Query(
                f"sum by (path, outcome) (rate({sel(ALERTS)}[{RATE}])) > 0",
                "{{path}} {{outcome}}",
            ),
        ),
    ),
    Panel(
        "Alerts/s received, by priority",
        "Alerts read from Falco over both paths, by Falco priority.",
        "cps",
        (
            Query(
                "sum by (priority) "
                f"(rate({sel('falco_nats_gateway_alerts_received_by_priority_total')}[{RATE}]))",
                "{{priority}}",
            ),
        ),
    ),
    Panel(
        "Publish latency (accepted to confirmed by NATS)",
        "Quantiles of the seconds from an alert being spooled to NATS confirming it (JetStream "
        "ack or core flush): sub-millisecond with NATS up, the length of an outage otherwise.",
        "s",
        (quantile(0.5), quantile(0.9), quantile(0.99)),
    ),
    Panel(
        "Spool: bytes waiting and the limit",
        "Bytes waiting for NATS, against spool_max_bytes; at the limit alerts are refused.",
        "bytes",
        (
            Query(
                f"sum by (instance) ({sel('falco_nats_gateway_spool_bytes')})",
                "{{instance}} waiting",
            ),
            Query(
                f"max by (instance) ({sel('falco_nats_gateway_spool_limit_bytes')})",
                "{{instance}} limit",
            ),
        ),
    ),
    Panel(
        "Spool: alerts waiting",
        "Alerts accepted and not yet confirmed by NATS.",
        "short",
        (
            Query(
                f"sum by (instance) ({sel('falco_nats_gateway_spool_alerts')})",
                "{{instance}}",
            ),
        ),
    ),
    Panel(
        "Duplicates dropped (share of alerts received)",
        "Falco 0.43 with gRPC and http_output sends every alert twice; the gateway keeps the "
        "first copy. About 50% there; 0% with one path.",
        "percentunit",
        (
            Query(
                f"sum(rate({DUPLICATE}[{RATE}])) / sum(rate({RECEIVED}[{RATE}]))",
                "duplicates",
            ),
        ),
        max=1,
    ),
    Panel(
        "Dedup window: alert ids remembered",
        "Alert ids kept for dedup_window seconds (at most dedup_max_entries).",
        "short",
        (
            Query(
                f"sum by (instance) ({sel('falco_nats_gateway_dedup_entries')})",
                "{{instance}}",
            ),
        ),
    ),
    Panel(
        "NATS link: connected, reconnections",
        "1 while connected to NATS; reconnections per interval.",
        "short",
        (
            Query(
                f"min by (instance) ({sel('falco_nats_gateway_nats_connected')})",
                "{{instance}} connected",
            ),
            Query(
                "sum by (instance) "
                f"(increase({sel('falco_nats_gateway_nats_reconnects_total')}[{RATE}]))",
                "{{instance}} reconnections",
            ),
        ),
    ),
    Panel(
        "Falco gRPC link: connected, reconnections",
        "1 while the gRPC stream from Falco is up (Falco 0.43 and older); reconnections per "
        "interval.",
        "short",
        (
            Query(
                f"min by (instance) ({sel('falco_nats_gateway_grpc_connected')})",
                "{{instance}} connected",
            ),
            Query(
                "sum by (instance) "
                f"(increase({sel('falco_nats_gateway_grpc_reconnects_total')}[{RATE}]))",
                "{{instance}} reconnections",
            ),
        ),
    ),
    Panel(
        "Alerts refused, undeliverable or expired",
        "Per interval: refused (spool full: HTTP 503, gRPC held back), undeliverable (NATS can "
        "never take it), expired (older than spool_max_age). Each one is a gap.",
        "short",
        (
            Query(
                f"sum by (path, outcome) (increase({LOST}[{RATE}]))",
                "{{path}} {{outcome}}",
            ),
        ),
    ),
    Panel(
        "Alerts rejected (unreadable), by reason",
        "Per interval: what could not be read, by reason (malformed_json, missing_field, "
        "too_large, read_timeout, text_plain, unauthorized ...).",
        "short",
        (
            Query(
                "sum by (path, reason) (increase("
                f"{sel('falco_nats_gateway_alerts_rejected_by_reason_total')}[{RATE}]))",
                "{{path}} {{reason}}",
            ),
        ),
    ),
    Panel(
        "Gateway faults: publish failures, task failures, delivery degraded",
        "Per interval: batches NATS did not confirm in time (retried) and tasks restarted after "
        "an unexpected end; 1 while NATS or JetStream refuses alerts.",
        "short",
        (
            Query(
                "sum by (instance) "
                f"(increase({sel('falco_nats_gateway_publish_failures_total')}[{RATE}]))",
                "{{instance}} publish failures",
            ),
            Query(
                "sum by (instance, task) "
                f"(increase({sel('falco_nats_gateway_task_failures_total')}[{RATE}]))",
                "{{instance}} {{task}} task failures",
            ),
            Query(
                f"max by (instance) ({sel('falco_nats_gateway_delivery_degraded')})",
                "{{instance}} delivery degraded",
            ),
        ),
    ),
)


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit, "min": 0}
    if panel.max is not None:
        defaults["max"] = panel.max
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": datasource,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": [
            {
                "refId": chr(ord("A") + index),
                "datasource": datasource,
                "expr": query.expr,
                "legendFormat": query.legend,
                "range": True,
            }
            for index, query in enumerate(panel.queries)
        ],
    }


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".+",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    x = y = 0
    row_height = 0
    for index, panel in enumerate(PANELS, start=1):
        if x + panel.width > 24:
            x, y = 0, y + row_height
            row_height = 0
        panels.append(_panel(panel, index, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    return {
        "uid": "falco-nats-gateway",
        "title": "falco-nats-gateway",
        "description": "Falco alerts onto NATS: intake by path, spool, delivery, links.",
        "tags": ["falco", "nats", "falco-nats-gateway"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                _variable("job", "job", "label_values(falco_nats_gateway_info, job)"),
                _variable(
                    "instance",
                    "instance",
                    'label_values(falco_nats_gateway_info{job=~"$job"}, instance)',
                ),
            ]
        },
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def generated() -> dict[Path, bytes]:
    """Every generated file and the bytes it must hold."""
    text = (json.dumps(dashboard(), indent=2) + "\n").encode()
    rules = (CHART_FILES / "prometheus-rules.yaml").read_bytes()
    return {
        CHART_FILES / "grafana-dashboard.json": text,
        DEPLOY / "grafana-dashboard.json": text,
        DEPLOY / "prometheus-rules.yaml": rules,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say what is out of date")
    args = parser.parse_args(argv)
    stale = [
        path
        for path, content in generated().items()
        if not path.exists() or path.read_bytes() != content
    ]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run python scripts/operator_kit.py")
        return 1 if stale else 0
    for path, content in generated().items():
        path.write_bytes(content)
    return 0


if __name__ == "__main__":
    sys.exit(main())
