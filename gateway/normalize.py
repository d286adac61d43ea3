"""Pure functions from Falco's two wire formats to one `FalcoEvent`.

http_output sends JSON with typed `output_fields` (numbers stay numbers, null
is null), and adds the prefix field `evt.time` beside the rule's own fields.
The gRPC API sends what the same Falco would write for the same alert (Falco
0.43 outputs_grpc.cpp, formats.cpp):

- with `json_output: true`, its `output` is the very JSON document http_output
  posts: its `output` and typed `output_fields` are taken from there, so both
  paths give the same alert exactly;
- otherwise `output` is Falco's text line and `output_fields` holds the rule's
  format fields only, each as text, `<NA>` for a field with no value. Each value
  is given the type its field is defined with (gateway.field_types, generated
  from Falco's field definitions), `<NA>` becomes null, and `evt.time` is
  rebuilt from the response's time (every source but `internal`, whose
  messages carry no prefix fields).

A field the table does not know (a plugin's that is not in it, a transformer
such as `toupper(proc.name)`) keeps the old guess: the JSON text of a number,
boolean, null, array or object is presented as that value, anything else as a
string. There a string whose text looks like a number (a pod named `12345`)
is published as the number from gRPC and as the string from HTTP.
"""

from __future__ import annotations

import bisect
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.echo import echo
from gateway.errors import AlertError
from gateway.event import FalcoEvent, FieldValue, Priority
from gateway.falco_pb import outputs_pb2, schema_pb2
from gateway.field_types import FIELD_KINDS
from gateway.timefmt import grpc_time_ns, parse_rfc3339_ns

_NS_PER_S = 1_000_000_000

# First characters of the JSON text of a non-string value, and the last
# character it may end with; anything else on the gRPC path is a plain string.
_JSON_VALUE_START = frozenset("-0123456789tfn[{")
_JSON_VALUE_END = frozenset("0123456789el]}")
_DEPRECATED_SOURCES: dict[int, str] = {
    schema_pb2.SYSCALL: "syscall",
    schema_pb2.K8S_AUDIT: "k8s_audit",
    schema_pb2.INTERNAL: "internal",
    schema_pb2.PLUGIN: "plugin",
}
# Names that end up in the NATS subject are capped, so that no alert can build a
# subject past the server's max_control_line (4 KiB by default): a publish over it
# makes the server close the connection, and the alert would block the spool forever.
_MAX_NAME_CHARS = {"rule": 1024, "source": 256, "hostname": 256}
TRUNCATED = "[truncated]"
# The deepest an output_fields value may nest: the payload puts it two levels down
# (the alert object, then output_fields), and orjson writes at most 254 levels.
# Deeper was an empty 500 (HTTP) or a dead stream (gRPC); Falco's own values are
# scalars or flat lists.
MAX_VALUE_DEPTH = 252


@dataclass(frozen=True)
class Limits:
    """What one alert may carry (max_output_fields, max_field_bytes).

    Too many fields: the alert is rejected (no Falco rule has hundreds; a flood of
    them is a broken or hostile sender). A value too long (a long command line is
    real) is cut to `max_field_bytes` and marked with `[truncated]`, so the alert
    still goes out. (falcosidekick cuts otherwise: strings over 512 bytes to 507 +
    `[...]` when its payload exceeds 4,096 bytes.)
    """

    max_fields: int = 512
    max_field_bytes: int = 16384


DEFAULT_LIMITS = Limits()

_TEXT_PLAIN_HINT = (
    "Falco sent a plain text line; set `json_output: true` in falco.yaml "
    "(Helm: falco.json_output=true) so that http_output posts JSON"
)


