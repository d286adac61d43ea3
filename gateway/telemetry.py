"""What happened to alerts: counted once, exposed as Prometheus metrics and in logs.

Every event kind has one entry point (`Telemetry.add`), so the running counts
the shutdown log prints and the metrics `/metrics` serves cannot drift apart:
both are read from the same plain counters (`Telemetry.counts`).

Counting is per alert, on the hot path, so it is plain dict arithmetic: no
prometheus_client Counter or Histogram, whose every `inc`/`observe` takes a
lock. The gateway is a single asyncio event loop and every call, `/metrics`
included, comes from that one thread, so the locks would buy nothing. The
Prometheus metric families are built from the counters only at scrape time
(`exposition`), by a collector registered in `Telemetry.registry`.

falcosidekick's metric names are kept where they mean the same, so existing
dashboards keep working: `falcosecurity_falcosidekick_inputs_total{source,
status}` (source `requests` for HTTP, `grpc` for the gRPC stream) and
`falcosecurity_falcosidekick_outputs_total{destination="nats", status}`.
Labels stay low-cardinality: no per-rule label unless `metrics_rule_labels`.
Counters carry no `_created` samples (a prometheus_client extra; Prometheus
itself does not need them).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gateway.errors import RejectionKind, RepairKind

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

# Shown in falco_nats_gateway_alerts_total from the start, at 0 for every
# outcome, so dashboards see the series before the first alert.
_PATHS = ("http", "grpc")

# falcosidekick's input source names.
_INPUT_SOURCE = {"http": "requests", "grpc": "grpc", "test": "test"}
_INPUT_STATUS = {"received": "accepted", "rejected": "rejected", "refused": "refused"}
# falcosidekick's output statuses, for destination="nats".
_OUTPUT_STATUS = {"published": "ok", "undeliverable": "error", "expired": "error"}

# Seconds from accepted to confirmed by NATS: sub-millisecond when NATS is up,
# up to the length of an outage when it is not.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300)


class Histogram:
    """A Prometheus histogram without prometheus_client's lock (one event-loop thread).

    `observe` costs one bisect and two additions. It keeps a count per bucket,
    not cumulative ones, so an observation touches one slot; the cumulative
    `le` counts are summed at scrape time, as prometheus_client does.
    """

    __slots__ = ("_bounds", "_counts", "_les", "_sum", "documentation", "name")

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds):
            raise ValueError("buckets not in sorted order")
        if not bounds or bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self.name = name
        self.documentation = documentation
        self._bounds = tuple(bounds)
        # `le` as prometheus_client spells it ("1.0", "+Inf"), worked out once.
        self._les = tuple(floatToGoString(b) for b in bounds)  # type: ignore[no-untyped-call]
        # _counts[i]: observations in (bounds[i-1], bounds[i]]; the last bound is +Inf,
        # so bisect_left always lands on a slot.
        self._counts = [0] * len(bounds)
        self._sum = 0.0

    def observe(self, amount: float) -> None:
        self._counts[bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def family(self) -> HistogramMetricFamily:
        buckets: list[tuple[str, float]] = []
        total = 0
        for le, count in zip(self._les, self._counts, strict=True):
            total += count
            buckets.append((le, total))
        return HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=self._sum
        )


class Telemetry:
    def __init__(self, rule_labels: bool = False) -> None:
        # The one record of what happened, by kind then path; /metrics is derived from
        # it. A path is a key once counted for that kind (even by n=0), which is what
        # puts its series on /metrics, as a first `.inc()` used to.
        self.counts: dict[str, Counter[str]] = {k: Counter() for k in KINDS}
        self._received = self.counts["received"]  # the same Counter, one lookup less
        # Plain dicts, not Counters: a Counter's `d[k] += 1` costs about twice a dict's
        # (its Python-level __delitem__ routes every item assignment through a slot
        # wrapper). `counts` stays Counters: it is public.
        self._by_priority: dict[tuple[str, str], int] = {}  # (path, priority)
        self._by_reason: dict[tuple[str, str], int] = {}  # (path, reason)
        self._by_rule: dict[tuple[str, str], int] | None = {} if rule_labels else None
        self._publish_failures = 0
        self._repaired: dict[tuple[str, str], int] = {}  # (path, reason)
        self._unexpected: dict[str, int] = {}  # component
        self.latency = Histogram(
            "falco_nats_gateway_publish_latency_seconds",
            "Seconds from an alert being accepted to NATS confirming it (JetStream ack or flush)",
            _LATENCY_BUCKETS,
        )
        self.registry = CollectorRegistry()
        self.registry.register(_Callback(self._families))

    def add(self, kind: str, path: str, n: int = 1) -> None:
        """Count `n` alerts of `path` that met `kind` (one of KINDS)."""
        self.counts[kind][path] += n

    def received(self, path: str, priority: str, rule: str) -> None:
        self._received[path] += 1
        # Paths and Falco's eight priorities: a small, fixed set of keys.
        key = (path, priority)
        by_priority = self._by_priority
        try:
            by_priority[key] += 1
        except KeyError:  # first of its kind: a try costs nothing until it raises
            by_priority[key] = 1
        by_rule = self._by_rule
        if by_rule is not None:
            key = (rule, priority)
            try:
                by_rule[key] += 1
            except KeyError:
                by_rule[key] = 1

    def rejected(self, path: str, reason: RejectionKind) -> None:
        self.add("rejected", path)
        # Reasons are a closed set (RejectionKind): bounded label values.
        key = (path, reason)
        self._by_reason[key] = self._by_reason.get(key, 0) + 1

    def repaired(self, path: str, reason: RepairKind) -> None:
        """An alert that goes out with part of it mended (bad UTF-8 replaced)."""
        key = (path, reason)
        self._repaired[key] = self._repaired.get(key, 0) + 1

    def unexpected_error(self, component: str) -> None:
        """An exception no code path expected, caught at a source's edge."""
        self._unexpected[component] = self._unexpected.get(component, 0) + 1

    def publish_failed(self) -> None:
        self._publish_failures += 1

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

    def _families(self) -> Iterator[Metric]:
        """The counts as Prometheus families, built per scrape; the order and the series
        are those the prometheus_client Counters this replaces showed."""
        counts = self.counts
        inputs: dict[tuple[str, str], int] = {}
        outputs: dict[str, int] = {}
        for kind, by_path in counts.items():
            status = _INPUT_STATUS.get(kind)
            if status is not None:
                for path, n in by_path.items():
                    key = (_INPUT_SOURCE.get(path, path), status)
                    inputs[key] = inputs.get(key, 0) + n
            status = _OUTPUT_STATUS.get(kind)
            if status is not None and by_path:
                outputs[status] = outputs.get(status, 0) + sum(by_path.values())
        yield _counter_family(
            "falcosecurity_falcosidekick_inputs",
            "Alerts received, as falcosidekick counts them (source: requests = HTTP, grpc)",
            ("source", "status"),
            inputs.items(),
        )
        yield _counter_family(
            "falcosecurity_falcosidekick_outputs",
            "Alerts handed to outputs, as falcosidekick counts them",
            ("destination", "status"),
            ((("nats", status), n) for status, n in outputs.items()),
        )
        paths = dict.fromkeys(_PATHS)
        for by_path in counts.values():
            paths.update(dict.fromkeys(by_path))
        yield _counter_family(
            "falco_nats_gateway_alerts",
            "Alerts by ingest path and what became of them "
            "(received, filtered, duplicate, rejected, refused, accepted, published, expired, "
            "undeliverable)",
            ("path", "outcome"),
            (
                ((path, kind), counts[kind][path])
                for path in paths
                for kind in KINDS
                if path in _PATHS or path in counts[kind]
            ),
        )
        yield _counter_family(
            "falco_nats_gateway_alerts_received_by_priority",
            "Alerts read from a source, by path and priority",
            ("path", "priority"),
            self._by_priority.items(),
        )
        yield _counter_family(
            "falco_nats_gateway_alerts_rejected_by_reason",
            "Unreadable alerts, by path and kind of problem",
            ("path", "reason"),
            self._by_reason.items(),
        )
        yield _counter_family(
            "falco_nats_gateway_alerts_repaired",
            "Alerts published with part of them mended, by path and what was mended "
            "(not_utf8: bytes that are not UTF-8 replaced by U+FFFD, as Falco's JSON does)",
            ("path", "reason"),
            self._repaired.items(),
        )
        yield _counter_family(
            "falco_nats_gateway_unexpected_errors",
            "Exceptions no code path expected, caught and logged (with a traceback, once per "
            "kind) where they arose; the request or message is answered or skipped",
            ("component",),
            (((component,), n) for component, n in self._unexpected.items()),
        )
        if self._by_rule is not None:
            yield _counter_family(
                "falco_nats_gateway_alerts_received_by_rule",
                "Alerts read from a source, by rule (metrics_rule_labels: one series per rule)",
                ("rule", "priority"),
                self._by_rule.items(),
            )
        yield self.latency.family()
        yield counter(
            "falco_nats_gateway_publish_failures",
            "Batches NATS did not confirm in time, to be retried",
            self._publish_failures,
        )


def _counter_family(
    name: str,
    documentation: str,
    labels: Sequence[str],
    series: Iterable[tuple[Sequence[str], float]],
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for values, value in series:
        family.add_metric(values, value)
    return family


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


def labelled_counter(
    name: str, documentation: str, label: str, values: Iterable[tuple[str, float]]
) -> Metric:
    """One counter family with a series per value of `label`."""
    return _counter_family(name, documentation, (label,), (((k,), v) for k, v in values))
