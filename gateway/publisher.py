"""Moves spooled alerts to NATS, oldest first, and forgets them once NATS has them.

One task. It reads a batch after its cursor, hands it to the sink, deletes
what NATS confirmed, and on a failure rewinds the cursor to the first alert
NATS did not confirm, so a retry keeps arrival order (and at-least-once:
JetStream drops the re-sent copies by Nats-Msg-Id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from gateway.backoff import Backoff
from gateway.logs import OncePer, StateLog, log
from gateway.sinks.nats import NatsSink
from gateway.spool import Spool, SpooledAlert
from gateway.telemetry import Telemetry

LOG = logging.getLogger("gateway.publisher")


class Publisher:
    def __init__(
        self,
        spool: Spool,
        sink: NatsSink,
        telemetry: Telemetry,
        *,
        batch_size: int = 256,
        max_age: float = 0.0,
    ) -> None:
        self.spool = spool
        self.sink = sink
        self.telemetry = telemetry
        self.batch_size = batch_size
        self.max_age_ns = int(max_age * 1e9)
        self.state = StateLog("delivery", LOG)
        self._wake = asyncio.Event()
        self._reasons = OncePer()

    def notify(self) -> None:
        """Something was spooled, or it is time to stop: look again."""
        self._wake.set()

    async def run(self, stop: asyncio.Event, drain_timeout: float) -> None:
        """Deliver until `stop`; then keep delivering what is spooled for up to
        `drain_timeout` seconds, and leave the rest in the spool. Whoever sets
        `stop` calls notify() too."""
        deadline: float | None = None
        cursor = 0
        retry = Backoff(initial=0.05, maximum=2.0)
        # A missing JetStream stream is a start-up error, not something the first
        # alert should discover: check as soon as NATS is there.
        if self.sink.stream is not None:
            await _first_of(self.sink.wait_connected(), stop.wait())
            await self.sink.ensure_stream()
        while True:
            if stop.is_set() and deadline is None:
                deadline = time.monotonic() + drain_timeout
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            batch = self._drop_expired(self.spool.read(cursor, self.batch_size))
            if not batch:
                if deadline is not None:
                    break
                await self._idle(cursor)
            elif not self.sink.connected:
                self.state.change("waiting", logging.WARNING, spooled=self.spool.count)
                await _first_of(
                    self.sink.wait_connected(remaining), *(() if deadline else (stop.wait(),))
                )
            else:
                cursor = await self._deliver(batch, retry)
        if self.spool.count:
            where = (
                "kept in the spool"
                if self.spool.durable
                else "LOST: no spool_dir, the buffer is in memory"
            )
            log(logging.WARNING, f"undelivered alerts {where}", LOG, alerts=self.spool.count)

    async def _idle(self, cursor: int) -> None:
        # One event, set by notify() for new alerts and for stopping: no extra
        # tasks per idle spell, which at low rates is once per alert.
        self._wake.clear()
        if not self.spool.read(cursor, 1):  # nothing slipped in before the clear
            await self._wake.wait()

    async def _deliver(self, batch: list[SpooledAlert], retry: Backoff) -> int:
        """Hand `batch` to NATS; the cursor to read on from."""
        if not await self.sink.ensure_stream():
            await asyncio.sleep(retry.next_delay())
            return batch[0].seq - 1
        outcome = await self.sink.deliver(batch)
        self.spool.delete(outcome.delivered)
        now = time.time_ns()
        for alert in outcome.delivered:
            self.telemetry.add("published", alert.path)
            self.telemetry.latency.observe((now - alert.accepted_ns) / 1e9)
        if outcome.rejected:
            self._reject(outcome.rejected)
        settled = {a.seq for a in outcome.delivered} | {a.seq for a, _ in outcome.rejected}
        unsettled = [a for a in batch if a.seq not in settled]
        if unsettled:
            self.telemetry.publish_failed()
            # Rewind to the first alert NATS did not confirm: order is kept, and
            # JetStream drops any re-sent copy by its Nats-Msg-Id.
            await asyncio.sleep(retry.next_delay())
            return unsettled[0].seq - 1
        retry.reset()
        self.state.change("flowing", spooled=self.spool.count)
        return batch[-1].seq

    def _drop_expired(self, batch: list[SpooledAlert]) -> list[SpooledAlert]:
        if not self.max_age_ns or not batch:
            return batch
        horizon = time.time_ns() - self.max_age_ns
        expired = [a for a in batch if a.accepted_ns < horizon]
        if expired:
            self.spool.delete(expired)
            for alert in expired:
                self.telemetry.add("expired", alert.path)
            log(
                logging.WARNING,
                "alerts expired in the spool (spool_max_age)",
                LOG,
                alerts=len(expired),
            )
        return [a for a in batch if a.accepted_ns >= horizon]

    def _reject(self, rejected: list[tuple[SpooledAlert, str]]) -> None:
        self.spool.delete(alert for alert, _ in rejected)
        for alert, reason in rejected:
            self.telemetry.add("undeliverable", alert.path)
            if self._reasons.first(reason):
                log(
                    logging.ERROR,
                    "alert cannot be delivered",
                    LOG,
                    alert_id=alert.alert_id,
                    reason=reason,
                )


async def _first_of(*waits: object) -> None:
    """Wait until the first of several awaitables finishes; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]  # type: ignore[call-overload]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
