"""The mock server's options: one frozen, validated ``MockConfig`` and the names of its faults.

Every behaviour of the mock (model name, the optional student model, latency, injected fault rates,
enforced limits, failing after a while, auth, ``/v1/models``) is a field; the CLI, tests and benchmarks build a config, the
server only reads it. An invalid value raises ``ValueError`` at construction; ``repr`` hides the key.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from engine.tools.mockserver.student import STUDENT_DEFAULT_TOKENS

__all__ = ["FAULTS", "RAMBLE_DEFAULT_TOKENS", "TPM_COUNTS", "MockConfig"]

#: the injectable faults, in the order a draw tries them (``rate_NAME`` fields of ``MockConfig``)
FAULTS = ("429", "500", "503", "hang", "drop", "malformed", "no_marker", "identical", "ramble")
#: what the tokens/min limit counts when it admits a request: prompt + max_tokens (OpenAI), or the prompt
#: at admission and the completion once answered (servers that count usage)
TPM_COUNTS = ("max_tokens", "usage")
#: how far a rambling answer runs when the request has no max_tokens
RAMBLE_DEFAULT_TOKENS = 4096


@dataclass(frozen=True)
class MockConfig:
    model: str = "mock-clair"
    latency_ms: float = 0.0  # mean latency
    latency_dist: str = "fixed"  # fixed | lognormal (mean stays latency_ms)
    latency_sigma: float = 1.0
    seed: int = 0
    # fault injection: probability per request, drawn from a seeded RNG
    rate_429: float = 0.0
    retry_after_s: float = 1.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_hang: float = 0.0
    hang_s: float = 3600.0
    rate_drop: float = 0.0
    rate_malformed: float = 0.0
    rate_no_marker: float = 0.0
    rate_identical: float = 0.0  # a CLAIR answer whose revision is the student's answer, unchanged
    rate_ramble: float = 0.0  # the answer runs on to max_tokens (finish_reason "length")
    # enforced limits
    rpm: int | None = None
    tpm: int | None = None
    tpm_counts: str = "max_tokens"  # max_tokens | usage (see TPM_COUNTS)
    max_concurrency: int | None = None
    fail_after_s: float | None = None  # after this many seconds since start, every chat request is a 500
    api_key: str | None = None  # when set, require "Authorization: Bearer <key>"
    models_endpoint: bool = True
    #: the model's context length: reported as max_model_len by /v1/models (like vLLM), and a request whose
    #: prompt + max_tokens exceeds it gets vLLM's 400; None: no context limit, none reported
    context_length: int | None = None
    #: a second model name the mock also serves, answering as a student (policy) model: plain answers of
    #: about ``student_tokens`` tokens, no CLAIR markers (see student.py); None: the teacher model only
    student_model: str | None = None
    student_tokens: int = STUDENT_DEFAULT_TOKENS

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model must be a non-empty string")
        if self.student_model is not None and (not self.student_model or self.student_model == self.model):
            raise ValueError("student_model must be a non-empty name that differs from model")
        if self.student_tokens < 1:
            raise ValueError("student_tokens must be >= 1")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if self.latency_dist not in ("fixed", "lognormal"):
            raise ValueError("latency_dist must be 'fixed' or 'lognormal'")
        if self.latency_sigma < 0:
            raise ValueError("latency_sigma must be >= 0")
        for name in FAULTS:
            rate = getattr(self, f"rate_{name}")
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"rate_{name} must be within [0, 1]")
        if self.retry_after_s < 0 or self.hang_s < 0:
            raise ValueError("retry_after_s and hang_s must be >= 0")
        for name in ("rpm", "tpm", "max_concurrency"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 (or None for no limit)")
        if self.tpm_counts not in TPM_COUNTS:
            raise ValueError(f"tpm_counts must be one of: {', '.join(TPM_COUNTS)}")
        if self.context_length is not None and self.context_length < 2:
            raise ValueError("context_length must be >= 2 (or None for no limit)")
        if self.fail_after_s is not None and self.fail_after_s < 0:
            raise ValueError("fail_after_s must be >= 0")

    def __repr__(self) -> str:  # never print the key
        shown = ", ".join(
            f"{f.name}={'***' if f.name == 'api_key' and self.api_key else getattr(self, f.name)!r}" for f in fields(self)
        )
        return f"MockConfig({shown})"

