"""The NATS ceilings: what nats-py alone publishes per second from one core.

`python -m bench.nats_pub core --url U --count N`: N publishes of 1 KB, then one
flush (the server has read them all when it answers).

`python -m bench.nats_pub jetstream --url U --count N --in-flight W`: N JetStream
publishes of 1 KB into a file-backed stream, each with a unique Nats-Msg-Id (as
the gateway sends, so the server does the same duplicate tracking), with up to
W acks outstanding at once; done when the last ack is in.

Prints one JSON object: published, confirmed, seconds, rate, this process's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import nats
import orjson
from nats.js import api as js_api

PAYLOAD = b"x" * 1024
CEILING_STREAM = "BENCH_CEILING"
CEILING_SUBJECT = "bench.ceiling"


async def core(url: str, count: int) -> dict[str, object]:
    nc = await nats.connect(url, name="bench-core-ceiling")
    try:
        started = time.perf_counter()
        for _ in range(count):
            await nc.publish(CEILING_SUBJECT, PAYLOAD)
        await nc.flush(timeout=30)
        elapsed = time.perf_counter() - started
    finally:
        await nc.close()
    return {"published": count, "confirmed": count, "elapsed_s": elapsed, "rate": count / elapsed}


async def jetstream(url: str, count: int, in_flight: int, run_id: str) -> dict[str, object]:
    nc = await nats.connect(url, name="bench-jetstream-ceiling")
    try:
        js = nc.jetstream(timeout=10, publish_async_max_pending=in_flight)
        # The gateway's stream settings: file storage, a 120 s duplicate window.
        config = js_api.StreamConfig(
            name=CEILING_STREAM,
            subjects=[CEILING_SUBJECT],
            storage=js_api.StorageType.FILE,
            duplicate_window=120.0,
        )
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await js.update_stream(config)
        confirmed = 0
        failed = 0

        def settled(future: asyncio.Future[js_api.PubAck]) -> None:
            nonlocal confirmed, failed
            if future.cancelled() or future.exception() is not None:
                failed += 1
            else:
                confirmed += 1

        futures = []
        started = time.perf_counter()
        for index in range(count):
            # publish_async waits while `in_flight` acks are outstanding.
            future = await js.publish_async(
                CEILING_SUBJECT,
                PAYLOAD,
                headers={"Nats-Msg-Id": f"{run_id}-{index}"},
                stream=CEILING_STREAM,
            )
            future.add_done_callback(settled)
            futures.append(future)
        await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 60)
        elapsed = time.perf_counter() - started
    finally:
        await nc.close()
    return {
        "published": count,
        "confirmed": confirmed,
        "failed": failed,
        "elapsed_s": elapsed,
        "rate": confirmed / elapsed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.nats_pub", description=__doc__)
    parser.add_argument("mode", choices=("core", "jetstream"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--in-flight", type=int, default=256)
    args = parser.parse_args()
    import uvloop

    cpu = time.process_time()
    if args.mode == "core":
        result = uvloop.run(core(args.url, args.count))
    else:
        run_id = f"{os.getpid()}-{time.time_ns()}"
        result = uvloop.run(jetstream(args.url, args.count, args.in_flight, run_id))
    result["cpu_s"] = time.process_time() - cpu
    os.write(1, orjson.dumps(result) + b"\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
