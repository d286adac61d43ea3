"""The spool on a bad day: a disk that refuses writes, and a database damaged by a crash.

Disk errors are injected at the spool's boundary with the database (a wrapper
around its SQLite connection that fails the statements it is told to); the
full-disk case on a real (tmpfs) disk is in tests/integration/test_spool_faults.py. Damage
is made the way a crash makes it: a process that writes and is SIGKILLed, then
its files cut short or overwritten.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway import spool as spool_module
from gateway.dedup import DedupWindow
from gateway.errors import SpoolDiskError, SpoolFull
from gateway.event import FalcoEvent, Priority
from gateway.pipeline import Accepted, Pipeline
from gateway.spool import Spool
from gateway.spool_repair import damage_before_open
from gateway.subject import SubjectTemplate


class FailingDisk:
    """The spool's SQLite connection, failing every write while `failing`."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.failing = False

    def _check(self, sql: str) -> None:
        if self.failing and sql.lstrip().split()[0].upper() in {"INSERT", "DELETE"}:
            raise sqlite3.OperationalError("database or disk is full")

    def execute(self, sql: str, *args: Any) -> Any:
        self._check(sql)
        return self.db.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        self._check(sql)
        return self.db.executemany(sql, *args)

    def __enter__(self) -> Any:
        return self.db.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self.db.__exit__(*exc)

    def close(self) -> None:
        self.db.close()


def failing_spool(folder: Path) -> tuple[Spool, FailingDisk]:
    spool = Spool(str(folder))
    assert spool._db is not None
    disk = FailingDisk(spool._db)
    spool._db = disk  # type: ignore[assignment]
    return spool, disk


def add(spool: Spool, n: int, start: int = 0) -> list[int]:
    return [
        spool.append("http", "falco.notice.r", {"Nats-Msg-Id": f"id-{i}"}, b"x" * 100)
        for i in range(start, start + n)
    ]


def test_a_refused_append_is_a_spool_full_naming_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "PROBE_INTERVAL", 0.0)
    spool, disk = failing_spool(tmp_path / "spool")
    add(spool, 2)
    disk.failing = True
    with pytest.raises(SpoolFull) as caught:
        add(spool, 1, start=2)
    assert isinstance(caught.value, SpoolDiskError)
    assert "disk" in str(caught.value)
    assert str(tmp_path / "spool" / "spool.db") in str(caught.value)
    assert (spool.count, spool.last_seq) == (2, 2)
    assert spool.errors["append"] == 1
    assert not spool.has_room()  # the probe write fails too
    disk.failing = False
    assert spool.has_room()  # a probe write went through
    assert not spool.disk_error
    assert add(spool, 1, start=2) == [3]


def test_a_refused_delete_never_raises_and_is_retried(tmp_path: Path) -> None:
    spool, disk = failing_spool(tmp_path / "spool")
    add(spool, 5)
    delivered = spool.read(0, 2)
    disk.failing = True
    spool.delete(delivered)  # NATS has them; the disk says no
    assert spool.errors["delete"] == 1
    assert spool.disk_error
    assert spool.count == 3
    # Never handed out again, from memory or from the database.
    assert [a.seq for a in spool.read(0, 10)] == [3, 4, 5]
    spool._cache.invalidate()
    assert [a.seq for a in spool.read(0, 10)] == [3, 4, 5]
    disk.failing = False
    spool.delete(spool.read(0, 1))  # takes the refused ones with it
    rows = disk.db.execute("SELECT seq FROM spool ORDER BY seq").fetchall()
    assert rows == [(4,), (5,)]


def test_refused_deletes_left_at_a_restart_are_read_once_more(tmp_path: Path) -> None:
    spool, disk = failing_spool(tmp_path / "spool")
    add(spool, 3)
    disk.failing = True
    spool.delete(spool.read(0, 3))
    spool.close()  # the retry at close fails too
    reopened = Spool(str(tmp_path / "spool"))
    # At least once: published again (JetStream drops them by Nats-Msg-Id), then gone.
    again = reopened.read(0, 10)
    assert [a.alert_id for a in again] == ["id-0", "id-1", "id-2"]
    reopened.delete(again)
    assert reopened.count == 0
    reopened.close()
    assert Spool(str(tmp_path / "spool")).count == 0


def event(rule: str) -> FalcoEvent:
    return FalcoEvent(
        time_ns=1_700_000_000_000_000_000,
        priority=Priority.parse("warning"),
        rule=rule,
        output=f"{rule} happened",
        source="syscall",
        hostname="node-1",
        tags=(),
        output_fields={},
    )


def test_pipeline_forgets_an_alert_the_disk_refused(tmp_path: Path) -> None:
    spool, disk = failing_spool(tmp_path / "spool")
    pipeline = Pipeline(
        SubjectTemplate("falco.<priority>.<rule>"),
        Priority.parse("debug"),
        spool,
        dedup=DedupWindow(60),
    )
    disk.failing = True
    with pytest.raises(SpoolDiskError):
        pipeline.accept(event("Disk full"), "http")
    assert pipeline.telemetry.get("refused", "http") == 1
    disk.failing = False
    assert isinstance(pipeline.accept(event("Disk full"), "http"), Accepted)


# -- a damaged spool ---------------------------------------------------------------------

WRITER = """
import os, sys
from gateway.spool import Spool
spool = Spool(sys.argv[1])
for i in range(int(sys.argv[2])):
    spool.append("http", "falco.notice.r", {"Nats-Msg-Id": f"id-{i}"}, os.urandom(1500))
os.kill(os.getpid(), 9)
"""


