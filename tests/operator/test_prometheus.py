"""Every dashboard query and every alert rule, run by a real Prometheus (Debian's `prometheus`
binary, on loopback) scraping a real gateway that this test drives: both ingest paths, the
JetStream stream deleted and re-created, a NATS outage with Falco gone too, Falco's gRPC
stream reconnecting in a loop, then silence.

A panel whose query returns no data fails the test; so does an alert the scenario should
fire and does not. The rules run with their windows and `for` durations shortened (1/300,
with floors a 200 ms scrape interval can fill), so the scenario takes seconds, not hours;
promtool's tests (test_rules.py) check the real durations. With OPERATOR_KIT_DATA=<file>, the
panels' data is written there for scripts/dashboard_png.py (the README's picture).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
import yaml
from nats.js.api import StreamConfig

from gateway.simulator.alerts import CATALOG, render
from gateway.simulator.falco_server import FalcoServer
from gateway.simulator.wire import to_falco_json, to_grpc_response
from tests.operator.tools import DASHBOARD, RULES, alert_rules, prometheus_tool
from tests.support import (
    NatsServer,
    RunningGateway,
    StartFalco,
    free_port,
    running_gateway,
    until,
    wait_jetstream,
)

SCRAPE = "200ms"
SCALE = 300
# A range needs several scrapes to give rate() or increase() a value; `for` only needs to pass.
RANGE_FLOOR_MS = 3000
FOR_FLOOR_MS = 400
JOB = "falco-nats-gateway"
STREAM = "FALCO"
# Smaller than the oversized alert below, whose tags alone (never shortened) do not fit:
# it can never be stored (undeliverable).
STREAM_MAX_MSG = 4096
BASE_NS = 1_700_000_000_000_000_000

# Alerts the scenario must fire. FalcoNatsGatewayDeliveryDegraded and ...TaskFailures watch
# series the fault-handling code drives; the gateway here exports them at 0, so they are only
# checked to exist (their selectors return data).
MUST_FIRE = {
    "FalcoNatsGatewayNatsDisconnected",
    "FalcoNatsGatewaySpoolFilling",
    "FalcoNatsGatewaySpoolRefusing",
    "FalcoNatsGatewayAlertsLost",
    "FalcoNatsGatewayPublishFailing",
    "FalcoNatsGatewayFalcoGrpcDown",
    "FalcoNatsGatewayFalcoGrpcFlapping",
    "FalcoNatsGatewayFalcoSilent",
}
# What the dashboard's variables become for Prometheus's API (Grafana substitutes them).
VARIABLES = {"$job": ".+", "$instance": ".+", "$__rate_interval": "1s"}

_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_SELECTOR = re.compile(r"\b((?:falco_nats_gateway|falcosecurity)_[a-z_]+)(\{[^}]*\})?")


def scaled(duration: str, floor_ms: int) -> str:
    match = _DURATION.fullmatch(duration)
    assert match, duration
    ms = int(match[1]) * _UNIT_MS[match[2]]
    return f"{max(ms // SCALE, floor_ms)}ms"


def scaled_rules() -> dict[str, Any]:
    """The shipped rules with every range and `for` shortened; expressions otherwise as is."""
    rules: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in rules["groups"]:
        group["interval"] = SCRAPE
        for rule in group["rules"]:
            rule["expr"] = re.sub(
                r"\[(\w+)\]", lambda m: f"[{scaled(m[1], RANGE_FLOOR_MS)}]", rule["expr"]
            )
            if "for" in rule:
                rule["for"] = scaled(rule["for"], FOR_FLOOR_MS)
    return rules


class Prometheus:
    """`prometheus` on a loopback port, scraping the gateway, with the scaled rules."""

    def __init__(self, workdir: Path, target_port: int) -> None:
        self.port = free_port()
        self.workdir = workdir
        (workdir / "rules.yaml").write_text(yaml.safe_dump(scaled_rules()), encoding="utf-8")
        config = {
            "global": {
                "scrape_interval": SCRAPE,
                "scrape_timeout": SCRAPE,
                "evaluation_interval": SCRAPE,
            },
            "rule_files": [str(workdir / "rules.yaml")],
            "scrape_configs": [
                {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                prometheus_tool("prometheus"),
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                if self.get("/-/ready", raw=True):
                    return
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, "Prometheus not ready in 30 s:\n" + self.log()
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)

    def log(self) -> str:
        return (self.workdir / "prometheus.log").read_text(errors="replace")[-4000:]

    def get(self, path: str, params: dict[str, str] | None = None, raw: bool = False) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        url = f"http://127.0.0.1:{self.port}{path}{query}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
        if raw:
            return body
        reply = json.loads(body)
        assert reply["status"] == "success", reply
        return reply["data"]

    async def instant(self, expr: str) -> list[dict[str, Any]]:
        data = await asyncio.to_thread(self.get, "/api/v1/query", {"query": expr})
        result: list[dict[str, Any]] = data["result"]
        return result

    async def series_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        params = {"query": expr, "start": str(start), "end": str(end), "step": "0.2"}
        data = await asyncio.to_thread(self.get, "/api/v1/query_range", params)
        result: list[dict[str, Any]] = data["result"]
        return result

    async def scraped(self, timeout: float = 30.0) -> None:
        """Until Prometheus has scraped the gateway twice (every counter seen at its start)."""
        deadline = time.monotonic() + timeout
        while not await self.instant("count_over_time(falco_nats_gateway_info[10s]) >= 2"):
            assert time.monotonic() < deadline, (
                "Prometheus did not scrape the gateway\n" + self.log()
            )
            await asyncio.sleep(0.1)

    async def firing(self, alertname: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The labels of `alertname`'s firing alerts, once there are some."""
        expr = f'ALERTS{{alertname="{alertname}", alertstate="firing"}}'
        deadline = time.monotonic() + timeout
        while True:
            found = await self.instant(expr)
            if found:
                return [series["metric"] for series in found]
            if time.monotonic() > deadline:
                seen = await self.instant("falco_nats_gateway_alerts_total > 0")
                rules = await asyncio.to_thread(self.get, "/api/v1/rules")
                state = [
                    (r["name"], r.get("state"), r.get("health"), r.get("lastError"))
                    for g in rules["groups"]
                    for r in g["rules"]
                ]
                raise AssertionError(
                    f"{alertname} did not fire within {timeout} s; counts: {seen}; rules: {state}; "
                    f"Prometheus's log:\n{self.log()}"
                )
            await asyncio.sleep(0.2)


