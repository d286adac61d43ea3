"""NATS misbehaving after start-up, against a real nats-server: an alert near
max_payload, a connection nats-py gives up for good, a stream deleted or full
while the gateway runs. Nothing accepted is lost, and nothing wedges."""

from __future__ import annotations

import asyncio
import gc
import signal
from dataclasses import replace

import nats
import orjson
import pytest

from gateway.pipeline import MSG_ID_HEADER
from gateway.simulator.wire import to_falco_json
from tests.support import (
    NatsServer,
    running_gateway,
    stream_ids,
    subscribe,
    take,
    until,
)
from tests.support import (
    catalog_alerts as alerts,
)


async def test_alert_just_under_max_payload_is_shortened_and_nothing_wedges(
    nats_server: NatsServer,
) -> None:
    """A payload under max_payload whose headers take it over: sent as it was, the
    server would drop the connection (and nats-py close it for good). It is sent
    shortened, and the alerts after it still arrive."""
    first, big, last = alerts(3)
    # 1 MiB (the server's default max_payload) less what the rest of the payload takes.
    big = replace(big, output="x" * (1024 * 1024 - 600))
    nc, queue = await subscribe(nats_server.url)
    try:
        async with running_gateway(nats_server.url) as gw:
            async with gw.client() as http:
                for event in (first, big, last):
                    assert (await http.post(to_falco_json(event))).status == 200
            got = await take(queue, 3)
            assert gw.gateway.link.reconnects == 0, "the connection was never lost"
            assert gw.gateway.telemetry.get("undeliverable") == 0
    finally:
        await nc.close()
    assert [m.headers and m.headers[MSG_ID_HEADER] for m in got] == [
        e.alert_id for e in (first, big, last)
    ]
    shortened = orjson.loads(got[1].data)
    assert shortened["output"].endswith("[truncated]")
    assert len(got[1].data) < 1024 * 1024


async def test_a_connection_nats_py_gives_up_is_opened_again(nats_server: NatsServer) -> None:
    """nats-py closes a connection for good on a server -ERR (here a message over
    max_payload sent past the gateway's checks): the gateway opens a new one and
    delivers what comes after."""
    nc, queue = await subscribe(nats_server.url)
    try:
        async with running_gateway(nats_server.url) as gw:
            link = gw.gateway.link
            client = link._nc
            assert client is not None
            # Straight to nats-py's protocol writer: the server answers -ERR and closes.
            client._max_payload = 8 * 1024 * 1024
            await client.publish("falco.notice.x", b"x" * (2 * 1024 * 1024))
            await until(lambda: client.is_closed, "nats-py closing the connection", 10)
            await until(lambda: link.connected and link._nc is not client, "a new connection", 15)
            event = alerts(1)[0]
            async with gw.client() as http:
                assert (await http.post(to_falco_json(event))).status == 200
            (msg,) = await take(queue, 1)
            assert msg.headers
            assert msg.headers[MSG_ID_HEADER] == event.alert_id
    finally:
        await nc.close()


async def test_stream_deleted_while_running_is_created_again(js_server: NatsServer) -> None:
    events = alerts(6)
    async with running_gateway(js_server.url, jetstream=True, stream_create=True) as gw:
        async with gw.client() as http:
            for event in events[:3]:
                assert (await http.post(to_falco_json(event))).status == 200
            telemetry = gw.gateway.telemetry
            await until(lambda: telemetry.get("published") == 3, "the first three stored", 10)
            nc = await nats.connect(js_server.url)
            try:
                await nc.jetstream().delete_stream("FALCO")
            finally:
                await nc.close()
            for event in events[3:]:
                assert (await http.post(to_falco_json(event))).status == 200
            await until(lambda: telemetry.get("published") == 6, "the rest stored", 20)
        assert gw.gateway.publisher.problem == ""
    # The stream was created again and holds what came after the deletion.
    ids = await stream_ids(js_server.url, "FALCO", 3)
    assert ids == [e.alert_id for e in events[3:]]


