"""Reading a `falco.outputs.response` that Python's protobuf refuses.

Falco's C++ protobuf serializes a `string` field whatever its bytes (it logs and
sends a file name that is not UTF-8); Python's refuses to parse such a message,
and grpc's own deserializer would end the whole stream on it. The gRPC source
therefore reads each message as bytes and parses it itself: the usual
`FromString` first, and only when that fails this walk over the wire format,
which replaces bytes that are not UTF-8 by U+FFFD, as Falco's JSON output does
(nlohmann's `error_handler_t::replace`), so the alert reads the same on both
paths. Anything else it cannot read is corrupt: an AlertError.
"""

from __future__ import annotations

from gateway.errors import AlertError
from gateway.falco_pb import outputs_pb2

# Field numbers of falco.outputs.response (proto/gateway/falco_pb/outputs.proto).
_TIME, _PRIORITY, _SOURCE_DEPRECATED = 1, 2, 3
_RULE, _OUTPUT, _OUTPUT_FIELDS, _HOSTNAME, _TAGS, _SOURCE = 4, 5, 6, 7, 8, 9
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_TEXT_FIELDS = {_RULE: "rule", _OUTPUT: "output", _HOSTNAME: "hostname", _SOURCE: "source"}


class _Corrupt(Exception):
    pass


def repaired_response(data: bytes) -> outputs_pb2.response:
    """The response in `data`, with bad UTF-8 replaced; AlertError if it is not that.

    Called only for a message `FromString` refused: when no text in it is bad
    UTF-8, the refusal had another cause and the message is corrupt.
    """
    try:
        response, replaced = _parse(memoryview(data))
    except _Corrupt as exc:
        raise AlertError(
            f"gRPC message of {len(data)} bytes is not a falco.outputs.response: {exc}",
            kind="corrupt_message",
        ) from None
    if not replaced:
        raise AlertError(
            f"gRPC message of {len(data)} bytes is not a falco.outputs.response",
            kind="corrupt_message",
        )
    return response


def _parse(data: memoryview) -> tuple[outputs_pb2.response, bool]:
    response = outputs_pb2.response()
    bad = False
    for number, wire, value in _fields(data):
        if number == _TIME:
            seconds, nanos = _timestamp(_expect_len(value, wire, "time"))
            response.time.seconds = seconds
            response.time.nanos = nanos
        elif number in (_PRIORITY, _SOURCE_DEPRECATED):
            if wire != _VARINT:
                raise _Corrupt(f"field {number} has wire type {wire}, not varint")
            assert isinstance(value, int)
            # Enums are int32; proto3 keeps an unknown number (from_grpc judges it).
            setattr(
                response,
                "priority" if number == _PRIORITY else "source_deprecated",
                _int32(value),
            )
        elif number in _TEXT_FIELDS:
            text, was_bad = _text(_expect_len(value, wire, _TEXT_FIELDS[number]))
            bad |= was_bad
            setattr(response, _TEXT_FIELDS[number], text)
        elif number == _OUTPUT_FIELDS:
            key, text, was_bad = _map_entry(_expect_len(value, wire, "output_fields"))
            bad |= was_bad
            response.output_fields[key] = text
        elif number == _TAGS:
            text, was_bad = _text(_expect_len(value, wire, "tags"))
            bad |= was_bad
            response.tags.append(text)
        # Unknown fields (a newer Falco's) are skipped, as protobuf does.
    return response, bad


def _fields(data: memoryview) -> list[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of every field in `data`, in order."""
    fields: list[tuple[int, int, int | memoryview]] = []
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Corrupt(f"field number 0 at byte {pos}")
        value: int | memoryview
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire == _LEN:
            size, pos = _varint(data, pos)
            if size > end - pos:
                raise _Corrupt(f"field {number} runs {size} bytes past the end")
            value, pos = data[pos : pos + size], pos + size
        elif wire in (_I64, _I32):
            size = 8 if wire == _I64 else 4
            if size > end - pos:
                raise _Corrupt(f"field {number} runs past the end")
            value, pos = int.from_bytes(data[pos : pos + size], "little"), pos + size
        else:
            raise _Corrupt(f"field {number} has wire type {wire}")
        fields.append((number, wire, value))
    return fields


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    for i in range(pos, min(pos + 10, len(data))):
        byte = data[i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & 0xFFFF_FFFF_FFFF_FFFF, i + 1
        shift += 7
    raise _Corrupt(f"a varint at byte {pos} does not end")


def _expect_len(value: int | memoryview, wire: int, name: str) -> memoryview:
    if wire != _LEN or not isinstance(value, memoryview):
        raise _Corrupt(f"{name} has wire type {wire}, not length-delimited")
    return value


def _text(value: memoryview) -> tuple[str, bool]:
    raw = value.tobytes()
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), True


def _timestamp(value: memoryview) -> tuple[int, int]:
    seconds = nanos = 0
    for number, wire, item in _fields(value):
        if number in (1, 2):
            if wire != _VARINT or not isinstance(item, int):
                raise _Corrupt(f"time field {number} has wire type {wire}, not varint")
            if number == 1:
                seconds = item - (1 << 64) if item >= 1 << 63 else item
            else:
                nanos = _int32(item)
    return seconds, nanos


def _int32(value: int) -> int:
    # protobuf truncates an int32's varint to its low 32 bits.
    value &= 0xFFFF_FFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _map_entry(value: memoryview) -> tuple[str, str, bool]:
    key = text = ""
    bad = False
    for number, wire, item in _fields(value):
        if number in (1, 2):
            decoded, was_bad = _text(_expect_len(item, wire, "an output_fields entry"))
            bad |= was_bad
            if number == 1:
                key = decoded
            else:
                text = decoded
    return key, text, bad
