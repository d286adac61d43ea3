"""The gRPC source against a Falco-faithful server on a real unix socket."""

from __future__ import annotations

import asyncio

import orjson

from gateway.falco_pb import outputs_pb2, schema_pb2
from gateway.pipeline import MSG_ID_HEADER, PATH_HEADER
from gateway.simulator.alerts import CATALOG, render, stream
from gateway.simulator.falco_server import AlertQueue
from gateway.simulator.wire import to_grpc_response
from tests.support import (
    NatsServer,
    StartFalco,
    nothing_more,
    running_gateway,
    subscribe,
    take,
    until,
)

SEED = render(CATALOG[0], 1_612_815_555_325_119_960, "minikube")


async def test_seed_alert_over_grpc(
    nats_server: NatsServer, socket_path: str, start_falco: StartFalco
) -> None:
    falco = await start_falco(socket_path)
    nc, inbox = await subscribe(nats_server.url)
    async with running_gateway(nats_server.url, falco_grpc=socket_path) as gw:
        await until(
            lambda: gw.gateway.grpc is not None and gw.gateway.grpc.state.state == "connected",
            "gRPC",
        )
        assert gw.gateway.grpc is not None
        assert gw.gateway.grpc.falco_version == "0.43.1"
        falco.emit(to_grpc_response(SEED))
        (msg,) = await take(inbox, 1)
    await nc.close()
    await falco.stop()
    assert msg.subject == "falco.notice.terminal_shell_in_container"
    assert msg.headers is not None
    assert msg.headers[PATH_HEADER] == "grpc"
    assert msg.headers[MSG_ID_HEADER] == SEED.alert_id
    doc = orjson.loads(msg.data)
    # gRPC carries output fields as text; consumers see the same types as over HTTP.
    assert doc["output_fields"]["proc.tty"] == 34816
    assert doc["output_fields"]["user.loginuid"] == -1
    assert doc["output_fields"]["user.name"] == "root"
    assert doc["time"] == "2021-02-08T20:19:15.32511996Z"  # Go's RFC3339Nano, as falcosidekick
    assert doc["tags"] == list(SEED.tags)


async def test_alerts_queued_before_the_gateway_came_are_delivered(
    nats_server: NatsServer, socket_path: str, start_falco: StartFalco
) -> None:
    falco = await start_falco(socket_path)
    events = list(stream("node-1", 50))
    for event in events:
        falco.emit(to_grpc_response(event))
    nc, inbox = await subscribe(nats_server.url)
    async with running_gateway(nats_server.url, falco_grpc=socket_path):
        msgs = await take(inbox, len(events))
        await nothing_more(inbox, 0.3)
    await nc.close()
    await falco.stop()
    assert [m.headers[MSG_ID_HEADER] for m in msgs if m.headers] == [e.alert_id for e in events]


async def test_alert_after_an_idle_gap_is_still_delivered_promptly(
    nats_server: NatsServer, socket_path: str, start_falco: StartFalco
) -> None:
    """Falco stops writing when its queue runs dry until the client asks again:
    the client must keep asking, and an alert after an idle spell must flow."""
    falco = await start_falco(socket_path)
    nc, inbox = await subscribe(nats_server.url)
    async with running_gateway(nats_server.url, falco_grpc=socket_path, grpc_poll_interval=0.05):
        falco.emit(to_grpc_response(SEED))
        await take(inbox, 1)
        requests_before = falco.requests_seen
        # Idle, nothing queued: the client must go on asking (40 polls, about 2 s).
        await until(
            lambda: falco.requests_seen > requests_before + 40, "the client to keep asking Falco"
        )
        later = render(CATALOG[1], SEED.time_ns + 3_000_000_000, "minikube")
        falco.emit(to_grpc_response(later))
        (msg,) = await take(inbox, 1, timeout=2)
    await nc.close()
    await falco.stop()
    assert msg.subject == "falco.warning.read_sensitive_file_untrusted"


