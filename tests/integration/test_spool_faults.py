"""The spool's disk full, and a damaged spool, with the real gateway and a real nats-server.

The full disk is a small tmpfs mounted by the test (the machine must allow it:
root, or the test is skipped saying so; tests/unit/test_spool_faults.py injects
the same errors at the spool's boundary with SQLite and runs everywhere).
"""

from __future__ import annotations

import errno
import io
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.commands.check import check_spool, run_checks
from gateway.config import Settings
from gateway.errors import SpoolFull
from gateway.event import FalcoEvent
from gateway.simulator.wire import to_falco_json, to_grpc_response
from gateway.spool import Spool
from tests.support import (
    NatsServer,
    StartFalco,
    free_port,
    running_gateway,
    stream_ids,
    until,
)
from tests.support import (
    catalog_alerts as alerts,
)

JETSTREAM: dict[str, Any] = {"jetstream": True, "stream_create": True}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); "
            "tests/unit/test_spool_faults.py injects the same disk errors"
        )
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Fill `disk` to the last byte with a file; the file."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:
        for size in (65536, 4096, 512, 1):
            with pytest.raises(OSError, match="No space left") as caught:  # noqa: PT012
                while True:
                    f.write(b"\0" * size)
            assert caught.value.errno == errno.ENOSPC
    return filler


def rows(spool_dir: Path) -> int:
    db = sqlite3.connect(spool_dir / "spool.db")
    try:
        return int(db.execute("SELECT COUNT(*) FROM spool").fetchone()[0])
    finally:
        db.close()


async def test_a_full_disk_refuses_like_a_full_spool_and_loses_nothing(
    js_server: NatsServer, small_disk: Path, socket_path: str, start_falco: StartFalco
) -> None:
    spool_dir = small_disk / "spool"
    settings: dict[str, Any] = {"spool_dir": str(spool_dir), "dedup_window": 600.0, **JETSTREAM}
    events = alerts(400)
    accepted: list[FalcoEvent] = []
    async with running_gateway(js_server.url, **settings) as gw, gw.client() as http:
        # The stream exists before the trouble starts, as in production.
        assert (await http.post(to_falco_json(events[0]))).status == 200
        accepted.append(events[0])
        await stream_ids(js_server.url, "FALCO", 1)
        js_server.stop()
        # A backlog, then the disk fills up: deleting the backlog later takes room too.
        for event in events[1:200]:
            assert (await http.post(to_falco_json(event))).status == 200
            accepted.append(event)
        filler = fill(small_disk)

        refused = None
        for event in events[200:]:
            response = await http.post(to_falco_json(event))
            if response.status != 200:
                refused = (event, response)
                break
            accepted.append(event)
        assert refused is not None, "the full disk should have refused an alert"
        event, response = refused
        assert response.status == 503
        reason = orjson.loads(response.body)["error"]
        assert "disk" in reason
        assert str(spool_dir) in reason
        assert gw.gateway.telemetry.get("refused", "http") == 1
        assert (await http.get("/readyz")).status == 503
        metrics = (await http.get("/metrics")).body.decode()
        assert "falco_nats_gateway_spool_writable 0.0" in metrics
        assert 'falco_nats_gateway_spool_disk_errors_total{operation="append"} 1.0' in metrics
        # Falco's (or anyone's) retry is refused again, not taken for a duplicate.
        response = await http.post(to_falco_json(event))
        assert response.status == 503

        # NATS back while the disk is still full: the accepted alerts go out, and
        # the spool cannot delete them; the gateway goes on.
        js_server.start()
        await stream_ids(js_server.url, "FALCO", len(accepted))
        await until(lambda: gw.gateway.spool.errors["delete"] > 0, "a refused delete", 30)
        assert not gw.task.done()
    # Stopped (deletes may still be refused): a restart on the same full disk, now
    # with Falco's gRPC stream too.
    falco = await start_falco(socket_path)
    grpc_settings: dict[str, Any] = {"falco_grpc": socket_path, "grpc_poll_interval": 0.02}
    async with (
        running_gateway(js_server.url, **settings, **grpc_settings) as gw,
        gw.client() as http,
    ):
        # Whatever is still on disk is read and sent again (JetStream drops the copies
        # by Nats-Msg-Id) and the gateway keeps running: no crash on the full disk.
        await until(lambda: gw.gateway.spool.count == 0, "the spool to be sent", 30)
        assert not gw.task.done()
        # The disk refuses the alert Falco hands over: the gateway keeps it and
        # stops asking for more; the rest waits in Falco's queue.
        streamed = events[300:320]
        for grpc_event in streamed:
            falco.emit(to_grpc_response(grpc_event))
        telemetry = gw.gateway.telemetry
        await until(lambda: telemetry.get("refused", "grpc") > 0, "a refused gRPC alert", 30)
        assert telemetry.get("accepted", "grpc") == 0
        accepted += streamed
        filler.unlink()
        await until(gw.gateway.spool.has_room, "the disk to take writes", 30)
        assert (await http.get("/readyz")).status == 200
        response = await http.post(to_falco_json(event))
        assert response.status == 200
        assert orjson.loads(response.body)["status"] == "accepted"
        accepted.append(event)
        await until(lambda: telemetry.get("accepted", "grpc") == len(streamed), "gRPC", 30)
        await until(lambda: rows(spool_dir) == 0, "the spool to empty on disk", 30)
        assert not gw.task.done()
    await falco.stop()
    ids = await stream_ids(js_server.url, "FALCO", len(accepted))
    assert sorted(ids) == sorted(e.alert_id for e in accepted)


