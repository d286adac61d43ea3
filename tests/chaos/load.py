"""Falco-shaped load on both paths, every alert written down in the ledger.

HTTP: one POST at a time on one keep-alive connection, as Falco's http_output
does with libcurl; the status is ignored by Falco but recorded here; only a
timeout is retried (up to `max_consecutive_timeouts`, 5), any other failure
drops the alert, as Falco does. gRPC: alerts pushed into the Falco stand-in's
queue; the ledger learns the moment each one is popped onto a client's stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import replace
from typing import Any

from gateway.event import FalcoEvent
from gateway.falco_pb import outputs_pb2
from gateway.simulator.alerts import CATALOG, render
from gateway.simulator.falco_server import AlertQueue, FalcoServer
from gateway.simulator.http_client import HttpClient
from gateway.simulator.wire import to_falco_json, to_grpc_response
from tests.chaos.ledger import Ledger

MAX_CONSECUTIVE_TIMEOUTS = 5  # Falco's http_output default


class AlertMaker:
    """Alerts with times unique across both paths, so every alert has its own id
    (the id is built from time, priority and rule)."""

    def __init__(self, hostname: str = "chaos-node") -> None:
        self.hostname = hostname
        self._last = 0

    def make(self, rng: random.Random) -> FalcoEvent:
        self._last = max(time.time_ns(), self._last + 1)
        return render(rng.choice(CATALOG), self._last, self.hostname)

    def padded(self, rng: random.Random, body_bytes: int) -> FalcoEvent:
        """An alert whose http_output JSON body is exactly `body_bytes` long: its
        output text is padded (output_fields values would be cut at max_field_bytes)."""
        event = self.make(rng)
        base = len(to_falco_json(event))
        return replace(event, output=event.output + " " + "x" * max(body_bytes - base - 1, 0))


class TrackedQueue(AlertQueue):
    """Falco's queue, telling the ledger when each alert leaves it for a client."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__()
        self.ledger = ledger
        # Keyed by object identity: a queued item stays alive, so its id is unique
        # among those queued. Items pushed otherwise (emit_raw's bytes) are not tracked.
        self._ids: dict[int, str] = {}

    def push_alert(self, response: outputs_pb2.response, alert_id: str) -> None:
        self._ids[id(response)] = alert_id
        self.push(response)

    def pop(self) -> Any:  # the item type: messages, and raw bytes where emit_raw exists
        item = super().pop()
        if item is not None:
            alert_id = self._ids.pop(id(item), None)
            if alert_id is not None:
                self.ledger.handed(alert_id, time.monotonic())
        return item


class Falco:
    """The Falco stand-in on a unix socket, restartable; its queue outlives restarts
    (what it held was not handed over, so nothing in it counts as delivered)."""

    def __init__(self, address: str, ledger: Ledger) -> None:
        self.address = address
        self.ledger = ledger
        self.queue = TrackedQueue(ledger)
        self.server: FalcoServer | None = None
        self.started = 0.0

    async def start(self) -> None:
        self.server = await FalcoServer(self.address, queue=self.queue).start()
        self.started = time.monotonic()

    async def kill(self) -> None:
        """Stop at once, breaking open streams, as when Falco dies."""
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop(None)
            self.ledger.killed("falco", self.started, time.monotonic())

    async def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop(1.0)

    def emit(self, event: FalcoEvent, kind: str = "normal") -> None:
        self.ledger.sent(event.alert_id, "grpc", kind)
        self.queue.push_alert(to_grpc_response(event), event.alert_id)

    @staticmethod
    def can_emit_raw() -> bool:
        return hasattr(FalcoServer, "emit_raw")

    def emit_raw(self, data: bytes) -> None:
        """Queue one pre-serialized response, sent as is (a bad message)."""
        server = self.server
        if server is None:
            return
        server.emit_raw(data)  # type: ignore[attr-defined,unused-ignore]


async def post_like_falco(
    http: HttpClient, body: bytes, alert_id: str, ledger: Ledger, timeout: float
) -> None:
    """One alert through http_output: retried only on a timeout, dropped on any other failure."""
    for _ in range(MAX_CONSECUTIVE_TIMEOUTS + 1):
        try:
            # The client's own timeout covers the answer; this one also covers
            # writing a large body to a server that does not read it.
            response = await asyncio.wait_for(http.post(body), timeout * 2)
        except TimeoutError:
            await http.close()  # libcurl drops the connection of a timed-out transfer
            continue
        except (OSError, asyncio.IncompleteReadError, ValueError):
            await http.close()
            ledger.dropped(alert_id)
            return
        ledger.answered(alert_id, response.status)
        return
    ledger.dropped(alert_id)


async def http_sender(
    *,
    url: str,
    rate: float,
    maker: AlertMaker,
    rng: random.Random,
    ledger: Ledger,
    stop: asyncio.Event,
    timeout: float = 10.0,
) -> None:
    """One Falco's http_output at about `rate` alerts a second, until `stop`."""
    interval = 1.0 / rate
    next_at = time.monotonic()
    async with HttpClient(url, timeout=timeout) as http:
        while not stop.is_set():
            event = maker.make(rng)
            ledger.sent(event.alert_id, "http")
            await post_like_falco(http, to_falco_json(event), event.alert_id, ledger, timeout)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < -1.0:
                next_at = time.monotonic()  # fell behind (gateway down): no catch-up burst
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(delay, 0.0))


async def grpc_emitter(
    *,
    falco: Falco,
    rate: float,
    maker: AlertMaker,
    rng: random.Random,
    stop: asyncio.Event,
) -> None:
    """Falco's rule engine at about `rate` alerts a second, until `stop`; alerts
    queue in the stand-in whether or not a client is attached, as in Falco."""
    tick = 0.05
    credit = 0.0
    while not stop.is_set():
        credit += rate * tick
        while credit >= 1.0:
            falco.emit(maker.make(rng))
            credit -= 1.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), tick)
