"""Limits on what one alert may carry, basic-auth comparison, redaction, HTTP security settings."""

from __future__ import annotations

import base64
from dataclasses import replace

import orjson
import pytest

from gateway.config import Settings, redact
from gateway.errors import AlertError, ConfigError
from gateway.falco_pb import outputs_pb2
from gateway.normalize import TRUNCATED, Limits, from_grpc, from_http_body
from gateway.sources.http import BasicAuth

LIMITS = Limits(max_fields=3, max_field_bytes=8)


def alert(**extra: object) -> bytes:
    doc = {"time": "2024-05-01T10:00:00Z", "priority": "Error", "rule": "r", **extra}
    return orjson.dumps(doc)


def test_long_values_are_truncated_on_a_character_boundary() -> None:
    event = from_http_body(
        alert(output_fields={"a": "ééééé", "b": "short", "c": list(range(20))}), limits=LIMITS
    )
    assert event.output_fields["a"] == "éééé" + TRUNCATED
    assert event.output_fields["b"] == "short"
    assert event.output_fields["c"] == "[0,1,2,3" + TRUNCATED
    response = outputs_pb2.response(rule="r", output_fields={"a": "x" * 100})
    response.time.seconds = 1
    assert from_grpc(response, LIMITS).output_fields["a"] == "x" * 8 + TRUNCATED


def test_too_many_fields_or_tags_are_rejected_on_both_paths() -> None:
    for body in (
        alert(output_fields={str(i): i for i in range(4)}),
        alert(tags=["a", "b", "c", "d"]),
    ):
        with pytest.raises(AlertError, match="max_output_fields") as info:
            from_http_body(body, limits=LIMITS)
        assert (info.value.status, info.value.kind) == (413, "too_many_fields")
    response = outputs_pb2.response(rule="r", output_fields={str(i): "v" for i in range(4)})
    response.time.seconds = 1
    with pytest.raises(AlertError, match="max_output_fields"):
        from_grpc(response, LIMITS)


def test_names_that_make_the_subject_are_capped() -> None:
    with pytest.raises(AlertError, match="'rule' is 1025 characters long") as info:
        from_http_body(alert(rule="r" * 1025))
    assert info.value.status == 413
    with pytest.raises(AlertError, match="'hostname'"):
        from_http_body(alert(hostname="h" * 257))
    response = outputs_pb2.response(rule="r", source="s" * 257)
    response.time.seconds = 1
    with pytest.raises(AlertError, match="'source'"):
        from_grpc(response)


def header(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_basic_auth() -> None:
    auth = BasicAuth("falco", "pa:ss")
    assert auth.allows(header("falco:pa:ss"))
    assert auth.allows("basic " + base64.b64encode(b"falco:pa:ss").decode())
    for bad in (None, "", "Basic", "Bearer x", header("falco:pa"), header("falco"), "Basic %%%"):
        assert not auth.allows(bad), bad


def test_redact_hides_userinfo_even_when_the_url_is_broken() -> None:
    assert redact("nats://u:secret@host:99999") == "nats://***@host:99999"
    assert redact("tls://tok@a:4222, nats://b:4222") == "tls://***@a:4222,nats://b:4222"
    assert redact("nats://host:4222") == "nats://host:4222"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"tls_key": "/x.key"}, "tls_cert"),
        ({"tls_client_ca": "/ca.crt"}, "tls_client_ca"),
        ({"http_user": "falco"}, "http_password"),
        ({"http_password": "p"}, "http_user"),
        ({"http_user": "a:b", "http_password": "p"}, "http_user"),
        ({"health_listen": "0.0.0.0:2801"}, "health_listen"),
        ({"health_listen": "nope"}, "health_listen"),
        ({"http_max_in_flight": 0}, "http_max_in_flight"),
        ({"max_field_bytes": 1}, "max_field_bytes"),
        ({"grpc_max_message_bytes": 10}, "grpc_max_message_bytes"),
        ({"http_read_timeout": 0}, "http_read_timeout"),
    ],
)
def test_http_security_settings_name_the_key(overrides: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        replace(Settings(), **overrides).validate()  # type: ignore[arg-type]
    assert info.value.key == key
