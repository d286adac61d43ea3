from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.errors import ConfigError, SpoolFull
from gateway.spool import Spool


def fill(spool: Spool, count: int, size: int = 100) -> list[int]:
    return [
        spool.append("http", f"falco.notice.r{i}", {"Nats-Msg-Id": f"id-{i}"}, b"x" * size)
        for i in range(count)
    ]


def test_read_in_arrival_order_after_a_cursor() -> None:
    spool = Spool()
    seqs = fill(spool, 10)
    assert [a.seq for a in spool.read(0, 4)] == seqs[:4]
    assert [a.seq for a in spool.read(seqs[3], 100)] == seqs[4:]
    alert = spool.read(0, 1)[0]
    assert (alert.path, alert.subject, alert.alert_id, alert.payload) == (
        "http",
        "falco.notice.r0",
        "id-0",
        b"x" * 100,
    )


def test_delete_in_any_order_keeps_the_count_and_size_right() -> None:
    spool = Spool()
    fill(spool, 10)
    alerts = spool.read(0, 10)
    size_before = spool.bytes
    spool.delete([alerts[7], alerts[2]])
    assert spool.count == 8
    assert spool.bytes == size_before - alerts[7].size - alerts[2].size
    assert [a.seq for a in spool.read(0, 10)] == [
        a.seq for a in alerts if a not in (alerts[2], alerts[7])
    ]


def test_full_spool_refuses_and_names_the_limit() -> None:
    spool = Spool(max_bytes=64 * 1024)
    with pytest.raises(SpoolFull, match="spool_max_bytes"):
        fill(spool, 1000, size=1000)
    count = spool.count
    assert 0 < count < 1000
    spool.delete(spool.read(0, 1))
    spool.append("grpc", "falco.notice.more", {"Nats-Msg-Id": "more"}, b"y" * 1000)
    assert spool.count == count


def test_file_spool_survives_reopening(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool"))
    fill(spool, 5)
    spool.delete(spool.read(0, 2))
    # As if the process were killed: no checkpoint, no clean close of the database.
    spool._db.close()
    assert spool._lock is not None
    os.close(spool._lock)  # the kernel does this when a process dies
    reopened = Spool(str(tmp_path / "spool"))
    assert reopened.durable
    assert reopened.count == 3
    assert reopened.bytes == spool.bytes
    assert [a.alert_id for a in reopened.read(0, 10)] == ["id-2", "id-3", "id-4"]
    assert sorted(reopened.alert_ids()) == ["id-2", "id-3", "id-4"]


def test_unusable_spool_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError) as caught:
        Spool(str(blocker / "spool"))
    assert caught.value.key == "spool_dir"


def test_one_spool_folder_serves_one_gateway(tmp_path: Path) -> None:
    first = Spool(str(tmp_path / "spool"))
    with pytest.raises(ConfigError, match="in use by another gateway"):
        Spool(str(tmp_path / "spool"))
    first.close()
    Spool(str(tmp_path / "spool")).close()
