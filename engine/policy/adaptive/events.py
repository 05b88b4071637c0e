"""The controller's memory of the last minute: when requests were sent and answers arrived (successes,
429/503s), kept as sorted event times and counted by bisection, with the rates derived from them —
goodput (successes per minute), the offered rate (sends per minute, or estimated from completions
when the dispatcher does not report sends) and the spans they are measured over, clipped to the run's
age so that the first seconds are not diluted. Appending an event allocates nothing beyond the list
slot; a rate is cached per span for 0.25 s, so reading one per event stays cheap.
"""

from __future__ import annotations

import bisect

__all__ = ["HISTORY_S", "EventHistory", "RateMeter"]

#: events older than this are forgotten
HISTORY_S = 60.0


class RateMeter:
    """Event times over the last ``HISTORY_S`` seconds (the clock never goes back); counts by
    bisection, rates cached for 0.25 s (cheap per event)."""

    __slots__ = ("_cache", "_first", "_times")

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


class EventHistory:
    """Sends, answers, successes and 429/503s of the last minute, and the rates read from them."""

    __slots__ = ("congested", "first_send", "ok", "outcomes", "sends_reported", "sent")

    def __init__(self) -> None:
        self.ok = RateMeter()  #: successes
        self.congested = RateMeter()  #: 429/503s
        self.outcomes = RateMeter()  #: every answer (both of the above)
        self.sent = RateMeter()  #: requests sent (only when the dispatcher reports them)
        self.sends_reported = False
        self.first_send: float | None = None  #: the earliest send known (reported or inferred)

    def on_send(self, now: float) -> None:
        if self.first_send is None:
            self.first_send = now
        self.sends_reported = True
        self.sent.add(now)

    def on_answer(self, now: float, latency_s: float, ok: bool) -> None:
        sent = now - latency_s
        if self.first_send is None or sent < self.first_send:
            self.first_send = sent
        self.outcomes.add(now)
        if ok:
            self.ok.add(now)
        else:
            self.congested.add(now)

    def span(self, now: float, span_s: float) -> float:
        """``span_s`` clipped to the run's age (but at least 1 s), so early rates are not diluted."""
        age = now - (self.first_send if self.first_send is not None else now)
        return max(1.0, min(span_s, age, HISTORY_S))

    def goodput_rpm(self, now: float, srtt: float | None) -> float | None:
        """Successes per minute, over max(3 s, the smoothed latency ``srtt``)."""
        if self.first_send is None:
            return None
        return self.ok.per_minute(now, self.span(now, max(3.0, srtt or 0.0)))

    def offered_rpm(self, now: float, srtt: float | None, cwnd: float) -> float | None:
        """The rate requests are being sent at: counted by ``on_send`` or, failing that, estimated
        from completions of every kind (bounded by cwnd / latency)."""
        if self.first_send is None:
            return None
        span = self.span(now, max(1.0, min(srtt or 0.0, 5.0)))
        if self.sends_reported:
            return self.sent.per_minute(now, span) or None
        rate = self.outcomes.per_minute(now, span)
        if srtt:
            rate = min(rate, cwnd / srtt * 60.0)
        return rate or None
