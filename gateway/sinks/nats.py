"""The NATS sink: publishing alerts, and knowing which ones NATS has.

`NatsSink.send` publishes a batch of spooled alerts in order, without waiting,
and returns the `Group` that tracks their confirmation. How NATS confirms is
the one thing that differs between the two modes, so each is a strategy:

- `CoreConfirmation`: nothing comes back per message. A PING sent after a
  group is answered only once the server has read everything before it, so
  one PING confirms a whole group: the alerts published since the last PING.
- `JetStreamConfirmation`: every publish asks for an ack on a reply subject
  of the sink's own, and each alert counts when its ack says it is stored.

Either way an alert that does not fit the server's `max_payload` (or the
stream's `max_msg_size`) is shortened to fit (gateway.fit), and refused only
when it cannot be: it is never sent as it is, since the server answers an
oversize message by dropping the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from gateway.errors import LinkDown
from gateway.fit import fit_payload
from gateway.sinks.natspy import message_size
from gateway.sinks.stream import StreamCheckFailed, StreamSettings, prepare_stream
from gateway.spool import SpooledAlert

# Core NATS: at most one PING per this many seconds. Alerts go out as they come
# (subscribers get them at once); the PING only says the server has them, so
# the spool can forget them. At one Falco's pace a PING per alert would cost
# about as much as the alert itself.
CONFIRM_INTERVAL = 0.005

# JetStream's headers: the stream that must store the message, and the status of
# an answer that came from no stream at all.
EXPECTED_STREAM = "Nats-Expected-Stream"
STATUS = "Status"
NO_RESPONDERS = "503"


class Link(Protocol):
    """What the sink needs of a connection (gateway.sinks.natspy.NatsLink)."""

    on_change: Callable[[], None]

    @property
    def connected(self) -> bool: ...

    @property
    def max_payload(self) -> int: ...

    @property
    def epoch(self) -> int:
        """How many times the connection was lost so far."""

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str], reply: str = ""
    ) -> None: ...

    async def ping(self, timeout: float) -> asyncio.Future[None]: ...

    async def listen_replies(
        self, prefix: str, callback: Callable[[Msg], Awaitable[None]]
    ) -> None: ...

    def new_inbox(self) -> str: ...

    async def wait_connected(self, timeout: float | None = None) -> bool: ...


class Refused(Exception):
    """NATS will never take this alert: the reason says why."""


@dataclass(slots=True)
class Delivery:
    """What became of a group: NATS has `delivered`; `refused` can never be
    delivered; from `resend_from` (a spool sequence number) on, alerts must be
    sent again, for the reason in `problem`."""

    delivered: list[SpooledAlert]
    refused: list[tuple[SpooledAlert, str]]
    resend_from: int | None = None
    problem: str = ""


@dataclass(slots=True, eq=False)
class Group:
    """Alerts handed to NATS together and settled together, in spool order."""

    alerts: list[SpooledAlert] = field(default_factory=list)
    refused: list[tuple[SpooledAlert, str]] = field(default_factory=list)
    # JetStream: one receipt per alert. Core: one, the PING's, once one covers the group.
    receipts: list[asyncio.Future[None]] = field(default_factory=list)
    # Loop time past which an unanswered group has failed; set once it is asked for.
    deadline: float = math.inf
    timer: asyncio.TimerHandle | None = None
    pending: int = 0  # receipts not answered yet
    done: bool = False  # settled or given up on: nothing joins it any more

    @property
    def first_seq(self) -> int:
        """The oldest alert in the group, sent or refused."""
        return min(g[0].seq for g in (self.alerts, [a for a, _ in self.refused[:1]]) if g)

    @property
    def answered(self) -> bool:
        if not self.alerts:
            return True  # only refused alerts: nothing to wait for
        return bool(self.receipts) and self.pending == 0

    def watch(self, wake: Callable[[], None], timeout: float) -> None:
        """Wake the publisher once every receipt is answered, or when overdue."""
        self.pending = len(self.receipts)

        def answered(_: object) -> None:
            self.pending -= 1
            if self.pending == 0:
                wake()

        for receipt in self.receipts:
            receipt.add_done_callback(answered)
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + timeout
        self.timer = loop.call_at(self.deadline, wake)

    def outcome(self) -> Delivery:
        """What NATS confirmed, once answered or overdue."""
        delivery = Delivery([], list(self.refused))
        shared = len(self.receipts) == 1
        for i, alert in enumerate(self.alerts):
            problem = _problem(self.receipts[0 if shared else i] if self.receipts else None)
            if not problem:
                delivery.delivered.append(alert)
            elif problem.startswith(REFUSED):
                delivery.refused.append((alert, problem))
            elif delivery.resend_from is None:
                delivery.resend_from, delivery.problem = alert.seq, problem
        return delivery

    def abandon(self) -> None:
        """Stop waiting for this group (settled, or given up on in a rewind)."""
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        for receipt in self.receipts:
            receipt.cancel()  # an answer that still comes changes nothing


# How a problem that makes an alert undeliverable starts; other problems are retried.
REFUSED = "refused: "
STREAM_GONE = "no JetStream stream takes the subject (no responders)"
NO_ANSWER = "no answer within publish_timeout"


class Confirmation(Protocol):
    """How NATS says it has an alert; one strategy per mode."""

    # Bytes of headers the strategy adds to an alert's own, counted against max_payload.
    added_header_bytes: int

    async def start(self) -> None:
        """Get ready on a new sink (JetStream: listen for acks)."""

    async def publish(self, alert: SpooledAlert, subject: str, payload: bytes) -> None:
        """Publish one alert, its subject and payload fitted to the limits; LinkDown
        if the connection is gone."""

    def place(self, published: Group) -> Group | None:
        """Track what was just published: a new group for the window, or None when
        it joined the group handed out before."""

    async def request(self) -> None:
        """Ask NATS to confirm what was published and is not asked about yet."""

    def reset(self) -> None:
        """Forget what was not asked about: the publisher rewound and sends it again."""


class NatsSink:
    """Publishes spooled alerts over a `Link`; the mode's strategy says what
    confirms them."""

    def __init__(
        self,
        link: Link,
        stream: StreamSettings | None = None,
        *,
        publish_timeout: float = 5.0,
        jetstream: Callable[[], JetStreamContext | None] | None = None,
    ) -> None:
        """`jetstream`: the link's JetStream context (None while down), for checking
        the stream."""
        self.link = link
        self.stream = stream
        self.publish_timeout = publish_timeout
        self._jetstream = jetstream or (lambda: None)
        self._max_msg_size: int | None = None
        self._stream_ready = stream is None
        self.strategy: Confirmation = (
            CoreConfirmation(link, self._wake, publish_timeout)
            if stream is None
            else JetStreamConfirmation(link, stream.name, self._wake, publish_timeout)
        )
        # Called when something changed: answers came, the connection went or came back.
        self.on_change: Callable[[], None] = lambda: None
        link.on_change = self._wake

    @property
    def connected(self) -> bool:
        return self.link.connected

    async def wait_connected(self, timeout: float | None = None) -> bool:
        return await self.link.wait_connected(timeout)

    @property
    def epoch(self) -> int:
        return self.link.epoch

    @property
    def ready(self) -> bool:
        """Alerts can be published: core NATS, or the stream was checked."""
        return self._stream_ready

    async def start(self) -> None:
        await self.strategy.start()

    async def prepare(self) -> None:
        """Check (or create) the JetStream stream. StreamError when it cannot be
        used as configured; LinkDown on a passing problem, to be tried again."""
        if self._stream_ready or self.stream is None:
            return
        js = self._jetstream()
        if js is None:
            raise LinkDown("not connected to NATS")
        try:
            self._max_msg_size = await prepare_stream(js, self.stream)
        except StreamCheckFailed as exc:
            raise LinkDown(f"stream check failed: {exc}") from exc
        self._stream_ready = True

    async def send(self, batch: Sequence[SpooledAlert]) -> tuple[Group | None, int]:
        """Publish `batch` in order. Returns the group now tracking it (None when
        it joined the group handed out before) and how many alerts of `batch` it
        took: fewer than all when the connection broke part-way."""
        published = Group()
        limit = self._limit()
        with contextlib.suppress(LinkDown):
            for alert in batch:
                try:
                    payload = _fitted(alert, limit, self.strategy.added_header_bytes)
                except Refused as exc:
                    published.refused.append((alert, str(exc)))
                    continue
                await self.strategy.publish(alert, _short_subject(alert.subject), payload)
                published.alerts.append(alert)
        handled = len(published.alerts) + len(published.refused)
        return (self.strategy.place(published) if handled else None), handled

    async def request(self) -> None:
        """Ask NATS to confirm what was sent and not asked about yet."""
        await self.strategy.request()

    def settle(self, group: Group) -> Delivery:
        """What NATS confirmed of `group`, answered or overdue; stop watching it."""
        delivery = group.outcome()
        group.abandon()
        if delivery.problem == STREAM_GONE:
            # Deleted, or its subjects edited: check it again before the next
            # publish, and create it again if allowed.
            self._stream_ready = False
        return delivery

    def reset(self) -> None:
        self.strategy.reset()

    def _limit(self) -> int:
        limit = self.link.max_payload
        if self._max_msg_size is not None:
            limit = min(limit, self._max_msg_size)
        return limit

    def _wake(self) -> None:
        self.on_change()


def _fitted(alert: SpooledAlert, limit: int, added_headers: int) -> bytes:
    """The alert's payload, shortened if it does not fit `limit` with its headers
    (its own and the `added_headers` bytes the strategy adds)."""
    headers = message_size(b"", alert.headers) + added_headers
    if len(alert.payload) + headers <= limit:
        return alert.payload
    fitted = fit_payload(alert.payload, limit - headers)
    if fitted is None:
        raise Refused(
            f"{REFUSED}alert of {len(alert.payload)} bytes cannot be shortened "
            f"to the {limit} bytes NATS takes"
        )
    return fitted


def _short_subject(subject: str) -> str:
    """`subject`, cut to MAX_SUBJECT_BYTES: the server drops the connection of a
    client whose protocol line exceeds its max_control_line (4 KiB by default),
    and a rule name, hence a subject, can be as long as a sender makes it."""
    if len(subject) <= MAX_SUBJECT_BYTES:  # subjects are ASCII (gateway.subject)
        return subject
    return subject.encode()[:MAX_SUBJECT_BYTES].decode(errors="ignore").rstrip(".")


# Far beyond any real rule's subject, and well inside max_control_line with the
# reply subject and sizes that share the line.
MAX_SUBJECT_BYTES = 1024


class CoreConfirmation:
    """Core NATS: one PING at a time, covering every alert published before it."""

    added_header_bytes = 0

    def __init__(self, link: Link, wake: Callable[[], None], timeout: float) -> None:
        self.link = link
        self.wake = wake
        self.timeout = timeout
        self._unasked: Group | None = None  # published since the last PING
        self._pinging = False
        self._next_ping = 0.0  # loop time before which no PING is sent
        self._ping_timer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        return None

    async def publish(self, alert: SpooledAlert, subject: str, payload: bytes) -> None:
        await self.link.publish(subject, payload, alert.headers)

    def place(self, published: Group) -> Group | None:
        # One Falco's pace publishes an alert or two per turn; everything until the
        # next PING is one group, settled together. (A group of refused alerts alone
        # needs no PING and may be settled before one is sent.)
        if self._unasked is not None and not self._unasked.done:
            self._unasked.alerts += published.alerts
            self._unasked.refused += published.refused
            return None
        self._unasked = published
        return published

    async def request(self) -> None:
        group = self._unasked
        if group is None or self._pinging or self._ping_timer is not None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_ping:
            self._ping_timer = loop.call_at(self._next_ping, self._ping_due)
            return
        self._unasked = None
        if not group.alerts:
            return  # only refused alerts: nothing to ask about
        self._next_ping = loop.time() + CONFIRM_INTERVAL
        self._pinging = True
        confirmation = await self.link.ping(self.timeout)
        group.receipts.append(confirmation)
        group.watch(self.wake, self.timeout)
        confirmation.add_done_callback(self._answered)

    def reset(self) -> None:
        self._unasked = None
        self._pinging = False

    def _answered(self, _: object) -> None:
        self._pinging = False
        self.wake()

    def _ping_due(self) -> None:
        self._ping_timer = None
        self.wake()


class JetStreamConfirmation:
    """JetStream: an ack per alert, on one reply subscription of the sink's own.

    nats-py's publish_async costs, per alert, a random token (a getrandom call), a
    semaphore, a future with its callbacks, json.loads and a PubAck dataclass; and
    an error answer raises inside its callback and leaves the future pending
    (docs/upstream/publish-async-error-ack-pending.md), so a refused alert would
    wait out publish_timeout and be sent again forever. The publisher's window
    already bounds what is in flight, and an answer only needs to say stored, or
    why not.
    """

    # Receipts the publisher gave up on (a rewind cancels them) stay until their
    # answer comes; past this many, the ones already done are dropped.
    SWEEP_AT = 16_384

    def __init__(self, link: Link, stream: str, wake: Callable[[], None], timeout: float) -> None:
        self.link = link
        self.stream = stream
        self.wake = wake
        self.timeout = timeout
        # "Nats-Expected-Stream: <stream>\r\n", added to every publish's headers.
        self.added_header_bytes = len(EXPECTED_STREAM) + 2 + len(stream.encode()) + 2
        self.prefix = ""
        self._next = 0
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._receipts: list[asyncio.Future[None]] = []  # of the group being published

    async def start(self) -> None:
        self.prefix = self.link.new_inbox() + "."
        await self.link.listen_replies(self.prefix, self._answered)

    async def publish(self, alert: SpooledAlert, subject: str, payload: bytes) -> None:
        if len(self._waiting) >= self.SWEEP_AT:
            self._waiting = {t: f for t, f in self._waiting.items() if not f.done()}
        self._next += 1
        token = str(self._next)
        # Waited for before publishing: the answer can come while publish is suspended.
        receipt: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[token] = receipt
        # JetStream stores it only in the expected stream, and says so on the reply.
        headers = {**alert.headers, EXPECTED_STREAM: self.stream}
        try:
            await self.link.publish(subject, payload, headers, self.prefix + token)
        except BaseException:
            del self._waiting[token]
            raise
        self._receipts.append(receipt)

    def place(self, published: Group) -> Group | None:
        published.receipts, self._receipts = self._receipts, []
        published.watch(self.wake, self.timeout)
        return published

    async def request(self) -> None:
        return None  # each publish asked for its own ack

    def reset(self) -> None:
        self._receipts = []

    async def _answered(self, msg: Msg) -> None:
        receipt = self._waiting.pop(msg.subject[len(self.prefix) :], None)
        if receipt is None or receipt.done():
            return  # given up on (rewound), or a second answer
        problem = _ack_problem(msg)
        if problem:
            receipt.set_exception(AckProblem(problem))
        else:
            receipt.set_result(None)


class AckProblem(Exception):
    """Why JetStream did not store an alert."""


def _ack_problem(msg: Msg) -> str:
    """'' when JetStream's answer says the alert is stored; otherwise why not."""
    if msg.headers and msg.headers.get(STATUS) == NO_RESPONDERS:
        # No stream takes the subject: it may come back, or be created again.
        return STREAM_GONE
    try:
        answer = orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        return "unreadable JetStream ack"
    error = answer.get("error")
    if error is None:
        return ""
    if not isinstance(error, dict):
        error = {"description": str(error)}
    description = f"JetStream: {error.get('description')} ({error.get('code')})"
    if error.get("code") == 400:
        # The message itself is wrong for the stream: it can never be stored.
        return REFUSED + description
    return description  # stream full, storage failing, no leader: retried


def _problem(receipt: asyncio.Future[None] | None) -> str:
    """'' when the receipt says NATS has the alert; otherwise why not."""
    if receipt is None or not receipt.done() or receipt.cancelled():
        return NO_ANSWER
    error = receipt.exception()
    if error is None:
        return ""
    return str(error) or type(error).__name__
