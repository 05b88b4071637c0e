"""What an endpoint's rate-limit headers say, parsed once for everyone (L2: stdlib only).

The retry policy (via ``EndpointError.retry_after``, filled by the client with
:func:`parse_retry_after`), the adaptive controller (advertised ``x-ratelimit-limit-*`` and
``x-ratelimit-remaining-*``, read with :func:`header_number`) and the client all read the same
headers: ``retry-after-ms``, ``retry-after`` (delta-seconds or an HTTP-date) and OpenAI's
``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, whose reset is a Go-style duration
(:func:`parse_duration`). ``headers`` mappings have lower-case keys. Garbage is ignored, never raised.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

__all__ = [
    "LIMIT_REQUESTS",
    "LIMIT_TOKENS",
    "REMAINING_REQUESTS",
    "REMAINING_TOKENS",
    "RESET_REQUESTS",
    "RESET_TOKENS",
    "header_number",
    "parse_duration",
    "parse_retry_after",
]

LIMIT_REQUESTS = "x-ratelimit-limit-requests"
LIMIT_TOKENS = "x-ratelimit-limit-tokens"
REMAINING_REQUESTS = "x-ratelimit-remaining-requests"
REMAINING_TOKENS = "x-ratelimit-remaining-tokens"
RESET_REQUESTS = "x-ratelimit-reset-requests"
RESET_TOKENS = "x-ratelimit-reset-tokens"

_RESETS = ((REMAINING_REQUESTS, RESET_REQUESTS), (REMAINING_TOKENS, RESET_TOKENS))

_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}
_DURATION_RE = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:ms|us|µs|μs|ns|h|m|s)")
_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|μs|ns|h|m|s)")


def header_number(raw: object) -> float | None:
    """A header's value as a finite number, or None (absent, not a string, not a number)."""
    if not isinstance(raw, str):
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


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
    for remaining_name, reset_name in _RESETS:
        remaining = header_number(headers.get(remaining_name))
        if remaining is None or remaining > 0:
            continue
        reset = headers.get(reset_name)
        wait = parse_duration(reset) if isinstance(reset, str) else None
        if wait is not None:
            waits.append(max(0.0, wait))
    return max(waits) if waits else None


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
