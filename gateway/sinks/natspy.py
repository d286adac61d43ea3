"""nats-py, fenced: the one module that knows how nats-py behaves inside.

The rest of the gateway talks to NATS through `NatsLink`, which
- keeps one connection for the process's life and connects again even when
  nats-py gives a connection up for good (it closes, rather than reconnects,
  on a server `-ERR` such as a payload violation);
- says what the server counts against `max_payload` (payload and headers, as
  nats-py encodes them), so the gateway never sends a message the server would
  answer by dropping the connection;
- confirms core publishes with a PING that really comes after them: nats-py
  2.16's `flush()` writes its PING straight to the socket, ahead of publishes
  still queued for its flusher task (docs/upstream/flush-ping-overtakes-publishes.md);
- maps nats-py's exceptions to `LinkDown` at the boundary.

What this relies on in nats-py, beyond its documented API, is listed in
`RELIED_ON` and checked by `self_check()` at start-up: a nats-py that differs
stops the gateway with a message naming its version, instead of confirming
alerts that the server has not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import Any

import nats.aio.client
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from gateway.backoff import Backoff
from gateway.config import redact
from gateway.errors import LinkDown, NatsPyMismatch
from gateway.logs import StateLog, log

LOG = logging.getLogger("gateway.nats")

# The nats-py minor this adapter was written against and tested with (pyproject pins it).
TESTED_MINOR = "2.16"

# nats-py buffers publishes while it reconnects; the spool is the real buffer, so
# this only needs to hold one batch.
RECONNECT_BUFFER_BYTES = 8 * 1024 * 1024

# flush()'s own timeout, which must never be reached (see NatsLink.ping).
FLUSH_LIMIT = 600

# The header block nats-py writes before the headers (HPUB), and what ends a line.
_HEADER_LINE = b"NATS/1.0"
_CRLF = b"\r\n"

# Internals the adapter depends on; self_check() verifies each one.
RELIED_ON = (
    "Client.pending_data_size counts publishes its flusher task has not written yet",
    "Client.max_payload is the server's INFO max_payload",
    f"headers are encoded as {_HEADER_LINE.decode()}\\r\\n, 'key: value'\\r\\n each, \\r\\n",
)


def self_check() -> None:
    """Fail loudly when nats-py is not what `RELIED_ON` describes."""
    installed = version("nats-py")
    problems = []
    if not installed.startswith(TESTED_MINOR + "."):
        problems.append(f"the gateway is tested with nats-py {TESTED_MINOR}.x")
    for name in ("pending_data_size", "max_payload"):
        if not isinstance(getattr(Client, name, None), property):
            problems.append(f"nats.aio.client.Client.{name} is not a property")
    if bytes(getattr(nats.aio.client, "NATS_HDR_LINE", b"")) != _HEADER_LINE:
        problems.append("nats-py no longer writes the NATS/1.0 header line")
    if problems:
        raise NatsPyMismatch(
            f"nats-py {installed} is not supported: {'; '.join(problems)}. "
            f"Install nats-py=={TESTED_MINOR}.* (pyproject.toml pins it)"
        )


def message_size(payload: bytes, headers: dict[str, str]) -> int:
    """Bytes of a message the server counts against max_payload: headers and payload.

    Mirrors nats-py's encoding (Client._send_publish): the header line, then
    `key: value` per header, then an empty line.
    """
    size = len(_HEADER_LINE) + 2 * len(_CRLF) if headers else 0
    for key, value in headers.items():
        size += len(key.strip().encode()) + 2 + len(value.strip().encode()) + len(_CRLF)
    return size + len(payload)


class NatsLink:
    """One connection to NATS, kept up for the life of the process."""

    def __init__(
        self,
        options: dict[str, Any],
        *,
        connect_timeout: int = 2,
        reconnect_wait: int = 1,
        request_timeout: float = 5.0,
    ) -> None:
        """`options`: nats-py connect arguments (gateway.nats_options.connect_options);
        `request_timeout`: for JetStream's management requests."""
        self.options = options
        self.servers: list[str] = list(options["servers"])
        self._connect_timeout = connect_timeout
        self._reconnect_wait = reconnect_wait
        self._request_timeout = request_timeout
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._flushes: set[asyncio.Future[None]] = set()  # PINGs out, kept from the GC
        self._replies: tuple[str, Callable[[Msg], Awaitable[None]]] | None = None
        self.reconnects = 0
        self.epoch = 0  # connections lost so far: answers due on a lost one never come
        self.state = StateLog("nats", LOG)
        # Called whenever the connection goes or comes back: whoever waits for an
        # answer must not wait for one a lost connection will never bring.
        self.on_change: Callable[[], None] = lambda: None

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def status(self) -> str:
        return "connected" if self.connected else f"NATS {self.state.state}"

    @property
    def server(self) -> str:
        """host:port of the server connected to ('?' while down)."""
        return _server(self._nc) if self._nc is not None else "?"

    @property
    def max_payload(self) -> int:
        """The server's limit on one message (headers and payload), from its INFO."""
        nc = self._nc
        return nc.max_payload if nc is not None else nats.aio.client.DEFAULT_MAX_PAYLOAD_SIZE

    @property
    def jetstream(self) -> JetStreamContext | None:
        return self._js if self.connected else None

    async def start(self) -> None:
        """Connect in the background: the gateway accepts (and spools) meanwhile."""
        self._task = asyncio.create_task(self.keep_connected(), name="nats-connect")

    async def wait_connected(self, timeout: float | None = None) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout)
        return self.connected

    async def listen_replies(self, prefix: str, callback: Callable[[Msg], Awaitable[None]]) -> None:
        """Deliver messages on `prefix*` to `callback`, on this connection and every
        one after it (JetStream's acks come back on them)."""
        self._replies = (prefix, callback)
        if self._nc is not None and self._nc.is_connected:
            await self._nc.subscribe(prefix + "*", cb=callback)

    def new_inbox(self) -> str:
        """A reply subject of this process's own, valid on every connection it makes."""
        prefix = self.options.get("inbox_prefix", "_INBOX")
        return f"{prefix}.{secrets.token_hex(11)}"

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str], reply: str = ""
    ) -> None:
        """Queue one message for the socket; LinkDown when the connection is gone."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise LinkDown("not connected to NATS")
        try:
            await nc.publish(subject, payload, reply, headers)
        except (nats.errors.Error, OSError) as exc:
            raise LinkDown(f"publish failed: {type(exc).__name__}") from exc

    async def ping(self, timeout: float) -> asyncio.Future[None]:
        """A future done once the server has read everything published so far (a
        PING it answers after them); failed with LinkDown if that does not happen
        within `timeout` seconds or the connection goes. Cancelling it is safe."""
        loop = asyncio.get_running_loop()
        nc = self._nc
        if nc is None or not nc.is_connected:
            return _failed(LinkDown("not connected to NATS"))
        # Let the flusher write its queue first: one turn of the loop (it was woken
        # by the publishes), more while back-pressure holds it.
        await asyncio.sleep(0)
        while nc.pending_data_size and nc.is_connected:  # noqa: ASYNC110 - no event for it
            await asyncio.sleep(0.001)
        # flush() must never time out or be cancelled: nats-py leaves the cancelled
        # PONG future in its queue, and the PONG that comes later kills its read
        # loop (docs/upstream/late-pong-kills-read-loop.md). It gets a limit no
        # connection outlives (nats-py's own PINGs find a dead one within minutes);
        # the caller's timeout is kept on a future of our own.
        flush = asyncio.ensure_future(nc.flush(timeout=FLUSH_LIMIT))
        self._flushes.add(flush)
        confirmation: asyncio.Future[None] = loop.create_future()

        def answered(done: asyncio.Future[None]) -> None:
            self._flushes.discard(done)
            error = None if done.cancelled() else done.exception()
            if not confirmation.done():
                if error is None and not done.cancelled():
                    confirmation.set_result(None)
                else:
                    confirmation.set_exception(LinkDown(f"no PONG: {_describe(error)}"))

        def overdue() -> None:
            if not confirmation.done():
                confirmation.set_exception(LinkDown(f"no PONG within {timeout:g} s"))

        flush.add_done_callback(answered)
        timer = loop.call_later(timeout, overdue)
        confirmation.add_done_callback(lambda _: timer.cancel())
        # Whoever asked may have given up on it (a rewind): its failure is read here
        # so asyncio never reports an exception nobody retrieved.
        confirmation.add_done_callback(_retrieve)
        return confirmation

    async def close(self, timeout: float = 5.0) -> None:
        """Send what is queued and close; bounded by `timeout`."""
        self._closing = True
        try:
            await self._close(timeout)
        finally:
            # PINGs a lost connection will never answer (nats-py forgets them on a
            # reconnect): nothing waits for them any more.
            flushes = list(self._flushes)
            for flush in flushes:
                flush.cancel()
            if flushes:
                await asyncio.wait(flushes, timeout=1.0)

    async def _close(self, timeout: float) -> None:
        task = self._task
        if task is not None and not task.done():
            # nats-py's connect() can swallow a cancellation; the task also looks at
            # _closing after connecting, and is waited for a bounded time only.
            task.cancel()
            await asyncio.wait({task}, timeout=timeout)
        nc = self._nc
        if nc is None or nc.is_closed:
            return
        try:
            await asyncio.wait_for(nc.drain(), timeout)
        except (TimeoutError, nats.errors.Error) as exc:
            log(logging.WARNING, "nats drain incomplete", LOG, error=type(exc).__name__)
            await nc.close()

    async def keep_connected(self) -> None:
        """Connect, and connect again whenever nats-py gives a connection up; returns
        once close() was called."""
        retry = Backoff(initial=0.5, maximum=float(max(self._reconnect_wait, 1)) * 5)
        while not self._closing:
            closed = asyncio.Event()
            try:
                await self._connect(closed)
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                # Only when the very first attempt fails for good (nats-py retries the
                # others itself); tried again after a pause.
                log(logging.WARNING, "nats connect failed", LOG, error=type(exc).__name__)
                await asyncio.sleep(retry.next_delay())
                continue
            retry.reset()
            if self._closing:
                return  # close() came while connecting
            await closed.wait()
            if self._closing:
                return
            log(
                logging.WARNING,
                "nats connection closed by the client library; connecting again",
                LOG,
                error=_describe(self._nc.last_error if self._nc is not None else None),
            )
            await asyncio.sleep(retry.next_delay())

    async def _connect(self, closed: asyncio.Event) -> None:
        nc = Client()
        first_error = True
        self.state.change("connecting", servers=redact(",".join(self.servers)))

        async def error_cb(exc: Exception) -> None:
            nonlocal first_error
            # nats-py calls this on every failed attempt; log an outage once.
            if first_error:
                log(logging.WARNING, "nats error", LOG, error=_describe(exc))
                first_error = False

        async def disconnected_cb() -> None:
            self.epoch += 1
            self._connected.clear()
            if not nc.is_closed and not nc.is_draining:
                self.state.change("disconnected", logging.WARNING)
            self.on_change()

        async def reconnected_cb() -> None:
            nonlocal first_error
            first_error = True
            self.reconnects += 1
            self.state.change("connected", server=_server(nc))
            self._connected.set()
            self.on_change()

        async def closed_cb() -> None:
            self.epoch += 1
            self._connected.clear()
            self.state.change("closed", logging.INFO if self._closing else logging.WARNING)
            closed.set()
            self.on_change()

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
        if self._replies is not None:
            prefix, callback = self._replies
            await nc.subscribe(prefix + "*", cb=callback)
        if self._nc is not None:
            self.reconnects += 1  # a new connection after nats-py closed the last one
        self._nc = nc
        # One JetStream context per connection, for managing the stream.
        self._js = nc.jetstream(timeout=self._request_timeout)
        first_error = True
        self.state.change("connected", server=_server(nc))
        self._connected.set()
        self.on_change()


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a future's exception as seen."""
    if not future.cancelled():
        future.exception()


def _failed(error: BaseException) -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_exception(error)
    return future


def _describe(exc: BaseException | None) -> str:
    return "" if exc is None else f"{type(exc).__name__}: {exc}"


def _server(nc: Client) -> str:
    url = nc.connected_url
    return f"{url.hostname}:{url.port}" if url is not None else "?"
