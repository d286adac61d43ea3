"""The gateway's memory over many alerts (phases `memory` and `memory-nodedup`):
RSS after every step, half over gRPC and half over HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bench.scenarios.parts import Parts


class Memory(Parts):
    """Phases `memory` and `memory-nodedup`."""

    async def memory(self) -> None:
        """RSS at start and after every step of alerts, half over gRPC and half over
        HTTP at 16 connections, on a gateway that saw nothing before."""
        series, cpu, sent = await self._memory_run("gateway-memory", ())
        self._add_memory(series, cpu, sent)

    async def memory_nodedup(self) -> None:
        """The memory run again with deduplication off (`--dedup-window 0`): what the
        difference grows by is the dedup window's memory."""
        series, _, sent = await self._memory_run("gateway-nodedup", ("--dedup-window", "0"))
        self.results.series["memory.nodedup.rss_mb"] = series
        middle = min(series, key=lambda point: abs(point[0] - sent / 2))
        self.results.add("memory.nodedup.rss_end", f"RSS after {sent:,} alerts, dedup off", "MB",
                         series[-1][1])  # fmt: skip
        self.results.add("memory.nodedup.rss_growth",
                         f"RSS growth, alert {middle[0]:,.0f} to {sent:,}, dedup off", "MB",
                         series[-1][1] - middle[1])  # fmt: skip
        self.say(f"memory, dedup off: RSS {series[0][1]:.1f} MB at start, {series[-1][1]:.1f} MB")

    async def _memory_run(
        self, name: str, extra: Sequence[str]
    ) -> tuple[list[list[float]], float, int]:
        s = self.sizes
        step = max(2, s.memory_alerts // s.memory_steps)
        async with (
            self.nats_server("nats-memory") as server,
            self.feed() as feed,
            self.loadgen() as load,
            self.gateway(name, server.url, feed, jetstream=False, extra=extra) as gw,
            self.collector(server.url) as col,
        ):
            await asyncio.sleep(1)  # let start-up allocations settle before the first reading
            series = [[0.0, gw.rss_mb()]]
            cpu = gw.cpu_seconds()
            sent = 0
            while sent < s.memory_alerts:
                size = min(step, s.memory_alerts - sent)
                half = size // 2
                col.reset()
                await feed.burst(half)
                arrivals = await col.wait_for(half, self._timeout(half))
                self._check_arrivals(f"memory, gRPC after {sent}", half, arrivals, "grpc")
                col.reset()
                result = await load.run(gw.port, 16, size - half)
                arrivals = await col.wait_for(size - half, self._timeout(size - half))
                self._check_http(f"memory, HTTP after {sent}", size - half, result)
                self._check_arrivals(f"memory, HTTP after {sent}", size - half, arrivals, "http")
                sent += size
                series.append([float(sent), gw.rss_mb()])
            cpu = gw.cpu_seconds() - cpu
        return series, cpu, sent

    def _add_memory(self, series: list[list[float]], cpu: float, sent: int) -> None:
        r = self.results
        r.series["memory.rss_mb"] = series
        middle = min(series, key=lambda point: abs(point[0] - sent / 2))
        end = series[-1][1]
        what = f"{sent:,} alerts"
        r.add("memory.rss_start", "RSS at start", "MB", series[0][1])
        r.add("memory.rss_end", f"RSS after {what}", "MB", end)
        r.add("memory.rss_peak", f"RSS, highest over {what}", "MB", max(p[1] for p in series))
        r.add("memory.rss_growth", f"RSS growth, alert {middle[0]:,.0f} to {sent:,}", "MB",
              end - middle[1])  # fmt: skip
        r.add("memory.cpu10k", f"CPU s per 10k, over {what} (half gRPC, half HTTP)", "s",
              cpu / sent * 1e4)  # fmt: skip
        r.meta["memory_alerts"] = sent
        self.say(f"memory: RSS {series[0][1]:.1f} MB at start, {end:.1f} MB after {what}")
