"""Counters and latency histograms, exposed as snapshot objects (L2, stdlib only).

Business code only increments; reporters (progress display, run report, bench) format snapshots.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

_GROWTH = 1.05  # bucket width: 5% relative error on percentiles
_MIN_S = 1e-4
_LOG_GROWTH = math.log(_GROWTH)  # (math.log(x, base) is log(x) / log(base): the same value, one log less)
_log = math.log


class Histogram:
    """Log-bucketed histogram of seconds: O(1) record, bounded memory, percentiles within 5%."""

    __slots__ = ("buckets", "count", "total", "max")

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def record(self, seconds: float) -> None:
        b = 0 if seconds <= _MIN_S else int(_log(seconds / _MIN_S) / _LOG_GROWTH) + 1
        self.buckets[b] += 1
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def percentile(self, q: float) -> float | None:
        """Upper edge of the bucket holding the q-th percentile (0 < q <= 100)."""
        if not self.count:
            return None
        rank = max(1, math.ceil(self.count * q / 100.0))
        seen = 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            if seen >= rank:
                return min(self.max, _MIN_S * _GROWTH**b) if b else _MIN_S
        return self.max

    def merge(self, other: Histogram) -> None:
        self.buckets.update(other.buckets)
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def summary(self) -> dict[str, float | None]:
        return {
            "count": self.count,
            "mean_s": self.total / self.count if self.count else None,
            "p50_s": self.percentile(50),
            "p90_s": self.percentile(90),
            "p99_s": self.percentile(99),
            "max_s": self.max if self.count else None,
        }


@dataclass
class EndpointCounters:
    requests: int = 0
    ok: int = 0
    retries: int = 0
    rate_limited: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: Histogram = field(default_factory=Histogram)


@dataclass
class RunCounters:
    """Whole-run counters, updated by the runner as rows finish."""

    rows_total: int | None = None  # known once the input is fully scanned, or from metadata
    rows_done_before: int = 0  # rows already done when this process started
    rows_ok: int = 0
    rows_flagged: Counter[str] = field(default_factory=Counter)  # status != ok, in data/
    rows_failed: Counter[str] = field(default_factory=Counter)  # error kind → rows
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: Histogram = field(default_factory=Histogram)  # per row, first send → final answer
    rows_reused: int = 0  # rows that took a stored answer instead of a request

    @property
    def rows_finished(self) -> int:
        return self.rows_ok + sum(self.rows_flagged.values()) + sum(self.rows_failed.values())


@dataclass(frozen=True)
class EndpointSnapshot:
    """One endpoint's state for a progress display."""

    name: str
    state: str  # closed | open | half_open | disabled
    in_flight: int
    limit: int
    rate_limited: int
    requests: int
    retries: int


@dataclass(frozen=True)
class Progress:
    """A running job at one instant; reporters format it, nothing else."""

    rows_done: int
    rows_total: int | None
    rows_this_session: int
    rows_per_s: float
    output_tokens_per_s: float
    eta_s: float | None
    in_flight: int
    retries: int
    failures: dict[str, int]
    flagged: dict[str, int]
    elapsed_s: float
    endpoints: list[EndpointSnapshot] = field(default_factory=list)
    paused: bool = False  # every endpoint is failing: only probes are sent
    paused_since: float | None = None  # wall time (epoch s) the pause began
    #: a run with two stages: this snapshot is the last stage's (its name), ``upstream`` the first stage's,
    #: ``waiting`` the rows the first stage has answered that the last has not taken yet
    stage: str | None = None
    upstream: Progress | None = None
    waiting: int | None = None
