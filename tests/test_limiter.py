"""Limiter tests, all on a virtual clock (tests/fakeclock.py): no wall-clock waits."""

from __future__ import annotations

import asyncio

import asyncio_throttle.throttler
import pytest
from fakeclock import FakeClockLoop, ManualClock, patch_monotonic, run

from engine.policy.limiter import ConcurrencyGate, RequestRateLimiter, TokenBucket, rpm_window


def now() -> float:
    return asyncio.get_running_loop().time()


async def timed_acquire(bucket: TokenBucket, amount: float, log: list, tag: object = None) -> None:
    await bucket.acquire(amount)
    log.append((tag if tag is not None else amount, now()))


# -- TokenBucket --------------------------------------------------------------------------------


def test_bucket_starts_full_and_burst_passes_without_waiting():
    async def main():
        bucket = TokenBucket(rate_per_s=1.0, capacity=5)
        assert bucket.level == 5
        for _ in range(5):
            await bucket.acquire()
        assert now() == 0.0
        assert bucket.level == pytest.approx(0.0)

    run(main())


def test_bucket_waits_exactly_the_refill_time():
    async def main():
        t0 = now()
        bucket = TokenBucket(rate_per_s=2.0, capacity=4)
        await bucket.acquire(4)
        await bucket.acquire(1)  # one token at 2/s
        assert now() - t0 == pytest.approx(0.5)
        await bucket.acquire(3)
        assert now() - t0 == pytest.approx(2.0)
        loop = asyncio.get_running_loop()
        assert isinstance(loop, FakeClockLoop)
        assert loop.jumps <= 2  # woken by one timer per wait, never by polling

    run(main(), start=1000.0)


def test_bucket_amount_above_capacity_is_clamped():
    async def main():
        bucket = TokenBucket(rate_per_s=1.0, capacity=3)
        await bucket.acquire(100)  # would never pass unclamped
        assert now() == 0.0
        await bucket.acquire(100)
        assert now() == pytest.approx(3.0)

    run(main())


def test_bucket_is_fifo_and_a_big_head_is_not_starved():
    async def main():
        bucket = TokenBucket(rate_per_s=1.0, capacity=5)
        await bucket.acquire(5)
        log: list = []
        big = asyncio.create_task(timed_acquire(bucket, 5, log, "big"))
        await asyncio.sleep(0)
        smalls = [asyncio.create_task(timed_acquire(bucket, 1, log, f"small{i}")) for i in range(3)]
        await asyncio.gather(big, *smalls)
        assert [tag for tag, _ in log] == ["big", "small0", "small1", "small2"]
        assert [t for _, t in log] == pytest.approx([5.0, 6.0, 7.0, 8.0])

    run(main())


def test_try_acquire_never_waits_and_never_jumps_the_queue():
    async def main():
        bucket = TokenBucket(rate_per_s=1.0, capacity=2)
        assert bucket.try_acquire(2)
        assert not bucket.try_acquire(1)
        waiter = asyncio.create_task(bucket.acquire(2))
        await asyncio.sleep(1.5)  # 1.5 tokens exist, but someone waits
        assert bucket.waiting == 1
        assert not bucket.try_acquire(1)
        await waiter
        assert now() == pytest.approx(2.0)

    run(main())


def test_refund_caps_at_capacity_and_negative_refund_is_debt():
    async def main():
        bucket = TokenBucket(rate_per_s=1.0, capacity=10)
        await bucket.acquire(4)
        bucket.refund(100)
        assert bucket.level == 10
        bucket.refund(-15)  # real usage exceeded the estimate
        assert bucket.level == pytest.approx(-5.0)
        await bucket.acquire(1)  # repays the debt first
        assert now() == pytest.approx(6.0)

    run(main())


def test_refund_wakes_a_waiter_early():
    async def main():
        bucket = TokenBucket(rate_per_s=1.0, capacity=10)
        await bucket.acquire(10)
        log: list = []
        task = asyncio.create_task(timed_acquire(bucket, 8, log))
        await asyncio.sleep(1.0)
        bucket.refund(7)  # 1 accrued + 7 refunded = 8
        await task
        assert log[0][1] == pytest.approx(1.0)

    run(main())


def test_set_rate_wakes_waiters_earlier():
    async def main():
        bucket = TokenBucket(rate_per_s=1.0, capacity=10)
        await bucket.acquire(10)
        log: list = []
        task = asyncio.create_task(timed_acquire(bucket, 5, log))
        await asyncio.sleep(1.0)  # 1 token earned at the old rate
        bucket.set_rate(8.0)
        await task
        assert log[0][1] == pytest.approx(1.5)  # 4 more tokens at 8/s
        assert bucket.rate_per_s == 8.0

    run(main())


