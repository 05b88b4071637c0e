"""Adaptive concurrency and pacing for one endpoint: a pure state machine (L2, stdlib only).

The dispatcher reports every request and outcome, and applies what the controller recommends::

    ctl.on_send()                                        # each request sent (optional, recommended)
    ctl.on_success(latency_s, headers)                   # a 2xx answer
    ctl.on_congestion(headers, latency_s=latency_s)      # a 429 or 503 (overload); not other errors
    gate.limit = ctl.concurrency                         # ConcurrencyGate
    rate.set_rpm(ctl.rpm)                                # RequestRateLimiter (None = unlimited)
    tokens.set_rate(ctl.tpm / 60)                        # token bucket, when ctl.tpm is not None

Two regulators, because a rate limit is a RATE, and AIMD on concurrency alone saw-tooths (~75 % of
the limit):

* **Pace** (rpm) = the minimum of the user's hard cap; 97 % of ``x-ratelimit-limit-requests`` when
  the endpoint advertises it (97 % of ``x-ratelimit-limit-tokens`` for tpm), so a well-behaved API is
  paced before its first 429; and a *learned* pace, for endpoints that only answer 429:

  - It appears at the first congestion burst: 0.9 x the pace in force or, when nothing paced the
    requests yet, 0.9 x the rate they were being sent at (counted by ``on_send``; without it,
    estimated from completions, which lag at start-up), or at least at the recent goodput.
  - Each later burst multiplies it by 0.9 again. If a burst outlives the previous cut (within three
    windows) the pace overshot far — a deep bucket can hide the limit for seconds — so the cut aims
    at 0.9 x the rate the endpoint actually delivered (its limit, while it refuses the rest).
  - Between bursts it grows additively, by 1 % per second of the pace at which the last burst
    happened; once past that pace without a burst, the slope doubles every 5 s (up to 32x): the limit
    moved or was misjudged, so probe faster. It grows only while it is the binding limit, and beyond
    the last burst's pace never past 1.5 x the delivered rate, so an unused pace cannot store up a
    burst — while recovering up to the last burst's pace is always allowed (no stall).

  It settles in a narrow band under the limit: few 429s, and above 90 % of the limit on average.

* **Concurrency window** (cwnd): slow start from ``initial``, +1 per success (doubling per round
  trip, ack-clocked so that growth never releases a burst) until the first congestion signal or a
  latency plateau; then +1/cwnd per success (+1 per round trip). Growth also needs the verdict of
  the last window (``max(1 s, smoothed latency)``): no congestion, no latency plateau, rate-limit
  headers not nearly exhausted, and the window actually used (Little's law: completions x latency /
  window >= 40 % of cwnd), so a paced or idle window never inflates. Congestion multiplies cwnd by
  0.7. Latency: an average (EWMA) against a baseline, the lowest average seen, which may rise by
  0.1 %/s to follow a workload that really got slower; above 2x the baseline the server is queueing
  and growth stops; above 3x cwnd shrinks gently (x0.9 per window).

``concurrency`` is cwnd, but while a pace applies at least 1.5 x pace x latency + 2, so that the
window never throttles below the pace; always within [``min_concurrency``, ``max_concurrency``].

A burst counts once: decreases happen at most once per window of ``max(1 s, recent congestion
latency)``, however many requests it rejects. An answer with ``x-ratelimit-remaining-*: 0`` while no
advertised limit paces us is congestion before any 429; a ``remaining`` below 10 % of the largest
value seen stops growth. Floors (``min_concurrency``, ``min_rpm``) keep the endpoint from stalling;
user limits are never exceeded.

Simulated against a token bucket of 10/s, capacity 10, answering 429 beyond (120 s, latencies from
5 ms to 2 s, with and without headers, ``on_send`` used): 91-100 % of 600 rpm, 429s <= 4 %.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["AdaptiveController", "Snapshot"]

#: concurrency multiplier on a congestion signal
CWND_DECREASE = 0.7
#: concurrency multiplier per window while latency shows a deep queue
CWND_LATENCY_DECREASE = 0.9
#: pace multiplier on a congestion signal
RATE_DECREASE = 0.9
#: fraction of an advertised rate limit to use
HEADER_FRACTION = 0.97
#: learned pace grows by this fraction (of the pace at the last burst) per second
RATE_INCREASE_PER_S = 0.01
#: past the pace of the last burst, the increase doubles every this many seconds
RATE_PROBE_DOUBLING_S = 5.0
#: ... up to this factor (bounds the overshoot when a deep bucket hides the limit for a while)
RATE_PROBE_MAX_GAIN = 32.0
#: the learned pace may not run ahead of the delivered rate by more than this factor
RATE_AHEAD_OF_GOODPUT = 1.5
#: 429s within this many windows after a cut mean the cut was not enough
BURST_CONTINUES = 3.0
#: a decrease aims at the delivered rate, but not below this fraction of the pace in force ...
GOODPUT_FLOOR = 0.7
#: ... or this one, when the delivered rate is trustworthy (latency <= span, enough samples)
TRUSTED_GOODPUT_FLOOR = 0.25
MIN_DELIVERED_SAMPLES = 20
#: smoothed latency above this multiple of the baseline: the server queues, stop growing
LATENCY_PLATEAU = 2.0
#: ... above this multiple: shrink the window gently
LATENCY_QUEUE = 3.0
#: remaining below this fraction of the largest remaining seen stops growth
REMAINING_LOW = 0.1
#: concurrency >= this x pace x latency, so the window never throttles below the pace
PACE_HEADROOM = 1.5
#: ... plus this many, so one slow answer does not hold up a paced dispatcher
PACE_SLACK = 2
#: a window must have been this full (Little's law estimate / cwnd) to allow growth
MIN_UTILISATION = 0.4
#: the latency baseline may rise by this fraction per second
BASELINE_DRIFT_PER_S = 0.001
#: smoothing factor of the latency averages
LATENCY_ALPHA = 0.125
#: completions older than this are forgotten
HISTORY_S = 60.0


@dataclass(frozen=True)
class Snapshot:
    """What the controller recommends and why (formatted by a reporter, not here)."""

    concurrency: int
    rpm: float | None
    tpm: float | None
    decreases: int  #: congestion decreases (one per burst)
    slow_start: bool
    cwnd: float
    learned_rpm: float | None
    header_rpm_limit: float | None  #: advertised x-ratelimit-limit-requests
    header_tpm_limit: float | None  #: advertised x-ratelimit-limit-tokens
    latency_s: float | None  #: smoothed latency of successes
    baseline_latency_s: float | None
    goodput_rpm: float | None  #: successes per minute, recently


class _RateMeter:
    """Event times over the last ``HISTORY_S`` seconds; rates cached for 0.25 s (cheap per event)."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()
        self._cache: tuple[float, float, float] | None = None  # (at, span, rate per minute)

    def add(self, now: float) -> None:
        self._times.append(now)
        horizon = now - HISTORY_S
        while self._times[0] < horizon:
            self._times.popleft()

    def per_minute(self, now: float, span_s: float) -> float:
        cached = self._cache
        if cached is not None and 0.0 <= now - cached[0] < 0.25 and abs(cached[1] - span_s) <= 0.1 * span_s:
            return cached[2]
        count = 0
        for t in reversed(self._times):
            if t < now - span_s:
                break
            count += 1
        rate = count * 60.0 / span_s
        self._cache = (now, span_s, rate)
        return rate


