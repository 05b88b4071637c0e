"""The concurrency window (cwnd), a TCP-like state machine. Slow start from ``initial``, +1 per success
(doubling per round trip, ack-clocked so that growth never releases a burst) until the first
congestion signal or a latency plateau; then +1/cwnd per success (+1 per round trip). Growth also
needs the verdict of the last window (``max(1 s, smoothed latency)``): no congestion, no latency
plateau, rate-limit headers not nearly exhausted, and the window actually used (Little's law:
completions x latency / window >= 40 % of cwnd), so a paced or idle window never inflates. A burst
of congestion multiplies cwnd by 0.7, once (the controller decides what counts as a burst). Above 2x
the latency baseline the server is queueing and growth stops; above 3x cwnd shrinks gently (x0.9 per
window); when three such decreases in a row did not shorten the answers by 10 %, the latency is no
queue of ours: the baseline restarts from the current slow average.
"""

from __future__ import annotations

import math

from engine.policy.adaptive.latency import LATENCY_PLATEAU, LatencyEstimator

__all__ = ["CongestionWindow"]

#: concurrency multiplier on a congestion signal
CWND_DECREASE = 0.7
#: concurrency multiplier per window while latency shows a deep queue
CWND_LATENCY_DECREASE = 0.9
#: smoothed latency above this multiple of the baseline: shrink the window gently
LATENCY_QUEUE = 3.0
#: a window must have been this full (Little's law estimate / cwnd) to allow growth
MIN_UTILISATION = 0.4
#: after this many queue decreases in a row, the latency must have fallen below QUEUE_RESPONSE x its
#: value at the first; otherwise the latency is not a queue of ours and the baseline is reset
QUEUE_PATIENCE = 3
QUEUE_RESPONSE = 0.9


class CongestionWindow:
    """cwnd, slow start, decreases (one per burst) and the verdict of the last window."""

    __slots__ = (
        "_queue_srtt",
        "_queue_windows",
        "_win_ok",
        "_win_start",
        "cwnd",
        "decreases",
        "dirty",
        "growth_ok",
        "last_decrease",
        "max_concurrency",
        "min_concurrency",
        "slow_start",
    )

    def __init__(self, initial: int, min_concurrency: int, max_concurrency: int) -> None:
        self.min_concurrency = min_concurrency
        self.max_concurrency = max_concurrency
        self.cwnd = float(initial)
        self.slow_start = True
        self.decreases = 0  #: congestion decreases (one per burst)
        self.last_decrease = -math.inf
        self.growth_ok = True  #: verdict of the last window
        self.dirty = False  #: the current window saw a reason not to grow
        self._win_start: float | None = None
        self._win_ok = 0  # successes in the current window
        self._queue_srtt: float | None = None  # latency when the current run of queue decreases began
        self._queue_windows = 0

    def on_answer(self, now: float, ok: bool) -> None:
        if self._win_start is None:
            self._win_start = now
        if ok:
            self._win_ok += 1

    def on_success(self, hold: bool) -> None:
        """A success; ``hold``: a reason not to grow (limit nearly exhausted, latency plateau)."""
        if hold:
            self.dirty = True
        elif self.growth_ok:
            # ack-clocked: slow start +1 per success, congestion avoidance +1 per round trip
            cwnd = self.cwnd
            cwnd += 1.0 if self.slow_start else 1.0 / cwnd
            most = float(self.max_concurrency)
            self.cwnd = cwnd if cwnd < most else most  # (min)

    def on_congestion(self, now: float, burst_s: float) -> float | None:
        """A congestion signal. Within ``burst_s`` of the last decrease it is the same burst and only
        stops growth (None); otherwise cwnd decreases and the time since the last decrease returns."""
        self.dirty = True
        self.growth_ok = False
        self.slow_start = False
        since_last = now - self.last_decrease
        if since_last < burst_s:
            return None  # the same burst: decrease once
        self.last_decrease = now
        self.decreases += 1
        self.cwnd = max(float(self.min_concurrency), self.cwnd * CWND_DECREASE)
        return since_last

    def close(self, now: float, latency: LatencyEstimator) -> None:
        """End the current window once it lasted max(1 s, latency): judge it (growth verdict, queue
        decreases, baseline restart) and start the next."""
        start = self._win_start
        if start is None:
            return
        srtt = latency.srtt
        elapsed = now - start
        if elapsed < 1.0 or (srtt is not None and elapsed < srtt):  # (shorter than max(1 s, srtt))
            return
        in_flight = self._win_ok * (srtt or 0.0) / elapsed  # Little's law
        ratio = latency.ratio()
        if ratio > LATENCY_PLATEAU:
            self.slow_start = False  # the server queues: leave slow start (HyStart-like)
        if ratio <= LATENCY_QUEUE:
            self._queue_srtt = None
        elif self._queue_srtt is None or self._queue_windows < QUEUE_PATIENCE:
            if self._queue_srtt is None:
                self._queue_srtt, self._queue_windows = srtt, 0
            self._queue_windows += 1
            self.cwnd = max(float(self.min_concurrency), self.cwnd * CWND_LATENCY_DECREASE)
        elif (srtt or 0.0) > QUEUE_RESPONSE * self._queue_srtt:
            # a smaller window did not shorten the answers: no queue of ours, the baseline was wrong
            # (e.g. the fastest answers of a ramp-up); start again from the typical latency
            latency.restart_baseline(now)
            self._queue_srtt = None
            ratio = latency.ratio()
        else:
            self._queue_srtt, self._queue_windows = srtt, 0  # it responds: a queue; keep shrinking
        self.growth_ok = not self.dirty and ratio <= LATENCY_PLATEAU and in_flight >= MIN_UTILISATION * self.cwnd
        self._win_start = now
        self._win_ok = 0
        self.dirty = False
