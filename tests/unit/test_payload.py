from __future__ import annotations

import orjson

from gateway.event import FalcoEvent, Priority
from gateway.normalize import from_grpc, from_http_body
from gateway.payload import falcosidekick_json
from gateway.simulator.alerts import CATALOG, render
from gateway.simulator.wire import to_falco_json, to_grpc_response
from tests.support import FALCOSIDEKICK_KEYS

EVENT = render(CATALOG[0], 1_612_815_555_325_119_960, "node-1")


def test_keys_in_falcosidekick_order() -> None:
    doc = orjson.loads(falcosidekick_json(EVENT))
    assert list(doc) == FALCOSIDEKICK_KEYS
    assert doc["priority"] == "Notice"
    assert doc["time"] == "2021-02-08T20:19:15.325119960Z"
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
    over_grpc = from_grpc(to_grpc_response(EVENT))
    assert falcosidekick_json(over_http) == falcosidekick_json(over_grpc)


def test_alert_id_survives_what_older_or_trimmed_falco_json_leaves_out() -> None:
    # json_include_output_property: false, and Falco before hostname/source in JSON.
    trimmed = orjson.loads(to_falco_json(EVENT, include_output=False))
    for key in ("hostname", "source", "tags", "output_fields"):
        trimmed.pop(key)
    assert (
        from_http_body(orjson.dumps(trimmed)).alert_id
        == from_grpc(to_grpc_response(EVENT)).alert_id
    )


def test_alert_id_differs_by_time_rule_and_priority() -> None:
    ids = {
        EVENT.alert_id,
        FalcoEvent(EVENT.time_ns + 1, EVENT.priority, EVENT.rule).alert_id,
        FalcoEvent(EVENT.time_ns, Priority.WARNING, EVENT.rule).alert_id,
        FalcoEvent(EVENT.time_ns, EVENT.priority, EVENT.rule + "x").alert_id,
    }
    assert len(ids) == 4
