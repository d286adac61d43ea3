"""Logging set-up, and a helper that logs a link's state only when it changes."""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from gateway.config import LogFormat, LogLevel

LOG = logging.getLogger("gateway")


class _Formatter(logging.Formatter):
    """One line per event: logfmt (`key=value ...`) or JSON, the same fields either way."""

    def __init__(self, fmt: str = "logfmt") -> None:
        super().__init__()
        self.json = fmt == "json"

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields.update(getattr(record, "fields", {}))
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info).splitlines()[-1]
        if self.json:
            return orjson.dumps(fields, default=str).decode()
        return " ".join(f"{k}={_quote(v)}" for k, v in fields.items())


def _quote(value: object) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def setup_logging(level: LogLevel = "info", fmt: LogFormat = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Hypercorn logs every request at info through its access logger; the gateway
    # logs what matters itself.
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)


def log(level: int, msg: str, logger: logging.Logger = LOG, **fields: object) -> None:
    logger.log(level, msg, extra={"fields": fields})


class StateLog:
    """Logs a link's state once per change, never once per retry."""

    def __init__(self, link: str, logger: logging.Logger = LOG) -> None:
        self.link = link
        self.state = "starting"
        self._logger = logger

    def change(self, state: str, level: int = logging.INFO, **fields: object) -> bool:
        if state == self.state:
            return False
        previous, self.state = self.state, state
        log(
            level, f"{self.link} {state}", self._logger, link=self.link, previous=previous, **fields
        )
        return True


class OncePer:
    """Logs a message the first time each distinct key is seen (bounded), e.g. a
    rejection reason, so one misconfigured client cannot flood the log."""

    def __init__(self, limit: int = 256) -> None:
        self._seen: set[str] = set()
        self._limit = limit

    def first(self, key: str) -> bool:
        if key in self._seen or len(self._seen) >= self._limit:
            return False
        self._seen.add(key)
        return True
