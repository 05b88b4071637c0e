"""Noise is not congestion: telling a load-independent share of 429/503s from an overload. Some
endpoints refuse a share of requests whatever the load (a flaky gateway, another tenant's burst);
obeying each such refusal ratchets the pace and the window down to a stall. A real limit responds to
the load — sending slower lowers the share of 429s — noise does not. So answers are grouped in
blocks (30 answers and 1 s, cut short by a decrease, leaving out the drain after it) of requests
sent at one load (the rate the recommendations allowed), and the **noise floor** is the 429/503
share of the blocks at the lowest loads, pooled up to 100 answers (blocks above 20 % are overloads,
not noise; the 20 blocks at the lowest loads of the last two minutes are kept). A recent share
:meth:`NoiseFloor.exceeds` the floor when it is 3 points and one answer above it, and so many 429s
would be a 1-in-1000 draw of the noise (exact binomial tail, at the floor plus one standard
deviation of its own measurement) — or, with a floor of 0 measured on 100 answers, whenever they
are 3 % of the answers: without noise every 429 counts. Before the first block only an evident
overload counts (a floor of 20 %); while the floor rests on fewer than 100 answers and the load is
above 95 % of the goodput at the last decrease, every 429 counts (a start above a limit: keep cutting
until a lower load is measured). Limits: an overload that never went below the limit after the start
can pass for noise while the floor is measured only above it, and noise above 20 % counts as overload.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["NOISE_SAMPLE_S", "NoiseFloor"]

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


class Block(NamedTuple):
    """Answers to requests sent at one load: the noise floor's evidence."""

    load: float  #: the highest request rate (per minute) the recommendations allowed meanwhile
    n: int  #: answers
    bad: int  #: 429/503s among them
    at: float  #: when it ended


class NoiseFloor:
    """Blocks of answers by load, and the 429/503 share the endpoint returns whatever the load.

    ``load`` returns the request rate (per minute) the recommendations allow right now; it is called
    only when needed (per answer in a block, and on a 429 while the floor has little evidence).
    """

    __slots__ = ("_bad", "_blocks", "_cut_rpm", "_load", "_max_load", "_n", "_start")

    def __init__(self, load: Callable[[], float]) -> None:
        self._load = load
        self._blocks: list[Block] = []
        self._start: float | None = None  # of the current block
        self._n = 0
        self._bad = 0
        self._max_load = math.inf
        self._cut_rpm: float | None = None  # goodput (per minute) at the last decrease

    def add(self, now: float, ok: bool) -> None:
        """An answer to a request sent at the current load (not in the drain of a decrease)."""
        start = self._start
        if start is None:
            self._start = start = now
            self._max_load = 0.0
        load = self._load()
        if load > self._max_load:  # (max: the load only grows between decreases)
            self._max_load = load
        n = self._n = self._n + 1
        if not ok:
            self._bad += 1
        if n >= NOISE_BLOCK and now - start >= 1.0:
            self._close_block(now)

    def on_decrease(self, now: float, delivered_rpm: float) -> None:
        """A decrease cuts the current block short; ``delivered_rpm``: the goodput just before it."""
        self._close_block(now)
        self._cut_rpm = delivered_rpm

    def _close_block(self, now: float) -> None:
        """Keep the current block (when a decrease cuts it short: if it has NOISE_MIN_SAMPLE answers)."""
        if self._start is not None and self._n >= NOISE_MIN_SAMPLE:
            self._blocks = [b for b in self._blocks if now - b.at <= NOISE_MEMORY_S]
            self._blocks.append(Block(self._max_load, self._n, self._bad, now))
            if len(self._blocks) > NOISE_BLOCKS:  # keep the lowest loads: the floor's best evidence
                self._blocks.remove(max(self._blocks, key=lambda b: (b.load, -b.at)))
        self._start, self._n, self._bad = None, 0, 0

    def floor(self) -> tuple[float, float]:
        """The share of 429/503s the endpoint returns whatever the load, and on how many answers
        it was measured (inf: assumed)."""
        n = bad = 0
        for block in sorted(self._blocks):  # lowest load first: where a real limit rejects fewest
            if block.bad <= NOISE_MAX * block.n:  # (more is an overload, not noise)
                n, bad = n + block.n, bad + block.bad
                if n >= NOISE_FLOOR_OUTCOMES:
                    break
        cut = self._cut_rpm
        if n < NOISE_FLOOR_OUTCOMES and cut is not None and self._load() > NOISE_AT_LIMIT * cut:
            return 0.0, math.inf  # little evidence, and about as fast as the endpoint delivered
        if n == 0:
            return NOISE_MAX, math.inf  # no evidence: only an evident overload counts
        return bad / n, n

    def exceeds(self, n: int, bad: int) -> bool:
        """``bad`` 429/503s among the ``n`` recent answers are clearly above the noise floor."""
        floor, measured = self.floor()
        if floor == 0.0 and measured >= NOISE_FLOOR_OUTCOMES:
            return bad >= max(1.0, NOISE_MARGIN * n)  # no noise: every 429 counts (a few at a high load)
        if n < NOISE_MIN_SAMPLE or bad - n * floor < 1.0 or bad / n - floor < NOISE_MARGIN:
            return False  # (429s come back faster than answers: the first outcomes are mostly 429s)
        # that many 429s would be a rare draw of the noise (exact binomial tail, small samples
        # included), even a standard deviation above the floor measured
        noise = floor
        if measured < math.inf:  # (a floor of 0 on few answers: as if it had been one of them)
            noise += math.sqrt(max(floor, 1.0 / measured) * (1.0 - floor) / measured)
        return binomial_tail(bad, n, noise) < NOISE_ALPHA


def binomial_tail(k: int, n: int, p: float) -> float:
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
