"""The HTTP source against a real nats-server, through the gateway's real HTTP server."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from quart import Quart, request, request_started

from gateway.event import Priority
from gateway.pipeline import MSG_ID_HEADER, PATH_HEADER
from gateway.simulator.alerts import CATALOG, render
from gateway.simulator.http_client import HttpClient
from gateway.simulator.wire import to_falco_json
from tests.support import (
    FALCOSIDEKICK_KEYS,
    NatsServer,
    nothing_more,
    running_gateway,
    subscribe,
    take,
)

# The alert of the seed demo, as Falco 0.43 posts it.
SEED = render(CATALOG[0], 1_612_815_555_325_119_960, "minikube")


async def test_seed_alert_lands_on_falcosidekicks_subject(nats_server: NatsServer) -> None:
    nc, inbox = await subscribe(nats_server.url)
    async with running_gateway(nats_server.url) as gw, gw.client() as http:
        response = await http.post(to_falco_json(SEED))
        assert response.status == 200
        assert orjson.loads(response.body) == {
            "status": "accepted",
            "subject": "falco.notice.terminal_shell_in_container",
        }
        (msg,) = await take(inbox, 1)
    await nc.close()
    assert msg.subject == "falco.notice.terminal_shell_in_container"
    assert msg.headers is not None
    assert msg.headers[MSG_ID_HEADER] == SEED.alert_id
    assert msg.headers[PATH_HEADER] == "http"
    doc = orjson.loads(msg.data)
    assert list(doc) == FALCOSIDEKICK_KEYS
    assert doc["uuid"] == SEED.alert_id
    assert doc["rule"] == "Terminal shell in container"
    assert doc["priority"] == "Notice"
    assert doc["time"] == "2021-02-08T20:19:15.32511996Z"  # Go's RFC3339Nano, as falcosidekick
    assert doc["hostname"] == "minikube"
    assert doc["source"] == "syscall"
    assert doc["output"] == SEED.output
    assert doc["output_fields"]["proc.tty"] == 34816
    assert doc["output_fields"]["user.loginuid"] == -1


async def test_the_served_app_is_quart_and_alerts_skip_its_request_machinery(
    nats_server: NatsServer,
) -> None:
    """Hypercorn serves the Quart app, with every route declared on it; an alert POST is
    answered in front of Quart's asgi_app (its request machinery never starts), the rest
    by Quart."""
    async with running_gateway(nats_server.url) as gw:
        app = gw.gateway.app
        assert isinstance(app, Quart)
        routes = {(r.rule, m) for r in app.url_map.iter_rules() for m in r.methods or ()}
        assert {
            ("/", "POST"),
            ("/<path:_any>", "POST"),
            ("/test", "POST"),
            ("/ping", "GET"),
            ("/healthz", "GET"),
            ("/readyz", "GET"),
            ("/metrics", "GET"),
        } <= routes
        started: list[str] = []

        def note(_sender: Quart, **_: object) -> None:
            started.append(request.path)

        request_started.connect(note, app)
        try:
            async with gw.client() as http:
                assert (await http.post(to_falco_json(SEED))).status == 200
                assert (await http.post(to_falco_json(SEED), path="/falco")).status == 200
                assert (await http.get("/ping")).body == b"pong\n"
                assert (await http.request("GET", "/")).status == 405
        finally:
            request_started.disconnect(note, app)
        assert started == ["/ping", "/"]


@pytest.mark.parametrize("priority", [*list(Priority), "info"])
async def test_every_priority(nats_server: NatsServer, priority: Priority | str) -> None:
    name = priority if isinstance(priority, str) else priority.canonical
    expected = "informational" if name == "info" else name.lower()
    body = orjson.loads(to_falco_json(SEED))
    body["priority"] = name
    nc, inbox = await subscribe(nats_server.url)
    async with running_gateway(nats_server.url) as gw, gw.client() as http:
        assert (await http.post(orjson.dumps(body))).status == 200
        (msg,) = await take(inbox, 1)
    await nc.close()
    assert msg.subject == f"falco.{expected}.terminal_shell_in_container"
    assert orjson.loads(msg.data)["priority"] == ("Informational" if name == "info" else name)


async def test_rules_with_punctuation_and_non_ascii(nats_server: NatsServer) -> None:
    rules = {
        "Redirect STDOUT/STDIN to Network Connection in Container": (
            "falco.notice.redirect_stdout_stdin_to_network_connection_in_container"
        ),
        "Exécution d'un shell (conteneur)": "falco.notice.ex_cution_d_un_shell_conteneur",
        "\u0130zinsiz erişim": "falco.notice.izinsiz_eri_im",
        "!!!": "falco.notice._",
    }
    nc, inbox = await subscribe(nats_server.url)
    async with running_gateway(nats_server.url) as gw, gw.client() as http:
        for rule in rules:
            body = orjson.loads(to_falco_json(SEED))
            body["rule"] = rule
            assert (await http.post(orjson.dumps(body))).status == 200
        msgs = await take(inbox, len(rules))
    await nc.close()
    assert [m.subject for m in msgs] == list(rules.values())
    assert [orjson.loads(m.data)["rule"] for m in msgs] == list(rules)


async def test_minimum_priority_info_filters_debug_only(nats_server: NatsServer) -> None:
    nc, inbox = await subscribe(nats_server.url)
    async with running_gateway(nats_server.url, minimum_priority="info") as gw, gw.client() as http:
        for priority in ("Debug", "Informational", "Notice"):
            body = orjson.loads(to_falco_json(SEED))
            body["priority"] = priority
            response = await http.post(orjson.dumps(body))
            assert response.status == 200
            if priority == "Debug":
                assert orjson.loads(response.body) == {
                    "status": "filtered",
                    "reason": "priority Debug is below the minimum Informational",
                }
        msgs = await take(inbox, 2)
        await nothing_more(inbox)
        assert gw.gateway.telemetry.get("filtered", "http") == 1
    await nc.close()
    assert [m.subject.split(".")[1] for m in msgs] == ["informational", "notice"]


BAD_INPUTS = [
    pytest.param(b"", "application/json", 400, "empty body", id="empty"),
    pytest.param(b'{"rule": "Terminal', "application/json", 400, "malformed JSON", id="truncated"),
    pytest.param(b"{rule: x}", "application/json", 400, "malformed JSON", id="malformed"),
    pytest.param(b"[]", "application/json", 400, "expected a JSON object", id="array"),
    pytest.param(b'"alert"', "application/json", 400, "expected a JSON object", id="string"),
    pytest.param(
        b'{"priority":"Notice","time":"2021-02-08T20:19:15Z"}',
        "application/json",
        400,
        "missing field 'rule'",
        id="no-rule",
    ),
    pytest.param(
        b'{"rule":"","priority":"Notice","time":"2021-02-08T20:19:15Z"}',
        "application/json",
        400,
        "field 'rule' is empty",
        id="empty-rule",
    ),
    pytest.param(
        b'{"rule":"r","time":"2021-02-08T20:19:15Z"}',
        "application/json",
        400,
        "missing field 'priority'",
        id="no-priority",
    ),
    pytest.param(
        b'{"rule":"r","priority":"","time":"2021-02-08T20:19:15Z"}',
        "application/json",
        400,
        "field 'priority' is empty",
        id="empty-priority",
    ),
    pytest.param(
        b'{"rule":"r","priority":"Urgent","time":"2021-02-08T20:19:15Z"}',
        "application/json",
        400,
        "unknown priority 'Urgent'",
        id="unknown-priority",
    ),
    pytest.param(
        b'{"rule":"r","priority":"Notice"}',
        "application/json",
        400,
        "missing field 'time'",
        id="no-time",
    ),
    pytest.param(
        b'{"rule":"r","priority":"Notice","time":"last tuesday"}',
        "application/json",
        400,
        "not an RFC 3339 time",
        id="bad-time",
    ),
    pytest.param(
        b'{"rule":"\xc3\x28","priority":"Notice","time":"2021-02-08T20:19:15Z"',
        "application/json",
        400,
        "not valid UTF-8",
        id="non-utf8-and-not-json",
    ),
    pytest.param(
        b"20:19:15.325119960: Notice A shell was spawned in a container with an attached terminal",
        "text/plain",
        415,
        "json_output: true",
        id="text-plain",
    ),
]


async def test_bad_input_gets_a_4xx_with_the_reason_and_the_gateway_keeps_serving(
    nats_server: NatsServer,
) -> None:
    nc, inbox = await subscribe(nats_server.url)
    async with running_gateway(nats_server.url, max_body_bytes=4096) as gw, gw.client() as http:
        for param in BAD_INPUTS:
            body, content_type, status, reason = param.values
            response = await http.post(body, content_type)  # type: ignore[arg-type]
            assert response.status == status, (param.id, response.body)
            assert response.headers["content-type"] == "application/json"
            assert reason in orjson.loads(response.body)["error"], param.id
        too_big = await http.post(b'{"rule": "' + b"x" * 5000 + b'"}')
        assert too_big.status == 413
        assert "4096 bytes" in orjson.loads(too_big.body)["error"]
        # Same connection or a new one: the gateway still serves a good alert.
        async with gw.client() as fresh:
            assert (await fresh.post(to_falco_json(SEED))).status == 200
        (msg,) = await take(inbox, 1)
        await nothing_more(inbox, 0.2)
        assert gw.gateway.telemetry.get("rejected", "http") == len(BAD_INPUTS) + 1
    await nc.close()
    assert msg.subject == "falco.notice.terminal_shell_in_container"


async def test_oversized_chunked_body_is_refused(nats_server: NatsServer) -> None:
    async with running_gateway(nats_server.url, max_body_bytes=2048) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.settings.listen_port)
        chunk = b"x" * 1024
        request = b"POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
        request += b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4)) + b"0\r\n\r\n"
        writer.write(request)
        await writer.drain()
        status_line = await reader.readline()
        writer.close()
        assert b" 413 " in status_line


async def test_wrong_method_and_unknown_path(nats_server: NatsServer) -> None:
    async with running_gateway(nats_server.url) as gw, gw.client() as http:
        get_root = await http.get("/")
        assert get_root.status == 405
        assert "GET /" in orjson.loads(get_root.body)["error"]
        # As in falcosidekick, every unnamed path takes alerts: a GET there is the wrong method.
        other = await http.get("/nope")
        assert other.status == 405


async def test_ping_healthz_and_test_alert(nats_server: NatsServer) -> None:
    nc, inbox = await subscribe(nats_server.url)
    async with running_gateway(nats_server.url) as gw, gw.client() as http:
        ping = await http.get("/ping")
        assert (ping.status, ping.body) == (200, b"pong\n")
        health = await http.get("/healthz")
        assert health.status == 200
        assert orjson.loads(health.body) == {"status": "ok"}
        test = await http.post(b"", path="/test")
        assert test.status == 200
        (msg,) = await take(inbox, 1)
    await nc.close()
    assert msg.subject == "falco.debug.test_rule"
    doc = orjson.loads(msg.data)
    assert doc["rule"] == "Test rule"
    assert doc["source"] == "internal"
    assert doc["priority"] == "Debug"


async def test_nats_down_healthz_says_so_and_alerts_are_accepted_then_delivered(
    nats_server: NatsServer,
) -> None:
    url = nats_server.url
    nats_server.stop()
    async with running_gateway(url, wait_nats=False) as gw, gw.client() as http:
        health = await http.get("/healthz")
        assert health.status == 503
        assert "NATS" in orjson.loads(health.body)["reason"]
        ready = await http.get("/readyz")
        assert (ready.status, orjson.loads(ready.body)) == (200, {"status": "accepting"})
        response = await http.post(to_falco_json(SEED))
        assert response.status == 200
        assert orjson.loads(response.body)["status"] == "accepted"
        # NATS comes up: the gateway connects on its own and delivers what it holds.
        nats_server.start()
        nc, inbox = await subscribe(url)
        (msg,) = await take(inbox, 1, timeout=15)
        assert (await http.get("/healthz")).status == 200
        await nc.close()
    assert msg.subject == "falco.notice.terminal_shell_in_container"


async def test_keep_alive_connection_serves_many_alerts(nats_server: NatsServer) -> None:
    nc, inbox = await subscribe(nats_server.url)
    count = 200
    async with running_gateway(nats_server.url) as gw:
        http = HttpClient(gw.url)
        for index in range(count):
            event = render(
                CATALOG[index % len(CATALOG)], 1_700_000_000_000_000_000 + index, "node-1"
            )
            assert (await http.post(to_falco_json(event))).status == 200
        await http.close()
        msgs = await take(inbox, count)
    await nc.close()
    assert len({m.headers[MSG_ID_HEADER] for m in msgs if m.headers}) == count
