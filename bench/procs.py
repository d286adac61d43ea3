"""The benchmark's child processes: CPU pinning, /proc readings, Python helpers.

Every figure is taken with the system under test (the gateway, or a ceiling's
server or client) pinned to one core and everything that loads or watches it
(load generators, nats-server, the Falco stand-in, the NATS subscriber) on the
others, so a load generator never steals the core it is measuring.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.simulator.ports import ExitedEarly, wait_for_port

# Defined with the other local-run parts; still importable from here (the chaos rig does).
from gateway.simulator.ports import free_port as free_port  # noqa: PLC0414

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CpuPlan:
    """Which cores the system under test gets, and which the load side gets."""

    sut: tuple[int, ...]
    load: tuple[int, ...]
    pinned: bool

    @classmethod
    def detect(cls, pin: bool = True) -> CpuPlan:
        cpus = tuple(sorted(os.sched_getaffinity(0)))
        if not pin or len(cpus) < 2:
            return cls(cpus, cpus, False)
        return cls(cpus[:1], cpus[1:], True)

    def describe(self) -> str:
        if not self.pinned:
            return f"not pinned: everything shares cores {_cpu_list(self.sut)}"
        return (
            f"system under test on core {_cpu_list(self.sut)}; load generators, "
            f"nats-server, Falco stand-in and subscriber on {_cpu_list(self.load)}"
        )

    def pin_self_to_load(self) -> None:
        """The driver (and every child that inherits its mask) stays off the measured core."""
        if self.pinned:
            os.sched_setaffinity(0, self.load)


def _cpu_list(cpus: Sequence[int]) -> str:
    return ",".join(str(c) for c in cpus)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may contain spaces and parentheses; fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size of a process now (statm: pages, second field)."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


@dataclass(frozen=True)
class MachineClock:
    """CPU time of the whole machine, of this benchmark (with its reaped children),
    and taken by the hypervisor: a reading now, to subtract from a later one."""

    wall: float
    busy: float
    own: float
    steal: float

    @classmethod
    def now(cls) -> MachineClock:
        # user, nice, system, idle, iowait, irq, softirq, steal. irq and softirq are left
        # out: loopback traffic of the benchmark itself is accounted there.
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        times = os.times()
        return cls(
            wall=time.monotonic(),
            busy=(ticks[0] + ticks[1] + ticks[2]) / _CLK_TCK,
            own=times.user + times.system + times.children_user + times.children_system,
            steal=ticks[7] / _CLK_TCK,
        )

    def others_since(self, earlier: MachineClock) -> tuple[float, float, float]:
        """CPU seconds other processes used since `earlier`, that as a share of the
        machine's cores, and the share the hypervisor stole."""
        capacity = (self.wall - earlier.wall) * (os.cpu_count() or 1)
        foreign = max(0.0, (self.busy - earlier.busy) - (self.own - earlier.own))
        stolen = self.steal - earlier.steal
        if capacity <= 0:
            return foreign, 0.0, 0.0
        return foreign, foreign / capacity, stolen / capacity


async def wait_port(port: int, timeout: float, proc: Child | None = None) -> None:
    """Until something accepts on 127.0.0.1:port; sooner error if `proc` died."""
    ended = None if proc is None else (lambda: proc.returncode is not None)
    try:
        await asyncio.to_thread(wait_for_port, port, timeout, ended)
    except ExitedEarly:
        assert proc is not None
        raise ChildFailed(
            proc, f"exited with {proc.returncode} before listening on {port}"
        ) from None


class ChildFailed(RuntimeError):
    def __init__(self, child: Child, what: str) -> None:
        super().__init__(f"{child.name}: {what}\n{child.log_tail()}")
        self.child = child


class Child:
    """A child process with its stderr in a log file, pinned to `cpus` when given."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(
        self, cpus: Sequence[int] | None = None, stdin: bool = False, stdout: bool = False
    ) -> Child:
        argv = self.argv
        taskset = shutil.which("taskset")
        if cpus is not None and taskset:
            # taskset pins before exec, so threads the child starts later inherit the mask.
            argv = [taskset, "-c", _cpu_list(cpus), *argv]
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if stdout else log,
                stderr=log,
                env=child_env(),
                cwd=REPO,
                limit=64 * 1024 * 1024,
            )
        if cpus is not None and not taskset:
            os.sched_setaffinity(self.proc.pid, cpus)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    async def send(self, message: dict[str, Any]) -> None:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(message) + b"\n")
        await self.proc.stdin.drain()

    async def receive(self, timeout: float) -> dict[str, Any]:
        """The next JSON line the child writes on stdout."""
        assert self.proc is not None
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise ChildFailed(self, f"no answer within {timeout}s") from None
        if not line:
            await self.wait(5)
            raise ChildFailed(self, f"exited with {self.returncode} without an answer")
        result = orjson.loads(line)
        assert isinstance(result, dict)
        return result

    async def ask(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        await self.send(message)
        return await self.receive(timeout)

    async def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            raise ChildFailed(self, f"still running after {timeout}s") from None

    async def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; the exit code."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return None if proc is None else proc.returncode
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            return await proc.wait()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join("    " + line for line in text.splitlines()[-lines:])


def child_env() -> dict[str, str]:
    # GATEWAY_* from the caller's shell would silently change what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


async def run_python(
    name: str,
    log_dir: Path,
    module: str,
    args: Sequence[str],
    *,
    cpus: Sequence[int] | None,
    timeout: float,
) -> dict[str, Any]:
    """Run a bench helper to completion; the JSON object it prints last."""
    child = await Child(name, python_module(module, *args), log_dir).start(cpus, stdout=True)
    try:
        result = await child.receive(timeout)
        await child.wait(10)
    finally:
        await child.stop(2)
    if child.returncode:
        raise ChildFailed(child, f"exited with {child.returncode}")
    return result
