"""NATS URLs with secrets in their user info, over every place a URL is printed: the
configuration error (run and check), check's report, the start-up log and the
connection state logs. The secret never shows, whatever characters it holds, and a
URL that cannot be read is a configuration error (exit 2), never a traceback."""

from __future__ import annotations

import io
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from gateway import cli
from gateway.commands.check import run_checks
from gateway.config import Settings, redact
from gateway.errors import ConfigError
from tests.support import (
    NatsServer,
    free_port,
    gateway_command,
    subprocess_env,
    wait_for_port,
)

SECRET = "Zq9SECRETx"
# A password with '@' is a valid NATS URL (nats-py takes the user info up to the
# last '@'); the server below knows it.
AT_PASSWORD = f"p@{SECRET}@w"

# {port}: the test's nats-server. Every one of these must be refused by name.
UNREADABLE = [
    "nats://gw:a/{s}@127.0.0.1:{port}",
    "nats://gw:a#{s}@127.0.0.1:{port}",
    "nats://gw:a?{s}@127.0.0.1:{port}",
    "nats://gw:a/b?c#{s}@d@127.0.0.1:{port}",
    "nats://gw:a,{s}@127.0.0.1:{port}",
    "nats://gw:{s}@[::1",
    "nats://gw:{s}@[::1]:99999",
    "nats://gw:{s}@127.0.0.1:port",
    "http://gw:{s}@127.0.0.1:{port}",
    "nats://gw:{s}@",
    "nats://127.0.0.1:{port}, nats://gw:x/{s}@127.0.0.1:{port}",
]

# Readable URLs: the gateway starts with them and logs its connection attempts.
READABLE = [
    "nats://gw:" + AT_PASSWORD + "@127.0.0.1:{port}",  # connects
    "nats://gw:wrong-{s}@127.0.0.1:{port}",  # refused by the server
    "nats://127.0.0.1:{port}, tls://{s}@127.0.0.1:{port}",  # a token on the second
    "gw:{s}@127.0.0.1:{port}",  # no scheme
]


class AuthNats(NatsServer):
    def _config(self) -> Path:
        path = super()._config()
        users = f'authorization {{ users = [ {{ user: "gw", password: "{AT_PASSWORD}" }} ] }}'
        path.write_text(path.read_text() + users + "\n")
        return path


@pytest.fixture
def auth_nats(tmp_path: Path) -> Iterator[AuthNats]:
    server = AuthNats(tmp_path)
    server.start()
    yield server
    server.stop()


def test_redact_masks_any_user_info() -> None:
    cases = {
        "nats://u:p/w#x?y@h:4222": "nats://***@h:4222",
        "nats://u:p@ss@h:4222": "nats://***@h:4222",
        "nats://u:a,b@h": "nats://***@h",
        "nats://u:x://y@h": "nats://***@h",
        "nats://u:pw@[::1": "nats://***@[::1",
        "u:p@a,v:q@b": "***@a,***@b",
        "nats://a:4222, nats://t@b:1": "nats://a:4222,nats://***@b:1",
        "tls://tok@a:4222, nats://b:4222": "tls://***@a:4222,nats://b:4222",
        "nats://u:secret@host:99999": "nats://***@host:99999",
        "nats://h:4222": "nats://h:4222",
        "": "",
    }
    for url, expected in cases.items():
        assert redact(url) == expected, url


@pytest.mark.parametrize("template", UNREADABLE)
def test_unreadable_urls_are_configuration_errors(template: str) -> None:
    url = template.format(s=SECRET, port=4222)
    with pytest.raises(ConfigError) as info:
        replace(Settings(), nats_url=url).validate()
    assert info.value.key == "nats_url"
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("command", [[], ["check"]])
@pytest.mark.parametrize("template", UNREADABLE)
def test_cli_names_the_bad_url_without_its_secret(
    template: str, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = template.format(s=SECRET, port=free_port())
    assert cli.main([*command, "--nats-url", url]) == 2
    out, err = capsys.readouterr()
    assert "configuration error: nats_url" in err
    assert SECRET not in out + err
    assert "Traceback" not in err


@pytest.mark.parametrize("template", READABLE)
async def test_check_report_hides_the_secret(auth_nats: AuthNats, template: str) -> None:
    url = template.format(s=SECRET, port=auth_nats.port)
    settings = replace(Settings(), nats_url=url, listen=f"127.0.0.1:{free_port()}").validate()
    out = io.StringIO()
    await run_checks(settings, out)
    report = out.getvalue()
    assert "nats" in report
    assert SECRET not in report
    if AT_PASSWORD in url:
        assert "ok    nats" in report, report


@pytest.mark.parametrize("template", READABLE)
def test_start_up_and_connection_logs_hide_the_secret(
    auth_nats: AuthNats, tmp_path: Path, template: str
) -> None:
    url = template.format(s=SECRET, port=auth_nats.port)
    port = free_port()
    errors = tmp_path / "stderr"
    env = subprocess_env() | {
        "GATEWAY_NATS_URL": url,
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "GATEWAY_LOG_LEVEL": "debug",
    }
    with errors.open("wb") as sink:
        proc = subprocess.Popen(gateway_command(), env=env, stdout=subprocess.PIPE, stderr=sink)
    try:
        wait_for_port(port)
        # Until the gateway has logged how its first connection went.
        deadline = time.monotonic() + 30
        while not any(m in errors.read_text() for m in ("nats connected", "nats error")):
            assert time.monotonic() < deadline, errors.read_text()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    logs = errors.read_text()
    assert "starting" in logs
    assert "nats connecting" in logs
    assert SECRET not in logs + out.decode()
    assert "***@127.0.0.1" in logs
    if AT_PASSWORD in url:
        assert "nats connected" in logs
