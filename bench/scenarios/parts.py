"""What every benchmark phase uses: the sizes, the child processes it drives (the
Falco stand-in, the HTTP load generator, the gateway), nats-server, the NATS
subscriber, and the checks that what was sent arrived once.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from bench.collector import Arrivals, Collector
from bench.procs import Child, ChildFailed, CpuPlan, python_module, wait_port
from bench.results import Results
from gateway.simulator.http_client import HttpClient
from gateway.simulator.nats_server import NatsServer, wait_jetstream
from gateway.simulator.ports import free_port

STREAM = "FALCO"
MB = 1024 * 1024
# A load generator busier than this may be what limits a figure, not the server.
LOAD_BUSY_WARNING = 0.9


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


class Parts:
    """The benchmark's state and the parts its phases share; each phase module adds
    its phases to it, and `Bench` (bench.scenarios.run) puts them together."""

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
