"""The fallback reader of gRPC messages Python's protobuf refuses."""

from __future__ import annotations

import pytest

from gateway.echo import echo
from gateway.errors import AlertError
from gateway.falco_pb import outputs_pb2, schema_pb2
from gateway.sources.grpc_wire import repaired_response


def _sample() -> outputs_pb2.response:
    response = outputs_pb2.response(
        rule="RULE",
        output="out",
        hostname="HOST",
        source="syscall",
        priority=schema_pb2.ERROR,
        source_deprecated=schema_pb2.K8S_AUDIT,
        tags=["a", "TAGX"],
    )
    response.time.seconds = 1_700_000_000
    response.time.nanos = 123
    response.output_fields["KEYX"] = "VALX"
    response.output_fields["ok"] = "fine"
    return response


def _spoil(data: bytes, *swaps: tuple[bytes, bytes]) -> bytes:
    for old, new in swaps:
        assert len(old) == len(new)
        data = data.replace(old, new)
    return data


def test_bad_utf8_anywhere_is_replaced_and_the_rest_kept() -> None:
    data = _spoil(
        _sample().SerializeToString(),
        (b"RULE", b"RU\xffE"),
        (b"VALX", b"V\xc3X\x80"),
        (b"TAGX", b"T\xfeXX"),
        (b"KEYX", b"\xffEYX"),
        (b"HOST", b"HO\xe2\x82"),
    )
    with pytest.raises(Exception, match="UTF-8"):
        outputs_pb2.response.FromString(data)
    got = repaired_response(data)
    want = _sample()
    want.rule = "RU\ufffdE"
    want.tags[1] = "T\ufffdXX"
    want.hostname = "HO\ufffd"
    del want.output_fields["KEYX"]
    want.output_fields["\ufffdEYX"] = "V\ufffdX\ufffd"
    assert got == want


def test_times_keep_their_sign_for_from_grpc_to_judge() -> None:
    sample = _sample()
    sample.time.seconds = -5
    sample.time.nanos = -1
    data = _spoil(sample.SerializeToString(), (b"RULE", b"\xffULE"))
    got = repaired_response(data)
    assert (got.time.seconds, got.time.nanos) == (-5, -1)


def test_unknown_fields_are_skipped() -> None:
    data = _spoil(_sample().SerializeToString(), (b"RULE", b"\xffULE"))
    # field 15 varint, field 16 fixed64, field 17 fixed32, field 18 bytes
    extra = b"\x78\x01" + b"\x81\x01" + b"\0" * 8 + b"\x8d\x01" + b"\0" * 4 + b"\x92\x01\x01z"
    assert repaired_response(data + extra).rule == "\ufffdULE"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\xff\xff\xff", "varint"),
        (b"\x0a\x05ab", "past the end"),
        (b"\x22\x01", "past the end"),
        (b"\x20\x01", "wire type 0"),  # rule as a varint
        (b"\x0b", "wire type 3"),  # a group
        (b"\x00\x01", "field number 0"),
        (_sample().SerializeToString(), "is not a falco.outputs.response"),  # nothing to mend
    ],
)
def test_what_cannot_be_read_is_corrupt(data: bytes, problem: str) -> None:
    with pytest.raises(AlertError, match=problem) as info:
        repaired_response(data)
    assert info.value.kind == "corrupt_message"


def test_echo_bounds_what_is_quoted() -> None:
    assert echo("short") == "'short'"
    long = echo("x" * 100_000)
    assert len(long) < 100
    assert long.endswith("... (100000 characters)")
