"""The spool: every accepted alert, in arrival order, until NATS has it.

An alert is put here before the source answers Falco, and forgotten only
after NATS has it (a JetStream ack, or a core flush). So an alert the gateway
accepted survives NATS outages and, with a `spool_dir`, the gateway being
killed.

Without `spool_dir` the spool is a list in memory (bounded by
`spool_max_bytes`, lost with the process). With one, every alert is also
written to an SQLite database in WAL mode (`spool_dir/spool.db`) before the
source answers; the latest alerts stay in memory as well, so the publisher
does not read back what was just written, and reads the database only after
a restart or an outage longer than the memory cache holds.

Durability (`spool_sync`): `normal` (default) commits each alert to the WAL
without fsync: it survives the process being killed (SIGKILL, OOM kill), not
a power cut or kernel crash, which can lose what was committed since the last
checkpoint. `full` fsyncs every commit: survives those too, at the disk's
fsync latency per alert.

Why SQLite rather than an own segment log: it gives crash-safe appends,
ordered reads by key, deletes in any order and a size query, from the
standard library, and its WAL commit without fsync costs about as much as a
write() to a log file.
"""

from __future__ import annotations

import bisect
import fcntl
import itertools
import logging
import os
import time
from collections.abc import Container, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import orjson

from gateway import spool_repair
from gateway.errors import SpoolDiskError, SpoolFull, SpoolUnusable
from gateway.logs import log

if TYPE_CHECKING:
    import sqlite3

    from gateway.config import SpoolSync

LOG = logging.getLogger("gateway.spool")

# Fresh alerts kept in memory next to the database, so the publisher does not read
# them back; past this (a long outage) it reads from the database instead.
CACHE_BYTES = 16 * 1024 * 1024
# What an alert held in memory costs beyond its payload, subject and headers: its
# SpooledAlert, headers dict and strings (~465 bytes measured on CPython 3.11). Counted
# when the spool is in memory, so that spool_max_bytes bounds the memory it takes.
MEMORY_OVERHEAD = 500

