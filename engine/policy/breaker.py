"""Circuit breaker for one endpoint (L2: plain arguments, stdlib only).

::

    closed ──failure_threshold consecutive failures──▶ open (for open_s)
      ▲                                                  │ open_s elapsed
      │ probe succeeds (open_s reset)                    ▼
      └──────────────────────────────────────────── half_open: ONE probe at a time
                                                         │ probe fails
                                                         ▼
                                                  open again, open_s doubled (≤ max_open_s)

Consecutive failures rather than a failure ratio: the design asks that an endpoint answering
500 "many times in a row" be treated as broken, and a run of failures is unambiguous at any
concurrency, while a ratio needs a window size that depends on the request rate.

Only failures that show the ENDPOINT is broken count (5xx, timeouts, connection errors); a 429 or
a 4xx shows it is alive. For every request that ``allow()`` let through, report exactly one of
``record_success()`` (a 2xx answer), ``record_failure()`` (5xx, timeout, connection error) or
``release()`` (no verdict: 429, other 4xx, cancelled) — otherwise a half-open probe holds its slot
until ``probe_timeout_s``.
Reports arriving while open are stale (requests sent before the breaker opened) and are ignored.
A half-open probe that never reports frees its slot after ``probe_timeout_s``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Literal

__all__ = ["BreakerState", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 20,
        open_s: float = 10.0,
        max_open_s: float = 120.0,
        *,
        probe_timeout_s: float | None = None,
        clock: Callable[[], float] | None = None,
    ):
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int) or failure_threshold < 1:
            raise ValueError(f"failure_threshold must be an int >= 1, got {failure_threshold!r}")
        if not (math.isfinite(open_s) and open_s > 0):
            raise ValueError(f"open_s must be a finite number > 0, got {open_s!r}")
        if not (math.isfinite(max_open_s) and max_open_s >= open_s):
            raise ValueError(f"max_open_s must be a finite number >= open_s, got {max_open_s!r}")
        if probe_timeout_s is None:
            probe_timeout_s = max_open_s
        if not (math.isfinite(probe_timeout_s) and probe_timeout_s > 0):
            raise ValueError(f"probe_timeout_s must be a finite number > 0, got {probe_timeout_s!r}")
        self.failure_threshold = failure_threshold
        self.base_open_s = float(open_s)
        self.max_open_s = float(max_open_s)
        self.probe_timeout_s = float(probe_timeout_s)
        self._clock = clock or time.monotonic
        self._state: BreakerState = "closed"
        self._failures = 0  # consecutive, while closed
        self._open_s = self.base_open_s  # duration of the current/next open period
        self._opened_at = 0.0
        self._probe_started: float | None = None  # half_open: when the probe was let through
        self.opened_count = 0  #: how many times the breaker opened (re-opens included)

    # -- queries --------------------------------------------------------------------------------
    @property
    def state(self) -> BreakerState:
        if self._state != "closed":
            self._tick()
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def current_open_s(self) -> float:
        """Length of the current (or next) open period."""
        return self._open_s

    def time_until_probe(self) -> float:
        """Seconds until ``allow()`` can return True (0 if it would now)."""
        self._tick()
        now = self._clock()
        if self._state == "closed":
            return 0.0
        if self._state == "open":
            return max(0.0, self._opened_at + self._open_s - now)
        if self._probe_started is None:
            return 0.0
        return max(0.0, self._probe_started + self.probe_timeout_s - now)

    # -- decisions ------------------------------------------------------------------------------
    def allow(self) -> bool:
        """May a request be sent now? In half_open, True for one probe until it reports."""
        if self._state == "closed":
            return True
        self._tick()  # (never closes: only a success does)
        if self._state == "open":
            return False
        if self._probe_started is None:
            self._probe_started = self._clock()
            return True
        return False

    def record_success(self) -> None:
        self._tick()
        if self._state == "open":
            return  # stale: sent before the breaker opened
        if self._state == "half_open":
            self._state = "closed"
            self._open_s = self.base_open_s
            self._probe_started = None
        self._failures = 0

    def record_failure(self) -> None:
        """An endpoint-level failure (5xx, timeout, connection error) — not 429, not 4xx."""
        self._tick()
        if self._state == "open":
            return  # stale
        if self._state == "half_open":
            if self._probe_started is None:
                return  # stale: no probe out yet
            self._open(min(self._open_s * 2.0, self.max_open_s))
            return
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._open(self.base_open_s)

    def trip(self) -> None:
        """Open now (an endpoint found dead before its first request): probed after the open time."""
        self._tick()
        if self._state != "open":
            self._open(self.base_open_s)

    def release(self) -> None:
        """An allowed request ended without a verdict (cancelled, 429, 4xx): frees the probe slot."""
        self._tick()
        if self._state == "half_open":
            self._probe_started = None

    # -- internals ------------------------------------------------------------------------------
    def _open(self, duration: float) -> None:
        self._state = "open"
        self._open_s = duration
        self._opened_at = self._clock()
        self._probe_started = None
        self._failures = 0
        self.opened_count += 1

    def _tick(self) -> None:
        if self._state == "closed":
            return  # nothing to time out (and no clock read: this runs a few times per request)
        now = self._clock()
        if self._state == "open" and now >= self._opened_at + self._open_s:
            self._state = "half_open"
            self._probe_started = None
        elif (
            self._state == "half_open"
            and self._probe_started is not None
            and now >= self._probe_started + self.probe_timeout_s
        ):
            self._probe_started = None  # the probe never reported: allow another
