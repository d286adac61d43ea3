"""The message body: falcosidekick's JSON payload of an alert.

Key order and omissions follow falcosidekick's `types.FalcoPayload`:
`uuid, output, priority, rule, time, output_fields, source, tags, hostname`,
with `tags` and `hostname` left out when empty, `output_fields` sorted by key
as Go's encoder writes maps, `tags` sorted as its handler sorts them, and the
time in Go's RFC3339Nano. Strings are escaped as Go's json.Marshal escapes
them (`<`, `>`, `&`, U+2028, U+2029 as `\u003c`...), so Falco's `<NA>` and
`a->b` give falcosidekick's bytes. `uuid` is the alert's deterministic id (the
same as the `Nats-Msg-Id` header), so the same alert gives the same bytes
whichever path it came by.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.event import FalcoEvent
from gateway.timefmt import format_rfc3339_nano


@dataclass(frozen=True)
class Stamp:
    """falcosidekick's CUSTOMFIELDS and CUSTOMTAGS: added to every alert.

    A custom field replaces an output field of the same name, and custom tags
    join the alert's tags before they are sorted, as falcosidekick's handler does.
    """

    fields: Mapping[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()


NO_STAMP = Stamp()

# Go's json.Marshal HTML-escapes these inside strings; outside strings they never
# occur in JSON, so replacing them in the encoded bytes is exact.
_GO_ESCAPES = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)


def falcosidekick_json(
    event: FalcoEvent, alert_id: str | None = None, stamp: Stamp = NO_STAMP
) -> bytes:
    fields = event.output_fields
    if stamp.fields:
        fields = dict(sorted({**fields, **stamp.fields}.items()))
    tags = event.tags
    if stamp.tags:
        tags = tuple(sorted(tags + stamp.tags))
    doc: dict[str, Any] = {
        "uuid": event.alert_id if alert_id is None else alert_id,
        "output": event.output,
        "priority": event.priority.canonical,
        "rule": event.rule,
        "time": format_rfc3339_nano(event.time_ns),
        "output_fields": fields,
        "source": event.source,
    }
    if tags:
        doc["tags"] = tags
    if event.hostname:
        doc["hostname"] = event.hostname
    data = orjson.dumps(doc)
    # One pass to learn that most payloads need nothing (\xe2 leads U+2028 and U+2029).
    if len(data.translate(None, b"<>&\xe2")) != len(data):
        for raw, escaped in _GO_ESCAPES:
            if raw in data:
                data = data.replace(raw, escaped)
    return data
