"""Real TLS on real sockets for all three links, with certificates made for the run (trustme),
and the failure cases: wrong CA, no client certificate, an expired one, bad credentials."""

# ruff: noqa: S106 - test credentials for throw-away servers
from __future__ import annotations

import asyncio
import base64
import datetime
import os
import signal
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
import trustme
from nats.aio.msg import Msg

from gateway.commands.check import check_falco, check_nats
from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.nats_options import connect_options
from gateway.simulator.wire import to_grpc_response
from tests.support import (
    NatsServer,
    StartFalco,
    free_port,
    gateway_command,
    running_gateway,
    subprocess_env,
    take,
    until,
    wait_for_port,
)

ALERT = orjson.dumps(
    {
        "time": "2024-05-01T10:00:00.000000000Z",
        "priority": "Warning",
        "rule": "Secure rule",
        "output": "a secure alert",
        "output_fields": {"proc.name": "bash"},
    }
)


@dataclass(frozen=True)
class Pki:
    """Files of one test's certificates: a CA, a server and a client it signed, a client
    signed by another CA, and an expired client."""

    dir: Path
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca: str
    rogue_cert: str
    rogue_key: str
    expired_cert: str
    expired_key: str

    def client_context(self, cert: str = "", key: str = "", ca: str = "") -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=ca or self.ca)
        if cert:
            context.load_cert_chain(cert, key)
        return context


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca, other = trustme.CA(), trustme.CA()
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    leaves = {
        "server": ca.issue_cert("127.0.0.1", "localhost", "falco.falco.svc"),
        "client": ca.issue_cert("falco-nats-gateway"),
        "rogue": other.issue_cert("falco-nats-gateway"),
        "expired": ca.issue_cert(
            "falco-nats-gateway", not_before=past, not_after=past + datetime.timedelta(days=1)
        ),
    }
    paths: dict[str, str] = {}
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    other.cert_pem.write_to_path(str(tmp_path / "other-ca.crt"))
    for name, leaf in leaves.items():
        leaf.cert_chain_pems[0].write_to_path(str(tmp_path / f"{name}.crt"))
        leaf.private_key_pem.write_to_path(str(tmp_path / f"{name}.key"))
        paths[f"{name}_cert"] = str(tmp_path / f"{name}.crt")
        paths[f"{name}_key"] = str(tmp_path / f"{name}.key")
    return Pki(
        tmp_path,
        ca=str(tmp_path / "ca.crt"),
        other_ca=str(tmp_path / "other-ca.crt"),
        **paths,
    )


async def http(
    port: int,
    method: str = "POST",
    path: str = "/",
    body: bytes = ALERT,
    *,
    context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a new connection: (status, body)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost" if context else None
    )
    try:
        lines = [
            f"{method} {path} HTTP/1.1",
            "Host: localhost",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: close",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    if not data:
        raise ConnectionResetError("closed without an answer")
    head, _, answer = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), answer


async def refused(port: int, context: ssl.SSLContext | None) -> None:
    """The connection fails before any HTTP answer."""
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await http(port, context=context)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# -- HTTP listener -------------------------------------------------------------------------


async def test_https_with_mutual_tls(nats_server: NatsServer, pki: Pki) -> None:
    health_port = free_port()
    async with running_gateway(
        nats_server.url,
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        tls_client_ca=pki.ca,
        health_listen=f"127.0.0.1:{health_port}",
    ) as gw:
        port = gw.settings.listen_port
        good = pki.client_context(pki.client_cert, pki.client_key)
        status, answer = await http(port, context=good)
        assert (status, orjson.loads(answer)["status"]) == (200, "accepted")
        # No client certificate, one from another CA, an expired one: no handshake.
        await refused(port, pki.client_context())
        await refused(port, pki.client_context(pki.rogue_cert, pki.rogue_key))
        await refused(port, pki.client_context(pki.expired_cert, pki.expired_key))
        # A client that does not trust the gateway's CA refuses it.
        await refused(port, pki.client_context(pki.client_cert, pki.client_key, pki.other_ca))
        # Plain HTTP on the TLS port gets no HTTP answer.
        with pytest.raises((ConnectionError, ValueError, IndexError)):
            await http(port)
        # The probe port: plain HTTP, health paths only.
        for path in ("/ping", "/healthz", "/readyz", "/metrics"):
            assert (await http(health_port, "GET", path, b""))[0] == 200, path
        status, answer = await http(health_port)
        assert status == 404
        assert b"health port" in answer


