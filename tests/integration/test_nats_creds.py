"""The `.creds` login end to end: a real nats-server in operator (decentralised JWT) mode,
with operator, account and user JWTs made and signed here, the way nsc would."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nkeys  # type: ignore[import-untyped]
import orjson
import pytest
from nats.aio.msg import Msg

from gateway.commands.check import check_nats
from gateway.config import Settings
from tests.support import NatsServer, running_gateway, take

ALERT = orjson.dumps(
    {
        "time": "2024-05-01T10:00:00.000000000Z",
        "priority": "Warning",
        "rule": "Creds rule",
        "output": "an alert over a JWT login",
        "output_fields": {"proc.name": "bash"},
    }
)

# What nats-server grants when an account or user has no limits of its own.
UNLIMITED_ACCOUNT = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Identity:
    """One NKey: its seed (secret) and its public key."""

    seed: bytes
    public: str

    @classmethod
    def new(cls, prefix: int) -> Identity:
        seed = nkeys.encode_seed(os.urandom(32), prefix)
        return cls(seed, nkeys.from_seed(bytearray(seed)).public_key.decode())

    def sign(self, claims: dict[str, Any], subject: str, name: str, nats: dict[str, Any]) -> str:
        """A JWT v2 for `subject`, issued and signed by this key.

        The `jti` is computed as nats/jwt does: SHA-512/256 of the standard claims alone,
        in the field order of its Go struct, with `jti` left out, then base32 without padding.
        """
        standard = {"iat": int(time.time()), "iss": self.public, "name": name, "sub": subject}
        digest = hashlib.new("sha512_256", _compact(standard)).digest()
        jti = base64.b32encode(digest).decode().rstrip("=")
        payload = {"jti": jti, **standard, **claims, "nats": nats}
        header = _b64url(_compact({"typ": "JWT", "alg": "ed25519-nkey"}))
        signed = f"{header}.{_b64url(_compact(payload))}"
        signature = nkeys.from_seed(bytearray(self.seed)).sign(signed.encode())
        return f"{signed}.{_b64url(signature)}"


def account_jwt(operator: Identity, account: Identity, name: str) -> str:
    return operator.sign(
        {},
        account.public,
        name,
        {"type": "account", "version": 2, "limits": UNLIMITED_ACCOUNT},
    )


def creds_file(path: Path, account: Identity, name: str) -> Path:
    """A new user of `account`, written as nsc writes a `.creds` file."""
    user = Identity.new(nkeys.PREFIX_BYTE_USER)
    token = account.sign(
        {},
        user.public,
        name,
        {
            "type": "user",
            "version": 2,
            "pub": {},
            "sub": {},
            "subs": -1,
            "data": -1,
            "payload": -1,
        },
    )
    path.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{token}\n"
        "------END NATS USER JWT------\n"
        "\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n"
        "\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user.seed.decode()}\n"
        "------END USER NKEY SEED------\n"
        "\n"
        "*************************************************************\n"
    )
    return path


class OperatorNats(NatsServer):
    """nats-server trusting one operator, with its accounts preloaded in memory."""

    def __init__(self, workdir: Path, operator_jwt: str, accounts: dict[str, str]) -> None:
        super().__init__(workdir, name="jwt")
        self.operator_jwt = operator_jwt
        self.accounts = accounts

    @property
    def log(self) -> str:
        return (self.workdir / f"nats-{self.name}.log").read_text()

    def _config(self) -> Path:
        path = super()._config()
        preload = "\n".join(f"  {key}: {token}" for key, token in self.accounts.items())
        extra = [
            f"operator: {self.operator_jwt}",
            "resolver: MEMORY",
            f"resolver_preload: {{\n{preload}\n}}",
        ]
        path.write_text(path.read_text() + "\n".join(extra) + "\n")
        return path


@dataclass(frozen=True)
class Trust:
    server: OperatorNats
    account: Identity
    workdir: Path

    def creds(self, name: str, account: Identity | None = None) -> str:
        return str(creds_file(self.workdir / f"{name}.creds", account or self.account, name))


@pytest.fixture
def trust(tmp_path: Path) -> Iterator[Trust]:
    operator = Identity.new(nkeys.PREFIX_BYTE_OPERATOR)
    account = Identity.new(nkeys.PREFIX_BYTE_ACCOUNT)
    operator_jwt = operator.sign(
        {}, operator.public, "falco-test", {"type": "operator", "version": 2}
    )
    accounts = {account.public: account_jwt(operator, account, "FALCO")}
    server = OperatorNats(tmp_path, operator_jwt, accounts)
    server.start()
    try:
        yield Trust(server, account, tmp_path)
    finally:
        server.stop()


async def test_gateway_publishes_with_a_creds_file(trust: Trust) -> None:
    url = trust.server.url
    # The server admits nobody without credentials: a delivery below proves the JWT login.
    with pytest.raises(nats.errors.Error):
        await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False)

    nc = await nats.connect(
        url, user_credentials=trust.creds("subscriber"), max_reconnect_attempts=0
    )
    queue: asyncio.Queue[Msg] = asyncio.Queue()
    await nc.subscribe("falco.>", cb=queue.put)
    await nc.flush()
    try:
        async with running_gateway(url, nats_creds=trust.creds("gateway")) as gw:
            response = await gw.client().post(ALERT)
            assert response.status == 200, response.body
            (msg,) = await take(queue, 1)
            assert msg.subject == "falco.warning.creds_rule"
            assert orjson.loads(msg.data)["output"] == "an alert over a JWT login"
            assert (await gw.client().get("/healthz")).status == 200
    finally:
        await nc.close()


async def test_creds_of_another_account_are_refused(trust: Trust) -> None:
    # A well-formed user, signed by an account the operator never issued.
    stranger = Identity.new(nkeys.PREFIX_BYTE_ACCOUNT)
    wrong = trust.creds("stranger", account=stranger)
    with pytest.raises(nats.errors.Error):
        await nats.connect(
            trust.server.url,
            user_credentials=wrong,
            connect_timeout=2,
            max_reconnect_attempts=0,
            allow_reconnect=False,
        )
    (result,) = await check_nats(Settings(nats_url=trust.server.url, nats_creds=wrong).validate())
    assert not result.ok

    async with running_gateway(trust.server.url, wait_nats=False, nats_creds=wrong) as gw:
        client = gw.client()
        reasons: list[str] = []

        async def reports_nats() -> bool:
            health = await client.get("/healthz")
            reasons.append(orjson.loads(health.body).get("reason", ""))
            return health.status == 503 and reasons[-1].startswith("NATS")

        deadline = time.monotonic() + 10
        while not await reports_nats():
            assert time.monotonic() < deadline, "healthz never reported the NATS problem"
            await asyncio.sleep(0.1)
        # Still up: it answers, accepts the alert into its spool, and has not exited.
        assert (await client.get("/ping")).status == 200
        assert (await client.post(ALERT)).status == 200
        assert not gw.task.done()
        assert not gw.gateway.sink.connected
    # The refusal is the server's, for the reason intended: the account is unknown to it.
    assert "Account fetch failed: account missing" in trust.server.log
    assert "authentication error" in trust.server.log
