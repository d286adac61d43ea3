"""An alert in Falco's two wire forms, as Falco 0.43 writes them: the inverse of
gateway.normalize.

`event` is the alert as Falco's JSON describes it (gateway.simulator.alerts.render):
typed output fields, the prefix field `evt.time` among them.
"""

from __future__ import annotations

import orjson

from gateway.event import FalcoEvent, FieldValue
from gateway.falco_pb import outputs_pb2, schema_pb2
from gateway.timefmt import format_rfc3339_ns

_NS_PER_S = 1_000_000_000
_SOURCE_ENUM = {
    "syscall": schema_pb2.SYSCALL,
    "k8s_audit": schema_pb2.K8S_AUDIT,
    "internal": schema_pb2.INTERNAL,
}
# Added by formats.cpp's prefix `*%evt.time: ` to the JSON only.
_PREFIX_FIELDS = ("evt.time",)


def to_falco_json(event: FalcoEvent, include_output: bool = True) -> bytes:
    """The body Falco's http_output posts with `json_output: true`.

    Falco builds it with nlohmann::json, which writes object keys sorted; the
    time always has nine fraction digits. Internal alerts (handle_msg) carry no
    tags.
    """
    doc: dict[str, object] = {
        "hostname": event.hostname,
        "output_fields": dict(event.output_fields),
        "priority": event.priority.canonical,
        "rule": event.rule,
        "source": event.source,
        "time": format_rfc3339_ns(event.time_ns),
    }
    if event.source != "internal":
        doc["tags"] = list(event.tags)
    if include_output:
        doc["output"] = event.output
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def to_grpc_response(
    event: FalcoEvent, json_output: bool = True, include_output: bool = True
) -> outputs_pb2.response:
    """The `falco.outputs.response` Falco 0.43 writes on its sub stream.

    `output` is the message Falco hands every output: with `json_output: true`
    the whole JSON document http_output posts (outputs_grpc.cpp copies it), or
    its text line. `json_output` defaults to true, the setup the gateway documents
    (http_output needs it); False gives Falco's own default.

    `output_fields` holds the rule's format fields only (not the prefix's
    `evt.time`), each as libsinsp's text: `<NA>` for no
    value, `true`/`false`, numbers in decimal, a list as `(a,b)`. Internal alerts'
    fields are JSON values, written as their JSON text when not strings.
    """
    if json_output:
        output = to_falco_json(event, include_output).decode()
    elif event.source == "internal":
        output = _internal_text(event)
    else:
        output = event.output
    response = outputs_pb2.response(
        priority=int(event.priority),  # type: ignore[arg-type]
        source_deprecated=_SOURCE_ENUM.get(event.source, schema_pb2.PLUGIN),
        rule=event.rule,
        output=output,
        hostname=event.hostname,
        tags=list(event.tags),
        source=event.source,
    )
    seconds, nanos = divmod(event.time_ns, _NS_PER_S)
    response.time.seconds = seconds
    response.time.nanos = nanos
    internal = event.source == "internal"
    for key, value in event.output_fields.items():
        if internal:
            response.output_fields[key] = (
                value if isinstance(value, str) else orjson.dumps(value).decode()
            )
        elif key not in _PREFIX_FIELDS:
            response.output_fields[key] = sinsp_text(value)
    return response


def _internal_text(event: FalcoEvent) -> str:
    """handle_msg's text line: `<time>: <Priority> <msg> (k="v" ...)`."""
    nanos = event.time_ns % _NS_PER_S
    clock = format_rfc3339_ns(event.time_ns)[11:19]
    fields = " ".join(
        f"{key}={orjson.dumps(event.output_fields[key]).decode()}"
        for key in sorted(event.output_fields)
    )
    return f"{clock}.{nanos:09d}: {event.priority.canonical} {event.output} ({fields})"


def sinsp_text(value: FieldValue) -> str:
    """A field value as libsinsp's formatter writes it in text (sinsp_filtercheck.cpp)."""
    if value is None:
        return "<NA>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "(" + ",".join(sinsp_text(item) for item in value) + ")"  # type: ignore[arg-type]
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()