def test_set_rate_slower_and_zero_rate_pauses_until_resumed():
    async def main():
        bucket = TokenBucket(rate_per_s=10.0, capacity=10)
        await bucket.acquire(10)
        log: list = []
        task = asyncio.create_task(timed_acquire(bucket, 2, log))
        await asyncio.sleep(0.1)
        bucket.set_rate(0.0)  # paused with 1 token
        await asyncio.sleep(100)
        assert not task.done()
        bucket.set_rate(1.0)
        await task
        assert log[0][1] == pytest.approx(101.1)

    run(main())


def test_set_rate_lower_capacity_clips_level_and_reclamps_waiters():
    async def main():
        bucket = TokenBucket(rate_per_s=1.0, capacity=10)
        bucket.set_rate(1.0, capacity=4)
        assert bucket.level == 4 and bucket.capacity == 4
        await bucket.acquire(4)
        log: list = []
        task = asyncio.create_task(timed_acquire(bucket, 4, log))
        await asyncio.sleep(0.5)
        bucket.set_rate(1.0, capacity=2)  # the waiter now needs only 2
        await task
        assert log[0][1] == pytest.approx(2.0)
        bucket.set_rate(1.0, capacity=100)  # a higher capacity adds no tokens
        assert bucket.level == pytest.approx(0.0)

    run(main())


def test_cancelled_head_waiter_leaks_nothing_and_blocks_nobody():
    async def main():
        bucket = TokenBucket(rate_per_s=1.0, capacity=10)
        await bucket.acquire(10)
        log: list = []
        big = asyncio.create_task(timed_acquire(bucket, 10, log, "big"))
        await asyncio.sleep(0)
        small = asyncio.create_task(timed_acquire(bucket, 2, log, "small"))
        await asyncio.sleep(1.0)
        big.cancel()
        with pytest.raises(asyncio.CancelledError):
            await big
        await small
        assert log == [("small", pytest.approx(2.0))]  # served at its own time, not the big one's
        assert bucket.waiting == 0
        await asyncio.sleep(8.0)
        assert bucket.level == pytest.approx(8.0)  # nothing was taken by the cancelled waiter

    run(main())


def test_waiter_cancelled_after_its_grant_gives_the_tokens_back():
    async def main():
        bucket = TokenBucket(rate_per_s=1.0, capacity=10)
        await bucket.acquire(10)
        task = asyncio.create_task(bucket.acquire(5))
        await asyncio.sleep(1.0)  # 1 token
        bucket.refund(4)  # grants the waiter (level 5 -> 0) ...
        task.cancel()  # ... which is cancelled before it ever resumes
        with pytest.raises(asyncio.CancelledError):
            await task
        assert bucket.level == pytest.approx(5.0)

    run(main())


def test_bucket_with_custom_clock_needs_no_loop():
    clock = ManualClock(50.0)
    bucket = TokenBucket(rate_per_s=2.0, capacity=4, clock=clock)
    assert bucket.try_acquire(4)
    assert not bucket.try_acquire(1)
    clock.advance(0.5)
    assert bucket.level == pytest.approx(1.0)
    assert bucket.try_acquire(1)


@pytest.mark.parametrize(
    "kwargs", [dict(rate_per_s=-1, capacity=1), dict(rate_per_s=1, capacity=0), dict(rate_per_s=float("inf"), capacity=1)]
)
def test_bucket_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        TokenBucket(**kwargs)


def test_bucket_rejects_negative_amount():
    bucket = TokenBucket(1.0, 1.0, clock=ManualClock())
    with pytest.raises(ValueError):
        bucket.try_acquire(-1)
    with pytest.raises(ValueError):
        bucket.refund(float("nan"))


# -- ConcurrencyGate ----------------------------------------------------------------------------


def test_gate_limits_in_flight_and_wakes_fifo():
    async def main():
        gate = ConcurrencyGate(2)
        await gate.acquire()
        await gate.acquire()
        order: list[int] = []

        async def worker(i: int) -> None:
            async with gate:
                order.append(i)
                await asyncio.sleep(1)

        tasks = [asyncio.create_task(worker(i)) for i in range(3)]
        await asyncio.sleep(0)
        assert gate.in_flight == 2 and gate.waiting == 3
        gate.release()
        await asyncio.sleep(0)
        assert order == [0]
        gate.release()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2]
        assert gate.in_flight == 0 and gate.waiting == 0

    run(main())


