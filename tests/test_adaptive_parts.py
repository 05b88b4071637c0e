"""The helpers the adaptive controller is composed of, on their own (the controller's behaviour is
tested in test_adaptive.py and pinned by test_adaptive_differential.py)."""

from __future__ import annotations

import itertools
import math

import pytest

from engine.policy.adaptive.events import HISTORY_S, RateMeter
from engine.policy.adaptive.headers import AdvertisedLimits
from engine.policy.adaptive.noise import binomial_tail
from engine.policy.adaptive.pace import min_or_none


@pytest.mark.parametrize("values", list(itertools.product([None, 300, 300.0, 582.0, 1], repeat=3)))
def test_min_or_none_is_min_of_the_present_values_first_of_equals(values):
    present = [v for v in values if v is not None]
    expected = min(present) if present else None
    got = min_or_none(*values)
    assert got == expected and type(got) is type(expected)  # (300 and 300.0: the first one given)


@pytest.mark.parametrize(("k", "n", "p"), [(0, 10, 0.1), (3, 10, 0.1), (10, 10, 0.5), (7, 40, 0.05), (11, 10, 0.3)])
def test_binomial_tail_is_the_exact_upper_tail(k, n, p):
    exact = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(max(k, 0), n + 1))
    assert binomial_tail(k, n, p) == pytest.approx(exact, rel=1e-7)
    assert binomial_tail(k, n, 0.0) == (1.0 if k <= 0 else 0.0)


def test_rate_meter_counts_the_last_span_and_forgets_the_last_minute():
    meter = RateMeter()
    for i in range(3000):  # 10 per second for 300 s
        meter.add(i / 10)
    now = 299.9
    assert meter.count(now, 1.0) == 11  # 298.9 .. 299.9, both ends
    assert meter.count(now, 10 * HISTORY_S) == 601  # older ones are forgotten
    assert meter.per_minute(now, 6.0) == pytest.approx(61 * 10)
    meter.add(300.0)
    assert meter.per_minute(300.0, 6.0) == pytest.approx(610)  # cached for 0.25 s ...
    assert meter.per_minute(300.35, 6.0) == pytest.approx(570)  # ... then counted: 294.4 .. 300.0


def test_advertised_limits_learn_numbers_and_ignore_garbage():
    limits = AdvertisedLimits()
    assert not limits.learn({}) and (limits.rpm(), limits.tpm()) == (None, None)
    assert not limits.learn({"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "500"})
    assert limits.rpm() == pytest.approx(582.0) and not limits.remaining_low
    assert not limits.learn({"x-ratelimit-limit-requests": "junk", "x-ratelimit-remaining-requests": "20"})
    assert limits.rpm_limit == 600 and limits.remaining_low  # 20 < 10 % of the 500 seen
    assert limits.learn({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-limit-tokens": "-1"})
    assert limits.tpm() is None and not limits.remaining_low  # (0 < 10 % of 0 is false)
