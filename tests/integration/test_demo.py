"""`make demo` keeps working: the script runs the whole pipeline and checks itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import subprocess_env

ROOT = Path(__file__).resolve().parents[2]


def test_demo_shows_alerts_on_both_paths() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    # tail's lines show both paths; the seed alert is shown as `nats sub` prints it.
    assert "Notice        Terminal shell in container @minikube [grpc]" in out
    assert "[http]: " in out
    assert 'Received on "falco.notice.terminal_shell_in_container"' in out
    assert "published to NATS                : 16" in out
    assert "deduplicated (second copies)     : 4" in out
    assert "on falco.>, distinct Nats-Msg-Id : 16, 16" in out
    assert "demo OK" in out
    assert "Traceback" not in out + result.stderr