async def test_https_without_client_certificates(nats_server: NatsServer, pki: Pki) -> None:
    async with running_gateway(
        nats_server.url, tls_cert=pki.server_cert, tls_key=pki.server_key
    ) as gw:
        status, _ = await http(gw.settings.listen_port, context=pki.client_context())
        assert status == 200


async def test_basic_auth(nats_server: NatsServer, pki: Pki) -> None:
    password_file = pki.dir / "http-password"
    password_file.write_text("pa:ss w0rd\n")
    async with running_gateway(
        nats_server.url, http_user="falco", http_password_file=str(password_file)
    ) as gw:
        port = gw.settings.listen_port
        assert (await http(port))[0] == 401
        assert (await http(port, headers=basic("falco", "wrong")))[0] == 401
        assert (await http(port, headers=basic("other", "pa:ss w0rd")))[0] == 401
        assert (await http(port, headers={"Authorization": "Basic !!!"}))[0] == 401
        assert (await http(port, "POST", "/test", b""))[0] == 401
        assert (await http(port, headers=basic("falco", "pa:ss w0rd")))[0] == 200
        # Probes and Prometheus need no credentials.
        assert (await http(port, "GET", "/healthz", b""))[0] == 200
        assert (await http(port, "GET", "/metrics", b""))[0] == 200


async def test_requests_over_the_in_flight_cap_get_503(nats_server: NatsServer) -> None:
    async with running_gateway(nats_server.url, http_max_in_flight=1) as gw:
        port = gw.settings.listen_port
        # A request whose body never completes holds the one slot.
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n{"
        )
        await writer.drain()
        statuses: list[int] = []

        async def busy() -> bool:
            statuses.append((await http(port))[0])
            return statuses[-1] == 503

        for _ in range(200):
            if await busy():
                break
            await asyncio.sleep(0.01)
        assert statuses[-1] == 503
        writer.close()
        # The slot is free again once the stalled request is gone.
        for _ in range(200):
            status, _ = await http(port)
            if status == 200:
                break
            await asyncio.sleep(0.01)
        assert status == 200


async def test_a_body_that_stalls_gets_408_naming_the_setting(nats_server: NatsServer) -> None:
    async with running_gateway(nats_server.url, http_read_timeout=0.2, http_max_in_flight=1) as gw:
        port = gw.settings.listen_port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n{"
            )
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(4096), 10)
        finally:
            writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408")
        assert b"http_read_timeout" in body
        assert gw.gateway.telemetry.get("rejected") == 1
        # The one in-flight slot is free again: the next alert is taken.
        assert (await http(port))[0] == 200


# -- gRPC client -----------------------------------------------------------------------------


def grpc_settings(pki: Pki, address: str, **overrides: str) -> Settings:
    values: dict[str, Any] = {
        "falco_grpc": address,
        "grpc_client_cert": pki.client_cert,
        "grpc_client_key": pki.client_key,
        "grpc_ca_cert": pki.ca,
        "grpc_server_name": "falco.falco.svc",
        **overrides,
    }
    return replace(Settings(), **values)


async def test_grpc_mutual_tls_failures(pki: Pki, start_falco: StartFalco) -> None:
    from gateway.simulator.falco_server import ServerTls

    address = f"127.0.0.1:{free_port()}"
    await start_falco(
        address,
        tls=ServerTls(
            private_key=Path(pki.server_key).read_bytes(),
            certificate_chain=Path(pki.server_cert).read_bytes(),
            root_certificates=Path(pki.ca).read_bytes(),
        ),
    )
    assert (await check_falco(grpc_settings(pki, address))).ok
    wrong_ca = await check_falco(grpc_settings(pki, address, grpc_ca_cert=pki.other_ca))
    rogue = await check_falco(
        grpc_settings(pki, address, grpc_client_cert=pki.rogue_cert, grpc_client_key=pki.rogue_key)
    )
    expired = await check_falco(
        grpc_settings(
            pki, address, grpc_client_cert=pki.expired_cert, grpc_client_key=pki.expired_key
        )
    )
    for result in (wrong_ca, rogue, expired):
        assert not result.ok
        assert "UNAVAILABLE" in result.detail


def test_grpc_mismatched_key_and_cert_are_named(pki: Pki) -> None:
    settings = grpc_settings(pki, "127.0.0.1:5060", grpc_client_key=pki.rogue_key)
    with pytest.raises(ConfigError, match=r"grpc_client_key: .*rogue\.key is not the private key"):
        settings.validate()
    with pytest.raises(ConfigError, match=r"grpc_ca_cert: .*holds no PEM certificate"):
        grpc_settings(pki, "127.0.0.1:5060", grpc_ca_cert=pki.client_key).validate()


