"""The HTTP source: Falco's http_output posts here, as it would to falcosidekick.

Routes (falcosidekick's): `POST /` one alert; `GET /ping` -> pong;
`GET /healthz` -> 200 when NATS is connected, 503 with the reason otherwise;
`POST /test` publishes a test alert. And the gateway's own `GET /readyz`:
200 while alerts can be accepted (NATS up or not), 503 when the spool is full.

An alert is answered 200 once it is in the spool, not when NATS has it: Falco
waits for every response on its one output thread, so the handler never waits
on NATS.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import orjson
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from gateway.errors import AlertError, SpoolFull
from gateway.event import FalcoEvent
from gateway.logs import OncePer, log
from gateway.normalize import from_http_body, self_test_event
from gateway.pipeline import Accepted, Duplicate, Path, Pipeline

LOG = logging.getLogger("gateway.http")

HealthCheck = Callable[[], tuple[bool, str]]

_JSON = "application/json"


def _json(status: int, body: bytes) -> Response:
    return Response(body, status=status, content_type=_JSON)


def _error(status: int, reason: str) -> Response:
    return _json(status, orjson.dumps({"error": reason}))


def create_app(
    pipeline: Pipeline,
    health: HealthCheck,
    max_body_bytes: int,
    metrics: Callable[[], bytes] = lambda: b"",
) -> Quart:
    app = Quart("falco-nats-gateway")
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    # A slow or stalled client may not hold a connection open for long.
    app.config["BODY_TIMEOUT"] = 10
    rejections = OncePer()

    @app.post("/")
    async def alert() -> Response:
        body = await request.get_data(cache=False)
        assert isinstance(body, bytes)
        try:
            event = from_http_body(body, request.headers.get("Content-Type", _JSON))
        except AlertError as exc:
            pipeline.rejected("http", exc.kind)
            if rejections.first(exc.reason):
                log(logging.WARNING, "alert rejected", LOG, status=exc.status, reason=exc.reason)
            return _error(exc.status, exc.reason)
        return _submit(pipeline, event, "http")

    @app.post("/test")
    async def test() -> Response:
        return _submit(pipeline, self_test_event(), "test")

    @app.get("/ping")
    async def ping() -> Response:
        return Response("pong\n", content_type="text/plain")

    @app.get("/healthz")
    async def healthz() -> Response:
        ok, reason = health()
        if ok:
            return _json(200, b'{"status": "ok"}')
        return _json(503, orjson.dumps({"status": "unavailable", "reason": reason}))

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics(), content_type=CONTENT_TYPE_LATEST)

    @app.get("/readyz")
    async def readyz() -> Response:
        # Ready means "can accept alerts", which holds through a NATS outage while
        # the spool has room: a readiness probe on /healthz would take the gateway
        # out of its Service exactly when Falco most needs it to accept and spool.
        if not pipeline.spool.has_room():
            return _json(503, b'{"status": "refusing", "reason": "spool full"}')
        return _json(200, b'{"status": "accepting"}')

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        if isinstance(exc, RequestEntityTooLarge):
            pipeline.rejected("http", "too_large")
            return _error(413, f"body exceeds the limit of {max_body_bytes} bytes (max_body_bytes)")
        return _error(exc.code or 400, f"{exc.name}: {request.method} {request.path}")

    return app


def _submit(pipeline: Pipeline, event: FalcoEvent, path: Path) -> Response:
    try:
        outcome = pipeline.accept(event, path)
    except SpoolFull as exc:
        return _error(503, str(exc))
    if isinstance(outcome, Accepted):
        return _json(200, orjson.dumps({"status": "accepted", "subject": outcome.subject}))
    if isinstance(outcome, Duplicate):
        return _json(200, b'{"status": "duplicate"}')
    return _json(200, orjson.dumps({"status": "filtered", "reason": outcome.reason}))


async def serve_http(
    app: Quart,
    host: str,
    port: int,
    shutdown_trigger: Callable[[], Awaitable[object]],
    graceful_timeout: float,
) -> None:
    """Serve `app` until `shutdown_trigger` returns; in-flight requests get `graceful_timeout`."""
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 75  # Falco's libcurl keeps its connection; don't churn it
    log(logging.INFO, "http listening", LOG, bind=config.bind[0])
    await serve(app, config, shutdown_trigger=shutdown_trigger)
    await asyncio.sleep(0)
