"""Metrics, logs, `tail` and `check`, against the real gateway and real servers."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import time
from pathlib import Path

import nats
import nats.js.errors
import orjson
import pytest
from nats.aio.msg import Msg
from prometheus_client.parser import text_string_to_metric_families

from gateway.commands.tail import format_line, format_nats_sub
from gateway.simulator.alerts import CATALOG, render
from gateway.simulator.wire import to_falco_json, to_grpc_response
from tests.support import (
    NatsServer,
    StartFalco,
    free_port,
    gateway_command,
    running_gateway,
    subprocess_env,
    subscribe,
    take,
    until,
    wait_for_port,
)

BASE = 1_700_000_000_000_000_000


def alert(index: int, priority: str | None = None) -> bytes:
    body = orjson.loads(to_falco_json(render(CATALOG[0], BASE + index, "node-1")))
    if priority is not None:
        body["priority"] = priority
    return orjson.dumps(body)


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_after_a_known_sequence(
    nats_server: NatsServer, socket_path: str, start_falco: StartFalco
) -> None:
    falco = await start_falco(socket_path)
    nc, inbox = await subscribe(nats_server.url)
    async with (
        running_gateway(nats_server.url, falco_grpc=socket_path, minimum_priority="notice") as gw,
        gw.client() as http,
    ):
        await until(
            lambda: gw.gateway.grpc is not None and gw.gateway.grpc.state.state == "connected",
            "gRPC",
        )
        grpc_events = [render(CATALOG[1], BASE + 100 + i, "node-2") for i in range(2)]
        for event in grpc_events:
            falco.emit(to_grpc_response(event))
        await take(inbox, 2)
        assert (await http.post(alert(1))).status == 200  # published
        assert (await http.post(alert(2))).status == 200  # published
        assert (await http.post(alert(3, "Debug"))).status == 200  # filtered
        assert (await http.post(b"{broken")).status == 400  # rejected
        duplicate = await http.post(to_falco_json(grpc_events[0]))  # the gRPC copy's twin
        assert orjson.loads(duplicate.body) == {"status": "duplicate"}
        await take(inbox, 2)
        # Subscribers have an alert as soon as it is published; it counts as published
        # once NATS confirms it (a PING at most every 5 ms), a moment later.
        await until(lambda: gw.gateway.telemetry.get("published") == 4, "NATS confirmations")
        response = await http.get("/metrics")
    await nc.close()
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain")
    m = scrape(response.body.decode())
    # falcosidekick's names, for its dashboards.
    inputs = "falcosecurity_falcosidekick_inputs_total"
    assert value(m, inputs, source="requests", status="accepted") == 4
    assert value(m, inputs, source="requests", status="rejected") == 1
    assert value(m, inputs, source="grpc", status="accepted") == 2
    assert (
        value(m, "falcosecurity_falcosidekick_outputs_total", destination="nats", status="ok") == 4
    )
    # The gateway's own.
    alerts = "falco_nats_gateway_alerts_total"
    assert value(m, alerts, path="http", outcome="published") == 2
    assert value(m, alerts, path="grpc", outcome="published") == 2
    assert value(m, alerts, path="http", outcome="filtered") == 1
    assert value(m, alerts, path="http", outcome="duplicate") == 1
    assert value(m, alerts, path="http", outcome="rejected") == 1
    assert value(m, alerts, path="http", outcome="refused") == 0
    by_priority = "falco_nats_gateway_alerts_received_by_priority_total"
    assert value(m, by_priority, path="http", priority="Debug") == 1
    assert value(m, by_priority, path="grpc", priority="Warning") == 2
    rejected = "falco_nats_gateway_alerts_rejected_by_reason_total"
    assert value(m, rejected, path="http", reason="malformed_json") == 1
    assert value(m, "falco_nats_gateway_publish_latency_seconds_count") == 4
    assert value(m, "falco_nats_gateway_spool_alerts") == 0
    assert value(m, "falco_nats_gateway_nats_connected") == 1
    assert value(m, "falco_nats_gateway_grpc_connected") == 1
    assert value(m, "falco_nats_gateway_grpc_reconnects_total") == 0
    assert value(m, "falco_nats_gateway_falco_info", version="0.43.1") == 1
    assert value(m, "falco_nats_gateway_info", version="0.1.0", mode="core") == 1
    # No per-rule series unless asked for: rule names would multiply the series.
    assert not any("rule" in dict(labels) for (_, labels) in m)


async def test_per_rule_metric_is_opt_in(nats_server: NatsServer) -> None:
    async with (
        running_gateway(nats_server.url, metrics_rule_labels=True) as gw,
        gw.client() as http,
    ):
        assert (await http.post(alert(1))).status == 200
        m = scrape((await http.get("/metrics")).body.decode())
    series = "falco_nats_gateway_alerts_received_by_rule_total"
    assert value(m, series, rule="Terminal shell in container", priority="Notice") == 1


async def test_spool_depth_and_nats_state_while_nats_is_down(nats_server: NatsServer) -> None:
    url = nats_server.url
    nats_server.stop()
    async with running_gateway(url, wait_nats=False) as gw, gw.client() as http:
        for index in range(3):
            assert (await http.post(alert(index))).status == 200
        m = scrape((await http.get("/metrics")).body.decode())
    assert value(m, "falco_nats_gateway_spool_alerts") == 3
    assert value(m, "falco_nats_gateway_spool_bytes") > 0
    assert value(m, "falco_nats_gateway_nats_connected") == 0


def run_gateway_for_logs(nats_url: str, fmt: str, tmp_path: Path) -> list[str]:
    port = free_port()
    log = tmp_path / f"gateway-{fmt}.log"
    proc = subprocess.Popen(
        [*gateway_command(), "--nats-url", nats_url, "--listen", f"127.0.0.1:{port}",
         "--log-format", fmt, "--log-level", "debug"],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env=subprocess_env(),
    )  # fmt: skip
    try:
        wait_for_port(port, 30)
        socket.create_connection(("127.0.0.1", port)).close()
        # The HTTP port can answer before NATS is connected: wait for the line too.
        deadline = time.monotonic() + 30
        while b"nats connected" not in log.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    return [line for line in log.read_text().splitlines() if line.strip()]


def test_json_logs_one_object_per_line(nats_server: NatsServer, tmp_path: Path) -> None:
    lines = run_gateway_for_logs(nats_server.url, "json", tmp_path)
    assert len(lines) >= 3
    records = [json.loads(line) for line in lines]
    for record in records:
        assert {"time", "level", "logger", "msg"} <= set(record)
        assert record["time"].endswith("Z")
    messages = [r["msg"] for r in records]
    assert "starting" in messages
    assert "nats connected" in messages
    assert "stopped" in messages


_LOGFMT_PAIR = re.compile(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S+)')


def parse_logfmt(line: str) -> dict[str, str]:
    pairs = _LOGFMT_PAIR.findall(line)
    assert " ".join(f"{k}={v}" for k, v in pairs) == line, f"not logfmt: {line}"
    return {k: v.strip('"') for k, v in pairs}


def test_logfmt_logs_parse(nats_server: NatsServer, tmp_path: Path) -> None:
    lines = run_gateway_for_logs(nats_server.url, "logfmt", tmp_path)
    records = [parse_logfmt(line) for line in lines]
    assert all({"time", "level", "logger", "msg"} <= set(r) for r in records)
    assert any(r["msg"] == "nats connected" for r in records)


def message(data: bytes, headers: dict[str, str] | None = None) -> Msg:
    return Msg(None, subject="falco.notice.terminal_shell_in_container", data=data, headers=headers)  # type: ignore[arg-type]


def test_tail_line_is_readable() -> None:
    event = render(CATALOG[0], 1_612_815_555_325_119_960, "minikube")
    from gateway.payload import falcosidekick_json

    msg = message(falcosidekick_json(event), {"Falco-Gateway-Path": "grpc"})
    line = format_line(msg, colour=False)
    assert line.startswith(
        "2021-02-08 20:19:15.325 Notice        Terminal shell in container @minikube [grpc]: "
    )
    assert line.endswith(event.output.split(": Notice ", 1)[1])
    assert "\033[" not in line
    coloured = format_line(msg, colour=True)
    assert "\033[96mNotice" in coloured
    assert format_line(message(b"not json"), colour=False) == (
        "falco.notice.terminal_shell_in_container: not json"
    )
    nats_style = format_nats_sub(3, msg)
    assert nats_style.startswith('[#3] Received on "falco.notice.terminal_shell_in_container"\n')
    assert "Falco-Gateway-Path: grpc\n" in nats_style


@pytest.mark.parametrize(
    ("flags", "check"),
    [
        ([], "readable"),
        (["--raw"], "raw"),
        (["--nats"], "nats"),
        (["--color", "always"], "colour"),
    ],
)
async def test_tail_command(nats_server: NatsServer, flags: list[str], check: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *gateway_command(), "tail", "--nats-url", nats_server.url, "--count", "2", *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=subprocess_env(),
    )  # fmt: skip
    bodies = [alert(1), alert(2, "Critical")]
    assert proc.stderr is not None
    assert await asyncio.wait_for(proc.stderr.readline(), 30) == b"Subscribing on falco.>\n"
    async with running_gateway(nats_server.url) as gw, gw.client() as http:
        for body in bodies:
            assert (await http.post(body)).status == 200
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    text = out.decode()
    if check == "readable":
        lines = text.splitlines()
        assert len(lines) == 2
        assert (
            "Notice        Terminal shell in container @node-1 [http]: A shell was spawned"
            in lines[0]
        )
        assert "Critical " in lines[1]
        assert "\033[" not in text
    elif check == "raw":
        published = [orjson.loads(line) for line in text.splitlines()]
        assert [p["priority"] for p in published] == ["Notice", "Critical"]
    elif check == "nats":
        assert text.count('Received on "falco.') == 2
        assert "Nats-Msg-Id: " in text
    else:
        assert "\033[1;91mCritical" in text


async def run_check(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *gateway_command(), "check", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=subprocess_env(),
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


def lines_of(report: str) -> dict[str, str]:
    return {
        line.split()[1]: line for line in report.splitlines() if line.startswith(("ok ", "FAIL "))
    }


async def test_check_passes_when_every_link_works(
    tmp_path: Path, socket_path: str, start_falco: StartFalco
) -> None:
    server = NatsServer(tmp_path, jetstream=True).start()
    try:
        await start_falco(socket_path)
        code, report = await run_check(
            "--nats-url", server.url, "--falco-grpc", socket_path,
            "--listen", f"127.0.0.1:{free_port()}", "--jetstream", "--stream-create",
            "--spool-dir", str(tmp_path / "spool"),
        )  # fmt: skip
        # check only reports: the stream the gateway would create is still missing.
        nc = await nats.connect(server.url)
        try:
            with pytest.raises(nats.js.errors.NotFoundError):
                await nc.jetstream().stream_info("FALCO")
        finally:
            await nc.close()
    finally:
        server.stop()
    assert code == 0, report
    found = lines_of(report)
    assert found["nats"].startswith("ok")
    assert "server 2." in found["nats"]
    assert "will create it" in found["jetstream"]
    assert "Falco 0.43.1" in found["falco-grpc"]
    assert found["http"].startswith("ok")
    assert "0 alerts waiting" in found["spool"]
    assert report.rstrip().endswith("6 ok, 0 failed")


async def test_check_reports_every_broken_link(nats_server: NatsServer, socket_path: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, report = await run_check(
            "--nats-url", f"nats://127.0.0.1:{free_port()}", "--falco-grpc", socket_path,
            "--listen", f"127.0.0.1:{port}",
        )  # fmt: skip
    assert code == 1
    found = lines_of(report)
    assert found["nats"].startswith("FAIL")
    assert "Connect" in found["nats"] or "Refused" in found["nats"]
    assert found["falco-grpc"].startswith("FAIL")
    assert "UNAVAILABLE" in found["falco-grpc"]
    assert found["http"].startswith("FAIL")
    assert "in use" in found["http"]
    assert "Traceback" not in report


@pytest.mark.parametrize(
    ("stream_subjects", "needles"),
    [
        (None, ["stream_create is off"]),
        (["alerts.>"], ["alerts.>", "does not capture 'falco.emergency.rule'"]),
    ],
    ids=["missing", "subjects-miss-the-template"],
)
async def test_check_finds_a_stream_alerts_cannot_go_to(
    tmp_path: Path, stream_subjects: list[str] | None, needles: list[str]
) -> None:
    server = NatsServer(tmp_path, jetstream=True).start()
    try:
        if stream_subjects is not None:
            nc = await nats.connect(server.url)
            try:
                await nc.jetstream().add_stream(name="FALCO", subjects=stream_subjects)
            finally:
                await nc.close()
        code, report = await run_check(
            "--nats-url", server.url, "--listen", f"127.0.0.1:{free_port()}", "--jetstream",
        )  # fmt: skip
    finally:
        server.stop()
    assert code == 1
    line = lines_of(report)["jetstream"]
    assert line.startswith("FAIL")
    for needle in needles:
        assert needle in line


async def test_check_on_a_server_without_jetstream_says_so(nats_server: NatsServer) -> None:
    code, report = await run_check(
        "--nats-url", nats_server.url, "--listen", f"127.0.0.1:{free_port()}", "--jetstream",
    )  # fmt: skip
    assert code == 1
    line = lines_of(report)["jetstream"]
    assert line.startswith("FAIL")
    assert "JetStream is not enabled on the NATS server" in line


def test_check_with_a_bad_setting_names_it() -> None:
    result = subprocess.run(
        [*gateway_command(), "check", "--minimum-priority", "loud"],
        capture_output=True,
        text=True,
        timeout=30,
        env=subprocess_env(),
    )
    assert result.returncode == 2
    assert "minimum_priority" in result.stderr