async def test_grpc_alert_over_max_message_size_is_skipped(
    nats_server: NatsServer, socket_path: str, start_falco: StartFalco
) -> None:
    from gateway.event import FalcoEvent, Priority

    falco = await start_falco(socket_path)
    nc = await nats.connect(nats_server.url)
    queue: asyncio.Queue[Msg] = asyncio.Queue()
    await nc.subscribe("falco.>", cb=queue.put)
    try:
        async with running_gateway(
            nats_server.url, falco_grpc=socket_path, grpc_max_message_bytes=64 * 1024
        ) as gw:
            source = gw.gateway.grpc
            assert source is not None
            await until(lambda: source.connects == 1, "gRPC connection")
            huge = FalcoEvent(1, Priority.ERROR, "Huge", output="x" * 200_000)
            falco.emit(to_grpc_response(huge))
            # The oversized message ends the stream (RESOURCE_EXHAUSTED); the gateway
            # reconnects and reads on.
            await until(lambda: source.connects == 2, "gRPC reconnection")
            falco.emit(to_grpc_response(FalcoEvent(2, Priority.ERROR, "Small", output="fine")))
            (msg,) = await take(queue, 1, timeout=20)
            assert msg.subject == "falco.error.small"
    finally:
        await nc.close()


# -- NATS ------------------------------------------------------------------------------------


class SecureNats(NatsServer):
    def __init__(self, workdir: Path, extra: str) -> None:
        super().__init__(workdir)
        self.extra = extra

    def _config(self) -> Path:
        path = super()._config()
        path.write_text(path.read_text() + self.extra + "\n")
        return path


@pytest.fixture
async def secure_nats(tmp_path: Path) -> AsyncIterator[list[SecureNats]]:
    servers: list[SecureNats] = []
    yield servers
    for server in servers:
        server.stop()


def start_nats(servers: list[SecureNats], workdir: Path, extra: str) -> SecureNats:
    server = SecureNats(workdir, extra)
    server.start()
    servers.append(server)
    return server


async def delivered_over(settings: Settings) -> None:
    """An alert posted to the gateway arrives on NATS, read back over the same secured link."""
    nc = await nats.connect(**connect_options(settings, "test-subscriber"))
    queue: asyncio.Queue[Msg] = asyncio.Queue()
    await nc.subscribe("falco.>", cb=queue.put)
    await nc.flush()
    try:
        overrides = {
            k: getattr(settings, k) for k in Settings.__dataclass_fields__ if k.startswith("nats_")
        }
        url = overrides.pop("nats_url")
        async with running_gateway(url, **overrides) as gw:
            assert (await http(gw.settings.listen_port))[0] == 200
            (msg,) = await take(queue, 1)
            assert msg.subject == "falco.warning.secure_rule"
    finally:
        await nc.close()


async def test_nats_mutual_tls(secure_nats: list[SecureNats], pki: Pki, tmp_path: Path) -> None:
    tls = (
        f'tls {{ cert_file: "{pki.server_cert}", key_file: "{pki.server_key}", '
        f'ca_file: "{pki.ca}", verify: true, timeout: 2 }}'
    )
    server = start_nats(secure_nats, tmp_path, tls)
    good = replace(
        Settings(),
        nats_url=server.url,
        nats_ca=pki.ca,
        nats_cert=pki.client_cert,
        nats_key=pki.client_key,
    )
    await delivered_over(good)
    for bad in (
        replace(good, nats_ca=pki.other_ca),
        replace(good, nats_cert=pki.rogue_cert, nats_key=pki.rogue_key),
        replace(good, nats_cert=pki.expired_cert, nats_key=pki.expired_key),
        replace(good, nats_cert="", nats_key=""),
    ):
        (result,) = await check_nats(bad)
        assert not result.ok, bad


async def test_nats_token_from_a_file(secure_nats: list[SecureNats], tmp_path: Path) -> None:
    server = start_nats(secure_nats, tmp_path, 'authorization { token: "t0ken-s3cret" }')
    token_file = tmp_path / "token"
    token_file.write_text("t0ken-s3cret\n")
    good = replace(Settings(), nats_url=server.url, nats_token_file=str(token_file)).validate()
    await delivered_over(good)
    (result,) = await check_nats(replace(good, nats_token_file="", nats_token="wrong"))
    assert not result.ok
    assert "Authorization" in result.detail


