"""Core NATS confirmation: the PING that confirms alerts must reach the server after them.

nats-py's flush() writes its PING straight to the socket, ahead of publishes its
flusher task has not written yet (nats-py 2.16), so its PONG would not prove the
server read them. These tests stand in for the server with a socket that logs
the order of what arrives, so they see the wire itself, and hold the socket
unread for a while so the client's buffers fill (back-pressure).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator

from gateway.errors import LinkDown
from gateway.sinks.natspy import NatsLink

_INFO = (
    b'INFO {"server_id":"wire-log","version":"2.10.0","go":"go","host":"127.0.0.1",'
    b'"port":4222,"headers":true,"max_payload":1048576,"proto":1}\r\n'
)


class WireLog:
    """A NATS server stand-in on a thread of its own with a blocking socket, so that
    not reading really stops the client: it only answers PINGs, records for every
    PING how many messages had arrived before it, and reads nothing for `hold`
    seconds after the client's first message."""

    def __init__(self, hold: float = 0.0) -> None:
        self.hold = hold
        self.messages = 0
        self.pings: list[int] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        # A small receive buffer (inherited by the accepted socket): the kernel
        # absorbs little, so a held read soon backs up into the client.
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        # The client may be gone before the last PONG: nothing to report then.
        with conn, conn.makefile("rb") as reader, contextlib.suppress(OSError):
            conn.sendall(_INFO)
            held = False
            while line := reader.readline():
                op, *args = line.split()
                if op == b"PING":
                    self.pings.append(self.messages)
                    conn.sendall(b"PONG\r\n")
                elif op in (b"PUB", b"HPUB"):
                    reader.read(int(args[-1]) + 2)
                    self.messages += 1
                    if not held and self.hold:
                        held = True
                        time.sleep(self.hold)  # the client's buffers fill meanwhile


@contextlib.asynccontextmanager
async def wire_log(hold: float = 0.0) -> AsyncIterator[tuple[WireLog, str]]:
    log = WireLog(hold)
    log.thread.start()
    try:
        yield log, f"nats://127.0.0.1:{log.port}"
    finally:
        log.listener.close()


async def publish(link: NatsLink, count: int, size: int) -> int:
    for i in range(count):
        await link.publish("falco.notice.x", b"x" * size, {"Nats-Msg-Id": f"id-{i}"})
    return count


async def test_confirmation_comes_after_every_published_alert() -> None:
    async with wire_log() as (log, url):
        link = NatsLink({"servers": [url]})
        await link.start()
        assert await link.wait_connected(5)
        await publish(link, 20, 500)
        confirmation = await link.ping(10)
        await asyncio.wait_for(confirmation, 10)
        # The PING this PONG answered was read after every message.
        assert log.pings[-1] == 20
        await link.close(1)


async def test_confirmation_waits_for_publishes_held_back_by_a_full_socket() -> None:
    # The server reads nothing for a while: the first batch fills the socket and
    # nats-py's flusher waits for it to drain; the second batch is still queued in
    # the client when the confirmation is asked for.
    async with wire_log(hold=1.0) as (log, url):
        link = NatsLink({"servers": [url]})
        await link.start()
        assert await link.wait_connected(5)
        # Under nats-py's own 8 MB pending limit, above what the kernel holds.
        published = await publish(link, 750, 8000)
        await asyncio.sleep(0.2)  # the flusher writes the first batch and blocks
        published += await publish(link, 5, 100)
        confirmation = await link.ping(10)
        await asyncio.wait_for(confirmation, 15)
        assert log.pings[-1] == published == 755
        await link.close(1)


async def test_unanswered_confirmation_fails_with_link_down() -> None:
    """A PING the server never answers (it stopped reading) fails the confirmation
    after its timeout: the alerts before it are not taken as delivered."""
    async with wire_log(hold=3.0) as (_, url):
        link = NatsLink({"servers": [url]})
        await link.start()
        assert await link.wait_connected(5)
        await publish(link, 750, 8000)
        confirmation = await link.ping(1)
        with contextlib.suppress(LinkDown):
            await asyncio.wait_for(confirmation, 10)
        assert isinstance(confirmation.exception(), LinkDown)
        await link.close(1)


async def test_a_pong_after_the_timeout_leaves_the_connection_working() -> None:
    """The server answers a PING only after the confirmation gave up on it. nats-py
    would leave its cancelled future queued, the late PONG would kill its read loop,
    and every later flush() would return at once without a round trip. The next
    confirmation must still be a real one: a PING the server reads after the
    messages before it."""
    async with wire_log(hold=2.0) as (log, url):
        link = NatsLink({"servers": [url]})
        await link.start()
        assert await link.wait_connected(5)
        await publish(link, 1, 10)
        await asyncio.sleep(0.3)  # written: the server holds its reading now
        late = await link.ping(0.5)
        with contextlib.suppress(LinkDown):
            await asyncio.wait_for(late, 5)
        assert isinstance(late.exception(), LinkDown)
        await asyncio.sleep(2.5)  # the server reads again and answers the first PING
        # (The first PING is the one nats-py sends with CONNECT.)
        assert log.pings[1:] == [1]
        await publish(link, 2, 10)
        confirmation = await link.ping(5)
        await asyncio.wait_for(confirmation, 5)
        assert log.pings[1:] == [1, 3]
        assert link.connected
        await link.close(1)


async def test_close_leaves_no_ping_waiting() -> None:
    """A PING out when the gateway closes (the server never answers it) is not left
    behind as a pending task."""
    async with wire_log(hold=5.0) as (_, url):
        link = NatsLink({"servers": [url]})
        await link.start()
        assert await link.wait_connected(5)
        await publish(link, 1, 10)
        await asyncio.sleep(0.3)  # written: the server holds its reading now
        confirmation = await link.ping(30)
        await link.close(0.5)
        await asyncio.sleep(0)  # the confirmation hears of it
        assert isinstance(confirmation.exception(), LinkDown)
