"""Values that once reached a 500 or a dead stream: too deep, too odd, too long to quote."""

from __future__ import annotations

import orjson
import pytest

from gateway.errors import AlertError
from gateway.normalize import MAX_VALUE_DEPTH, from_grpc, from_http_body, replace_bad_utf8
from gateway.payload import falcosidekick_json
from gateway.simulator.alerts import CATALOG, render
from gateway.simulator.wire import to_grpc_response

ALERT = render(CATALOG[0], 1_612_815_555_325_119_960, "minikube")


def body(**overrides: object) -> bytes:
    doc: dict[str, object] = {
        "rule": "Terminal shell in container",
        "priority": "Notice",
        "time": "2021-02-08T20:19:15.325119960Z",
    }
    doc.update(overrides)
    return orjson.dumps(doc)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [MAX_VALUE_DEPTH + 1, 300, 1000, 1022])
def test_http_value_too_deep_to_publish_is_refused_by_name(depth: int) -> None:
    raw = b'{"rule":"r","priority":"Notice","time":"2021-02-08T20:19:15Z","output_fields":{"x":'
    raw += nested(depth).encode() + b"}}"
    with pytest.raises(AlertError, match=f"nested deeper than {MAX_VALUE_DEPTH}") as info:
        from_http_body(raw)
    assert (info.value.status, info.value.kind) == (400, "too_deep")


def test_http_value_as_deep_as_can_be_published_goes_out() -> None:
    raw = b'{"rule":"r","priority":"Notice","time":"2021-02-08T20:19:15Z","output_fields":{"x":'
    raw += nested(MAX_VALUE_DEPTH).encode() + b"}}"
    event = from_http_body(raw)
    assert orjson.loads(falcosidekick_json(event))["output_fields"]["x"] == orjson.loads(
        nested(MAX_VALUE_DEPTH)
    )


def test_grpc_text_too_deep_for_a_value_stays_the_text() -> None:
    response = to_grpc_response(ALERT, json_output=False)  # values in output_fields
    response.output_fields["proc.cmdline"] = nested(MAX_VALUE_DEPTH + 1)
    response.output_fields["ok"] = nested(3)
    event = from_grpc(response)
    assert event.output_fields["proc.cmdline"] == nested(MAX_VALUE_DEPTH + 1)
    assert event.output_fields["ok"] == [[[]]]
    falcosidekick_json(event)  # publishable


@pytest.mark.parametrize(
    ("seconds", "nanos"), [(2**62, 0), (-1, 0), (1_700_000_000, -1), (1_700_000_000, 2 * 10**9)]
)
def test_grpc_time_out_of_range_is_refused(seconds: int, nanos: int) -> None:
    response = to_grpc_response(ALERT)
    response.time.seconds = seconds
    response.time.nanos = nanos
    with pytest.raises(AlertError, match="gRPC response time") as info:
        from_grpc(response)
    assert info.value.kind == "bad_time"


@pytest.mark.parametrize("key", ["priority", "time"])
def test_a_100kb_text_is_quoted_only_in_part(key: str) -> None:
    with pytest.raises(AlertError, match="100000 characters") as info:
        from_http_body(body(**{key: "A" * 100_000}))
    assert len(info.value.reason) < 400


def test_bad_utf8_is_replaced_as_falco_json_does() -> None:
    raw = body(rule="RULE").replace(b"RULE", b"RU\xffE")
    with pytest.raises(AlertError, match="not valid UTF-8"):
        from_http_body(raw)
    assert from_http_body(replace_bad_utf8(raw)).rule == "RU\ufffdE"
