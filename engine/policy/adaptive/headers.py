"""What the endpoint advertises: ``x-ratelimit-limit-requests`` / ``-tokens`` set a pace of 97 % of
the limit, so a well-behaved API is paced before its first 429; ``x-ratelimit-remaining-*`` says how
close the current bucket is to empty. A ``remaining`` of 0 is exhaustion (congestion before any 429
when no advertised limit paces us); one below 10 % of the largest value seen stops growth — judged
against the largest value seen, not the advertised limit, because some servers count a short burst
bucket (0-10) under a per-minute limit (600). Numbers are read with
engine.policy.ratelimit_headers; garbage is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.policy.ratelimit_headers import (
    LIMIT_REQUESTS,
    LIMIT_TOKENS,
    REMAINING_REQUESTS,
    REMAINING_TOKENS,
    header_number,
)

__all__ = ["HEADER_FRACTION", "AdvertisedLimits"]

#: fraction of an advertised rate limit to use
HEADER_FRACTION = 0.97
#: remaining below this fraction of the largest remaining seen stops growth
REMAINING_LOW = 0.1

_KINDS = (("requests", LIMIT_REQUESTS, REMAINING_REQUESTS), ("tokens", LIMIT_TOKENS, REMAINING_TOKENS))


class AdvertisedLimits:
    """The advertised limits (None until seen) and whether the ``remaining`` counters run low."""

    __slots__ = ("_max_remaining", "changes", "remaining_low", "rpm_limit", "tpm_limit")

    def __init__(self) -> None:
        self.rpm_limit: float | None = None  #: advertised x-ratelimit-limit-requests
        self.tpm_limit: float | None = None  #: advertised x-ratelimit-limit-tokens
        self.remaining_low = False  #: a remaining counter below REMAINING_LOW of its largest value
        self._max_remaining: dict[str, float] = {}
        self.changes = 0  #: how many times a limit changed (what it allows is cached by its reader)

    def learn(self, headers: Mapping[str, str]) -> bool:
        """Learn advertised limits; True when a ``remaining`` counter says the limit is exhausted."""
        if not headers:
            return False  # (nothing to learn: the common case of an endpoint without these headers)
        exhausted = False
        low = False
        seen_remaining = False
        get = headers.get
        for kind, limit_name, remaining_name in _KINDS:
            raw = get(limit_name)
            limit = None if raw is None else header_number(raw)  # (absent: the common case, no call)
            if limit is not None and limit > 0:
                if kind == "requests":
                    if limit != self.rpm_limit:
                        self.rpm_limit = limit
                        self.changes += 1
                elif limit != self.tpm_limit:
                    self.tpm_limit = limit
                    self.changes += 1
            raw = get(remaining_name)
            remaining = None if raw is None else header_number(raw)
            if remaining is None:
                continue
            seen_remaining = True
            most = self._max_remaining.get(kind, 0.0)
            if remaining > most:  # (max)
                most = remaining
            self._max_remaining[kind] = most
            exhausted = exhausted or remaining <= 0
            low = low or remaining < REMAINING_LOW * most
        if seen_remaining:
            self.remaining_low = low
        return exhausted

    def rpm(self) -> float | None:
        """The pace the advertised request limit allows (None: none advertised)."""
        return None if self.rpm_limit is None else HEADER_FRACTION * self.rpm_limit

    def tpm(self) -> float | None:
        """The token rate the advertised token limit allows (None: none advertised)."""
        return None if self.tpm_limit is None else HEADER_FRACTION * self.tpm_limit
