"""The gRPC source: a client of Falco's `falco.outputs.service/sub` stream.

Falco writes queued alerts only after it reads a client `request`, and stops
at the first moment its queue is empty until the next request arrives. So the
client sends an empty request every `poll_interval` seconds for as long as the
stream lives; that interval bounds the delay of an alert that arrives after an
idle spell. Falco's queue is shared: every alert goes to exactly one client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from gateway.backoff import Backoff
from gateway.errors import AlertError, ConfigError, SpoolFull
from gateway.event import FalcoEvent
from gateway.falco_pb import outputs_pb2, version_pb2, version_pb2_grpc
from gateway.logs import OncePer, StateLog, log
from gateway.normalize import DEFAULT_LIMITS, Limits, from_grpc
from gateway.pipeline import Pipeline
from gateway.sources.grpc_wire import repaired_response
from gateway.sources.unexpected import UnexpectedErrors

LOG = logging.getLogger("gateway.grpc")

VERSION_TIMEOUT = 5.0
# A stream that delivered nothing and ended sooner than this after connecting
# does not reset the reconnect backoff: a Falco that ends every stream at once
# gets reconnects further and further apart, not ~8 a second.
STABLE_AFTER = 10.0
_SUB = "/falco.outputs.service/sub"
_parse_response = outputs_pb2.response.FromString


@dataclass(frozen=True)
class GrpcTls:
    """Client side of Falco's mandatory mutual TLS on TCP, read once at start-up."""

    root_certificates: bytes
    private_key: bytes
    certificate_chain: bytes
    server_name: str = ""

    @classmethod
    def from_files(cls, ca: str, key: str, cert: str, server_name: str = "") -> GrpcTls:
        return cls(
            root_certificates=_read("grpc_ca_cert", ca),
            private_key=_read("grpc_client_key", key),
            certificate_chain=_read("grpc_client_cert", cert),
            server_name=server_name,
        )

    @classmethod
    def for_address(
        cls, address: str, ca: str, key: str, cert: str, server_name: str = ""
    ) -> GrpcTls | None:
        """None on a unix socket (no TLS there); the certificates read on TCP."""
        if address.startswith("unix://"):
            return None
        return cls.from_files(ca, key, cert, server_name)


