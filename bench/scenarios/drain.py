"""The spool's backlog into JetStream: NATS away while alerts pile up, then the
rate at which the gateway moves them into the stream once it is back.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import nats
import nats.errors
import nats.js.errors

from bench.collector import connect
from bench.scenarios.parts import STREAM, Feed, GatewayProc, Parts
from gateway.simulator.nats_server import NatsServer


class Drain(Parts):
    """The spool drain into JetStream, for the jetstream phase."""

    async def _jetstream_drain(self, gw: GatewayProc, feed: Feed, server: NatsServer) -> None:
        """The publish stage alone: NATS goes away, alerts pile up in the spool, NATS
        comes back, and the time to move the backlog into the stream is measured
        from the stream's own message count."""
        s = self.sizes
        what = "gateway JetStream, spool backlog into the stream"
        for attempt in range(s.repeats):
            base = await stream_messages(server.url)
            await asyncio.to_thread(server.stop, True)
            await feed.burst(s.drain_alerts)
            spooled = await _until_metric(
                gw, "falco_nats_gateway_spool_alerts", s.drain_alerts, self._timeout(s.drain_alerts)
            )
            if spooled is None:
                self.results.mark_unavailable(
                    ["gateway.js.drain.rate"], "n/a (gateway has no spool gauge in /metrics)"
                )
                await asyncio.to_thread(server.start)
                return
            cpu = gw.cpu_seconds()
            await asyncio.to_thread(server.start)
            timing = await _watch_stream(
                server.url, base, s.drain_alerts, self._timeout(s.drain_alerts)
            )
            cpu = gw.cpu_seconds() - cpu
            self.results.check(
                f"{what} #{attempt + 1}: every spooled alert stored once",
                timing.stored == s.drain_alerts,
                f"stream grew by {timing.stored} of {s.drain_alerts}",
            )
            if timing.rate is None:
                self.warnings.append(f"{what}: backlog moved before the first look, no rate")
                continue
            r = self.results
            r.add("gateway.js.drain.rate", f"{what}: alerts/s", "alerts/s", timing.rate)
            # The CPU also covers reconnecting before the first store: an upper bound.
            r.add("gateway.js.drain.busy", f"{what}: gateway core busy", "%",
                  min(100.0, cpu / timing.elapsed * 100))  # fmt: skip
            r.add("gateway.js.drain.cpu10k", f"{what}: CPU s per 10k", "s",
                  cpu / s.drain_alerts * 1e4)  # fmt: skip
        if self.results.median("gateway.js.drain.rate") is not None:
            self.say(f"{what}: {self.results.median('gateway.js.drain.rate'):,.0f} alerts/s")


async def stream_messages(url: str) -> int:
    nc = await connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        info = await nc.jetstream(timeout=5).stream_info(STREAM)
        return int(info.state.messages)
    finally:
        await nc.close()


async def _until_metric(gw: GatewayProc, name: str, value: float, timeout: float) -> float | None:
    """Until the gateway's gauge `name` reaches `value`; None if it has no such gauge."""
    deadline = time.monotonic() + timeout
    while True:
        current = await gw.metric(name)
        if current is None or current >= value:
            return current
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} at {current} of {value} after {timeout}s")
        await asyncio.sleep(0.05)


@dataclass
class StreamTiming:
    stored: int
    rate: float | None
    elapsed: float = 0.0


async def _watch_stream(url: str, base: int, count: int, timeout: float) -> StreamTiming:
    """Poll the stream's message count every few ms until it grew by `count`; the rate
    from the first growth seen to the last."""
    deadline = time.monotonic() + timeout
    nc = None
    while nc is None:
        try:
            nc = await connect(url, connect_timeout=1, max_reconnect_attempts=0)
        except (nats.errors.Error, OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.005)
    try:
        js = nc.jetstream(timeout=2)
        first: tuple[float, int] | None = None
        stored = base
        now = time.monotonic()
        while time.monotonic() < deadline:
            try:
                stored = int((await js.stream_info(STREAM)).state.messages)
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
                await asyncio.sleep(0.005)
                continue
            now = time.monotonic()
            if stored > base and first is None:
                first = (now, stored)
            if stored >= base + count:
                break
            await asyncio.sleep(0.005)
        grew = stored - base
        if first is None or stored == first[1] or now == first[0]:
            return StreamTiming(grew, None)
        elapsed = now - first[0]
        return StreamTiming(grew, (stored - first[1]) / elapsed, elapsed)
    finally:
        await nc.close()
