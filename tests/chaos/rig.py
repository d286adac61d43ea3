"""The processes a chaos run drives: nats-server with JetStream, the gateway as a
subprocess, and the small filesystem its spool lives on."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from bench.procs import Child, ChildFailed, free_port, python_module, rss_bytes, wait_port
from gateway.simulator.http_client import HttpClient
from tests.chaos.ledger import Ledger
from tests.support import NatsServer


class Nats:
    """tests.support's NatsServer (same port and store across restarts), driven
    from async code: its start and stop block, so they run in a thread."""

    def __init__(self, workdir: Path) -> None:
        self.server = NatsServer(workdir, jetstream=True)
        self.paused = False

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self) -> None:
        await asyncio.to_thread(self.server.start)

    async def kill(self) -> None:
        await asyncio.to_thread(self.server.stop)
        self.paused = False

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False

    def _signal(self, sig: signal.Signals) -> None:
        proc = self.server.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)


class Gateway:
    """The real gateway (`python -m gateway`), restarted after an injected kill.

    Any other exit is an unexpected one: it is recorded with the log's tail, and
    the gateway is started again so the run goes on and shows what else breaks."""

    def __init__(self, workdir: Path, nats_url: str, falco: str, spool_dir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.args = [
            "--nats-url", nats_url, "--listen", f"127.0.0.1:{self.port}",
            "--falco-grpc", falco, "--spool-dir", str(spool_dir),
            "--jetstream", "--stream-create", "--shutdown-timeout", "5",
        ]  # fmt: skip
        self.child: Child | None = None
        self.started = 0.0
        self.expect_exit = False
        self.unexpected_exits: list[str] = []
        self.rss_max = 0
        self._lock = asyncio.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        async with self._lock:
            await self._start()

    async def _start(self) -> None:
        while True:
            self.expect_exit = False
            child = Child("gateway", python_module("gateway", *self.args), self.workdir)
            self.child = await child.start()
            self.started = time.monotonic()
            try:
                await wait_port(self.port, 60, child)
                return
            except ChildFailed:
                self._unexpected(child)
                await asyncio.sleep(1.0)

    async def kill(self, ledger: Ledger) -> None:
        """SIGKILL, as the OOM killer or a node failure would."""
        async with self._lock:
            child = self.child
            if child is None or child.proc is None or child.returncode is not None:
                return
            self.expect_exit = True
            child.proc.kill()
            ledger.killed("gateway", self.started, time.monotonic())
            await child.proc.wait()

    async def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and the exit code (None: it had to be killed)."""
        async with self._lock:
            child = self.child
            if child is None or child.proc is None:
                return None
            self.expect_exit = True
            if child.returncode is not None:
                return child.returncode
            child.proc.send_signal(signal.SIGTERM)
            try:
                return await asyncio.wait_for(child.proc.wait(), timeout)
            except TimeoutError:
                child.proc.kill()
                await child.proc.wait()
                return None

    async def watch(self, stop: asyncio.Event) -> None:
        """Sample RSS; restart after an exit nobody asked for."""
        while not stop.is_set():
            child = self.child
            if child is not None and child.proc is not None:
                if child.returncode is None:
                    with contextlib.suppress(OSError):
                        self.rss_max = max(self.rss_max, rss_bytes(child.pid))
                elif not self.expect_exit and not self._lock.locked():
                    async with self._lock:
                        if self.child is child:
                            self._unexpected(child)
                            await asyncio.sleep(1.0)
                            await self._start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)

    def _unexpected(self, child: Child) -> None:
        self.unexpected_exits.append(
            f"exit {child.returncode} at {time.monotonic() - self.started:.1f}s after start:\n"
            + child.log_tail(8)
        )

    async def metric(self, name: str) -> float | None:
        """One unlabelled value from /metrics; None while the gateway does not answer."""
        try:
            async with HttpClient(self.url, timeout=3) as http:
                body = (await http.get("/metrics")).body.decode()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            return None
        for line in body.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    async def healthy(self) -> bool:
        try:
            async with HttpClient(self.url, timeout=3) as http:
                return (await http.get("/healthz")).status == 200
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            return False


class SpoolDisk:
    """A small tmpfs for spool_dir, so the disk-full fault fills a real filesystem."""

    def __init__(self, path: Path, size_mib: int = 48) -> None:
        self.path = path
        self.size_mib = size_mib
        self.mounted = False
        self.filler = path / "filler"

    def mount(self) -> str | None:
        """Mount it; the reason when this machine does not allow it."""
        self.path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return "mounting a tmpfs needs root"
        mount = shutil.which("mount")
        if mount is None:
            return "no mount command"
        result = subprocess.run(
            [mount, "-t", "tmpfs", "-o", f"size={self.size_mib}m", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            return f"mount -t tmpfs failed: {result.stderr.strip() or result.returncode}"
        self.mounted = True
        return None

    def fill(self) -> None:
        """Write until the filesystem says ENOSPC (unbuffered, so nothing is left over)."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 20, 4096, 512, 1):
                block = b"\0" * chunk
                while True:
                    try:
                        os.write(fd, block)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mounted:
            umount = shutil.which("umount") or "umount"
            subprocess.run([umount, "-l", str(self.path)], capture_output=True, check=False)
            self.mounted = False
