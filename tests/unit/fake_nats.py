"""A NATS connection the test holds in its hand, for driving the publisher step by step.

`FakeLink` implements gateway.sinks.nats.Link: it records every publish, and
answers nothing by itself. The test decides, one message at a time, what NATS
says (a JetStream ack, an error, nothing) and when the connection breaks or
comes back. `ClockLoop` is an event loop whose clock only the test moves,
so publish_timeout and backoff pass without waiting for them, and a run is
the same every time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from nats.aio.msg import Msg
from nats.js.api import StreamConfig, StreamInfo
from nats.js.errors import NotFoundError

from gateway.errors import LinkDown
from gateway.publisher import Publisher
from gateway.sinks.nats import NatsSink
from gateway.sinks.stream import StreamSettings
from gateway.spool import Spool
from gateway.telemetry import Telemetry


class ClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when the test moves it, so a run is the
    same every time. Whatever waits on a timer waits until the test advances past
    it: a test must never await something only time would end."""

    now = 0.0

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Published:
    subject: str
    payload: bytes
    headers: dict[str, str]
    reply: str

    @property
    def alert_id(self) -> str:
        return self.headers["Nats-Msg-Id"]


@dataclass
class FakeLink:
    max_payload: int = 1024 * 1024
    published: list[Published] = field(default_factory=list)
    # Publishes that will still go through before the connection breaks (None: all).
    breaks_after: int | None = None
    # Publishes that will still go through before one fails with the connection up
    # (as nats-py's do when its pending buffer overflows).
    fails_after: int | None = None
    # JetStream: publishes not answered yet, oldest first.
    unanswered: list[Published] = field(default_factory=list)
    # Core: PINGs not answered yet, each with how many publishes came before it.
    pings: list[tuple[asyncio.Future[None], int]] = field(default_factory=list)
    # What the server has: alert ids acked (JetStream) or covered by a PONG (core).
    stored: list[str] = field(default_factory=list)
    epoch: int = 0  # connections lost so far
    _ponged: int = 0  # publishes before the last PONG
    _up: bool = True
    _replies: Callable[[Msg], Awaitable[None]] | None = None
    _connected: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.on_change: Callable[[], None] = lambda: None
        self._connected.set()

    @property
    def connected(self) -> bool:
        return self._up

    async def wait_connected(self, timeout: float | None = None) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout)
        return self._up

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str], reply: str = ""
    ) -> None:
        if not self._up:
            raise LinkDown("not connected")
        if self.breaks_after is not None:
            if self.breaks_after == 0:
                self.breaks_after = None
                self.drop()
                raise LinkDown("connection broke")
            self.breaks_after -= 1
        if self.fails_after is not None:
            if self.fails_after == 0:
                self.fails_after = None
                raise LinkDown("publish failed")
            self.fails_after -= 1
        message = Published(subject, payload, dict(headers), reply)
        self.published.append(message)
        if reply:
            self.unanswered.append(message)

    async def ping(self, timeout: float) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self._up:
            future.set_exception(LinkDown("not connected"))
        else:
            self.pings.append((future, len(self.published)))
        return future

    async def listen_replies(self, prefix: str, callback: Callable[[Msg], Awaitable[None]]) -> None:
        self._replies = callback

    def new_inbox(self) -> str:
        return "_INBOX.test"

    # What the test makes NATS do.

    def drop(self) -> None:
        """The connection is lost: nothing in flight will be answered."""
        self._up = False
        self.epoch += 1
        self._connected.clear()
        self.unanswered.clear()
        for future, _ in self.pings:
            if not future.done():
                future.set_exception(LinkDown("connection lost"))
        self.pings.clear()
        self.on_change()

    def restore(self) -> None:
        self._up = True
        self._connected.set()
        self.on_change()

    async def ack(self, answer: Any = None, *, raw: bytes | None = None, status: str = "") -> str:
        """Answer the oldest unanswered JetStream publish; returns its alert id.
        `answer`: the ack's JSON (default: stored); `raw`: bytes as they are;
        `status`: a status header instead of a body (503: no responders)."""
        assert self._replies is not None
        message = self.unanswered.pop(0)
        if answer is None and raw is None and not status:
            answer = {"stream": "FALCO", "seq": len(self.stored) + 1}
            self.stored.append(message.alert_id)
        data = raw if raw is not None else orjson.dumps(answer) if answer is not None else b""
        headers = {"Status": status} if status else None
        await self._replies(Msg(None, message.reply, "", data, headers))  # type: ignore[arg-type]
        return message.alert_id

    def pong(self) -> int:
        """Answer the oldest PING; the server has what was published before it."""
        future, before = self.pings.pop(0)
        self.stored += [m.alert_id for m in self.published[self._ponged : before]]
        self._ponged = max(self._ponged, before)
        if not future.done():  # given up on: the answer changes nothing
            future.set_result(None)
        return before


class FakeJetStream:
    """The stream management calls gateway.sinks.stream makes, answered from memory:
    a stream exists once created; `fail` makes the next call time out."""

    def __init__(self, max_msg_size: int = -1) -> None:
        self.streams: dict[str, StreamConfig] = {}
        self.max_msg_size = max_msg_size
        self.fail = 0
        self.calls = 0

    async def stream_info(self, name: str) -> StreamInfo:
        self._call()
        if name not in self.streams:
            raise NotFoundError(code=404, description="stream not found")
        return StreamInfo(config=self.streams[name], state=None)  # type: ignore[arg-type]

    async def add_stream(self, config: StreamConfig) -> StreamInfo:
        self._call()
        assert config.name is not None
        self.streams[config.name] = replace(config, max_msg_size=self.max_msg_size)
        return await self.stream_info(config.name)

    update_stream = add_stream

    def _call(self) -> None:
        self.calls += 1
        if self.fail:
            self.fail -= 1
            raise TimeoutError


def build(
    *,
    jetstream: bool = False,
    batch_size: int = 16,
    publish_timeout: float = 5.0,
    max_age: float = 0.0,
    max_payload: int = 1024 * 1024,
    stream: StreamSettings | None = None,
    js: FakeJetStream | None = None,
) -> tuple[FakeLink, NatsSink, Publisher, Spool]:
    """A publisher over a FakeLink and an in-memory spool."""
    link = FakeLink(max_payload=max_payload)
    if jetstream and stream is None:
        stream = StreamSettings(create=True)
    js = js or FakeJetStream()
    sink = NatsSink(
        link,
        stream,
        publish_timeout=publish_timeout,
        jetstream=lambda: js if link.connected else None,  # type: ignore[arg-type,return-value]
    )
    spool = Spool("", 64 * 1024 * 1024)
    publisher = Publisher(spool, sink, Telemetry(), batch_size=batch_size, max_age=max_age)
    return link, sink, publisher, spool
