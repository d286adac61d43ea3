"""The message body: falcosidekick's JSON payload, byte for byte."""

from __future__ import annotations

from dataclasses import replace

import orjson

from gateway.event import FalcoEvent, Priority
from gateway.normalize import from_grpc, from_http_body
from gateway.payload import Stamp, falcosidekick_json
from gateway.simulator.alerts import CATALOG, render
from gateway.simulator.wire import to_falco_json, to_grpc_response
from tests.support import FALCOSIDEKICK_KEYS

EVENT = render(CATALOG[0], 1_612_815_555_325_119_960, "node-1")


def test_keys_in_falcosidekick_order() -> None:
    doc = orjson.loads(falcosidekick_json(EVENT))
    assert list(doc) == FALCOSIDEKICK_KEYS
    assert doc["priority"] == "Notice"
    assert doc["time"] == "2021-02-08T20:19:15.32511996Z"  # Go's RFC3339Nano
    assert doc["uuid"] == EVENT.alert_id
    assert list(doc["output_fields"]) == sorted(doc["output_fields"])
    assert doc["output_fields"]["proc.tty"] == 34816


def test_empty_tags_and_hostname_are_omitted_like_omitempty() -> None:
    event = FalcoEvent(time_ns=1, priority=Priority.INFORMATIONAL, rule="r", source="syscall")
    doc = orjson.loads(falcosidekick_json(event))
    assert "tags" not in doc
    assert "hostname" not in doc
    assert doc["output_fields"] == {}
    assert doc["output"] == ""
    assert doc["priority"] == "Informational"


def test_same_alert_same_bytes_on_both_paths() -> None:
    over_http = from_http_body(to_falco_json(EVENT))
    for json_output in (True, False):
        over_grpc = from_grpc(to_grpc_response(EVENT, json_output=json_output))
        assert falcosidekick_json(over_http) == falcosidekick_json(over_grpc)


def test_alert_without_output_is_identified_by_its_fields_never_merged() -> None:
    # json_include_output_property: false. Two alerts of the same rule, priority,
    # host and second that differ only in their fields stay two alerts.
    first = orjson.loads(to_falco_json(EVENT, include_output=False))
    second = orjson.loads(to_falco_json(EVENT, include_output=False))
    second["output_fields"]["proc.cmdline"] = "sh"
    ids = {from_http_body(orjson.dumps(doc)).alert_id for doc in (first, second)}
    assert len(ids) == 2
    assert from_http_body(orjson.dumps(first)).alert_id in ids  # stable for one alert


def test_alert_with_neither_output_nor_fields_is_never_a_duplicate() -> None:
    bare = FalcoEvent(EVENT.time_ns, EVENT.priority, EVENT.rule, source="syscall")
    assert bare.alert_id != bare.alert_id


def test_alert_id_differs_by_every_part() -> None:
    base = FalcoEvent(EVENT.time_ns, EVENT.priority, EVENT.rule, "out", "syscall", "node-1")
    ids = {
        base.alert_id,
        replace(base, time_ns=base.time_ns + 1).alert_id,
        replace(base, priority=Priority.WARNING).alert_id,
        replace(base, rule=base.rule + "x").alert_id,
        replace(base, output="out2").alert_id,
        replace(base, source="aws_cloudtrail").alert_id,
        replace(base, hostname="node-2").alert_id,
        # No separator can be forged: the parts are a JSON array.
        replace(base, rule=base.rule + '","syscall', source="node-1").alert_id,
    }
    assert len(ids) == 8


def test_custom_fields_replace_and_join_sorted_and_custom_tags_sort_in() -> None:
    event = FalcoEvent(
        1, Priority.ERROR, "r", output_fields={"b": 1, "proc.name": "sh"}, tags=("m",)
    )
    stamp = Stamp({"proc.name": "custom", "a": "x"}, ("z", "a"))
    doc = orjson.loads(falcosidekick_json(event, stamp=stamp))
    assert list(doc["output_fields"].items()) == [("a", "x"), ("b", 1), ("proc.name", "custom")]
    assert doc["tags"] == ["a", "m", "z"]


def test_strings_are_escaped_as_gos_json_marshal_escapes_them() -> None:
    event = FalcoEvent(1, Priority.ERROR, "r&d", output="a->b <NA>\u2028", source="syscall")
    data = falcosidekick_json(event)
    assert b'"output":"a-\\u003eb \\u003cNA\\u003e\\u2028"' in data
    assert b'"rule":"r\\u0026d"' in data
    assert orjson.loads(data)["output"] == event.output
