"""Deterministic text pieces drawn from a uniform source ``r``: picks, sentence walks, paragraphs, lengths.

Pure functions of ``r`` (a ``random.Random().random``) and the word lists: ``pick`` one item,
``walk`` a sentence pool without repeats, ``paragraphs`` up to a length budget, a log-normal
``lognormal_len``, ``distinct`` (items without repeats) and ``fill_task`` (grow an instruction to a target length).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

from engine.tools.synthetic.domains import CODE_SENT, FACTS, MATH_SENT
from engine.tools.synthetic.words import GENERIC, TASK_EXTRAS, TOPICS

__all__ = ["distinct", "fill_task", "lognormal_len", "paragraphs", "pick", "walk"]


def pick(r: Callable[[], float], seq: tuple[Any, ...]) -> Any:
    return seq[int(r() * len(seq))]


def _build_pool(sentences: tuple[str, ...], topic: str) -> tuple[str, ...]:
    return tuple(s.replace("{t}", topic) for s in sentences)


#: sentence pools: per topic the generic sentences with the topic filled in, plus "@code" and "@math"
_POOLS: dict[str, tuple[str, ...]] = {t: _build_pool(GENERIC, t) for t in TOPICS}
for _q, _topic, _a, _b in FACTS:
    _POOLS.setdefault(_topic, _build_pool(GENERIC, _topic))
_POOLS["@code"] = CODE_SENT
_POOLS["@math"] = MATH_SENT
#: strides coprime with each pool size: a walk (start + j * stride) % size visits distinct sentences


def walk(r: Callable[[], float], key: str) -> Iterator[str]:
    """An endless walk over one pool that repeats no sentence before the whole pool was used."""
    pool = _POOLS[key]
    n = len(pool)
    i = int(r() * n)
    d = pick(r, _coprimes(n))
    while True:
        yield pool[i]
        i = (i + d) % n


def paragraphs(r: Callable[[], float], key: str, budget: int, limit: int = 1 << 30) -> list[str]:
    """Paragraphs of 1-4 sentences from pool ``key`` until ``budget`` chars (never past ``limit``)."""
    out: list[str] = []
    n = 0
    sentences = walk(r, key)
    nxt = sentences.__next__
    while n < budget:
        k = 1 + int(r() * 4)
        p = nxt() if k == 1 else " ".join([nxt() for _ in range(k)])
        if n + len(p) > limit:
            p = nxt()
            if n + len(p) > limit:
                break
        out.append(p)
        n += len(p) + 2
    return out


def lognormal_len(r: Callable[[], float], median: float, sigma: float, lo: int, hi: int) -> int:
    u = (r() + r() + r() + r() - 2.0) * 1.7320508  # ~N(0,1) (Irwin-Hall with 4 uniforms, rescaled)
    return max(lo, min(hi, int(median * math.exp(sigma * u))))


@functools.cache
def _coprimes(n: int) -> tuple[int, ...]:
    return tuple(d for d in range(1, max(n, 2)) if math.gcd(d, n) == 1)


def distinct(r: Callable[[], float], pool: tuple[str, ...], n: int) -> Iterator[str]:
    """``n`` distinct items of ``pool`` (at most all of them), in a random order."""
    size = len(pool)
    i = int(r() * size)
    d = pick(r, _coprimes(size))
    for _ in range(min(n, size)):
        yield pool[i]
        i = (i + d) % size


def fill_task(
    r: Callable[[], float], task: str, target: int, key: str | None, extras: tuple[str, ...] = TASK_EXTRAS
) -> str:
    """Append a context paragraph (from pool ``key``) and/or a few distinct extra requests up to ``target``."""
    if len(task) >= target:
        return task
    parts = [task]
    n = len(task)
    if key is not None and target - n > 350:
        ctx = paragraphs(r, key, target - n - 120, limit=2000 - n - 40)
        if ctx:
            s = "Some context: " + " ".join(ctx)
            parts.append(s)
            n += len(s) + 1
    for s in distinct(r, extras, 6):
        if n >= target:
            break
        parts.append(s)
        n += len(s) + 1
    return " ".join(parts)

