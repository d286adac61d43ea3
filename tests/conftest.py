"""Fixtures every kind of test shares, and the marker each test gets from its directory.

tests/unit: pure logic, no process or socket of its own. tests/integration: real
servers (nats-server, a Falco gRPC endpoint, the gateway's HTTP server). tests/k8s:
the chart, values files, Dockerfile and demo script, no cluster. tests/operator:
alert rules and dashboard against promtool and a real Prometheus. tests/bench: the
benchmark's harness. `pytest -m unit` (or `make unit`) runs one kind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.simulator.falco_server import FalcoServer
from tests.support import NatsServer

TESTS = Path(__file__).parent
# tests/<directory>/... -> marker (registered in pyproject.toml).
KINDS = {
    "unit": "unit",
    "integration": "integration",
    "k8s": "k8s",
    "operator": "operator",
    "bench": "bench",
    "chaos": "chaos",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.relative_to(TESTS).parts
        kind = KINDS.get(parts[0]) if len(parts) > 1 else None
        if kind is not None:
            item.add_marker(kind)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def js_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server with JetStream, its store under the test's tmp_path."""
    server = NatsServer(tmp_path, jetstream=True).start()
    yield server
    server.stop()


@pytest.fixture
def socket_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    # unix socket paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    import tempfile

    directory = tempfile.mkdtemp(prefix="fng-")
    return f"unix://{directory}/falco.sock"


@pytest.fixture
async def start_falco() -> AsyncIterator[Callable[..., Awaitable[FalcoServer]]]:
    """Starts Falco stand-ins and always stops them: a grpc.aio server left to the
    garbage collector after its event loop closed can stall the test process."""
    servers: list[FalcoServer] = []

    async def start(address: str, **kwargs: Any) -> FalcoServer:
        server = await FalcoServer(address, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()
