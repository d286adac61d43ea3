"""No long-lived task dies in silence: the real gateway, a real nats-server, and a real
failure under the publisher (its spool database loses its table while it runs)."""

from __future__ import annotations

import io
import logging
import sqlite3
from pathlib import Path

import orjson
import pytest

from gateway.commands.check import run_checks
from gateway.simulator.http_client import HttpClient
from gateway.spool import Spool
from tests.support import NatsServer, running_gateway, subscribe, take, until


def spool_with(folder: Path, count: int) -> list[str]:
    """A spool left by an earlier run with `count` alerts in it; their ids."""
    spool = Spool(str(folder))
    ids = [f"alert-{i}" for i in range(count)]
    for alert_id in ids:
        payload = orjson.dumps({"rule": "r", "priority": "Warning", "uuid": alert_id})
        spool.append("http", "falco.warning.r", {"Nats-Msg-Id": alert_id}, payload)
    spool.close()
    return ids


def rename_table(folder: Path, old: str, new: str) -> None:
    db = sqlite3.connect(folder / "spool.db")
    db.execute(f"ALTER TABLE {old} RENAME TO {new}")
    db.commit()
    db.close()


async def healthz(http: HttpClient) -> tuple[int, str]:
    response = await http.get("/healthz")
    return response.status, response.body.decode()


async def test_a_failing_publisher_is_logged_counted_restarted_and_never_healthy(
    nats_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool_dir = tmp_path / "spool"
    ids = spool_with(spool_dir, 3)
    url = nats_server.url
    nats_server.stop()
    caplog.set_level(logging.INFO)
    async with (
        running_gateway(url, wait_nats=False, spool_dir=str(spool_dir)) as gw,
        gw.client() as http,
    ):
        metrics = (await http.get("/metrics")).body.decode()
        for task in ("http", "publisher", "nats"):
            assert f'falco_nats_gateway_task_failures_total{{task="{task}"}} 0.0' in metrics
        # The publisher's dependency breaks under it: the table it reads is gone.
        rename_table(spool_dir, "spool", "elsewhere")
        nats_server.start()
        nc, inbox = await subscribe(url)
        tasks = gw.gateway

        await until(lambda: tasks.publisher_task.failures >= 1, "a publisher failure", 30)
        assert not gw.task.done()  # the gateway goes on
        # Connected to NATS, but not healthy: /healthz names the task that is down.
        status, body = await healthz(http)
        assert status == 503
        assert tasks.sink.connected
        assert "publisher task restarting" in body
        assert "no such table: spool" in body
        metrics = (await http.get("/metrics")).body.decode()
        assert 'falco_nats_gateway_task_failures_total{task="publisher"} 0.0' not in metrics
        assert 'falco_nats_gateway_task_failures_total{task="http"} 0.0' in metrics
        logged = [r for r in caplog.records if r.getMessage() == "task failed, restarting"]
        assert logged
        first = logged[0].fields  # type: ignore[attr-defined]
        assert first["task"] == "publisher"
        assert "no such table: spool" in first["error"]
        assert "Traceback (most recent call last)" in first["traceback"]
        # check, run next to the gateway, says so too.
        out = io.StringIO()
        assert await run_checks(gw.settings, out) == 1
        assert "FAIL  http        " in out.getvalue()
        assert "unhealthy (/healthz 503): publisher task" in out.getvalue()

        # Repaired: the next restart delivers what was waiting, and health comes back.
        rename_table(spool_dir, "elsewhere", "spool")
        messages = await take(inbox, len(ids), timeout=60)
        assert sorted(m.headers["Nats-Msg-Id"] for m in messages if m.headers) == ids
        await until(lambda: tasks.health() == (True, "ok"), "health to come back", 30)
        assert await healthz(http) == (200, '{"status": "ok"}')
        out = io.StringIO()
        await run_checks(gw.settings, out)
        assert "served by a running gateway, healthy" in out.getvalue()
        await nc.close()
    # Stopped cleanly: the failures were absorbed, nothing re-raised at the end.
    assert gw.task.result() is None
