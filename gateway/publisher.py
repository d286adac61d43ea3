"""Moves spooled alerts to NATS, oldest first, and forgets them once NATS has them.

One task, with a window of alerts in flight: it publishes what the spool has
after its cursor without waiting for NATS to confirm the alerts before, up to
`max_in_flight` unconfirmed alerts, and settles the window in order as the
confirmations come (JetStream acks; in core mode one PING at a time that
covers everything published before it). Confirmed alerts leave the spool. On
a failure (an alert not confirmed in time, the connection lost) the rest of
the window is dropped and the cursor goes back to the first unconfirmed
alert, so a retry keeps arrival order (and at-least-once: JetStream drops the
re-sent copies by Nats-Msg-Id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from gateway.backoff import Backoff
from gateway.logs import OncePer, StateLog, log
from gateway.sinks.nats import Delivery, NatsSink, Sent
from gateway.spool import Spool, SpooledAlert
from gateway.telemetry import Telemetry

LOG = logging.getLogger("gateway.publisher")

# Core NATS: at most one PING per this many seconds. Alerts go out as they come
# (subscribers get them at once); the PING only says the server has them, so
# the spool can forget them. At one Falco's pace a PING per alert would cost
# about as much as the alert itself.
CONFIRM_INTERVAL = 0.005

# A stream of alerts (a gRPC burst, many Falcos at once) is spooled one per turn of
# the event loop. Published one by one, each costs a turn of this task and a socket
# write of its own. While the spool keeps growing turn after turn, the publisher
# lets it grow for up to this many turns (about a millisecond at most) and sends
# what came in one go. When a turn brings nothing, it stops waiting for the next
# GATHER_REST turns (one Falco's pace: no stream to wait for).
GATHER_TURNS = 8
GATHER_REST = 8


class _Group:
    """Alerts published together, settled together once NATS has answered for them."""

    __slots__ = ("confirmation", "deadline", "pending", "sent", "timer")

    def __init__(self, sent: Sent) -> None:
        self.sent = sent
        self.pending = len(sent.acks)  # JetStream acks still to come
        # Core NATS: the PING that covers this group, once one was sent.
        self.confirmation: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.deadline: float | None = None  # loop time by which NATS must have answered

    @property
    def answered(self) -> bool:
        if self.sent.acks:
            return self.pending == 0
        if not self.sent.alerts:
            return True  # only refused alerts: nothing to wait for
        return self.confirmation is not None and self.confirmation.done()

    @property
    def first_seq(self) -> int:
        firsts = [self.sent.alerts[:1], [a for a, _ in self.sent.rejected[:1]]]
        return min(alerts[0].seq for alerts in firsts if alerts)

    def joins(self, sent: Sent) -> bool:
        """Core NATS: `sent` can be settled with this group (no PING covers it yet)."""
        return not self.sent.acks and self.confirmation is None and self.sent.complete


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
        # Unconfirmed alerts at most: JetStream acks in flight, or core publishes
        # waiting for their PONG.
        self.max_in_flight = batch_size
        # Read and settled in groups of a quarter of that: the window refills as
        # soon as its oldest quarter is confirmed, rather than once all of it is.
        self.batch_size = max(1, batch_size // 4)
        self.max_age_ns = int(max_age * 1e9)
        self.state = StateLog("delivery", LOG)
        self._wake = asyncio.Event()
        self._reasons = OncePer()
        self._window: deque[_Group] = deque()
        self._in_flight = 0
        self._cursor = 0  # the last sequence number handed to NATS
        self._pinging = False  # core: a PING is out
        self._next_ping = 0.0  # core: loop time before which no PING is sent
        self._ping_timer: asyncio.TimerHandle | None = None
        self._retry = Backoff(initial=0.05, maximum=2.0)
        self._rest = 0  # turns left without gathering
        sink.on_change = self.notify

    def notify(self) -> None:
        """Something was spooled or answered, the connection changed, or it is
        time to stop: look again."""
        self._wake.set()

    async def run(self, stop: asyncio.Event, drain_timeout: float) -> None:
        """Deliver until `stop`; then keep delivering what is spooled for up to
        `drain_timeout` seconds, and leave the rest in the spool. Whoever sets
        `stop` calls notify() too."""
        deadline: float | None = None
        # A missing JetStream stream is a start-up error, not something the first
        # alert should discover: check as soon as NATS is there.
        if self.sink.stream is not None:
            await _first_of(self.sink.wait_connected(), stop.wait())
            await self.sink.ensure_stream()
        while True:
            # Cleared before looking, so whatever happens from here on wakes the wait.
            self._wake.clear()
            if stop.is_set() and deadline is None:
                deadline = time.monotonic() + drain_timeout
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            if not await self._step(stop, remaining):
                break
        if self.spool.count:
            where = (
                "kept in the spool"
                if self.spool.durable
                else "LOST: no spool_dir, the buffer is in memory"
            )
            log(logging.WARNING, f"undelivered alerts {where}", LOG, alerts=self.spool.count)

    async def _step(self, stop: asyncio.Event, remaining: float | None) -> bool:
        """One turn: settle, publish, confirm or wait. False when stopping and drained.

        `remaining`: seconds left to drain once stopping; None while running.
        """
        draining = remaining is not None
        if self._rest:
            self._rest -= 1
        elif self.spool.last_seq > self._cursor and self._in_flight < self.max_in_flight:
            await self._gather()
            # What woke this task while it gathered is looked at below.
            self._wake.clear()
        failed = self._settle()
        if not self.sink.connected:
            if self._window:
                self._rewind(self._window[0].first_seq)
            if draining and not self.spool.count:
                return False
            self.state.change("waiting", logging.WARNING, spooled=self.spool.count)
            await _first_of(
                self.sink.wait_connected(remaining), *(() if draining else (stop.wait(),))
            )
            return True
        if failed or not (self.sink.stream_ready or await self.sink.ensure_stream()):
            if failed:
                self.telemetry.publish_failed()
            await asyncio.sleep(self._retry.next_delay())
            return True
        # Everything there is room for, in one turn: a turn costs about as much as
        # publishing an alert.
        while await self._send_more():
            if not self.sink.connected:
                return True
        await self._confirm_core()
        if draining and not self._window and not self.spool.read(self._cursor, 1):
            return False
        if remaining is None:
            await self._wake.wait()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)
        return True

    async def _gather(self) -> None:
        """Let a stream of alerts pile up for a few turns (see GATHER_TURNS)."""
        spool = self.spool
        last = spool.last_seq
        for turn in range(GATHER_TURNS):
            if last - self._cursor >= self.batch_size:
                return
            await asyncio.sleep(0)
            if spool.last_seq == last:
                if turn == 0:
                    self._rest = GATHER_REST
                return
            last = spool.last_seq

    async def _send_more(self) -> bool:
        """Publish the next batch if the window has room; False if there was nothing."""
        room = self.max_in_flight - self._in_flight
        if room <= 0:
            return False
        batch = self._drop_expired(self.spool.read(self._cursor, min(room, self.batch_size)))
        if not batch:
            return False
        sent = await self.sink.publish(batch)
        self._cursor = batch[-1].seq
        if sent.alerts or sent.rejected:
            self._in_flight += len(sent.alerts)
            last = self._window[-1] if self._window else None
            if sent.acks:
                group = _Group(sent)
                self._watch_acks(group)
                self._window.append(group)
            elif last is not None and last.joins(sent):
                # Core NATS at one Falco's pace publishes an alert or two per turn;
                # one group per PING settles them together, not one by one.
                last.sent.alerts += sent.alerts
                last.sent.rejected += sent.rejected
            else:
                self._window.append(_Group(sent))
        if not sent.complete:
            # The connection broke part-way: send the rest again once it is back.
            unsent = batch[len(sent.alerts) + len(sent.rejected)]
            self._cursor = unsent.seq - 1
        return True

    def _watch_acks(self, group: _Group) -> None:
        def answered(_: object) -> None:
            group.pending -= 1
            if group.pending == 0:
                self._wake.set()

        for ack in group.sent.acks:
            ack.add_done_callback(answered)
        self._arm(group)

    async def _confirm_core(self) -> None:
        """Core NATS: one PING at a time, covering every group published before it."""
        if self._pinging or self.sink.stream is not None:
            return
        if self._ping_timer is not None:
            return
        # Groups get their PING in order, so the ones still without are at the end.
        waiting: list[_Group] = []
        for group in reversed(self._window):
            if group.confirmation is not None:
                break
            if group.sent.alerts:
                waiting.append(group)
        if not waiting:
            return
        waiting.reverse()
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_ping:
            self._ping_timer = loop.call_at(self._next_ping, self._ping_due)
            return
        self._next_ping = loop.time() + CONFIRM_INTERVAL
        self._pinging = True
        confirmation = await self.sink.confirm()
        for group in waiting:
            group.confirmation = confirmation
        self._arm(waiting[0])

        def answered(_: object) -> None:
            self._pinging = False
            self._wake.set()

        confirmation.add_done_callback(answered)

    def _ping_due(self) -> None:
        self._ping_timer = None
        self._wake.set()

    def _arm(self, group: _Group) -> None:
        """Wake the publisher when `group` is overdue: NATS took too long to answer."""
        loop = asyncio.get_running_loop()
        group.deadline = loop.time() + self.sink.publish_timeout
        group.timer = loop.call_at(group.deadline, self._wake.set)

    def _settle(self) -> bool:
        """Take answered (or overdue) groups off the front of the window; True when
        one was not wholly confirmed and the cursor went back."""
        window = self._window
        now = asyncio.get_running_loop().time()
        while window:
            group = window[0]
            if not group.answered and (group.deadline is None or now < group.deadline):
                return False
            window.popleft()
            if group.timer is not None:
                group.timer.cancel()
            self._in_flight -= len(group.sent.alerts)
            outcome = self.sink.settle(group.sent, group.confirmation)
            self._account(outcome)
            if len(outcome.delivered) + len(outcome.rejected) < len(group.sent.alerts) + len(
                group.sent.rejected
            ):
                settled = {a.seq for a in outcome.delivered} | {a.seq for a, _ in outcome.rejected}
                first = next(a for a in group.sent.alerts if a.seq not in settled)
                self._rewind(first.seq)
                return True
        self._retry.reset()
        self.state.change("flowing", spooled=self.spool.count)
        return False

    def _account(self, outcome: Delivery) -> None:
        if outcome.delivered:
            self.spool.delete(outcome.delivered)
            now = time.time_ns()
            add, observe = self.telemetry.add, self.telemetry.latency.observe
            for alert in outcome.delivered:
                add("published", alert.path)
                observe((now - alert.accepted_ns) / 1e9)
        if outcome.rejected:
            self._reject(outcome.rejected)

    def _rewind(self, first_unconfirmed: int) -> None:
        """Drop the window and read again from the first alert NATS did not confirm:
        order is kept, and JetStream drops any re-sent copy by its Nats-Msg-Id."""
        for group in self._window:
            if group.timer is not None:
                group.timer.cancel()
            for ack in group.sent.acks:
                ack.cancel()  # frees nats-py's slot; a late ack changes nothing
        self._window.clear()
        self._in_flight = 0
        self._pinging = False
        self._cursor = first_unconfirmed - 1

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
