"""The HTTP source: Falco's http_output posts here, as it would to falcosidekick.

The app Hypercorn serves is a Quart app, and every route is declared on it
(falcosidekick's): `POST /` one alert (and a POST to any path not named below,
as falcosidekick takes it); `GET /ping` -> pong; `GET /healthz` -> 200 when
NATS is connected, 503 with the reason otherwise; `POST /test` publishes a test
alert; `GET /metrics`. And the gateway's own `GET /readyz`: 200 while alerts can
be accepted (NATS up or not), 503 when the spool is full.

The common alert POST is answered by `AlertFastPath`, ASGI middleware around
Quart's `asgi_app` (Quart's documented way to add middleware), without Quart's
request machinery; docs/http.md says which requests take it and why.

An alert is answered 200 once it is in the spool, not when NATS has it: Falco
waits for every response on its one output thread, so the handler never waits
on NATS.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hmac
import logging
import ssl
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import orjson
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.typing import ASGIReceiveCallable as Receive
from hypercorn.typing import ASGISendCallable as Send
from hypercorn.typing import HTTPResponseBodyEvent, HTTPResponseStartEvent, HTTPScope, Scope
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge, RequestTimeout

from gateway.echo import echo
from gateway.errors import AlertError, SpoolFull
from gateway.event import FalcoEvent
from gateway.logs import OncePer, log
from gateway.normalize import (
    DEFAULT_LIMITS,
    Limits,
    from_http_body,
    replace_bad_utf8,
    self_test_event,
)
from gateway.pipeline import Accepted, Duplicate, IngestPath, Pipeline
from gateway.sources.deadlines import ReadDeadlines
from gateway.sources.unexpected import UnexpectedErrors

LOG = logging.getLogger("gateway.http")

HealthCheck = Callable[[], tuple[bool, str]]

_JSON = "application/json"

# The only paths of the plain-HTTP probe port (health_listen).
HEALTH_PATHS = frozenset({"/ping", "/healthz", "/readyz", "/metrics"})
# Paths that need the basic-auth credentials when they are set: the ones that
# publish. Probes and Prometheus cannot easily send them, and reveal no alert.
_AUTH_PATHS = frozenset({"/", "/test"})
# Bodies past this size (a Falco alert is ~1-2 KB) are read a few at a time, so
# that http_max_in_flight large bodies cannot all be held at once: memory stays
# within http_max_in_flight x 1 MiB + LARGE_BODIES_AT_ONCE x max_body_bytes.
LARGE_BODY = 1024 * 1024
LARGE_BODIES_AT_ONCE = 4
# Content-Encodings a body may come in (Falco sends none): decoded within max_body_bytes.
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
# Named routes. As in falcosidekick, every other path is `/`: a POST there is an
# alert, so that an http_output URL with a path (http://gateway:2801/falco) works.
NAMED_PATHS = HEALTH_PATHS | {"/test"}


def is_alert_path(path: str) -> bool:
    return path == "/" or path not in NAMED_PATHS


class AlertPaths:
    """Logs, once per path (bounded), an alert POSTed to a path other than `/`."""

    def __init__(self, limit: int = 64) -> None:
        self._seen: set[str] = set()
        self._limit = limit

    def note(self, path: str) -> None:
        if path != "/" and path not in self._seen and len(self._seen) < self._limit:
            self._seen.add(path)
            log(logging.INFO, "alerts posted to a path other than /", LOG, path=path[:256])


@dataclass(frozen=True)
class HttpTls:
    """The listener's certificate and key, and the CA its clients' certificates must chain to."""

    cert: str
    key: str
    client_ca: str = ""


@dataclass(frozen=True)
class BasicAuth:
    user: str
    password: str

    def allows(self, header: str | None) -> bool:
        """Whether an Authorization header carries these credentials, compared in
        constant time (both parts always compared, so timing tells nothing)."""
        scheme, _, encoded = (header or "").partition(" ")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        user, sep, password = decoded.partition(b":")
        user_ok = hmac.compare_digest(user, self.user.encode())
        password_ok = hmac.compare_digest(password, self.password.encode())
        return scheme.lower() == "basic" and bool(sep) and user_ok and password_ok


class AlertIntake:
    """Read one alert and answer it: the in-flight cap, parsing, counting, spooling.

    The one implementation behind `POST /`, whichever way the request came: the
    ASGI fast path (`AlertFastPath`) or the Quart route. Each gives it a way to read the
    body; reading raises werkzeug's RequestEntityTooLarge or RequestTimeout, which
    `http_error` answers.
    """

    def __init__(
        self, pipeline: Pipeline, max_in_flight: int, limits: Limits, read_timeout: float = 10.0
    ) -> None:
        self.pipeline = pipeline
        self.max_in_flight = max_in_flight
        self.limits = limits
        self.read_timeout = read_timeout
        self.in_flight = 0
        self.rejections = OncePer()
        self.unexpected = UnexpectedErrors(pipeline.telemetry, "http", LOG)

    async def answer(
        self,
        read_body: Callable[[], Awaitable[bytes]],
        content_type: str,
        content_encoding: str | None = None,
        max_body_bytes: int = LARGE_BODY,
    ) -> Answer:
        if self.in_flight >= self.max_in_flight:
            # Bounded memory and event-loop time whatever the number of clients;
            # the body is not read, so a flood costs little.
            self.pipeline.rejected("http", "busy")
            return _busy(self.max_in_flight)
        self.in_flight += 1
        try:
            body = await read_body()
            try:
                if content_encoding is not None:
                    body = _decoded(body, content_encoding, max_body_bytes)
                event = self._event(body, content_type)
            except AlertError as exc:
                self.pipeline.rejected("http", exc.kind)
                if self.rejections.first(exc.reason):
                    log(
                        logging.WARNING, "alert rejected", LOG, status=exc.status, reason=exc.reason
                    )
                return _error(exc.status, exc.reason)
            except Exception as exc:  # one alert must not reach Hypercorn's empty 500
                self.pipeline.rejected("http", "unexpected_error")
                return self.unexpected_error(exc, "reading an HTTP alert")
            return _submit(self.pipeline, event, "http")
        finally:
            self.in_flight -= 1

    def _event(self, body: bytes, content_type: str) -> FalcoEvent:
        try:
            return from_http_body(body, content_type, self.limits)
        except AlertError as exc:
            if exc.kind != "not_utf8":
                raise
            not_utf8 = exc
        # Bytes that are not UTF-8: replaced by U+FFFD as Falco's own JSON does (and the
        # gRPC path), and the alert goes out rather than being lost.
        try:
            event = from_http_body(replace_bad_utf8(body), content_type, self.limits)
        except AlertError as again:
            raise not_utf8 if again.kind == "malformed_json" else again from None
        self.pipeline.repaired("http", event)
        return event

    def http_error(self, exc: HTTPException, method: str, path: str, max_body_bytes: int) -> Answer:
        # The body was left unread (or half read): the connection cannot carry
        # another request, and the answer says so.
        if isinstance(exc, RequestEntityTooLarge):
            self.pipeline.rejected("http", "too_large")
            return _error(
                413,
                f"body exceeds the limit of {max_body_bytes} bytes (max_body_bytes)",
                _CLOSE,
            )
        if isinstance(exc, RequestTimeout):
            self.pipeline.rejected("http", "read_timeout")
            return _error(
                408,
                f"request body not complete within {self.read_timeout:g} s (http_read_timeout)",
                _CLOSE,
            )
        return _error(exc.code or 400, f"{exc.name}: {_bounded(method)} {_bounded(path)}")

    def unexpected_error(self, exc: Exception, what: str) -> Answer:
        """Any exception no code expected: counted, logged once per kind, answered."""
        self.unexpected.record(exc, what)
        return _error(
            500,
            f"internal error ({type(exc).__name__}); the gateway logged it "
            "(falco_nats_gateway_unexpected_errors_total)",
            _CLOSE,
        )


def create_app(
    pipeline: Pipeline,
    health: HealthCheck,
    max_body_bytes: int,
    metrics: Callable[[], bytes] = lambda: b"",
    *,
    auth: BasicAuth | None = None,
    health_port: int | None = None,
    read_timeout: float = 10.0,
    max_in_flight: int = 256,
    limits: Limits = DEFAULT_LIMITS,
) -> Quart:
    """The HTTP source's Quart app, with `POST /` on a fast path in front of Quart's own."""
    intake = AlertIntake(pipeline, max_in_flight, limits, read_timeout)
    app_paths = AlertPaths()
    app = Quart("falco-nats-gateway")
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    # A slow or stalled client may not hold a connection open for long: the whole
    # body must arrive within read_timeout.
    app.config["BODY_TIMEOUT"] = read_timeout

    @app.before_request
    async def guard() -> Response | None:
        server = request.scope.get("server") or ("", None)
        if health_port is not None and server[1] == health_port:
            if request.path not in HEALTH_PATHS:
                return _error(404, f"{request.path} is not served on the health port").response()
            return None
        if (
            auth is not None
            and (request.path in _AUTH_PATHS or is_alert_path(request.path))
            and not auth.allows(request.headers.get("Authorization"))
        ):
            pipeline.rejected("http", "unauthorized")
            # The body stays unread, so this connection cannot carry another request.
            return _error(
                401,
                "basic-auth credentials missing or wrong",
                (("WWW-Authenticate", 'Basic realm="falco-nats-gateway"'), *_CLOSE),
            ).response()
        return None

    @app.post("/")
    @app.post("/<path:_any>")
    async def alert(_any: str = "") -> Response:
        # Reached when AlertFastPath hands the request on: on the health port (a 404)
        # and when the credentials are wrong (a 401), both answered by `guard`. The
        # route also makes `GET /` a 405, and keeps Quart's answer complete on its own.
        async def read() -> bytes:
            body = await request.get_data(cache=False)
            assert isinstance(body, bytes)
            return body

        app_paths.note(request.path)
        answer = await intake.answer(
            read,
            request.headers.get("Content-Type", _JSON),
            request.headers.get("Content-Encoding"),
            max_body_bytes,
        )
        return answer.response()

    @app.post("/test")
    async def test() -> Response:
        return _submit(pipeline, self_test_event(), "test").response()

    @app.get("/ping")
    async def ping() -> Response:
        return Response("pong\n", content_type="text/plain")

    @app.get("/healthz")
    async def healthz() -> Response:
        ok, reason = health()
        if ok:
            return _json(200, b'{"status": "ok"}').response()
        return _json(503, orjson.dumps({"status": "unavailable", "reason": reason})).response()

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics(), content_type=CONTENT_TYPE_LATEST)

    @app.get("/readyz")
    async def readyz() -> Response:
        # Ready means "can accept alerts", which holds through a NATS outage while
        # the spool has room: a readiness probe on /healthz would take the gateway
        # out of its Service exactly when Falco most needs it to accept and spool.
        if not pipeline.spool.has_room():
            return _json(503, b'{"status": "refusing", "reason": "spool full"}').response()
        return _json(200, b'{"status": "accepting"}').response()

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        return intake.http_error(exc, request.method, request.path, max_body_bytes).response()

    @app.errorhandler(Exception)
    async def unexpected_error(exc: Exception) -> Response:
        what = f"answering {_bounded(request.method)} {_bounded(request.path)}"
        return intake.unexpected_error(exc, what).response()

    # Quart's documented way to add ASGI middleware: the served object stays the
    # Quart app, whose __call__ calls asgi_app. mypy sees a method replaced.
    app.asgi_app = AlertFastPath(  # type: ignore[method-assign]
        app.asgi_app,
        intake,
        max_body_bytes,
        auth=auth,
        health_port=health_port,
        paths=app_paths,
    )
    return app


ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AlertFastPath:
    """ASGI middleware around Quart's `asgi_app`: answers an alert POST itself,
    hands everything else to Quart, and turns any unexpected error into a
    counted, logged JSON 500.

    Quart's request and response machinery costs about as much per alert as the
    whole rest of the gateway, and Falco's output thread waits for every answer.
    Only the common case is taken here (an alert path on the main port,
    credentials good or not required); the health port and an auth failure go
    to Quart, whose guard already answers them, so those rules live in one place.
    """

    def __init__(
        self,
        inner: ASGIApp,
        intake: AlertIntake,
        max_body_bytes: int,
        *,
        auth: BasicAuth | None,
        health_port: int | None,
        paths: AlertPaths | None = None,
    ) -> None:
        self.inner = inner
        self.paths = paths if paths is not None else AlertPaths()
        self.intake = intake
        self.max_body_bytes = max_body_bytes
        self.auth = auth
        self.health_port = health_port
        self.deadlines = ReadDeadlines(intake.read_timeout)
        self.large_bodies = asyncio.Semaphore(LARGE_BODIES_AT_ONCE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._dispatch(scope, receive, send)
        except Exception as exc:  # the ASGI boundary: nothing unexpected reaches Hypercorn
            if scope["type"] != "http":
                raise
            what = f"answering {_bounded(scope['method'])} {_bounded(scope['path'])}"
            answer = self.intake.unexpected_error(exc, what)
            # Hypercorn refuses a second response start (the first went out before the
            # error): then there is nothing left to tell the client.
            with contextlib.suppress(Exception):
                await answer.send(send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and is_alert_path(scope["path"]):
            server = scope.get("server") or ("", None)
            if self.health_port is None or server[1] != self.health_port:
                headers = _headers(scope)
                if self.auth is None or self.auth.allows(headers.get(b"authorization")):
                    self.paths.note(scope["path"])
                    await self._alert(headers, receive, send)
                    return
        await self.inner(scope, receive, send)

    async def _alert(self, headers: dict[bytes, str], receive: Receive, send: Send) -> None:
        async def read() -> bytes:
            return await self._read_body(headers, receive)

        try:
            answer = await self.intake.answer(
                read,
                headers.get(b"content-type", _JSON),
                headers.get(b"content-encoding"),
                self.max_body_bytes,
            )
        except _Disconnected:
            return
        except HTTPException as exc:
            answer = self.intake.http_error(exc, "POST", "/", self.max_body_bytes)
        await answer.send(send)

    async def _read_body(self, headers: dict[bytes, str], receive: Receive) -> bytes:
        """The body, within max_body_bytes and read_timeout, as Quart's get_data reads it.

        Read as it streams in, counted chunk by chunk (a chunked body announces no
        length); past LARGE_BODY a body waits for one of LARGE_BODIES_AT_ONCE turns.
        """
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            raise RequestEntityTooLarge()
        chunks: list[bytes] = []
        size = 0
        large = False
        deadlines = self.deadlines
        task = deadlines.enter()
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Disconnected()
                chunk = cast("bytes", message.get("body", b""))
                if chunk:
                    size += len(chunk)
                    if size > LARGE_BODY and not large:
                        if size > self.max_body_bytes:
                            raise RequestEntityTooLarge()
                        # Waits within the read deadline: a turn that never comes is a 408.
                        await self.large_bodies.acquire()
                        large = True
                    elif size > self.max_body_bytes:
                        raise RequestEntityTooLarge()
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        except asyncio.CancelledError:
            if deadlines.expired(task):
                raise RequestTimeout() from None
            raise
        finally:
            deadlines.leave(task)
            if large:
                self.large_bodies.release()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _Disconnected(Exception):
    """The client went away before its body arrived: there is no one to answer."""


def _headers(scope: HTTPScope) -> dict[bytes, str]:
    """Request headers by lower-case name, the first of repeated ones (as Quart's `get`)."""
    headers: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name.lower(), value.decode("latin-1"))
    return headers


