"""`falco-nats-gateway check`: validate the configuration and try every link.

Prints one line per check and exits non-zero when any fails, so it can run as
a Kubernetes init container or be pasted into a support request.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from typing import TextIO

import grpc
import grpc.aio
import nats
import nats.errors
import orjson
from nats.aio.client import Client

from gateway.config import Settings, naming, redact, split_listen
from gateway.errors import ConfigError, StreamError
from gateway.falco_pb import version_pb2, version_pb2_grpc
from gateway.nats_options import connect_options
from gateway.sinks.stream import StreamCheckFailed, inspect_stream, stream_settings
from gateway.sources.grpc import GrpcTls, falco_channel

TIMEOUT = 3.0


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool
    detail: str


async def check_nats(settings: Settings) -> list[Result]:
    target = redact(settings.nats_url)
    errors: list[Exception] = []

    async def remember(exc: Exception) -> None:
        errors.append(exc)

    try:
        # One try per server: nats-py reads max_reconnect_attempts=0 as "forever".
        nc = await nats.connect(
            **connect_options(settings, "falco-nats-gateway-check"),
            connect_timeout=int(TIMEOUT),
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            error_cb=remember,
        )
    except (nats.errors.Error, OSError) as exc:
        cause = errors[-1] if errors else exc
        return [Result("nats", False, f"{target}: {type(cause).__name__}: {cause}")]
    try:
        url = nc.connected_url
        where = f"{url.hostname}:{url.port}" if url else target
        results = [
            Result(
                "nats",
                True,
                f"connected to {where}, server {_version(nc)}, max_payload {nc.max_payload} bytes",
            )
        ]
        if settings.jetstream:
            results.append(await _check_stream(nc, settings))
        return results
    finally:
        await nc.close()


def _version(nc: Client) -> str:
    v = nc.connected_server_version
    return f"{v.major}.{v.minor}.{v.patch}"


async def _check_stream(nc: Client, settings: Settings) -> Result:
    wanted = stream_settings(settings)
    try:
        info = await inspect_stream(nc.jetstream(timeout=TIMEOUT), wanted)
    except StreamError as exc:
        return Result("jetstream", False, str(exc))
    except StreamCheckFailed as exc:
        return Result("jetstream", False, f"stream {wanted.name} could not be read: {exc}")
    if info is None:
        missing = f"stream {wanted.name} missing; the gateway will create it"
        return Result("jetstream", True, missing)
    config = info.config
    return Result(
        "jetstream",
        True,
        f"stream {config.name}: subjects {', '.join(config.subjects or [])}, "
        f"{info.state.messages} messages, replicas {config.num_replicas}",
    )


async def check_falco(settings: Settings) -> Result:
    address = settings.falco_grpc
    if not address:
        return Result("falco-grpc", True, "off (HTTP only)")
    try:
        tls = GrpcTls.for_address(
            address,
            settings.grpc_ca_cert,
            settings.grpc_client_key,
            settings.grpc_client_cert,
            settings.grpc_server_name,
        )
        channel = falco_channel(address, tls)
    except ConfigError as exc:
        return Result("falco-grpc", False, str(exc))
    async with channel:
        try:
            stub = version_pb2_grpc.serviceStub(channel)
            version = await stub.version(version_pb2.request(), timeout=TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            return Result("falco-grpc", False, f"{address}: {exc.code().name}: {exc.details()}")
    return Result("falco-grpc", True, f"{address}: Falco {version.version}")


async def check_http(settings: Settings) -> Result:
    host, port = settings.listen_host, settings.listen_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            running = await _running_gateway(settings)
            if running is not None:
                return running
            return Result("http", False, f"cannot listen on {settings.listen}: {exc.strerror}")
    return Result("http", True, f"{settings.listen} is free")


async def _running_gateway(settings: Settings) -> Result | None:
    """The port is taken: if by a gateway, what its /healthz says (a task down after
    a failure, NATS away), so that check run next to a gateway tells its state."""
    from gateway.simulator.http_client import HttpClient

    if settings.health_listen:
        host, port = split_listen(settings.health_listen, "health_listen")
    elif not settings.tls_cert:
        host, port = settings.listen_host, settings.listen_port
    else:
        return None  # HTTPS only and no plain health port to ask
    host = "127.0.0.1" if host in {"0.0.0.0", ""} else "::1" if host == "::" else host
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        async with HttpClient(f"http://{where}/", timeout=TIMEOUT) as http:
            answer = await http.get("/healthz")
    except (OSError, TimeoutError, ValueError):
        return None
    try:
        reason = orjson.loads(answer.body).get("reason", "")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if answer.status == 200:
        return Result("http", True, f"{settings.listen} is served by a running gateway, healthy")
    return Result(
        "http",
        False,
        f"{settings.listen} is served by a running gateway, unhealthy "
        f"(/healthz {answer.status}): {reason}",
    )


def check_spool(settings: Settings) -> Result:
    from gateway.spool import Spool

    if not settings.spool_dir:
        return Result("spool", True, "in memory (set spool_dir to survive restarts)")
    try:
        with naming("spool_dir"):
            spool = Spool(settings.spool_dir, settings.spool_max_bytes, settings.spool_sync)
    except ConfigError as exc:
        return Result("spool", False, str(exc))
    try:
        refused = spool.try_write()
        if refused:
            return Result(
                "spool",
                False,
                f"{spool.location}: the disk refuses writes ({refused}); the gateway would "
                "refuse every alert (HTTP 503)",
            )
        if spool.damage:
            # Repaired by this check (damaged parts kept under spool_dir/damaged); the
            # gateway starts on what could be read, but someone should know.
            return Result(
                "spool",
                False,
                f"{spool.location} was damaged: {'; '.join(spool.damage)}; "
                f"{spool.count} alerts readable and kept",
            )
        return Result(
            "spool", True, f"{spool.location}: {spool.count} alerts waiting, {spool.bytes} bytes"
        )
    finally:
        spool.close()


async def run_checks(settings: Settings, out: TextIO = sys.stdout) -> int:
    results = [Result("config", True, "valid")]
    results += await check_nats(settings)
    results.append(await check_falco(settings))
    results.append(await check_http(settings))
    results.append(check_spool(settings))
    for result in results:
        print(f"{'ok' if result.ok else 'FAIL':<5} {result.name:<11} {result.detail}", file=out)
    failed = [r.name for r in results if not r.ok]
    print(f"{len(results) - len(failed)} ok, {len(failed)} failed", file=out)
    return 1 if failed else 0