def crash_after_writing(folder: Path, count: int) -> None:
    """A process that spools `count` alerts and is SIGKILLed: its WAL stays."""
    done = subprocess.run([sys.executable, "-c", WRITER, str(folder), str(count)], check=False)
    assert done.returncode == -9
    assert (folder / "spool.db-wal").stat().st_size > 0


def kept_copies(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "damaged").glob("*/*"))


def test_a_row_that_cannot_be_decoded_is_moved_aside(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    spool = Spool(str(folder))
    add(spool, 3)
    spool.close()
    db = sqlite3.connect(folder / "spool.db")
    db.execute("UPDATE spool SET headers = ? WHERE seq = 2", (b"\xff{not json",))
    db.execute("UPDATE spool SET payload = 'text, not a blob', size = 'x' WHERE seq = 3")
    db.commit()
    db.close()
    reopened = Spool(str(folder))
    assert reopened.count == 1
    assert [a.alert_id for a in reopened.read(0, 10)] == ["id-0"]
    assert reopened.alert_ids() == ["id-0"]
    assert reopened.damaged_items == 2
    assert any("2 spooled alerts cannot be read" in d for d in reopened.damage)
    assert reopened._db is not None
    kept = reopened._db.execute("SELECT seq, headers FROM damaged ORDER BY seq").fetchall()
    assert kept == [(2, b"\xff{not json"), (3, orjson_headers("id-2"))]


def orjson_headers(alert_id: str) -> bytes:
    return b'{"Nats-Msg-Id":"' + alert_id.encode() + b'"}'


def test_a_database_cut_short_after_a_crash_is_kept_and_what_can_be_read_is_saved(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "spool"
    crash_after_writing(folder, 6000)  # past SQLite's checkpoint: the file has pages
    db_file = folder / "spool.db"
    size = db_file.stat().st_size
    os.truncate(db_file, size // 2)
    assert damage_before_open(db_file)
    spool = Spool(str(folder))  # starts
    assert spool.damage
    assert "cannot be read" in spool.damage[0]
    assert kept_copies(folder) == ["spool.db", "spool.db-shm", "spool.db-wal"]
    kept = next((folder / "damaged").glob("*/spool.db"))
    assert kept.stat().st_size == size // 2  # as found
    assert 0 < spool.count < 6000
    alerts = spool.read(0, 10_000)
    assert len(alerts) == spool.count
    assert [a.seq for a in alerts] == sorted(a.seq for a in alerts)
    spool.close()
    again = Spool(str(folder))  # repaired: no damage the second time
    assert not again.damage
    assert again.count == len(alerts)


def test_an_empty_database_next_to_its_wal_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    crash_after_writing(folder, 50)
    os.truncate(folder / "spool.db", 0)
    spool = Spool(str(folder))
    assert spool.damage
    assert "empty" in spool.damage[0]
    assert "spool.db-wal" in kept_copies(folder)


def test_garbage_in_the_wal_is_reported_and_the_wal_kept(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    crash_after_writing(folder, 200)
    wal = folder / "spool.db-wal"
    size = wal.stat().st_size
    with wal.open("r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(5000))
    spool = Spool(str(folder))
    assert spool.damage
    assert "spool.db-wal is damaged" in spool.damage[0]
    assert "committed writes after it cannot be read" in spool.damage[0]
    kept = next((folder / "damaged").glob("*/spool.db-wal"))
    assert kept.stat().st_size == size
    assert 0 < spool.count < 200  # the alerts before the damage


def test_a_file_that_is_no_database_is_kept_and_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    (folder / "spool.db").write_bytes(b"this is not SQLite" * 100)
    spool = Spool(str(folder))
    assert spool.damage
    assert spool.count == 0
    assert kept_copies(folder) == ["spool.db"]
    add(spool, 1)
    assert spool.count == 1


def test_a_clean_crash_is_no_damage(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    crash_after_writing(folder, 3000)
    spool = Spool(str(folder))
    assert not spool.damage
    assert spool.count == 3000
    assert not (folder / "damaged").exists()


def test_a_row_damaged_while_running_is_moved_aside_not_a_stuck_reader(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    spool = Spool(str(folder), cache_bytes=0)  # every read from the database
    add(spool, 4)
    other = sqlite3.connect(folder / "spool.db")
    other.execute("UPDATE spool SET headers = x'ff00' WHERE seq = 2")
    other.commit()
    other.close()
    assert [a.seq for a in spool.read(0, 10)] == [1, 3, 4]
    assert (spool.count, spool.damaged_items) == (3, 1)
    assert [a.seq for a in spool.read(0, 10)] == [1, 3, 4]
    assert spool._db is not None
    assert spool._db.execute("SELECT seq FROM damaged").fetchall() == [(2,)]


def test_an_unreadable_row_the_disk_will_not_let_move_is_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    spool, disk = failing_spool(folder)
    spool._cache.invalidate()
    add(spool, 3)
    disk.db.execute("UPDATE spool SET headers = x'ff00' WHERE seq = 2")
    disk.failing = True
    assert [a.seq for a in spool.read(0, 10)] == [1, 3]
    assert "moving them failed" in spool.damage[-1]
    assert [a.seq for a in spool.read(0, 10)] == [1, 3]
    assert sorted(spool.alert_ids()) == ["id-0", "id-2"]
