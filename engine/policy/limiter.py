"""Rate and concurrency limits for one endpoint (L2: plain arguments, stdlib + asyncio-throttle).

- ``TokenBucket``: continuous refill, starts full, FIFO waiters woken by one ``loop.call_at`` timer
  (never sleep-polling); amounts are "tokens" (LLM tokens per second, or requests).
- ``ConcurrencyGate``: a semaphore whose limit may change while requests are in flight.
- ``RequestRateLimiter``: requests per minute as a sliding window over ``asyncio_throttle.Throttler``;
  its single waiter (the endpoint's dispatcher) sleeps until a slot frees instead of polling.

All three are adjustable at run time (the adaptive controller retunes them) and none is thread-safe:
use them from the event loop that owns them.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import asyncio_throttle

__all__ = ["ConcurrencyGate", "RequestRateLimiter", "TokenBucket", "rpm_window"]

#: a head waiter short of at most this many tokens is served (absorbs float rounding)
_EPSILON = 1e-9
#: shortest timer the bucket schedules, so rounding can never make it spin at one clock value
_MIN_WAIT_S = 1e-6
#: added to the rpm window's wait: the window frees a slot only strictly after a send's period (and
#: uvloop's timers have millisecond resolution), so a waiter never wakes just too early to pass
_RPM_SLACK_S = 1e-3


@dataclass(eq=False)
class _Waiter:
    future: asyncio.Future[None]
    requested: float
    amount: float  # requested, clamped to the current capacity


class TokenBucket:
    """Continuous-refill token bucket.

    Starts full. ``acquire`` waits in FIFO order: a large request at the head is never starved by
    small ones behind it, and nobody jumps the queue while others wait. Waiters are woken by a
    single timer scheduled with ``loop.call_at`` for the moment the head waiter's tokens exist.
    ``refund`` gives tokens back (or, negative, charges extra: the level may go below zero, a debt
    that refills like any deficit). ``set_rate`` retunes rate and capacity at run time.

    ``clock`` defaults to the running loop's ``time()`` (bound on first use); a custom clock must
    advance with the loop clock, since timers are still scheduled on the loop.
    """

    def __init__(self, rate_per_s: float, capacity: float, *, clock: Callable[[], float] | None = None):
        _check_rate(rate_per_s)
        _check_capacity(capacity)
        self._rate = float(rate_per_s)
        self._capacity = float(capacity)
        self._level = float(capacity)
        self._clock = clock
        self._last: float | None = None
        self._waiters: deque[_Waiter] = deque()
        self._timer: asyncio.TimerHandle | None = None

    # -- public ---------------------------------------------------------------------------------
    @property
    def level(self) -> float:
        """Tokens available now (negative while in debt)."""
        self._refill()
        return self._level

    @property
    def rate_per_s(self) -> float:
        return self._rate

    @property
    def capacity(self) -> float:
        return self._capacity

    @property
    def waiting(self) -> int:
        """How many tasks are waiting in ``acquire``."""
        return len(self._waiters)

    async def acquire(self, amount: float = 1.0) -> None:
        """Take ``amount`` tokens, waiting (FIFO) until they exist. Amounts above the capacity are
        clamped to it so that they can ever pass."""
        _check_amount(amount)
        amount = min(amount, self._capacity)
        self._refill()
        if not self._waiters and self._level + _EPSILON >= amount:
            self._level -= amount
            return
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), amount, amount)
        self._waiters.append(waiter)
        if len(self._waiters) == 1:
            self._schedule()
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                # granted, then cancelled before the task resumed: give the tokens back
                self._refill()
                self._level = min(self._capacity, self._level + waiter.amount)
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:  # pragma: no cover - already gone
                    pass
            self._dispatch()
            raise

    def try_acquire(self, amount: float = 1.0) -> bool:
        """Take ``amount`` tokens if they are available now and nobody is waiting; never waits."""
        _check_amount(amount)
        amount = min(amount, self._capacity)
        self._refill()
        if self._waiters or self._level + _EPSILON < amount:
            return False
        self._level -= amount
        return True

    def refund(self, amount: float) -> None:
        """Give ``amount`` tokens back (never above capacity). A negative amount charges extra
        tokens (e.g. the real usage exceeded the estimate); the level may then go negative."""
        if not math.isfinite(amount):
            raise ValueError(f"refund amount must be finite, got {amount!r}")
        self._refill()
        self._level = min(self._capacity, self._level + amount)
        self._dispatch()

    def set_rate(self, rate_per_s: float, capacity: float | None = None) -> None:
        """Change the refill rate (and optionally the capacity) now; waiters are re-evaluated, so
        a faster rate wakes them earlier. Tokens accrued so far were earned at the old rate; a lower
        capacity clips the level, a higher one adds no tokens."""
        _check_rate(rate_per_s)
        if capacity is not None:
            _check_capacity(capacity)
        self._refill()
        self._rate = float(rate_per_s)
        if capacity is not None:
            self._capacity = float(capacity)
            self._level = min(self._level, self._capacity)
            for waiter in self._waiters:
                waiter.amount = min(waiter.requested, self._capacity)
        self._dispatch()

    # -- internals ------------------------------------------------------------------------------
    def _now(self) -> float:
        if self._clock is None:
            self._clock = asyncio.get_running_loop().time
        return self._clock()

    def _refill(self) -> None:
        now = self._now()
        if self._last is not None and now > self._last and self._level < self._capacity:
            self._level = min(self._capacity, self._level + (now - self._last) * self._rate)
        if self._last is None or now > self._last:
            self._last = now

    def _dispatch(self) -> None:
        """Serve head waiters whose tokens exist, then re-arm the timer for the new head."""
        self._refill()
        while self._waiters:
            head = self._waiters[0]
            if head.future.done():  # defensive: cancelled waiters remove themselves
                self._waiters.popleft()
                continue
            if self._level + _EPSILON < head.amount:
                break
            self._level -= head.amount
            self._waiters.popleft()
            head.future.set_result(None)
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._waiters or self._rate <= 0:
            return  # nothing to wait for, or paused until set_rate/refund
        head = self._waiters[0]
        deficit = head.amount - self._level
        delay = max(deficit / self._rate, _MIN_WAIT_S)
        loop = head.future.get_loop()
        self._timer = loop.call_at(loop.time() + delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()


class ConcurrencyGate:
    """A semaphore whose limit can change at run time (adaptive concurrency), FIFO.

    Lowering the limit below ``in_flight`` cancels nothing: new acquires wait until enough holders
    have released. Use as ``async with gate:`` or ``await gate.acquire()`` / ``gate.release()``.
    """

    def __init__(self, limit: int):
        self._limit = _check_limit(limit)
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        self._limit = _check_limit(value)
        self._wake()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        return sum(1 for fut in self._waiters if not fut.done())

    async def acquire(self) -> None:
        if not self._waiters and self._in_flight < self._limit:
            self._in_flight += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was granted to us; pass it on
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:  # pragma: no cover - already gone
                    pass
            raise

    def release(self) -> None:
        if self._in_flight <= 0:
            raise RuntimeError("ConcurrencyGate.release() called more times than acquire()")
        self._in_flight -= 1
        self._wake()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def _wake(self) -> None:
        while self._waiters and self._in_flight < self._limit:
            fut = self._waiters.popleft()
            if fut.done():
                continue
            self._in_flight += 1
            fut.set_result(None)


def rpm_window(rpm: float) -> tuple[int, float]:
    """Sliding window for ``rpm`` requests per minute: ``(rate_limit, period_s)`` with
    ``rate_limit = max(1, round(rpm / 60))`` requests per ``rate_limit * 60 / rpm`` seconds.

    >>> rpm_window(600), rpm_window(30)
    ((10, 1.0), (1, 2.0))
    """
    if not (math.isfinite(rpm) and rpm > 0):
        raise ValueError(f"rpm must be a positive number or None, got {rpm!r}")
    rate_limit = max(1, round(rpm / 60))
    return rate_limit, rate_limit * 60.0 / rpm


class RequestRateLimiter:
    """Requests-per-minute limit as a sliding window kept by ``asyncio_throttle.Throttler`` (its log of
    send times and ``flush``; see ``rpm_window``). ``rpm=None`` means unlimited. ``set_rpm`` retunes the
    live window, keeping its history, so a change never opens a burst, and wakes a waiter to re-check.

    A waiter sleeps until the oldest send leaves the window, instead of ``Throttler.acquire``'s poll
    every 10 ms: one polling dispatcher cost ~14 ms of CPU per second (uvloop), most of the engine's CPU
    at 10 requests/s. That reads the throttler's send log (``_task_logs``, a deque in asyncio-throttle
    1.0.x) and clock; a version without them gets the library's own polling ``acquire``.
    Meant for ONE acquiring task (the endpoint's dispatcher).
    """

    def __init__(self, rpm: float | None):
        self._throttler = asyncio_throttle.Throttler(rate_limit=1, period=1.0)
        log = getattr(self._throttler, "_task_logs", None)
        clock_module = getattr(getattr(asyncio_throttle, "throttler", None), "time", None)
        self._sends: deque[float] | None = (
            log if isinstance(log, deque) and callable(getattr(clock_module, "monotonic", None)) else None
        )
        self._rpm: float | None = None
        self._wake: asyncio.Future[None] | None = None
        self._stamped = False  # the last send in the log is the latest acquire's
        self.set_rpm(rpm)

    @property
    def rpm(self) -> float | None:
        return self._rpm

    @property
    def rate_limit(self) -> int | None:
        """Requests allowed per window (None when unlimited)."""
        return None if self._rpm is None else self._throttler.rate_limit

    @property
    def period(self) -> float | None:
        """Window length in seconds (None when unlimited)."""
        return None if self._rpm is None else self._throttler.period

    def set_rpm(self, rpm: float | None) -> None:
        if rpm is None:
            self._rpm = None
            self._throttler.rate_limit = sys.maxsize
        else:
            rate_limit, period = rpm_window(rpm)
            self._rpm = float(rpm)
            self._throttler.rate_limit = rate_limit
            self._throttler.period = period
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)  # the waiter re-checks against the new window now

    async def acquire(self) -> None:
        self._stamped = False
        if self._rpm is None:
            return
        throttler, sends = self._throttler, self._sends
        if sends is None:
            await throttler.acquire()
            return
        loop = asyncio.get_running_loop()
        while True:
            throttler.flush()
            if len(sends) < throttler.rate_limit:
                break
            delay = sends[0] + throttler.period - _throttle_clock()
            wake = self._wake = loop.create_future()
            timer = loop.call_later(max(delay, 0.0) + _RPM_SLACK_S, _resolve, wake)
            try:
                await wake
            finally:
                timer.cancel()
                self._wake = None
        sends.append(_throttle_clock())
        self._stamped = True

    def restamp(self) -> None:
        """The request the latest ``acquire`` admitted leaves only now (its dispatcher then waited for a
        row): count it from now, so that a row arriving after a lull does not go out right after it."""
        if self._stamped and self._sends:
            self._sends[-1] = _throttle_clock()
        self._stamped = False


def _throttle_clock() -> float:
    """asyncio-throttle's own clock (the one its log and ``flush`` use), read through its module."""
    return asyncio_throttle.throttler.time.monotonic()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _check_rate(rate: float) -> None:
    if not (math.isfinite(rate) and rate >= 0):
        raise ValueError(f"rate_per_s must be a finite number >= 0, got {rate!r}")


def _check_capacity(capacity: float) -> None:
    if not (math.isfinite(capacity) and capacity > 0):
        raise ValueError(f"capacity must be a finite number > 0, got {capacity!r}")


def _check_amount(amount: float) -> None:
    if not (math.isfinite(amount) and amount >= 0):
        raise ValueError(f"amount must be a finite number >= 0, got {amount!r}")


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"concurrency limit must be an int >= 1, got {limit!r}")
    return limit
