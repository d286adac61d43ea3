"""The spool: every accepted alert, in arrival order, until NATS has it.

An SQLite database in WAL mode (`spool_dir/spool.db`), or the same schema in
memory when no `spool_dir` is set. An alert is written here before the source
answers Falco, and deleted only after NATS has it (a JetStream ack, or a core
flush). So an alert the gateway accepted survives NATS outages and, with a
`spool_dir`, the gateway being killed.

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

import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

from gateway.errors import ConfigError, SpoolFull
from gateway.logs import log

LOG = logging.getLogger("gateway.spool")

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
        self, directory: str = "", max_bytes: int = 128 * 1024 * 1024, sync: str = "normal"
    ) -> None:
        self.max_bytes = max_bytes
        self.location = ":memory:"
        self._lock: int | None = None
        if directory:
            folder = Path(directory)
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError("spool_dir", f"cannot create {folder}: {exc.strerror}") from None
            self._lock = _lock(folder)
            self.location = str(folder / "spool.db")
        try:
            # isolation_level=None: autocommit; each statement is its own transaction.
            self._db = sqlite3.connect(self.location, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
            self._db.execute(_SCHEMA)
            count, size = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM spool"
            ).fetchone()
        except sqlite3.Error as exc:
            raise ConfigError("spool_dir", f"cannot use {self.location}: {exc}") from None
        self.count = int(count)
        self.bytes = int(size)
        if self.count:
            log(
                logging.INFO,
                "spool recovered",
                LOG,
                alerts=self.count,
                bytes=self.bytes,
                location=self.location,
            )

    @property
    def durable(self) -> bool:
        return self.location != ":memory:"

    def append(self, path: str, subject: str, headers: dict[str, str], payload: bytes) -> int:
        """Store one alert; SpoolFull if it would pass `max_bytes`. Returns its sequence number."""
        header_bytes = orjson.dumps(headers)
        size = len(payload) + len(header_bytes) + len(subject.encode())
        if self.bytes + size > self.max_bytes:
            raise SpoolFull(
                f"spool full: {self.count} alerts, {self.bytes} of {self.max_bytes} bytes "
                "(spool_max_bytes); NATS is not taking alerts fast enough"
            )
        cursor = self._db.execute(
            "INSERT INTO spool (accepted_ns, path, subject, headers, payload, size) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (time.time_ns(), path, subject, header_bytes, payload, size),
        )
        self.count += 1
        self.bytes += size
        return int(cursor.lastrowid or 0)

    def has_room(self, margin: int = 64 * 1024) -> bool:
        """Room for at least `margin` more bytes: for readiness, not for admission."""
        return self.bytes + margin <= self.max_bytes

    def read(self, after: int, limit: int) -> list[SpooledAlert]:
        """Up to `limit` alerts with a sequence number above `after`, oldest first."""
        rows = self._db.execute(
            "SELECT seq, accepted_ns, path, subject, headers, payload, size FROM spool "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        ).fetchall()
        return [
            SpooledAlert(
                seq, accepted_ns, path, subject, orjson.loads(headers), bytes(payload), size
            )
            for seq, accepted_ns, path, subject, headers, payload, size in rows
        ]

    def delete(self, alerts: Iterable[SpooledAlert]) -> None:
        """Forget alerts NATS has (or that expired)."""
        batch = list(alerts)
        if not batch:
            return
        with self._db:  # one transaction for the batch
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM spool WHERE seq = ?", [(a.seq,) for a in batch])
        self.count -= len(batch)
        self.bytes -= sum(a.size for a in batch)

    def alert_ids(self) -> list[str]:
        """Ids of everything spooled, so a restarted gateway still knows them as seen."""
        return [
            orjson.loads(h).get("Nats-Msg-Id", "")
            for (h,) in self._db.execute("SELECT headers FROM spool")
        ]

    def close(self) -> None:
        self._db.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def _lock(folder: Path) -> int:
    """Hold `folder` for this process: two gateways on one spool would each publish
    every alert in it. The kernel drops the lock when the process dies, SIGKILL too."""
    path = folder / "spool.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError("spool_dir", f"cannot open {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError("spool_dir", f"{folder} is in use by another gateway process") from None
    return fd
