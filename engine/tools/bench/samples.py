"""The sampled series of a run and what it says: ``Sample`` points, the steady window, interpolation.

A ``Sample`` is one reading of the mock's counters and the engine's /proc figures at a time since
the engine started (``from_stats`` builds it from a ``/stats`` answer); ``steady_window`` finds the
first chat request and the last chat response, ``value_at`` interpolates a counter at a time and
``time_when`` finds when a counter reached a value. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Sample", "chat_responses", "from_stats", "steady_window", "time_when", "value_at"]


def chat_responses(stats: dict[str, Any]) -> int:
    """Chat-completion answers the mock has sent (its status counts also hold GET /models answers)."""
    return sum(stats.get("status", {}).values()) - stats.get("other_requests", 0)


@dataclass
class Sample:
    t: float  # seconds since the engine process was started
    requests: int  # chat requests received by the mock
    responses: int  # chat responses sent
    completions: int  # 200 answers with a completion
    status_429: int
    in_flight: int  # chat requests the mock holds now
    mock_cpu_s: float
    engine_cpu_s: float | None
    engine_rss_mb: float | None
    engine_hwm_mb: float | None = None
    engine_anon_mb: float | None = None  # private memory (RssAnon)
    engine_file_mb: float | None = None  # mapped file pages (RssFile)


def from_stats(t: float, s: dict[str, Any], cpu: float | None, rss: float | None = None,
                mem: dict[str, float] | None = None) -> Sample:
    mem = mem or {}
    return Sample(t=t, requests=s["requests"], responses=chat_responses(s), completions=s["completions"],
                  status_429=s.get("status", {}).get("429", 0), in_flight=s.get("in_flight", 0),
                  mock_cpu_s=s["cpu_s"], engine_cpu_s=cpu, engine_rss_mb=rss, engine_hwm_mb=mem.get("VmHWM"),
                  engine_anon_mb=mem.get("RssAnon"), engine_file_mb=mem.get("RssFile"))


def steady_window(samples: list[Sample]) -> tuple[float, float] | None:
    """(start, end) in seconds since the engine's start: first chat request to last chat response,
    each placed halfway between the sample that first shows it and the one before."""
    start = end = None
    for prev, cur in zip(samples, samples[1:], strict=False):
        if start is None and cur.requests > prev.requests:
            start = (prev.t + cur.t) / 2
        if cur.responses > prev.responses:
            end = (prev.t + cur.t) / 2
    if start is None or end is None or end <= start:
        return None
    return start, end


def value_at(samples: list[Sample], t: float, attr: str) -> float:
    """A counter at time t, linearly interpolated between samples."""
    prev = samples[0]
    for cur in samples:
        if cur.t >= t:
            if cur.t == prev.t:
                return float(getattr(cur, attr))
            w = (t - prev.t) / (cur.t - prev.t)
            return getattr(prev, attr) + w * (getattr(cur, attr) - getattr(prev, attr))
        prev = cur
    return float(getattr(samples[-1], attr))


def time_when(samples: list[Sample], attr: str, value: float) -> float | None:
    """The first time a counter reaches ``value`` (interpolated)."""
    prev = samples[0]
    for cur in samples:
        v = getattr(cur, attr)
        if v >= value:
            pv = getattr(prev, attr)
            if v == pv or cur is prev:
                return cur.t
            return prev.t + (value - pv) / (v - pv) * (cur.t - prev.t)
        prev = cur
    return None

