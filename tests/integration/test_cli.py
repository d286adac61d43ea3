"""The gateway as users run it: the console script, flags, signals, exit codes."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from gateway.simulator.alerts import stream
from gateway.simulator.wire import to_falco_json
from tests.support import (
    NatsServer,
    free_port,
    gateway_command,
    subprocess_env,
    subscribe,
    take,
    wait_for_port,
)


def test_help_is_useful_on_its_own() -> None:
    out = subprocess.run(
        [*gateway_command(), "--help"],
        capture_output=True,
        text=True,
        check=True,
        env=subprocess_env(),
    ).stdout
    for needle in (
        "--nats-url",
        "--listen",
        "--falco-grpc",
        "--subject-template",
        "--minimum-priority",
        "--config",
        "GATEWAY_NATS_URL",
        "NATS_HOSTPORT",
        "simulate",
    ):
        assert needle in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--minimum-priority", "severe"], "minimum_priority: unknown priority 'severe'"),
        (["--listen", "nowhere"], "listen: 'nowhere' is not HOST:PORT"),
        (["--falco-grpc", "10.0.0.1:5060"], "grpc_client_cert"),
        (["--subject-template", "falco.<rulename>"], "unknown placeholder <rulename>"),
    ],
)
def test_bad_settings_stop_start_up_naming_the_key(args: list[str], needle: str) -> None:
    result = subprocess.run(
        [*gateway_command(), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=subprocess_env(),
    )
    assert result.returncode == 2
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_environment_setting_is_named() -> None:
    env = subprocess_env() | {"GATEWAY_LISTN": "0.0.0.0:1"}
    result = subprocess.run(
        [*gateway_command()], capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode == 2
    assert "GATEWAY_LISTN: unknown setting" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "instead"),
    [
        ("TEMPLATEDFIELDS", "owner:{{.user}}", "custom_fields adds constant ones"),
        ("NATS_MUTUALTLS", "true", "use nats_cert and nats_key"),
        ("BRACKETREPLACER", "_", "published as Falco writes them"),
    ],
)
def test_unimplemented_falcosidekick_setting_stops_start_up(
    variable: str, value: str, instead: str
) -> None:
    env = subprocess_env() | {variable: value}
    result = subprocess.run(
        [*gateway_command()], capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode == 2
    assert f"{variable}: falcosidekick setting not supported" in result.stderr
    assert instead in result.stderr


def test_port_in_use_fails_cleanly(nats_server: NatsServer) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*gateway_command(), "--nats-url", nats_server.url, "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
            env=subprocess_env(),
        )
    assert result.returncode == 1
    assert "cannot start" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_drains_and_exits_zero(
    nats_server: NatsServer, tmp_path: Path, sig: int
) -> None:
    port = free_port()
    log = (tmp_path / "gateway.log").open("w")
    proc = subprocess.Popen(
        [*gateway_command(), "--nats-url", nats_server.url, "--listen", f"127.0.0.1:{port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=subprocess_env(),
    )
    try:
        wait_for_port(port, 20)
        nc, inbox = await subscribe(nats_server.url)
        from gateway.simulator.http_client import HttpClient

        async with HttpClient(f"http://127.0.0.1:{port}/") as http:
            deadline = time.monotonic() + 10
            while (await http.get("/healthz")).status != 200:
                assert time.monotonic() < deadline
            events = list(stream("node-1", 100))
            for event in events:
                assert (await http.post(to_falco_json(event))).status == 200
        proc.send_signal(sig)
        assert proc.wait(20) == 0
        msgs = await take(inbox, len(events))
        await nc.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    output = (tmp_path / "gateway.log").read_text()
    assert "Traceback" not in output
    assert f"signal={signal.Signals(sig).name}" in output
    assert "published_http=100" in output
    assert [orjson.loads(m.data)["uuid"] for m in msgs] == [e.alert_id for e in events]


def test_simulate_needs_a_target() -> None:
    result = subprocess.run(
        [*gateway_command(), "simulate"],
        capture_output=True,
        text=True,
        timeout=30,
        env=subprocess_env(),
    )
    assert result.returncode == 2
    assert "--grpc-listen" in result.stderr
