"""A Falco 0.43 stand-in for the benchmark: the project's Falco-faithful gRPC server
in its own process, fed on command.

`python -m bench.falco_feed --address unix:///tmp/x/falco.sock` serves Falco's
outputs and version services (gateway.simulator.falco_server: one queue, each
alert popped once, `sub` writes only after each client request) and reads one
JSON command per line on stdin, answering one JSON line on stdout:

- `{"op": "status"}`: clients, requests seen, alerts queued;
- `{"op": "burst", "count": N}`: N alerts rendered first, then queued at once;
  the answer comes once they are all queued;
- `{"op": "paced", "count": N, "rate": R}`: N alerts queued at R per second, each
  rendered when it is queued, so its `time` is the moment Falco emitted it;
  the answer comes after the last one;
- `{"op": "quit"}`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

import orjson

from gateway.falco_pb import outputs_pb2
from gateway.simulator.alerts import CATALOG, render, stream
from gateway.simulator.falco_server import FalcoServer
from gateway.simulator.wire import to_grpc_response

HOSTNAME = "bench-falco"


class Feed:
    def __init__(self, server: FalcoServer) -> None:
        self.server = server
        self.last_ns = 0  # alert times stay unique across commands: no accidental duplicates

    def status(self) -> dict[str, Any]:
        return {
            "clients": self.server.clients,
            "requests": self.server.requests_seen,
            "queued": len(self.server.queue),
        }

    def burst(self, count: int) -> dict[str, Any]:
        started = time.perf_counter()
        responses: list[outputs_pb2.response] = []
        for event in stream(HOSTNAME, count):
            responses.append(to_grpc_response(event))
        self.last_ns = max(self.last_ns, time.time_ns())
        rendered = time.perf_counter()
        for response in responses:
            self.server.emit(response)
        return {"queued": count, "render_s": rendered - started, "queued_ns": time.time_ns()}

    async def paced(self, count: int, rate: float) -> dict[str, Any]:
        """Each alert is stamped with the time it was due, as Falco stamps an alert
        with its event's time, so lateness here counts in the end-to-end latency."""
        start = time.perf_counter()
        start_ns = max(time.time_ns(), self.last_ns + 1)
        step_ns = max(1, round(1e9 / rate))
        late = 0
        for index in range(count):
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.001:
                late += 1
            self.last_ns = start_ns + index * step_ns
            event = render(CATALOG[index % len(CATALOG)], self.last_ns, HOSTNAME)
            self.server.emit(to_grpc_response(event))
        return {"queued": count, "late": late, "elapsed_s": time.perf_counter() - start}


async def serve(address: str) -> None:
    server = await FalcoServer(address).start()
    feed = Feed(server)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    _answer({"op": "ready", "address": address})
    try:
        while line := await reader.readline():
            command = orjson.loads(line)
            op = command["op"]
            if op == "quit":
                break
            if op == "status":
                answer = feed.status()
            elif op == "burst":
                answer = feed.burst(int(command["count"]))
            elif op == "paced":
                answer = await feed.paced(int(command["count"]), float(command["rate"]))
            else:
                answer = {"error": f"unknown op {op!r}"}
            _answer({"op": op, **answer})
    finally:
        await server.stop(grace=1)


def _answer(message: dict[str, Any]) -> None:
    os.write(1, orjson.dumps(message) + b"\n")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.falco_feed", description=__doc__)
    parser.add_argument("--address", required=True, help="unix:///path/falco.sock")
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.address))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
