"""The message body: falcosidekick's JSON payload of an alert.

Key order and omissions follow falcosidekick's `types.FalcoPayload`:
`uuid, output, priority, rule, time, output_fields, source, tags, hostname`,
with `tags` and `hostname` left out when empty, and `output_fields` sorted by
key as Go's encoder writes maps. `uuid` is the alert's deterministic id (the
same as the `Nats-Msg-Id` header), so the same alert gives the same bytes
whichever path it came by.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.event import FalcoEvent
from gateway.timefmt import format_rfc3339_ns


def falcosidekick_json(event: FalcoEvent, alert_id: str | None = None) -> bytes:
    doc: dict[str, Any] = {
        "uuid": event.alert_id if alert_id is None else alert_id,
        "output": event.output,
        "priority": event.priority.canonical,
        "rule": event.rule,
        "time": format_rfc3339_ns(event.time_ns),
        "output_fields": event.output_fields,
        "source": event.source,
    }
    if event.tags:
        doc["tags"] = event.tags
    if event.hostname:
        doc["hostname"] = event.hostname
    return orjson.dumps(doc)