def test_gate_lowering_the_limit_cancels_nothing():
    async def main():
        gate = ConcurrencyGate(4)
        for _ in range(4):
            await gate.acquire()
        gate.limit = 2
        assert gate.in_flight == 4
        waiter = asyncio.create_task(gate.acquire())
        gate.release()
        gate.release()
        await asyncio.sleep(0)
        assert not waiter.done()  # in_flight 2 is not below the limit 2
        gate.release()
        await waiter
        assert gate.in_flight == 2

    run(main())


def test_gate_raising_the_limit_wakes_waiters():
    async def main():
        gate = ConcurrencyGate(1)
        await gate.acquire()
        waiters = [asyncio.create_task(gate.acquire()) for _ in range(3)]
        await asyncio.sleep(0)
        gate.limit = 3
        await asyncio.sleep(0)
        assert [w.done() for w in waiters] == [True, True, False]
        assert gate.in_flight == 3 and gate.waiting == 1
        waiters[2].cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        assert gate.waiting == 0

    run(main())


def test_gate_cancelled_after_grant_passes_the_slot_on():
    async def main():
        gate = ConcurrencyGate(1)
        await gate.acquire()
        first = asyncio.create_task(gate.acquire())
        second = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        gate.release()  # grants `first` ...
        first.cancel()  # ... which is cancelled before it resumes
        await asyncio.gather(first, return_exceptions=True)
        await second
        assert gate.in_flight == 1

    run(main())


def test_gate_rejects_bad_limits_and_extra_release():
    with pytest.raises(ValueError):
        ConcurrencyGate(0)
    gate = ConcurrencyGate(1)
    with pytest.raises(ValueError):
        gate.limit = 0
    with pytest.raises(ValueError):
        gate.limit = True  # type: ignore[assignment]
    with pytest.raises(RuntimeError):
        gate.release()


# -- RequestRateLimiter -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rpm", "rate_limit", "period"),
    [(600, 10, 1.0), (30, 1, 2.0), (60, 1, 1.0), (90, 2, 4 / 3), (582, 10, 600 / 582), (1, 1, 60.0), (6000, 100, 1.0)],
)
def test_rpm_window_arithmetic(rpm, rate_limit, period):
    assert rpm_window(rpm) == (rate_limit, pytest.approx(period))
    limiter = RequestRateLimiter(rpm)
    assert (limiter.rate_limit, limiter.period) == (rate_limit, pytest.approx(period))
    assert limiter.rpm == rpm


@pytest.mark.parametrize("rpm", [0, -5, float("nan"), float("inf")])
def test_rpm_window_rejects_nonsense(rpm):
    with pytest.raises(ValueError):
        RequestRateLimiter(rpm)


async def _acquire_times(limiter: RequestRateLimiter, n: int) -> list[float]:
    times = []
    for _ in range(n):
        await limiter.acquire()
        times.append(now())
    return times


def test_rate_limiter_sliding_window_on_the_fake_clock(monkeypatch):
    async def main():
        patch_monotonic(monkeypatch, asyncio_throttle.throttler, asyncio.get_running_loop())
        times = await _acquire_times(RequestRateLimiter(600), 25)  # 10 per 1 s
        assert times[:10] == [0.0] * 10
        assert all(1.0 <= t <= 1.02 for t in times[10:20])
        assert all(2.0 <= t <= 2.04 for t in times[20:])

    run(main())


def test_rate_limiter_low_rpm_spaces_requests(monkeypatch):
    async def main():
        patch_monotonic(monkeypatch, asyncio_throttle.throttler, asyncio.get_running_loop())
        times = await _acquire_times(RequestRateLimiter(30), 3)  # 1 per 2 s
        assert times[0] == 0.0
        assert 2.0 <= times[1] <= 2.02
        assert 4.0 <= times[2] <= 4.04

    run(main())


def test_rate_limiter_unlimited_and_switching_at_run_time(monkeypatch):
    async def main():
        patch_monotonic(monkeypatch, asyncio_throttle.throttler, asyncio.get_running_loop())
        limiter = RequestRateLimiter(None)
        assert limiter.rpm is None and limiter.rate_limit is None and limiter.period is None
        await _acquire_times(limiter, 1000)
        assert now() == 0.0

        limiter.set_rpm(60)  # 1 per second
        await limiter.acquire()
        waiter = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0.505)  # off a 10 ms tick: a polling waiter would pass only at the next one
        assert not waiter.done()
        limiter.set_rpm(None)  # wakes the waiter, which passes at once
        await waiter
        assert now() == pytest.approx(0.505)

    run(main())