# While the disk refuses writes, how often `has_room` tries one (readiness).
PROBE_INTERVAL = 1.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    accepted_ns INTEGER NOT NULL,
    path TEXT NOT NULL,
    subject TEXT NOT NULL,
    headers BLOB NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL
)
"""
# Rows that could not be read back, moved out of the spool: kept for inspection.
_DAMAGED_SCHEMA = """
CREATE TABLE IF NOT EXISTS damaged (
    seq INTEGER, accepted_ns, path, subject, headers, payload, size, moved_ns INTEGER
)
"""
_PROBE_SCHEMA = "CREATE TABLE IF NOT EXISTS probe (b BLOB)"
# SQLite's primary result codes for a damaged file.
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26


class _NeverRaised(Exception):
    """Stands for sqlite3.Error while there is no database (SQLite is imported lazily)."""


@dataclass(frozen=True, slots=True)
class SpooledAlert:
    seq: int
    accepted_ns: int
    path: str
    subject: str
    headers: dict[str, str]
    payload: bytes
    size: int

    @property
    def alert_id(self) -> str:
        return self.headers.get("Nats-Msg-Id", "")


class Spool:
    def __init__(
        self,
        directory: str = "",
        max_bytes: int = 128 * 1024 * 1024,
        sync: SpoolSync = "normal",
        *,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        self.max_bytes = max_bytes
        self.location = ":memory:"
        self.count = 0
        self.recovered = 0  # alerts found in the database at start-up
        self.bytes = 0
        self._lock: int | None = None
        self._db: sqlite3.Connection | None = None
        self._overhead = 0 if directory else MEMORY_OVERHEAD
        self._last_seq = 0
        self._db_error: type[Exception] = _NeverRaised
        # The disk refused a write: why (empty while it does not), and when to try again.
        self.disk_error = ""
        self._probe_at = 0.0
        # Delivered alerts whose delete the disk refused: deleted with the next one that
        # gets through, never read again meanwhile.
        self._undeleted: set[int] = set()
        # Unreadable rows the disk would not let be moved aside: never read.
        self._unreadable: set[int] = set()
        # Disk errors by operation (open, append, delete), for metrics.
        self.errors: dict[str, int] = {"open": 0, "append": 0, "delete": 0}
        # Damage found at start-up: what (messages) and how many items (files, rows)
        # were moved aside for it.
        self.damage: list[str] = []
        self.damaged_items = 0
        # Without a database the list is the spool itself (never let go of: the
        # max_bytes check bounds it); with one it is a read cache of what came lately.
        self._cache = _Recent(cache_bytes if directory else None)
        if directory:
            self._open(Path(directory), sync)

    @property
    def last_seq(self) -> int:
        """The sequence number of the latest alert appended (0 before the first)."""
        return self._last_seq

    def _open(self, folder: Path, sync: SpoolSync) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolUnusable(f"cannot create {folder}: {exc.strerror}") from None
        self._lock = _lock(folder)
        path = folder / "spool.db"
        self.location = str(path)
        # Imported here: without spool_dir there is no database, and SQLite is ~1 MB of
        # resident memory for the life of the process.
        import sqlite3

        self._db_error = sqlite3.Error
        try:
            damage = spool_repair.damage_before_open(path)
        except (OSError, ValueError) as exc:  # struct.error is a ValueError
            damage = spool_repair.Damage([f"cannot inspect {path.name}: {exc}"])
        problems = damage.problems
        # Damage SQLite would pass over (the WAL): a copy kept, the database used.
        kept = _keep_aside(path, move=False) if problems else None
        db = None
        try:
            db = self._connect(sync)
        except sqlite3.DatabaseError as exc:
            code = exc.sqlite_errorcode & 0xFF
            if code in (_SQLITE_IOERR, _SQLITE_FULL):
                db = self._connect_on_refusing_disk(sync, exc)
            elif code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
                problems.append(f"{path.name} cannot be read: {exc}")
            else:
                raise SpoolUnusable(f"cannot use {self.location}: {exc}") from None
        if db is None:
            # Moved, not copied: the damaged files stay as they were found, and a
            # rename needs no room on a full disk.
            kept = _keep_aside(path, move=True)
            if not isinstance(kept, Path):
                raise SpoolUnusable(f"{self.location} is damaged and {kept}")
            db = self._rebuild(kept / path.name, sync, problems)
        self._db = db
        self.damage = list(problems)
        self.damaged_items = 1 if problems else 0
        for problem in problems:
            log(logging.ERROR, "spool damaged", LOG, problem=problem, kept=str(kept))
        self._move_aside_unreadable_rows()
        count, size, last = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(seq), 0) FROM spool"
        ).fetchone()
        self.count = self.recovered = int(count)
        self.bytes = int(size)
        self._last_seq = int(last)
        if self.count:
            # What was spooled before the restart is read from the database until
            # the publisher has caught up with it.
            self._cache.invalidate()
            log(
                logging.INFO,
                "spool recovered",
                LOG,
                alerts=self.count,
                bytes=self.bytes,
                location=self.location,
            )

    def _connect_on_refusing_disk(self, sync: SpoolSync, error: Exception) -> sqlite3.Connection:
        """The disk refused what opening takes (SQLite's 32 KiB shared-memory file, on
        a full disk): open in exclusive locking mode, which keeps that index in the
        process's memory, so that what is spooled still goes to NATS. Writes are
        refused until the disk takes them again. (Other processes cannot read the
        database meanwhile; the gateway locks the folder for itself anyway.)"""
        self._disk_failed("open", error)
        try:
            return self._connect(sync, exclusive=True)
        except self._db_error as exc:
            raise SpoolUnusable(f"cannot use {self.location}: {exc}") from None

    def _connect(self, sync: SpoolSync, *, exclusive: bool = False) -> sqlite3.Connection:
        """Open and check the database; sqlite3.DatabaseError when it is damaged."""
        import sqlite3

        # isolation_level=None: autocommit; each statement is its own transaction.
        db = sqlite3.connect(self.location, isolation_level=None, check_same_thread=False)
        try:
            if exclusive:
                db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
            db.execute(_SCHEMA)
            # Pages cut off or overwritten show only when read: look at them all once.
            (verdict,) = db.execute("PRAGMA quick_check(1)").fetchone()
            if verdict != "ok":
                error = sqlite3.DatabaseError(f"database disk image is malformed: {verdict}")
                error.sqlite_errorcode = _SQLITE_CORRUPT
                raise error
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _rebuild(self, damaged: Path, sync: SpoolSync, problems: list[str]) -> sqlite3.Connection:
        """A fresh database holding what can be read of the `damaged` one."""
        salvaged, complete = spool_repair.salvage(damaged)
        # A damaged page can read back as NULLs or noise: only whole alerts go on.
        rows = [
            row
            for row in salvaged
            if isinstance(row[0], int)
            and _readable((*row[1:5], "blob" if isinstance(row[5], bytes) else "", row[6]))
        ]
        try:
            db = self._connect(sync)
            with db:
                db.execute("BEGIN")
                db.executemany(
                    "INSERT INTO spool (seq, accepted_ns, path, subject, headers, payload, size) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
        except self._db_error as exc:
            raise SpoolUnusable(f"cannot rebuild {self.location}: {exc}") from None
        problems.append(
            f"{len(rows)} alerts read back from it"
            + (
                f", {len(salvaged) - len(rows)} rows unreadable"
                if len(rows) < len(salvaged)
                else ""
            )
            + ("" if complete else "; parts of its table could not be read")
        )
        return db

    def _move_aside_unreadable_rows(self) -> None:
        """Rows that cannot become a SpooledAlert go to the `damaged` table (kept),
        so that reading the spool never fails on them, at start or later."""
        assert self._db is not None
        bad = [
            seq
            for seq, *row in self._db.execute(
                "SELECT seq, accepted_ns, path, subject, headers, typeof(payload), size FROM spool"
            )
            if not _readable(tuple(row))
        ]
        if bad:
            self._move_aside(bad)

    def _move_aside(self, seqs: list[int]) -> None:
        assert self._db is not None
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute(_DAMAGED_SCHEMA)
                for seq in seqs:
                    self._db.execute(
                        "INSERT INTO damaged SELECT *, ? FROM spool WHERE seq = ?",
                        (time.time_ns(), seq),
                    )
                    self._db.execute("DELETE FROM spool WHERE seq = ?", (seq,))
        except self._db_error as exc:
            # The disk refuses even that (full): the rows stay where they are, and
            # are never read again by this process.
            self._unreadable.update(seqs)
            where = f"left in place, moving them failed ({exc}); skipped"
        else:
            where = f"moved to the table 'damaged' of {self.location}"
        self.damaged_items += len(seqs)
        message = (
            f"{len(seqs)} spooled alerts cannot be read (seq {seqs[0]}"
            + (f" to {seqs[-1]}" if len(seqs) > 1 else "")
            + f"); {where}"
        )
        self.damage.append(message)
        log(logging.ERROR, "spool damaged", LOG, problem=message, location=self.location)

    @property
    def durable(self) -> bool:
        return self._db is not None

    def append(self, path: str, subject: str, headers: dict[str, str], payload: bytes) -> int:
        """Store one alert; SpoolFull if it would pass `max_bytes`. Returns its sequence number."""
        # What the alert takes in the spool and on the wire, give or take a few bytes
        # of framing: the headers are short ASCII names and ids.
        size = (
            len(payload)
            + len(subject.encode())
            + sum(len(k) + len(v) + 4 for k, v in headers.items())
            + self._overhead
        )
        if self.bytes + size > self.max_bytes:
            raise SpoolFull(
                f"spool full: {self.count} alerts, {self.bytes} of {self.max_bytes} bytes "
                "(spool_max_bytes); NATS is not taking alerts fast enough"
            )
        accepted_ns = time.time_ns()
        if self._db is None:
            seq = self._last_seq + 1
        else:
            try:
                cursor = self._db.execute(
                    "INSERT INTO spool (accepted_ns, path, subject, headers, payload, size) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (accepted_ns, path, subject, orjson.dumps(headers), payload, size),
                )
            except self._db_error as exc:
                # An autocommit INSERT that fails leaves nothing behind: refused whole.
                self._disk_failed("append", exc)
                raise SpoolDiskError(
                    f"spool disk error: cannot write to {self.location} ({exc}); "
                    "free space or fix the disk under spool_dir"
                ) from None
            seq = int(cursor.lastrowid or 0)
            if self.disk_error:
                self._disk_recovered()
        self._last_seq = seq
        self.count += 1
        self.bytes += size
        self._cache.add(SpooledAlert(seq, accepted_ns, path, subject, headers, payload, size))
        return seq

    def has_room(self, margin: int = 64 * 1024) -> bool:
        """Room for at least `margin` more bytes, and a disk that takes writes: for
        readiness, not for admission. While the disk refuses, a write of `margin`
        bytes is tried at most once per PROBE_INTERVAL."""
        if self.disk_error and not self._probe(margin):
            return False
        return self.bytes + margin <= self.max_bytes

    def _probe(self, margin: int) -> bool:
        if self._db is None or time.monotonic() < self._probe_at:
            return False
        self._probe_at = time.monotonic() + PROBE_INTERVAL
        if self.try_write(margin):
            return False
        self._disk_recovered()
        return True

    def try_write(self, size: int = 64 * 1024) -> str:
        """Write `size` bytes to the database and take them back: "" when the disk
        took them, else why not (for readiness and `check`)."""
        if self._db is None:
            return ""
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute(_PROBE_SCHEMA)
                self._db.execute("INSERT INTO probe VALUES (zeroblob(?))", (size,))
                self._db.execute("DELETE FROM probe")
        except self._db_error as exc:
            return str(exc)
        return ""

    def _disk_failed(self, operation: str, exc: Exception) -> None:
        self.errors[operation] += 1
        self._probe_at = time.monotonic() + PROBE_INTERVAL
        if not self.disk_error:
            log(
                logging.ERROR,
                "spool disk error",
                LOG,
                operation=operation,
                error=str(exc),
                location=self.location,
            )
        self.disk_error = f"{operation}: {exc}"

    def _disk_recovered(self) -> None:
        log(logging.INFO, "spool disk writable again", LOG, location=self.location)
        self.disk_error = ""
        if self._undeleted:
            self._delete_rows([])

    def read(self, after: int, limit: int) -> list[SpooledAlert]:
        """Up to `limit` alerts with a sequence number above `after`, oldest first."""
        if self._db is None or self._cache.covers(after):
            return self._cache.read(after, limit)
        rows = self._db.execute(
            "SELECT seq, accepted_ns, path, subject, headers, payload, size FROM spool "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        ).fetchall()
        skip = self._undeleted | self._unreadable if self._undeleted or self._unreadable else ()
        try:
            alerts = [
                SpooledAlert(
                    seq, accepted_ns, path, subject, orjson.loads(headers), bytes(payload), size
                )
                for seq, accepted_ns, path, subject, headers, payload, size in rows
                if seq not in skip
            ]
        except (ValueError, TypeError, AttributeError):  # orjson.JSONDecodeError: a ValueError
            alerts = self._read_carefully(rows, skip)
        if len(rows) < limit:
            # The publisher has caught up with the database: from here on the
            # cache holds everything after `after` again.
            self._cache.restart(alerts, after)
        return alerts

    def _read_carefully(
        self, rows: list[tuple[object, ...]], skip: Container[int]
    ) -> list[SpooledAlert]:
        """`rows` as alerts, one by one: a row changed behind the gateway's back since
        start-up (checked then) is moved aside, not a publisher stuck on it."""
        alerts: list[SpooledAlert] = []
        bad: list[int] = []
        for seq, accepted_ns, path, subject, headers, payload, size in rows:
            assert isinstance(seq, int)
            if seq in skip:
                continue
            kind = "blob" if isinstance(payload, bytes) else ""
            if not _readable((accepted_ns, path, subject, headers, kind, size)):
                bad.append(seq)
                self.count -= 1
                self.bytes -= size if isinstance(size, int) else 0
                continue
            alerts.append(
                SpooledAlert(
                    seq,
                    cast(int, accepted_ns),
                    cast(str, path),
                    cast(str, subject),
                    orjson.loads(cast(bytes, headers)),
                    cast(bytes, payload),
                    cast(int, size),
                )
            )
        if bad:
            self._move_aside(bad)
        return alerts

    def delete(self, alerts: Iterable[SpooledAlert]) -> None:
        """Forget alerts NATS has (or that expired)."""
        batch = list(alerts)
        if not batch:
            return
        self._cache.remove(batch)
        if self._db is not None:
            self._delete_rows(batch)
        self.count -= len(batch)
        self.bytes -= sum(a.size for a in batch)

    def _delete_rows(self, batch: list[SpooledAlert]) -> None:
        """Delete `batch` and any delete the disk refused before. Never raises: what
        the disk refuses now is remembered (never read again) and retried."""
        assert self._db is not None
        undeleted = self._undeleted
        try:
            with self._db:  # one transaction for the batch
                self._db.execute("BEGIN")
                if batch:
                    first, last = batch[0].seq, batch[-1].seq
                    if last - first + 1 == len(batch):
                        # The usual case, a run of consecutive alerts: one range delete.
                        self._db.execute(
                            "DELETE FROM spool WHERE seq BETWEEN ? AND ?", (first, last)
                        )
                    else:
                        self._db.executemany(
                            "DELETE FROM spool WHERE seq = ?", [(a.seq,) for a in batch]
                        )
                if undeleted:
                    self._db.executemany(
                        "DELETE FROM spool WHERE seq = ?", [(seq,) for seq in undeleted]
                    )
        except self._db_error as exc:
            # NATS has these alerts: they must not be read again, and the rows go
            # once the disk takes writes again (or, after a restart, JetStream drops
            # the second copy by its Nats-Msg-Id).
            undeleted.update(a.seq for a in batch)
            self._disk_failed("delete", exc)
            return
        if undeleted:
            undeleted.clear()
            log(logging.INFO, "spool deletes caught up", LOG, location=self.location)

    def alert_ids(self) -> list[str]:
        """Ids of everything spooled, so a restarted gateway still knows them as seen."""
        if self._db is None:
            return [a.alert_id for a in self._cache.read(0, self.count)]
        ids = []
        for (headers,) in self._db.execute("SELECT headers FROM spool"):
            try:
                ids.append(orjson.loads(headers).get("Nats-Msg-Id", ""))
            except (ValueError, TypeError, AttributeError):
                continue  # an unreadable row (see _move_aside): no id to remember
        return ids

    def close(self) -> None:
        if self._db is not None:
            if self._undeleted:
                self._delete_rows([])
            self._db.close()
            self._db = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


class _Recent:
    """The latest spooled alerts in memory, in sequence order, so the publisher
    hands fresh alerts to NATS without reading back what was just written.

    Valid ("covering") from `floor` on: every spooled alert with a higher
    sequence number is here. Past `limit` bytes (a long NATS outage with a
    database behind) it lets go of everything and the spool reads from the
    database until the publisher has caught up; `limit` None: never.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.bytes = 0
        self._items: list[SpooledAlert] = []
        self._head = 0  # items before it are gone; compacted now and then
        self._gone: set[int] = set()  # deleted out of order, still in _items
        self._floor: int | None = 0  # None: not covering

    def covers(self, after: int) -> bool:
        return self._floor is not None and after >= self._floor

    def invalidate(self) -> None:
        self._items = []
        self._head = 0
        self._gone.clear()
        self.bytes = 0
        self._floor = None

    def restart(self, alerts: list[SpooledAlert], after: int) -> None:
        """`alerts` are all there is after `after`: cover from there."""
        self.invalidate()
        self._floor = after
        for alert in alerts:
            self.add(alert)

    def add(self, alert: SpooledAlert) -> None:
        if self._floor is None:
            return
        if self.limit is not None and self.bytes + alert.size > self.limit:
            self.invalidate()
            return
        self._items.append(alert)
        self.bytes += alert.size

    def read(self, after: int, limit: int) -> list[SpooledAlert]:
        items = self._items
        start = bisect.bisect_right(items, after, lo=self._head, key=_seq)
        if not self._gone:
            return items[start : start + limit]
        found: list[SpooledAlert] = []
        for alert in itertools.islice(items, start, None):
            if alert.seq not in self._gone:
                found.append(alert)
                if len(found) >= limit:
                    break
        return found

    def remove(self, alerts: list[SpooledAlert]) -> None:
        if self._floor is None:
            return
        items, gone = self._items, self._gone
        for alert in alerts:
            if alert.seq > self._floor:
                gone.add(alert.seq)
        head = self._head
        while head < len(items) and items[head].seq in gone:
            gone.discard(items[head].seq)
            self.bytes -= items[head].size
            head += 1
        if gone and head == len(items):
            gone.clear()  # deleted alerts that were never cached
        if head > 1024 and head * 2 > len(items):
            del items[:head]
            head = 0
        self._head = head


