from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from engine.core.errors import (
    BreakerOpen,
    ConnectError,
    EndpointError,
    HTTPStatusError,
    MalformedResponse,
    RequestTimeout,
    TransportError,
)
from engine.policy.retry import MAX_SERVER_WAIT_S, RetryPolicy, parse_duration, parse_retry_after

NOW = 1_700_000_000.0  # a fixed "wall clock" for HTTP dates


def rng() -> random.Random:
    return random.Random(1234)


# -- backoff ------------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(1, 12))
def test_backoff_is_full_jitter_within_the_exponential_cap(attempt):
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=20.0)
    cap = min(20.0, 0.5 * 2 ** (attempt - 1))
    r = rng()
    samples = [policy.backoff(attempt, r) for _ in range(500)]
    assert all(0.0 <= s <= cap for s in samples)
    assert max(samples) > 0.8 * cap and min(samples) < 0.2 * cap  # spread over the whole range


def test_backoff_is_reproducible_with_a_seeded_rng_and_survives_huge_attempts():
    policy = RetryPolicy()
    assert [policy.backoff(3, rng()) for _ in range(3)] == [policy.backoff(3, rng())] * 3
    assert 0.0 <= policy.backoff(10_000, rng()) <= policy.max_delay_s
    assert 0.0 <= policy.backoff(0, rng()) <= policy.base_delay_s


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_attempts=0),
        dict(max_attempts=True),
        dict(base_delay_s=-1),
        dict(max_delay_s=float("inf")),
        dict(base_delay_s=10, max_delay_s=5),
    ],
)
def test_policy_validates(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


# -- classification -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_final_statuses_are_never_retried(status):
    assert RetryPolicy().next_delay(HTTPStatusError(status, "no"), 1, 0.0, rng()) is None


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_retryable_statuses_are_retried(status):
    delay = RetryPolicy().next_delay(HTTPStatusError(status, "busy"), 1, 0.0, rng())
    assert delay is not None and 0.0 <= delay <= 1.0


@pytest.mark.parametrize(
    "error",
    [
        RequestTimeout("timed out"),
        ConnectError("refused"),
        TransportError("reset"),
        MalformedResponse("no choices"),
        BreakerOpen("open"),
    ],
)
def test_transport_timeouts_malformed_and_breaker_are_retried(error):
    assert RetryPolicy().next_delay(error, 2, 0.0, rng()) is not None


@pytest.mark.parametrize(
    "error", [ValueError("x"), TimeoutError(), OSError("raw"), EndpointError("generic")]
)
def test_foreign_and_unclassified_errors_are_not_retried(error):
    # by type only: foreign errors must be translated at the boundary first
    assert RetryPolicy().next_delay(error, 1, 0.0, rng()) is None


def test_message_text_does_not_matter():
    policy = RetryPolicy()
    assert policy.next_delay(HTTPStatusError(400, "rate limit exceeded, retry"), 1, 0.0, rng()) is None
    assert policy.next_delay(HTTPStatusError(503, "invalid request"), 1, 0.0, rng()) is not None


# -- limits -------------------------------------------------------------------------------------


def test_attempts_are_capped():
    policy = RetryPolicy(max_attempts=3)
    error = RequestTimeout("t")
    assert policy.next_delay(error, 2, 0.0, rng()) is not None
    assert policy.next_delay(error, 3, 0.0, rng()) is None
    assert RetryPolicy(max_attempts=1).next_delay(error, 1, 0.0, rng()) is None


def test_total_time_is_capped():
    policy = RetryPolicy(max_total_s=100.0)
    error = HTTPStatusError(503, "busy", retry_after=5.0)  # delay in [5, 5.5]
    assert policy.next_delay(error, 1, 90.0, rng()) is not None
    assert policy.next_delay(error, 1, 96.0, rng()) is None  # would start after the budget
    assert policy.next_delay(RequestTimeout("t"), 1, 100.0, rng()) is None


def test_delay_is_capped_at_max_delay():
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=8.0)
    r = rng()
    assert all(policy.next_delay(ConnectError("c"), 7, 0.0, r) <= 8.0 for _ in range(200))


# -- server-requested waits ---------------------------------------------------------------------


def test_retry_after_replaces_exponential_growth_with_small_jitter():
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=60.0)
    r = rng()
    delays = [policy.next_delay(HTTPStatusError(429, "slow", retry_after=2.0), 7, 0.0, r) for _ in range(200)]
    assert all(2.0 <= d <= 2.2 for d in delays)  # not up to 60 s, as attempt 7 would back off
    assert len(set(delays)) > 100  # jittered


def test_retry_after_below_max_delay_is_capped_at_max_delay():
    policy = RetryPolicy(max_delay_s=60.0)
    r = rng()
    delays = [policy.next_delay(HTTPStatusError(429, "x", retry_after=58.0), 1, 0.0, r) for _ in range(200)]
    assert all(58.0 <= d <= 60.0 for d in delays)


def test_retry_after_above_max_delay_is_honoured_up_to_ten_minutes():
    policy = RetryPolicy(max_delay_s=60.0)
    r = rng()
    delays = [policy.next_delay(HTTPStatusError(503, "x", retry_after=120.0), 1, 0.0, r) for _ in range(100)]
    assert all(120.0 <= d <= 132.0 for d in delays)
    huge = policy.next_delay(HTTPStatusError(429, "x", retry_after=86_400.0), 1, 0.0, rng())
    assert huge == MAX_SERVER_WAIT_S == 600.0


def test_retry_after_zero_and_garbage_values():
    policy = RetryPolicy()
    assert policy.next_delay(HTTPStatusError(429, "x", retry_after=0.0), 1, 0.0, rng()) == 0.0
    assert policy.next_delay(HTTPStatusError(429, "x", retry_after=-3.0), 1, 0.0, rng()) == 0.0
    nan = policy.next_delay(HTTPStatusError(429, "x", retry_after=float("nan")), 1, 0.0, rng())
    assert nan is not None and 0.0 <= nan <= 1.0  # ignored: plain backoff


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