def test_rate_limiter_lowering_rpm_keeps_history(monkeypatch):
    async def main():
        patch_monotonic(monkeypatch, asyncio_throttle.throttler, asyncio.get_running_loop())
        limiter = RequestRateLimiter(600)
        await _acquire_times(limiter, 10)
        limiter.set_rpm(60)  # no fresh burst: the 10 sends of t=0 still count
        await limiter.acquire()
        assert 1.0 <= now() <= 1.02
        assert limiter.rate_limit == 1

    run(main())


def test_rate_limiter_waiter_sleeps_until_a_slot_frees_instead_of_polling(monkeypatch):
    # asyncio-throttle's own acquire polls every 10 ms: ~14 ms of CPU per second per waiting dispatcher
    async def main():
        patch_monotonic(monkeypatch, asyncio_throttle.throttler, asyncio.get_running_loop())
        limiter = RequestRateLimiter(30)  # 1 per 2 s
        checks = []
        flush = limiter._throttler.flush
        monkeypatch.setattr(limiter._throttler, "flush", lambda: (checks.append(now()), flush())[1])
        await _acquire_times(limiter, 3)
        assert 4.0 <= now() <= 4.01
        assert len(checks) <= 6  # a check on arrival and one when the slot frees, per acquire

    run(main())


async def _one_waiting(monkeypatch, *, rpm: float, after_s: float) -> tuple[RequestRateLimiter, asyncio.Task]:
    """A limiter on the fake clock whose window is full, and a waiter that has waited ``after_s``."""
    patch_monotonic(monkeypatch, asyncio_throttle.throttler, asyncio.get_running_loop())
    limiter = RequestRateLimiter(rpm)
    for _ in range(limiter.rate_limit or 0):
        await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(after_s)
    assert not waiter.done()
    return limiter, waiter


def test_rate_limiter_raising_rpm_wakes_the_waiter_at_once(monkeypatch):
    async def main():
        limiter, waiter = await _one_waiting(monkeypatch, rpm=60, after_s=0.255)
        limiter.set_rpm(600)  # 10 per second: the slot is free now
        await waiter
        assert now() == pytest.approx(0.255)
        limiter.set_rpm(1)  # lowering it never releases anyone early
        late = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(10)
        assert not late.done()
        late.cancel()

    run(main())


def test_rate_limiter_cancelled_waiter_leaves_no_timer_or_send(monkeypatch):
    async def main():
        limiter, waiter = await _one_waiting(monkeypatch, rpm=60, after_s=0.5)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert limiter._wake is None and len(limiter._throttler._task_logs) == 1
        await limiter.acquire()  # the next acquire still waits for the window
        assert 1.0 <= now() <= 1.01

    run(main())


def test_rate_limiter_restamp_counts_a_late_send_from_when_it_leaves(monkeypatch):
    """The dispatcher takes its rpm slot before it waits for a row; a row that comes after a lull
    leaves later than the slot was taken, and the next send is spaced from that moment."""
    async def main():
        patch_monotonic(monkeypatch, asyncio_throttle.throttler, asyncio.get_running_loop())
        limiter = RequestRateLimiter(30)  # 1 per 2 s
        await limiter.acquire()
        await limiter.acquire()  # t=2: the slot for the next row, which only comes at t=2.5
        await asyncio.sleep(0.5)
        limiter.restamp()
        limiter.restamp()  # a second call (no acquire since) changes nothing
        await limiter.acquire()
        assert 4.5 <= now() <= 4.51

    run(main())


def test_rate_limiter_without_the_throttlers_log_falls_back_to_its_own_acquire(monkeypatch):
    class OtherThrottler:  # a future asyncio-throttle that keeps its log elsewhere
        def __init__(self, rate_limit: int, period: float) -> None:
            self.rate_limit, self.period, self.calls = rate_limit, period, 0

        async def acquire(self) -> None:
            self.calls += 1

    async def main():
        monkeypatch.setattr(asyncio_throttle, "Throttler", OtherThrottler)
        limiter = RequestRateLimiter(600)
        assert limiter._sends is None and limiter.rate_limit == 10
        await _acquire_times(limiter, 3)
        limiter.restamp()  # a no-op there
        assert limiter._throttler.calls == 3

    run(main())
