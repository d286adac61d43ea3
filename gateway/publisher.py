"""Moves spooled alerts to NATS, oldest first, and forgets them once NATS has them.

One task holds a window of groups in flight and a cursor into the spool. It
publishes what the spool has after the cursor without waiting for earlier
alerts to be confirmed, up to `max_in_flight` unconfirmed alerts; the sink's
strategy says what confirms a group (gateway.sinks.nats). Groups are settled
in order, from the front of the window: confirmed alerts leave the spool,
refused ones are counted and dropped. On a failure (a group not confirmed in
time, an answer that says no, the connection lost) the rest of the window is
dropped and the cursor goes back to the first unconfirmed alert, so a retry
keeps arrival order (and at-least-once: JetStream drops the re-sent copies by
Nats-Msg-Id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from gateway.backoff import Backoff
from gateway.errors import LinkDown, StreamError
from gateway.logs import OncePer, StateLog, log
from gateway.sinks.nats import Delivery, Group, NatsSink
from gateway.spool import Spool, SpooledAlert
from gateway.telemetry import Telemetry

LOG = logging.getLogger("gateway.publisher")

# A stream of alerts (a gRPC burst, many Falcos at once) is spooled one per turn of
# the event loop. Published one by one, each costs a turn of this task and a socket
# write of its own. While the spool keeps growing turn after turn, the publisher
# lets it grow for up to this many turns (about a millisecond at most) and sends
# what came in one go. When a turn brings nothing, it stops waiting for the next
# GATHER_REST turns (one Falco's pace: no stream to wait for).
GATHER_TURNS = 8
GATHER_REST = 8


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
        # Read and sent in batches of a quarter of that: the window refills as soon
        # as its oldest quarter is confirmed, rather than once all of it is.
        self.batch_size = max(1, batch_size // 4)
        self.max_age_ns = int(max_age * 1e9)
        self.state = StateLog("delivery", LOG)
        # Why NATS is not taking alerts right now ('' while they flow): /healthz, check.
        self.problem = ""
        self._episode: set[str] = set()  # problems logged since delivery last flowed
        self._wake = asyncio.Event()
        self._reasons = OncePer()
        self._window: deque[Group] = deque()
        self._in_flight = 0
        self._cursor = 0  # the last sequence number handed to NATS
        self._retry = Backoff(initial=0.05, maximum=2.0)
        self._rest = 0  # turns left without gathering
        self._started = False
        self._epoch = 0  # the sink's connection epoch the window was sent on
        sink.on_change = self.notify

    def notify(self) -> None:
        """Something was spooled or answered, the connection changed, or it is
        time to stop: look again."""
        self._wake.set()

    async def run(self, stop: asyncio.Event, drain_timeout: float) -> None:
        """Deliver until `stop`; then keep delivering what is spooled for up to
        `drain_timeout` seconds, and leave the rest in the spool. Whoever sets
        `stop` calls notify() too.

        Safe to call again after it failed: it starts over from the oldest alert
        in the spool (NATS may get some twice; JetStream drops those by id).
        """
        self._restart()
        if not self._started:
            await self.sink.start()
            await self._first_check(stop)
            self._started = True
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            # Cleared before looking, so whatever happens from here on wakes the wait.
            self._wake.clear()
            if stop.is_set() and deadline is None:
                deadline = loop.time() + drain_timeout
            remaining = None if deadline is None else deadline - loop.time()
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

    async def _first_check(self, stop: asyncio.Event) -> None:
        """A stream that cannot take the alerts is a start-up error (StreamError),
        not something the first alert should discover: check once NATS is there,
        and until NATS gives an answer."""
        while True:
            await _first_of(self.sink.wait_connected(), stop.wait())
            if stop.is_set():
                return
            try:
                await self.sink.prepare()
            except LinkDown:
                await asyncio.sleep(self._retry.next_delay())
                continue
            return

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
        if self.sink.epoch != self._epoch:
            # The connection went (it may be back already): what was in flight when
            # it did will never be answered, so it is sent again now rather than
            # after publish_timeout.
            self._epoch = self.sink.epoch
            if self._window:
                self._rewind(self._window[0].first_seq)
        if not self.sink.connected:
            if draining and not self.spool.count:
                return False
            self.state.change("waiting", logging.WARNING, spooled=self.spool.count)
            waits = [self.sink.wait_connected(remaining)]
            await _first_of(*waits, *(() if draining else (stop.wait(),)))
            return True
        if failed or not await self._prepared() or not await self._send_all():
            await asyncio.sleep(self._retry.next_delay())
            return True
        await self.sink.request()
        if draining and not self._window and not self.spool.read(self._cursor, 1):
            return False
        if self._window and self._window[0].answered:
            return True  # settled without an answer (only refused alerts): look again
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

    async def _prepared(self) -> bool:
        """The sink can take alerts; if not, why is the delivery problem."""
        try:
            await self.sink.prepare()
        except (LinkDown, StreamError) as exc:
            # After start-up even a stream that cannot be used is only waited out.
            self._degraded(str(exc))
            return False
        return True

    async def _send_all(self) -> bool:
        """Everything there is room for, in one turn (a turn costs about as much as
        publishing an alert). False when a publish failed with NATS still there."""
        while self._in_flight < self.max_in_flight:
            room = self.max_in_flight - self._in_flight
            batch = self.spool.read(self._cursor, min(room, self.batch_size))
            if not batch:
                return True
            fresh = self._unexpired(batch)
            if not fresh:
                continue
            group, handled = await self.sink.send(fresh)
            if group is not None:
                self._window.append(group)
            self._in_flight += handled
            if handled:
                self._cursor = fresh[handled - 1].seq
            if handled < len(fresh):
                # The connection broke part-way: the rest goes once it is back.
                if self.sink.connected:
                    self._degraded("publish failed with NATS connected")
                    return False
                return True
        return True

    def _settle(self) -> bool:
        """Take answered (or overdue) groups off the front of the window; True when
        one was not wholly confirmed and the cursor went back."""
        window = self._window
        now = asyncio.get_running_loop().time()
        while window:
            group = window[0]
            if not group.answered and now < group.deadline:
                return False
            window.popleft()
            self._in_flight -= len(group.alerts) + len(group.refused)
            delivery = self.sink.settle(group)
            self._account(delivery)
            if delivery.resend_from is not None:
                self.telemetry.publish_failed()
                self._degraded(delivery.problem)
                self._rewind(delivery.resend_from)
                return True
        return False

    def _account(self, delivery: Delivery) -> None:
        if delivery.delivered:
            self.spool.delete(delivery.delivered)
            now = time.time_ns()
            add, observe = self.telemetry.add, self.telemetry.latency.observe
            for alert in delivery.delivered:
                add("published", alert.path)
                observe((now - alert.accepted_ns) / 1e9)
            self._flowing()
        if delivery.refused:
            self.spool.delete(alert for alert, _ in delivery.refused)
            for alert, reason in delivery.refused:
                self.telemetry.add("undeliverable", alert.path)
                if self._reasons.first(reason):
                    log(
                        logging.ERROR,
                        "alert cannot be delivered",
                        LOG,
                        alert_id=alert.alert_id,
                        reason=reason,
                    )

    def _rewind(self, first_unconfirmed: int) -> None:
        """Drop the window and read again from the first alert NATS did not confirm:
        order is kept, and JetStream drops any re-sent copy by its Nats-Msg-Id."""
        for group in self._window:
            group.abandon()
        self._window.clear()
        self._in_flight = 0
        self.sink.reset()
        self._cursor = first_unconfirmed - 1

    def _restart(self) -> None:
        """Start over from the oldest alert in the spool (it holds only unconfirmed ones)."""
        self._rewind(1)
        self._cursor = 0
        self._rest = 0
        self._epoch = self.sink.epoch

    def _unexpired(self, batch: list[SpooledAlert]) -> list[SpooledAlert]:
        """`batch` less what waited longer than spool_max_age (dropped, counted)."""
        if not self.max_age_ns:
            return batch
        horizon = time.time_ns() - self.max_age_ns
        expired = [a for a in batch if a.accepted_ns < horizon]
        if not expired:
            return batch
        self.spool.delete(expired)
        for alert in expired:
            self.telemetry.add("expired", alert.path)
        log(
            logging.WARNING, "alerts expired in the spool (spool_max_age)", LOG, alerts=len(expired)
        )
        return [a for a in batch if a.accepted_ns >= horizon]

    def _degraded(self, problem: str) -> None:
        """NATS is there but not taking alerts: say why, once per reason and episode."""
        self.problem = problem
        if problem not in self._episode:
            self._episode.add(problem)
            log(logging.WARNING, "delivery degraded", LOG, reason=problem, spooled=self.spool.count)

    def _flowing(self) -> None:
        self._retry.reset()
        if self.problem:
            log(logging.INFO, "delivery recovered", LOG, spooled=self.spool.count)
            self.problem = ""
            self._episode.clear()
        self.state.change("flowing", spooled=self.spool.count)


async def _first_of(*waits: object) -> None:
    """Wait until the first of several awaitables finishes; cancel the others (they
    only wait, so there is nothing to wait for while they unwind)."""
    tasks = [asyncio.ensure_future(w) for w in waits]  # type: ignore[call-overload]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
