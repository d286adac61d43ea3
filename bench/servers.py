"""The HTTP ceilings: what Hypercorn alone, and Quart on Hypercorn, cost per request.

`python -m bench.servers bare|quart --port P` serves `POST /` that only reads the
body and answers a small JSON object, the shape of the gateway's answer, with
the Hypercorn settings and the uvloop loop the gateway itself uses. So the
gateway's HTTP figure divided by these is the share of the ceiling it keeps.

`relay --nats-url U` is a reference, not a ceiling: the least any relay of
Falco's POSTs to NATS does on this stack (parse the body, publish it as it came
with nats-py, answer), so the table shows how much of the gap to bare Hypercorn
is the stack's and how much the gateway's own work.
`GET /stats` says how many bodies (and bytes) arrived, so the benchmark can
check that it counted what it sent.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_ANSWER = b'{"status": "accepted", "subject": "falco.notice.terminal_shell_in_container"}'


class Counts:
    def __init__(self) -> None:
        self.bodies = 0
        self.bytes = 0

    def json(self) -> bytes:
        return orjson.dumps({"bodies": self.bodies, "bytes": self.bytes})


def bare_app(counts: Counts) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """An ASGI app with nothing between Hypercorn and the body."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            await _answer(send, counts.json())
            return
        size = 0
        more = True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        counts.bodies += 1
        counts.bytes += size
        await _answer(send, _ANSWER)

    return app


def relay_app(counts: Counts, publish: Callable[[str, bytes], Awaitable[None]]) -> Any:
    """The least a relay of Falco's POSTs to NATS does: read the body, parse it (a
    bad one gets a 400), publish it as it came, answer. No normalizing, no
    deduplication, no spool, nothing confirmed: what it sends is lost if NATS is."""
    bare = bare_app(counts)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await bare(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            alert = orjson.loads(body)
            rule = alert["rule"]
            priority = alert["priority"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await _answer(send, b'{"error": "not a Falco alert"}', 400)
            return
        await publish(f"falco.{priority}.{rule}".lower().replace(" ", "_"), body)
        counts.bodies += 1
        counts.bytes += len(body)
        await _answer(send, _ANSWER)

    return app


async def _answer(send: Send, body: bytes, status: int = 200) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def quart_app(counts: Counts) -> Any:
    """The same endpoint on Quart, as the gateway's own HTTP source is built."""
    from quart import Quart, Response, request

    app = Quart("bench-ceiling")

    @app.post("/")
    async def alert() -> Response:
        body = await request.get_data(cache=False)
        counts.bodies += 1
        counts.bytes += len(body)
        return Response(_ANSWER, status=200, content_type="application/json")

    @app.get("/stats")
    async def stats() -> Response:
        return Response(counts.json(), content_type="application/json")

    return app


async def serve(kind: str, port: int, nats_url: str = "") -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    counts = Counts()
    # Any: Hypercorn's own ASGI types are stricter than the plain mappings used here.
    app: Any
    if kind == "bare":
        app = bare_app(counts)
    elif kind == "quart":
        app = quart_app(counts)
    else:
        import nats

        nc = await nats.connect(nats_url, name="bench-relay")
        app = relay_app(counts, nc.publish)
    # The gateway's own Hypercorn settings (gateway/sources/http.py).
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.keep_alive_timeout = 75
    config.graceful_timeout = 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await hypercorn_serve(app, config, shutdown_trigger=stop.wait)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers", description=__doc__)
    parser.add_argument("kind", choices=("bare", "quart", "relay"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222", help="relay: NATS")
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.kind, args.port, args.nats_url))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
