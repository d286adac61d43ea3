"""An alert in Falco's two wire formats: the inverse of gateway.normalize."""

from __future__ import annotations

import orjson

from gateway.event import FalcoEvent
from gateway.falco_pb import outputs_pb2, schema_pb2
from gateway.timefmt import format_rfc3339_ns

_NS_PER_S = 1_000_000_000
_SOURCE_ENUM = {
    "syscall": schema_pb2.SYSCALL,
    "k8s_audit": schema_pb2.K8S_AUDIT,
    "internal": schema_pb2.INTERNAL,
}


def to_falco_json(event: FalcoEvent, include_output: bool = True) -> bytes:
    """The body Falco's http_output posts with `json_output: true`.

    Falco builds it with nlohmann::json, which writes object keys sorted.
    """
    doc: dict[str, object] = {
        "hostname": event.hostname,
        "output_fields": dict(event.output_fields),
        "priority": event.priority.canonical,
        "rule": event.rule,
        "source": event.source,
        "tags": list(event.tags),
        "time": format_rfc3339_ns(event.time_ns),
    }
    if include_output:
        doc["output"] = event.output
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def to_grpc_response(event: FalcoEvent) -> outputs_pb2.response:
    """The `falco.outputs.response` Falco 0.43 writes on its sub stream.

    Output field values are strings; Falco writes any non-string JSON value as
    its JSON text.
    """
    response = outputs_pb2.response(
        priority=int(event.priority),  # type: ignore[arg-type]
        source_deprecated=_SOURCE_ENUM.get(event.source, schema_pb2.PLUGIN),
        rule=event.rule,
        output=event.output,
        hostname=event.hostname,
        tags=list(event.tags),
        source=event.source,
    )
    seconds, nanos = divmod(event.time_ns, _NS_PER_S)
    response.time.seconds = seconds
    response.time.nanos = nanos
    for key, value in event.output_fields.items():
        response.output_fields[key] = (
            value if isinstance(value, str) else orjson.dumps(value).decode()
        )
    return response
