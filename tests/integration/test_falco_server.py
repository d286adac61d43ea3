"""The simulator's Falco endpoint behaves as Falco 0.43 does (grpc_server.cpp)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
import trustme

from gateway.falco_pb import outputs_pb2, outputs_pb2_grpc, version_pb2, version_pb2_grpc
from gateway.simulator.alerts import stream
from gateway.simulator.falco_server import ServerTls
from gateway.simulator.wire import to_grpc_response
from gateway.sources.grpc import FalcoGrpcSource, GrpcTls
from tests.support import NatsServer, StartFalco, free_port, running_gateway, subscribe, take


def responses(count: int) -> list[outputs_pb2.response]:
    return [to_grpc_response(e) for e in stream("node-1", count)]


async def test_sub_writes_only_after_each_request(
    socket_path: str, start_falco: StartFalco
) -> None:
    falco = await start_falco(socket_path)
    for r in responses(3):
        falco.emit(r)
    one_request: asyncio.Queue[outputs_pb2.request | None] = asyncio.Queue()

    async def requests() -> AsyncIterator[outputs_pb2.request]:
        while (item := await one_request.get()) is not None:
            yield item

    received: asyncio.Queue[outputs_pb2.response] = asyncio.Queue()
    assert falco.clients == 0

    async with grpc.aio.insecure_channel(socket_path) as channel:
        call = outputs_pb2_grpc.serviceStub(channel).sub(requests())

        async def read_all() -> None:
            async for response in call:
                received.put_nowait(response)

        reader = asyncio.create_task(read_all())
        await one_request.put(outputs_pb2.request())
        for _ in range(3):
            await asyncio.wait_for(received.get(), 2)
        assert falco.clients == 1  # the open `sub` stream, as the benchmark's feed reports it
        # The queue ran dry: a new alert is not written until the client asks again.
        falco.emit(responses(1)[0])
        await asyncio.sleep(0.5)
        assert received.empty()
        await one_request.put(outputs_pb2.request())
        await asyncio.wait_for(received.get(), 2)
        await one_request.put(None)  # half-close: Falco ends the call
        await asyncio.wait_for(reader, 2)
    await falco.stop()


async def test_get_drains_and_ends(socket_path: str, start_falco: StartFalco) -> None:
    falco = await start_falco(socket_path)
    for r in responses(5):
        falco.emit(r)
    async with grpc.aio.insecure_channel(socket_path) as channel:
        got = [r async for r in outputs_pb2_grpc.serviceStub(channel).get(outputs_pb2.request())]
        again = [r async for r in outputs_pb2_grpc.serviceStub(channel).get(outputs_pb2.request())]
    await falco.stop()
    assert len(got) == 5
    assert again == []


async def test_clients_compete_for_one_queue(socket_path: str, start_falco: StartFalco) -> None:
    falco = await start_falco(socket_path)
    sent = responses(40)
    for r in sent:
        falco.emit(r)
    async with (
        grpc.aio.insecure_channel(socket_path) as a,
        grpc.aio.insecure_channel(socket_path) as b,
    ):
        first = outputs_pb2_grpc.serviceStub(a).get(outputs_pb2.request())
        second = outputs_pb2_grpc.serviceStub(b).get(outputs_pb2.request())
        got_a, got_b = await asyncio.gather(_drain(first), _drain(second))
    await falco.stop()
    assert sorted(r.rule for r in got_a + got_b) == sorted(r.rule for r in sent)
    assert len(got_a) + len(got_b) == len(sent)


async def _drain(call: grpc.aio.UnaryStreamCall) -> list[outputs_pb2.response]:  # type: ignore[type-arg]
    return [r async for r in call]


async def test_version(socket_path: str, start_falco: StartFalco) -> None:
    falco = await start_falco(socket_path)
    async with grpc.aio.insecure_channel(socket_path) as channel:
        version = await version_pb2_grpc.serviceStub(channel).version(version_pb2.request())
    await falco.stop()
    assert (version.version, version.major, version.minor, version.patch) == ("0.43.1", 0, 43, 1)


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    server = ca.issue_cert("falco.falco.svc")
    client = ca.issue_cert("falco-nats-gateway")
    files = {
        "ca": tmp_path / "ca.crt",
        "server_cert": tmp_path / "server.crt",
        "server_key": tmp_path / "server.key",
        "client_cert": tmp_path / "client.crt",
        "client_key": tmp_path / "client.key",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.cert_chain_pems[0].write_to_path(str(files["server_cert"]))
    server.private_key_pem.write_to_path(str(files["server_key"]))
    client.cert_chain_pems[0].write_to_path(str(files["client_cert"]))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    return {k: str(v) for k, v in files.items()}


def server_tls(files: dict[str, str]) -> ServerTls:
    return ServerTls(
        private_key=Path(files["server_key"]).read_bytes(),
        certificate_chain=Path(files["server_cert"]).read_bytes(),
        root_certificates=Path(files["ca"]).read_bytes(),
    )


async def test_gateway_streams_over_tcp_with_mutual_tls(
    nats_server: NatsServer, tls_files: dict[str, str], start_falco: StartFalco
) -> None:
    address = f"127.0.0.1:{free_port()}"
    falco = await start_falco(address, tls=server_tls(tls_files))
    event = next(stream("node-1", 1))
    falco.emit(to_grpc_response(event))
    nc, inbox = await subscribe(nats_server.url)
    async with running_gateway(
        nats_server.url,
        falco_grpc=address,
        grpc_client_cert=tls_files["client_cert"],
        grpc_client_key=tls_files["client_key"],
        grpc_ca_cert=tls_files["ca"],
        grpc_server_name="falco.falco.svc",
    ):
        (msg,) = await take(inbox, 1)
    await nc.close()
    await falco.stop()
    assert msg.subject == "falco.notice.terminal_shell_in_container"


async def test_falco_refuses_a_client_without_a_certificate(
    tls_files: dict[str, str], start_falco: StartFalco
) -> None:
    address = f"127.0.0.1:{free_port()}"
    falco = await start_falco(address, tls=server_tls(tls_files))
    credentials = grpc.ssl_channel_credentials(root_certificates=Path(tls_files["ca"]).read_bytes())
    options = [("grpc.ssl_target_name_override", "falco.falco.svc")]
    async with grpc.aio.secure_channel(address, credentials, options=options) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await version_pb2_grpc.serviceStub(channel).version(version_pb2.request(), timeout=3)
    await falco.stop()


def test_tcp_source_without_tls_is_refused() -> None:
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="mutual TLS"):
        FalcoGrpcSource("127.0.0.1:5060", pipeline=None)  # type: ignore[arg-type]


def test_unreadable_or_non_pem_cert_files_are_named(tmp_path: Path) -> None:
    from gateway.errors import ConfigError

    not_pem = tmp_path / "client.crt"
    not_pem.write_text("hello")
    with pytest.raises(ConfigError, match=r"grpc_ca_cert: cannot read .*ca\.crt"):
        GrpcTls.from_files(str(tmp_path / "ca.crt"), str(not_pem), str(not_pem))
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=r"grpc_client_key: .*client\.crt is not a PEM file"):
        GrpcTls.from_files(str(ca), str(not_pem), str(not_pem))
