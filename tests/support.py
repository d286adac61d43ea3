"""Real parts for the tests: nats-server, a Falco gRPC endpoint, the gateway itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from gateway.app import Gateway
from gateway.config import Settings
from gateway.event import FalcoEvent
from gateway.simulator.alerts import CATALOG, render
from gateway.simulator.falco_server import FalcoServer
from gateway.simulator.http_client import HttpClient
from gateway.simulator.nats_server import NatsServer, wait_jetstream
from gateway.simulator.ports import ExitedEarly, free_port, wait_for_port

# Defined with the simulator (the benchmark and `make demo` start theirs there
# too); the tests take every real part from here.
__all__ = ["NatsServer", "free_port", "wait_for_port", "wait_jetstream"]

# falcosidekick's payload keys, in its order (types.FalcoPayload), tags and hostname present.
FALCOSIDEKICK_KEYS = [
    "uuid",
    "output",
    "priority",
    "rule",
    "time",
    "output_fields",
    "source",
    "tags",
    "hostname",
]


class NatsCluster:
    """Three JetStream nodes on loopback, routed to each other."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        self.nodes = [NatsServer(workdir, jetstream=True, name=f"n{i + 1}") for i in range(size)]
        for node in self.nodes:
            node.cluster_port = free_port()
        for node in self.nodes:
            node.routes = [n.cluster_port for n in self.nodes if n is not node]

    @property
    def urls(self) -> str:
        return ",".join(n.url for n in self.nodes)

    def start(self) -> NatsCluster:
        for node in self.nodes:
            node.start()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


async def stream_ids(url: str, stream: str, expected: int, timeout: float = 30.0) -> list[str]:
    """Every Nats-Msg-Id stored in `stream`, read with an ephemeral pull consumer.

    Retried whole until `timeout`: right after a cluster node dies, the stream
    may be electing a new leader and not answer yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await _read_stream_ids(url, stream, expected, deadline)
        except (nats.errors.Error, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _read_stream_ids(url: str, stream: str, expected: int, deadline: float) -> list[str]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=5)
        total = (await js.stream_info(stream)).state.messages
        sub = await js.pull_subscribe("falco.>", stream=stream)
        ids: list[str] = []
        while len(ids) < max(total, expected) and time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(500, timeout=2)
            except TimeoutError:
                if len(ids) >= total:
                    break
                continue
            for msg in msgs:
                ids.append((msg.headers or {}).get("Nats-Msg-Id", ""))
                await msg.ack()
        return ids
    finally:
        await nc.close()


async def subscribe(url: str, subject: str = "falco.>") -> tuple[Client, asyncio.Queue[Msg]]:
    nc = await nats.connect(url)
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        queue.put_nowait(msg)

    await nc.subscribe(subject, cb=on_msg)
    await nc.flush()
    return nc, queue


async def take(queue: asyncio.Queue[Msg], count: int, timeout: float = 10.0) -> list[Msg]:
    """Exactly `count` messages, or TimeoutError naming how many came."""
    got: list[Msg] = []
    try:
        async with asyncio.timeout(timeout):
            while len(got) < count:
                got.append(await queue.get())
    except TimeoutError:
        raise TimeoutError(f"received {len(got)} of {count} messages in {timeout}s") from None
    return got


async def nothing_more(queue: asyncio.Queue[Msg], wait: float = 0.5) -> None:
    """Assert that no further message arrives within `wait` seconds."""
    await asyncio.sleep(wait)
    assert queue.empty(), f"unexpected message on {queue.get_nowait().subject}"


@dataclass
class RunningGateway:
    gateway: Gateway
    task: asyncio.Task[None]
    settings: Settings

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.listen_port}/"

    def client(self) -> HttpClient:
        return HttpClient(self.url)

    async def stop(self) -> None:
        self.gateway.stop.set()
        await asyncio.wait_for(self.task, 20)


@contextlib.asynccontextmanager
async def running_gateway(
    nats_url: str, wait_nats: bool = True, **overrides: Any
) -> AsyncIterator[RunningGateway]:
    """The gateway in this event loop, on a free port, until the block ends."""
    settings = replace(
        Settings(),
        nats_url=nats_url,
        listen=f"127.0.0.1:{free_port()}",
        shutdown_timeout=5.0,
        **overrides,
    ).validate()
    gateway = Gateway(settings)
    task = asyncio.create_task(gateway.run())
    running = RunningGateway(gateway, task, settings)
    try:
        await _wait_http(settings.listen_port, task)
        if wait_nats:
            await _until(lambda: gateway.sink.connected, "NATS connection")
        yield running
    finally:
        if not task.done():
            await running.stop()
        else:
            task.result()


async def _wait_http(port: int, task: asyncio.Task[None], timeout: float = 10.0) -> None:
    try:
        await asyncio.to_thread(wait_for_port, port, timeout, task.done)
    except ExitedEarly:
        task.result()  # the gateway's own error, if it failed
        raise
    except TimeoutError:
        raise TimeoutError(f"gateway HTTP not up on {port}") from None


async def _until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout}s for {what}")
        await asyncio.sleep(0.02)


until = _until


def gateway_command() -> list[str]:
    return [sys.executable, "-m", "gateway"]


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


# The `start_falco` fixture (conftest.py): starts a Falco stand-in, stopped after the test.
StartFalco = Callable[..., Awaitable[FalcoServer]]


def catalog_alerts(count: int, start: int = 0) -> list[FalcoEvent]:
    """`count` distinct alerts from the simulator's catalogue, from three hosts, a
    nanosecond apart: the same ones on every call with the same arguments."""
    base = 1_700_000_000_000_000_000
    return [
        render(CATALOG[i % len(CATALOG)], base + i, f"node-{i % 3}")
        for i in range(start, start + count)
    ]
