"""RFC 3339 time with nanoseconds, as Falco writes it, to and from integer nanoseconds.

Hand-written rather than `datetime` because datetime keeps microseconds only,
and Falco's alert times carry nanoseconds that the dedup id depends on.
"""

from __future__ import annotations

import calendar
import functools
import re
import time
from datetime import datetime

from gateway.echo import echo

_NS_PER_S = 1_000_000_000
# ASCII digits only: `\d` would also take other scripts' digits (full-width ones, say).
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
# The last instant an RFC 3339 time (four-digit year) can name, in UTC: an alert
# time past it could not be written back as one. Falco's own times are ns since 1970.
MAX_NS = calendar.timegm((9999, 12, 31, 23, 59, 59, 0, 0, 0)) * _NS_PER_S + _NS_PER_S - 1
_MAX_SECONDS = MAX_NS // _NS_PER_S


# The last whole second parsed, `YYYY-MM-DDTHH:MM:SS` -> seconds since the epoch:
# alerts come in bursts within the same second, and Falco always writes the one
# shape `2023-05-25T13:44:05.478445995Z`, so most times need no regex or calendar.
_last_second: tuple[str, int] = ("", 0)


def parse_rfc3339_ns(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time; ValueError names the problem.

    Digits past the ninth fraction digit are dropped (Falco never writes them).
    """
    prefix, seconds = _last_second
    if (
        len(text) == 30
        and text[:19] == prefix
        and text[19] == "."
        and text[29] == "Z"
        and text[20:29].isdigit()
        and text[20:29].isascii()
    ):
        return seconds * _NS_PER_S + int(text[20:29])
    ns = _parse(text)
    if len(text) == 30 and text[19] == "." and text[29] == "Z":
        _remember(text[:19], ns // _NS_PER_S)
    return ns


def _remember(prefix: str, seconds: int) -> None:
    global _last_second  # noqa: PLW0603 - a one-entry cache, private to this module
    _last_second = (prefix, seconds)


def _parse(text: str) -> int:
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(
            f"{echo(text)} is not an RFC 3339 time such as 2023-05-25T13:44:05.478445995Z"
        )
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    try:
        datetime(year, month, day, hour, minute, second)  # validates the calendar
    except ValueError as exc:
        raise ValueError(f"{echo(text)} is not a valid time: {exc}") from None
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if m.group(9):
        hours, minutes = int(m.group(10)), int(m.group(11))
        if hours > 23 or minutes > 59:
            raise ValueError(f"{echo(text)} has an impossible UTC offset (at most 23:59)")
        offset = hours * 3600 + minutes * 60
        seconds -= offset if m.group(9) == "+" else -offset
    fraction = (m.group(7) or "")[:9].ljust(9, "0")
    ns = seconds * _NS_PER_S + int(fraction)
    if ns < 0:
        raise ValueError(f"{echo(text)} is before 1970-01-01, which Falco never sends")
    if ns > MAX_NS:
        raise ValueError(f"{echo(text)} is after 9999-12-31T23:59:59Z in UTC")
    return ns


def grpc_time_ns(seconds: int, nanos: int) -> int:
    """Nanoseconds since the epoch of a gRPC Timestamp; ValueError names the problem.

    protobuf's own rule for a Timestamp: nanos in [0, 999,999,999] (a negative
    count is not "before the second"), and here seconds from 1970 to year 9999
    (the range an RFC 3339 time can write back).
    """
    if 0 <= seconds <= _MAX_SECONDS and 0 <= nanos < _NS_PER_S:
        return seconds * _NS_PER_S + nanos
    if not 0 <= nanos < _NS_PER_S:
        raise ValueError(f"nanos {nanos} outside 0..999999999")
    raise ValueError(f"seconds {seconds} outside 1970-01-01..9999-12-31 (0..{_MAX_SECONDS})")


def format_rfc3339_ns(ns: int) -> str:
    """`2023-05-25T13:44:05.478445995Z`: UTC, always nine fraction digits, as Falco writes it."""
    seconds, fraction = divmod(ns, _NS_PER_S)
    return _second_text(seconds) + f".{fraction:09d}Z"


def format_rfc3339_nano(ns: int) -> str:
    """The time as falcosidekick publishes it: Go's time.RFC3339Nano in UTC.

    Trailing zeros of the fraction are trimmed and a whole second has no fraction
    (`...13:44:05.32511996Z`, `...13:44:41Z`): the same instant as Falco's text,
    but subscribers that compare or hash payloads see falcosidekick's bytes.
    """
    seconds, fraction = divmod(ns, _NS_PER_S)
    if not fraction:
        return _second_text(seconds) + "Z"
    return _second_text(seconds) + "." + f"{fraction:09d}".rstrip("0") + "Z"


@functools.lru_cache(maxsize=64)
def _second_text(seconds: int) -> str:
    # Every alert's payload carries its time: alerts of the same second share this.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
