"""The NATS subscriber that counts what the gateway published.

Throughput is measured here, at the far end, not from HTTP 200s: an alert
counts when a subscriber of `falco.>` has it. Each message's Nats-Msg-Id is
kept, so a lost or doubled alert shows up as a count that does not add up;
in latency mode the alert's own `time` (set when it was emitted) is read
from the payload and compared with the clock at arrival.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import nats
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg

from gateway.timefmt import parse_rfc3339_ns

PATH_HEADER = "Falco-Gateway-Path"
ID_HEADER = "Nats-Msg-Id"


@dataclass
class Arrivals:
    """What arrived during one measurement."""

    count: int = 0
    first_ns: int = 0
    last_ns: int = 0
    ids: set[str] = field(default_factory=set)
    paths: Counter[str] = field(default_factory=Counter)
    # (alert time, arrival time) in ns: the latency is their difference.
    timings: list[tuple[int, int]] = field(default_factory=list)
    unreadable: int = 0

    @property
    def latencies_us(self) -> list[float]:
        return [(arrived - emitted) / 1000 for emitted, arrived in self.timings]

    @property
    def rate(self) -> float:
        """Alerts/s from the first arrival to the last (the first starts the clock)."""
        elapsed = (self.last_ns - self.first_ns) / 1e9
        return (self.count - 1) / elapsed if elapsed > 0 and self.count > 1 else 0.0

    @property
    def duplicates(self) -> int:
        return self.count - len(self.ids)


async def _ignore(_exc: Exception) -> None:
    """nats-py prints every failed reconnect attempt unless given an error callback;
    the benchmark stops NATS on purpose and checks the outcome by counting."""


async def connect(url: str, **options: Any) -> Client:
    """A nats-py connection that keeps quiet about NATS going away."""
    return await nats.connect(url, error_cb=_ignore, **options)


class Collector:
    def __init__(self) -> None:
        self.nc: Client | None = None
        self.current = Arrivals()
        self.latency = False
        self._changed = asyncio.Event()

    async def connect(self, url: str, subject: str = "falco.>") -> Collector:
        self.nc = await connect(
            url,
            name="bench-collector",
            # Counting must not stall on the client's own limits at bursts of 30k.
            pending_size=256 * 1024 * 1024,
            reconnect_time_wait=0.1,
            max_reconnect_attempts=-1,
        )
        await self.nc.subscribe(
            subject,
            cb=self._on_message,
            pending_msgs_limit=1_000_000,
            pending_bytes_limit=1024 * 1024 * 1024,
        )
        await self.nc.flush()
        return self

    def reset(self, latency: bool = False) -> None:
        self.current = Arrivals()
        self.latency = latency

    async def _on_message(self, msg: Msg) -> None:
        now = time.time_ns()
        arrivals = self.current
        if not arrivals.count:
            arrivals.first_ns = now
        arrivals.count += 1
        arrivals.last_ns = now
        headers = msg.headers or {}
        arrivals.ids.add(headers.get(ID_HEADER, ""))
        arrivals.paths[headers.get(PATH_HEADER, "")] += 1
        if self.latency:
            try:
                emitted = parse_rfc3339_ns(orjson.loads(msg.data)["time"])
            except (ValueError, KeyError, TypeError):
                arrivals.unreadable += 1
            else:
                arrivals.timings.append((emitted, now))
        self._changed.set()

    async def wait_for(self, count: int, timeout: float, idle: float = 5.0) -> Arrivals:
        """Until `count` alerts arrived, `timeout` passed, or nothing came for `idle` s."""
        deadline = time.monotonic() + timeout
        while self.current.count < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, idle))
            except TimeoutError:
                break
        return self.current

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()
        self.nc = None