async def test_full_stream_degrades_delivery_visibly_and_loses_nothing(
    js_server: NatsServer,
) -> None:
    """A stream with discard: new that is full refuses every alert (503): the
    alerts wait in the spool, /healthz and the gauge say why, and they go out
    once the stream has room."""
    nc = await nats.connect(js_server.url)
    js = nc.jetstream()
    await js.add_stream(name="FALCO", subjects=["falco.>"], max_msgs=2, discard="new")
    events = alerts(4)
    try:
        async with (
            running_gateway(js_server.url, jetstream=True) as gw,
            gw.client() as http,
        ):
            for event in events:
                assert (await http.post(to_falco_json(event))).status == 200
            publisher = gw.gateway.publisher
            await until(lambda: "maximum messages" in publisher.problem, "degraded", 10)
            health = await http.get("/healthz")
            assert health.status == 503
            assert b"maximum messages" in health.body
            metrics = (await http.get("/metrics")).body.decode()
            assert "falco_nats_gateway_delivery_degraded 1.0" in metrics
            assert gw.gateway.spool.count == 2
            await js.purge_stream("FALCO")
            telemetry = gw.gateway.telemetry
            await until(lambda: telemetry.get("published") == 4, "the rest stored", 20)
            assert publisher.problem == ""
            assert (await http.get("/healthz")).status == 200
    finally:
        await nc.close()


async def test_nats_paused_and_resumed_delivers_everything_and_leaves_no_orphans(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """NATS stops answering (SIGSTOP) for longer than publish_timeout, then comes back
    (SIGCONT): its late PONGs must not break the client (nats-py's read loop dies on a
    PONG for a flush() that timed out), no task is left with an exception nobody
    read, and every alert arrives."""
    events = alerts(6)
    nc, queue = await subscribe(nats_server.url)
    proc = nats_server.proc
    assert proc is not None
    try:
        async with running_gateway(nats_server.url, publish_timeout=1.0) as gw:
            async with gw.client() as http:
                for event in events[:3]:
                    assert (await http.post(to_falco_json(event))).status == 200
                await take(queue, 3)
                proc.send_signal(signal.SIGSTOP)
                try:
                    for event in events[3:]:
                        assert (await http.post(to_falco_json(event))).status == 200
                    publisher = gw.gateway.publisher
                    await until(lambda: publisher.problem != "", "delivery degraded", 10)
                    await asyncio.sleep(1.5)  # more PINGs go unanswered
                finally:
                    proc.send_signal(signal.SIGCONT)
                telemetry = gw.gateway.telemetry
                await until(lambda: telemetry.get("published") == 6, "the rest confirmed", 30)
            got = await take(queue, 3, timeout=30)
            gc.collect()  # a task nobody read is reported when it is collected
    finally:
        await nc.close()
    assert {m.headers and m.headers[MSG_ID_HEADER] for m in got} >= {e.alert_id for e in events[3:]}
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "never retrieved" in m or "encountered error" in m]


async def test_a_rule_name_too_long_for_a_subject_does_not_cost_the_connection(
    nats_server: NatsServer,
) -> None:
    """The subject comes from the alert (a template may use the rule, source and
    hostname several times); past the server's max_control_line (4 KiB) the server
    would drop the connection, again on every retry. The subject is cut, the alert
    goes out."""
    event = replace(alerts(1)[0], rule="Very long rule " + "x" * 1000)
    template = "falco.<priority>." + ".".join(["<rule>"] * 5)
    nc, queue = await subscribe(nats_server.url)
    try:
        async with running_gateway(nats_server.url, subject_template=template) as gw:
            async with gw.client() as http:
                assert (await http.post(to_falco_json(event))).status == 200
            (msg,) = await take(queue, 1)
            assert gw.gateway.link.reconnects == 0
    finally:
        await nc.close()
    assert msg.subject.startswith("falco.notice.very_long_rule_xxx")
    assert len(msg.subject) <= 1024
    assert orjson.loads(msg.data)["rule"] == event.rule, "the payload keeps the whole rule"