@dataclass(frozen=True)  # not slots: raw_headers is cached on the instance
class Answer:
    """An HTTP answer either front end can send: status, body, extra headers."""

    status: int
    body: bytes
    content_type: str = _JSON
    headers: tuple[tuple[str, str], ...] = ()

    def response(self) -> Response:
        response = Response(self.body, status=self.status, content_type=self.content_type)
        for name, value in self.headers:
            response.headers[name] = value
        return response

    @functools.cached_property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        raw = [
            (b"content-type", self.content_type.encode()),
            (b"content-length", str(len(self.body)).encode()),
        ]
        return raw + [(name.lower().encode(), value.encode()) for name, value in self.headers]

    async def send(self, send: Send) -> None:
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": self.status,
            "headers": list(self.raw_headers),
        }
        await send(start)
        body: HTTPResponseBodyEvent = {
            "type": "http.response.body",
            "body": self.body,
            "more_body": False,
        }
        await send(body)


# On an answer given before the body was read whole: on HTTP/1.x the rest of the
# body would be taken for the next request, so the connection ends here (h2 drops
# the header, as HTTP/2 wants: there the stream alone ends).
_CLOSE = (("Connection", "close"),)


def _decoded(body: bytes, encoding: str, limit: int) -> bytes:
    """`body` decoded from its Content-Encoding, at most `limit` bytes; AlertError otherwise."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return body
    wbits = _DECODERS.get(name)
    if wbits is None:
        raise AlertError(
            f"Content-Encoding {echo(encoding)} is not supported: send the body "
            "uncompressed (or gzip or deflate)",
            415,
            "unsupported_encoding",
        )
    decoder = zlib.decompressobj(wbits)
    try:
        data = decoder.decompress(body, limit + 1)
    except zlib.error as exc:
        raise AlertError(f"body is not valid {name} data ({exc})", kind="bad_encoding") from None
    if len(data) > limit:
        raise AlertError(
            f"{name} body decodes to more than {limit} bytes (max_body_bytes)",
            413,
            "too_large",
        )
    if not decoder.eof:
        raise AlertError(f"{name} body is truncated", kind="bad_encoding")
    return data


def _bounded(text: str) -> str:
    # A request line is the sender's text: quoted up to 256 characters (h11 takes 16 KiB).
    return text if len(text) <= 256 else f"{text[:256]}... ({len(text)} characters)"


def _json(status: int, body: bytes) -> Answer:
    return Answer(status, body)


def _error(status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> Answer:
    return Answer(status, orjson.dumps({"error": reason}), headers=headers)


def _busy(limit: int) -> Answer:
    return _error(
        503,
        f"more than {limit} requests in flight (http_max_in_flight)",
        (("Retry-After", "1"), *_CLOSE),
    )


def _submit(pipeline: Pipeline, event: FalcoEvent, path: IngestPath) -> Answer:
    try:
        outcome = pipeline.accept(event, path)
    except SpoolFull as exc:
        return _error(503, str(exc))
    if isinstance(outcome, Accepted):
        return _accepted(outcome.subject)
    if isinstance(outcome, Duplicate):
        return _json(200, b'{"status": "duplicate"}')
    return _json(200, orjson.dumps({"status": "filtered", "reason": outcome.reason}))


@functools.lru_cache(maxsize=1024)
def _accepted(subject: str) -> Answer:
    # Built once per subject (a rule and a priority make one): most alerts repeat
    # a few dozen rules.
    return _json(200, orjson.dumps({"status": "accepted", "subject": subject}))


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_http(
    app: Quart,
    host: str,
    port: int,
    shutdown_trigger: Callable[[], Awaitable[object]],
    graceful_timeout: float,
    *,
    tls: HttpTls | None = None,
    health: tuple[str, int] | None = None,
    read_timeout: float = 10.0,
) -> None:
    """Serve `app` until `shutdown_trigger` returns; in-flight requests get `graceful_timeout`.

    With `tls`, the listener speaks HTTPS only (and requires a client certificate
    signed by `tls.client_ca` when that is set); `health` is then a plain-HTTP
    bind for probes, which the app limits to HEALTH_PATHS.
    """
    config = HypercornConfig()
    config.bind = [_bind(host, port)]
    extra = [_bind(*health)] if health is not None else []
    if tls is not None:
        config.certfile = tls.cert
        config.keyfile = tls.key
        # An empty password: an encrypted key fails at start instead of prompting.
        config.keyfile_password = ""
        if tls.client_ca:
            config.ca_certs = tls.client_ca
            config.verify_mode = ssl.CERT_REQUIRED
        config.insecure_bind = extra
    else:
        config.bind += extra
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 75  # Falco's libcurl keeps its connection; don't churn it
    # Hypercorn closes a keep-alive connection after 1,000 requests by default, which
    # makes every Falco reconnect (and re-handshake TLS) every 1,000 alerts.
    config.keep_alive_max_requests = 1_000_000
    # Hypercorn's idle timer runs from the connection's start until a request's
    # headers are complete, so keep_alive_timeout also bounds a client that trickles
    # its headers (and h11_max_incomplete_size their size); the body has
    # BODY_TIMEOUT, the TLS handshake this. Hypercorn's read_timeout is left off:
    # it would also close Falco's idle keep-alive connection.
    config.ssl_handshake_timeout = read_timeout
    scheme = "https" if tls is not None else "http"
    log(
        logging.INFO,
        "http listening",
        LOG,
        bind=config.bind[0],
        scheme=scheme,
        client_certificates="required" if tls is not None and tls.client_ca else "no",
        health=extra[0] if extra else "",
    )
    await serve(app, config, shutdown_trigger=shutdown_trigger)
    await asyncio.sleep(0)
