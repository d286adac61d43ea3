"""Between the sources and the sink: filter, name, render, publish, count.

Sources never know the sink; they hand each event to `Pipeline.submit` with
the path it came by.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, Protocol

from gateway.event import FalcoEvent, Priority
from gateway.payload import falcosidekick_json
from gateway.subject import SubjectTemplate

LOG = logging.getLogger("gateway.pipeline")

Path = Literal["grpc", "http", "test"]

# Header naming the ingest path of a message: for operators and the demo; the
# subject, payload and Nats-Msg-Id do not depend on the path.
PATH_HEADER = "Falco-Gateway-Path"
MSG_ID_HEADER = "Nats-Msg-Id"


class Sink(Protocol):
    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None: ...


@dataclass(frozen=True, slots=True)
class Published:
    subject: str
    alert_id: str


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message ready for the sink."""

    subject: str
    payload: bytes
    headers: dict[str, str]
    path: Path


@dataclass(frozen=True, slots=True)
class Filtered:
    reason: str


@dataclass
class Stats:
    """Running counts by path; read by the shutdown summary and by tests."""

    received: Counter[str] = field(default_factory=Counter)
    published: Counter[str] = field(default_factory=Counter)
    filtered: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, int]:
        return {
            f"{kind}_{path}": count
            for kind in ("received", "published", "filtered", "rejected", "failed")
            for path, count in sorted(getattr(self, kind).items())
        }


class Pipeline:
    def __init__(self, sink: Sink, subjects: SubjectTemplate, minimum_priority: Priority) -> None:
        self.sink = sink
        self.subjects = subjects
        self.minimum_priority = minimum_priority
        self.stats = Stats()

    async def submit(self, event: FalcoEvent, path: Path) -> Published | Filtered:
        """Publish `event` unless the priority filter drops it.

        Raises SinkUnavailable when NATS cannot take it; the caller decides what
        the source answers.
        """
        outgoing = self.prepare(event, path)
        if outgoing is None:
            return Filtered(
                f"priority {event.priority.canonical} is below the minimum "
                f"{self.minimum_priority.canonical}"
            )
        return await self.publish(outgoing)

    def prepare(self, event: FalcoEvent, path: Path) -> Outgoing | None:
        """Count the event and render its message; None when the filter drops it."""
        self.stats.received[path] += 1
        if not event.priority.at_least(self.minimum_priority):
            self.stats.filtered[path] += 1
            return None
        alert_id = event.alert_id
        return Outgoing(
            subject=self.subjects.render(event),
            payload=falcosidekick_json(event, alert_id),
            headers={MSG_ID_HEADER: alert_id, PATH_HEADER: path},
            path=path,
        )

    async def publish(self, outgoing: Outgoing) -> Published:
        """Hand one rendered message to the sink; safe to call again after SinkUnavailable."""
        try:
            await self.sink.publish(outgoing.subject, outgoing.payload, outgoing.headers)
        except Exception:
            self.stats.failed[outgoing.path] += 1
            raise
        self.stats.published[outgoing.path] += 1
        return Published(outgoing.subject, outgoing.headers[MSG_ID_HEADER])

    def rejected(self, path: Path) -> None:
        """Count an alert a source could not read (it answered or logged the reason)."""
        self.stats.rejected[path] += 1
