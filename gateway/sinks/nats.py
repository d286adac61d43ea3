"""The NATS sink: one long-lived connection, reconnecting forever, never one per alert."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError

from gateway.errors import SinkUnavailable
from gateway.logs import StateLog, log

LOG = logging.getLogger("gateway.nats")

# nats-py buffers publishes while it reconnects, up to this many bytes; past it
# publish raises and the gateway answers that NATS is unavailable.
RECONNECT_BUFFER_BYTES = 8 * 1024 * 1024


class NatsSink:
    def __init__(
        self,
        servers: list[str],
        name: str = "falco-nats-gateway",
        connect_timeout: int = 2,
        reconnect_wait: int = 1,
    ) -> None:
        self.servers = servers
        self._name = name
        self._connect_timeout = connect_timeout
        self._reconnect_wait = reconnect_wait
        self._nc: Client | None = None
        self._connecting: asyncio.Task[None] | None = None
        self.state = StateLog("nats", LOG)

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def status(self) -> str:
        """Why the sink is or is not usable, for /healthz."""
        return "connected" if self.connected else f"NATS {self.state.state}"

    async def start(self) -> None:
        """Connect in the background: the gateway serves (and says it is unhealthy) meanwhile."""
        self._connecting = asyncio.create_task(self._connect(), name="nats-connect")

    async def wait_connected(self, timeout: float) -> bool:
        assert self._connecting is not None, "start() first"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._connecting), timeout)
        return self.connected

    async def _connect(self) -> None:
        nc = Client()
        first_error = True
        self.state.change("connecting", servers=",".join(self.servers))

        async def error_cb(exc: Exception) -> None:
            nonlocal first_error
            # nats-py calls this on every failed attempt; log an outage once.
            if first_error:
                log(logging.WARNING, "nats error", LOG, error=f"{type(exc).__name__}: {exc}")
                first_error = False

        async def disconnected_cb() -> None:
            self.state.change("disconnected", logging.WARNING)

        async def reconnected_cb() -> None:
            nonlocal first_error
            first_error = True
            self.state.change("connected", server=_server(nc))

        async def closed_cb() -> None:
            self.state.change("closed")

        await nc.connect(
            servers=self.servers,
            name=self._name,
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
        self._nc = nc
        first_error = True
        self.state.change("connected", server=_server(nc))

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        nc = self._nc
        if nc is None:
            raise SinkUnavailable("NATS is not connected yet")
        try:
            await nc.publish(subject, payload, headers=headers)
        except nats.errors.MaxPayloadError:
            raise SinkUnavailable(
                f"alert of {len(payload)} bytes exceeds the NATS server's max_payload",
                retryable=False,
            ) from None
        except NatsError as exc:
            raise SinkUnavailable(f"NATS cannot take the alert: {type(exc).__name__}") from None

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what was published and close; bounded by `timeout`."""
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


def _server(nc: Client) -> str:
    url = nc.connected_url
    return f"{url.hostname}:{url.port}" if url is not None else "?"
