"""The ceilings: what the parts the gateway is built from reach on their own on
this machine (bare Hypercorn, Quart, a minimal relay; a raw grpc.aio drain of the
Falco stand-in; nats-py publishing), the figures the gateway's are compared with.
"""

from __future__ import annotations

import orjson

from bench.procs import Child, python_module, run_python, wait_port
from bench.report import RELAY_LABEL
from bench.scenarios.parts import Feed, LoadGen, Parts
from bench.stats import percentiles
from gateway.simulator.http_client import HttpClient
from gateway.simulator.ports import free_port


class Ceilings(Parts):
    """The ceiling phases: the parts on their own, pinned like the gateway."""

    async def http_ceilings(self) -> None:
        async with self.loadgen() as load, self.nats_server("nats-relay") as nats_server:
            for kind, name, label in (
                ("bare", "hypercorn", "bare ASGI on Hypercorn"),
                ("quart", "quart", "Quart on Hypercorn"),
                ("relay", "relay", RELAY_LABEL),
            ):
                port = free_port()
                argv = python_module(
                    "bench.servers", kind, "--port", str(port), "--nats-url", nats_server.url
                )
                server = await Child(f"ceiling-{kind}", argv, self.workdir).start(self.plan.sut)
                try:
                    await wait_port(port, 60, server)
                    for connections in (1, 16):
                        await self._http_ceiling(
                            load, server, port, name=name, label=label, connections=connections
                        )
                finally:
                    await server.stop()

    async def _http_ceiling(
        self, load: LoadGen, server: Child, port: int, *, name: str, label: str, connections: int
    ) -> None:
        s = self.sizes
        key = f"ceiling.{name}.c{connections}"
        what = f"{label}, {connections} conn"
        await load.run(port, connections, s.http_warmup)
        for attempt in range(s.repeats):
            before = await _bodies(port)
            cpu = server.cpu_seconds()
            result = await load.run(port, connections, s.http_requests)
            cpu = server.cpu_seconds() - cpu
            arrived = await _bodies(port) - before
            self._check_http(f"{what} #{attempt + 1}", s.http_requests, result)
            self.results.check(
                f"{what} #{attempt + 1}: server read every body",
                arrived == s.http_requests,
                f"server counted {arrived} of {s.http_requests}",
            )
            self._load_busy(what, result)
            p50, p99 = percentiles(result["latencies_us"], [50, 99])
            r = self.results
            r.add(f"{key}.rate", f"{what}: requests/s", "req/s", result["rps"])
            r.add(f"{key}.p50", f"{what}: response p50", "ms", p50 / 1000)
            r.add(f"{key}.p99", f"{what}: response p99", "ms", p99 / 1000)
            r.add(f"{key}.busy", f"{what}: server core busy", "%", cpu / result["elapsed_s"] * 100)
            r.add(f"{key}.cpu10k", f"{what}: CPU s per 10k", "s", cpu / result["ok"] * 1e4)
        self.say(f"ceiling {what}: {self.results.median(f'{key}.rate'):,.0f} req/s")

    async def grpc_ceiling(self) -> None:
        s = self.sizes
        async with self.feed() as feed:
            for attempt in range(s.repeats):
                await self._grpc_drain(feed, attempt)
                await self._grpc_drain(feed, attempt, convert=True)
        self.say(f"ceiling raw grpc.aio drain: {self.results.median('ceiling.grpc.rate'):,.0f}/s")
        self.say(
            "reference, raw drain + normalizer + payload: "
            f"{self.results.median('ceiling.grpc_convert.rate'):,.0f}/s"
        )

    async def _grpc_drain(self, feed: Feed, attempt: int, convert: bool = False) -> None:
        s = self.sizes
        key = "ceiling.grpc_convert" if convert else "ceiling.grpc"
        what = "raw grpc.aio drain" + (" + normalizer + payload" if convert else "")
        argv = python_module(
            "bench.grpc_drain",
            "--address", feed.address,
            "--count", str(s.grpc_alerts),
            "--warmup", str(s.grpc_warmup),
            "--poll-interval", str(s.poll_interval),
            "--time-limit", str(self._timeout(s.grpc_alerts)),
            *(["--convert"] if convert else []),
        )  # fmt: skip
        drain = await Child("grpc-drain", argv, self.workdir).start(self.plan.sut, stdout=True)
        try:
            await drain.receive(60)
            await feed.wait_clients(1, 30)
            await feed.burst(s.grpc_warmup + s.grpc_alerts)
            # From here the stand-in only serves (it rendered the burst before
            # answering), so its CPU shows whether it, not the client, is the limit.
            feed_cpu = feed.child.cpu_seconds()
            result = await drain.receive(self._timeout(s.grpc_alerts) + 30)
            feed_cpu = feed.child.cpu_seconds() - feed_cpu
            await drain.wait(30)
        finally:
            await drain.stop(5)
        self.results.check(
            f"{what} #{attempt + 1}: every alert received",
            result["received"] == s.grpc_alerts,
            f"received {result['received']} of {s.grpc_alerts}",
        )
        r = self.results
        elapsed = result["elapsed_s"]
        r.add(f"{key}.rate", f"{what}: alerts/s", "alerts/s", result["rate"])
        r.add(f"{key}.busy", f"{what}: client core busy", "%",
              result["cpu_s"] / elapsed * 100 if elapsed else 0.0)  # fmt: skip
        if convert:
            return
        r.add("ceiling.grpc.bytes", "gRPC response size, mean", "bytes", result["mean_bytes"])
        r.add("ceiling.grpc.feed_busy", "raw grpc.aio drain: Falco stand-in core busy",
              "%", feed_cpu / elapsed * 100 if elapsed else 0.0)  # fmt: skip

    async def _nats_ceiling(self, mode: str, url: str) -> None:
        s = self.sizes
        count = s.nats_core_messages if mode == "core" else s.jetstream_messages
        key = "ceiling.nats_core.rate" if mode == "core" else "ceiling.jetstream.rate"
        label = (
            "nats-py core publish, 1 KB: msgs/s"
            if mode == "core"
            else "nats-py JetStream publish, 1 KB, 256 acks in flight: msgs/s"
        )
        for attempt in range(s.repeats):
            result = await run_python(
                f"nats-pub-{mode}",
                self.workdir,
                "bench.nats_pub",
                [mode, "--url", url, "--count", str(count), "--in-flight", "256"],
                cpus=self.plan.sut,
                timeout=self._timeout(count),
            )
            self.results.check(
                f"nats-py {mode} publish #{attempt + 1}: every message confirmed",
                result["confirmed"] == count,
                f"confirmed {result['confirmed']} of {count}",
            )
            self.results.add(key, label, "msgs/s", result["rate"])
        self.say(f"ceiling nats-py {mode}: {self.results.median(key):,.0f} msgs/s")


async def _bodies(port: int) -> int:
    async with HttpClient(f"http://127.0.0.1:{port}/", timeout=5) as http:
        response = await http.get("/stats")
    return _json_int(response.body, "bodies")


def _json_int(body: bytes, key: str) -> int:
    value = orjson.loads(body)[key]
    assert isinstance(value, int)
    return value
