"""Falco 0.43's gRPC outputs and version services, with Falco's queue semantics.

Faithful to `grpc_server.cpp` and `grpc_request_context.cpp`:
- one global queue; every alert is popped once, whichever client pops it;
- `sub` reads one client request, writes alerts while the queue has any, then
  waits for the next request (a client that stops asking stops receiving);
- `get` drains the queue and ends the call;
- a `unix://` address is served in plaintext; any other address requires and
  verifies a client certificate.

`emit_raw` queues bytes sent as they are, as one response: Falco's C++ protobuf
sends what Python's refuses to build (a string field that is not UTF-8).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import grpc.aio

from gateway.falco_pb import outputs_pb2, version_pb2, version_pb2_grpc

FALCO_VERSION = "0.43.1"


# A queued alert: a message, or bytes already serialized (sent as they are).
Queued = outputs_pb2.response | bytes


def _serialize(item: Queued) -> bytes:
    return item if isinstance(item, bytes) else item.SerializeToString()


class AlertQueue:
    """Falco's output queue: unbounded, shared by every client, each alert popped once."""

    def __init__(self) -> None:
        self._items: collections.deque[Queued] = collections.deque()

    def push(self, response: Queued) -> None:
        self._items.append(response)

    def pop(self) -> Queued | None:
        return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        return len(self._items)


class _Outputs:
    """Falco's outputs service (registered by `_add_outputs`)."""

    def __init__(self, queue: AlertQueue) -> None:
        self.queue = queue
        self.requests = 0
        self.active = 0
        self.closing = asyncio.Event()
        # Set: every `sub` ends at once with OK, as a Falco whose outputs are going away.
        self.end_at_once = False

    async def sub(
        self,
        request_iterator: AsyncIterator[outputs_pb2.request],
        context: grpc.aio.ServicerContext[outputs_pb2.request, outputs_pb2.response],
    ) -> AsyncIterator[Queued]:
        if self.end_at_once:
            return
        self.active += 1
        requests = aiter(request_iterator)
        try:
            while not self.end_at_once:
                next_request = asyncio.ensure_future(anext(requests, None))
                closing = asyncio.ensure_future(self.closing.wait())
                await asyncio.wait({next_request, closing}, return_when=asyncio.FIRST_COMPLETED)
                closing.cancel()
                if not next_request.done():
                    # Graceful stop: end the call with OK rather than have it cancelled.
                    next_request.cancel()
                    return
                if next_request.result() is None:
                    return  # the client half-closed
                self.requests += 1
                while (response := self.queue.pop()) is not None:
                    yield response
        finally:
            self.active -= 1

    async def get(
        self,
        request: outputs_pb2.request,
        context: grpc.aio.ServicerContext[outputs_pb2.request, outputs_pb2.response],
    ) -> AsyncIterator[Queued]:
        while (response := self.queue.pop()) is not None:
            yield response


def _add_outputs(servicer: _Outputs, server: grpc.aio.Server) -> None:
    """The generated registration, with a serializer that also passes bytes through."""
    handlers = {
        "sub": grpc.stream_stream_rpc_method_handler(
            servicer.sub,
            request_deserializer=outputs_pb2.request.FromString,
            response_serializer=_serialize,
        ),
        "get": grpc.unary_stream_rpc_method_handler(
            servicer.get,
            request_deserializer=outputs_pb2.request.FromString,
            response_serializer=_serialize,
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("falco.outputs.service", handlers),)
    )


class _Version(version_pb2_grpc.serviceServicer):
    async def version(
        self,
        request: version_pb2.request,
        context: grpc.aio.ServicerContext[version_pb2.request, version_pb2.response],
    ) -> version_pb2.response:
        major, minor, patch = (int(p) for p in FALCO_VERSION.split("."))
        return version_pb2.response(
            version=FALCO_VERSION,
            major=major,
            minor=minor,
            patch=patch,
            engine_version="0.57.0",
            engine_major=0,
            engine_minor=57,
            engine_patch=0,
        )


@dataclass(frozen=True)
class ServerTls:
    """Falco's gRPC TLS material: its key and certificate, and the CA of its clients."""

    private_key: bytes
    certificate_chain: bytes
    root_certificates: bytes


class FalcoServer:
    """A running Falco gRPC endpoint. `emit` queues an alert as Falco's outputs would."""

    def __init__(
        self, address: str, tls: ServerTls | None = None, queue: AlertQueue | None = None
    ) -> None:
        self.address = address
        self.queue = queue if queue is not None else AlertQueue()
        self._outputs = _Outputs(self.queue)
        self._server = grpc.aio.server()
        _add_outputs(self._outputs, self._server)
        version_pb2_grpc.add_serviceServicer_to_server(_Version(), self._server)
        if address.startswith("unix://"):
            self.port = self._server.add_insecure_port(address)
        else:
            if tls is None:
                raise ValueError(f"{address}: Falco serves TCP only with mutual TLS")
            credentials = grpc.ssl_server_credentials(
                [(tls.private_key, tls.certificate_chain)],
                root_certificates=tls.root_certificates,
                require_client_auth=True,
            )
            self.port = self._server.add_secure_port(address, credentials)

    @property
    def requests_seen(self) -> int:
        """How many `sub` requests clients have sent: shows the client keeps asking."""
        return self._outputs.requests

    @property
    def clients(self) -> int:
        """How many `sub` streams are open now: shows who is connected."""
        return self._outputs.active

    def emit(self, response: outputs_pb2.response) -> None:
        self.queue.push(response)

    def emit_raw(self, data: bytes) -> None:
        """Queue one pre-serialized `falco.outputs.response`, sent on `sub` (or `get`)
        exactly as given: invalid UTF-8, corrupt bytes, anything."""
        self.queue.push(bytes(data))

    def end_streams_at_once(self, on: bool = True) -> None:
        """While on, every `sub` call ends as soon as it starts (OK, nothing sent)."""
        self._outputs.end_at_once = on

    async def start(self) -> FalcoServer:
        await self._server.start()
        return self

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving. With a grace period, open `sub` streams end cleanly first;
        with none, they break as when Falco dies."""
        if grace is not None:
            self._outputs.closing.set()
            deadline = asyncio.get_running_loop().time() + grace
            while self._outputs.active and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await self._server.stop(grace)