async def test_nats_user_and_password(secure_nats: list[SecureNats], tmp_path: Path) -> None:
    server = start_nats(
        secure_nats, tmp_path, 'authorization { user: gateway, password: "p@ss word" }'
    )
    good = replace(Settings(), nats_url=server.url, nats_user="gateway", nats_password="p@ss word")
    await delivered_over(good)
    (result,) = await check_nats(replace(good, nats_password="nope"))
    assert not result.ok


async def test_nats_nkey_seed(secure_nats: list[SecureNats], tmp_path: Path) -> None:
    nkeys = pytest.importorskip("nkeys")
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    server = start_nats(secure_nats, tmp_path, f"authorization {{ users: [{{nkey: {public}}}] }}")
    seed_file = tmp_path / "gateway.nk"
    seed_file.write_bytes(seed + b"\n")
    good = replace(Settings(), nats_url=server.url, nats_nkey_seed=str(seed_file)).validate()
    await delivered_over(good)
    other = tmp_path / "other.nk"
    other.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    (result,) = await check_nats(replace(good, nats_nkey_seed=str(other)))
    assert not result.ok


def test_nats_settings_are_checked(pki: Pki, tmp_path: Path) -> None:
    base = Settings()
    cases = [
        (replace(base, nats_cert=pki.client_cert), "nats_key"),
        (replace(base, nats_cert=pki.client_cert, nats_key=pki.rogue_key), "nats_key"),
        (replace(base, nats_ca=str(tmp_path / "missing.crt")), "nats_ca"),
        (replace(base, nats_token="a", nats_user="u", nats_password="p"), "nats_user"),
        (replace(base, nats_user="u"), "nats_password"),
        (replace(base, nats_token="a", nats_token_file=pki.ca), "nats_token_file"),
        (replace(base, nats_nkey_seed=pki.ca), "nats_nkey_seed"),
        (replace(base, nats_creds=pki.ca), "nats_creds"),
        (replace(base, nats_password_file=str(tmp_path / "none")), "nats_password_file"),
    ]
    for settings, key in cases:
        with pytest.raises(ConfigError) as info:
            settings.validate()
        assert info.value.key == key, (key, str(info.value))


def test_connect_options_carry_every_credential(pki: Pki, tmp_path: Path) -> None:
    creds = tmp_path / "gateway.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\nx\n------END NATS USER JWT------\n")
    options = connect_options(replace(Settings(), nats_creds=str(creds)))
    assert options["user_credentials"] == str(creds)
    options = connect_options(
        replace(Settings(), nats_ca=pki.ca, nats_cert=pki.client_cert, nats_key=pki.client_key)
    )
    assert isinstance(options["tls"], ssl.SSLContext)
    password = tmp_path / "password"
    password.write_text("from-file\r\n")
    options = connect_options(replace(Settings(), nats_user="u", nats_password_file=str(password)))
    assert (options["user"], options["password"]) == ("u", "from-file")


# -- secrets never leak ----------------------------------------------------------------------


async def test_planted_secrets_never_reach_logs_health_or_metrics(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    planted = "PLANTED-s3cret-4f9c"
    # A server that wants a token the gateway does not have: the gateway logs the
    # refusals, and /healthz reports NATS down, all without the secret.
    server = SecureNats(tmp_path, 'authorization { token: "another-token" }')
    server.start()
    port = free_port()
    env = subprocess_env() | {
        "GATEWAY_NATS_URL": f"nats://gateway:{planted}@127.0.0.1:{server.port}",
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "GATEWAY_HTTP_USER": "falco",
        "GATEWAY_HTTP_PASSWORD": planted,
        "GATEWAY_LOG_LEVEL": "debug",
    }
    proc = subprocess.Popen(
        gateway_command(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for_port(port)
        health = await http(port, "GET", "/healthz", b"")
        metrics = await http(port, "GET", "/metrics", b"")
        denied = await http(port, headers=basic("falco", planted + "x"))
        assert health[0] == 503
        assert denied[0] == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        server.stop()
    assert b"nats://***@127.0.0.1" in err
    for text in (out, err, health[1], metrics[1], denied[1]):
        assert planted.encode() not in text
    # A configuration error shows the URL redacted too.
    bad = subprocess.run(
        [*gateway_command(), "--nats-url", f"nats://u:{planted}@host:99999"],
        env=subprocess_env(),
        capture_output=True,
        timeout=30,
    )
    assert bad.returncode == 2
    assert b"nats_url" in bad.stderr
    assert planted.encode() not in bad.stderr + bad.stdout
    assert planted not in repr(replace(Settings(), http_password=planted, nats_token=planted))
