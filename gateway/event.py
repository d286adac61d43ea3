"""The one event type both ingest paths are normalised into."""

from __future__ import annotations

import enum
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from gateway.echo import echo

# What an output field can hold once normalised: a JSON scalar, or for Falco's
# list-valued fields the JSON value itself.
FieldValue: TypeAlias = str | int | float | bool | list[object] | dict[str, object] | None


class Priority(enum.IntEnum):
    """Falco's priorities with Falco's numbers (falco.schema.priority): lower is more severe."""

    EMERGENCY = 0
    ALERT = 1
    CRITICAL = 2
    ERROR = 3
    WARNING = 4
    NOTICE = 5
    INFORMATIONAL = 6
    DEBUG = 7

    @property
    def canonical(self) -> str:
        """The name Falco writes in JSON and falcosidekick publishes: `Informational`."""
        return _CANONICAL[self]

    @classmethod
    def parse(cls, text: str) -> Priority:
        """Read a priority name the way Falco does: any case, and `info` for Informational."""
        found = _BY_NAME.get(text.strip().lower())
        if found is None:
            raise ValueError(
                f"unknown priority {echo(text)}; expected one of "
                + ", ".join(p.canonical for p in cls)
                + " (any case; 'info' means Informational)"
            )
        return found

    def at_least(self, minimum: Priority) -> bool:
        """True when this priority is as severe as `minimum` or more."""
        return self <= minimum


_CANONICAL = {p: p.name.capitalize() for p in Priority}
_BY_NAME = {p.name.lower(): p for p in Priority} | {"info": Priority.INFORMATIONAL}

# Fixed namespace of the gateway's alert ids (UUIDv5), so every gateway and every
# restart derives the same id for the same alert.
ALERT_ID_NAMESPACE = uuid.UUID("8f3b2a4e-5c1d-4e7f-9a60-3d2c1b0e4f57")
# SHA-1 already fed with the namespace: each id only hashes its own key. UUIDv5 is
# defined on SHA-1; it names alerts, it protects nothing.
_NAMESPACE_SHA1 = hashlib.sha1(ALERT_ID_NAMESPACE.bytes, usedforsecurity=False)


def uuid5_text(key: str) -> str:
    """str(uuid.uuid5(ALERT_ID_NAMESPACE, key)), without building UUID objects.

    Every alert gets an id on the hot path, and uuid.uuid5 goes through an int
    and the UUID constructor's checks; the bytes and the text are the same (the
    unit tests compare the two).
    """
    sha1 = _NAMESPACE_SHA1.copy()
    sha1.update(key.encode())
    raw = bytearray(sha1.digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = raw.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


@dataclass(frozen=True, slots=True)
class FalcoEvent:
    """One Falco alert, whichever way it came.

    `time_ns` is nanoseconds since the Unix epoch (UTC). `output_fields` is kept
    sorted by key, as falcosidekick's Go JSON encoder writes maps.
    """

    time_ns: int
    priority: Priority
    rule: str
    output: str = ""
    source: str = ""
    hostname: str = ""
    tags: tuple[str, ...] = ()
    output_fields: Mapping[str, FieldValue] = field(default_factory=dict, hash=False)

    @property
    def alert_id(self) -> str:
        """A deterministic id of this alert, equal on both ingest paths.

        Built only from what gRPC and http_output always carry identically: the
        time to the nanosecond, the priority and the rule. `output` can be switched
        off in Falco's JSON (json_include_output_property), and `hostname` and
        `source` are missing from older Falco JSON, so none of them take part.
        """
        key = f"{self.time_ns}\x1f{self.priority.canonical}\x1f{self.rule}"
        return uuid5_text(key)
