"""Loopback ports for local runs: a free one, and waiting until one is served.

The tests, the benchmark and `make demo` all start servers (nats-server, the
gateway) on free ports and wait for them here.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ExitedEarly(RuntimeError):
    """What was to listen on the port ended first."""


def wait_for_port(
    port: int, timeout: float = 10.0, ended: Callable[[], bool] | None = None
) -> None:
    """Until something accepts on 127.0.0.1:`port`: TimeoutError after `timeout`,
    ExitedEarly as soon as `ended()` says the server is gone (no point waiting).

    Blocking; from async code run it with asyncio.to_thread so the loop goes on.
    """
    deadline = time.monotonic() + timeout
    while True:
        if ended is not None and ended():
            raise ExitedEarly(f"ended before listening on 127.0.0.1:{port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")
        time.sleep(0.02)
