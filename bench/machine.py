"""Which machine, which software, which commit: printed with every table and kept
in the JSON, since absolute figures only mean something next to these."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.procs import REPO
from gateway.simulator.nats_server import nats_server_binary

PACKAGES = ("nats-py", "grpcio", "protobuf", "hypercorn", "quart", "uvloop", "orjson")


def describe() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(_memory_kb() / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "nats_server": _run([nats_server_binary(), "--version"]).removeprefix("nats-server: "),
        "commit": _run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"]),
        "dirty": bool(_run(["git", "-C", str(REPO), "status", "--porcelain", "--", "gateway"])),
    }


def summary_line(machine: dict[str, Any]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
    commit = machine["commit"] or "unknown commit"
    if machine["dirty"]:
        commit += " + uncommitted changes under gateway/"
    return (
        f"{machine['cpu']}, {machine['usable_cores']} cores usable of {machine['cores']}, "
        f"{machine['memory_gb']} GB; Linux {machine['kernel']}; Python {machine['python']}; "
        f"{packages}; nats-server {machine['nats_server']}; gateway at {commit}"
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_kb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv: git and the nats-server binary
            argv, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""
