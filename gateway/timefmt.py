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

_NS_PER_S = 1_000_000_000
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})"
    r"(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


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
        raise ValueError(f"{text!r} is not an RFC 3339 time such as 2023-05-25T13:44:05.478445995Z")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    try:
        datetime(year, month, day, hour, minute, second)  # validates the calendar
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid time: {exc}") from None
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if m.group(9):
        offset = int(m.group(10)) * 3600 + int(m.group(11)) * 60
        seconds -= offset if m.group(9) == "+" else -offset
    fraction = (m.group(7) or "")[:9].ljust(9, "0")
    ns = seconds * _NS_PER_S + int(fraction)
    if ns < 0:
        raise ValueError(f"{text!r} is before 1970-01-01, which Falco never sends")
    return ns


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
