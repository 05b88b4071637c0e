"""Rate-limit header parsing (engine.policy.ratelimit_headers): wait hints, durations, numbers."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from engine.policy.ratelimit_headers import header_number, parse_duration, parse_retry_after

NOW = 1_700_000_000.0  # a fixed "wall clock" for HTTP dates


# -- header_number ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("600", 600.0), (" 1.5 ", 1.5), ("-3", -3.0), ("0", 0.0), ("junk", None), ("", None), ("inf", None),
     ("nan", None), (None, None), (5, None)],
)
def test_header_number(raw, expected):
    assert header_number(raw) == expected


# -- parse_retry_after --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": " 1.5 "}, 1.5),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # ms first
        ({"retry-after-ms": "junk", "retry-after": "9"}, 9.0),  # garbage skipped
        ({"retry-after": "soon"}, None),
        ({"retry-after": ""}, None),
        ({"retry-after": "inf"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after_seconds_and_ms(headers, expected):
    assert parse_retry_after(headers, now=NOW) == expected


def test_parse_retry_after_http_date():
    future = format_datetime(datetime.fromtimestamp(NOW + 30, tz=UTC), usegmt=True)
    past = format_datetime(datetime.fromtimestamp(NOW - 30, tz=UTC), usegmt=True)
    assert parse_retry_after({"retry-after": future}, now=NOW) == pytest.approx(30.0)
    assert parse_retry_after({"retry-after": past}, now=NOW) == 0.0
    naive = "Tue, 14 Nov 2023 22:13:50 -0000"  # NOW + 30 s; "-0000" = UTC of unknown origin
    assert parse_retry_after({"retry-after": naive}, now=NOW) == pytest.approx(30.0)
    assert parse_retry_after({"retry-after": "Mon, 99 Foo 2023 25:61:61 GMT"}, now=NOW) is None


def test_parse_retry_after_http_date_defaults_to_the_wall_clock():
    future = format_datetime(datetime.now(tz=UTC).replace(microsecond=0), usegmt=True)
    assert parse_retry_after({"retry-after": future}) == pytest.approx(0.0, abs=2.0)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"}, 1.0),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}, 360.0),
        ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "20ms"}, 0.02),
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "2s",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "1m",
            },
            60.0,
        ),
        (  # only the exhausted counter counts
            {
                "x-ratelimit-remaining-requests": "3",
                "x-ratelimit-reset-requests": "50s",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "2s",
            },
            2.0,
        ),
        ({"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "1s"}, None),
        ({"x-ratelimit-reset-requests": "1s"}, None),  # remaining unknown
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "later"}, None),
        ({"x-ratelimit-remaining-requests": "zero", "x-ratelimit-reset-requests": "1s"}, None),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "-2"}, 0.0),
        ({"retry-after": "3", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "9s"}, 3.0),
    ],
)
def test_parse_retry_after_ratelimit_reset(headers, expected):
    assert parse_retry_after(headers, now=NOW) == expected


# -- parse_duration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0.5s", 0.5),
        ("500us", 0.0005),
        ("1m30s", 90.0),
        (" 2M ", 120.0),
        ("1.5", 1.5),
        ("12", 12.0),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "  ", "abc", "1x", "s", "1s2", "-1s", "1 s", "nan", "inf", None, 5])
def test_parse_duration_garbage_is_none(text):
    assert parse_duration(text) is None  # type: ignore[arg-type]
