"""Shortening an alert's payload until it fits a size limit (NATS's max_payload,
a JetStream stream's max_msg_size).

Falco drops whatever it is refused, so an alert too big for NATS is better sent
shortened than not at all. The longest strings among `output` and the
`output_fields` values are cut to one common length, the least that makes the
payload fit, each marked `[truncated]` as the field limit marks them. The id,
rule, priority, time, source, tags and hostname are never touched: the alert
stays the same alert (same subject, same Nats-Msg-Id), with less detail.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.normalize import TRUNCATED


def fit_payload(payload: bytes, limit: int) -> bytes | None:
    """`payload` (a falcosidekick JSON alert) in at most `limit` bytes, or None when
    even cutting every long string to nothing would not make it fit."""
    if len(payload) <= limit:
        return payload
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    longest = max(_string_lengths(doc), default=0)
    shortest_cut = _render(doc, 0)
    if len(shortest_cut) > limit:
        return None
    # The largest common length that fits: the payload's size grows with it.
    low, high = 0, longest
    best = shortest_cut
    while low < high:
        middle = (low + high + 1) // 2
        candidate = _render(doc, middle)
        if len(candidate) <= limit:
            low, best = middle, candidate
        else:
            high = middle - 1
    return best


def _string_lengths(doc: dict[str, Any]) -> list[int]:
    lengths = [len(doc["output"])] if isinstance(doc.get("output"), str) else []
    fields = doc.get("output_fields")
    if isinstance(fields, dict):
        lengths += [len(v) for v in fields.values() if isinstance(v, str)]
    return lengths


def _render(doc: dict[str, Any], cap: int) -> bytes:
    """`doc` with `output` and every string field value longer than `cap`
    characters cut to `cap` and marked."""
    cut = dict(doc)
    if isinstance(cut.get("output"), str):
        cut["output"] = _cut(cut["output"], cap)
    fields = cut.get("output_fields")
    if isinstance(fields, dict):
        cut["output_fields"] = {
            k: _cut(v, cap) if isinstance(v, str) else v for k, v in fields.items()
        }
    return orjson.dumps(cut)


def _cut(value: str, cap: int) -> str:
    return value if len(value) <= cap + len(TRUNCATED) else value[:cap] + TRUNCATED
