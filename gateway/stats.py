"""Running counts of what happened to alerts, by ingest path."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

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


@dataclass
class Stats:
    counts: dict[str, Counter[str]] = field(default_factory=lambda: {k: Counter() for k in KINDS})

    def add(self, kind: str, path: str, n: int = 1) -> None:
        self.counts[kind][path] += n

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