def falco_channel(
    address: str, tls: GrpcTls | None, options: Sequence[tuple[str, int | str]] = ()
) -> grpc.aio.Channel:
    """The channel to Falco's gRPC API: plain on a unix socket, mutual TLS on TCP.

    The source and `check` both open theirs here, so `check` tries the link the
    gateway would use."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=list(options))
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.root_certificates,
        private_key=tls.private_key,
        certificate_chain=tls.certificate_chain,
    )
    extra = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
    return grpc.aio.secure_channel(address, credentials, options=[*options, *extra])


def _read(key: str, path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN" not in data:
        raise ConfigError(key, f"{path} is not a PEM file")
    return data


class FalcoGrpcSource:
    def __init__(
        self,
        address: str,
        pipeline: Pipeline,
        poll_interval: float = 0.1,
        tls: GrpcTls | None = None,
        backoff: Backoff | None = None,
        *,
        max_message_bytes: int = 4 * 1024 * 1024,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        if not address.startswith("unix://") and tls is None:
            raise ConfigError("falco_grpc", f"{address}: TCP needs mutual TLS certificates")
        self.address = address
        self.pipeline = pipeline
        self.poll_interval = poll_interval
        self.tls = tls
        self.limits = limits
        # A larger message ends the stream with RESOURCE_EXHAUSTED instead of being
        # read into memory; the gateway reconnects and goes on with the next alert.
        # No bandwidth-delay probing: it grows HTTP/2's flow-control window to buffer
        # megabytes of Falco's backlog inside grpc, resident for good after a burst
        # (~1.6 MB measured). The 64 KiB default keeps the same pace on a local socket,
        # and over TCP still passes ~64 MB/s at 1 ms round trip: ~100k alerts/s.
        self.channel_options: list[tuple[str, int | str]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.http2.bdp_probe", 0),
        ]
        self.backoff = backoff if backoff is not None else Backoff(initial=0.1, maximum=5.0)
        self.state = StateLog("falco-grpc", LOG)
        self.falco_version = ""
        self.connects = 0
        # Messages read off the stream, and the last wait before a reconnect.
        self.messages = 0
        self.last_delay = 0.0
        self._rejections = OncePer()
        self._unexpected = UnexpectedErrors(pipeline.telemetry, "grpc", LOG)
        # Cleared while the spool is full: no requests, so Falco keeps its queue.
        self._requesting = asyncio.Event()
        self._requesting.set()

    def _channel(self) -> grpc.aio.Channel:
        return falco_channel(self.address, self.tls, self.channel_options)

    async def run(self, stop: asyncio.Event, drain_timeout: float = 5.0) -> None:
        """Stream alerts until `stop` is set, reconnecting to Falco as often as needed."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started, messages = loop.time(), self.messages
            try:
                await self._session(stop, drain_timeout)
            except grpc.aio.AioRpcError as exc:
                self.state.change(
                    "unavailable",
                    logging.WARNING,
                    code=exc.code().name,
                    details=exc.details() or "",
                )
            if stop.is_set():
                break
            if self.messages > messages or loop.time() - started >= STABLE_AFTER:
                self.backoff.reset()
            self.last_delay = self.backoff.next_delay()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.last_delay)
        self.state.change("stopped")

    async def _session(self, stop: asyncio.Event, drain_timeout: float) -> None:
        async with self._channel() as channel:
            version = await self._read_version(channel)
            self.falco_version = version
            self.connects += 1
            self.state.change("connected", address=self.address, falco_version=version)
            # Each message as bytes, parsed here: grpc's own deserializer would end the
            # whole stream on one message Python's protobuf refuses (see grpc_wire).
            sub = channel.stream_stream(
                _SUB,
                request_serializer=outputs_pb2.request.SerializeToString,
                response_deserializer=None,
            )
            call = sub(self._requests(stop))
            reader = asyncio.create_task(self._read_stream(call))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not reader.done():
                # Stop asked: the request stream has ended, so Falco writes what it
                # already took from its queue and finishes the call. Read all of it.
                done, _ = await asyncio.wait({reader}, timeout=drain_timeout)
                if not done:
                    call.cancel()
                    reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if not stop.is_set():
            self.state.change("ended", logging.WARNING, reason="Falco closed the stream")

    async def _read_version(self, channel: grpc.aio.Channel) -> str:
        stub = version_pb2_grpc.serviceStub(channel)
        try:
            response = await stub.version(version_pb2.request(), timeout=VERSION_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            return "unknown"
        return str(response.version)

    async def _requests(self, stop: asyncio.Event) -> AsyncIterator[outputs_pb2.request]:
        request = outputs_pb2.request()
        while not stop.is_set():
            if self._requesting.is_set():
                yield request
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_interval)

    async def _read_stream(self, call: grpc.aio.StreamStreamCall) -> None:  # type: ignore[type-arg]
        accept = self._accept
        count = 0
        try:
            async for data in call:
                count += 1
                event = accept(data)
                if event is not None:
                    await self._hold_until_spooled(event)
        finally:
            self.messages += count

    def _accept(self, data: bytes) -> FalcoEvent | None:
        """Spool one alert; the event back if the spool is full (to be retried)."""
        repaired = False
        try:
            try:
                response = _parse_response(data)
            except DecodeError:
                response = repaired_response(data)
                repaired = True
            event = from_grpc(response, self.limits)
        except AlertError as exc:
            self.pipeline.rejected("grpc", exc.kind)
            if self._rejections.first(exc.reason):
                log(logging.WARNING, "alert rejected", LOG, path="grpc", reason=exc.reason)
            return None
        except Exception as exc:  # one alert must not end the stream
            # A bug of ours that one message brings out: that message is lost, the
            # stream goes on; counted, and logged with its traceback once per kind.
            self.pipeline.rejected("grpc", "unexpected_error")
            self._unexpected.record(exc, "reading a gRPC alert")
            return None
        if repaired:
            self.pipeline.repaired("grpc", event)
        try:
            self.pipeline.accept(event, "grpc")
        except SpoolFull:
            return event
        return None

    async def _hold_until_spooled(self, event: FalcoEvent) -> None:
        # Falco already handed this alert over, so keep it and retry; stop asking
        # Falco for more meanwhile, so the rest waits in Falco's queue.
        self._requesting.clear()
        retry = Backoff(initial=0.05, maximum=1.0)
        while True:
            await asyncio.sleep(retry.next_delay())
            try:
                self.pipeline.accept(event, "grpc")
                break
            except SpoolFull:
                continue
        self._requesting.set()
