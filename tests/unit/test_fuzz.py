"""Property-based tests: whatever arrives, by either path, the answer is a 2xx or a 4xx with a
reason, never a 5xx or a crash, and every accepted alert gets a valid NATS subject.

The default run is a few seconds; FUZZ_EXAMPLES=5000 (for example) runs longer.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from typing import Any

import orjson
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from quart import Quart

from gateway.errors import AlertError
from gateway.event import FalcoEvent, Priority
from gateway.falco_pb import outputs_pb2
from gateway.normalize import TRUNCATED, Limits, from_grpc, from_http_body
from gateway.payload import falcosidekick_json
from gateway.pipeline import Pipeline
from gateway.sources.http import create_app
from gateway.spool import Spool
from gateway.subject import SubjectTemplate

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TEMPLATE = SubjectTemplate("falco.<source>.<priority>.<rule>.<hostname>")
LIMITS = Limits(max_fields=64, max_field_bytes=256)
# A subject NATS accepts: tokens of slug characters, no wildcard, no whitespace, none empty.
_VALID_SUBJECT = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)*\Z")

odd_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40
) | st.sampled_from(
    [
        "",
        " ",
        "*",
        ">",
        "a.b",
        "İstanbul",
        "\u202e",
        "\x00",
        "e\u0301",
        "💥" * 10,
        "x" * 2000,
        "NaN",
        "Infinity",
        "-Infinity",
        "1e999",
        "18446744073709551616",
        "[" * 50,
    ]
)
json_scalar = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | odd_text
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(odd_text, inner, max_size=5),
    max_leaves=30,
)
priorities = st.sampled_from([p.name.capitalize() for p in Priority] + ["info", "WARN", ""])
alert_docs = st.fixed_dictionaries(
    {},
    optional={
        "time": st.sampled_from(["2024-05-01T10:00:00.123456789Z", "2024-13-01T00:00:00Z", ""])
        | json_value,
        "priority": priorities | json_value,
        "rule": odd_text | json_value,
        "output": odd_text | json_value,
        "source": odd_text | json_value,
        "hostname": odd_text | json_value,
        "tags": st.lists(odd_text, max_size=5) | json_value,
        "output_fields": st.dictionaries(odd_text, json_value, max_size=80) | json_value,
    },
)


def check_event(event: FalcoEvent) -> None:
    """What the sink will get from an accepted event is valid."""
    subject = TEMPLATE.render(event)
    assert _VALID_SUBJECT.match(subject), subject
    assert len(subject) < 4096
    orjson.loads(falcosidekick_json(event))
    assert len(event.output_fields) <= LIMITS.max_fields
    for value in event.output_fields.values():
        if isinstance(value, str) and value.endswith(TRUNCATED):
            assert len(value.encode()) <= LIMITS.max_field_bytes + len(TRUNCATED)
        if isinstance(value, float):
            assert math.isfinite(value)


def outcome(body: bytes, content_type: str = "application/json") -> None:
    try:
        event = from_http_body(body, content_type, LIMITS)
    except AlertError as exc:
        check_rejection(exc)
        return
    check_event(event)


def check_rejection(exc: AlertError) -> None:
    assert 400 <= exc.status < 500
    assert exc.reason
    assert exc.kind


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(body: bytes) -> None:
    outcome(body)
    outcome(body, "text/plain")


@FUZZ
@given(alert_docs)
def test_arbitrary_alert_json(doc: dict[str, Any]) -> None:
    outcome(orjson.dumps(doc))


@FUZZ
@given(json_value)
def test_arbitrary_json_values(value: Any) -> None:
    outcome(orjson.dumps(value))


def test_nan_infinity_and_deep_nesting_are_4xx() -> None:
    for body in (
        b'{"rule": "r", "priority": "Error", "time": "2024-05-01T10:00:00Z", '
        b'"output_fields": {"x": NaN}}',
        b'{"output_fields": {"x": Infinity}}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
    ):
        # Refused, with a 4xx and a reason: neither accepted nor an unexpected error.
        with pytest.raises(AlertError) as caught:
            from_http_body(body, "application/json", LIMITS)
        check_rejection(caught.value)


grpc_responses = st.builds(
    lambda seconds, priority, rule, output, source, hostname, tags, fields, deprecated: (
        outputs_pb2.response(
            time=Timestamp(seconds=seconds),
            priority=priority,
            rule=rule,
            output=output,
            source=source,
            hostname=hostname,
            tags=tags,
            output_fields=fields,
            source_deprecated=deprecated,
        )
    ),
    st.integers(min_value=0, max_value=2**40),
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    odd_text,
    odd_text,
    odd_text,
    odd_text,
    st.lists(odd_text, max_size=5),
    st.dictionaries(odd_text, odd_text, max_size=80),
    st.integers(min_value=0, max_value=2**31 - 1),
)


@FUZZ
@given(grpc_responses, st.booleans())
def test_arbitrary_grpc_responses(response: outputs_pb2.response, drop_time: bool) -> None:
    if drop_time:
        response.ClearField("time")
    try:
        event = from_grpc(response, LIMITS)
    except AlertError as exc:
        check_rejection(exc)
        return
    check_event(event)


def make_app() -> Quart:
    pipeline = Pipeline(TEMPLATE, Priority.DEBUG, Spool(), dedup=None)
    return create_app(pipeline, lambda: (True, "ok"), 64 * 1024, limits=LIMITS)


async def asgi_post(
    app: Quart, body: bytes, headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes]:
    """POST / through the served app exactly as Hypercorn calls it, in one body message."""
    scope: Any = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"gw"), (b"content-length", str(len(body)).encode()), *headers],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 2801),
        "extensions": {},
    }
    sent: list[Any] = []
    delivered = False

    async def receive() -> Any:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # like a client that keeps its connection open
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content_type = dict(start["headers"]).get(b"content-type")
    assert content_type == b"application/json", start
    answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], answer


@settings(
    max_examples=max(EXAMPLES // 3, 10),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.one_of(st.binary(max_size=1000), alert_docs.map(orjson.dumps)),
    st.sampled_from(["application/json", "text/plain", "", "application/x-www-form-urlencoded"]),
)
def test_post_never_answers_5xx(body: bytes, content_type: str) -> None:
    headers = [(b"content-type", content_type.encode())] if content_type else []
    status, answer = asyncio.run(asgi_post(make_app(), body, headers))
    assert status < 500, answer
    doc = orjson.loads(answer)
    if status >= 400:
        assert doc["error"]
    else:
        assert doc["status"] in {"accepted", "duplicate", "filtered"}
