"""Retry policy and server wait hints (L2: plain arguments, stdlib only).

Classification is by type, never by message text: only an ``EndpointError`` whose ``retryable``
is true is retried (transport errors, timeouts, malformed 2xx bodies, an open breaker, and the
HTTP statuses in ``errors.RETRYABLE_STATUSES``); 400/401/403/404/413/422 and friends are final.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

from engine.core.errors import EndpointError

__all__ = ["MAX_SERVER_WAIT_S", "RetryPolicy", "header_number", "parse_duration", "parse_retry_after"]

#: the longest server-requested wait we honour (Retry-After beyond this is clipped)
MAX_SERVER_WAIT_S = 600.0
#: jitter added on top of a server-requested wait, as a fraction of it
SERVER_WAIT_JITTER = 0.10


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before retrying one request.

    ``max_attempts`` counts every attempt including the first; ``max_total_s`` bounds the time from
    the first attempt to the start of the last one.
    """

    max_attempts: int = 8
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    max_total_s: float = 1800.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, got {self.max_attempts!r}")
        for name in ("base_delay_s", "max_delay_s", "max_total_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.max_delay_s < self.base_delay_s:
            raise ValueError(
                f"max_delay_s ({self.max_delay_s}) must be >= base_delay_s ({self.base_delay_s})"
            )

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter exponential backoff after failed attempt number ``attempt`` (1-based):
        uniform(0, min(max_delay_s, base_delay_s * 2 ** (attempt - 1)))."""
        exponent = min(max(attempt, 1) - 1, 64)  # 2**64 * base already exceeds any sane cap
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0**exponent)
        return rng.uniform(0.0, ceiling)

    def next_delay(
        self, error: BaseException, attempt: int, elapsed_s: float, rng: random.Random
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to give up.

        ``attempt`` is the number of attempts made so far (the one that just failed), ``elapsed_s``
        the time since the first attempt started. Gives up when the error is not a retryable
        ``EndpointError``, when ``max_attempts`` are used, or when waiting would start the next
        attempt after ``max_total_s``. When the server asked for a wait (``error.retry_after``) the
        delay is that wait plus 0-10 % jitter, capped at ``max_delay_s`` unless the server asked
        for more (honoured up to ``MAX_SERVER_WAIT_S``); otherwise it is ``backoff``.
        """
        if not isinstance(error, EndpointError) or not error.retryable:
            return None
        if attempt >= self.max_attempts:
            return None
        server_wait = _clean_wait(error.retry_after)
        if server_wait is None:
            delay = self.backoff(attempt, rng)
        else:
            server_wait = min(server_wait, MAX_SERVER_WAIT_S)
            jittered = server_wait * (1.0 + rng.uniform(0.0, SERVER_WAIT_JITTER))
            ceiling = self.max_delay_s if server_wait <= self.max_delay_s else MAX_SERVER_WAIT_S
            delay = max(server_wait, min(jittered, ceiling))
        if elapsed_s + delay > self.max_total_s:
            return None
        return delay


def _clean_wait(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return max(0.0, float(value))


_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}
_DURATION_RE = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:ms|us|µs|μs|ns|h|m|s)")
_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|μs|ns|h|m|s)")


def parse_duration(text: str) -> float | None:
    """Seconds in an OpenAI/Go duration ("1s", "6m0s", "20ms", "1h2m3.5s") or a plain number of
    seconds ("1.5"); None for anything else (never raises)."""
    if not isinstance(text, str):
        return None
    text = text.strip().lower()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) else None
    if not re.fullmatch(f"(?:{_DURATION_RE.pattern})+", text):
        return None
    total = sum(float(number) * _UNIT_S[unit] for number, unit in _PART_RE.findall(text))
    return total if math.isfinite(total) else None


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait, in seconds (>= 0), that a response's headers ask for; None when they ask none.

    ``headers`` has lower-case keys. The first usable one wins, in this order: ``retry-after-ms``
    (milliseconds), ``retry-after`` (delta-seconds or an HTTP-date, relative to ``now`` in epoch
    seconds, default ``time.time()``), then the larger of ``x-ratelimit-reset-requests`` and
    ``x-ratelimit-reset-tokens``, each only when its ``x-ratelimit-remaining-*`` is 0. Garbage is
    ignored, never raised; negative waits become 0.
    """
    value = header_number(headers.get("retry-after-ms"))
    if value is not None:
        return max(0.0, value / 1000.0)
    raw = headers.get("retry-after")
    if isinstance(raw, str) and raw.strip():
        value = header_number(raw)
        if value is None:
            value = _http_date_delta(raw, time.time() if now is None else now)
        if value is not None:
            return max(0.0, value)
    waits = []
    for kind in ("requests", "tokens"):
        remaining = header_number(headers.get(f"x-ratelimit-remaining-{kind}"))
        if remaining is None or remaining > 0:
            continue
        reset = headers.get(f"x-ratelimit-reset-{kind}")
        wait = parse_duration(reset) if isinstance(reset, str) else None
        if wait is not None:
            waits.append(max(0.0, wait))
    return max(waits) if waits else None


def header_number(raw: object) -> float | None:
    """A header's value as a finite number, or None (absent, not a string, not a number)."""
    if not isinstance(raw, str):
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _http_date_delta(raw: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:  # pragma: no cover - older Pythons returned None for garbage
        return None
    if when.tzinfo is None:  # "-0000" means UTC with unknown origin
        when = when.replace(tzinfo=UTC)
    try:
        return when.timestamp() - now
    except (OverflowError, OSError, ValueError):  # pragma: no cover - absurd dates
        return None
