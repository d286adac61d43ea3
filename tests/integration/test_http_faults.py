"""The HTTP source against hostile and odd bodies, on the real server and a real nats-server."""

from __future__ import annotations

import asyncio
import gzip
import logging
import zlib
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import orjson
import pytest

import gateway.sources.http as http_source
from gateway.errors import AlertError
from gateway.simulator.alerts import CATALOG, render
from gateway.simulator.http_client import HttpClient
from gateway.simulator.wire import to_falco_json
from tests.integration.test_grpc_faults import REPLACEMENT, _metric
from tests.support import NatsServer, running_gateway, subscribe, take

SEED = render(CATALOG[0], 1_612_815_555_325_119_960, "minikube")


def alert(**overrides: object) -> bytes:
    doc = orjson.loads(to_falco_json(SEED))
    doc.update(overrides)
    return orjson.dumps(doc)


async def raw_exchange(port: int, request: bytes) -> tuple[bytes, bytes, bool]:
    """Send `request` on a new connection: (status line and headers, body, closed after)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    body = await reader.readexactly(length)
    try:
        rest = await asyncio.wait_for(reader.read(1), 5)
    except ConnectionResetError:
        rest = b""
    writer.close()
    return head, body, rest == b""


# The value's own depth; the body is two levels deeper (orjson reads up to 1024).
@pytest.mark.parametrize("depth", [253, 600, 1021])
async def test_output_fields_nested_too_deep_gets_400_and_is_counted(
    nats_server: NatsServer, depth: int
) -> None:
    deep = b'{"x":' * depth + b"1" + b"}" * depth
    body = alert().replace(b'"output_fields":{', b'"output_fields":{"deep":' + deep + b",")
    async with running_gateway(nats_server.url) as gw, gw.client() as http:
        response = await http.post(body)
        assert response.status == 400, response.body
        assert "nested deeper than 252 levels" in orjson.loads(response.body)["error"]
        assert (await http.post(to_falco_json(SEED))).status == 200
        telemetry = gw.gateway.telemetry
        assert (
            _metric(
                telemetry,
                "falco_nats_gateway_alerts_rejected_by_reason_total",
                path="http",
                reason="too_deep",
            )
            == 1
        )


async def test_anything_unexpected_is_a_counted_logged_500_with_a_reason(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object) -> object:
        raise RuntimeError("injected fault")

    async with running_gateway(nats_server.url) as gw, gw.client() as http:
        # The fast path (POST /) and a Quart route (/readyz), each broken on purpose.
        monkeypatch.setattr(http_source, "from_http_body", broken)
        monkeypatch.setattr(gw.gateway.pipeline.spool, "has_room", broken)
        with caplog.at_level(logging.ERROR, logger="gateway.http"):
            answers = [await http.post(to_falco_json(SEED)) for _ in range(3)]
            answers.append(await http.get("/readyz"))
        monkeypatch.undo()
        for answer in answers:
            assert answer.status == 500
            assert "internal error (RuntimeError)" in orjson.loads(answer.body)["error"]
        assert (await http.post(to_falco_json(SEED))).status == 200
        assert (
            _metric(
                gw.gateway.telemetry, "falco_nats_gateway_unexpected_errors_total", component="http"
            )
            == 4
        )
        assert (
            _metric(
                gw.gateway.telemetry,
                "falco_nats_gateway_alerts_rejected_by_reason_total",
                path="http",
                reason="unexpected_error",
            )
            == 3
        )
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, "once per kind of exception"
    fields = errors[0].fields  # type: ignore[attr-defined]
    assert "RuntimeError: injected fault" in fields["traceback"]
    assert "broken" in fields["traceback"]


async def test_a_body_well_over_a_mebibyte_is_taken_and_shortened(
    nats_server: NatsServer,
) -> None:
    big = "A" * (3 * 1024 * 1024)
    nc, inbox = await subscribe(nats_server.url)
    async with running_gateway(nats_server.url) as gw:
        bodies = [
            alert(rule=f"Big alert {i}", output_fields={"proc.cmdline": big}) for i in range(6)
        ]
        # More large bodies at once than LARGE_BODIES_AT_ONCE: they take turns.
        answers = await asyncio.gather(*(_post_alone(gw.url, body) for body in bodies))
        assert answers == [200] * 6
        msgs = await take(inbox, 6)
    await nc.close()
    doc = orjson.loads(msgs[0].data)
    assert doc["output_fields"]["proc.cmdline"].endswith("[truncated]")
    assert len(doc["output_fields"]["proc.cmdline"]) < 17 * 1024


async def _post_alone(url: str, body: bytes) -> int:
    async with HttpClient(url) as client:
        return (await client.post(body)).status


async def test_a_body_over_the_hard_cap_gets_413_and_the_connection_closes(
    nats_server: NatsServer,
) -> None:
    async with running_gateway(nats_server.url, max_body_bytes=4096) as gw:
        port = gw.settings.listen_port
        request = b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000
        head, body, closed = await raw_exchange(port, request)
        assert head.startswith(b"HTTP/1.1 413 ")
        assert b"connection: close" in head.lower()
        assert "4096 bytes (max_body_bytes)" in orjson.loads(body)["error"]
        assert closed


async def test_401_says_the_connection_closes(nats_server: NatsServer, tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("secret-pw\n")
    async with running_gateway(
        nats_server.url, http_user="falco", http_password_file=str(password_file)
    ) as gw:
        port = gw.settings.listen_port
        payload = to_falco_json(SEED)
        request = b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % len(payload)
        head, body, closed = await raw_exchange(port, request + payload[:10])
        assert head.startswith(b"HTTP/1.1 401 ")
        assert b"connection: close" in head.lower()
        assert "basic-auth" in orjson.loads(body)["error"]
        assert closed


async def test_compressed_bodies_are_decoded_within_the_limit_or_named(
    nats_server: NatsServer,
) -> None:
    nc, inbox = await subscribe(nats_server.url)
    async with running_gateway(nats_server.url, max_body_bytes=64 * 1024) as gw:
        client = gw.client()
        body = to_falco_json(SEED)
        ok = await client.request("POST", "/", gzip.compress(body), {"Content-Encoding": "gzip"})
        assert ok.status == 200, ok.body
        deflated = await client.request(
            "POST",
            "/",
            zlib.compress(alert(rule="Deflated").replace(b"\n", b"")),
            {"Content-Encoding": "deflate"},
        )
        assert deflated.status == 200, deflated.body
        brotli = await client.request("POST", "/", b"\x0b\x02\x80", {"Content-Encoding": "br"})
        assert brotli.status == 415
        assert "Content-Encoding 'br' is not supported" in orjson.loads(brotli.body)["error"]
        bomb = gzip.compress(b"{" + b" " * (10 * 1024 * 1024) + b"}")
        too_big = await client.request("POST", "/", bomb, {"Content-Encoding": "gzip"})
        assert too_big.status == 413
        assert "decodes to more than 65536 bytes" in orjson.loads(too_big.body)["error"]
        garbage = await client.request("POST", "/", b"not gzip", {"Content-Encoding": "gzip"})
        assert garbage.status == 400
        assert "not valid gzip data" in orjson.loads(garbage.body)["error"]
        await client.close()
        msgs = await take(inbox, 2)
    await nc.close()
    assert sorted(orjson.loads(m.data)["rule"] for m in msgs) == sorted([SEED.rule, "Deflated"])


@pytest.mark.parametrize(
    ("time", "problem"),
    [
        ("2023-05-25T13:44:05.478445995+99:99", "impossible UTC offset"),
        ("\uff12\uff10\uff12\uff13-05-25T13:44:05Z", "not an RFC 3339 time"),
        ("9999-12-31T23:59:59-01:00", "after 9999-12-31"),
    ],
)
async def test_odd_times_are_refused_with_the_reason(
    nats_server: NatsServer, time: str, problem: str
) -> None:
    async with running_gateway(nats_server.url) as gw, gw.client() as http:
        response = await http.post(alert(time=time))
        assert response.status == 400
        assert problem in orjson.loads(response.body)["error"]
        assert (
            _metric(
                gw.gateway.telemetry,
                "falco_nats_gateway_alerts_rejected_by_reason_total",
                path="http",
                reason="bad_time",
            )
            == 1
        )


async def test_a_100kb_priority_is_not_echoed_whole(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_gateway(nats_server.url) as gw, gw.client() as http:
        with caplog.at_level(logging.WARNING, logger="gateway.http"):
            response = await http.post(alert(priority="P" * 100_000))
    assert response.status == 400
    assert len(response.body) < 500
    assert "100000 characters" in orjson.loads(response.body)["error"]
    (record,) = [r for r in caplog.records if r.getMessage() == "alert rejected"]
    assert len(str(record.fields)) < 500  # type: ignore[attr-defined]


async def test_text_that_is_not_utf8_is_replaced_and_the_alert_published(
    nats_server: NatsServer,
) -> None:
    body = alert(output_fields={"fd.name": "/tmp/Xbad"}).replace(b"/tmp/Xbad", b"/tmp/\xffbad")
    nc, inbox = await subscribe(nats_server.url)
    async with running_gateway(nats_server.url) as gw, gw.client() as http:
        response = await http.post(body)
        assert response.status == 200, response.body
        (msg,) = await take(inbox, 1)
        assert (
            _metric(
                gw.gateway.telemetry,
                "falco_nats_gateway_alerts_repaired_total",
                path="http",
                reason="not_utf8",
            )
            == 1
        )
    await nc.close()
    assert orjson.loads(msg.data)["output_fields"]["fd.name"] == "/tmp/" + REPLACEMENT + "bad"


def test_alert_error_is_what_the_decoder_raises() -> None:
    with pytest.raises(AlertError, match="truncated"):
        http_source._decoded(gzip.compress(b"{}")[:-8], "gzip", 1024)
    assert http_source._decoded(b"{}", "identity", 1024) == b"{}"


async def test_a_long_request_path_is_not_echoed_whole(nats_server: NatsServer) -> None:
    async with running_gateway(nats_server.url) as gw, gw.client() as http:
        response = await http.get("/" + "p" * 10_000)
    assert response.status in (404, 405)
    error = orjson.loads(response.body)["error"]
    assert len(error) < 400
    assert "10001 characters" in error


async def test_an_early_answer_over_http2_is_sent_without_a_connection_header(
    nats_server: NatsServer,
) -> None:
    """HTTP/2 has no Connection header: the h2 stack drops it, and the answer still goes out."""
    async with running_gateway(nats_server.url, max_body_bytes=4096) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.settings.listen_port)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()  # h2c with prior knowledge
        stream_id = conn.get_next_available_stream_id()
        body = b"x" * 5000
        conn.send_headers(
            stream_id,
            [
                (":method", "POST"),
                (":path", "/"),
                (":scheme", "http"),
                (":authority", "gw"),
                ("content-length", str(len(body))),
            ],
        )
        conn.send_data(stream_id, body, end_stream=True)
        writer.write(conn.data_to_send())
        headers: list[tuple[bytes, bytes]] = []
        data = b""
        ended = False
        while not ended:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            assert chunk, "connection closed before the answer"
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    headers = [(bytes(k), bytes(v)) for k, v in event.headers]
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
                else:
                    assert not isinstance(event, h2.events.StreamReset), event
            writer.write(conn.data_to_send())
        writer.close()
    assert (b":status", b"413") in headers
    assert b"connection" not in dict(headers)
    assert "4096 bytes (max_body_bytes)" in orjson.loads(data)["error"]