def _readable(row: tuple[object, ...]) -> bool:
    """A spool row (accepted_ns, path, subject, headers, typeof(payload), size) that
    `Spool.read` can turn into a SpooledAlert."""
    accepted_ns, path, subject, headers, payload_type, size = row
    if not (
        isinstance(accepted_ns, int)
        and isinstance(path, str)
        and isinstance(subject, str)
        and isinstance(size, int)
        and payload_type == "blob"
        and isinstance(headers, bytes | str)
    ):
        return False
    try:
        decoded = orjson.loads(headers)
    except orjson.JSONDecodeError:
        return False
    return isinstance(decoded, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in decoded.items()
    )


def _seq(alert: SpooledAlert) -> int:
    return alert.seq


def _keep_aside(path: Path, *, move: bool) -> Path | str:
    """spool_repair.keep_aside; on failure, why (a full disk cannot take the copy)."""
    try:
        return spool_repair.keep_aside(path, move=move)
    except OSError as exc:
        return f"could not be kept aside: {exc}"


def _lock(folder: Path) -> int:
    """Hold `folder` for this process: two gateways on one spool would each publish
    every alert in it. The kernel drops the lock when the process dies, SIGKILL too."""
    path = folder / "spool.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise SpoolUnusable(f"cannot open {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise SpoolUnusable(f"{folder} is in use by another gateway process") from None
    return fd
