"""The gRPC ceiling: a bare `grpc.aio` client draining Falco's `sub` stream.

`python -m bench.grpc_drain --address unix:///... --count N` does what the
gateway's gRPC source does to receive (version call, `sub` with an empty
request every `--poll-interval` seconds, read each response) and nothing else,
so the gateway's gRPC figure divided by this one is the share it keeps. Prints
one JSON object once N alerts came, or at the time limit: how many came, from
the first to the last, and this process's CPU time in between.

`--convert` is a reference, not a ceiling: each response also goes through the
gateway's normalizer and payload (`from_grpc`, then falcosidekick's JSON), the
least the gateway does with an alert before deduplication, spool and NATS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator

import grpc.aio
import orjson

from gateway.falco_pb import outputs_pb2, outputs_pb2_grpc, version_pb2, version_pb2_grpc
from gateway.normalize import from_grpc
from gateway.payload import falcosidekick_json


async def drain(
    address: str,
    count: int,
    warmup: int,
    poll_interval: float,
    time_limit: float,
    *,
    convert: bool = False,
) -> dict[str, object]:
    """Receive `warmup` alerts untimed, then `count` timed ones."""
    stop = asyncio.Event()
    received = 0
    first_ns = last_ns = 0
    cpu_first = cpu_last = 0.0
    payload_bytes = 0
    total = warmup + count

    async def requests() -> AsyncIterator[outputs_pb2.request]:
        request = outputs_pb2.request()
        while not stop.is_set():
            yield request
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_interval)

    async with grpc.aio.insecure_channel(address) as channel:
        await version_pb2_grpc.serviceStub(channel).version(version_pb2.request(), timeout=5)
        call = outputs_pb2_grpc.serviceStub(channel).sub(requests())
        os.write(1, orjson.dumps({"op": "ready"}) + b"\n")
        try:
            async with asyncio.timeout(time_limit):
                async for response in call:
                    received += 1
                    if received == warmup + 1:
                        first_ns = time.time_ns()
                        cpu_first = time.process_time()
                    if received > warmup:
                        payload_bytes += response.ByteSize()
                        if convert:
                            falcosidekick_json(from_grpc(response))
                    if received >= total:
                        break
        except TimeoutError:
            pass
        last_ns = time.time_ns()
        cpu_last = time.process_time()
        stop.set()
        call.cancel()
    timed = max(received - warmup, 0)
    elapsed = (last_ns - first_ns) / 1e9 if first_ns else 0.0
    return {
        "received": timed,
        "elapsed_s": elapsed,
        # The first timed alert starts the clock, so it is not counted in the rate.
        "rate": (timed - 1) / elapsed if elapsed > 0 and timed > 1 else 0.0,
        "mean_bytes": payload_bytes / timed if timed else 0.0,
        "cpu_s": cpu_last - cpu_first,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_drain", description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--count", type=int, required=True, help="timed alerts")
    parser.add_argument("--warmup", type=int, default=0, help="untimed alerts first")
    parser.add_argument("--poll-interval", type=float, default=0.1)
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument(
        "--convert", action="store_true", help="also normalize each alert and render its payload"
    )
    args = parser.parse_args()
    import uvloop

    result = uvloop.run(
        drain(
            args.address,
            args.count,
            args.warmup,
            args.poll_interval,
            args.time_limit,
            convert=args.convert,
        )
    )
    os.write(1, orjson.dumps(result) + b"\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
