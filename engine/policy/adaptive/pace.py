"""The learned pace (requests per minute), for endpoints that only answer 429. It appears at the first
congestion burst: 0.9 x the pace in force or, when nothing paced the requests yet, 0.9 x the rate
they were being sent at (or at least the recent goodput). Each later burst multiplies it by 0.9
again — or aims at 0.9 x the rate the endpoint actually delivered (its limit, while it refuses the
rest) when that is lower: when measured on enough answers (20, over 5 s), or when the burst outlives
the previous cut (within three windows: the pace overshot far, a deep bucket can hide the limit for
seconds). Between bursts it grows additively, by 1 % per second of the pace at which the last burst
happened; once past that pace without a burst, the slope doubles every 5 s (up to 32x): the limit
moved or was misjudged, so probe faster. It grows only while it is the binding limit, and beyond
the last burst's pace never past 1.5 x the delivered rate, so an unused pace cannot store up a
burst — while recovering up to the last burst's pace is always allowed (no stall). Below 0.9 x the
best goodput of the last minute (over 10 s) it grows by at least 10 % per second: a cut that went
too far (noise taken for overload, the burst a bucket allows at the start) costs seconds. It settles
in a narrow band under the limit: few 429s, and above 90 % of the limit on average.
"""

from __future__ import annotations

import math

from engine.policy.adaptive.events import HISTORY_S, EventHistory

__all__ = ["DELIVERED_SPAN_S", "LearnedPace", "aim_at_delivered", "min_or_none"]

#: pace multiplier on a congestion signal
RATE_DECREASE = 0.9
#: learned pace grows by this fraction (of the pace at the last burst) per second
RATE_INCREASE_PER_S = 0.01
#: past the pace of the last burst, the increase doubles every this many seconds
RATE_PROBE_DOUBLING_S = 5.0
#: ... up to this factor (bounds the overshoot when a deep bucket hides the limit for a while)
RATE_PROBE_MAX_GAIN = 32.0
#: below this fraction of the highest goodput of the last minute (over RATE_RECOVERY_SPAN_S), the
#: learned pace grows by at least this fraction of itself per second
RATE_RECOVERY_TARGET = 0.9
RATE_RECOVERY_PER_S = 0.1
RATE_RECOVERY_SPAN_S = 10.0
#: the learned pace may not run ahead of the delivered rate by more than this factor
RATE_AHEAD_OF_GOODPUT = 1.5
#: 429s within this many windows after a cut mean the cut was not enough
BURST_CONTINUES = 3.0
#: a decrease aims at the delivered rate, but not below this fraction of the pace in force ...
GOODPUT_FLOOR = 0.7
#: ... or this one, when the delivered rate is trustworthy (latency <= span, enough samples)
TRUSTED_GOODPUT_FLOOR = 0.25
MIN_DELIVERED_SAMPLES = 20
#: ... measured over this many seconds (or the decrease window)
DELIVERED_SPAN_S = 5.0


