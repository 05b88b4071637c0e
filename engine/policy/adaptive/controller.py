"""Adaptive concurrency and pacing for one endpoint: a pure state machine composed of small ones (L2:
stdlib, and the header numbers of engine.policy.ratelimit_headers). The dispatcher reports every
request and outcome, and applies what the controller recommends::

    ctl.on_send()                                        # each request sent (optional, recommended)
    ctl.on_success(latency_s, headers)                   # a 2xx answer
    ctl.on_congestion(headers, latency_s=latency_s)      # a 429 or 503 (overload); not other errors
    gate.limit = ctl.concurrency                         # ConcurrencyGate
    rate.set_rpm(ctl.rpm)                                # RequestRateLimiter (None = unlimited)
    tokens.set_rate(ctl.tpm / 60)                        # token bucket, when ctl.tpm is not None

Two regulators, because a rate limit is a RATE, and AIMD on concurrency alone saw-tooths (~75 % of
the limit): the **pace** (rpm) is the minimum of the user's hard cap, 97 % of an advertised limit
(headers.py) and a pace learned from 429 bursts (pace.py); the **concurrency window** (window.py)
grows like TCP's and shrinks on congestion or a deep queue (latency.py). ``concurrency`` is cwnd,
but while a pace applies at least 1.5 x pace x latency + 2, so that the window never throttles below
the pace; always within [``min_concurrency``, ``max_concurrency``]. A 429/503 is a congestion signal
only when it is not noise (noise.py: the share of refusals the endpoint returns whatever the load);
the other 429s are retried by the dispatcher and shrink nothing, not even the next window's growth.
A burst counts once: decreases happen at most once per window of ``max(1 s, recent congestion
latency)``, however many requests it rejects. An answer with ``x-ratelimit-remaining-*: 0`` while no
advertised limit paces us is congestion before any 429. Floors (``min_concurrency``, ``min_rpm``)
keep the endpoint from stalling; user limits are never exceeded. The rates come from the last
minute of events (events.py).

Simulated on the fake loop clock (the harness of tests/test_adaptive.py, 120 s, 30 seeds):

* token bucket 10/s, capacity 10, 429 beyond, 50 ms answers: with headers 96-97 % of 600 rpm, 0.6 %
  429s; without, 98-100 % (median 99 %) and 4 % 429s (at most 6 %). With answers of 5 ms / 1 s / 2 s
  and no headers: at least 94 / 95 / 93 % of 600 rpm, 429s 8 / 5 / 5 % (at most 20 / 6 / 7 %: the
  20 % is one start-up overload taken for noise, at 1.2x the limit, in 30 runs).
* the same, 50 ms, with 5 % of requests refused at random on top: 89 % of 600 rpm at worst (median
  95 %), 11 % 429s (the noise and ~6 % of overload); with 10 % noise: 80 % at worst (median 89 %).
* no limit, answers of 5-200 ms, 128 allowed in flight, 5 % or 10 % of requests refused at random
  (429 or 503): no decrease, concurrency 128, 99.5 % of the throughput 128 in flight allow.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from engine.policy.adaptive.events import EventHistory
from engine.policy.adaptive.headers import AdvertisedLimits
from engine.policy.adaptive.latency import LatencyEstimator
from engine.policy.adaptive.noise import NOISE_SAMPLE_S, NoiseFloor
from engine.policy.adaptive.pace import DELIVERED_SPAN_S, LearnedPace, aim_at_delivered, min_or_none
from engine.policy.adaptive.window import CongestionWindow

__all__ = ["AdaptiveController", "Snapshot"]

#: concurrency >= this x pace x latency, so the window never throttles below the pace
PACE_HEADROOM = 1.5
#: ... plus this many, so one slow answer does not hold up a paced dispatcher
PACE_SLACK = 2
_INF = math.inf


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
        # the settings (read-only: the parts below keep what they need of them)
        self.max_concurrency: Final = max_concurrency
        self.min_concurrency: Final = min_concurrency
        self.user_rpm: Final = user_rpm
        self.user_tpm: Final = user_tpm
        self.min_rpm: Final = min(min_rpm, user_rpm) if user_rpm is not None else min_rpm
        self._clock = clock or time.monotonic
        self._window = CongestionWindow(initial, min_concurrency, max_concurrency)
        self._latency = LatencyEstimator()
        self._pace = LearnedPace(user_rpm, self.min_rpm)
        self._limits = AdvertisedLimits()
        self._events = EventHistory()
        self._noise = NoiseFloor(self._load)
        # the pace and token rate recommended: they change only when a limit is learned, cut or grown
        # (_rates_changed), while they are read several times per answer
        self._rpm: float | None = None
        self._tpm: float | None = None
        self._rates_changed()

    # -- recommendations ------------------------------------------------------------------------
    @property
    def concurrency(self) -> int:
        return self._concurrency(self._rpm)

    @property
    def rpm(self) -> float | None:
        return self._rpm

    @property
    def tpm(self) -> float | None:
        return self._tpm

    @property
    def decreases(self) -> int:
        return self._window.decreases

    @property
    def slow_start(self) -> bool:
        return self._window.slow_start

    def snapshot(self) -> Snapshot:
        latency = self._latency
        return Snapshot(
            concurrency=self.concurrency,
            rpm=self.rpm,
            tpm=self.tpm,
            decreases=self._window.decreases,
            slow_start=self._window.slow_start,
            cwnd=self._window.cwnd,
            learned_rpm=self._pace.rpm,
            header_rpm_limit=self._limits.rpm_limit,
            header_tpm_limit=self._limits.tpm_limit,
            latency_s=latency.srtt,
            baseline_latency_s=latency.baseline,
            goodput_rpm=self._events.goodput_rpm(self._clock(), latency.srtt),
        )

    # -- events ---------------------------------------------------------------------------------
    def on_send(self) -> None:
        """A request was sent. Optional but recommended: the controller then knows the send rate
        exactly at the first burst (otherwise it estimates it from completions, which lag)."""
        self._events.on_send(self._clock())

    def on_success(self, latency_s: float, headers: Mapping[str, str] | None = None) -> None:
        """A usable answer arrived ``latency_s`` seconds after its request was sent."""
        now = self._clock()
        # (the common case of a finite, positive latency without a call)
        latency_s = latency_s if latency_s.__class__ is float and 0.0 < latency_s < _INF else (
            _latency(latency_s) or 0.0)
        self._record(now, latency_s, True)
        latency = self._latency
        latency.on_success(now, latency_s)
        limits = self._limits
        exhausted = False
        if headers:
            changes = limits.changes
            exhausted = limits.learn(headers)
            if limits.changes != changes:
                self._rates_changed()
            if exhausted and limits.rpm_limit is None:
                self._congestion(now)  # the next request would be refused and nothing paces us yet
        window = self._window
        window.on_success(exhausted or limits.remaining_low or latency.plateau())
        if self._pace.rpm is not None:
            self._grow_pace(now)
        window.close(now, latency)

    def on_congestion(self, headers: Mapping[str, str] | None = None, *, latency_s: float | None = None) -> None:
        """A 429 or 503 (overload) answer arrived, ``latency_s`` after its request was sent."""
        now = self._clock()
        latency = _latency(latency_s)
        self._record(now, latency or 0.0, False)
        if latency is not None:
            self._latency.on_congestion(latency)
        limits = self._limits
        changes = limits.changes
        exhausted = limits.learn(headers or {})
        if limits.changes != changes:
            self._rates_changed()
        # (within the window of the last decrease: the same burst, which counts once)
        if (
            exhausted
            or now - self._window.last_decrease < self._latency.decrease_window_s()
            or self._overloaded(now)
        ):
            self._congestion(now)
        self._window.close(now, self._latency)

    # -- internals ------------------------------------------------------------------------------
    def _record(self, now: float, latency_s: float, ok: bool) -> None:
        self._events.on_answer(now, latency_s, ok)
        self._window.on_answer(now, ok)
        # blocks of the noise floor leave out answers to requests sent before the last decrease
        if now - self._window.last_decrease >= self._latency.drain_s():
            self._noise.add(now, ok)

    def _rates_changed(self) -> None:
        """A limit was learned, cut or grown: the pace and token rate recommended now."""
        pace, limits = self._pace, self._limits
        self._rpm = min_or_none(pace.user_rpm, limits.rpm(), pace.rpm)
        self._tpm = min_or_none(self.user_tpm, limits.tpm())

    def _concurrency(self, pace: float | None) -> int:
        """cwnd, but at least enough for ``pace`` (the rpm recommended) at the current latency."""
        # (max(a, b) is ``b if b > a else a`` and min(a, b) ``b if b < a else a``: the same values,
        # without building argument tuples, a few times per answer)
        window = self._window
        cwnd: float = window.cwnd
        srtt = self._latency.srtt
        if pace is not None and srtt is not None:
            floor = math.ceil(PACE_HEADROOM * pace / 60.0 * srtt) + PACE_SLACK
            if floor > cwnd:
                cwnd = floor
        least: float = window.min_concurrency
        if cwnd > least:
            least = cwnd
        most = window.max_concurrency
        return int(least if least < most else most)

    def _load(self) -> float:
        """The request rate the recommendations allow (per minute)."""
        rpm = self._rpm
        srtt = self._latency.srtt
        window = self._concurrency(rpm) / srtt * 60.0 if srtt else math.inf
        if rpm is None:
            return window  # (min(window, inf))
        return rpm if rpm < window else window

    def _overloaded(self, now: float) -> bool:
        """The recent 429/503 share (after the drain of the last decrease) is clearly above the noise."""
        latency = self._latency
        after_drain = now - self._window.last_decrease - latency.drain_s()
        span = min(max(latency.decrease_window_s(), NOISE_SAMPLE_S), after_drain)
        if span <= 0:
            return False  # answers to requests sent before the last decrease: no new evidence
        events = self._events
        return self._noise.exceeds(events.outcomes.count(now, span), events.congested.count(now, span))

    def _congestion(self, now: float) -> None:
        """A congestion signal: the window stops growing; a new burst decreases it and cuts the pace."""
        latency = self._latency
        burst_s = latency.decrease_window_s()
        since_last = self._window.on_congestion(now, burst_s)
        if since_last is None:
            return  # the same burst: decrease once
        events = self._events
        span = events.span(now, max(burst_s, DELIVERED_SPAN_S))
        delivered = events.ok.per_minute(now, span)
        self._noise.on_decrease(now, delivered)
        basis = min_or_none(self._limits.rpm(), self._pace.rpm)
        if basis is None:
            # the rate we were sending at; at least what the endpoint just delivered (the send rate
            # of the last second says little if the dispatcher had paused)
            offered = events.offered_rpm(now, latency.srtt, self._window.cwnd)
            goodput = events.goodput_rpm(now, latency.srtt)
            basis = max(offered or 0.0, goodput or 0.0) or None
        else:
            basis = aim_at_delivered(basis, delivered, span, latency.srtt, since_last, burst_s)
        if basis is None:
            return  # no rate known yet (the very first answers were 429s): the window does the work
        self._pace.cut(now, basis)
        self._rates_changed()

    def _grow_pace(self, now: float) -> None:
        pace = self._pace
        last = pace.touch(now)
        if (
            last is None
            or self._limits.remaining_low
            or now - self._window.last_decrease < self._latency.decrease_window_s()
        ):
            return  # nothing learned to grow, or not while a limit runs low or a burst lasts
        pace.grow(now, last, self._limits.rpm(), self._events, self._latency.srtt)
        self._rates_changed()


def _latency(value: float | None) -> float | None:
    if value is None or isinstance(value, bool) or not math.isfinite(value):
        return None
    return max(0.0, float(value))


def _bad_int(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)
