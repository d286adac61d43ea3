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

from gateway.sinks.nats import NatsSink
from gateway.spool import SpooledAlert

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
        with conn, conn.makefile("rb") as reader:
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


def alerts(count: int, size: int) -> list[SpooledAlert]:
    return [
        SpooledAlert(
            i + 1, 0, "http", "falco.notice.x", {"Nats-Msg-Id": f"id-{i}"}, b"x" * size, size
        )
        for i in range(count)
    ]


async def test_confirmation_comes_after_every_published_alert() -> None:
    async with wire_log() as (log, url):
        sink = NatsSink({"servers": [url]}, publish_timeout=10)
        await sink.start()
        assert await sink.wait_connected(5)
        sent = await sink.publish(alerts(20, 500))
        assert sent.complete
        assert len(sent.alerts) == 20
        confirmation = await sink.confirm()
        await asyncio.wait_for(confirmation, 10)
        # The PING this PONG answered was read after every message.
        assert log.pings[-1] == 20
        assert sink.settle(sent, confirmation).delivered == sent.alerts
        await sink.close(1)


async def test_confirmation_waits_for_publishes_held_back_by_a_full_socket() -> None:
    # The server reads nothing for a while: the first batch fills the socket and
    # nats-py's flusher waits for it to drain; the second batch is still queued in
    # the client when the confirmation is asked for.
    async with wire_log(hold=1.0) as (log, url):
        sink = NatsSink({"servers": [url]}, publish_timeout=10)
        await sink.start()
        assert await sink.wait_connected(5)
        # Under nats-py's own 8 MB pending limit, above what the kernel holds.
        first = await sink.publish(alerts(750, 8000))
        await asyncio.sleep(0.2)  # the flusher writes the first batch and blocks
        second = await sink.publish(alerts(5, 100))
        confirmation = await sink.confirm()
        await asyncio.wait_for(confirmation, 15)
        published = len(first.alerts) + len(second.alerts)
        assert published == 755
        assert log.pings[-1] == published
        await sink.close(1)


async def test_unanswered_confirmation_delivers_nothing() -> None:
    async with wire_log() as (_, url):
        sink = NatsSink({"servers": [url]}, publish_timeout=1)
        await sink.start()
        assert await sink.wait_connected(5)
        sent = await sink.publish(alerts(3, 10))
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(TimeoutError())
        delivery = sink.settle(sent, failed)
        assert delivery.delivered == []
        assert delivery.rejected == []
        await sink.close(1)