async def test_falco_restart_is_survived_without_restarting_the_gateway(
    nats_server: NatsServer, socket_path: str, start_falco: StartFalco
) -> None:
    falco = await start_falco(socket_path)
    nc, inbox = await subscribe(nats_server.url)
    async with running_gateway(nats_server.url, falco_grpc=socket_path) as gw:
        source = gw.gateway.grpc
        assert source is not None
        falco.emit(to_grpc_response(SEED))
        await take(inbox, 1)
        await falco.stop()  # Falco dies: streams break
        await until(lambda: source.state.state == "unavailable", "the source to notice", 10)
        await asyncio.sleep(1)  # a few failed reconnects
        falco = await start_falco(socket_path)  # a new Falco, a new queue
        await until(lambda: source.state.state == "connected", "reconnect", 15)
        after = render(CATALOG[2], SEED.time_ns + 1, "minikube")
        falco.emit(to_grpc_response(after))
        (msg,) = await take(inbox, 1)
        await nothing_more(inbox, 0.3)
    await nc.close()
    await falco.stop()
    assert msg.subject == "falco.critical.drop_and_execute_new_binary_in_container"


async def test_falco_absent_at_start_then_appears(
    nats_server: NatsServer, socket_path: str, start_falco: StartFalco
) -> None:
    nc, inbox = await subscribe(nats_server.url)
    async with running_gateway(nats_server.url, falco_grpc=socket_path) as gw:
        source = gw.gateway.grpc
        assert source is not None
        await until(lambda: source.state.state == "unavailable", "the first failed attempt")
        await asyncio.sleep(1.5)
        falco = await start_falco(socket_path)
        falco.emit(to_grpc_response(SEED))
        (msg,) = await take(inbox, 1, timeout=15)
    await nc.close()
    await falco.stop()
    assert msg.subject == "falco.notice.terminal_shell_in_container"


async def test_state_changes_are_logged_once_not_per_retry(
    nats_server: NatsServer, socket_path: str, caplog: object
) -> None:
    import logging

    import pytest

    assert isinstance(caplog, pytest.LogCaptureFixture)
    caplog.set_level(logging.INFO, logger="gateway.grpc")
    async with running_gateway(nats_server.url, falco_grpc=socket_path) as gw:
        await asyncio.sleep(3)  # Falco absent: many retries
        source = gw.gateway.grpc
        assert source is not None
    unavailable = [r for r in caplog.records if r.getMessage() == "falco-grpc unavailable"]
    assert len(unavailable) == 1


async def test_malformed_grpc_alert_is_counted_and_the_stream_goes_on(
    nats_server: NatsServer, socket_path: str, start_falco: StartFalco
) -> None:
    falco = await start_falco(socket_path)
    nc, inbox = await subscribe(nats_server.url)
    bad = outputs_pb2.response(rule="No time", priority=schema_pb2.NOTICE)
    unknown_priority = to_grpc_response(SEED)
    unknown_priority.priority = 42  # type: ignore[assignment]
    async with running_gateway(nats_server.url, falco_grpc=socket_path) as gw:
        falco.emit(bad)
        falco.emit(unknown_priority)
        falco.emit(to_grpc_response(SEED))
        (msg,) = await take(inbox, 1)
        assert gw.gateway.telemetry.get("rejected", "grpc") == 2
    await nc.close()
    await falco.stop()
    assert msg.subject == "falco.notice.terminal_shell_in_container"


async def test_alerts_wait_in_falco_while_nats_is_down(
    nats_server: NatsServer, socket_path: str, start_falco: StartFalco
) -> None:
    """With NATS gone and nats-py's buffer unusable, the gRPC source holds the
    stream instead of dropping: alerts are published once NATS returns."""
    falco = await start_falco(socket_path)
    url = nats_server.url
    nats_server.stop()
    async with running_gateway(url, wait_nats=False, falco_grpc=socket_path):
        events = list(stream("node-1", 20))
        for event in events:
            falco.emit(to_grpc_response(event))
        await asyncio.sleep(1.5)
        nats_server.start()
        nc, inbox = await subscribe(url)
        msgs = await take(inbox, len(events), timeout=20)
        await nc.close()
    await falco.stop()
    assert [m.headers[MSG_ID_HEADER] for m in msgs if m.headers] == [e.alert_id for e in events]


def test_queue_is_shared_and_pops_once() -> None:
    queue = AlertQueue()
    queue.push(to_grpc_response(SEED))
    assert len(queue) == 1
    assert queue.pop() is not None
    assert queue.pop() is None
