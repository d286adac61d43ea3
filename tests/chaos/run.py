"""One chaos run: start everything, load both paths, inject the schedule, drain,
stop, and judge from the JetStream stream."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos.faults import Rig, inject
from tests.chaos.ledger import Ledger, Tally
from tests.chaos.load import AlertMaker, Falco, grpc_emitter, http_sender
from tests.chaos.rig import Gateway, Nats, SpoolDisk
from tests.chaos.schedule import FAULT_KINDS, Fault, load_rng, make_schedule
from tests.support import stream_ids

STREAM = "FALCO"


@dataclass(frozen=True)
class RunOptions:
    seed: int
    duration: float  # seconds of load and faults
    kinds: tuple[str, ...]
    workdir: Path
    rate: float = 40.0  # alerts a second on each path
    drain_bound: float = 60.0  # seconds the backlog may take to drain once faults stop
    rss_bound_mib: float = 512.0


@dataclass
class RunResult:
    options: RunOptions
    schedule: list[Fault]
    skipped: dict[str, str] = field(default_factory=dict)  # fault kind -> why not injected
    injected: Counter[str] = field(default_factory=Counter)
    tally: Tally = field(default_factory=Tally)
    stored_messages: int = 0
    drain_seconds: float | None = None
    stuck: list[str] = field(default_factory=list)
    unexpected_exits: list[str] = field(default_factory=list)
    final_exit: int | None = None
    rss_max_mib: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    error: str = ""  # the run itself broke off (set by the caller)

    @property
    def failures(self) -> list[str]:
        t, o = self.tally, self.options
        found = [f"the run broke off: {self.error}"] if self.error else []
        if t.lost:
            by_path = ", ".join(f"{p} {n}" for p, n in sorted(t.lost_by_path.items()))
            found.append(f"{t.lost} accepted alert(s) not in the stream ({by_path})")
        if t.duplicated:
            found.append(f"{t.duplicated} alert(s) stored more than once")
        found += [f"stuck: {s}" for s in self.stuck]
        found += [f"unexpected gateway exit: {e}" for e in self.unexpected_exits]
        if self.final_exit != 0:
            found.append(f"the gateway's exit on SIGTERM at the end: {self.final_exit}")
        if t.errors:
            errors = {s: n for s, n in self.statuses.items() if s >= 500 and s != 503}
            found.append(f"{t.errors} HTTP answer(s) 5xx other than 503: {errors}")
        if self.rss_max_mib > o.rss_bound_mib:
            found.append(f"gateway RSS {self.rss_max_mib:.0f} MiB > {o.rss_bound_mib:.0f} MiB")
        return found

    @property
    def passed(self) -> bool:
        return not self.failures


def available_kinds(
    kinds: tuple[str, ...], disk: SpoolDisk
) -> tuple[tuple[str, ...], dict[str, str]]:
    """The kinds this tree and machine can inject, and why the others cannot."""
    skipped: dict[str, str] = {}
    if "grpc-bad" in kinds and not Falco.can_emit_raw():
        skipped["grpc-bad"] = "FalcoServer.emit_raw is not in this tree"
    if "disk-full" in kinds:
        reason = disk.mount()
        if reason is not None:
            skipped["disk-full"] = reason
    return tuple(k for k in kinds if k not in skipped), skipped


async def run_once(options: RunOptions) -> RunResult:
    workdir = options.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    # A unix socket path must stay under ~107 bytes; the workdir may be deep.
    socket_dir = Path(tempfile.mkdtemp(prefix="chaos-"))
    disk = SpoolDisk(workdir / "spool")
    kinds, skipped = available_kinds(options.kinds, disk)
    result = RunResult(options, make_schedule(options.seed, options.duration, kinds), skipped)
    ledger = Ledger()
    nats = Nats(workdir)
    falco = Falco(f"unix://{socket_dir}/falco.sock", ledger)
    gateway = Gateway(workdir, nats.url, falco.address, disk.path)
    rig = Rig(nats, gateway, falco, disk if disk.mounted else None, ledger, AlertMaker())
    begun = time.monotonic()
    try:
        await nats.start()
        await falco.start()
        await gateway.start()
        await _until(gateway.healthy, 60, "the gateway connected to NATS")
        # The watcher restarts the gateway after an exit nobody injected, through the
        # load and the drain, and samples its RSS.
        watching = asyncio.Event()
        watcher = asyncio.create_task(gateway.watch(watching))
        try:
            await _load_and_faults(rig, result)
            await _drain(rig, result)
        finally:
            watching.set()
            await watcher
        result.final_exit = await gateway.terminate()
        ids = await stream_ids(nats.url, STREAM, ledger_expected(ledger), timeout=60)
        stored = Counter(ids)
        result.stored_messages = len(ids)
        result.tally = ledger.tally(stored)
    finally:
        with contextlib.suppress(Exception):
            await gateway.terminate(10)
        with contextlib.suppress(Exception):
            await falco.stop()
        with contextlib.suppress(Exception):
            nats.resume()
            await nats.kill()
        disk.unmount()
        shutil.rmtree(socket_dir, ignore_errors=True)
    result.unexpected_exits = gateway.unexpected_exits
    result.rss_max_mib = gateway.rss_max / (1 << 20)
    result.statuses = ledger.statuses
    result.notes = rig.notes
    result.elapsed = time.monotonic() - begun
    return result


def ledger_expected(ledger: Ledger) -> int:
    return sum(1 for r in ledger.alerts.values() if r.outcome in ("accepted", "handed"))


async def _load_and_faults(rig: Rig, result: RunResult) -> None:
    options = result.options
    stop = asyncio.Event()
    seed = options.seed
    senders = [
        asyncio.create_task(
            http_sender(
                url=rig.gateway.url,
                rate=options.rate,
                maker=rig.maker,
                rng=load_rng(seed, "http"),
                ledger=rig.ledger,
                stop=stop,
            )
        ),
        asyncio.create_task(
            grpc_emitter(
                falco=rig.falco,
                rate=options.rate,
                maker=rig.maker,
                rng=load_rng(seed, "grpc"),
                stop=stop,
            )
        ),
    ]
    start = time.monotonic()
    try:
        for fault in result.schedule:
            await asyncio.sleep(max(0.0, start + fault.at - time.monotonic()))
            print(f"  {fault.describe()}", flush=True)
            await inject(fault, rig)
            result.injected[fault.kind] += 1
        await asyncio.sleep(max(0.0, start + options.duration - time.monotonic()))
    finally:
        stop.set()
        for outcome in await asyncio.gather(*senders, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome


async def _drain(rig: Rig, result: RunResult) -> None:
    """Until Falco's queue is empty and the gateway's spool is empty, within the bound."""
    began = time.monotonic()
    deadline = began + result.options.drain_bound
    while time.monotonic() < deadline:
        spooled = await rig.gateway.metric("falco_nats_gateway_spool_alerts")
        if len(rig.falco.queue) == 0 and spooled == 0:
            result.drain_seconds = time.monotonic() - began
            return
        await asyncio.sleep(0.5)
    spooled = await rig.gateway.metric("falco_nats_gateway_spool_alerts")
    result.stuck.append(
        f"not drained {result.options.drain_bound:.0f}s after the faults stopped: "
        f"{len(rig.falco.queue)} alert(s) still in Falco's queue, "
        f"{'unknown' if spooled is None else int(spooled)} in the gateway's spool"
    )


async def _until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f}s for {what}")
        await asyncio.sleep(0.2)


__all__ = ["FAULT_KINDS", "RunOptions", "RunResult", "available_kinds", "run_once"]
