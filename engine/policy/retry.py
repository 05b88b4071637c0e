"""Retry policy: when to retry a failed request and how long to wait first (L2: plain arguments,
stdlib only). The server's own wait hint arrives already parsed (``EndpointError.retry_after``, see
engine.policy.ratelimit_headers) and is honoured with a little jitter.

Classification is by type, never by message text: only an ``EndpointError`` whose ``retryable``
is true is retried (transport errors, timeouts, malformed 2xx bodies, an open breaker, and the
HTTP statuses in ``errors.RETRYABLE_STATUSES``); 400/401/403/404/413/422 and friends are final.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from engine.core.errors import EndpointError

__all__ = ["MAX_SERVER_WAIT_S", "RetryPolicy"]

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
