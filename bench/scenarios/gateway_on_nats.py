"""The gateway on core NATS and on JetStream (phases `core` and `jetstream`):
HTTP and gRPC throughput, each HTTP run paired with bare Hypercorn measured just
before it, then latency and, on JetStream, the spool drain.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from bench.collector import Collector
from bench.procs import Child, python_module, wait_port
from bench.scenarios.ceilings import Ceilings
from bench.scenarios.drain import Drain
from bench.scenarios.latency import Latency
from bench.scenarios.parts import Feed, GatewayProc, GatewayUnavailable, LoadGen
from bench.stats import percentiles
from gateway.simulator.ports import free_port


class GatewayOnNats(Ceilings, Latency, Drain):
    """Phases `core` and `jetstream`: the gateway as deployed, on each kind of NATS."""

    async def core(self) -> None:
        async with (
            self.nats_server("nats-core") as server,
            self.feed() as feed,
            self.loadgen() as load,
        ):
            await self._nats_ceiling("core", server.url)
            async with (
                self.bare_server() as bare,
                self.gateway("gateway-core", server.url, feed, jetstream=False) as gw,
                self.collector(server.url) as col,
            ):
                for connections in (1, 16):
                    await self._gateway_http(gw, load, col, connections, bare)
                await self._gateway_grpc(gw, feed, col, "gateway.grpc", "gateway, gRPC")
                await self._latency_http(gw, load, col, "core")
                await self._latency_grpc(feed, col, "core")

    async def jetstream(self) -> None:
        async with (
            self.nats_server("nats-js", jetstream=True) as server,
            self.feed() as feed,
            self.loadgen() as load,
        ):
            await self._nats_ceiling("jetstream", server.url)
            try:
                async with (
                    self.gateway("gateway-js", server.url, feed, jetstream=True) as gw,
                    self.collector(server.url) as col,
                ):
                    await self._gateway_grpc(
                        gw, feed, col, "gateway.js.grpc", "gateway JetStream, gRPC"
                    )
                    await self._latency_http(gw, load, col, "js")
                    await self._latency_grpc(feed, col, "js")
                    await self._jetstream_drain(gw, feed, server)
            except GatewayUnavailable as exc:
                self.say(f"JetStream rows: n/a ({exc})")
                self.results.mark_unavailable(JETSTREAM_KEYS, f"n/a ({exc})")

    @contextlib.asynccontextmanager
    async def bare_server(self) -> AsyncIterator[int]:
        """The bare-Hypercorn ceiling's server on the measured core, idle until asked:
        measured right before each gateway HTTP run, so a ratio compares two runs
        minutes closer together than the ceilings phase and the gateway's are."""
        port = free_port()
        argv = python_module("bench.servers", "bare", "--port", str(port))
        server = await Child("paired-bare", argv, self.workdir).start(self.plan.sut)
        try:
            await wait_port(port, 60, server)
            yield port
        finally:
            await server.stop()

    async def _gateway_http(
        self, gw: GatewayProc, load: LoadGen, col: Collector, connections: int, bare: int
    ) -> None:
        s = self.sizes
        key = f"gateway.http.c{connections}"
        what = f"gateway, HTTP, {connections} conn"
        col.reset()
        await load.run(bare, connections, s.http_warmup)
        await load.run(gw.port, connections, s.http_warmup)
        await col.wait_for(s.http_warmup, self._timeout(s.http_warmup))
        for attempt in range(s.repeats):
            paired = await load.run(bare, connections, s.http_requests)
            self._check_http(f"{what} #{attempt + 1}, bare Hypercorn", s.http_requests, paired)
            col.reset()
            cpu = gw.cpu_seconds()
            result = await load.run(gw.port, connections, s.http_requests)
            arrivals = await col.wait_for(s.http_requests, self._timeout(s.http_requests))
            cpu = gw.cpu_seconds() - cpu
            self._check_http(f"{what} #{attempt + 1}", s.http_requests, result)
            self._check_arrivals(f"{what} #{attempt + 1}", s.http_requests, arrivals, "http")
            self._load_busy(what, result)
            active = (arrivals.last_ns - result["first_send_ns"]) / 1e9
            p50, p99 = percentiles(result["latencies_us"], [50, 99])
            r = self.results
            r.add(f"{key}.rate", f"{what}: alerts/s on NATS", "alerts/s", arrivals.rate)
            r.add(f"{key}.answers", f"{what}: HTTP answers/s", "req/s", result["rps"])
            r.add(f"{key}.p50", f"{what}: response p50", "ms", p50 / 1000)
            r.add(f"{key}.p99", f"{what}: response p99", "ms", p99 / 1000)
            r.add(f"{key}.busy", f"{what}: gateway core busy", "%", cpu / active * 100)
            r.add(f"{key}.cpu10k", f"{what}: CPU s per 10k", "s", cpu / s.http_requests * 1e4)
            r.add(f"{key}.paired", f"{what}: share of bare Hypercorn measured just before", "",
                  arrivals.rate / paired["rps"] if paired["rps"] else 0.0)  # fmt: skip
        paired_median = self.results.median(f"{key}.paired") or 0.0
        self.say(
            f"{what}: {self.results.median(f'{key}.rate'):,.0f} alerts/s, "
            f"{paired_median:.0%} of bare Hypercorn run alongside"
        )

    async def _gateway_grpc(
        self, gw: GatewayProc, feed: Feed, col: Collector, key: str, what: str
    ) -> None:
        s = self.sizes
        col.reset()
        await feed.burst(s.grpc_warmup)
        await col.wait_for(s.grpc_warmup, self._timeout(s.grpc_warmup))
        for attempt in range(s.repeats):
            col.reset()
            cpu = gw.cpu_seconds()
            await feed.burst(s.grpc_alerts)
            feed_cpu = feed.child.cpu_seconds()
            arrivals = await col.wait_for(s.grpc_alerts, self._timeout(s.grpc_alerts))
            cpu = gw.cpu_seconds() - cpu
            feed_cpu = feed.child.cpu_seconds() - feed_cpu
            self._check_arrivals(f"{what} #{attempt + 1}", s.grpc_alerts, arrivals, "grpc")
            active = (arrivals.last_ns - arrivals.first_ns) / 1e9
            r = self.results
            r.add(f"{key}.rate", f"{what}: alerts/s on NATS", "alerts/s", arrivals.rate)
            r.add(f"{key}.busy", f"{what}: gateway core busy", "%",
                  cpu / active * 100 if active else 0.0)  # fmt: skip
            r.add(f"{key}.cpu10k", f"{what}: CPU s per 10k", "s", cpu / s.grpc_alerts * 1e4)
            r.add(f"{key}.feed_busy", f"{what}: Falco stand-in core busy", "%",
                  feed_cpu / active * 100 if active else 0.0)  # fmt: skip
        self.say(f"{what}: {self.results.median(f'{key}.rate'):,.0f} alerts/s")


JETSTREAM_KEYS = [
    "gateway.js.grpc.rate",
    "gateway.js.grpc.busy",
    "gateway.js.grpc.cpu10k",
    "gateway.js.drain.rate",
    "gateway.js.drain.busy",
    "gateway.js.drain.cpu10k",
    "latency.js.http.p50",
    "latency.js.http.p99",
    "latency.js.grpc.p50",
    "latency.js.grpc.p99",
]
