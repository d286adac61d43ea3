"""The local-run parts the tests, the benchmark and `make demo` share
(gateway/simulator/nats_server.py, ports.py): a nats-server that cannot start says
why at once, and a graceful restart keeps the port and the JetStream store."""

from __future__ import annotations

import socket
from pathlib import Path

import nats
import pytest

from gateway.simulator.nats_server import NatsServer, wait_jetstream
from gateway.simulator.ports import ExitedEarly, free_port, wait_for_port


class BrokenNats(NatsServer):
    def _config(self) -> Path:
        path = super()._config()
        path.write_text(path.read_text() + "no_such_setting {{ broken\n")
        return path


def test_a_server_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    server = BrokenNats(tmp_path)
    # A generous bound: the point is that the exit is noticed, not how soon.
    with pytest.raises(ExitedEarly) as raised:
        server.start(timeout=120)
    message = str(raised.value)
    assert f"nats-server exited with 1 before listening on {server.port}" in message
    assert "Parse error" in message  # nats-server's own complaint, from its log


def test_nothing_listening_is_a_timeout_naming_the_port() -> None:
    with socket.socket() as held:  # bound, not listening: connections are refused
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        with pytest.raises(TimeoutError, match=f"127.0.0.1:{port}"):
            wait_for_port(port, timeout=0.2)


def test_free_port_is_free() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


async def test_graceful_restart_keeps_the_port_and_the_stream(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, jetstream=True).start()
    try:
        url = server.url
        await wait_jetstream(url)
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            await js.add_stream(name="KEPT", subjects=["kept.>"])
            await js.publish("kept.one", b"1")
        finally:
            await nc.close()
        server.stop(graceful=True)
        assert server.proc is None
        server.start()
        assert server.url == url
        await wait_jetstream(url)
        nc = await nats.connect(url)
        try:
            info = await nc.jetstream().stream_info("KEPT")
        finally:
            await nc.close()
        assert info.state.messages == 1
    finally:
        server.stop()
