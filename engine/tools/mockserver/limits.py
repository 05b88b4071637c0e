"""The mock's enforced rpm / tpm limits: continuously refilling token buckets, like OpenAI's.

A ``Bucket`` refills at ``limit / 60`` per second, holds one second's worth and starts full;
``Limits.charge`` admits (and charges) a request or says which limit refused it and for how long,
and writes the ``x-ratelimit-*`` headers either way; ``refusal`` is the 429 that follows. The clock is
passed in (``now``), so everything here is deterministic. See the package docstring for the rules.
"""

from __future__ import annotations

import math

from engine.tools.mockserver.protocol import err

__all__ = ["Bucket", "Limits", "duration", "refusal"]


class Bucket:
    """A continuously refilling token bucket (rate = limit/60 per second, capacity = one second's worth)."""

    __slots__ = ("capacity", "level", "limit", "rate", "stamp")

    def __init__(self, per_minute: int, now: float) -> None:
        self.limit = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait(self, cost: float) -> float:
        need = min(cost, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def headers(self, kind: str, out: dict[str, str]) -> None:
        out[f"x-ratelimit-limit-{kind}"] = str(self.limit)
        out[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(self.level)))
        out[f"x-ratelimit-reset-{kind}"] = duration((self.capacity - self.level) / self.rate)


def duration(seconds: float) -> str:
    """A Go-style duration string like OpenAI's reset headers: "0s", "120ms", "1.5s", "6m0s", "1h2m3s"."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    total = math.ceil(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m}m{s}s" if h else f"{m}m{s}s"


class Limits:
    """The rpm and tpm buckets of one server (``None`` where that limit is not set)."""

    __slots__ = ("rpm", "tpm")

    def __init__(self, rpm: int | None, tpm: int | None, now: float) -> None:
        self.rpm = Bucket(rpm, now) if rpm else None
        self.tpm = Bucket(tpm, now) if tpm else None

    @property
    def active(self) -> bool:
        return self.rpm is not None or self.tpm is not None

    def charge(self, now: float, tokens: int, headers: dict[str, str]) -> tuple[str, float] | None:
        """Admit a request costing 1 request and ``tokens`` tokens: None when admitted (and charged), else
        ``(kind, wait_s)`` with kind ``rpm`` or ``tpm`` (nothing charged). Adds the headers of each bucket."""
        wait_r = wait_t = 0.0
        if self.rpm is not None:
            self.rpm.refill(now)
            wait_r = self.rpm.wait(1)
        if self.tpm is not None:
            self.tpm.refill(now)
            wait_t = self.tpm.wait(tokens)
        wait = max(wait_r, wait_t)
        if wait <= 0:
            if self.rpm is not None:
                self.rpm.level -= 1
            if self.tpm is not None:
                self.tpm.level -= tokens
        if self.rpm is not None:
            self.rpm.headers("requests", headers)
        if self.tpm is not None:
            self.tpm.headers("tokens", headers)
        if wait > 0:
            return ("rpm" if wait_r >= wait_t else "tpm"), wait
        return None

    def charge_usage(self, now: float, tokens: int) -> None:
        """Charge ``tokens`` more to the tpm bucket (the completion of an answered request, ``tpm_counts:
        usage``); the bucket may go into debt, which later admissions wait out."""
        if self.tpm is not None:
            self.tpm.refill(now)
            self.tpm.level -= tokens


def refusal(kind: str, wait: float, limit: int | None, headers: dict[str, str]) -> bytes:
    """The body of the 429 for a request ``kind`` (rpm / tpm) refused; adds ``Retry-After`` and ``retry-after-ms``."""
    headers["Retry-After"] = str(max(1, math.ceil(wait)))
    headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
    what = "requests per min (RPM)" if kind == "rpm" else "tokens per min (TPM)"
    msg = f"Rate limit reached for {what}: Limit {limit}. Please try again in {duration(wait)}."
    return err(msg, "requests" if kind == "rpm" else "tokens", "rate_limit_exceeded")
