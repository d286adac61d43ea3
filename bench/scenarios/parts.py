"""The benchmark's phases: the ceilings, the gateway on core NATS and on JetStream,
and its memory over many alerts.

Every figure is repeated `Sizes.repeats` times after an untimed warm-up; the
gateway is one long-lived subprocess per phase (as deployed), its CPU and RSS
read from /proc. Alerts/s of the gateway are counted at a NATS subscriber;
every run checks that exactly what was sent arrived, once, by the right path.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import orjson

from bench.collector import Arrivals, Collector, connect
from bench.procs import (
    Child,
    ChildFailed,
    CpuPlan,
    MachineClock,
    python_module,
    run_python,
    wait_port,
)
from bench.profile import py_spy, summarise
from bench.profile import render as render_profile
from bench.report import RELAY_LABEL
from bench.results import Results
from bench.stats import percentiles
from gateway.simulator.http_client import HttpClient
from gateway.simulator.nats_server import NatsServer
from gateway.simulator.ports import free_port

PHASES = ("http-ceilings", "grpc-ceiling", "core", "jetstream", "memory")
# Not run unless asked for: they answer questions about the figures, and take time.
EXTRA_PHASES = ("memory-nodedup", "profile")
STREAM = "FALCO"
MB = 1024 * 1024
# A load generator busier than this may be what limits a figure, not the server.
LOAD_BUSY_WARNING = 0.9
# Other work on the machine above this share of its CPU makes a phase's figures suspect.
BACKGROUND_WARNING = 0.03


@dataclass(frozen=True)
class Sizes:
    """How much each figure sends. `scaled` multiplies the counts (BENCH_SCALE)."""

    repeats: int = 3
    http_requests: int = 6_000
    http_warmup: int = 1_000
    grpc_alerts: int = 20_000
    grpc_warmup: int = 2_000
    nats_core_messages: int = 200_000
    jetstream_messages: int = 30_000
    latency_rate: float = 1_000.0
    latency_seconds: float = 3.0
    drain_alerts: int = 15_000
    memory_alerts: int = 100_000
    memory_steps: int = 10
    poll_interval: float = 0.1

    @classmethod
    def quick(cls) -> Sizes:
        """Tiny sizes: checks that the harness works, not how fast anything is."""
        return cls(
            repeats=1,
            http_requests=200,
            http_warmup=20,
            grpc_alerts=300,
            grpc_warmup=20,
            nats_core_messages=2_000,
            jetstream_messages=300,
            latency_seconds=0.3,
            drain_alerts=200,
            memory_alerts=400,
            memory_steps=2,
        )

    def scaled(self, factor: float) -> Sizes:
        counts = {
            f.name: max(1, round(getattr(self, f.name) * factor))
            for f in fields(self)
            if f.name.endswith(("_requests", "_warmup", "_alerts", "_messages"))
        }
        return replace(self, latency_seconds=self.latency_seconds * factor, **counts)


class GatewayUnavailable(Exception):
    """The gateway refused the mode asked for (exit code 2 on its flags)."""


class Feed:
    """The Falco stand-in process (bench.falco_feed) on the load cores."""

    def __init__(self, child: Child, address: str) -> None:
        self.child = child
        self.address = address

    async def status(self) -> dict[str, Any]:
        return await self.child.ask({"op": "status"}, 10)

    async def burst(self, count: int) -> dict[str, Any]:
        return await self.child.ask({"op": "burst", "count": count}, 60 + count / 1000)

    async def paced(self, count: int, rate: float) -> dict[str, Any]:
        return await self.child.ask(
            {"op": "paced", "count": count, "rate": rate}, 60 + count / rate * 2
        )

    async def wait_clients(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (await self.status())["clients"] < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no gRPC client on the Falco stand-in after {timeout}s")
            await asyncio.sleep(0.05)


class LoadGen:
    """The HTTP load generator process (bench.loadgen --commands) on the load cores."""

    def __init__(self, child: Child) -> None:
        self.child = child

    async def run(
        self, port: int, connections: int, count: int, rate: float = 0.0
    ) -> dict[str, Any]:
        limit = 120.0 + (count / rate if rate else 0.0)
        command = {
            "op": "run",
            "port": port,
            "connections": connections,
            "count": count,
            "rate": rate,
            "time_limit": limit,
        }
        return await self.child.ask(command, limit + 30)


class GatewayProc:
    """`python -m gateway` as deployed, on the measured core."""

    def __init__(
        self, workdir: Path, name: str, command: Sequence[str], args: Sequence[str]
    ) -> None:
        self.port = free_port()
        argv = [*command, "--listen", f"127.0.0.1:{self.port}", *args]
        self.child = Child(name, argv, workdir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def cpu_seconds(self) -> float:
        return self.child.cpu_seconds()

    def rss_mb(self) -> float:
        return self.child.rss_bytes() / MB

    async def get(self, path: str) -> tuple[int, bytes]:
        async with HttpClient(self.url, timeout=5) as http:
            response = await http.get(path)
        return response.status, response.body

    async def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.child.returncode is not None:
                raise ChildFailed(self.child, f"exited with {self.child.returncode}")
            with contextlib.suppress(OSError, TimeoutError):
                if (await self.get("/healthz"))[0] == 200:
                    return
            if time.monotonic() > deadline:
                raise ChildFailed(self.child, f"/healthz not 200 after {timeout}s")
            await asyncio.sleep(0.05)

    async def metric(self, name: str) -> float | None:
        """One unlabelled sample from /metrics, None when the gateway has no such metric."""
        status, body = await self.get("/metrics")
        if status != 200:
            return None
        match = re.search(rf"^{re.escape(name)} (\S+)$", body.decode(), re.MULTILINE)
        return float(match.group(1)) if match else None


class Bench:
    def __init__(
        self,
        sizes: Sizes,
        plan: CpuPlan,
        workdir: Path,
        results: Results,
        say: Callable[[str], None],
        *,
        out_dir: Path | None = None,
    ) -> None:
        self.out_dir = out_dir or workdir
        self.wait_quiet = 0.0  # seconds to wait for other processes to leave the CPU
        # The gateway as deployed; tests put a stand-in here.
        self.gateway_command: list[str] = python_module("gateway")
        self.sizes = sizes
        self.plan = plan
        self.workdir = workdir
        self.results = results
        self.say = say
        self.warnings: list[str] = results.meta.setdefault("warnings", [])
        self.errors: list[str] = results.meta.setdefault("errors", [])
        self._sockets = 0

    async def run(self, phases: Sequence[str]) -> None:
        steps = {
            "http-ceilings": self.http_ceilings,
            "grpc-ceiling": self.grpc_ceiling,
            "core": self.core,
            "jetstream": self.jetstream,
            "memory": self.memory,
            "memory-nodedup": self.memory_nodedup,
            "profile": self.profile,
        }
        background: dict[str, dict[str, float]] = self.results.meta.setdefault("background", {})
        for phase in phases:
            if self.wait_quiet:
                await self._until_quiet()
            before = MachineClock.now()
            try:
                await steps[phase]()
            except (ChildFailed, TimeoutError, OSError, RuntimeError, nats.errors.Error) as exc:
                # One broken phase should not cost the figures of the others.
                error = f"phase {phase}: {type(exc).__name__}: {exc}"
                self.errors.append(error)
                self.say(f"failed: {error}")
            finally:
                # Every child of the phase has been reaped here, so its CPU counts as ours.
                foreign, share, stolen = MachineClock.now().others_since(before)
                background[phase] = {"cpu_s": foreign, "share": share, "steal_share": stolen}
                if share > BACKGROUND_WARNING or stolen > BACKGROUND_WARNING:
                    self.warnings.append(
                        f"phase {phase}: other processes used {share:.0%} of the machine's CPU "
                        f"and the hypervisor took {stolen:.0%}; its figures are disturbed"
                    )

    async def _until_quiet(self) -> None:
        """On a shared machine: wait (up to `wait_quiet` s) until others leave the CPU."""
        deadline = time.monotonic() + self.wait_quiet
        while True:
            before = MachineClock.now()
            await asyncio.sleep(1)
            _, share, stolen = MachineClock.now().others_since(before)
            if share + stolen <= BACKGROUND_WARNING:
                return
            if time.monotonic() > deadline:
                self.say(f"the machine is still busy ({share + stolen:.0%}); measuring anyway")
                return
            self.say(f"waiting for a quiet machine: other processes use {share + stolen:.0%}")

    # --- the parts every phase uses -------------------------------------------------

    @contextlib.asynccontextmanager
    async def nats_server(self, name: str, jetstream: bool = False) -> AsyncIterator[NatsServer]:
        # Started from a thread: the driver's loop (a collector, a feed) runs on. The
        # server inherits the driver's CPU mask, the load side.
        server = NatsServer(self.workdir, jetstream, name)
        await asyncio.to_thread(server.start)
        try:
            if jetstream:
                await wait_jetstream(server.url)
            yield server
        finally:
            await asyncio.to_thread(server.stop, True)

    @contextlib.asynccontextmanager
    async def feed(self) -> AsyncIterator[Feed]:
        self._sockets += 1
        # A short path: unix socket paths are limited to about 107 bytes.
        address = f"unix://{self.workdir}/falco{self._sockets}.sock"
        child = Child(
            "falco-feed", python_module("bench.falco_feed", "--address", address), self.workdir
        )
        await child.start(stdin=True, stdout=True)
        try:
            await child.receive(60)
            yield Feed(child, address)
        finally:
            with contextlib.suppress(OSError, ChildFailed):
                await child.send({"op": "quit"})
            await child.stop(5)

    @contextlib.asynccontextmanager
    async def loadgen(self) -> AsyncIterator[LoadGen]:
        child = Child("loadgen", python_module("bench.loadgen", "--commands"), self.workdir)
        await child.start(stdin=True, stdout=True)
        try:
            await child.receive(60)
            yield LoadGen(child)
        finally:
            with contextlib.suppress(OSError, ChildFailed):
                await child.send({"op": "quit"})
            await child.stop(5)

    @contextlib.asynccontextmanager
    async def gateway(
        self, name: str, nats_url: str, feed: Feed, jetstream: bool, extra: Sequence[str] = ()
    ) -> AsyncIterator[GatewayProc]:
        args = ["--nats-url", nats_url, "--falco-grpc", feed.address, *extra]
        args += ["--grpc-poll-interval", str(self.sizes.poll_interval)]
        if jetstream:
            args += ["--jetstream", "true", "--stream-create", "true", "--stream-name", STREAM]
        gw = GatewayProc(self.workdir, name, self.gateway_command, args)
        await gw.child.start(self.plan.sut)
        try:
            try:
                await wait_port(gw.port, 60, gw.child)
            except ChildFailed:
                if jetstream and gw.child.returncode == 2:
                    # Exit code 2 is the gateway refusing its flags or settings.
                    last = gw.child.log_tail(1).strip()
                    self.warnings.append(f"the gateway refused the JetStream flags: {last}")
                    raise GatewayUnavailable("gateway has no JetStream mode") from None
                raise
            await gw.wait_healthy(30)
            await feed.wait_clients(1, 30)
            yield gw
        finally:
            running = gw.child.returncode is None
            code = await gw.child.stop(20)
            if running and code not in (0, None):
                self.warnings.append(f"{name} exited with {code} on SIGTERM")

    @contextlib.asynccontextmanager
    async def collector(self, url: str) -> AsyncIterator[Collector]:
        collector = await Collector().connect(url)
        try:
            yield collector
        finally:
            await collector.close()

    def _timeout(self, count: int) -> float:
        # Generous: the bound only stops a stuck run, it does not judge speed.
        return 60 + count / 500

    def _load_busy(self, what: str, result: dict[str, Any]) -> None:
        busy = result["cpu_s"] / result["wall_s"] if result["wall_s"] else 0.0
        if busy > LOAD_BUSY_WARNING and self.plan.pinned:
            self.warnings.append(f"{what}: load generator {busy:.0%} busy, may limit the figure")

    def _check_http(self, what: str, count: int, result: dict[str, Any]) -> None:
        ok = result["sent"] == count and result["ok"] == count and not result["error_count"]
        detail = (
            f"sent {result['sent']} of {count}, {result['ok']} answered 2xx, "
            f"statuses {result['statuses']}, {result['error_count']} errors {result['errors']}"
        )
        self.results.check(f"{what}: every request answered 2xx", ok, detail)

    def _check_arrivals(self, what: str, count: int, arrivals: Arrivals, path: str) -> None:
        ok = (
            arrivals.count == count
            and arrivals.duplicates == 0
            and set(arrivals.paths) == {path}
            and not arrivals.unreadable
        )
        detail = (
            f"{arrivals.count} of {count} arrived, {arrivals.duplicates} duplicate ids, "
            f"paths {dict(arrivals.paths)}, {arrivals.unreadable} unreadable"
        )
        self.results.check(f"{what}: every alert on NATS once", ok, detail)

    # --- ceilings ---------------------------------------------------------------------

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

    # --- the gateway ------------------------------------------------------------------

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

    async def _latency_http(
        self, gw: GatewayProc, load: LoadGen, col: Collector, mode: str
    ) -> None:
        s = self.sizes
        count = max(1, round(s.latency_rate * s.latency_seconds))
        key = f"latency.{mode}.http"
        what = f"end to end, HTTP, {_MODE[mode]}, {s.latency_rate:,.0f}/s"
        late = 0
        for attempt in range(s.repeats):
            col.reset(latency=True)
            result = await load.run(gw.port, 1, count, rate=s.latency_rate)
            arrivals = await col.wait_for(count, self._timeout(count))
            self._check_http(f"{what} #{attempt + 1}", count, result)
            self._check_arrivals(f"{what} #{attempt + 1}", count, arrivals, "http")
            late += result["behind_schedule"]
            self._add_latency(key, what, arrivals)
            # The same alerts timed from the moment their POST went out: the gateway's
            # own share, without the wait behind a slow answer to the previous one.
            sent = dict(zip(result["due_ns"], result["sent_ns"], strict=True))
            from_send = [(a - sent[e]) / 1000 for e, a in arrivals.timings if e in sent]
            if from_send:
                (p99,) = percentiles(from_send, [99])
                self.results.add(f"{key}.send_p99", f"{what}: p99 from the send", "ms", p99 / 1000)
            # Without the load generator's own lateness: it shares its core with
            # nats-server and the subscriber, and a POST it sends late through no fault
            # of the gateway's (the previous answer had come) is its delay, not the
            # gateway's. Waiting behind a slow previous answer still counts.
            own = own_delays(result["due_ns"], result["sent_ns"], result["answered_ns"])
            adjusted = [(a - e - own[e]) / 1000 for e, a in arrivals.timings if e in own]
            if adjusted:
                (p99,) = percentiles(adjusted, [99])
                self.results.add(f"{key}.own_p99",
                                 f"{what}: p99 without the load generator's own delays", "ms",
                                 p99 / 1000)  # fmt: skip
            (resp_p99,) = percentiles(result["latencies_us"], [99])
            self.results.add(f"{key}.resp_p99", f"{what}: response p99", "ms", resp_p99 / 1000)
        if late > s.repeats * count // 100:
            self.warnings.append(
                f"{what}: {late} of {s.repeats * count} POSTs went out after they were due "
                "(the previous answer came late), so those alerts waited, as in Falco"
            )
        self.say(f"{what}: p99 {self.results.median(f'{key}.p99'):.2f} ms")

    async def _latency_grpc(self, feed: Feed, col: Collector, mode: str) -> None:
        s = self.sizes
        count = max(1, round(s.latency_rate * s.latency_seconds))
        key = f"latency.{mode}.grpc"
        what = f"end to end, gRPC, {_MODE[mode]}, {s.latency_rate:,.0f}/s"
        for attempt in range(s.repeats):
            col.reset(latency=True)
            result = await feed.paced(count, s.latency_rate)
            arrivals = await col.wait_for(count, self._timeout(count))
            self._check_arrivals(f"{what} #{attempt + 1}", count, arrivals, "grpc")
            if result["late"] > count // 100:
                self.warnings.append(f"{what}: {result['late']} of {count} alerts queued late")
            self._add_latency(key, what, arrivals)
        self.say(f"{what}: p99 {self.results.median(f'{key}.p99'):.1f} ms")

    def _add_latency(self, key: str, what: str, arrivals: Arrivals) -> None:
        if not arrivals.latencies_us:
            return
        p50, p99, top = percentiles(arrivals.latencies_us, [50, 99, 100])
        self.results.add(f"{key}.p50", f"{what}: p50", "ms", p50 / 1000)
        self.results.add(f"{key}.p99", f"{what}: p99", "ms", p99 / 1000)
        self.results.add(f"{key}.max", f"{what}: max", "ms", top / 1000)

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

    # --- memory -----------------------------------------------------------------------

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

    # --- profile ----------------------------------------------------------------------

    async def profile(self) -> None:
        """py-spy samples of the gateway while it takes HTTP at 1 and at 16 connections,
        then a gRPC burst; the collapsed stacks go to the results folder, a summary to
        the report."""
        tool = py_spy()
        if tool is None:
            self.warnings.append(
                "profile: py-spy is not installed (pip install 'py-spy>=0.4,<0.5')"
            )
            return
        s = self.sizes
        self.out_dir.mkdir(parents=True, exist_ok=True)
        texts: list[str] = self.results.meta.setdefault("profile_text", [])
        async with (
            self.nats_server("nats-profile") as server,
            self.feed() as feed,
            self.loadgen() as load,
            self.gateway("gateway-profile", server.url, feed, jetstream=False) as gw,
            self.collector(server.url) as col,
        ):
            for name, what in (
                ("http1", "gateway, HTTP, 1 connection"),
                ("http16", "gateway, HTTP, 16 connections"),
                ("grpc", "gateway, gRPC burst"),
            ):
                raw = self.out_dir / f"gateway-{name}.collapsed.txt"
                argv = [tool, "record", "--pid", str(gw.child.pid), "--rate", "250",
                        "--format", "raw", "--output", str(raw), "--nonblocking"]  # fmt: skip
                spy = await Child(f"py-spy-{name}", argv, self.workdir).start()
                await asyncio.sleep(1)  # py-spy attaches
                col.reset()
                if name.startswith("http"):
                    connections = int(name.removeprefix("http"))
                    count = s.http_requests * 2
                    await load.run(gw.port, connections, count)
                else:
                    count = s.grpc_alerts
                    await feed.burst(count)
                await col.wait_for(count, self._timeout(count))
                assert spy.proc is not None
                spy.proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                await spy.wait(60)
                if not raw.exists():
                    self.warnings.append(f"profile {name}: py-spy wrote nothing\n{spy.log_tail()}")
                    continue
                summary = summarise(raw.read_text().splitlines())
                texts.append(render_profile(summary, f"Profile: {what}; stacks in {raw}"))
                self.say(f"profile {name}: {summary.samples:,} samples in {raw}")


_MODE = {"core": "core", "js": "JetStream"}


def own_delays(due: list[int], sent: list[int], answered: list[int]) -> dict[int, int]:
    """How late each POST of one connection went out through the load generator's own
    doing: after both its due time and the previous answer. By due time, in ns."""
    delays: dict[int, int] = {}
    previous = 0
    for due_ns, sent_ns, answered_ns in zip(due, sent, answered, strict=True):
        delays[due_ns] = max(0, sent_ns - max(due_ns, previous))
        previous = answered_ns
    return delays


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


async def _bodies(port: int) -> int:
    async with HttpClient(f"http://127.0.0.1:{port}/", timeout=5) as http:
        response = await http.get("/stats")
    return _json_int(response.body, "bodies")


def _json_int(body: bytes, key: str) -> int:
    value = orjson.loads(body)[key]
    assert isinstance(value, int)
    return value


async def wait_jetstream(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            nc = await connect(url, connect_timeout=1, max_reconnect_attempts=0)
            try:
                await nc.jetstream(timeout=1).account_info()
                return
            finally:
                await nc.close()
        except (nats.errors.Error, OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


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
