from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
