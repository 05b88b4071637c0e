"""Plain data types shared by every layer (L0, stdlib only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Message = dict[str, str]  # {"role": ..., "content": ...}

#: statuses of rows in data/ (a usable revision); failures/ rows have no status but an error_kind
RowStatus = Literal["ok", "truncated", "worsened"]


@dataclass(frozen=True, slots=True)
class Markers:
    """Section identifiers a CLAIR answer uses. Matching is case-insensitive and tolerant of
    braces, underscores vs spaces, bold (``**``), markdown headings (``#``) and trailing colons."""

    reasoning: tuple[str, ...] = ("teacher_reasoning",)
    revision: tuple[str, ...] = ("corrected_student_solution",)
    worsened: tuple[str, ...] = ("worsened_student_solution",)


DEFAULT_MARKERS = Markers()


@dataclass(frozen=True, slots=True)
class Completion:
    """What one successful chat-completion call returned (already decoded)."""

    content: str
    finish_reason: str | None
    model: str | None = None  # the served model, from the response body
    reasoning_content: str | None = None  # separate thinking channel (vLLM/DeepSeek style)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    latency_s: float = 0.0
    #: lower-cased response headers the limiter cares about (x-ratelimit-*, retry-after)
    rate_headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ParseResult:
    """Outcome of parsing one answer.

    ``ok`` is True when there is a usable revision; then ``status`` is one of
    ``ok`` / ``truncated`` / ``worsened``. When ``ok`` is False, ``error_kind`` is one of
    ``no_marker`` / ``empty_revision`` / ``truncated_no_revision`` / ``empty_output`` and
    ``message`` explains it.
    """

    ok: bool
    revision: str | None = None
    rational: str | None = None
    status: str | None = None
    error_kind: str | None = None
    message: str | None = None


@dataclass(slots=True)
class WorkItem:
    """One row on its way to an endpoint (mutable: attempts and timing change as it retries)."""

    row_id: Any
    task: str
    student_solution: str
    messages: list[Message]
    prompt_tokens_est: int
    extra: dict[str, Any]  # kept input columns (already JSON-safe)
    attempts: int = 0
    first_sent: float | None = None  # loop time of the first attempt
    last_error: str | None = None
    #: the messages as JSON (serialized once; request bodies are built from it)
    messages_json: bytes = b""
    #: the content key of the request (``records.request_key``): the same request in any run has the same key
    request_key: str | None = None
    #: this row's output-token budget when it differs from ``generation.max_tokens`` (None: the generation's)
    max_tokens: int | None = None


class Transport(Protocol):
    """The network seam: one chat-completion call, and the endpoint's model list (None when the server
    has no ``/models`` route). Implementations translate their library's errors into ``EndpointError``
    subclasses (``engine.core.errors``); everything above the seam depends on this Protocol only."""

    async def complete(self, url: str, headers: dict[str, str], body: bytes) -> Completion: ...

    async def list_models(self, url: str, headers: dict[str, str]) -> list[str] | None: ...
