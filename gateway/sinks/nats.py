"""The NATS sink: one long-lived connection, reconnecting forever, never one per alert.

`publish` hands a batch of spooled alerts to NATS without waiting; what
confirms them comes later, and `settle` says which NATS then has:
- core NATS: alerts are published as they come; `confirm` sends a PING after
  them, and its PONG says the server has read them all;
- JetStream: every alert is published with an ack request, and each one counts
  when its ack arrives (the publisher keeps a window of them in flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js import api as js_api

from gateway.config import redact
from gateway.errors import StreamError
from gateway.logs import StateLog, log
from gateway.spool import SpooledAlert
from gateway.subject import SubjectTemplate

LOG = logging.getLogger("gateway.nats")

# nats-py buffers publishes while it reconnects; the spool is the real buffer, so
# this only needs to hold one batch.
RECONNECT_BUFFER_BYTES = 8 * 1024 * 1024

EXPECTED_STREAM = js_api.Header.EXPECTED_STREAM.value
STATUS = js_api.Header.STATUS.value
NO_RESPONDERS = "503"


@dataclass(frozen=True)
class StreamSettings:
    name: str = "FALCO"
    subjects: tuple[str, ...] = ("falco.>",)
    create: bool = False
    storage: str = "file"
    replicas: int = 1
    max_age: float = 0.0
    duplicate_window: float = 120.0
    # The alerts' subjects, checked against an existing stream's own subjects.
    subject_template: str = ""


@dataclass(slots=True)
class Sent:
    """Alerts handed to NATS and what confirms them."""

    alerts: list[SpooledAlert]
    acks: list[asyncio.Future[Any]]  # JetStream: one per alert, in order; core: none
    rejected: list[tuple[SpooledAlert, str]]  # refused before sending: never deliverable
    complete: bool = True  # False: a connection error stopped the batch part-way


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
        self._acks = _Acks()
        self.reconnects = 0
        self.state = StateLog("nats", LOG)
        # Called when the connection goes or comes back: the publisher must not
        # wait for confirmations a lost connection will never bring.
        self.on_change: Callable[[], None] = lambda: None

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
            self.on_change()

        async def reconnected_cb() -> None:
            nonlocal first_error
            first_error = True
            self.reconnects += 1
            self.state.change("connected", server=_server(nc))
            self._connected.set()
            self.on_change()

        async def closed_cb() -> None:
            self._connected.clear()
            self.state.change("closed")
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
        # One JetStream context for the connection's life, for managing the stream.
        self._js = nc.jetstream(timeout=self.publish_timeout)
        if self.stream is not None:
            await self._acks.start(nc)
        self._nc = nc
        first_error = True
        self.state.change("connected", server=_server(nc))
        self._connected.set()

    @property
    def stream_ready(self) -> bool:
        """Alerts can be published: core NATS, or the stream was checked."""
        return self.stream is None or self._stream_ready

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
            return
        subjects = info.config.subjects or []
        template = SubjectTemplate(wanted.subject_template) if wanted.subject_template else None
        missing = template.uncaptured(subjects) if template is not None else None
        if missing is not None:
            # JetStream would answer every such alert "no responders", forever.
            raise StreamError(
                f"JetStream stream {wanted.name!r} (subjects {', '.join(subjects) or 'none'}) "
                f"does not capture {missing!r}, a subject of subject_template "
                f"{wanted.subject_template!r}; add it to the stream's subjects, or set "
                "stream_create: true to have the gateway set them"
            )
        if info.config.duplicate_window and info.config.duplicate_window < wanted.duplicate_window:
            log(
                logging.WARNING,
                "stream duplicate window is shorter than dedup_window",
                LOG,
                stream=wanted.name,
                duplicate_window=info.config.duplicate_window,
            )

    async def publish(self, batch: Sequence[SpooledAlert]) -> Sent:
        """Hand `batch` to NATS without waiting for it to be confirmed.

        JetStream: each alert's ack future is in `acks`. Core NATS: nothing is
        confirmed per alert; `confirm()` covers everything published before it.
        Stops at the first connection error (`complete` False): the alerts not
        in `alerts` or `rejected` were not sent.
        """
        sent = Sent([], [], [], complete=False)
        nc = self._nc
        if nc is None or not nc.is_connected:
            return sent
        stream = self.stream.name if self.stream is not None else None
        acks = self._acks
        try:
            for alert in batch:
                try:
                    if stream is None:
                        await nc.publish(alert.subject, alert.payload, headers=alert.headers)
                    else:
                        # JetStream stores it only in the expected stream, and says so
                        # on the reply subject.
                        reply, ack = acks.expect()
                        headers = {**alert.headers, EXPECTED_STREAM: stream}
                        try:
                            await nc.publish(alert.subject, alert.payload, reply, headers)
                        except BaseException:
                            acks.forget(reply)
                            raise
                        sent.acks.append(ack)
                except nats.errors.MaxPayloadError:
                    sent.rejected.append((alert, _too_big(alert)))
                    continue
                sent.alerts.append(alert)
        except (NatsError, OSError):
            return sent
        sent.complete = True
        return sent

    async def confirm(self) -> asyncio.Future[None]:
        """Core NATS: a future done once the server has read everything published so
        far (a PING it answers after them); failed if it does not answer in time."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return _failed(nats.errors.ConnectionClosedError())
        # nats-py's flush() writes its PING straight to the socket, ahead of any
        # publishes still queued for its flusher task (nats-py 2.16), so a PONG would
        # not cover them. Let the flusher write its queue first: one turn of the loop
        # (it was woken before this), more while back-pressure holds it.
        await asyncio.sleep(0)
        while nc._pending and nc.is_connected:  # noqa: ASYNC110 - nats-py has no event for it
            await asyncio.sleep(0.001)
        return asyncio.ensure_future(nc.flush(timeout=max(1, round(self.publish_timeout))))

    def settle(self, sent: Sent, confirmation: asyncio.Future[None] | None) -> Delivery:
        """What NATS confirmed of `sent`, once its acks (JetStream) or its
        `confirmation` (core) are done. Alerts in neither list are to be sent again."""
        delivered: list[SpooledAlert] = []
        rejected = list(sent.rejected)
        if not sent.acks:
            ok = confirmation is not None and _succeeded(confirmation)
            return Delivery(list(sent.alerts) if ok else [], rejected)
        for alert, ack in zip(sent.alerts, sent.acks, strict=True):
            if not ack.done() or ack.cancelled():
                continue
            error = ack.exception()
            if error is None:
                delivered.append(alert)
            elif isinstance(error, nats.js.errors.APIError) and error.code == 400:
                rejected.append((alert, f"JetStream refused it: {error.description}"))
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


