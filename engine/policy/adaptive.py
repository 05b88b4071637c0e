"""Adaptive concurrency and pacing for one endpoint: a pure state machine (L2: stdlib, and the header
numbers of engine.policy.ratelimit_headers).

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
  - Each later burst multiplies it by 0.9 again — or aims at 0.9 x the rate the endpoint actually
    delivered (its limit, while it refuses the rest) when that is lower: when measured on enough
    answers (20, over 5 s), or when the burst outlives the previous cut (within three windows: the
    pace overshot far, a deep bucket can hide the limit for seconds).
  - Between bursts it grows additively, by 1 % per second of the pace at which the last burst
    happened; once past that pace without a burst, the slope doubles every 5 s (up to 32x): the limit
    moved or was misjudged, so probe faster. It grows only while it is the binding limit, and beyond
    the last burst's pace never past 1.5 x the delivered rate, so an unused pace cannot store up a
    burst — while recovering up to the last burst's pace is always allowed (no stall). Below 0.9 x
    the best goodput of the last minute (over 10 s) it grows by at least 10 % per second: a cut that
    went too far (noise taken for overload, the burst a bucket allows at the start) costs seconds.

  It settles in a narrow band under the limit: few 429s, and above 90 % of the limit on average.

* **Concurrency window** (cwnd): slow start from ``initial``, +1 per success (doubling per round
  trip, ack-clocked so that growth never releases a burst) until the first congestion signal or a
  latency plateau; then +1/cwnd per success (+1 per round trip). Growth also needs the verdict of
  the last window (``max(1 s, smoothed latency)``): no congestion, no latency plateau, rate-limit
  headers not nearly exhausted, and the window actually used (Little's law: completions x latency /
  window >= 40 % of cwnd), so a paced or idle window never inflates. Congestion multiplies cwnd by
  0.7. Latency: an average (EWMA, 1/8) against a baseline; above 2x the baseline the server is
  queueing and growth stops; above 3x cwnd shrinks gently (x0.9 per window); neither counts while
  the average is less than 50 ms above the baseline (answers in milliseconds triple in latency from
  a garbage collection on our side; at zero latency the window used to fall to 1). The baseline is the
  lowest value of a slower average (1/64, from 16 answers on) that takes the answers in the order
  their requests were sent, each once its peers had as long as the slowest recent answer: in the
  order they arrive, the fast ones come first while the window grows, and with latencies spread
  from 5 ms to 200 ms a baseline from them sits at a quarter of the mean — a "queue" that shrinks
  the window for nothing. It may rise by 0.1 %/s to follow a workload that really got slower; and
  when three decreases in a row did not shorten the answers by 10 %, the latency is no queue of
  ours: the baseline restarts from the current slow average.

``concurrency`` is cwnd, but while a pace applies at least 1.5 x pace x latency + 2, so that the
window never throttles below the pace; always within [``min_concurrency``, ``max_concurrency``].

**Noise is not congestion.** Some endpoints refuse a share of requests whatever the load (a flaky
gateway, another tenant's burst). Obeying each such 429/503 ratchets the pace and the window down to
a stall: every window has one, and each cut takes ten seconds to recover. A real limit responds to
the load — sending slower lowers the share of 429s — noise does not. So the controller measures the
share at several loads: answers are grouped in blocks (30 answers and 1 s, cut short by a decrease,
leaving out the drain after it) of requests sent at one load (the rate the recommendations allowed),
and the **noise floor** is the 429/503 share of the blocks at the lowest loads, pooled up to 100
answers (blocks above 20 % are overloads, not noise; the 20 blocks at the lowest loads of the last
two minutes are kept). A 429/503 is a congestion signal only when the share of the recent answers
(the last 3 s, or decrease window, after the drain of the last decrease; at least 5 answers) exceeds
the floor by 3 points and one answer, and so many 429s would be a 1-in-1000 draw of the noise (exact
binomial tail, at the floor plus one standard deviation of its own measurement) — or, with a floor
of 0 measured on 100 answers, whenever they are 3 % of the answers: without noise every 429 counts,
as before. Before the first block only an evident overload counts (a floor of 20 %); while the floor
rests on fewer than 100 answers and the load is above 95 % of the goodput at the last decrease, every
429 counts (a start above a limit: keep cutting until a lower load is measured). The other 429s are
retried by the dispatcher and shrink nothing, not even the next window's growth. Limits: an overload
that never went below the limit after the start can pass for noise while the floor is measured only
above it (the pace then probes on, and the next decrease aims at the delivered rate); and noise
above 20 % counts as overload.

A burst counts once: decreases happen at most once per window of ``max(1 s, recent congestion
latency)``, however many requests it rejects. An answer with ``x-ratelimit-remaining-*: 0`` while no
advertised limit paces us is congestion before any 429; a ``remaining`` below 10 % of the largest
value seen stops growth. Floors (``min_concurrency``, ``min_rpm``) keep the endpoint from stalling;
user limits are never exceeded.

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

import bisect
import heapq
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from engine.policy.ratelimit_headers import header_number

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
#: smoothed latency above this multiple of the baseline: the server queues, stop growing
LATENCY_PLATEAU = 2.0
#: ... above this multiple: shrink the window gently
LATENCY_QUEUE = 3.0
#: ... but only when the latency is also this much above the baseline in absolute terms: with answers
#: in a few milliseconds, a garbage collection or a disk flush on our side triples the latency
LATENCY_MIN_EXCESS_S = 0.05
#: remaining below this fraction of the largest remaining seen stops growth
REMAINING_LOW = 0.1
#: concurrency >= this x pace x latency, so the window never throttles below the pace
PACE_HEADROOM = 1.5
#: ... plus this many, so one slow answer does not hold up a paced dispatcher
PACE_SLACK = 2
#: a window must have been this full (Little's law estimate / cwnd) to allow growth
MIN_UTILISATION = 0.4
#: after this many queue decreases in a row, the latency must have fallen below QUEUE_RESPONSE x its
#: value at the first; otherwise the latency is not a queue of ours and the baseline is reset
QUEUE_PATIENCE = 3
QUEUE_RESPONSE = 0.9
#: the latency baseline may rise by this fraction per second
BASELINE_DRIFT_PER_S = 0.001
#: smoothing factor of the latency averages
LATENCY_ALPHA = 0.125
#: completions older than this are forgotten
HISTORY_S = 60.0
#: a 429/503 is a congestion signal only when the 429/503 share of the recent answers (the last
#: max(NOISE_SAMPLE_S, decrease window) seconds, after the drain of the last decrease; at least
#: NOISE_MIN_SAMPLE answers) exceeds the noise floor by NOISE_MARGIN and one answer, and that many
#: 429s would be a draw of probability < NOISE_ALPHA from the noise (binomial, at the floor plus
#: one standard deviation of its measurement); with a floor of 0 measured on NOISE_FLOOR_OUTCOMES
#: answers, every 429 counts (as long as they are NOISE_MARGIN of the answers)
NOISE_MARGIN = 0.03
NOISE_ALPHA = 1e-3
NOISE_SAMPLE_S = 3.0
NOISE_MIN_SAMPLE = 5
#: the floor's evidence: blocks of NOISE_BLOCK answers (and 1 s) to requests sent at one load, the
#: NOISE_BLOCKS at the lowest loads of the last NOISE_MEMORY_S seconds
NOISE_BLOCK = 30
NOISE_BLOCKS = 20
NOISE_MEMORY_S = 120.0
#: the floor: the 429/503 share of the blocks at the lowest loads, pooled up to NOISE_FLOOR_OUTCOMES
#: answers, leaving out blocks above NOISE_MAX (an overload, not noise)
NOISE_FLOOR_OUTCOMES = 100
NOISE_MAX = 0.2
#: ... but 0 (every 429 counts) while the floor has fewer answers and the load is above this fraction
#: of the goodput at the last decrease: maybe still at the limit
NOISE_AT_LIMIT = 0.95
#: the latency baseline is the lowest slow average (this smoothing, at least this many samples)
BASELINE_ALPHA = 1.0 / 64
BASELINE_MIN_SAMPLES = 16
#: per answer, the slowest recent latency (how long the baseline waits for a request's peers) decays by
LATENCY_MAX_DECAY = 1.0 - 1.0 / 256
#: ... and no more answers than this wait (memory)
LATENCY_PENDING_MAX = 10_000


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
    """Event times over the last ``HISTORY_S`` seconds (the clock never goes back); counts by
    bisection, rates cached for 0.25 s (cheap per event)."""

    def __init__(self) -> None:
        self._times: list[float] = []
        self._first = 0  # index of the oldest event kept
        self._cache: dict[float, tuple[float, float]] = {}  # span (0.1 s) -> (at, rate per minute)

    def add(self, now: float) -> None:
        times = self._times
        times.append(now)
        horizon = now - HISTORY_S
        if times[self._first] < horizon:
            self._first = bisect.bisect_left(times, horizon, self._first)
            if self._first > 1024 and self._first * 2 > len(times):
                del times[: self._first]
                self._first = 0

    def count(self, now: float, span_s: float) -> int:
        """Exact number of events in the last ``span_s`` seconds (no cache)."""
        return len(self._times) - bisect.bisect_left(self._times, now - span_s, self._first)

    def per_minute(self, now: float, span_s: float) -> float:
        key = round(span_s, 1)
        cached = self._cache.get(key)
        if cached is not None and 0.0 <= now - cached[0] < 0.25:
            return cached[1]
        rate = self.count(now, span_s) * 60.0 / span_s
        if len(self._cache) > 16:
            self._cache.clear()
        self._cache[key] = (now, rate)
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
        self._slow_latency: float | None = None
        self._latency_max = 0.0
        self._unsorted: list[tuple[float, float]] = []  # heap of (sent at, latency) for the baseline
        self._samples = 0
        self._baseline: float | None = None
        self._baseline_at = 0.0
        self._queue_srtt: float | None = None  # latency when the current run of queue decreases began
        self._queue_windows = 0
        self._congestion_latency: float | None = None
        # pacing
        self._learned_rpm: float | None = None
        self._learned_ref = 0.0  # pace at the last burst: scale of the increase
        self._above_ref_since: float | None = None
        self._pace_updated: float | None = None
        self._peak: tuple[float, float] = (0.0, -math.inf)  # (goodput per minute, when)
        self._delivered_before_cut: float | None = None  # goodput (per minute) at the last decrease
        self._header_rpm_limit: float | None = None
        self._header_tpm_limit: float | None = None
        self._max_remaining: dict[str, float] = {}
        self._remaining_low = False
        # history
        self._ok = _RateMeter()
        self._outcomes = _RateMeter()
        self._sent = _RateMeter()
        self._congested = _RateMeter()
        self._sends_reported = False
        # noise floor: 429/503 share per block of answers
        self._blk_start: float | None = None
        self._blk_n = 0
        self._blk_bad = 0
        self._blk_load = math.inf
        self._blocks: list[_Block] = []
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
        self._congested.add(now)
        exhausted = self._learn_headers(headers or {})
        # (within the window of the last decrease: the same burst, which counts once)
        if exhausted or now - self._last_decrease < self._decrease_window_s() or self._overloaded(now):
            self._congestion(now)
        self._close_window(now)

    # -- internals: overload or noise (see the module docstring) --------------------------------
    def _overloaded(self, now: float) -> bool:
        """The recent 429/503 share is clearly above the noise floor."""
        after_drain = now - self._last_decrease - self._drain_s()
        span = min(max(self._decrease_window_s(), NOISE_SAMPLE_S), after_drain)
        if span <= 0:
            return False  # answers to requests sent before the last decrease: no new evidence
        n, bad = self._outcomes.count(now, span), self._congested.count(now, span)
        floor, measured = self._noise_floor()
        if floor == 0.0 and measured >= NOISE_FLOOR_OUTCOMES:
            return bad >= max(1.0, NOISE_MARGIN * n)  # no noise: every 429 counts (a few at a high load)
        if n < NOISE_MIN_SAMPLE or bad - n * floor < 1.0 or bad / n - floor < NOISE_MARGIN:
            return False  # (429s come back faster than answers: the first outcomes are mostly 429s)
        # that many 429s would be a rare draw of the noise (exact binomial tail, small samples
        # included), even a standard deviation above the floor measured
        noise = floor
        if measured < math.inf:  # (a floor of 0 on few answers: as if it had been one of them)
            noise += math.sqrt(max(floor, 1.0 / measured) * (1.0 - floor) / measured)
        return _binomial_tail(bad, n, noise) < NOISE_ALPHA

    def _noise_floor(self) -> tuple[float, float]:
        """The share of 429/503s the endpoint returns whatever the load, and on how many answers
        it was measured (inf: assumed)."""
        n = bad = 0
        for block in sorted(self._blocks):  # lowest load first: where a real limit rejects fewest
            if block.bad <= NOISE_MAX * block.n:  # (more is an overload, not noise)
                n, bad = n + block.n, bad + block.bad
                if n >= NOISE_FLOOR_OUTCOMES:
                    break
        cut = self._delivered_before_cut
        if n < NOISE_FLOOR_OUTCOMES and cut is not None and self._load() > NOISE_AT_LIMIT * cut:
            return 0.0, math.inf  # little evidence, and about as fast as the endpoint delivered
        if n == 0:
            return NOISE_MAX, math.inf  # no evidence: only an evident overload counts
        return bad / n, n

    def _drain_s(self) -> float:
        """After a decrease, answers to requests sent before it arrive for this long."""
        return max(self._decrease_window_s(), min(self._srtt or 0.0, 5.0))

    def _load(self) -> float:
        """The request rate the recommendations allow (per minute)."""
        window = self.concurrency / self._srtt * 60.0 if self._srtt else math.inf
        return min(window, self.rpm if self.rpm is not None else math.inf)

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
        self._add_to_block(now, ok)

    def _add_to_block(self, now: float, ok: bool) -> None:
        """Blocks group the answers to requests sent at one load (the noise floor's evidence)."""
        if now - self._last_decrease < self._drain_s():
            return  # answers to requests sent before the last decrease, at another load
        if self._blk_start is None:
            self._blk_start, self._blk_load = now, 0.0
        self._blk_load = max(self._blk_load, self._load())  # (the load only grows between decreases)
        self._blk_n += 1
        self._blk_bad += not ok
        if self._blk_n >= NOISE_BLOCK and now - self._blk_start >= 1.0:
            self._close_block(now)

    def _close_block(self, now: float) -> None:
        """Keep the current block (when a decrease cuts it short: if it has NOISE_MIN_SAMPLE answers)."""
        if self._blk_start is not None and self._blk_n >= NOISE_MIN_SAMPLE:
            self._blocks = [b for b in self._blocks if now - b.at <= NOISE_MEMORY_S]
            self._blocks.append(_Block(self._blk_load, self._blk_n, self._blk_bad, now))
            if len(self._blocks) > NOISE_BLOCKS:  # keep the lowest loads: the floor's best evidence
                self._blocks.remove(max(self._blocks, key=lambda b: (b.load, -b.at)))
        self._blk_start, self._blk_n, self._blk_bad = None, 0, 0

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
        srtt = latency_s if self._srtt is None else self._srtt + LATENCY_ALPHA * (latency_s - self._srtt)
        self._srtt = srtt
        # The baseline takes the answers in the order their requests were sent, each once every
        # request sent at the same time has had as long as the slowest recent answer took: in the
        # order they arrive, the fast answers come first while the window grows, and a baseline
        # from them sits far below the typical latency.
        self._latency_max = max(latency_s, self._latency_max * LATENCY_MAX_DECAY)
        heapq.heappush(self._unsorted, (now - latency_s, latency_s))
        while self._unsorted and (
            self._unsorted[0][0] <= now - self._latency_max or len(self._unsorted) > LATENCY_PENDING_MAX
        ):
            self._update_baseline(now, heapq.heappop(self._unsorted)[1])

    def _update_baseline(self, now: float, latency_s: float) -> None:
        # a slow average (a plain mean over the first samples); its lowest value is the baseline
        self._samples += 1
        slow = self._slow_latency
        alpha = max(BASELINE_ALPHA, 1.0 / self._samples)
        slow = latency_s if slow is None else slow + alpha * (latency_s - slow)
        self._slow_latency = slow
        if self._samples < BASELINE_MIN_SAMPLES:
            return  # let the average settle before it becomes the baseline
        if self._baseline is None:
            self._baseline = slow
        else:
            drifted = self._baseline * (1.0 + BASELINE_DRIFT_PER_S * max(0.0, now - self._baseline_at))
            self._baseline = min(drifted, slow)
        self._baseline_at = now

    def _latency_ratio(self) -> float:
        if self._baseline is None or self._srtt is None or self._srtt - self._baseline < LATENCY_MIN_EXCESS_S:
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
            limit = header_number(headers.get(f"x-ratelimit-limit-{kind}"))
            if limit is not None and limit > 0:
                if kind == "requests":
                    self._header_rpm_limit = limit
                else:
                    self._header_tpm_limit = limit
            remaining = header_number(headers.get(f"x-ratelimit-remaining-{kind}"))
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
        self._close_block(now)
        self._last_decrease = now
        self._decreases += 1
        self._cwnd = max(float(self.min_concurrency), self._cwnd * CWND_DECREASE)
        span = self._span(now, max(window, DELIVERED_SPAN_S))
        delivered = self._ok.per_minute(now, span)
        self._delivered_before_cut = delivered
        basis = _min_or_none(self._header_rpm(), self._learned_rpm)
        if basis is None:
            # the rate we were sending at; at least what the endpoint just delivered (the send rate
            # of the last second says little if the dispatcher had paused)
            offered, goodput = self._offered_rpm(now), self._goodput_rpm(now)
            basis = max(offered or 0.0, goodput or 0.0) or None
        else:
            # In an overload the endpoint delivers its limit: aim below the delivered rate rather
            # than just below the pace, which may have overshot far (a deep bucket lets a probe run
            # ahead before the first 429; an overload taken for noise holds the 429 share up).
            # Completions lag sends by a latency and few of them say little: an untrusted rate
            # counts only when the burst outlived the last cut, and not below GOODPUT_FLOOR x pace.
            trusted = (self._srtt or 0.0) <= span and delivered * span / 60.0 >= MIN_DELIVERED_SAMPLES
            if trusted or since_last < BURST_CONTINUES * window:
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
        # the pace may not run far ahead of what is delivered, or an unused pace stores up a burst.
        # Up to RATE_RECOVERY_TARGET x the best recent goodput it recovers quickly: a decrease that
        # went too far (noise taken for overload, a start-up burst) must not cost minutes.
        quick = RATE_RECOVERY_TARGET * self._recent_peak(now)
        ceiling = max(self._learned_ref, RATE_AHEAD_OF_GOODPUT * (self._goodput_rpm(now) or 0.0), quick)
        if self._learned_rpm >= ceiling:
            return
        slope = RATE_INCREASE_PER_S * self._learned_ref
        if self._learned_rpm >= self._learned_ref:
            if self._above_ref_since is None:
                self._above_ref_since = now
            slope *= min(2.0 ** ((now - self._above_ref_since) / RATE_PROBE_DOUBLING_S), RATE_PROBE_MAX_GAIN)
        elapsed = max(0.0, now - last)
        step = slope * elapsed
        if self._learned_rpm < quick:
            quickly = RATE_RECOVERY_PER_S * self._learned_rpm * elapsed
            step = max(step, min(quick - self._learned_rpm, quickly))
        self._learned_rpm = min(self._learned_rpm + step, ceiling)

    def _recent_peak(self, now: float) -> float:
        """About the highest goodput (per minute, over RATE_RECOVERY_SPAN_S, not clipped to the run's
        age: the burst a bucket allows at the start does not inflate it) of the last minute."""
        goodput = self._ok.per_minute(now, RATE_RECOVERY_SPAN_S)
        if goodput >= self._peak[0] or now - self._peak[1] > HISTORY_S:
            self._peak = (goodput, now)
        return self._peak[0]

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
        if ratio <= LATENCY_QUEUE:
            self._queue_srtt = None
        elif self._queue_srtt is None or self._queue_windows < QUEUE_PATIENCE:
            if self._queue_srtt is None:
                self._queue_srtt, self._queue_windows = self._srtt, 0
            self._queue_windows += 1
            self._cwnd = max(float(self.min_concurrency), self._cwnd * CWND_LATENCY_DECREASE)
        elif (self._srtt or 0.0) > QUEUE_RESPONSE * self._queue_srtt:
            # a smaller window did not shorten the answers: no queue of ours, the baseline was wrong
            # (e.g. the fastest answers of a ramp-up); start again from the typical latency
            self._baseline, self._baseline_at, self._queue_srtt = self._slow_latency, now, None
            ratio = self._latency_ratio()
        else:
            self._queue_srtt, self._queue_windows = self._srtt, 0  # it responds: a queue; keep shrinking
        self._growth_ok = (
            not self._win_dirty and ratio <= LATENCY_PLATEAU and in_flight >= MIN_UTILISATION * self._cwnd
        )
        self._win_start = now
        self._win_ok = 0
        self._win_dirty = False


class _Block(NamedTuple):
    """Answers to requests sent at one load: the noise floor's evidence."""

    load: float  #: the highest request rate (per minute) the recommendations allowed meanwhile
    n: int  #: answers
    bad: int  #: 429/503s among them
    at: float  #: when it ended


def _binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0 or p >= 1.0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    log_term = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    term = math.exp(log_term + k * math.log(p) + (n - k) * math.log1p(-p))
    total = term
    for i in range(k, n):  # the terms fall fast once past the mean (k is above it here)
        term *= (n - i) / (i + 1) * p / (1.0 - p)
        total += term
        if term <= total * 1e-9:
            break
    return min(1.0, total)


def _min_or_none(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _latency(value: float | None) -> float | None:
    if value is None or isinstance(value, bool) or not math.isfinite(value):
        return None
    return max(0.0, float(value))


def _bad_int(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)
