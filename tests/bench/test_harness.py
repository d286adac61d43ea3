"""The harness's own parts against real servers: it counts what it sends, what
arrives, and when; no figure is judged here (no timed assertions)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import orjson
import pytest

from bench.collector import Collector
from bench.loadgen import run_load
from bench.procs import (
    Child,
    MachineClock,
    cpu_seconds,
    python_module,
    rss_bytes,
)
from bench.procs import wait_port as wait_listening
from gateway.simulator.http_client import HttpClient
from gateway.simulator.nats_server import NatsServer
from gateway.simulator.ports import free_port
from gateway.timefmt import format_rfc3339_ns


@pytest.fixture
async def bare_server(tmp_path: Path) -> AsyncIterator[int]:
    """The bare-Hypercorn ceiling server, as the benchmark starts it."""
    port = free_port()
    child = Child("bare", python_module("bench.servers", "bare", "--port", str(port)), tmp_path)
    await child.start()
    try:
        await wait_listening(port, 30, child)
        yield port
    finally:
        await child.stop(5)


async def _bodies(port: int) -> int:
    async with HttpClient(f"http://127.0.0.1:{port}/") as http:
        body = orjson.loads((await http.get("/stats")).body)
    assert isinstance(body["bodies"], int)
    return body["bodies"]


async def test_load_generator_sends_exactly_its_count(bare_server: int) -> None:
    result = await run_load("127.0.0.1", bare_server, connections=4, count=300, warmup=20)
    assert result.sent == 300
    assert result.ok == 300
    assert len(result.latencies_us) == 300
    assert not result.errors
    assert await _bodies(bare_server) == 320  # the warm-up reached the server too


async def test_relay_reference_publishes_each_alert_and_refuses_other_bodies(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path, name="nats-relay").start()
    port = free_port()
    argv = python_module("bench.servers", "relay", "--port", str(port), "--nats-url", server.url)
    child = Child("relay", argv, tmp_path)
    nc = await nats.connect(server.url)
    try:
        sub = await nc.subscribe("falco.>")
        await nc.flush()
        await child.start()
        await wait_listening(port, 30, child)
        result = await run_load("127.0.0.1", port, connections=2, count=50)
        assert result.ok == 50
        async with HttpClient(f"http://127.0.0.1:{port}/") as http:
            refused = await http.post(b'{"not": "an alert"}')
        assert refused.status == 400
        subjects = [(await sub.next_msg(timeout=5)).subject for _ in range(50)]
        assert all(subject.startswith("falco.") for subject in subjects)
        assert await _bodies(port) == 50
    finally:
        await nc.close()
        await child.stop(5)
        server.stop()


async def test_load_generator_reconnects_when_hypercorn_ends_keep_alive(bare_server: int) -> None:
    """Hypercorn closes a keep-alive connection after 1000 requests; like libcurl,
    the generator opens a new one and loses nothing."""
    result = await run_load("127.0.0.1", bare_server, connections=1, count=1050)
    assert result.ok == 1050
    assert result.reconnects >= 1
    assert await _bodies(bare_server) == 1050


async def test_paced_load_stamps_each_alert_with_its_due_time(bare_server: int) -> None:
    result = await run_load("127.0.0.1", bare_server, connections=1, count=50, rate=500)
    assert result.ok == 50
    assert len(result.due_ns) == len(result.sent_ns) == 50
    steps = {b - a for a, b in zip(result.due_ns, result.due_ns[1:], strict=False)}
    assert steps == {2_000_000}  # 500/s: one every 2 ms
    assert all(
        sent >= due - 1_000_000 for due, sent in zip(result.due_ns, result.sent_ns, strict=True)
    )


async def test_collector_counts_ids_paths_and_latency(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, name="nats").start()
    try:
        collector = await Collector().connect(server.url)
        nc = await nats.connect(server.url)
        try:
            collector.reset(latency=True)
            emitted = time.time_ns() - 2_000_000  # 2 ms ago
            for index in range(5):
                payload = orjson.dumps({"time": format_rfc3339_ns(emitted + index)})
                headers = {"Nats-Msg-Id": f"id-{index % 4}", "Falco-Gateway-Path": "grpc"}
                await nc.publish("falco.notice.x", payload, headers=headers)
            await nc.flush()
            arrivals = await collector.wait_for(5, 10)
        finally:
            await nc.close()
            await collector.close()
    finally:
        server.stop()
    assert arrivals.count == 5
    assert arrivals.duplicates == 1  # id-0 came twice
    assert dict(arrivals.paths) == {"grpc": 5}
    assert len(arrivals.latencies_us) == 5
    assert all(latency >= 2000 for latency in arrivals.latencies_us)
    assert arrivals.timings[0][0] == emitted


async def test_collector_gives_up_when_nothing_comes(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, name="nats").start()
    try:
        collector = await Collector().connect(server.url)
        try:
            arrivals = await collector.wait_for(3, timeout=5, idle=0.2)
        finally:
            await collector.close()
    finally:
        server.stop()
    assert arrivals.count == 0
    assert arrivals.rate == 0


def test_proc_readings_of_this_process() -> None:
    import os

    assert cpu_seconds(os.getpid()) > 0
    assert rss_bytes(os.getpid()) > 10 * 1024 * 1024
    before = MachineClock.now()
    sum(range(200_000))
    foreign, share, stolen = MachineClock.now().others_since(before)
    assert foreign >= 0
    assert share >= 0
    assert stolen >= 0


@pytest.mark.parametrize("convert", [False, True], ids=["raw", "convert"])
async def test_feed_serves_falco_semantics_to_a_grpc_client(tmp_path: Path, convert: bool) -> None:
    """The Falco stand-in queues a burst; the raw drain client takes all of it (and,
    as the reference, also through the gateway's normalizer and payload)."""
    import tempfile

    address = f"unix://{tempfile.mkdtemp(prefix='fng-')}/falco.sock"
    feed = Child("feed", python_module("bench.falco_feed", "--address", address), tmp_path)
    await feed.start(stdin=True, stdout=True)
    try:
        assert (await feed.receive(30))["op"] == "ready"
        argv = python_module("bench.grpc_drain", "--address", address, "--count", "40",
                             "--warmup", "10", "--time-limit", "30",
                             *(["--convert"] if convert else []))  # fmt: skip
        drain = await Child("drain", argv, tmp_path).start(stdout=True)
        assert (await drain.receive(30))["op"] == "ready"
        while (await feed.ask({"op": "status"}, 10))["clients"] < 1:
            await asyncio.sleep(0.05)
        assert (await feed.ask({"op": "burst", "count": 50}, 30))["queued"] == 50
        result = await drain.receive(30)
        assert await drain.wait(10) == 0
        assert result["received"] == 40  # the ten warm-up alerts are not counted
        assert (await feed.ask({"op": "status"}, 10))["queued"] == 0
    finally:
        await feed.send({"op": "quit"})
        await feed.stop(5)
