"""A damaged spool database: found at start-up, kept aside, and what can be read saved.

SQLite fails quietly on some damage: a WAL frame that does not check out ends
the WAL there (every alert committed after it is gone, without a word), and a
database file cut short makes it drop the WAL or read "malformed" pages. So
before SQLite opens `spool.db`, the files are looked at here; afterwards a
`quick_check` covers the rest. Whatever is damaged is copied into
`spool_dir/damaged/<time>/` (kept for inspection, never deleted by the gateway)
and reported; the rows that can still be read go into a fresh database.
"""

from __future__ import annotations

import shutil
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3

WAL_MAGIC = (0x377F0682, 0x377F0683)  # little- / big-endian checksums
WAL_HEADER = 32
FRAME_HEADER = 24

ROW_COLUMNS = "seq, accepted_ns, path, subject, headers, payload, size"
Row = tuple[int, int, str, str, bytes, bytes, int]

# Seeks past a damaged part of the table when salvaging: rows are looked for
# this far apart at most, doubling, before the salvage gives up.
SALVAGE_SEEKS = 64


@dataclass
class Damage:
    """What is wrong with a spool database before SQLite opens it."""

    problems: list[str] = field(default_factory=list)


def damage_before_open(db: Path) -> Damage:
    """What is wrong with `db` and its WAL that SQLite would not say."""
    damage = Damage()
    wal = _sibling(db, "-wal")
    wal_size = wal.stat().st_size if wal.exists() else 0
    if db.exists():
        size = db.stat().st_size
        if size == 0 and wal_size > WAL_HEADER:
            damage.problems.append(
                f"{db.name} is empty next to a {wal_size}-byte WAL (cut short after a crash?): "
                "SQLite drops the WAL and the alerts in it"
            )
    # A database file shorter than its header says is not damage by itself: a
    # checkpoint the disk cut short leaves one, with the pages still in the WAL.
    # SQLite's quick_check at open tells (spool.py).
    if wal_size > WAL_HEADER:
        problem = _wal_problem(wal)
        if problem:
            damage.problems.append(problem)
    return damage


def _wal_problem(wal: Path) -> str | None:
    """A WAL is read up to its first frame that does not check out; the frames
    after it that belong to the same WAL generation (its salts) are lost. Frames
    of an older generation (left over after a checkpoint) are not damage."""
    data = wal.read_bytes()
    magic, _version, page_size, _seq, salt1, salt2, c1, c2 = struct.unpack(">8I", data[:WAL_HEADER])
    if magic not in WAL_MAGIC:
        return f"{wal.name} has no WAL header ({len(data)} bytes)"
    big = magic & 1
    if _checksum(data[:24], 0, 0, big) != (c1, c2):
        return f"{wal.name}: its header does not check out ({len(data)} bytes)"
    frame = FRAME_HEADER + page_size
    s1, s2 = c1, c2
    broken_at: int | None = None
    lost = 0
    for offset in range(WAL_HEADER, len(data) - frame + 1, frame):
        head = data[offset : offset + FRAME_HEADER]
        _page, commit, f_salt1, f_salt2, f_c1, f_c2 = struct.unpack(">6I", head)
        current = (f_salt1, f_salt2) == (salt1, salt2)
        if broken_at is None:
            if current:
                s1, s2 = _checksum(head[:8], s1, s2, big)
                s1, s2 = _checksum(data[offset + FRAME_HEADER : offset + frame], s1, s2, big)
                if (s1, s2) == (f_c1, f_c2):
                    continue
            broken_at = offset
        elif current and commit:
            # A commit of this WAL generation past the break: a transaction SQLite
            # had written whole and will now ignore. (Frames of a write that failed
            # part-way, a full disk, carry no commit after the break: not damage.)
            lost += 1
    if lost:
        return (
            f"{wal.name} is damaged at byte {broken_at}: {lost} committed writes after it "
            "cannot be read (the alerts in them are lost)"
        )
    return None


def _checksum(data: bytes, s1: int, s2: int, big: int) -> tuple[int, int]:
    """SQLite's WAL checksum over `data` (a multiple of 8 bytes), from (s1, s2)."""
    words = struct.unpack(f"{'>' if big else '<'}{len(data) // 4}I", data)
    mask = 0xFFFFFFFF
    for i in range(0, len(words), 2):
        s1 = (s1 + words[i] + s2) & mask
        s2 = (s2 + words[i + 1] + s1) & mask
    return s1, s2


def keep_aside(db: Path, *, move: bool) -> Path:
    """Put `db`'s files (the database, its WAL and shared memory) into
    `damaged/<time>/`: moved (renamed, which needs no room on a full disk) when
    the database is to be rebuilt, else copied. The folder."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = db.parent / "damaged" / stamp
    n = 1
    while folder.exists():
        n += 1
        folder = db.parent / "damaged" / f"{stamp}-{n}"
    folder.mkdir(parents=True)
    for path in (db, _sibling(db, "-wal"), _sibling(db, "-shm")):
        if not path.exists():
            continue
        if move:
            path.rename(folder / path.name)
        else:
            shutil.copy2(path, folder / path.name)
    return folder


def salvage(db: Path) -> tuple[list[Row], bool]:
    """The rows of the damaged `db` (with its WAL) that can still be read, and
    whether that was all of them. Read from a scratch copy: the copy kept aside
    stays as it was found."""
    import sqlite3
    import tempfile

    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory(prefix="salvage-", dir=db.parent) as scratch:
            copy = Path(scratch) / db.name
            for path in (db, _sibling(db, "-wal")):
                if path.exists():
                    shutil.copy2(path, Path(scratch) / path.name)
            source = sqlite3.connect(copy)
            try:
                return _salvage_rows(source, rows)
            finally:
                source.close()
    except (OSError, sqlite3.Error):
        # No room for the scratch copy (a full disk) or nothing SQLite can open:
        # what was read so far, the files themselves kept aside as they were.
        return rows, False


def _salvage_rows(source: sqlite3.Connection, rows: list[Row]) -> tuple[list[Row], bool]:
    import sqlite3

    complete = True
    after = -1
    step = 1
    for _ in range(SALVAGE_SEEKS):
        try:
            for row in _rows_after(source, after):
                rows.append(row)
                after = row[0]
                step = 1
            return rows, complete
        except sqlite3.Error:
            # Jump past the damaged part of the table and read on from there.
            complete = False
            after += step
            step *= 2
    return rows, False


def _rows_after(source: sqlite3.Connection, after: int) -> Iterator[Row]:
    cursor = source.execute(
        f"SELECT {ROW_COLUMNS} FROM spool WHERE seq > ? ORDER BY seq",  # noqa: S608 - constant
        (after,),
    )
    yield from cursor


def _sibling(db: Path, suffix: str) -> Path:
    return db.with_name(db.name + suffix)
