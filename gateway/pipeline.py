"""Between the sources and NATS: filter, dedup, name, render, spool.

Sources never know the sink: they hand each event to `Pipeline.accept` with
the path it came by, and answer Falco from its result. Accepted alerts are in
the spool; the publisher takes them to NATS from there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from gateway.dedup import DedupWindow
from gateway.errors import RejectionKind, SpoolFull
from gateway.event import FalcoEvent, Priority
from gateway.logs import OncePer, StateLog, log
from gateway.payload import NO_STAMP, Stamp, falcosidekick_json
from gateway.spool import Spool
from gateway.subject import SubjectTemplate
from gateway.telemetry import Telemetry

LOG = logging.getLogger("gateway.pipeline")

# The way an alert came in: a label on metrics and the Falco-Gateway-Path header.
IngestPath = Literal["grpc", "http", "test"]

# Header naming the ingest path of a message: for operators and the demo; the
# subject, payload and Nats-Msg-Id do not depend on the path.
PATH_HEADER = "Falco-Gateway-Path"
MSG_ID_HEADER = "Nats-Msg-Id"
# falcosidekick's smoke-test rule: it passes every minimum priority and is
# published with source `internal`, whoever sent it (handlers.go).
TEST_RULE = "Test rule"
TEST_SOURCE = "internal"


@dataclass(frozen=True, slots=True)
class Accepted:
    subject: str
    alert_id: str


@dataclass(frozen=True, slots=True)
class Filtered:
    reason: str


@dataclass(frozen=True, slots=True)
class Duplicate:
    alert_id: str


Outcome = Accepted | Filtered | Duplicate


class Pipeline:
    def __init__(
        self,
        subjects: SubjectTemplate,
        minimum_priority: Priority,
        spool: Spool,
        *,
        dedup: DedupWindow | None = None,
        on_spooled: Callable[[], None] = lambda: None,
        telemetry: Telemetry | None = None,
        stamp: Stamp = NO_STAMP,
    ) -> None:
        self.subjects = subjects
        self.minimum_priority = minimum_priority
        self.spool = spool
        # `is None`, not `or`: an empty DedupWindow is falsy (it has a length).
        self.dedup = dedup if dedup is not None else DedupWindow(window=0)
        self.on_spooled = on_spooled
        self.telemetry = telemetry if telemetry is not None else Telemetry()
        self.intake = StateLog("intake", LOG)
        self.stamp = stamp
        self._told_no_output = False
        self._repairs = OncePer()  # paths whose repaired alerts were logged
        for alert_id in spool.alert_ids():
            self.dedup.remember(alert_id)

    def accept(self, event: FalcoEvent, path: IngestPath) -> Outcome:
        """Spool `event` for NATS, unless filtered or a duplicate.

        Raises SpoolFull when the spool cannot take it; the source answers 503
        (HTTP) or holds its stream (gRPC), and nothing is dropped.
        """
        stats = self.telemetry
        stats.received(path, event.priority.canonical, event.rule)
        if event.rule == TEST_RULE:
            if event.source != TEST_SOURCE:
                event = replace(event, source=TEST_SOURCE)
        elif not event.priority.at_least(self.minimum_priority):
            stats.add("filtered", path)
            return Filtered(
                f"priority {event.priority.canonical} is below the minimum "
                f"{self.minimum_priority.canonical}"
            )
        if not event.output and not self._told_no_output:
            self._no_output(path)
        alert_id = event.alert_id
        if self.dedup.is_duplicate(alert_id):
            stats.add("duplicate", path)
            return Duplicate(alert_id)
        subject = self.subjects.render(event)
        headers = {MSG_ID_HEADER: alert_id, PATH_HEADER: path}
        try:
            self.spool.append(
                path, subject, headers, falcosidekick_json(event, alert_id, self.stamp)
            )
        except SpoolFull as exc:
            # Not accepted, so not seen: the sender's retry must not count as a duplicate.
            self.dedup.forget(alert_id)
            stats.add("refused", path)
            self.intake.change("refusing", logging.WARNING, reason=str(exc))
            raise
        self.intake.change("accepting")
        stats.add("accepted", path)
        self.on_spooled()
        return Accepted(subject, alert_id)

    def _no_output(self, path: IngestPath) -> None:
        self._told_no_output = True
        log(
            logging.WARNING,
            "alert without output",
            LOG,
            path=path,
            consequence=(
                "Falco's JSON omits `output` (json_include_output_property: false): such "
                "alerts are identified by their output_fields, so the gRPC copy of the same "
                "alert (which has output) is not recognised as a duplicate and both are "
                "published; set json_include_output_property: true to deduplicate them"
            ),
        )

    def rejected(self, path: IngestPath, kind: RejectionKind) -> None:
        """Count an alert a source could not read (it answered or logged the reason)."""
        self.telemetry.rejected(path, kind)

    def repaired(self, path: IngestPath, event: FalcoEvent) -> None:
        """Count an alert whose bytes that were not UTF-8 a source replaced by U+FFFD
        (as Falco's own JSON output does); say so once per path."""
        self.telemetry.repaired(path, "not_utf8")
        if self._repairs.first(path):
            log(
                logging.WARNING,
                "alert text is not UTF-8: bad bytes replaced by U+FFFD",
                LOG,
                path=path,
                rule=event.rule[:256],
            )
