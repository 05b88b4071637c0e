"""The best rows/s a scenario allows, and how close a run came to it (pure arithmetic).

``theoretical_limit``: min(concurrency / mean latency, rpm / 60, tpm / 60 / tokens per request), and
which term binds; ``fault_adjusted_limit``: what the in-flight window allows once injected faults take
their share of it; ``achieved_fraction`` and ``per_thousand`` turn measurements into ratios.
"""

from __future__ import annotations

import math

__all__ = ["achieved_fraction", "fault_adjusted_limit", "per_thousand", "theoretical_limit"]


def theoretical_limit(
    concurrency: int,
    mean_latency_s: float,
    rpm: float | None = None,
    tpm: float | None = None,
    tokens_per_request: float | None = None,
) -> tuple[float, str | None]:
    """The best possible rows/s (one request per row) and what binds it.

    rows/s = min(concurrency / mean latency, rpm / 60, tpm / 60 / tokens per request). A term is
    unbounded when its input is missing (or the latency is 0); ``(inf, None)`` when all are.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    if mean_latency_s < 0:
        raise ValueError("mean_latency_s must be >= 0")
    terms: list[tuple[float, str]] = []
    if mean_latency_s > 0:
        terms.append((concurrency / mean_latency_s, "concurrency/latency"))
    if rpm is not None:
        if rpm <= 0:
            raise ValueError("rpm must be > 0")
        terms.append((rpm / 60.0, "requests/min"))
    if tpm is not None:
        if tpm <= 0 or not tokens_per_request or tokens_per_request <= 0:
            raise ValueError("tpm needs tpm > 0 and tokens_per_request > 0")
        terms.append((tpm / 60.0 / tokens_per_request, "tokens/min"))
    if not terms:
        return math.inf, None
    return min(terms)


def fault_adjusted_limit(
    concurrency: int,
    mean_latency_s: float,
    faults: dict[str, float],
    request_timeout_s: float,
) -> float:
    """Rows/s the in-flight window allows once injected faults take their share of it.

    Slot time per attempt: an injected 429 answers at once (0), a hang holds its slot until the
    engine's timeout (``request_timeout_s``), every other attempt the mean latency. Attempts per row:
    1 / (1 - p(retried)), where 429, 500, 503, hang, drop and malformed are retried and a no-marker
    answer is final. Retry waits hold no slot. rows/s = concurrency / (attempts per row x slot time).
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    p = {k.removeprefix("rate_"): v for k, v in faults.items()}
    p429, hang = p.get("429", 0.0), p.get("hang", 0.0)
    retried = sum(p.get(k, 0.0) for k in ("429", "500", "503", "hang", "drop", "malformed"))
    if retried >= 1.0:
        return 0.0
    slot_s = (1.0 - p429 - hang) * mean_latency_s + hang * request_timeout_s
    if slot_s <= 0:
        return math.inf
    return concurrency * (1.0 - retried) / slot_s


def achieved_fraction(rows_per_s: float, limit_rows_per_s: float) -> float | None:
    """measured / limit; None when there is no finite limit (a CPU-bound run)."""
    if not math.isfinite(limit_rows_per_s) or limit_rows_per_s <= 0:
        return None
    return rows_per_s / limit_rows_per_s


def per_thousand(value: float, rows: int) -> float | None:
    return value * 1000.0 / rows if rows > 0 else None

