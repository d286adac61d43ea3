"""Delivery guarantees against real failures: NATS killed, the gateway killed,
both ingest paths at once, a cluster node lost, a full spool."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import nats
import orjson

from gateway.event import FalcoEvent
from gateway.pipeline import MSG_ID_HEADER
from gateway.simulator.http_client import HttpClient
from gateway.simulator.wire import to_falco_json, to_grpc_response
from gateway.sinks.nats import Group
from gateway.spool import SpooledAlert
from tests.support import (
    NatsCluster,
    NatsServer,
    StartFalco,
    free_port,
    gateway_command,
    nothing_more,
    running_gateway,
    stream_ids,
    subprocess_env,
    subscribe,
    take,
    until,
    wait_for_port,
    wait_jetstream,
)
from tests.support import (
    catalog_alerts as alerts,
)

JETSTREAM = {"jetstream": True, "stream_create": True}


async def post_all(url: str, events: list[FalcoEvent], connections: int = 4) -> list[int]:
    """POST every event (like several Falcos, one request at a time each); the statuses."""
    statuses: list[int] = [0] * len(events)

    async def worker(offset: int) -> None:
        async with HttpClient(url) as http:
            for index in range(offset, len(events), connections):
                statuses[index] = (await http.post(to_falco_json(events[index]))).status

    await asyncio.gather(*(worker(i) for i in range(connections)))
    return statuses


async def test_every_alert_sent_on_both_paths_is_published_once(
    nats_server: NatsServer, socket_path: str, start_falco: StartFalco
) -> None:
    falco = await start_falco(socket_path)
    events = alerts(200)
    nc, inbox = await subscribe(nats_server.url)
    async with running_gateway(nats_server.url, falco_grpc=socket_path) as gw:
        for event in events:
            falco.emit(to_grpc_response(event))
        statuses = await post_all(gw.url, events, connections=2)
        msgs = await take(inbox, len(events))
        await nothing_more(inbox, 1.0)
        stats = gw.gateway.telemetry
        assert stats.get("duplicate") == len(events)
        assert stats.get("published") == len(events)
    await nc.close()
    await falco.stop()
    assert set(statuses) == {200}
    assert sorted(m.headers[MSG_ID_HEADER] for m in msgs if m.headers) == sorted(
        e.alert_id for e in events
    )


async def test_duplicate_answer_over_http(nats_server: NatsServer) -> None:
    event = alerts(1)[0]
    async with running_gateway(nats_server.url) as gw, gw.client() as http:
        first = await http.post(to_falco_json(event))
        second = await http.post(to_falco_json(event))
    assert orjson.loads(first.body)["status"] == "accepted"
    assert orjson.loads(second.body) == {"status": "duplicate"}


async def test_jetstream_stream_is_created_and_acked(js_server: NatsServer) -> None:
    events = alerts(500)
    async with running_gateway(js_server.url, **JETSTREAM, stream_max_age=3600) as gw:
        statuses = await post_all(gw.url, events)
        await until(
            lambda: gw.gateway.telemetry.get("published") == len(events), "JetStream acks", 20
        )
        assert gw.gateway.spool.count == 0
    assert set(statuses) == {200}
    ids = await stream_ids(js_server.url, "FALCO", len(events))
    assert sorted(ids) == sorted(e.alert_id for e in events)


async def test_a_stream_of_alerts_goes_out_in_batches_in_order(nats_server: NatsServer) -> None:
    """Alerts spooled one per turn of the event loop (a gRPC burst) are gathered into
    batches rather than published one by one, and still arrive in order, once."""
    events = alerts(64)
    nc, queue = await subscribe(nats_server.url)
    try:
        async with running_gateway(nats_server.url) as gw:
            sink = gw.gateway.sink
            send = sink.send
            batches: list[int] = []

            async def counted(batch: Sequence[SpooledAlert]) -> tuple[Group | None, int]:
                batches.append(len(batch))
                return await send(batch)

            sink.send = counted  # type: ignore[method-assign]
            for event in events:
                gw.gateway.pipeline.accept(event, "grpc")
                await asyncio.sleep(0)
            got = await take(queue, len(events))
        assert [m.headers and m.headers[MSG_ID_HEADER] for m in got] == [e.alert_id for e in events]
        assert sum(batches) == len(events)
        assert len(batches) <= len(events) // 4, batches
    finally:
        await nc.close()


async def test_alert_over_the_streams_max_msg_size_is_shortened_to_fit(
    js_server: NatsServer,
) -> None:
    """JetStream refuses a message over the stream's max_msg_size, and Falco drops
    what it is refused: the gateway learns the limit from the stream and sends the
    alert shortened to fit (its longest strings cut and marked), with the same id,
    in its place between the ones around it."""
    nc = await nats.connect(js_server.url)
    try:
        await nc.jetstream().add_stream(name="FALCO", subjects=["falco.>"], max_msg_size=4096)
    finally:
        await nc.close()
    small = alerts(2)
    big = replace(alerts(1, start=2)[0], output="x" * 8000)
    events = [small[0], big, small[1]]
    async with running_gateway(js_server.url, jetstream=True, publish_timeout=30.0) as gw:
        async with gw.client() as http:
            for event in events:
                assert (await http.post(to_falco_json(event))).status == 200
        telemetry = gw.gateway.telemetry
        await until(lambda: telemetry.get("published") == 3, "all three stored", 10)
        assert telemetry.get("undeliverable") == 0
    nc = await nats.connect(js_server.url)
    try:
        sub = await nc.jetstream().pull_subscribe("falco.>", stream="FALCO")
        stored = await sub.fetch(3, timeout=5)
    finally:
        await nc.close()
    assert [m.headers and m.headers[MSG_ID_HEADER] for m in stored] == [e.alert_id for e in events]
    shortened = orjson.loads(stored[1].data)
    assert shortened["uuid"] == big.alert_id
    assert shortened["output"].endswith("[truncated]")
    assert len(stored[1].data) < 4096


async def test_stream_that_does_not_capture_the_subjects_stops_start_up(
    js_server: NatsServer,
) -> None:
    """An existing stream whose subjects miss the alerts' would answer each of them
    "no responders" forever: the gateway refuses to start, naming both."""
    nc = await nats.connect(js_server.url)
    try:
        await nc.jetstream().add_stream(name="FALCO", subjects=["alerts.>"])
    finally:
        await nc.close()
    proc = await asyncio.create_subprocess_exec(
        *gateway_command(), "--nats-url", js_server.url,
        "--listen", f"127.0.0.1:{free_port()}", "--jetstream",
        stderr=asyncio.subprocess.PIPE, env=subprocess_env(),
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert "does not capture 'falco.emergency.rule'" in err.decode()
    assert "alerts.>" in err.decode()
    assert "Traceback" not in err.decode()


def test_missing_stream_without_creation_stops_start_up(js_server: NatsServer) -> None:
    result = subprocess.run(
        [
            *gateway_command(),
            "--nats-url", js_server.url,
            "--listen", f"127.0.0.1:{free_port()}",
            "--jetstream", "--stream-name", "ALERTS",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
    )  # fmt: skip
    assert result.returncode == 1
    assert "JetStream stream 'ALERTS' does not exist" in result.stderr
    assert "stream_create: true" in result.stderr
    assert "Traceback" not in result.stderr


async def test_nats_killed_and_restarted_under_load_loses_nothing(
    js_server: NatsServer, socket_path: str, start_falco: StartFalco
) -> None:
    """10,000 alerts split over both paths; nats-server is killed a moment in and
    started again seconds later. Every alert lands in the stream exactly once."""
    falco = await start_falco(socket_path)
    events = alerts(10_000)
    over_grpc, over_http = events[::2], events[1::2]
    async with running_gateway(js_server.url, falco_grpc=socket_path, **JETSTREAM) as gw:

        async def outage() -> None:
            await asyncio.sleep(0.5)
            js_server.stop()
            await asyncio.sleep(3)
            js_server.start()

        async def grpc_feed() -> None:
            for index, event in enumerate(over_grpc):
                falco.emit(to_grpc_response(event))
                if index % 500 == 0:
                    await asyncio.sleep(0.1)

        _, statuses, _ = await asyncio.gather(outage(), post_all(gw.url, over_http), grpc_feed())
        await until(
            lambda: gw.gateway.telemetry.get("published") == len(events), "every alert acked", 60
        )
    await falco.stop()
    assert set(statuses) == {200}, "HTTP kept answering 2xx through the outage"
    ids = await stream_ids(js_server.url, "FALCO", len(events))
    assert len(ids) == len(events), "each alert exactly once"
    assert set(ids) == {e.alert_id for e in events}


def spooled(spool_dir: Path) -> int:
    db = sqlite3.connect(spool_dir / "spool.db")
    try:
        return int(db.execute("SELECT COUNT(*) FROM spool").fetchone()[0])
    finally:
        db.close()


def start_gateway(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*gateway_command(), *args],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=subprocess_env(),
    )


async def test_gateway_killed_during_an_outage_delivers_after_restart(
    js_server: NatsServer, socket_path: str, tmp_path: Path, start_falco: StartFalco
) -> None:
    """NATS down, alerts accepted on both paths, the gateway SIGKILLed, NATS back,
    the gateway started again: every accepted alert reaches the stream."""
    spool_dir = tmp_path / "spool"
    port = free_port()
    args = [
        "--nats-url", js_server.url, "--listen", f"127.0.0.1:{port}",
        "--falco-grpc", socket_path, "--spool-dir", str(spool_dir),
        "--jetstream", "--stream-create", "--shutdown-timeout", "2",
    ]  # fmt: skip
    # The stream exists before the outage, as in production.
    first = start_gateway(args, tmp_path / "gateway.log")
    wait_for_port(port, 30)
    await wait_jetstream(js_server.url)
    async with HttpClient(f"http://127.0.0.1:{port}/") as http:
        assert (await http.post(to_falco_json(alerts(1, 99_999)[0]))).status == 200
    js_server.stop()

    falco = await start_falco(socket_path)
    events = alerts(2000)
    for event in events[:1000]:
        falco.emit(to_grpc_response(event))
    statuses = await post_all(f"http://127.0.0.1:{port}/", events[1000:])
    assert set(statuses) == {200}
    await until(lambda: spooled(spool_dir) >= len(events), "all alerts in the spool", 30)
    first.send_signal(signal.SIGKILL)
    first.wait(10)

    js_server.start()
    second = start_gateway(args, tmp_path / "gateway.log")
    try:
        wait_for_port(port, 30)
        await until(lambda: spooled(spool_dir) == 0, "the spool to empty", 60)
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        if second.poll() is None:
            second.kill()
        await falco.stop()
    ids = await stream_ids(js_server.url, "FALCO", len(events) + 1)
    assert {e.alert_id for e in events} <= set(ids)
    assert len(ids) == len(set(ids)) == len(events) + 1


async def test_sigterm_during_an_outage_exits_zero_and_keeps_the_spool(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    port = free_port()
    url = nats_server.url
    args = ["--nats-url", url, "--listen", f"127.0.0.1:{port}", "--spool-dir", str(spool_dir),
            "--shutdown-timeout", "2"]  # fmt: skip
    nats_server.stop()
    events = alerts(300)
    first = start_gateway(args, tmp_path / "gateway.log")
    try:
        wait_for_port(port, 30)
        assert set(await post_all(f"http://127.0.0.1:{port}/", events, connections=1)) == {200}
        started = time.monotonic()
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
        assert time.monotonic() - started < 20
    finally:
        if first.poll() is None:
            first.kill()
    assert spooled(spool_dir) == len(events)
    assert "undelivered alerts kept in the spool" in (tmp_path / "gateway.log").read_text()

    nats_server.start()
    nc, inbox = await subscribe(url)
    second = start_gateway(args, tmp_path / "gateway.log")
    try:
        msgs = await take(inbox, len(events), timeout=30)
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        if second.poll() is None:
            second.kill()
        await nc.close()
    # Core NATS, delivered in arrival order after the restart.
    assert [m.headers[MSG_ID_HEADER] for m in msgs if m.headers] == [e.alert_id for e in events]


async def test_cluster_node_killed_mid_stream_loses_nothing(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path).start()
    try:
        await wait_jetstream(cluster.nodes[0].url)
        events = alerts(3000)
        async with running_gateway(cluster.urls, **JETSTREAM, stream_replicas=3) as gw:
            link = gw.gateway.link
            used = next(n for n in cluster.nodes if link.server == f"127.0.0.1:{n.port}")

            async def kill_used_node() -> None:
                await until(lambda: gw.gateway.telemetry.get("published") >= 500, "traffic", 30)
                used.stop()

            _, statuses = await asyncio.gather(kill_used_node(), post_all(gw.url, events))
            assert set(statuses) == {200}
            await until(
                lambda: gw.gateway.telemetry.get("published") == len(events), "every ack", 90
            )
            assert link.server != f"127.0.0.1:{used.port}", "failed over to another node"
        survivor = next(n for n in cluster.nodes if n is not used)
        ids = await stream_ids(survivor.url, "FALCO", len(events))
    finally:
        cluster.stop()
    assert len(ids) == len(events)
    assert set(ids) == {e.alert_id for e in events}


async def test_full_spool_answers_503_counts_it_and_loses_nothing_accepted(
    nats_server: NatsServer, socket_path: str, start_falco: StartFalco
) -> None:
    url = nats_server.url
    nats_server.stop()
    falco = await start_falco(socket_path)
    events = alerts(300)
    async with (
        running_gateway(
            url,
            wait_nats=False,
            spool_max_bytes=64 * 1024,
            falco_grpc=socket_path,
            grpc_poll_interval=0.02,
        ) as gw,
        gw.client() as http,
    ):
        accepted: list[FalcoEvent] = []
        refused = []
        for event in events[:200]:
            response = await http.post(to_falco_json(event))
            if response.status == 200:
                accepted.append(event)
            else:
                refused.append(response)
        assert refused, "the spool should have filled"
        assert {r.status for r in refused} == {503}
        assert all("spool full" in orjson.loads(r.body)["error"] for r in refused)
        assert gw.gateway.telemetry.get("refused", "http") == len(refused)
        assert (await http.get("/readyz")).status == 503
        # gRPC: Falco writes all it has queued after each request, so the first
        # batch goes onto the stream at once; while full, the gateway holds that
        # stream and stops asking, so what comes later stays in Falco's queue.
        for event in events[200:250]:
            falco.emit(to_grpc_response(event))
        await asyncio.sleep(0.5)
        asked = falco.requests_seen
        for event in events[250:]:
            falco.emit(to_grpc_response(event))
        await asyncio.sleep(0.5)
        assert falco.requests_seen == asked, "the gateway kept asking Falco while full"
        assert len(falco.queue) == 50

        nats_server.start()
        nc, inbox = await subscribe(url)
        expected = {e.alert_id for e in accepted} | {e.alert_id for e in events[200:]}
        msgs = await take(inbox, len(expected), timeout=30)
        await nothing_more(inbox, 0.5)
        await nc.close()
        assert (await http.get("/readyz")).status == 200
    await falco.stop()
    assert {m.headers[MSG_ID_HEADER] for m in msgs if m.headers} == expected
