"""A cheap, deterministic OpenAI-compatible stand-in endpoint (aiohttp.web) for demos, tests and benchmarks.

Modules, one job each: ``config`` (``MockConfig``), ``revision`` (the minimal edit), ``answers`` (the
CLAIR answer around it), ``student`` (the plain answers of the student mode), ``protocol`` (request parsing, error and completion bodies), ``limits`` (rpm /
tpm buckets), ``faults`` (injected faults and latency), ``state`` (counters and sleeping handlers), ``app``
(the aiohttp application) and ``cli`` (the command). This package re-exports their public names.

Endpoints
---------
``GET /v1/models``            ``{"object": "list", "data": [{"id": MODEL, "object": "model"}]}`` (404 when
                              ``models_endpoint=False``, like servers that lack it); with ``context_length``
                              the entry also has ``"max_model_len": N``, like vLLM's
``POST /v1/chat/completions`` a non-streaming chat completion whose content is a CLAIR answer
                              (``build_answer``) revising the student solution found in the LAST user
                              message (the text between ``"{student_solution}: "`` and the last
                              ``"\\n\\n-----------------"``; the whole message when there is no such marker)
                              With ``student_model`` (``--student-model NAME``), a request for NAME gets a
                              plain student answer instead (see "Student mode" below)
``GET /stats``                counters (JSON): requests, completions, per-status counts, injected faults,
                              limit rejections, in-flight / peak in-flight, token totals, ``cpu_s``
                              (``time.process_time()`` of the server process) and ``uptime_s``; and the
                              student model's share of them: ``student_requests`` (requests naming it that
                              passed validation), ``student_completions``, ``student_prompt_tokens``,
                              ``student_completion_tokens``
``POST /stats/reset``         zero the counters (peak in-flight restarts at the current in-flight)
``GET /health``               ``ok``

Order of checks for a chat request: auth (401) -> ``fail_after_s`` (500) -> body / model validation
(400 / 404) -> ``context_length`` (400 with vLLM's "maximum context length" message when prompt +
max_tokens exceeds it) -> ``max_concurrency`` (429) -> rpm / tpm buckets (429) -> injected fault ->
latency -> answer.
Token counts are estimated as ``ceil(chars / 4)``; ``max_tokens`` (or ``max_completion_tokens``) is
honoured: a longer answer is cut to ``max_tokens * 4`` chars with ``finish_reason: "length"``.

Student mode
------------
``student_model`` names a second model the server also serves (``/v1/models`` lists both; any other
model is still refused with 404). Its answers are plain: no CLAIR markers, deterministic for a given
last user message and ``seed``, opened by a sentence that re-uses a few of the prompt's words, about
``student_tokens`` tokens long (``--student-tokens``, default 300; ~4 characters per token) and now and
then with a misspelling or filler the mock teacher fixes. ``max_tokens`` cuts them like any answer
(``finish_reason: "length"``). Auth, limits, faults and latency apply to both models alike (one set of
buckets per server); the CLAIR-only faults ``no_marker`` and ``identical`` leave a student answer as it
is, ``ramble`` runs it on to ``max_tokens``.

Rate limits (``rpm`` / ``tpm``)
------------------------------
Each limit is a continuously refilling token bucket, like OpenAI's: it refills at ``limit / 60`` per
second, holds at most ``max(1, limit / 60)`` (one second's worth) and starts full. A request costs 1
request and ``prompt_tokens + max_tokens`` tokens (prompt tokens only when ``max_tokens`` is absent):
like OpenAI, the tokens limit counts max_tokens at admission and gives nothing back when the answer is
shorter (``tpm_counts="max_tokens"``, the default; ``--tpm-counts max_tokens``). With
``tpm_counts="usage"`` (``--tpm-counts usage``) admission counts the prompt only and the completion
tokens are charged once the answer is made (the bucket may go into debt), like servers that count usage. A request is admitted when every bucket holds at least
``min(cost, capacity)``; the full cost is then taken, so a request larger than one second's worth of
tokens drives the bucket negative (debt) and later requests wait until it has refilled: the long-run
rate never exceeds the limit and no request is unadmittable. A refused request is not charged and
gets ``429`` with ``Retry-After`` (whole seconds, rounded up, at least 1), ``retry-after-ms`` (exact)
and an OpenAI-style body (``code: rate_limit_exceeded``, ``type: requests`` or ``tokens``).
Every chat answer from the limiter stage on (200, rate-limit 429, injected 429/500/503/malformed)
carries, when the limit is set (401/400/404 and concurrency 429s come earlier and carry none)::

    x-ratelimit-limit-requests      the configured rpm              (-tokens: tpm)
    x-ratelimit-remaining-requests  whole requests in the bucket now (after this request's charge)
    x-ratelimit-reset-requests      time until the bucket is full again, as a Go-style duration:
                                    "0s", "120ms", "1.5s", "6m0s"

``max_concurrency``: a request arriving while that many chat requests are already in progress gets
429 (no ``Retry-After``). Injected 429s (``rate_429``) carry ``Retry-After: ceil(retry_after_s)`` and
``retry-after-ms``.

Faults
------
One uniform draw per admitted request from ``random.Random(seed)`` picks at most one fault; the
probability of each is its rate (when the rates sum to <= 1; listed order wins otherwise):
``rate_429`` (immediate 429), then, after the latency, ``rate_500``, ``rate_503``, ``rate_hang`` (no
answer for ``hang_s`` seconds, then the connection is closed), ``rate_drop`` (the connection is closed
without an answer), ``rate_malformed`` (200 whose body is truncated JSON), ``rate_no_marker`` (200 with a
well-formed completion whose content has no CLAIR markers), ``rate_identical`` (200 with a well-formed
CLAIR answer whose revision is the student solution unchanged), ``rate_ramble`` (the answer runs on with
filler to ``max_tokens``, 4096 without one, ending with ``finish_reason: "length"``: a rambling model).
Latency is ``latency_ms`` (fixed) or
log-normal with that mean and ``latency_sigma``, clamped at 60x the mean, from a second seeded RNG.
Sleeping and hanging handlers wake at shutdown (their connections are closed), so ``runner.cleanup()``
returns promptly and silently.
"""

from __future__ import annotations

from engine.tools.mockserver.answers import ANSWER_STYLES, answer_style, build_answer
from engine.tools.mockserver.app import STATE_KEY, make_app, start_server
from engine.tools.mockserver.cli import main
from engine.tools.mockserver.config import MockConfig
from engine.tools.mockserver.revision import mock_revision
from engine.tools.mockserver.student import StudentAnswers

__all__ = [
    "ANSWER_STYLES",
    "STATE_KEY",
    "MockConfig",
    "StudentAnswers",
    "answer_style",
    "build_answer",
    "main",
    "make_app",
    "mock_revision",
    "start_server",
]
