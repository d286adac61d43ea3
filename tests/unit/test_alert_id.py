"""The alert id's fast UUIDv5 must equal uuid.uuid5 byte for byte: ids already in
spools, in JetStream's duplicate window and in consumers' hands were made by uuid.uuid5."""

from __future__ import annotations

import random
import uuid

from gateway.event import ALERT_ID_NAMESPACE, FalcoEvent, Priority, uuid5_text


def keys() -> list[str]:
    rng = random.Random(5)  # noqa: S311 - reproducible test keys, not secrets
    alphabet = "abcXYZ09 .-_\x1f\x00é漢💥\u202e"
    found = ["", "\x1f", "x" * 10_000]
    for _ in range(5_000):
        found.append("".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 80))))
    for priority in Priority:
        for n in range(200):
            found.append(f"{rng.randrange(2**63)}\x1f{priority.canonical}\x1frule {n}")
    return found


def test_uuid5_text_equals_uuid_uuid5() -> None:
    for key in keys():
        assert uuid5_text(key) == str(uuid.uuid5(ALERT_ID_NAMESPACE, key)), repr(key)


def test_alert_id_is_the_uuid5_of_the_parts_both_paths_carry() -> None:
    event = FalcoEvent(
        1_714_557_600_123_456_789,
        Priority.ERROR,
        "Terminal shell in container",
        output="shell (user=root)",
        source="syscall",
        hostname="node-1",
    )
    key = (
        '[1714557600123456789,3,"Terminal shell in container","syscall","node-1",'
        '"shell (user=root)"]'
    )
    assert event.alert_id == str(uuid.uuid5(ALERT_ID_NAMESPACE, key))
    assert uuid.UUID(event.alert_id).version == 5
