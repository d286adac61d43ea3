"""What happened to alerts: counted once, exposed as Prometheus metrics and in logs.

Every event kind has one entry point (`Telemetry.add`), so the running counts
the shutdown log prints and the metrics `/metrics` serves cannot drift apart.

falcosidekick's metric names are kept where they mean the same, so existing
dashboards keep working: `falcosecurity_falcosidekick_inputs_total{source,
status}` (source `requests` for HTTP, `grpc` for the gRPC stream) and
`falcosecurity_falcosidekick_outputs_total{destination="nats", status}`.
Labels stay low-cardinality: no per-rule label unless `metrics_rule_labels`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

KINDS = (
    "received",  # read from a source
    "filtered",  # below minimum_priority
    "duplicate",  # the other path's copy of an alert already accepted
    "rejected",  # unreadable: answered 4xx (HTTP) or skipped (gRPC)
    "refused",  # readable but the spool was full: HTTP 503, gRPC held back
    "accepted",  # spooled, on its way to NATS
    "published",  # NATS has it
    "expired",  # older than spool_max_age before NATS took it
    "undeliverable",  # NATS can never take it (larger than max_payload)
)

# falcosidekick's input source names.
_INPUT_SOURCE = {"http": "requests", "grpc": "grpc", "test": "test"}
_INPUT_STATUS = {"received": "accepted", "rejected": "rejected", "refused": "refused"}

# Seconds from accepted to confirmed by NATS: sub-millisecond when NATS is up,
# up to the length of an outage when it is not.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300)


class Telemetry:
    def __init__(self, rule_labels: bool = False) -> None:
        self.counts: dict[str, Counter[str]] = {k: Counter() for k in KINDS}
        self.registry = CollectorRegistry()
        self._inputs = PromCounter(
            "falcosecurity_falcosidekick_inputs",
            "Alerts received, as falcosidekick counts them (source: requests = HTTP, grpc)",
            ["source", "status"],
            registry=self.registry,
        )
        self._outputs = PromCounter(
            "falcosecurity_falcosidekick_outputs",
            "Alerts handed to outputs, as falcosidekick counts them",
            ["destination", "status"],
            registry=self.registry,
        )
        self._alerts = PromCounter(
            "falco_nats_gateway_alerts",
            "Alerts by ingest path and what became of them "
            "(received, filtered, duplicate, rejected, refused, accepted, published, expired, "
            "undeliverable)",
            ["path", "outcome"],
            registry=self.registry,
        )
        self._by_priority = PromCounter(
            "falco_nats_gateway_alerts_received_by_priority",
            "Alerts read from a source, by path and priority",
            ["path", "priority"],
            registry=self.registry,
        )
        self._rejections = PromCounter(
            "falco_nats_gateway_alerts_rejected_by_reason",
            "Unreadable alerts, by path and kind of problem",
            ["path", "reason"],
            registry=self.registry,
        )
        self._by_rule = (
            PromCounter(
                "falco_nats_gateway_alerts_received_by_rule",
                "Alerts read from a source, by rule (metrics_rule_labels: one series per rule)",
                ["rule", "priority"],
                registry=self.registry,
            )
            if rule_labels
            else None
        )
        self.latency = Histogram(
            "falco_nats_gateway_publish_latency_seconds",
            "Seconds from an alert being accepted to NATS confirming it (JetStream ack or flush)",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._publish_failures = PromCounter(
            "falco_nats_gateway_publish_failures",
            "Batches NATS did not confirm in time, to be retried",
            registry=self.registry,
        )
        for path in ("http", "grpc"):
            for outcome in KINDS:
                self._alerts.labels(path, outcome)
        self._bound: dict[tuple[str, str], tuple[PromCounter, ...]] = {}
        self._priority_bound: dict[tuple[str, str], PromCounter] = {}
        self._reason_bound: dict[tuple[str, str], PromCounter] = {}

    def add(self, kind: str, path: str, n: int = 1) -> None:
        """Count `n` alerts of `path` that met `kind` (one of KINDS)."""
        self.counts[kind][path] += n
        children = self._bound.get((kind, path))
        if children is None:
            children = self._bound[kind, path] = self._bind(kind, path)
        for child in children:
            child.inc(n)

    def _bind(self, kind: str, path: str) -> tuple[PromCounter, ...]:
        """The Prometheus series one (kind, path) event increments.

        Bound on first use and kept: `.labels()` costs a lock and a tuple lookup
        per call, several times per alert. Bound lazily rather than up front, so
        /metrics shows the same series as before (the keys are few: KINDS x paths).
        """
        children = [self._alerts.labels(path, kind)]
        status = _INPUT_STATUS.get(kind)
        if status is not None:
            children.append(self._inputs.labels(_INPUT_SOURCE.get(path, path), status))
        elif kind == "published":
            children.append(self._outputs.labels("nats", "ok"))
        elif kind in {"undeliverable", "expired"}:
            children.append(self._outputs.labels("nats", "error"))
        return tuple(children)

    def received(self, path: str, priority: str, rule: str) -> None:
        self.add("received", path)
        # Paths and Falco's eight priorities: a small, fixed set of keys.
        child = self._priority_bound.get((path, priority))
        if child is None:
            child = self._priority_bound[path, priority] = self._by_priority.labels(path, priority)
        child.inc()
        if self._by_rule is not None:
            self._by_rule.labels(rule, priority).inc()

    def rejected(self, path: str, reason: str) -> None:
        self.add("rejected", path)
        # Reasons are AlertError kinds and the HTTP guard's: a fixed set.
        child = self._reason_bound.get((path, reason))
        if child is None:
            child = self._reason_bound[path, reason] = self._rejections.labels(path, reason)
        child.inc()

    def publish_failed(self) -> None:
        self._publish_failures.inc()

    def watch(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Add metrics read at scrape time (spool depth, link states)."""
        self.registry.register(_Callback(collect))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def get(self, kind: str, path: str | None = None) -> int:
        counter = self.counts[kind]
        return counter[path] if path is not None else sum(counter.values())

    def summary(self) -> dict[str, int]:
        return {
            f"{kind}_{path}": count
            for kind in KINDS
            for path, count in sorted(self.counts[kind].items())
            if count
        }


class _Callback(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Metric]:
        yield from self._collect()


def gauge(
    name: str, documentation: str, value: float, labels: dict[str, str] | None = None
) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def counter(name: str, documentation: str, value: float) -> Metric:
    return CounterMetricFamily(name, documentation, value=value)
