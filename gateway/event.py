"""The one event type both ingest paths are normalised into."""

from __future__ import annotations

import enum
import hashlib
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

import orjson

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
    return uuid5_bytes(key.encode())


def uuid5_bytes(key: bytes) -> str:
    """uuid5_text of a key already encoded as UTF-8."""
    sha1 = _NAMESPACE_SHA1.copy()
    sha1.update(key)
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
        """The id of this alert: its Nats-Msg-Id, its dedup key, its payload's uuid.

        Built from everything Falco's gRPC response and its http_output JSON carry
        identically: the time, the priority, the rule, the source, the hostname and
        `output` (Falco's text, which holds the rule's field values), so both copies
        of one alert share it and two distinct alerts do not, even when a plugin's
        coarse clock gives them the same time. The parts are encoded as one JSON
        array: no rule or output text can make two keys equal.

        Falco's JSON omits `output` when json_include_output_property is false.
        Such an alert is then identified by its `output_fields` instead (a gRPC
        copy, which always has `output`, gets another id, so both copies are
        published: never two alerts merged). With neither, nothing tells two
        alerts apart, and the id is random (a new one on each call): the alert is
        never taken for a duplicate.
        """
        if self.output:
            key = orjson.dumps(
                (self.time_ns, self.priority, self.rule, self.source, self.hostname, self.output)
            )
        elif self.output_fields:
            key = orjson.dumps(
                (self.time_ns, self.priority, self.rule, self.source, self.hostname, None,
                 self.output_fields),
                option=orjson.OPT_SORT_KEYS,
            )  # fmt: skip
        else:
            return str(uuid.UUID(bytes=os.urandom(16), version=4))
        return uuid5_bytes(key)
