from __future__ import annotations

import pytest
from fakeclock import ManualClock

from engine.policy.breaker import CircuitBreaker


def make(**kwargs) -> tuple[CircuitBreaker, ManualClock]:
    clock = ManualClock(100.0)
    kwargs.setdefault("failure_threshold", 3)
    kwargs.setdefault("open_s", 10.0)
    kwargs.setdefault("max_open_s", 35.0)
    return CircuitBreaker(clock=clock, **kwargs), clock


def fail(breaker: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        assert breaker.allow()
        breaker.record_failure()


def test_full_cycle_with_doubling_and_reset():
    breaker, clock = make()
    assert breaker.state == "closed" and breaker.allow() and breaker.time_until_probe() == 0.0

    fail(breaker, 2)
    breaker.record_success()  # not consecutive: counter resets
    fail(breaker, 2)
    assert breaker.state == "closed" and breaker.consecutive_failures == 2
    fail(breaker, 1)
    assert breaker.state == "open" and breaker.opened_count == 1
    assert not breaker.allow()
    assert breaker.time_until_probe() == pytest.approx(10.0)

    clock.advance(9.9)
    assert breaker.state == "open" and breaker.time_until_probe() == pytest.approx(0.1)
    clock.advance(0.1)
    assert breaker.state == "half_open" and breaker.time_until_probe() == 0.0
    assert breaker.allow()  # the one probe
    assert not breaker.allow()  # nobody else while it is out
    breaker.record_failure()  # probe failed: open again, twice as long
    assert breaker.state == "open" and breaker.opened_count == 2
    assert breaker.current_open_s == 20.0
    assert breaker.time_until_probe() == pytest.approx(20.0)

    clock.advance(19.0)
    assert not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow()
    breaker.record_success()  # probe succeeded: closed, counters reset
    assert breaker.state == "closed" and breaker.consecutive_failures == 0
    assert breaker.allow() and breaker.allow()

    fail(breaker, 3)  # the next open period starts from open_s again
    assert breaker.state == "open" and breaker.current_open_s == 10.0 and breaker.opened_count == 3


def test_open_period_doubling_is_capped():
    breaker, clock = make()
    fail(breaker, 3)
    lengths = []
    for _ in range(5):
        lengths.append(breaker.current_open_s)
        clock.advance(breaker.time_until_probe())
        assert breaker.allow()
        breaker.record_failure()
    assert lengths == [10.0, 20.0, 35.0, 35.0, 35.0]


def test_reports_while_open_are_stale_and_ignored():
    breaker, clock = make()
    fail(breaker, 3)
    breaker.record_success()  # a request sent before the breaker opened
    breaker.record_failure()
    assert breaker.state == "open" and breaker.opened_count == 1
    assert breaker.time_until_probe() == pytest.approx(10.0)


def test_half_open_failure_without_a_probe_is_stale():
    breaker, clock = make()
    fail(breaker, 3)
    clock.advance(10.0)
    breaker.record_failure()  # no probe was let through yet
    assert breaker.state == "half_open"
    assert breaker.allow()


def test_release_frees_the_probe_slot():
    breaker, clock = make()
    fail(breaker, 3)
    clock.advance(10.0)
    assert breaker.allow()
    breaker.release()  # the probe got a 429: no verdict
    assert breaker.state == "half_open"
    assert breaker.allow()


def test_a_probe_that_never_reports_times_out():
    breaker, clock = make(probe_timeout_s=5.0)
    fail(breaker, 3)
    clock.advance(10.0)
    assert breaker.allow()
    clock.advance(4.0)
    assert not breaker.allow() and breaker.time_until_probe() == pytest.approx(1.0)
    clock.advance(1.0)
    assert breaker.allow()


def test_release_and_success_in_closed_state_are_harmless():
    breaker, _ = make()
    breaker.release()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.opened_count == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(failure_threshold=0),
        dict(failure_threshold=2.5),
        dict(open_s=0),
        dict(open_s=10, max_open_s=5),
        dict(probe_timeout_s=0),
    ],
)
def test_breaker_validates(kwargs):
    with pytest.raises(ValueError):
        CircuitBreaker(**kwargs)


def test_defaults_use_the_monotonic_clock():
    breaker = CircuitBreaker()
    assert breaker.failure_threshold == 20 and breaker.base_open_s == 10.0 and breaker.max_open_s == 120.0
    assert breaker.state == "closed"
