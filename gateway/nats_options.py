"""The NATS connection options of a configuration, shared by the gateway, `tail` and `check`."""

from __future__ import annotations

from typing import Any

from gateway.config import Settings
from gateway.tls import client_context


def connect_options(settings: Settings, name: str = "falco-nats-gateway") -> dict[str, Any]:
    """Keyword arguments for nats-py's `connect` (servers, identity, TLS, authentication).

    Secret files are read here, at connect time, so each start picks up a rotated secret.
    """
    options: dict[str, Any] = {"servers": settings.nats_servers, "name": name}
    if settings.nats_ca or settings.nats_cert:
        # nats-py upgrades to TLS when the server's INFO requires it (nats-server
        # does whenever it has a `tls` block), and then verifies it with this context.
        options["tls"] = client_context(settings.nats_ca, settings.nats_cert, settings.nats_key)
    if settings.nats_token or settings.nats_token_file:
        options["token"] = settings.secret("nats_token")
    if settings.nats_user:
        options["user"] = settings.nats_user
        options["password"] = settings.secret("nats_password")
    if settings.nats_nkey_seed:
        options["nkeys_seed"] = settings.nats_nkey_seed
    if settings.nats_creds:
        options["user_credentials"] = settings.nats_creds
    return options
