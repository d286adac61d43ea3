"""HTTP load generator: Falco-shaped POSTs over keep-alive connections, one request
in flight per connection, as Falco's http_output sends them.

Run as its own process (`python -m bench.loadgen ...`), pinned away from the
measured core; prints one JSON object with what it sent, what came back and
every response latency. Written on asyncio protocols rather than the project's
HttpClient so that the generator costs far less per request than any server it
measures (streams cost several times more per request).

Two modes: as fast as the server answers (`--rate 0`), with the bodies rendered
before the clock starts; or paced at `--rate` requests per second, each body
rendered at its send time so its alert `time` is the moment it was emitted
(the end-to-end latency is measured from it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import orjson

from gateway.simulator.alerts import CATALOG, render, stream
from gateway.simulator.wire import to_falco_json


class _Connection(asyncio.Protocol):
    """One keep-alive connection; `request` sends bytes and resolves on the full response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self._need: int | None = None  # total bytes of the response being read, once known
        self.lost: Exception | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("server closed the connection")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self.lost)

    def request(self, data: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._buffer.clear()
        self._need = None
        self.transport.write(data)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._need is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end]).lower()
            # Hypercorn ends a keep-alive connection after keep_alive_max_requests
            # (1000) answers; libcurl then opens a new one, and so does this client.
            self.closing = b"\r\nconnection: close" in head
            self._need = end + 4 + _content_length(head)
        if len(self._buffer) >= self._need and self._waiter is not None:
            status = int(self._buffer[9:12])
            if not self._waiter.done():
                self._waiter.set_result(status)


def _content_length(head: bytes) -> int:
    """From a lower-cased response head."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip() == b"content-length":
            return int(value)
    # Every server measured here sends Content-Length; anything else is a bench bug.
    raise ValueError(f"response without Content-Length: {head[:200]!r}")


def _request_bytes(host: str, port: int, body: bytes) -> bytes:
    head = (
        "POST / HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "User-Agent: falcosecurity/falco\r\n"
        "Accept: */*\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


@dataclass
class LoadResult:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    latencies_us: list[int] = field(default_factory=list)
    first_send_ns: int = 0
    last_answer_ns: int = 0
    behind_schedule: int = 0  # paced mode: requests sent later than 1 ms after their slot
    reconnects: int = 0
    # Paced mode: when each request was due and when it went out (wall clock, ns).
    due_ns: list[int] = field(default_factory=list)
    sent_ns: list[int] = field(default_factory=list)
    answered_ns: list[int] = field(default_factory=list)  # or failed

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    def as_json(self, cpu_s: float, wall_s: float) -> dict[str, object]:
        elapsed = (self.last_answer_ns - self.first_send_ns) / 1e9
        return {
            "sent": self.sent,
            "ok": self.ok,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors[:5],
            "error_count": len(self.errors),
            "elapsed_s": elapsed,
            "first_send_ns": self.first_send_ns,
            "rps": self.ok / elapsed if elapsed > 0 else 0.0,
            "latencies_us": self.latencies_us,
            "behind_schedule": self.behind_schedule,
            "reconnects": self.reconnects,
            "due_ns": self.due_ns,
            "sent_ns": self.sent_ns,
            "answered_ns": self.answered_ns,
            "cpu_s": cpu_s,
            "wall_s": wall_s,
        }


async def run_load(
    host: str,
    port: int,
    *,
    connections: int,
    count: int,
    rate: float = 0.0,
    warmup: int = 0,
    time_limit: float = 60.0,
    hostname: str = "bench-node",
) -> LoadResult:
    """Send `warmup` untimed requests, then `count` timed ones, over `connections`."""
    slots = [_Slot(host, port) for _ in range(connections)]
    for slot in slots:
        await slot.connect()
    try:
        if warmup:
            bodies = [to_falco_json(e) for e in stream(hostname, warmup)]
            await _drive(slots, _prebuilt(host, port, bodies), warmup, 0.0, time_limit)
        if rate > 0:
            make = _fresh(host, port, hostname)
        else:
            make = _prebuilt(host, port, [to_falco_json(e) for e in stream(hostname, count)])
        return await _drive(slots, make, count, rate, time_limit)
    finally:
        for slot in slots:
            slot.close()


class _Slot:
    """One client's connection, reopened whenever the server ends it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.conn: _Connection | None = None

    async def connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, self.conn = await loop.create_connection(_Connection, self.host, self.port)
        return self.conn

    async def request(self, data: bytes, result: LoadResult) -> int:
        conn = self.conn
        if conn is None or conn.closing or conn.lost is not None:
            self.close()
            conn = await self.connect()
            result.reconnects += 1
        return await conn.request(data)

    def close(self) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.close()
        self.conn = None


