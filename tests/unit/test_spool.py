"""The spool on its own: order, limits, deletes in any order, the memory cache and
the database behind it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config import naming
from gateway.errors import ConfigError, SpoolFull, SpoolUnusable
from gateway.spool import MEMORY_OVERHEAD, Spool


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
    assert spool._db is not None
    spool._db.close()
    assert spool._lock is not None
    os.close(spool._lock)  # the kernel does this when a process dies
    reopened = Spool(str(tmp_path / "spool"))
    assert reopened.durable
    assert reopened.count == 3
    assert reopened.bytes == spool.bytes
    assert [a.alert_id for a in reopened.read(0, 10)] == ["id-2", "id-3", "id-4"]
    assert sorted(reopened.alert_ids()) == ["id-2", "id-3", "id-4"]


def test_unusable_spool_dir_is_a_config_error_naming_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SpoolUnusable, match="cannot create"):
        Spool(str(blocker / "spool"))  # the spool knows no settings...
    with pytest.raises(ConfigError) as caught, naming("spool_dir"):
        Spool(str(blocker / "spool"))  # ...where it is opened, the setting is named
    assert caught.value.key == "spool_dir"


def test_one_spool_folder_serves_one_gateway(tmp_path: Path) -> None:
    first = Spool(str(tmp_path / "spool"))
    with pytest.raises(SpoolUnusable, match="in use by another gateway"):
        Spool(str(tmp_path / "spool"))
    first.close()
    Spool(str(tmp_path / "spool")).close()


def test_file_spool_reads_from_memory_then_from_disk_past_the_cache(tmp_path: Path) -> None:
    # A cache of ~5 alerts: the sixth lets go of it, and reads come from the database
    # until the reader has caught up; then fresh alerts are served from memory again.
    spool = Spool(str(tmp_path / "spool"), cache_bytes=5 * 160)
    seqs = fill(spool, 3)
    assert spool._cache.covers(0)
    assert [a.seq for a in spool.read(0, 10)] == seqs
    seqs += fill(spool, 5)
    assert not spool._cache.covers(seqs[2])
    first = spool.read(seqs[2], 2)
    assert [a.seq for a in first] == seqs[3:5]
    assert first[0].headers == {"Nats-Msg-Id": "id-0"}  # read back from disk (second fill)
    assert not spool._cache.covers(seqs[4])
    rest = spool.read(seqs[4], 10)  # fewer than asked: caught up
    assert [a.seq for a in rest] == seqs[5:]
    assert spool._cache.covers(seqs[4])
    later = fill(spool, 2)
    assert [a.seq for a in spool.read(seqs[-1], 10)] == later


def test_read_before_the_cache_goes_to_disk(tmp_path: Path) -> None:
    # A reader that rewinds to alerts older than the cache (sent, then not
    # confirmed) still gets every one of them, in order.
    spool = Spool(str(tmp_path / "spool"), cache_bytes=3 * 160)
    seqs = fill(spool, 6)
    assert [a.seq for a in spool.read(seqs[0] - 1, 100)] == seqs  # caught up: cache restarts
    seqs += fill(spool, 2)
    assert [a.seq for a in spool.read(0, 100)] == seqs
    assert [a.seq for a in spool.read(seqs[1], 3)] == seqs[2:5]


def test_memory_spool_never_lets_go_of_alerts() -> None:
    spool = Spool(max_bytes=10_000_000, cache_bytes=100)  # cache_bytes is for spool_dir only
    seqs = fill(spool, 500)
    assert [a.seq for a in spool.read(0, 1000)] == seqs


def test_deletes_in_and_out_of_order_in_memory() -> None:
    spool = Spool()
    seqs = fill(spool, 3000)
    alerts = spool.read(0, 3000)
    spool.delete(alerts[1:3])  # out of order: the head stays
    assert [a.seq for a in spool.read(0, 3)] == [seqs[0], seqs[3], seqs[4]]
    spool.delete(alerts[:1])
    spool.delete(alerts[3:2500])  # past the compaction point
    assert [a.seq for a in spool.read(0, 2)] == seqs[2500:2502]
    assert [a.seq for a in spool.read(seqs[2600], 2)] == seqs[2601:2603]
    assert spool.count == 500
    assert spool.bytes == sum(a.size for a in alerts[2500:])


def test_memory_spool_counts_what_its_objects_take(tmp_path: Path) -> None:
    # In memory, spool_max_bytes bounds memory: each alert also counts its Python objects.
    memory, disk = Spool(), Spool(str(tmp_path / "spool"))
    fill(memory, 3)
    fill(disk, 3)
    assert memory.bytes == disk.bytes + 3 * MEMORY_OVERHEAD