@dataclass
class Falco:
    """Alerts as Falco sends them, over gRPC (while its server runs) and http_output."""

    socket: str
    start_falco: StartFalco
    server: FalcoServer | None = None
    sent: int = 0
    grpc_copies: list[bytes] = field(default_factory=list)

    async def start(self) -> None:
        self.server = await self.start_falco(self.socket)

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await server.stop()

    def next_event(self, hostname: str) -> Any:
        self.sent += 1
        return render(CATALOG[self.sent % len(CATALOG)], BASE_NS + self.sent, hostname)

    async def run(self, gateway: RunningGateway, stop: asyncio.Event) -> None:
        """Both paths, 20 alerts/s each, with a duplicate, a malformed body and, once, an
        alert too large for the stream among them."""
        async with gateway.client() as http:
            turn = 0
            while not stop.is_set():
                turn += 1
                if self.server is not None:
                    event = self.next_event("node-grpc")
                    self.server.emit(to_grpc_response(event))
                    self.grpc_copies.append(to_falco_json(event))
                body = to_falco_json(self.next_event("node-http"))
                if turn % 5 == 0 and self.grpc_copies:
                    body = self.grpc_copies[-1]  # the other path's copy: a duplicate
                elif turn % 37 == 0:
                    body = b'{"output": "cut sh'  # unreadable: rejected
                elif turn == 12:
                    big = orjson.loads(body)
                    big["tags"] = [f"t{i:03d}-" + "x" * 90 for i in range(2 * STREAM_MAX_MSG // 95)]
                    body = orjson.dumps(big)
                await http.post(body)
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def falco_traffic(falco: Falco, gateway: RunningGateway) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(falco.run(gateway, stop))
    try:
        yield stop
    finally:
        stop.set()
        await task


async def create_stream(url: str) -> None:
    nc = await nats.connect(url)
    try:
        config = StreamConfig(name=STREAM, subjects=["falco.>"], max_msg_size=STREAM_MAX_MSG)
        await nc.jetstream().add_stream(config)
    finally:
        await nc.close()


async def delete_stream(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(STREAM)
    finally:
        await nc.close()


def panel_queries() -> Iterator[tuple[str, str, str]]:
    """(panel title, legend, expression with the dashboard's variables filled in)."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, expr
            yield panel["title"], target["legendFormat"], expr


def has_values(series: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(v)) for s in series for _, v in s["values"])


@pytest.fixture
def prometheus_binary() -> str:
    return prometheus_tool("prometheus")


async def test_every_panel_and_rule_against_a_real_prometheus(
    tmp_path: Path, socket_path: str, start_falco: StartFalco, prometheus_binary: str
) -> None:
    server = NatsServer(tmp_path, jetstream=True).start()
    prometheus: Prometheus | None = None
    try:
        await wait_jetstream(server.url)
        await create_stream(server.url)
        falco = Falco(socket_path, start_falco)
        await falco.start()
        async with running_gateway(
            server.url,
            jetstream=True,
            stream_name=STREAM,
            stream_create=False,
            falco_grpc=socket_path,
            minimum_priority="notice",
            spool_max_bytes=64 * 1024,
            publish_timeout=1.0,
        ) as gw:
            prometheus = Prometheus(tmp_path, gw.settings.listen_port)
            prometheus.start()
            start = time.time()
            await until(lambda: gw.gateway.sink.ready, "the stream checked", 20)
            # Counters must be seen at 0 before they move, or increase() has nothing to compare.
            await prometheus.scraped()
            async with falco_traffic(falco, gw):
                # Both paths flowing; the oversized alert lost for good.
                await prometheus.firing("FalcoNatsGatewayAlertsLost")
                # The stream deleted: JetStream answers no one, publishes fail and are retried.
                await delete_stream(server.url)
                await prometheus.firing("FalcoNatsGatewayPublishFailing")
                await create_stream(server.url)
                # Falco gone, then NATS: the spool fills, then refuses. (Falco first: while a
                # full spool holds the gRPC stream back, the gateway reads nothing from it and
                # would not notice Falco leaving.)
                await falco.stop()
                await until(lambda: gw.gateway.grpc.state.state != "connected", "gRPC down")  # type: ignore[union-attr]
                server.stop()
                for alertname in (
                    "FalcoNatsGatewayNatsDisconnected",
                    "FalcoNatsGatewaySpoolFilling",
                    "FalcoNatsGatewaySpoolRefusing",
                    "FalcoNatsGatewayFalcoGrpcDown",
                ):
                    await prometheus.firing(alertname)
                # Back; then Falco restarting in a loop.
                server.start()
                deadline = time.monotonic() + 60
                while not await prometheus.instant(
                    'ALERTS{alertname="FalcoNatsGatewayFalcoGrpcFlapping", alertstate="firing"}'
                ):
                    assert time.monotonic() < deadline, "FalcoGrpcFlapping did not fire"
                    await falco.start()
                    await until(lambda: gw.gateway.grpc.state.state == "connected", "gRPC", 20)  # type: ignore[union-attr]
                    await falco.stop()
                await falco.start()
                await until(lambda: gw.gateway.spool.count == 0, "the spool drained", 30)
            # Falco quiet on both paths.
            silent = await prometheus.firing("FalcoNatsGatewayFalcoSilent")
            end = time.time()
            await check_panels(prometheus, start, end)
            await check_rules(prometheus, start, end)
            assert {s["path"] for s in silent} <= {"grpc", "http"}
    finally:
        if prometheus is not None:
            prometheus.stop()
        server.stop()


async def check_panels(prometheus: Prometheus, start: float, end: float) -> None:
    data: dict[str, list[dict[str, Any]]] = {}
    empty = []
    for title, legend, expr in panel_queries():
        series = await prometheus.series_range(expr, start, end)
        if not has_values(series):
            empty.append(f"{title} [{legend}]: {expr}")
        data.setdefault(title, []).append({"legend": legend, "expr": expr, "series": series})
    assert empty == [], "panels without data:\n" + "\n".join(empty)
    out = os.environ.get("OPERATOR_KIT_DATA")
    if out:
        Path(out).write_text(json.dumps({"start": start, "end": end, "panels": data}))


async def check_rules(prometheus: Prometheus, start: float, end: float) -> None:
    window = f"{math.ceil(end - start) + 1}s"
    fired = {
        s["metric"]["alertname"]
        for s in await prometheus.instant(f'ALERTS{{alertstate="firing"}}[{window}]')
    }
    assert MUST_FIRE - fired == set(), f"did not fire: {MUST_FIRE - fired}"
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= MUST_FIRE
    # Every series a rule reads exists, with the labels it selects on.
    missing = []
    for rule in alert_rules():
        for metric, matchers in _SELECTOR.findall(rule["expr"]):
            selector = metric + (matchers or "")
            if not await prometheus.instant(f"count_over_time({selector}[{window}])"):
                missing.append(f"{rule['alert']}: {selector}")
    assert missing == [], "rules reading series the gateway does not export:\n" + "\n".join(missing)
    # The dashboard's job and instance variables find the gateway.
    jobs = await asyncio.to_thread(
        prometheus.get, "/api/v1/label/job/values", {"match[]": "falco_nats_gateway_info"}
    )
    assert jobs == [JOB]
