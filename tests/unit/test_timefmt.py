from __future__ import annotations

import pytest

from gateway.timefmt import format_rfc3339_nano, format_rfc3339_ns, parse_rfc3339_ns


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