def from_http_body(
    body: bytes, content_type: str = "application/json", limits: Limits = DEFAULT_LIMITS
) -> FalcoEvent:
    """The event in one http_output POST body; AlertError (4xx) names what is wrong."""
    # Falco's JSON starts with '{': only other bodies need a closer look (and a copy).
    if body[:1] != b"{":
        if not body.strip():
            raise AlertError(
                "empty body: expected one Falco alert as a JSON object", kind="empty_body"
            )
        if content_type.split(";", 1)[
            0
        ].strip().lower() == "text/plain" and not body.lstrip().startswith(b"{"):
            raise AlertError(_TEXT_PLAIN_HINT, status=415, kind="text_plain")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            bytes(body).decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise AlertError(
                f"body is not valid UTF-8 (byte {uexc.start})", kind="not_utf8"
            ) from None
        raise AlertError(f"malformed JSON: {exc}", kind="malformed_json") from None
    if not isinstance(doc, dict):
        raise AlertError(
            f"expected a JSON object (one Falco alert), got {_json_kind(doc)}", kind="not_an_object"
        )
    return from_json_object(doc, limits)


def replace_bad_utf8(body: bytes) -> bytes:
    """`body` with every byte sequence that is not UTF-8 replaced by U+FFFD.

    What Falco's own JSON output does (nlohmann's `error_handler_t::replace` in
    formats.cpp) with a file name or command line that is not UTF-8; the gRPC path
    repairs the same way, so an alert reads the same whichever way it came.
    """
    return bytes(body).decode("utf-8", "replace").encode()


