from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.simulator.falco_server import FalcoServer
from tests.support import NatsServer


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path).start()
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
