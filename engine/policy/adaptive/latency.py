"""Latency as the controller sees it: a smoothed latency of successes (EWMA, 1/8), one of 429/503s
(which sets how long a burst lasts), and a baseline to compare them with. The baseline is the lowest
value of a slower average (1/64, from 16 answers on) that takes the answers in the order their
requests were sent, each once its peers had as long as the slowest recent answer: in the order they
arrive, the fast ones come first while the window grows, and with latencies spread from 5 ms to
200 ms a baseline from them sits at a quarter of the mean — a "queue" that shrinks the window for
nothing. It may rise by 0.1 %/s to follow a workload that really got slower, and the window restarts
it from the slow average when shrinking did not shorten the answers (see window.py). The ratio of
the smoothed latency to the baseline counts only when the two are at least 50 ms apart: answers in
milliseconds triple in latency from a garbage collection on our side.
"""

from __future__ import annotations

import heapq

__all__ = ["LATENCY_ALPHA", "LATENCY_PLATEAU", "LatencyEstimator"]

#: smoothing factor of the latency averages
LATENCY_ALPHA = 0.125
#: smoothed latency above this multiple of the baseline: the server queues, stop growing
LATENCY_PLATEAU = 2.0
#: the ratio counts only when the latency is also this much above the baseline in absolute terms:
#: with answers in a few milliseconds, a garbage collection or a disk flush on our side triples it
LATENCY_MIN_EXCESS_S = 0.05
#: the latency baseline may rise by this fraction per second
BASELINE_DRIFT_PER_S = 0.001
#: the latency baseline is the lowest slow average (this smoothing, at least this many samples)
BASELINE_ALPHA = 1.0 / 64
BASELINE_MIN_SAMPLES = 16
#: per answer, the slowest recent latency (how long the baseline waits for a request's peers) decays by
LATENCY_MAX_DECAY = 1.0 - 1.0 / 256
#: ... and no more answers than this wait (memory)
LATENCY_PENDING_MAX = 10_000


class LatencyEstimator:
    """Smoothed latencies (successes, congestion) and the baseline; the time windows they imply."""

    __slots__ = ("_baseline_at", "_max", "_pending", "_samples", "_slow", "baseline", "congestion_s", "srtt")

    def __init__(self) -> None:
        self.srtt: float | None = None  #: smoothed latency of successes
        self.congestion_s: float | None = None  #: smoothed latency of 429/503s
        self.baseline: float | None = None
        self._baseline_at = 0.0
        self._slow: float | None = None  # the slow average the baseline is the minimum of
        self._samples = 0
        self._max = 0.0  # the slowest recent latency (decaying)
        self._pending: list[tuple[float, float]] = []  # heap of (sent at, latency) for the baseline

    def on_success(self, now: float, latency_s: float) -> None:
        srtt = self.srtt
        self.srtt = latency_s if srtt is None else srtt + LATENCY_ALPHA * (latency_s - srtt)
        # The baseline takes the answers in the order their requests were sent, each once every
        # request sent at the same time has had as long as the slowest recent answer took: in the
        # order they arrive, the fast answers come first while the window grows, and a baseline
        # from them sits far below the typical latency.
        # (max(a, b) is ``b if b > a else a``, min(a, b) ``b if b < a else a``: the same values, per
        # answer, without building argument tuples)
        slowest = self._max * LATENCY_MAX_DECAY
        if not slowest > latency_s:
            slowest = latency_s
        self._max = slowest
        pending = self._pending
        heapq.heappush(pending, (now - latency_s, latency_s))
        due = now - slowest
        while pending and (pending[0][0] <= due or len(pending) > LATENCY_PENDING_MAX):
            self._update_baseline(now, heapq.heappop(pending)[1])

    def on_congestion(self, latency_s: float) -> None:
        prev = self.congestion_s
        self.congestion_s = latency_s if prev is None else prev + LATENCY_ALPHA * (latency_s - prev)

    def _update_baseline(self, now: float, latency_s: float) -> None:
        # a slow average (a plain mean over the first samples); its lowest value is the baseline
        samples = self._samples = self._samples + 1
        slow = self._slow
        alpha = 1.0 / samples
        if not alpha > BASELINE_ALPHA:
            alpha = BASELINE_ALPHA
        slow = latency_s if slow is None else slow + alpha * (latency_s - slow)
        self._slow = slow
        if samples < BASELINE_MIN_SAMPLES:
            return  # let the average settle before it becomes the baseline
        baseline = self.baseline
        if baseline is None:
            self.baseline = slow
        else:
            elapsed = now - self._baseline_at
            if not elapsed > 0.0:
                elapsed = 0.0
            drifted = baseline * (1.0 + BASELINE_DRIFT_PER_S * elapsed)
            self.baseline = slow if slow < drifted else drifted
        self._baseline_at = now

    def restart_baseline(self, now: float) -> None:
        """The baseline was wrong (e.g. the fastest answers of a ramp-up): start again from the
        typical latency."""
        self.baseline, self._baseline_at = self._slow, now

    def ratio(self) -> float:
        """Smoothed latency / baseline (1.0 while unknown or less than 50 ms apart)."""
        baseline, srtt = self.baseline, self.srtt
        if baseline is None or srtt is None or srtt - baseline < LATENCY_MIN_EXCESS_S:
            return 1.0
        return srtt / max(baseline, 1e-3)

    def plateau(self) -> bool:
        """The server queues: the window must not grow."""
        return self.ratio() > LATENCY_PLATEAU

    def decrease_window_s(self) -> float:
        """How long one burst of 429/503s lasts: it causes one decrease, however many it rejects."""
        recent = self.congestion_s
        if recent is None:
            recent = self.srtt or 0.0
            if 5.0 < recent:
                recent = 5.0
        return recent if recent > 1.0 else 1.0

    def drain_s(self) -> float:
        """After a decrease, answers to requests sent before it arrive for this long."""
        burst = self.decrease_window_s()
        recent = self.srtt or 0.0
        if 5.0 < recent:
            recent = 5.0
        return recent if recent > burst else burst
