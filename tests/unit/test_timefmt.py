"""Times in and out: RFC 3339 parsing with its refusals, Go's RFC3339Nano, gRPC
Timestamps."""

from __future__ import annotations

import pytest

from gateway.timefmt import (
    MAX_NS,
    format_rfc3339_nano,
    format_rfc3339_ns,
    grpc_time_ns,
    parse_rfc3339_ns,
)


@pytest.mark.parametrize(
    "text",
    [
        "2023-05-25T13:44:05.478445995Z",
        "1970-01-01T00:00:00.000000000Z",
        "2099-12-31T23:59:59.999999999Z",
    ],
)
def test_round_trip_keeps_nanoseconds(text: str) -> None:
    assert format_rfc3339_ns(parse_rfc3339_ns(text)) == text


def test_fraction_is_padded_and_truncated_to_nanoseconds() -> None:
    assert parse_rfc3339_ns("1970-01-01T00:00:01Z") == 1_000_000_000
    assert parse_rfc3339_ns("1970-01-01T00:00:00.5Z") == 500_000_000
    assert parse_rfc3339_ns("1970-01-01T00:00:00.1234567891234Z") == 123_456_789


def test_format_always_writes_nine_digits_and_z() -> None:
    assert format_rfc3339_ns(1_612_815_555_325_120_000) == "2021-02-08T20:19:15.325120000Z"


@pytest.mark.parametrize(
    "text", ["", "2023-05-25", "2023-05-25T13:44:05", "2023-13-01T00:00:00Z", "25/05/2023 13:44"]
)
def test_unparseable_times_raise(text: str) -> None:
    with pytest.raises(ValueError, match="time"):
        parse_rfc3339_ns(text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2023-05-25T13:44:05.478445995+99:99", "impossible UTC offset"),
        ("2023-05-25T13:44:05+24:00", "impossible UTC offset"),
        ("2023-05-25T13:44:05+00:60", "impossible UTC offset"),
        ("\uff12\uff10\uff12\uff13-05-25T13:44:05Z", "not an RFC 3339 time"),  # full-width digits
        ("2023-05-25T13:44:05.\u0664\u0665Z", "not an RFC 3339 time"),  # Arabic-Indic digits
        ("10000-01-01T00:00:00Z", "not an RFC 3339 time"),
        ("9999-12-31T23:59:59-00:01", "after 9999-12-31"),
        ("1969-12-31T23:59:59Z", "before 1970"),
    ],
)
def test_odd_times_are_refused_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_rfc3339_ns(text)


def test_the_extremes_are_taken() -> None:
    assert parse_rfc3339_ns("9999-12-31T23:59:59.999999999Z") == MAX_NS
    assert parse_rfc3339_ns("2023-05-25T13:44:05+23:59") < parse_rfc3339_ns("2023-05-25T13:44:05Z")
    assert format_rfc3339_ns(MAX_NS) == "9999-12-31T23:59:59.999999999Z"


def test_a_long_time_text_is_quoted_only_in_part() -> None:
    with pytest.raises(ValueError, match="not an RFC 3339 time") as info:
        parse_rfc3339_ns("2" * 100_000)
    assert len(str(info.value)) < 300
    assert "100000 characters" in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "nanos", "problem"),
    [
        (2**62, 0, "seconds"),
        (-1, 0, "seconds"),
        (MAX_NS // 1_000_000_000 + 1, 0, "seconds"),
        (1_700_000_000, -1, "nanos"),
        (1_700_000_000, 1_000_000_000, "nanos"),
        (1_700_000_000, 2**31 - 1, "nanos"),
    ],
)
def test_grpc_times_outside_protobufs_range_are_refused(
    seconds: int, nanos: int, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        grpc_time_ns(seconds, nanos)


def test_grpc_times_in_range() -> None:
    assert grpc_time_ns(0, 0) == 0
    assert grpc_time_ns(1_700_000_000, 999_999_999) == 1_700_000_000_999_999_999
    assert grpc_time_ns(MAX_NS // 1_000_000_000, 999_999_999) == MAX_NS


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (1_612_815_555_325_119_960, "2021-02-08T20:19:15.32511996Z"),
        (1_612_815_581_000_000_000, "2021-02-08T20:19:41Z"),
        (1_612_815_581_100_000_000, "2021-02-08T20:19:41.1Z"),
        (1_612_815_581_000_000_001, "2021-02-08T20:19:41.000000001Z"),
        (0, "1970-01-01T00:00:00Z"),
    ],
)
def test_payload_time_is_gos_rfc3339nano(ns: int, text: str) -> None:
    # Go's time.RFC3339Nano, as falcosidekick's json.Marshal of time.Time writes it.
    assert format_rfc3339_nano(ns) == text
    assert parse_rfc3339_ns(text) == ns