class AdaptiveController:
    """Per-endpoint adaptive concurrency + pacing (see the module docstring).

    ``user_rpm`` / ``user_tpm`` are hard caps the recommendations never exceed. ``initial`` defaults to
    ``min(max_concurrency, 8)``. ``clock`` (seconds, monotonic) defaults to ``time.monotonic`` — the
    same clock as asyncio's default loop.
    """

    def __init__(
        self,
        max_concurrency: int,
        *,
        min_concurrency: int = 1,
        initial: int | None = None,
        user_rpm: float | None = None,
        user_tpm: float | None = None,
        min_rpm: float = 1.0,
        clock: Callable[[], float] | None = None,
    ):
        if _bad_int(min_concurrency) or min_concurrency < 1:
            raise ValueError(f"min_concurrency must be an int >= 1, got {min_concurrency!r}")
        if _bad_int(max_concurrency) or max_concurrency < min_concurrency:
            raise ValueError(f"max_concurrency must be an int >= min_concurrency, got {max_concurrency!r}")
        if initial is None:
            initial = min(max_concurrency, 8)
        if _bad_int(initial) or not min_concurrency <= initial <= max_concurrency:
            raise ValueError(f"initial must be an int in [min_concurrency, max_concurrency], got {initial!r}")
        for name, value in (("user_rpm", user_rpm), ("user_tpm", user_tpm), ("min_rpm", min_rpm)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number or None, got {value!r}")
        self.max_concurrency = max_concurrency
        self.min_concurrency = min_concurrency
        self.user_rpm = user_rpm
        self.user_tpm = user_tpm
        self.min_rpm = min(min_rpm, user_rpm) if user_rpm is not None else min_rpm
        self._clock = clock or time.monotonic

        # concurrency window
        self._cwnd = float(initial)
        self._slow_start = True
        self._growth_ok = True  # verdict of the last window
        self._decreases = 0
        self._last_decrease = -math.inf
        self._win_start: float | None = None
        self._win_ok = 0
        self._win_dirty = False
        # latency
        self._srtt: float | None = None
        self._samples = 0
        self._baseline: float | None = None
        self._baseline_at = 0.0
        self._congestion_latency: float | None = None
        # pacing
        self._learned_rpm: float | None = None
        self._learned_ref = 0.0  # pace at the last burst: scale of the increase
        self._above_ref_since: float | None = None
        self._pace_updated: float | None = None
        self._header_rpm_limit: float | None = None
        self._header_tpm_limit: float | None = None
        self._max_remaining: dict[str, float] = {}
        self._remaining_low = False
        # history
        self._ok = _RateMeter()
        self._outcomes = _RateMeter()
        self._sent = _RateMeter()
        self._sends_reported = False
        self._first_send: float | None = None

    # -- recommendations ------------------------------------------------------------------------
    @property
    def concurrency(self) -> int:
        window = self._cwnd
        pace = self.rpm
        if pace is not None and self._srtt is not None:
            window = max(window, math.ceil(PACE_HEADROOM * pace / 60.0 * self._srtt) + PACE_SLACK)
        return int(min(self.max_concurrency, max(self.min_concurrency, window)))

    @property
    def rpm(self) -> float | None:
        return _min_or_none(self.user_rpm, self._header_rpm(), self._learned_rpm)

    @property
    def tpm(self) -> float | None:
        header = None if self._header_tpm_limit is None else HEADER_FRACTION * self._header_tpm_limit
        return _min_or_none(self.user_tpm, header)

    @property
    def decreases(self) -> int:
        return self._decreases

    @property
    def slow_start(self) -> bool:
        return self._slow_start

    def snapshot(self) -> Snapshot:
        return Snapshot(
            concurrency=self.concurrency,
            rpm=self.rpm,
            tpm=self.tpm,
            decreases=self._decreases,
            slow_start=self._slow_start,
            cwnd=self._cwnd,
            learned_rpm=self._learned_rpm,
            header_rpm_limit=self._header_rpm_limit,
            header_tpm_limit=self._header_tpm_limit,
            latency_s=self._srtt,
            baseline_latency_s=self._baseline,
            goodput_rpm=self._goodput_rpm(self._clock()),
        )

    # -- events ---------------------------------------------------------------------------------
    def on_send(self) -> None:
        """A request was sent. Optional but recommended: the controller then knows the send rate
        exactly at the first burst (otherwise it estimates it from completions, which lag)."""
        now = self._clock()
        if self._first_send is None:
            self._first_send = now
        self._sends_reported = True
        self._sent.add(now)

    def on_success(self, latency_s: float, headers: Mapping[str, str] | None = None) -> None:
        """A usable answer arrived ``latency_s`` seconds after its request was sent."""
        now = self._clock()
        latency_s = _latency(latency_s) or 0.0
        self._record(now, latency_s, ok=True)
        self._update_latency(now, latency_s)
        exhausted = self._learn_headers(headers or {})
        if exhausted and self._header_rpm_limit is None:
            self._congestion(now)  # the next request would be refused and nothing paces us yet
        if exhausted or self._remaining_low or self._plateau():
            self._win_dirty = True
        elif self._growth_ok:
            # ack-clocked: slow start +1 per success, congestion avoidance +1 per round trip
            step = 1.0 if self._slow_start else 1.0 / self._cwnd
            self._cwnd = min(float(self.max_concurrency), self._cwnd + step)
        self._grow_pace(now)
        self._close_window(now)

    def on_congestion(self, headers: Mapping[str, str] | None = None, *, latency_s: float | None = None) -> None:
        """A 429 or 503 (overload) answer arrived, ``latency_s`` after its request was sent."""
        now = self._clock()
        latency = _latency(latency_s)
        self._record(now, latency or 0.0, ok=False)
        if latency is not None:
            prev = self._congestion_latency
            self._congestion_latency = latency if prev is None else prev + LATENCY_ALPHA * (latency - prev)
        self._learn_headers(headers or {})
        self._congestion(now)
        self._close_window(now)

    # -- internals: measurement -----------------------------------------------------------------
    def _record(self, now: float, latency_s: float, *, ok: bool) -> None:
        sent = now - latency_s
        if self._first_send is None or sent < self._first_send:
            self._first_send = sent
        if self._win_start is None:
            self._win_start = now
        self._outcomes.add(now)
        if ok:
            self._ok.add(now)
            self._win_ok += 1

    def _span(self, now: float, span_s: float) -> float:
        """``span_s`` clipped to the run's age (but at least 1 s), so early rates are not diluted."""
        age = now - (self._first_send if self._first_send is not None else now)
        return max(1.0, min(span_s, age, HISTORY_S))

    def _goodput_rpm(self, now: float) -> float | None:
        if self._first_send is None:
            return None
        return self._ok.per_minute(now, self._span(now, max(3.0, self._srtt or 0.0)))

    def _offered_rpm(self, now: float) -> float | None:
        """The rate requests are being sent at: counted by ``on_send`` or, failing that, estimated
        from completions of every kind (bounded by cwnd / latency)."""
        if self._first_send is None:
            return None
        span = self._span(now, max(1.0, min(self._srtt or 0.0, 5.0)))
        if self._sends_reported:
            return self._sent.per_minute(now, span) or None
        rate = self._outcomes.per_minute(now, span)
        if self._srtt:
            rate = min(rate, self._cwnd / self._srtt * 60.0)
        return rate or None

    def _update_latency(self, now: float, latency_s: float) -> None:
        self._samples += 1
        srtt = latency_s if self._srtt is None else self._srtt + LATENCY_ALPHA * (latency_s - self._srtt)
        self._srtt = srtt
        if self._samples < 4:
            return  # let the average settle before it becomes the baseline
        if self._baseline is None:
            self._baseline = srtt
        else:
            drifted = self._baseline * (1.0 + BASELINE_DRIFT_PER_S * max(0.0, now - self._baseline_at))
            self._baseline = min(drifted, srtt)
        self._baseline_at = now

    def _latency_ratio(self) -> float:
        if self._baseline is None or self._srtt is None:
            return 1.0
        return self._srtt / max(self._baseline, 1e-3)

    def _plateau(self) -> bool:
        return self._latency_ratio() > LATENCY_PLATEAU

    def _learn_headers(self, headers: Mapping[str, str]) -> bool:
        """Learn advertised limits; True when a ``remaining`` counter says the limit is exhausted."""
        exhausted = False
        low = False
        seen_remaining = False
        for kind in ("requests", "tokens"):
            limit = _number(headers.get(f"x-ratelimit-limit-{kind}"))
            if limit is not None and limit > 0:
                if kind == "requests":
                    self._header_rpm_limit = limit
                else:
                    self._header_tpm_limit = limit
            remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
            if remaining is None:
                continue
            seen_remaining = True
            # judged against the largest value seen, not the advertised limit: some servers count
            # a short burst bucket (0-10) under a per-minute limit (600)
            most = max(self._max_remaining.get(kind, 0.0), remaining)
            self._max_remaining[kind] = most
            exhausted = exhausted or remaining <= 0
            low = low or remaining < REMAINING_LOW * most
        if seen_remaining:
            self._remaining_low = low
        return exhausted

    def _header_rpm(self) -> float | None:
        return None if self._header_rpm_limit is None else HEADER_FRACTION * self._header_rpm_limit

    # -- internals: decisions -------------------------------------------------------------------
    def _decrease_window_s(self) -> float:
        recent = self._congestion_latency
        if recent is None:
            recent = min(self._srtt or 0.0, 5.0)
        return max(1.0, recent)

    def _congestion(self, now: float) -> None:
        self._win_dirty = True
        self._growth_ok = False
        self._slow_start = False
        window = self._decrease_window_s()
        since_last = now - self._last_decrease
        if since_last < window:
            return  # the same burst: decrease once
        self._last_decrease = now
        self._decreases += 1
        self._cwnd = max(float(self.min_concurrency), self._cwnd * CWND_DECREASE)
        basis = _min_or_none(self._header_rpm(), self._learned_rpm)
        if basis is None:
            # the rate we were sending at; at least what the endpoint just delivered (the send rate
            # of the last second says little if the dispatcher had paused)
            offered, delivered = self._offered_rpm(now), self._goodput_rpm(now)
            basis = max(offered or 0.0, delivered or 0.0) or None
        elif since_last < BURST_CONTINUES * window and self._first_send is not None:
            # the burst outlived the last cut: the pace overshot far (a deep bucket lets a probe run
            # ahead before the first 429). In a sustained burst the endpoint delivers its limit, so
            # aim below the delivered rate rather than just below the pace.
            span = self._span(now, max(window, 2.0))
            delivered = self._ok.per_minute(now, span)
            # completions lag sends by a latency; few completions say little
            trusted = (self._srtt or 0.0) <= span and delivered * span / 60.0 >= MIN_DELIVERED_SAMPLES
            floor = TRUSTED_GOODPUT_FLOOR if trusted else GOODPUT_FLOOR
            basis = min(basis, max(delivered, floor * basis))
        if basis is None:
            return  # no rate known yet (the very first answers were 429s): the window does the work
        if self.user_rpm is not None:
            basis = min(basis, self.user_rpm)
        self._learned_ref = basis
        self._learned_rpm = max(self.min_rpm, RATE_DECREASE * basis)
        self._above_ref_since = None
        self._pace_updated = now

    def _grow_pace(self, now: float) -> None:
        if self._learned_rpm is None:
            return
        last, self._pace_updated = self._pace_updated, now
        if last is None or self._remaining_low or now - self._last_decrease < self._decrease_window_s():
            return
        others = _min_or_none(self.user_rpm, self._header_rpm())
        if others is not None and self._learned_rpm >= others:
            return  # another limit governs; nothing to probe
        # recovering up to the pace of the last burst is always allowed (no stall); beyond it,
        # the pace may not run far ahead of what is delivered, or an unused pace stores up a burst
        ceiling = max(self._learned_ref, RATE_AHEAD_OF_GOODPUT * (self._goodput_rpm(now) or 0.0))
        if self._learned_rpm >= ceiling:
            return
        slope = RATE_INCREASE_PER_S * self._learned_ref
        if self._learned_rpm >= self._learned_ref:
            if self._above_ref_since is None:
                self._above_ref_since = now
            slope *= min(2.0 ** ((now - self._above_ref_since) / RATE_PROBE_DOUBLING_S), RATE_PROBE_MAX_GAIN)
        self._learned_rpm = min(self._learned_rpm + slope * max(0.0, now - last), ceiling)

    def _close_window(self, now: float) -> None:
        start = self._win_start
        if start is None:
            return
        elapsed = now - start
        if elapsed < max(1.0, self._srtt or 0.0):
            return
        in_flight = self._win_ok * (self._srtt or 0.0) / elapsed  # Little's law
        ratio = self._latency_ratio()
        if ratio > LATENCY_PLATEAU:
            self._slow_start = False  # the server queues: leave slow start (HyStart-like)
        if ratio > LATENCY_QUEUE:
            self._cwnd = max(float(self.min_concurrency), self._cwnd * CWND_LATENCY_DECREASE)
        self._growth_ok = (
            not self._win_dirty and ratio <= LATENCY_PLATEAU and in_flight >= MIN_UTILISATION * self._cwnd
        )
        self._win_start = now
        self._win_ok = 0
        self._win_dirty = False


def _min_or_none(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _number(raw: object) -> float | None:
    if not isinstance(raw, str):
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _latency(value: float | None) -> float | None:
    if value is None or isinstance(value, bool) or not math.isfinite(value):
        return None
    return max(0.0, float(value))


def _bad_int(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)