def test_check_reports_a_spool_disk_that_refuses_writes(small_disk: Path) -> None:
    spool_dir = small_disk / "spool"
    Spool(str(spool_dir)).close()
    settings = replace(Settings(), spool_dir=str(spool_dir))
    assert check_spool(settings).ok
    filler = fill(small_disk)
    result = check_spool(settings)
    assert not result.ok
    assert "the disk refuses writes (database or disk is full)" in result.detail
    # The gateway starts on it (no restart loop), refusing writes until there is room.
    spool = Spool(str(spool_dir))
    assert spool.errors["open"] == 1
    assert spool.disk_error
    with pytest.raises(SpoolFull, match="disk"):
        spool.append("http", "falco.notice.r", {"Nats-Msg-Id": "x"}, b"{}")
    filler.unlink()
    assert not spool.try_write()
    spool.append("http", "falco.notice.r", {"Nats-Msg-Id": "x"}, b"{}")
    spool.close()
    assert check_spool(settings).ok


WRITER = """
import os, sys
from gateway.spool import Spool
spool = Spool(sys.argv[1])
for i in range(int(sys.argv[2])):
    spool.append("http", "falco.notice.r", {"Nats-Msg-Id": f"id-{i}"}, b'{"rule":"r"}' * 100)
os.kill(os.getpid(), 9)
"""


def crash_after_spooling(spool_dir: Path, count: int) -> None:
    done = subprocess.run([sys.executable, "-c", WRITER, str(spool_dir), str(count)], check=False)
    assert done.returncode == -9


def damaged_spool(spool_dir: Path, damage: str) -> Path:
    """A spool left by a SIGKILLed writer, then damaged as `damage` says."""
    # 300 alerts stay in the WAL (SQLite checkpoints at 1,000 pages); 5,000 do not.
    crash_after_spooling(spool_dir, 300 if damage == "wal garbage" else 5000)
    db_file, wal = spool_dir / "spool.db", spool_dir / "spool.db-wal"
    if damage == "cut short":
        os.truncate(db_file, db_file.stat().st_size // 2)
    elif damage == "wal garbage":
        with wal.open("r+b") as f:
            f.seek(wal.stat().st_size // 2)
            f.write(os.urandom(8192))
    else:
        db = sqlite3.connect(db_file)
        db.execute("UPDATE spool SET headers = x'00ff' WHERE seq = 7")
        db.commit()
        db.close()
    return spool_dir


@pytest.mark.parametrize("damage", ["cut short", "wal garbage", "bad row"])
async def test_a_damaged_spool_is_reported_kept_and_the_gateway_starts(
    js_server: NatsServer, tmp_path: Path, damage: str
) -> None:
    checked = damaged_spool(tmp_path / "checked", damage)
    settings = replace(
        Settings(),
        nats_url=js_server.url,
        spool_dir=str(checked),
        listen=f"127.0.0.1:{free_port()}",
        **JETSTREAM,
    )
    out = io.StringIO()
    assert await run_checks(settings, out) == 1
    assert "FAIL  spool" in out.getvalue(), out.getvalue()
    assert "damaged" in out.getvalue()

    spool_dir = damaged_spool(tmp_path / "spool", damage)
    async with running_gateway(js_server.url, spool_dir=str(spool_dir), **JETSTREAM) as gw:
        spool = gw.gateway.spool
        assert spool.damage
        readable = spool.recovered
        assert 0 < readable < 5000
        assert damage != "wal garbage" or readable < 300
        async with gw.client() as http:
            metrics = (await http.get("/metrics")).body.decode()
        assert "falco_nats_gateway_spool_damaged_total 0.0" not in metrics
        assert "falco_nats_gateway_spool_damaged_total" in metrics
        await until(lambda: rows(spool_dir) == 0, "what could be read to be delivered", 60)
    # Kept, not deleted: the damaged files, or the unreadable row.
    if damage == "bad row":
        db = sqlite3.connect(spool_dir / "spool.db")
        assert db.execute("SELECT seq FROM damaged").fetchall() == [(7,)]
        db.close()
    else:
        assert list((spool_dir / "damaged").glob("*/spool.db"))
    ids = await stream_ids(js_server.url, "FALCO", readable)
    assert len(ids) == len(set(ids)) == readable