class LearnedPace:
    """The pace learned from 429 bursts (None until the first), capped by the user's rpm."""

    __slots__ = ("_above_ref_since", "_peak", "_updated", "min_rpm", "ref", "rpm", "user_rpm")

    def __init__(self, user_rpm: float | None, min_rpm: float) -> None:
        self.user_rpm = user_rpm
        self.min_rpm = min_rpm
        self.rpm: float | None = None  #: the learned pace
        self.ref = 0.0  #: the pace at the last burst: scale of the increase
        self._above_ref_since: float | None = None
        self._updated: float | None = None
        self._peak: tuple[float, float] = (0.0, -math.inf)  # (goodput per minute, when)

    def cut(self, now: float, basis: float) -> None:
        """A burst: the pace becomes 0.9 x ``basis`` (the rate judged to have overloaded)."""
        if self.user_rpm is not None:
            basis = min(basis, self.user_rpm)
        self.ref = basis
        self.rpm = max(self.min_rpm, RATE_DECREASE * basis)
        self._above_ref_since = None
        self._updated = now

    def touch(self, now: float) -> float | None:
        """Note a growth step at ``now``; return the previous one (None: none yet, or no pace)."""
        if self.rpm is None:
            return None
        last, self._updated = self._updated, now
        return last

    def grow(
        self, now: float, last: float, advertised_rpm: float | None, events: EventHistory, srtt: float | None
    ) -> None:
        """Grow the (learned, not None) pace for the time since ``last``, unless another limit
        (``user_rpm``, ``advertised_rpm``) binds."""
        rpm = self.rpm
        assert rpm is not None
        others = min_or_none(self.user_rpm, advertised_rpm)
        if others is not None and rpm >= others:
            return  # another limit governs; nothing to probe
        # recovering up to the pace of the last burst is always allowed (no stall); beyond it,
        # the pace may not run far ahead of what is delivered, or an unused pace stores up a burst.
        # Up to RATE_RECOVERY_TARGET x the best recent goodput it recovers quickly: a decrease that
        # went too far (noise taken for overload, a start-up burst) must not cost minutes.
        quick = RATE_RECOVERY_TARGET * self._recent_peak(now, events)
        ceiling = max(self.ref, RATE_AHEAD_OF_GOODPUT * (events.goodput_rpm(now, srtt) or 0.0), quick)
        if rpm >= ceiling:
            return
        slope = RATE_INCREASE_PER_S * self.ref
        if rpm >= self.ref:
            if self._above_ref_since is None:
                self._above_ref_since = now
            slope *= min(2.0 ** ((now - self._above_ref_since) / RATE_PROBE_DOUBLING_S), RATE_PROBE_MAX_GAIN)
        elapsed = max(0.0, now - last)
        step = slope * elapsed
        if rpm < quick:
            quickly = RATE_RECOVERY_PER_S * rpm * elapsed
            step = max(step, min(quick - rpm, quickly))
        self.rpm = min(rpm + step, ceiling)

    def _recent_peak(self, now: float, events: EventHistory) -> float:
        """About the highest goodput (per minute, over RATE_RECOVERY_SPAN_S, not clipped to the run's
        age: the burst a bucket allows at the start does not inflate it) of the last minute."""
        goodput = events.ok.per_minute(now, RATE_RECOVERY_SPAN_S)
        if goodput >= self._peak[0] or now - self._peak[1] > HISTORY_S:
            self._peak = (goodput, now)
        return self._peak[0]


def aim_at_delivered(
    pace: float, delivered: float, span_s: float, srtt: float | None, since_last: float, burst_s: float
) -> float:
    """The rate a burst under ``pace`` overloaded: in an overload the endpoint delivers its limit, so
    aim below the ``delivered`` rate (per minute, over ``span_s``) rather than just below the pace,
    which may have overshot far (a deep bucket lets a probe run ahead before the first 429; an
    overload taken for noise holds the 429 share up). Completions lag sends by a latency and few of
    them say little: an untrusted rate counts only when the burst outlived the last cut (``since_last``
    within BURST_CONTINUES windows of ``burst_s``), and not below GOODPUT_FLOOR x pace."""
    trusted = (srtt or 0.0) <= span_s and delivered * span_s / 60.0 >= MIN_DELIVERED_SAMPLES
    if trusted or since_last < BURST_CONTINUES * burst_s:
        floor = TRUSTED_GOODPUT_FLOOR if trusted else GOODPUT_FLOOR
        return min(pace, max(delivered, floor * pace))
    return pace


def min_or_none(a: float | None, b: float | None, c: float | None = None) -> float | None:
    """The smallest of the limits given (None: no limit); the same as ``min`` of those present (the
    first of equals), without building a list (called several times per answer)."""
    if b is not None and (a is None or b < a):
        a = b
    if c is not None and (a is None or c < a):
        a = c
    return a
