"""Typed errors (L0, stdlib only).

The tree, so that callers classify by type and never by message text::

    ClairError                      anything this package raises on purpose
    ├── UserError                   a user mistake: one-line message, exit code 2
    │   ├── ConfigError             malformed or invalid config / --set value
    │   ├── InputError              unreadable input, missing column, bad path expression
    │   ├── TemplateError           a prompt template file that cannot be used
    │   ├── RunStateError           run dir refused: changed fingerprint, active lock, corrupt state
    │   └── StartupError            an endpoint failed the start-up check (down, bad key, unknown model)
    ├── StorageError                disk full, permission lost, ... while writing a run (exit 74)
    ├── EndpointsDown               every endpoint failed for run.max_pause_s: the run stopped (exit 75)
    ├── RunStopped                  a guard stopped the run early, resumable (exit 3)
    │   ├── BudgetReached           no room in budget.max_usd / budget.max_output_tokens for another request
    │   └── QualityGuardTripped     too many rows without a usable revision, identical or worsened
    └── EndpointError               one request failed (recorded per row, never crashes a run)
        ├── TransportError          no HTTP answer at all (retryable)
        │   ├── ConnectError        could not connect / connection dropped
        │   └── RequestTimeout      connect or total timeout
        ├── HTTPStatusError         the endpoint answered with a non-2xx status
        ├── MalformedResponse       2xx but the body is not a usable chat completion (retryable)
        └── BreakerOpen             the endpoint's circuit breaker refused the request (retryable)

``EndpointError.kind`` is the short string stored in ``failures/`` rows (``error_kind``).
"""

from __future__ import annotations

#: HTTP statuses that are worth retrying (everything else 4xx is final).
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529})


class ClairError(Exception):
    """Base of every error this package raises on purpose."""


class UserError(ClairError):
    """A mistake the user can fix; the CLI prints ``error: <message>`` and exits 2."""

    exit_code = 2


class ConfigError(UserError):
    pass


class InputError(UserError):
    pass


class TemplateError(UserError):
    pass


class RunStateError(UserError):
    pass


class StartupError(UserError):
    pass


class StorageError(ClairError):
    """Writing the run directory failed (ENOSPC, EACCES, ...). The run stops resumable."""

    exit_code = 74


class EndpointsDown(ClairError):
    """Every endpoint kept failing (breakers open, probes failing, or disabled) for ``run.max_pause_s``: the
    run stopped like a graceful stop, resumable once an endpoint is back. ``failing`` holds each endpoint's
    name and its last error, as shown in the message."""

    exit_code = 75  # EX_TEMPFAIL: a temporary failure, try again later
    status = "endpoints_down"  # the session's status in the manifest

    def __init__(self, paused_s: float, failing: list[tuple[str, str]]):
        self.paused_s = paused_s
        self.failing = failing
        self.report: dict[str, object] | None = None  # the session's report, set once the session has ended
        each = "; ".join(f"{name}: {last}" for name, last in failing)
        super().__init__(f"every endpoint has been failing for {paused_s:.0f}s, the run stopped ({each})")
class RunStopped(ClairError):
    """A guard stopped the run early and gracefully (everything received is journaled; it resumes).

    ``status`` is the session status recorded in the manifest; ``report`` is the session's report (a dict,
    set by the runner once the session has ended) so that the CLI can print its summary."""

    exit_code = 3
    status = "stopped"

    def __init__(self, message: str):
        super().__init__(message)
        self.report: dict[str, object] | None = None


class BudgetReached(RunStopped):
    status = "budget_reached"


class QualityGuardTripped(RunStopped):
    status = "quality_guard"


class EndpointError(ClairError):
    """One request failed. ``kind`` goes into failures rows; ``retryable`` drives the retry loop."""

    kind = "endpoint_error"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        raw: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        #: seconds the server asked us to wait (Retry-After & co.), if it said so
        self.retry_after = retry_after
        #: the raw body, when there was one (kept for failures rows)
        self.raw = raw
        #: lower-cased rate-limit headers of the answer (x-ratelimit-*, retry-after), if any
        self.headers = headers or {}
        #: seconds from send to the error (set by the client)
        self.latency_s: float | None = None


class TransportError(EndpointError):
    kind = "connection_error"
    retryable = True


class ConnectError(TransportError):
    kind = "connection_error"


class RequestTimeout(TransportError):
    kind = "timeout"


class HTTPStatusError(EndpointError):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        retry_after: float | None = None,
        raw: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(f"HTTP {status}: {message}", retry_after=retry_after, raw=raw, headers=headers)
        self.status = status

    @property
    def kind(self) -> str:  # type: ignore[override]
        if self.status == 429:
            return "rate_limited"
        if self.status in (400, 413, 422) and self.raw and "context" in self.raw.lower():
            return "context_too_long"
        if self.status in (401, 403):
            return "auth_error"
        if self.status >= 500:
            return "server_error"
        return "client_error"

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.status in RETRYABLE_STATUSES


class MalformedResponse(EndpointError):
    kind = "malformed_response"
    retryable = True


class BreakerOpen(EndpointError):
    kind = "breaker_open"
    retryable = True


#: failure kinds that ``clair run --retry-failed`` re-requests (the last three: a row whose student answer
#: failed or was cut, in a run with a generate stage: its generate stage is retried)
RETRYABLE_KINDS = frozenset(
    {"connection_error", "timeout", "rate_limited", "server_error", "malformed_response", "breaker_open",
     "generate_failed", "student_truncated", "student_empty"}
)