def _prebuilt(host: str, port: int, bodies: list[bytes]) -> Callable[[int, int], bytes]:
    requests = [_request_bytes(host, port, body) for body in bodies]
    return lambda index, _due_ns: requests[index]


def _fresh(host: str, port: int, hostname: str) -> Callable[[int, int], bytes]:
    """Bodies rendered when due, stamped with the time they were due: as Falco stamps
    an alert with its event's time, and the alert then waits in Falco's output queue
    while the previous POST is still unanswered. A slow answer thus shows up in the
    end-to-end latency of the alerts behind it, as it would for Falco."""

    def make(index: int, due_ns: int) -> bytes:
        event = render(CATALOG[index % len(CATALOG)], due_ns, hostname)
        return _request_bytes(host, port, to_falco_json(event))

    return make


async def _drive(
    slots: list[_Slot],
    make: Callable[[int, int], bytes],
    count: int,
    rate: float,
    time_limit: float,
) -> LoadResult:
    result = LoadResult()
    next_index = 0
    start = time.perf_counter()
    start_ns = time.time_ns()
    deadline = start + time_limit
    interval = 1 / rate if rate > 0 else 0.0
    # Unique alert times, so that no alert is taken for a duplicate of another.
    step_ns = max(1, round(interval * 1e9)) if interval else 1

    async def worker(slot: _Slot) -> None:
        nonlocal next_index
        while next_index < count and time.perf_counter() < deadline:
            index = next_index
            next_index += 1
            if interval:
                due = start + index * interval
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.001:
                    result.behind_schedule += 1
            due_ns = start_ns + index * step_ns
            data = make(index, due_ns)
            sent_ns = time.perf_counter_ns()
            if not result.first_send_ns:
                result.first_send_ns = time.time_ns()
            if interval:
                result.due_ns.append(due_ns)
                result.sent_ns.append(time.time_ns())
            result.sent += 1
            try:
                status = await asyncio.wait_for(slot.request(data, result), 10)
            except (OSError, TimeoutError, ValueError) as exc:
                # Falco drops an alert whose POST fails (other than by timeout); so
                # does this client, and counts it.
                result.errors.append(f"{type(exc).__name__}: {exc}")
                slot.close()
                if interval:
                    result.answered_ns.append(time.time_ns())
                continue
            if interval:
                result.answered_ns.append(time.time_ns())
            result.latencies_us.append((time.perf_counter_ns() - sent_ns) // 1000)
            result.last_answer_ns = time.time_ns()
            result.statuses[status] += 1

    await asyncio.gather(*(worker(slot) for slot in slots))
    return result


async def serve_commands() -> None:
    """One JSON command per stdin line, one JSON answer per stdout line:
    `{"op": "run", "port": P, "connections": C, "count": N, "rate": R, "warmup": W}`
    or `{"op": "quit"}`. A long-lived generator saves a process start per run."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    _write({"op": "ready"})
    while line := await reader.readline():
        command = orjson.loads(line)
        if command["op"] == "quit":
            break
        wall = time.perf_counter()
        cpu = time.process_time()
        result = await run_load(
            "127.0.0.1",
            int(command["port"]),
            connections=int(command.get("connections", 1)),
            count=int(command["count"]),
            rate=float(command.get("rate", 0.0)),
            warmup=int(command.get("warmup", 0)),
            time_limit=float(command.get("time_limit", 60.0)),
        )
        _write(result.as_json(time.process_time() - cpu, time.perf_counter() - wall))


def _write(message: dict[str, object]) -> None:
    os.write(1, orjson.dumps(message) + b"\n")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("--commands", action="store_true", help="take runs as JSON on stdin")
    parser.add_argument("--port", type=int, help="server port on 127.0.0.1")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--count", type=int, default=1000, help="timed requests")
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s; 0: as fast as served")
    parser.add_argument("--warmup", type=int, default=0, help="untimed requests first")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds, at most")
    args = parser.parse_args()
    import uvloop

    if args.commands:
        uvloop.run(serve_commands())
        return 0
    if args.port is None:
        parser.error("--port is required without --commands")
    wall = time.perf_counter()
    cpu = time.process_time()
    result = uvloop.run(
        run_load(
            "127.0.0.1",
            args.port,
            connections=args.connections,
            count=args.count,
            rate=args.rate,
            warmup=args.warmup,
            time_limit=args.time_limit,
        )
    )
    _write(result.as_json(time.process_time() - cpu, time.perf_counter() - wall))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
