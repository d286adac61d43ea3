"""The NATS connection options of a configuration, shared by the gateway, `tail` and `check`."""

from __future__ import annotations

from typing import Any

from gateway.config import Settings


def connect_options(settings: Settings, name: str = "falco-nats-gateway") -> dict[str, Any]:
    """Keyword arguments for nats-py's `connect` (servers, identity)."""
    return {"servers": settings.nats_servers, "name": name}