def from_json_object(doc: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> FalcoEvent:
    """The event in a decoded Falco JSON alert. Unknown keys are ignored."""
    rule = _name(_required_text(doc, "rule"), "rule")
    priority_text = _required_text(doc, "priority")
    try:
        priority = Priority.parse(priority_text)
    except ValueError as exc:
        raise AlertError(str(exc), kind="unknown_priority") from None
    time_text = _required_text(doc, "time")
    try:
        time_ns = parse_rfc3339_ns(time_text)
    except ValueError as exc:
        raise AlertError(f"field 'time': {exc}", kind="bad_time") from None
    fields = doc.get("output_fields")
    if fields is None:
        fields = {}
    elif not isinstance(fields, dict):
        raise AlertError(
            f"field 'output_fields' must be a JSON object, got {_json_kind(fields)}",
            kind="wrong_type",
        )
    return FalcoEvent(
        time_ns=time_ns,
        priority=priority,
        rule=rule,
        output=_optional_text(doc, "output"),
        source=_name(_optional_text(doc, "source"), "source") or "syscall",
        hostname=_name(_optional_text(doc, "hostname"), "hostname"),
        tags=_tags(doc.get("tags"), limits),
        output_fields=_limited(fields, limits, None),
    )


def from_grpc(response: outputs_pb2.response, limits: Limits = DEFAULT_LIMITS) -> FalcoEvent:
    """The event in one `falco.outputs.response`; AlertError if Falco's contract is broken."""
    if not response.HasField("time"):
        raise AlertError("gRPC response without a time", kind="missing_field")
    try:
        time_ns = grpc_time_ns(response.time.seconds, response.time.nanos)
    except ValueError as exc:
        raise AlertError(f"gRPC response time: {exc}", kind="bad_time") from None
    if not response.rule:
        raise AlertError("gRPC response with an empty rule", kind="empty_field")
    try:
        priority = Priority(response.priority)
    except ValueError:
        raise AlertError(
            f"gRPC response with unknown priority number {response.priority}",
            kind="unknown_priority",
        ) from None
    if len(response.tags) > limits.max_fields:
        raise AlertError(_too_many("tags", len(response.tags), limits), 413, "too_many_fields")
    time_ns = response.time.seconds * _NS_PER_S + response.time.nanos
    source = _name(response.source, "source") or _deprecated_source_name(response.source_deprecated)
    output = response.output
    output_fields: dict[str, FieldValue] | None = None
    document = _falco_json(output, response.rule)
    if document is not None:
        # json_output: true. The document is http_output's body for this alert.
        output = _optional_text(document, "output")
        typed = document.get("output_fields")
        if isinstance(typed, dict):
            output_fields = _limited(typed, limits, None)
    if output_fields is None:
        output_fields = _grpc_fields(
            response.output_fields, limits, time_ns, with_time=source != INTERNAL_SOURCE
        )
    return FalcoEvent(
        time_ns=time_ns,
        priority=priority,
        rule=_name(response.rule, "rule"),
        output=output,
        source=source,
        hostname=_name(response.hostname, "hostname"),
        tags=tuple(sorted(response.tags)),
        output_fields=output_fields,
    )


INTERNAL_SOURCE = "internal"
# The prefix field Falco's JSON adds to every rule's fields (formats.cpp: "*%evt.time: ").
_PREFIX_TIME = "evt.time"
_NA = "<NA>"


def _falco_json(output: str, rule: str) -> dict[str, Any] | None:
    """The JSON document in a gRPC `output`, when Falco runs with json_output: true."""
    if output[:1] != "{" or output[-1:] != "}":
        return None
    try:
        document = orjson.loads(output)
    except orjson.JSONDecodeError:
        return None
    if isinstance(document, dict) and document.get("rule") == rule:
        return document
    return None


def _grpc_fields(
    fields: Mapping[str, str], limits: Limits, time_ns: int, with_time: bool
) -> dict[str, FieldValue]:
    """The gRPC text values with their fields' types, sorted by key, within `limits`."""
    if len(fields) > limits.max_fields:
        raise AlertError(_too_many("output_fields", len(fields), limits), 413, "too_many_fields")
    limit = limits.max_field_bytes
    short = limit // 4
    names = sorted(fields)
    if with_time and _PREFIX_TIME not in fields:
        bisect.insort(names, _PREFIX_TIME)
    typed: dict[str, FieldValue] = {}
    for key in names:
        if len(key) > short and len(key.encode("utf-8", "surrogatepass")) > limit:
            raise AlertError(
                f"an output_fields name is longer than {limit} bytes (max_field_bytes)",
                413,
                "field_too_long",
            )
        convert = _CONVERTERS.get(key)
        if convert is None and key.endswith("]"):
            # An argument: proc.aname[2], container.label[app] have their field's type.
            convert = _CONVERTERS.get(key.partition("[")[0])
        if convert is _event_time:
            value: FieldValue = time_ns
        else:
            text = fields[key]
            value = None if text == _NA else (convert or grpc_field_value)(text)
        if value.__class__ is not str or len(value) > short:
            value = _truncated(value, limit)
        typed[key] = value
    return typed


def _event_time(text: str) -> FieldValue:
    raise AssertionError("the event time is taken from the response, not from text")


def _as_int(text: str) -> FieldValue:
    try:
        return int(text)
    except ValueError:
        return grpc_field_value(text)


def _as_bool(text: str) -> FieldValue:
    if text == "true":
        return True
    if text == "false":
        return False
    return grpc_field_value(text)


def _as_text(text: str) -> FieldValue:
    return text


def _list_of(item: Callable[[str], FieldValue]) -> Callable[[str], FieldValue]:
    def convert(text: str) -> FieldValue:
        # libsinsp writes a list field as `(a,b,c)`; as JSON an empty list is null.
        if not (text.startswith("(") and text.endswith(")")):
            return grpc_field_value(text)
        inner = text[1:-1]
        return [item(part) for part in inner.split(",")] if inner else None

    return convert


def _limited(
    fields: Mapping[str, Any], limits: Limits, convert: Callable[[str], FieldValue] | None
) -> dict[str, FieldValue]:
    """`fields` sorted by key, within `limits` (see Limits)."""
    if len(fields) > limits.max_fields:
        raise AlertError(_too_many("output_fields", len(fields), limits), 413, "too_many_fields")
    limit = limits.max_field_bytes
    # A text of n characters is at most 4n bytes in UTF-8: the usual short names and
    # values need no encoding to know they fit.
    short = limit // 4
    limited: dict[str, FieldValue] = {}
    # Keys are unique, so sorting the pairs never compares values. A protobuf map
    # iterates its items through Python-level views: key lookups are cheaper there.
    pairs = (
        sorted(fields.items())
        if isinstance(fields, dict)
        else [(name, fields[name]) for name in sorted(fields)]
    )
    for key, raw in pairs:
        if len(key) > short and len(key.encode("utf-8", "surrogatepass")) > limit:
            raise AlertError(
                f"an output_fields name is longer than {limit} bytes (max_field_bytes)",
                413,
                "field_too_long",
            )
        value = raw if convert is None else convert(raw)
        if value.__class__ is not str or len(value) > short:
            try:
                value = _truncated(value, limit)
            except _TooDeep:
                if convert is None:
                    raise AlertError(
                        f"output_fields value of {echo(key)} is nested deeper than "
                        f"{MAX_VALUE_DEPTH} levels",
                        kind="too_deep",
                    ) from None
                # A gRPC text that reads as JSON too deep to carry: the text it is.
                value = _truncated(raw, limit)
        limited[key] = value
    return limited


def _truncated(value: Any, limit: int) -> FieldValue:
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        if len(data) <= limit:
            return value
    elif isinstance(value, list | dict):
        try:
            # Two levels added, as in the payload: one too deep fails here, not there.
            data = orjson.dumps([[value]])[2:-2]
        except orjson.JSONEncodeError:
            raise _TooDeep() from None
        if len(data) <= limit:
            return value
    else:
        return value  # type: ignore[no-any-return]
    # Cut on a character boundary: the bytes of a split character are dropped.
    return data[:limit].decode("utf-8", "ignore") + TRUNCATED


class _TooDeep(Exception):
    """A list or object value nested deeper than MAX_VALUE_DEPTH."""


def _too_many(what: str, count: int, limits: Limits) -> str:
    return f"{what} has {count} entries, more than {limits.max_fields} (max_output_fields)"


def _name(value: str, key: str) -> str:
    limit = _MAX_NAME_CHARS[key]
    if len(value) > limit:
        raise AlertError(
            f"field {key!r} is {len(value)} characters long, more than {limit}", 413, "too_long"
        )
    return value


def grpc_field_value(text: str) -> FieldValue:
    """The guess for a field gateway.field_types does not know (see module docstring)."""
    if text == _NA:
        return None
    if text and text[0] in _JSON_VALUE_START and text[-1] in _JSON_VALUE_END:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        if not isinstance(value, str):
            return value  # type: ignore[no-any-return]
    return text


def self_test_event(now_ns: int | None = None) -> FalcoEvent:
    """The alert `POST /test` publishes, shaped like falcosidekick's test alert."""
    hostname = socket.gethostname()
    return FalcoEvent(
        time_ns=time.time_ns() if now_ns is None else now_ns,
        priority=Priority.DEBUG,
        rule="Test rule",
        output="This is a test from falco-nats-gateway",
        source="internal",
        hostname=hostname,
        tags=("test", "example"),
        output_fields={"proc.name": "falco-nats-gateway", "user.name": "falco-nats-gateway"},
    )


def _required_text(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if value is None:
        raise AlertError(f"missing field {key!r}", kind="missing_field")
    if not isinstance(value, str):
        raise AlertError(
            f"field {key!r} must be a string, got {_json_kind(value)}", kind="wrong_type"
        )
    if not value.strip():
        raise AlertError(f"field {key!r} is empty", kind="empty_field")
    return value


def _optional_text(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise AlertError(
            f"field {key!r} must be a string, got {_json_kind(value)}", kind="wrong_type"
        )
    return value


def _tags(value: object, limits: Limits) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise AlertError("field 'tags' must be a list of strings", kind="wrong_type")
    if len(value) > limits.max_fields:
        raise AlertError(_too_many("tags", len(value), limits), 413, "too_many_fields")
    # Sorted as falcosidekick sorts them (Falco sends a sorted set; others may not).
    return tuple(sorted(value))


def _deprecated_source_name(number: int) -> str:
    # Falco before field 9 filled only the enum; its lower-case name is Falco's
    # own source name for syscall, k8s_audit and internal.
    return _DEPRECATED_SOURCES.get(number, "syscall")


def _json_kind(value: object) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), "null")


_KIND_CONVERTERS: dict[str, Callable[[str], FieldValue]] = {
    "str": _as_text,
    "int": _as_int,
    "float": grpc_field_value,
    "bool": _as_bool,
    "ts": _event_time,
}
_KIND_CONVERTERS.update({f"list:{k}": _list_of(v) for k, v in list(_KIND_CONVERTERS.items())})
# One look-up per field on the hot path: field name -> converter, built at import.
_CONVERTERS: dict[str, Callable[[str], FieldValue]] = {
    name: _KIND_CONVERTERS[kind] for name, kind in FIELD_KINDS.items()
}