class _Acks:
    """JetStream's answers to our publishes, on one reply subscription of our own.

    nats-py's publish_async costs, per alert, a random token (a getrandom call), a
    semaphore, a future with its callbacks, json.loads and a PubAck dataclass; and
    an error answer raises inside its callback and leaves the future pending, so a
    refused alert would wait out publish_timeout and be sent again forever. The
    publisher's window already bounds what is in flight, and an answer only needs
    to say stored, or why not.
    """

    # Futures the publisher gave up on (a rewind cancels them) stay until their
    # answer comes; past this many, the ones already done are dropped.
    SWEEP_AT = 16_384

    def __init__(self) -> None:
        self.prefix = ""
        self._next = 0
        self._waiting: dict[str, asyncio.Future[None]] = {}

    async def start(self, nc: Client) -> None:
        """Subscribe once per connection (nats-py renews it on every reconnect)."""
        self.prefix = nc.new_inbox() + "."
        await nc.subscribe(self.prefix + "*", cb=self._answered)

    def expect(self) -> tuple[str, asyncio.Future[None]]:
        """A reply subject for one publish, and the future its answer settles."""
        if len(self._waiting) >= self.SWEEP_AT:
            self._waiting = {t: f for t, f in self._waiting.items() if not f.done()}
        self._next += 1
        token = str(self._next)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        return self.prefix + token, future

    def forget(self, reply: str) -> None:
        """The publish did not go out: no answer will come."""
        future = self._waiting.pop(reply[len(self.prefix) :], None)
        if future is not None:
            future.cancel()

    async def _answered(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self.prefix) :], None)
        if future is None or future.done():
            return  # given up on (rewound), or a second answer
        if msg.headers and msg.headers.get(STATUS) == NO_RESPONDERS:
            # No stream takes the subject: worth retrying (the stream may come).
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            answer = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            future.set_exception(nats.js.errors.APIError(description="unreadable JetStream ack"))
            return
        error = answer.get("error")
        if error is None:
            future.set_result(None)
            return
        if not isinstance(error, dict):
            error = {"description": str(error)}
        future.set_exception(
            nats.js.errors.APIError(
                code=error.get("code"),
                err_code=error.get("err_code"),
                description=error.get("description"),
            )
        )


def _stream_config(settings: StreamSettings) -> js_api.StreamConfig:
    return js_api.StreamConfig(
        name=settings.name,
        subjects=list(settings.subjects),
        storage=js_api.StorageType(settings.storage),
        num_replicas=settings.replicas,
        max_age=settings.max_age or None,
        duplicate_window=settings.duplicate_window,
    )


def _failed(error: BaseException) -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_exception(error)
    return future


def _succeeded(future: asyncio.Future[None]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _too_big(alert: SpooledAlert) -> str:
    return f"alert of {len(alert.payload)} bytes exceeds the NATS server's max_payload"


def _server(nc: Client) -> str:
    url = nc.connected_url
    return f"{url.hostname}:{url.port}" if url is not None else "?"
