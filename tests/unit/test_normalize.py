"""The normalizer: Falco's HTTP JSON and gRPC forms to one FalcoEvent, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gateway.errors import AlertError
from gateway.event import FalcoEvent, Priority
from gateway.falco_pb import outputs_pb2, schema_pb2
from gateway.normalize import from_grpc, from_http_body, grpc_field_value
from gateway.simulator.alerts import CATALOG, render
from gateway.simulator.wire import to_falco_json, to_grpc_response

# The example alert of Falco's documentation (its http_output page), as Falco posts it.
DOC_ALERT = (Path(__file__).parent.parent / "data" / "falco-docs-alert.json").read_bytes().strip()


def minimal(**overrides: object) -> bytes:
    doc: dict[str, object] = {
        "rule": "Terminal shell in container",
        "priority": "Notice",
        "time": "2021-02-08T20:19:15.325119960Z",
    }
    doc.update(overrides)
    return orjson.dumps({k: v for k, v in doc.items() if v is not ...})


def test_documented_alert_is_read_whole() -> None:
    event = from_http_body(DOC_ALERT)
    assert event.rule == "Terminal shell in container"
    assert event.priority is Priority.CRITICAL
    assert event.time_ns == 1685022245478445995
    assert event.hostname == "falco-xczjd"
    assert event.source == "syscall"
    assert event.tags == ("container", "mitre_execution", "shell")
    assert event.output_fields["evt.time"] == 1685022245478445995
    assert event.output_fields["proc.tty"] == 34816
    assert list(event.output_fields) == sorted(event.output_fields)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Emergency", Priority.EMERGENCY),
        ("ALERT", Priority.ALERT),
        ("critical", Priority.CRITICAL),
        ("Error", Priority.ERROR),
        ("warning", Priority.WARNING),
        ("NoTiCe", Priority.NOTICE),
        ("Informational", Priority.INFORMATIONAL),
        ("info", Priority.INFORMATIONAL),
        ("INFO", Priority.INFORMATIONAL),
        ("debug", Priority.DEBUG),
    ],
)
def test_priorities_any_case_and_info(text: str, expected: Priority) -> None:
    assert from_http_body(minimal(priority=text)).priority is expected


def test_canonical_priority_names() -> None:
    assert [p.canonical for p in Priority] == [
        "Emergency",
        "Alert",
        "Critical",
        "Error",
        "Warning",
        "Notice",
        "Informational",
        "Debug",
    ]


def test_old_falco_json_without_source_hostname_output() -> None:
    event = from_http_body(minimal())
    assert event.source == "syscall"
    assert event.hostname == ""
    assert event.output == ""
    assert event.tags == ()
    assert dict(event.output_fields) == {}


def test_unknown_fields_are_ignored() -> None:
    event = from_http_body(minimal(message="extra", something={"nested": [1, 2]}))
    assert event.rule == "Terminal shell in container"


def test_eight_fraction_digits_are_nanoseconds() -> None:
    # The seed's alert: Go trims trailing zeros of the fraction.
    event = from_http_body(minimal(time="2021-02-08T20:19:15.32511996Z"))
    assert event.time_ns % 1_000_000_000 == 325119960


def test_time_offset_is_converted_to_utc() -> None:
    a = from_http_body(minimal(time="2021-02-08T21:19:15.5+01:00"))
    b = from_http_body(minimal(time="2021-02-08T20:19:15.500000000Z"))
    assert a.time_ns == b.time_ns


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        (b"", "application/json", 400, "empty body"),
        (b"   \n", "application/json", 400, "empty body"),
        (b'{"rule": "x", "priority": "Notice"', "application/json", 400, "malformed JSON"),
        (b"{not json}", "application/json", 400, "malformed JSON"),
        (b"[1, 2]", "application/json", 400, "got an array"),
        (b'"text"', "application/json", 400, "got a string"),
        (b"42", "application/json", 400, "got a number"),
        (b"null", "application/json", 400, "got null"),
        (b'{"rule": "\xff\xfe", "priority": "Notice"}', "application/json", 400, "not valid UTF-8"),
        (minimal(rule=...), "application/json", 400, "missing field 'rule'"),
        (minimal(rule=""), "application/json", 400, "field 'rule' is empty"),
        (minimal(rule="  "), "application/json", 400, "field 'rule' is empty"),
        (minimal(rule=5), "application/json", 400, "field 'rule' must be a string"),
        (minimal(priority=...), "application/json", 400, "missing field 'priority'"),
        (minimal(priority=""), "application/json", 400, "field 'priority' is empty"),
        (minimal(priority="Severe"), "application/json", 400, "unknown priority 'Severe'"),
        (minimal(time=...), "application/json", 400, "missing field 'time'"),
        (minimal(time="yesterday"), "application/json", 400, "field 'time'"),
        (minimal(time="2021-02-30T00:00:00Z"), "application/json", 400, "not a valid time"),
        (minimal(time="1969-12-31T23:59:59Z"), "application/json", 400, "before 1970"),
        (minimal(time=12345), "application/json", 400, "field 'time' must be a string"),
        (minimal(tags="shell"), "application/json", 400, "'tags' must be a list of strings"),
        (
            minimal(output_fields=[1]),
            "application/json",
            400,
            "'output_fields' must be a JSON object",
        ),
        (minimal(output=3), "application/json", 400, "field 'output' must be a string"),
        (
            b"20:19:15.325119960: Notice A shell was spawned in a container",
            "text/plain",
            415,
            "json_output: true",
        ),
    ],
)
def test_bad_http_input_names_the_problem(
    body: bytes, content_type: str, status: int, reason: str
) -> None:
    with pytest.raises(AlertError) as caught:
        from_http_body(body, content_type)
    assert caught.value.status == status
    assert reason in caught.value.reason


def test_json_sent_as_text_plain_is_still_read() -> None:
    assert (
        from_http_body(minimal(), "text/plain; charset=utf-8").rule == "Terminal shell in container"
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("34816", 34816),
        ("-1", -1),
        ("1685022245478445995", 1685022245478445995),
        ("1.5", 1.5),
        ("true", True),
        ("false", False),
        ("null", None),
        ('["a","b"]', ["a", "b"]),
        ("root", "root"),
        ("", ""),
        ("<NA>", None),
        ("1 ", "1 "),
        (" 1", " 1"),
        ("-", "-"),
        ("nullable", "nullable"),
        ("10.0.0.1:443", "10.0.0.1:443"),
        ('"quoted"', '"quoted"'),
    ],
)
def test_grpc_field_values_become_the_json_value_they_stand_for(text: str, value: object) -> None:
    assert grpc_field_value(text) == value
    assert type(grpc_field_value(text)) is type(value)


def grpc_response(**overrides: object) -> outputs_pb2.response:
    response = outputs_pb2.response(
        priority=schema_pb2.NOTICE,
        rule="Terminal shell in container",
        output="out",
        hostname="node-1",
        source="syscall",
    )
    response.time.seconds = 1612815555
    response.time.nanos = 325119960
    for key, value in overrides.items():
        setattr(response, key, value)
    return response


def test_grpc_source_comes_from_field_9_not_the_enum() -> None:
    response = grpc_response(source="aws_cloudtrail", source_deprecated=schema_pb2.PLUGIN)
    assert from_grpc(response).source == "aws_cloudtrail"


def test_grpc_source_falls_back_to_the_enum_when_field_9_is_empty() -> None:
    response = grpc_response(source="", source_deprecated=schema_pb2.K8S_AUDIT)
    assert from_grpc(response).source == "k8s_audit"


def test_grpc_unknown_priority_number_is_rejected() -> None:
    with pytest.raises(AlertError, match="unknown priority number 12"):
        from_grpc(grpc_response(priority=12))


def test_grpc_without_time_or_rule_is_rejected() -> None:
    response = grpc_response()
    response.ClearField("time")
    with pytest.raises(AlertError, match="without a time"):
        from_grpc(response)
    with pytest.raises(AlertError, match="empty rule"):
        from_grpc(grpc_response(rule=""))


@pytest.mark.parametrize("template", CATALOG, ids=lambda t: t.rule)
def test_both_wire_formats_give_the_same_event(template: object) -> None:
    event = render(template, 1_700_000_000_123_456_789, "node-1")  # type: ignore[arg-type]
    assert from_http_body(to_falco_json(event)) == event
    assert from_grpc(to_grpc_response(event, json_output=True)) == event
    if event.source != "internal":
        # Falco's text line for an internal alert is not its JSON `output`.
        assert from_grpc(to_grpc_response(event, json_output=False)) == event


def test_event_is_frozen() -> None:
    event = from_http_body(minimal())
    with pytest.raises(AttributeError):
        event.rule = "other"  # type: ignore[misc]
    assert isinstance(event, FalcoEvent)


def _grpc(fields: dict[str, str], source: str = "syscall", output: str = "text") -> FalcoEvent:
    response = outputs_pb2.response(rule="R", output=output, source=source, hostname="h")
    response.time.seconds, response.time.nanos = 1_700_000_000, 5
    for key, value in fields.items():
        response.output_fields[key] = value
    return from_grpc(response)


def test_grpc_text_takes_the_field_types_of_falcos_definitions() -> None:
    fields = _grpc(
        {
            "container.id": "123456789012",  # string in the container plugin
            "k8s.pod.name": "12345",
            "proc.tty": "34816",  # PT_UINT32, PF_DEC
            "user.loginuid": "-1",  # PT_INT64
            "proc.is_exe_upper_layer": "true",  # PT_BOOL
            "proc.aname[2]": "1234",  # an argument: the field's type
            "fd.types": "(ipv4,file)",  # a list field
            "evt.time.s": "22:13:20",  # the event time, whatever its text
            "my.plugin.count": "7",  # unknown: the guess
            "k8s.ns.name": "<NA>",
        }
    ).output_fields
    assert fields == {
        "container.id": "123456789012",
        "evt.time": 1_700_000_000_000_000_005,
        "evt.time.s": 1_700_000_000_000_000_005,
        "fd.types": ["ipv4", "file"],
        "k8s.ns.name": None,
        "k8s.pod.name": "12345",
        "my.plugin.count": 7,
        "proc.aname[2]": "1234",
        "proc.is_exe_upper_layer": True,
        "proc.tty": 34816,
        "user.loginuid": -1,
    }
    assert list(fields) == sorted(fields)


def test_grpc_internal_alerts_get_no_evt_time() -> None:
    assert _grpc({"n_drops": "12"}, source="internal").output_fields == {"n_drops": "12"}


def test_grpc_output_holding_falcos_json_document_is_read_from_there() -> None:
    document = orjson.dumps(
        {"rule": "R", "output_fields": {"proc.tty": 0, "x": "1"}, "time": "t", "priority": "x"}
    ).decode()
    event = _grpc({"proc.tty": "0", "x": "1"}, output=document)
    # json_include_output_property: false: no output, as http_output's body.
    assert event.output == ""
    assert event.output_fields == {"proc.tty": 0, "x": "1"}
    # A JSON-looking text line of another rule is just text.
    other = _grpc({}, output='{"rule": "other"}')
    assert other.output == '{"rule": "other"}'


def test_tags_are_sorted_on_both_paths() -> None:
    assert from_http_body(minimal(tags=["b", "a", "C"])).tags == ("C", "a", "b")
    response = outputs_pb2.response(rule="R", tags=["z", "a"])
    response.time.seconds = 1
    assert from_grpc(response).tags == ("a", "z")
