from __future__ import annotations

import random

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
from engine.policy.retry import MAX_SERVER_WAIT_S, RetryPolicy


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
