"""Telemetry's /metrics against what prometheus_client's own Counters and Histogram serve.

Telemetry counts in plain dicts and builds its metric families at scrape time. The
reference below is the implementation it replaced, written with prometheus_client's
Counter and Histogram and spelled out literally (names, HELP texts, labels, buckets):
fed the same calls, both must show scrapers the same families and samples. The one
intended difference: prometheus_client's `*_created` samples, which Telemetry drops.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway import telemetry as telemetry_module
from gateway.telemetry import KINDS, Telemetry, gauge

OUTCOMES = (
    "received",
    "filtered",
    "duplicate",
    "rejected",
    "refused",
    "accepted",
    "published",
    "expired",
    "undeliverable",
)
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300)
PRIORITIES = ("Emergency", "Alert", "Critical", "Error", "Warning", "Notice", "Informational")

# A call on Telemetry's public counting interface: (method, *arguments).
Op = tuple[str | int | float, ...]


class Reference:
    """The metrics as prometheus_client's Counters and Histogram serve them."""

    def __init__(self, rule_labels: bool = False) -> None:
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
            "Alerts by ingest path and what became of them (received, filtered, duplicate, "
            "rejected, refused, accepted, published, expired, undeliverable)",
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
            buckets=BUCKETS,
            registry=self.registry,
        )
        self._publish_failures = PromCounter(
            "falco_nats_gateway_publish_failures",
            "Batches NATS did not confirm in time, to be retried",
            registry=self.registry,
        )
        for path in ("http", "grpc"):
            for outcome in OUTCOMES:
                self._alerts.labels(path, outcome)

    def add(self, kind: str, path: str, n: int = 1) -> None:
        self._alerts.labels(path, kind).inc(n)
        source = {"http": "requests"}.get(path, path)
        status = {"received": "accepted", "rejected": "rejected", "refused": "refused"}.get(kind)
        if status is not None:
            self._inputs.labels(source, status).inc(n)
        elif kind == "published":
            self._outputs.labels("nats", "ok").inc(n)
        elif kind in {"undeliverable", "expired"}:
            self._outputs.labels("nats", "error").inc(n)

    def received(self, path: str, priority: str, rule: str) -> None:
        self.add("received", path)
        self._by_priority.labels(path, priority).inc()
        if self._by_rule is not None:
            self._by_rule.labels(rule, priority).inc()

    def rejected(self, path: str, reason: str) -> None:
        self.add("rejected", path)
        self._rejections.labels(path, reason).inc()

    def publish_failed(self) -> None:
        self._publish_failures.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


Family = tuple[str, str, str, list[tuple[str, tuple[tuple[str, str], ...], float]]]


def scraped(text: bytes) -> list[Family]:
    """Families as a scraper reads them, in order: name, type, HELP and the samples
    (sorted: their order within a family means nothing), `_created` left out."""
    families = []
    for family in text_string_to_metric_families(text.decode()):
        samples = sorted(
            (s.name, tuple(sorted(s.labels.items())), s.value)
            for s in family.samples
            if not s.name.endswith("_created")
        )
        if family.name.endswith("_created"):
            continue
        families.append((family.name, family.type, family.documentation, samples))
    return families


def run(ops: list[Op], rule_labels: bool) -> tuple[Telemetry, Reference]:
    telemetry, reference = Telemetry(rule_labels=rule_labels), Reference(rule_labels=rule_labels)
    for target in (telemetry, reference):
        for method, *args in ops:
            if method == "observe":
                target.latency.observe(float(args[0]))
            else:
                getattr(target, str(method))(*args)
    return telemetry, reference


# Families added after the implementation the reference stands for: tested on their own.
NEWER_FAMILIES = frozenset(
    {"falco_nats_gateway_alerts_repaired", "falco_nats_gateway_unexpected_errors"}
)


def assert_same_metrics(ops: list[Op], rule_labels: bool) -> Telemetry:
    telemetry, reference = run(ops, rule_labels)
    families = [f for f in scraped(telemetry.exposition()) if f[0] not in NEWER_FAMILIES]
    assert families == scraped(reference.exposition())
    return telemetry


def test_repairs_and_unexpected_errors_are_counted_by_label() -> None:
    telemetry = Telemetry()
    telemetry.repaired("grpc", "not_utf8")
    telemetry.repaired("grpc", "not_utf8")
    telemetry.repaired("http", "not_utf8")
    telemetry.unexpected_error("http")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(telemetry.exposition().decode())
        for s in family.samples
    }
    repaired = "falco_nats_gateway_alerts_repaired_total"
    assert samples[(repaired, (("path", "grpc"), ("reason", "not_utf8")))] == 2
    assert samples[(repaired, (("path", "http"), ("reason", "not_utf8")))] == 1
    unexpected = "falco_nats_gateway_unexpected_errors_total"
    assert samples[(unexpected, (("component", "http"),))] == 1


# Every kind of call, new and repeated label values, n > 1 and n = 0 (which shows a series
# at 0, as a first prometheus_client `inc(0)` does), paths beyond http/grpc, and latencies
# below, on and between bucket bounds, up to +Inf.
KNOWN_SEQUENCE: list[Op] = [
    ("received", "http", "Warning", "Terminal shell in container"),
    ("add", "accepted", "http", 1),
    ("received", "grpc", "Notice", "Read sensitive file"),
    ("add", "accepted", "grpc", 1),
    ("received", "test", "Critical", "Terminal shell in container"),
    ("add", "accepted", "test", 1),
    ("received", "http", "Warning", "Read sensitive file"),
    ("add", "filtered", "http", 3),
    ("add", "duplicate", "grpc", 1),
    ("add", "refused", "http", 2),
    ("add", "published", "http", 1),
    ("add", "published", "grpc", 1),
    ("add", "published", "test", 1),
    ("add", "expired", "grpc", 1),
    ("add", "undeliverable", "http", 1),
    ("rejected", "http", "malformed_json"),
    ("rejected", "http", "malformed_json"),
    ("rejected", "grpc", "missing_field"),
    ("add", "accepted", "other", 0),
    ("publish_failed",),
    ("observe", 0.0001),
    ("observe", 0.0005),
    ("observe", 0.003),
    ("observe", 0.7),
    ("observe", 1.0),
    ("observe", 2.0),
    ("observe", 300.0),
    ("observe", 400.0),
    ("observe", -0.001),
    ("observe", 0.0),
]


