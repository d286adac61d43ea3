"""The NATS sink: one long-lived connection, reconnecting forever, never one per alert.

`deliver` hands a batch of spooled alerts to NATS and says which NATS now has:
- core NATS: every alert is published, then one flush (a PING answered by the
  server) confirms the server received them all;
- JetStream: every alert is published with an ack request, up to the whole
  batch in flight at once, and each one counts when its ack arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js import api as js_api

from gateway.config import redact
from gateway.errors import StreamError
from gateway.logs import StateLog, log
from gateway.spool import SpooledAlert

LOG = logging.getLogger("gateway.nats")

# nats-py buffers publishes while it reconnects; the spool is the real buffer, so
# this only needs to hold one batch.
RECONNECT_BUFFER_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class StreamSettings:
    name: str = "FALCO"
    subjects: tuple[str, ...] = ("falco.>",)
    create: bool = False
    storage: str = "file"
    replicas: int = 1
    max_age: float = 0.0
    duplicate_window: float = 120.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of a batch: NATS has `delivered`; `rejected` can never be delivered."""

    delivered: list[SpooledAlert]
    rejected: list[tuple[SpooledAlert, str]]


class NatsSink:
    def __init__(
        self,
        options: dict[str, Any],
        stream: StreamSettings | None = None,
        *,
        publish_timeout: float = 5.0,
        connect_timeout: int = 2,
        reconnect_wait: int = 1,
    ) -> None:
        """`options`: nats-py connect arguments (gateway.nats_options.connect_options)."""
        self.options = options
        self.servers: list[str] = list(options["servers"])
        self.stream = stream
        self.publish_timeout = publish_timeout
        self._connect_timeout = connect_timeout
        self._reconnect_wait = reconnect_wait
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._stream_ready = False
        self.reconnects = 0
        self.state = StateLog("nats", LOG)

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def status(self) -> str:
        """Why the sink is or is not usable, for /healthz."""
        return "connected" if self.connected else f"NATS {self.state.state}"

    async def start(self) -> None:
        """Connect in the background: the gateway accepts (and spools) meanwhile."""
        self._connecting = asyncio.create_task(self._connect(), name="nats-connect")

    async def wait_connected(self, timeout: float | None = None) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout)
        return self.connected

    async def _connect(self) -> None:
        nc = Client()
        first_error = True
        self.state.change("connecting", servers=redact(",".join(self.servers)))

        async def error_cb(exc: Exception) -> None:
            nonlocal first_error
            # nats-py calls this on every failed attempt; log an outage once.
            if first_error:
                log(logging.WARNING, "nats error", LOG, error=f"{type(exc).__name__}: {exc}")
                first_error = False

        async def disconnected_cb() -> None:
            self._connected.clear()
            if not nc.is_closed and not nc.is_draining:
                self.state.change("disconnected", logging.WARNING)

        async def reconnected_cb() -> None:
            nonlocal first_error
            first_error = True
            self.reconnects += 1
            self.state.change("connected", server=_server(nc))
            self._connected.set()

        async def closed_cb() -> None:
            self._connected.clear()
            self.state.change("closed")

        await nc.connect(
            **self.options,
            connect_timeout=self._connect_timeout,
            reconnect_time_wait=self._reconnect_wait,
            max_reconnect_attempts=-1,
            allow_reconnect=True,
            pending_size=RECONNECT_BUFFER_BYTES,
            error_cb=error_cb,
            disconnected_cb=disconnected_cb,
            reconnected_cb=reconnected_cb,
            closed_cb=closed_cb,
        )
        # One JetStream context for the connection's life: each context opens
        # its own reply subscription for acks.
        self._js = nc.jetstream(timeout=self.publish_timeout)
        self._nc = nc
        first_error = True
        self.state.change("connected", server=_server(nc))
        self._connected.set()

    async def ensure_stream(self) -> bool:
        """Check, create or update the JetStream stream once connected.

        True when alerts can be published; False on a passing problem (not
        connected, a timeout), to be tried again; StreamError when the stream
        is missing and may not be created, or JetStream is off.
        """
        if self.stream is None or self._stream_ready:
            return True
        js = self._js
        if js is None or not self.connected:
            return False
        try:
            await self._check_stream(js, self.stream)
        except nats.js.errors.ServiceUnavailableError:
            raise StreamError(
                "JetStream is not enabled on the NATS server (start it with -js)"
            ) from None
        except (NatsError, TimeoutError) as exc:
            if isinstance(exc, StreamError):
                raise
            log(logging.WARNING, "stream check failed, will retry", LOG, error=type(exc).__name__)
            return False
        self._stream_ready = True
        return True

    async def _check_stream(self, js: JetStreamContext, wanted: StreamSettings) -> None:
        try:
            info = await js.stream_info(wanted.name)
        except nats.js.errors.NotFoundError:
            if not wanted.create:
                raise StreamError(
                    f"JetStream stream {wanted.name!r} does not exist; create it "
                    f"(subjects {', '.join(wanted.subjects)}) or set stream_create: true"
                ) from None
            await js.add_stream(_stream_config(wanted))
            log(
                logging.INFO,
                "stream created",
                LOG,
                stream=wanted.name,
                subjects=",".join(wanted.subjects),
            )
            return
        if wanted.create:
            await js.update_stream(_stream_config(wanted))
        elif (
            info.config.duplicate_window and info.config.duplicate_window < wanted.duplicate_window
        ):
            log(
                logging.WARNING,
                "stream duplicate window is shorter than dedup_window",
                LOG,
                stream=wanted.name,
                duplicate_window=info.config.duplicate_window,
            )

    async def deliver(self, batch: Sequence[SpooledAlert]) -> Delivery:
        """Hand `batch` to NATS. Alerts in neither list of the result stay to be retried."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return Delivery([], [])
        if self.stream is not None:
            return await self._deliver_jetstream(batch)
        return await self._deliver_core(nc, batch)

    async def _deliver_core(self, nc: Client, batch: Sequence[SpooledAlert]) -> Delivery:
        sent: list[SpooledAlert] = []
        rejected: list[tuple[SpooledAlert, str]] = []
        try:
            for alert in batch:
                try:
                    await nc.publish(alert.subject, alert.payload, headers=alert.headers)
                except nats.errors.MaxPayloadError:
                    rejected.append((alert, _too_big(alert)))
                    continue
                sent.append(alert)
            # The server answers PONG after it has read every message before the PING.
            await nc.flush(timeout=max(1, int(self.publish_timeout)))
        except (NatsError, TimeoutError, OSError):
            return Delivery([], rejected)
        return Delivery(sent, rejected)

    async def _deliver_jetstream(self, batch: Sequence[SpooledAlert]) -> Delivery:
        js = self._js
        assert self.stream is not None
        assert js is not None
        pending: dict[asyncio.Future[js_api.PubAck], SpooledAlert] = {}
        rejected: list[tuple[SpooledAlert, str]] = []
        try:
            for alert in batch:
                try:
                    future = await js.publish_async(
                        alert.subject,
                        alert.payload,
                        headers=dict(alert.headers),
                        stream=self.stream.name,
                    )
                except nats.errors.MaxPayloadError:
                    rejected.append((alert, _too_big(alert)))
                    continue
                pending[future] = alert
        except (NatsError, OSError):
            pass  # what was sent may still be acked below; the rest is retried
        if not pending:
            return Delivery([], rejected)
        done, not_done = await asyncio.wait(pending, timeout=self.publish_timeout)
        for future in not_done:
            future.cancel()
        delivered = []
        for future in done:
            error = future.exception()
            if error is None:
                delivered.append(pending[future])
            elif isinstance(error, nats.js.errors.APIError) and error.code == 400:
                rejected.append((pending[future], f"JetStream refused it: {error.description}"))
        delivered.sort(key=lambda a: a.seq)
        return Delivery(delivered, rejected)

    async def close(self, timeout: float = 5.0) -> None:
        """Flush and close; bounded by `timeout`."""
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        nc = self._nc
        if nc is None or nc.is_closed:
            return
        try:
            await asyncio.wait_for(nc.drain(), timeout)
        except (TimeoutError, NatsError) as exc:
            log(logging.WARNING, "nats drain incomplete", LOG, error=type(exc).__name__)
            await nc.close()


def _stream_config(settings: StreamSettings) -> js_api.StreamConfig:
    return js_api.StreamConfig(
        name=settings.name,
        subjects=list(settings.subjects),
        storage=js_api.StorageType(settings.storage),
        num_replicas=settings.replicas,
        max_age=settings.max_age or None,
        duplicate_window=settings.duplicate_window,
    )


def _too_big(alert: SpooledAlert) -> str:
    return f"alert of {len(alert.payload)} bytes exceeds the NATS server's max_payload"


def _server(nc: Client) -> str:
    url = nc.connected_url
    return f"{url.hostname}:{url.port}" if url is not None else "?"