@pytest.mark.parametrize("rule_labels", [False, True])
def test_a_known_sequence_scrapes_as_prometheus_client_served_it(rule_labels: bool) -> None:
    telemetry = assert_same_metrics(KNOWN_SEQUENCE, rule_labels)
    names = [name for name, *_ in scraped(telemetry.exposition())]
    assert ("falco_nats_gateway_alerts_received_by_rule" in names) is rule_labels


@pytest.mark.parametrize("rule_labels", [False, True])
def test_before_any_alert_the_same_series_show(rule_labels: bool) -> None:
    telemetry = assert_same_metrics([], rule_labels)
    families = scraped(telemetry.exposition())
    samples = {(name, labels) for *_, family in families for name, labels, _ in family}
    for path in ("http", "grpc"):
        for outcome in OUTCOMES:
            labels = (("outcome", outcome), ("path", path))
            assert ("falco_nats_gateway_alerts_total", labels) in samples
    assert ("falco_nats_gateway_publish_failures_total", ()) in samples
    assert ("falco_nats_gateway_publish_latency_seconds_count", ()) in samples
    # falcosidekick's series appear once used, as prometheus_client's labelled ones did.
    assert not any(name.startswith("falcosecurity_") for name, _ in samples)


_paths = st.sampled_from(["http", "grpc", "test", "other"])
_ops = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(OUTCOMES), _paths, st.integers(0, 5)),
    st.tuples(
        st.just("received"), _paths, st.sampled_from(PRIORITIES), st.sampled_from(["a", "b"])
    ),
    st.tuples(st.just("rejected"), _paths, st.sampled_from(["malformed_json", "too_large"])),
    st.tuples(st.just("publish_failed")),
    st.tuples(
        st.just("observe"),
        st.one_of(
            st.sampled_from(BUCKETS),
            st.floats(-1, 1000, allow_nan=False, allow_infinity=False),
        ),
    ),
)


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(_ops, max_size=40), rule_labels=st.booleans())
def test_any_sequence_scrapes_as_prometheus_client_served_it(
    ops: list[Op], rule_labels: bool
) -> None:
    assert_same_metrics(ops, rule_labels)


def test_no_created_samples() -> None:
    # prometheus_client's *_created gauges are dropped on purpose: built at scrape
    # time, the counters have no creation time of their own.
    telemetry, _ = run(KNOWN_SEQUENCE, rule_labels=True)
    assert b"_created" not in telemetry.exposition()


def test_counts_get_and_summary_follow_the_calls() -> None:
    telemetry, _ = run(KNOWN_SEQUENCE, rule_labels=False)
    assert set(telemetry.counts) == set(KINDS) == set(OUTCOMES)
    assert telemetry.counts["received"] == {"http": 2, "grpc": 1, "test": 1}
    assert telemetry.get("received") == 4
    assert telemetry.get("received", "http") == 2
    assert telemetry.get("rejected", "http") == 2
    assert telemetry.get("filtered", "grpc") == 0
    assert telemetry.get("accepted", "other") == 0
    assert telemetry.summary() == {
        "received_grpc": 1,
        "received_http": 2,
        "received_test": 1,
        "filtered_http": 3,
        "duplicate_grpc": 1,
        "rejected_grpc": 1,
        "rejected_http": 2,
        "refused_http": 2,
        "accepted_grpc": 1,
        "accepted_http": 1,
        "accepted_test": 1,
        "published_grpc": 1,
        "published_http": 1,
        "published_test": 1,
        "expired_grpc": 1,
        "undeliverable_http": 1,
    }


def test_watched_metrics_follow_the_counters() -> None:
    telemetry = Telemetry()
    depth = [0]
    telemetry.watch(lambda: [gauge("falco_nats_gateway_spool_alerts", "Alerts waiting", depth[0])])
    depth[0] = 7
    families = scraped(telemetry.exposition())
    assert families[-1] == (
        "falco_nats_gateway_spool_alerts",
        "gauge",
        "Alerts waiting",
        [("falco_nats_gateway_spool_alerts", (), 7.0)],
    )
    # After Telemetry's own families, as when those were prometheus_client Counters.
    own = [name for name, *_ in scraped(Reference().exposition())]
    assert [name for name, *_ in families[:-1] if name not in NEWER_FAMILIES] == own


def test_histogram_buckets_are_upper_bounds() -> None:
    latency = Telemetry().latency
    for amount in (0.001, 0.0010001, 300.0, math.inf):
        latency.observe(amount)
    family = latency.family()
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert (buckets["0.0005"], buckets["0.001"], buckets["0.0025"]) == (0, 1, 2)
    assert (buckets["300.0"], buckets["+Inf"]) == (3, 4)


def test_histogram_refuses_unsorted_buckets() -> None:
    with pytest.raises(ValueError, match="sorted"):
        telemetry_module.Histogram("h", "h", (1.0, 0.5))
