"""A cheap, deterministic OpenAI-compatible stand-in endpoint (aiohttp.web) for demos, tests and benchmarks.

Endpoints
---------
``GET /v1/models``            ``{"object": "list", "data": [{"id": MODEL, "object": "model"}]}`` (404 when
                              ``models_endpoint=False``, like servers that lack it)
``POST /v1/chat/completions`` a non-streaming chat completion whose content is a CLAIR answer
                              (``build_answer``) revising the student solution found in the LAST user
                              message (the text between ``"{student_solution}: "`` and the last
                              ``"\\n\\n-----------------"``; the whole message when there is no such marker)
``GET /stats``                counters (JSON): requests, completions, per-status counts, injected faults,
                              limit rejections, in-flight / peak in-flight, token totals, ``cpu_s``
                              (``time.process_time()`` of the server process) and ``uptime_s``
``POST /stats/reset``         zero the counters (peak in-flight restarts at the current in-flight)
``GET /health``               ``ok``

Order of checks for a chat request: auth (401) -> ``fail_after_s`` (500) -> body / model validation
(400 / 404) -> ``max_concurrency`` (429) -> rpm / tpm buckets (429) -> injected fault -> latency -> answer.
Token counts are estimated as ``ceil(chars / 4)``; ``max_tokens`` (or ``max_completion_tokens``) is
honoured: a longer answer is cut to ``max_tokens * 4`` chars with ``finish_reason: "length"``.

Rate limits (``rpm`` / ``tpm``)
------------------------------
Each limit is a continuously refilling token bucket, like OpenAI's: it refills at ``limit / 60`` per
second, holds at most ``max(1, limit / 60)`` (one second's worth) and starts full. A request costs 1
request and ``prompt_tokens + max_tokens`` tokens (prompt tokens only when ``max_tokens`` is absent;
OpenAI charges its estimate up front too). A request is admitted when every bucket holds at least
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
well-formed completion whose content has no CLAIR markers). Latency is ``latency_ms`` (fixed) or
log-normal with that mean and ``latency_sigma``, clamped at 60x the mean, from a second seeded RNG.
Sleeping and hanging handlers wake at shutdown (their connections are closed), so ``runner.cleanup()``
returns promptly and silently.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import random
import re
import signal
import sys
import time
import zlib
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import orjson
from aiohttp import web

__all__ = [
    "ANSWER_STYLES",
    "STATE_KEY",
    "MockConfig",
    "answer_style",
    "build_answer",
    "main",
    "make_app",
    "mock_revision",
    "start_server",
]

_FAULTS = ("429", "500", "503", "hang", "drop", "malformed", "no_marker")


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
    # enforced limits
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    fail_after_s: float | None = None  # after this many seconds since start, every chat request is a 500
    api_key: str | None = None  # when set, require "Authorization: Bearer <key>"
    models_endpoint: bool = True

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model must be a non-empty string")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if self.latency_dist not in ("fixed", "lognormal"):
            raise ValueError("latency_dist must be 'fixed' or 'lognormal'")
        if self.latency_sigma < 0:
            raise ValueError("latency_sigma must be >= 0")
        for name in _FAULTS:
            rate = getattr(self, f"rate_{name}")
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"rate_{name} must be within [0, 1]")
        if self.retry_after_s < 0 or self.hang_s < 0:
            raise ValueError("retry_after_s and hang_s must be >= 0")
        for name in ("rpm", "tpm", "max_concurrency"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 (or None for no limit)")
        if self.fail_after_s is not None and self.fail_after_s < 0:
            raise ValueError("fail_after_s must be >= 0")

    def __repr__(self) -> str:  # never print the key
        shown = ", ".join(
            f"{f.name}={'***' if f.name == 'api_key' and self.api_key else getattr(self, f.name)!r}" for f in fields(self)
        )
        return f"MockConfig({shown})"


# ---------------------------------------------------------------------------------------------
# the mock teacher: a pure, deterministic minimal revision and the CLAIR answer around it
# ---------------------------------------------------------------------------------------------

_TYPO_FIXES = {
    "teh": "the", "becuase": "because", "wich": "which", "untill": "until", "recieve": "receive",
    "seperate": "separate", "definately": "definitely", "enviroment": "environment", "neccessary": "necessary",
    "beleive": "believe", "thier": "their", "diffrent": "different", "importent": "important",
    "begining": "beginning", "acheive": "achieve", "succesful": "successful", "occured": "occurred",
    "goverment": "government", "tommorow": "tomorrow", "accomodate": "accommodate", "adress": "address",
    "alot": "a lot", "wierd": "weird", "truely": "truly", "arguement": "argument", "calender": "calendar",
}
_TYPO_FIXES.update({k.capitalize(): v.capitalize() for k, v in list(_TYPO_FIXES.items())})
_TYPOS_LOWER = tuple(k for k in _TYPO_FIXES if k.islower())
_FILLERS = (
    "Basically", "To be honest", "As I mentioned before", "As I said before", "At the end of the day",
    "Needless to say", "In my opinion", "Honestly", "Obviously",
)
_MARKER_RE = re.compile(
    r"\{?\b(?:teacher[ _]+reasoning|(?:corrected|worsened)[ _]+student[ _]+solution)\b\}?"
    r"|\{(?:task|student_solution)\}",
    re.I,
)
_MARKER_SUBST = {"teacher": "teacher's notes", "corrected": "improved answer", "worsened": "weaker answer",
                 "{task": "the task", "{student_solution": "the answer"}
_EMPTY_REVISION = "No answer was provided."
_CLOSER = "I hope this helps!"


def _marker_sub(m: re.Match[str]) -> str:
    word = m.group(0).lower().lstrip("{")
    for key, repl in _MARKER_SUBST.items():
        if word.startswith(key.lstrip("{")):
            return repl
    return "the answer"  # pragma: no cover - every alternative of _MARKER_RE is listed above


def _wordch(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _typo_hits(text: str) -> list[tuple[int, str]]:
    """The first two whole-word misspellings (position, word) in text order. Plain ``str.find`` on a
    lower-cased copy: a regex alternation of ~50 words costs ~70 us per 1.6 KB answer, this ~10 us."""
    low = text.lower()
    if len(low) == len(text):
        space, needles = low, _TYPOS_LOWER
    else:  # rare Unicode case folding that changes lengths: search both spellings verbatim
        space, needles = text, tuple(_TYPO_FIXES)
    n = len(text)
    hits: list[tuple[int, str]] = []
    for typo in needles:
        i = space.find(typo)
        found = 0
        while i >= 0 and found < 2:
            j = i + len(typo)
            word = text[i:j]
            if word in _TYPO_FIXES and (i == 0 or not _wordch(text[i - 1])) and (j == n or not _wordch(text[j])):
                hits.append((i, word))
                found += 1
            i = space.find(typo, i + 1)
    hits.sort()
    return hits[:2]


def _filler_hit(text: str) -> tuple[int, str] | None:
    """The first filler opener ("Basically, x...") that starts a sentence and precedes a lower-case letter."""
    best: tuple[int, str] | None = None
    n = len(text)
    for phrase in _FILLERS:
        needle = phrase + ", "
        i = text.find(needle)
        while i >= 0 and (best is None or i < best[0]):
            j = i + len(needle)
            if j < n and "a" <= text[j] <= "z" and _starts_sentence(text, i):
                best = (i, phrase)
                break
            i = text.find(needle, i + 1)
    return best


def _starts_sentence(text: str, i: int) -> bool:
    if i == 0 or text[i - 1] == "\n":
        return True
    k = i
    while k > 0 and text[k - 1] in " \t":
        k -= 1
    return 0 < k < i and text[k - 1] in ".!?"


def _may_hold_marker(low: str) -> bool:
    return (
        ("teacher" in low and "reasoning" in low)
        or (("corrected" in low or "worsened" in low) and "solution" in low)
        or "{task}" in low
        or "{student_solution}" in low
    )


@lru_cache(maxsize=2048)
def _revise(student_solution: str) -> tuple[str, tuple[str, ...]]:
    """The mock's minimal edit and a note per change (cached: benchmarks resend the same rows)."""
    text = student_solution.strip()
    notes: list[str] = []
    if not text:
        return _EMPTY_REVISION, ("the student's answer was empty, so a short placeholder answer is given",)
    if _may_hold_marker(text.lower()) and _MARKER_RE.search(text):
        # the revision must never look like a CLAIR section header
        text = _MARKER_RE.sub(_marker_sub, text)
        notes.append("section-like identifiers are reworded so that the answer reads naturally")
    hits = _typo_hits(text)
    for i, word in reversed(hits):
        text = text[:i] + _TYPO_FIXES[word] + text[i + len(word) :]
    notes.extend(f"the misspelling '{word}' is corrected to '{_TYPO_FIXES[word]}'" for _, word in hits)
    filler = _filler_hit(text)
    if filler is not None:
        i, phrase = filler
        j = i + len(phrase) + 2
        text = text[:i] + text[j].upper() + text[j + 1 :]
        notes.append(f"the filler opener '{phrase},' is removed to make the sentence more direct")
    if len(notes) < 2 and " very " in text:
        text = text.replace(" very ", " ", 1)
        notes.append("the vague intensifier 'very' is dropped to tighten one sentence")
    if not notes:
        text = f"{text}\n\n{_CLOSER}"
        notes.append("a short friendly closing sentence is added to make the answer more engaging")
    return text.strip(), tuple(notes)


def mock_revision(student_solution: str) -> str:
    """The minimal edit the mock teacher makes (pure and deterministic): fixes up to two common
    misspellings, drops one filler opener ("Basically, ...") or one "very", else adds a closing line.
    The result is stripped, never empty and never contains a CLAIR marker."""
    return _revise(student_solution)[0]


_REASONING_INTROS = (
    "The student's answer addresses the task and is mostly on the right track, but a few small changes "
    "will make it clearer, more correct and more engaging.",
    "Overall, the student has understood the task and the structure of the answer is sound. Only a few "
    "details need attention.",
    "The answer covers the main points the task asks for. My goal is to improve it minimally, keeping "
    "the student's own wording wherever it is already good.",
)
_REASONING_BODY = (
    "Correctness: I checked each statement against the task. The content is broadly accurate, so there "
    "is no need to rewrite whole sections; fixing individual words is enough to remove the errors a "
    "reader would notice first.",
    "Clarity: spelling mistakes and filler phrases distract the reader and make the answer look less "
    "careful than it is. Removing them keeps the meaning intact while making every sentence easier to "
    "read.",
    "Engagement: the tone is friendly and suits the task. A more direct phrasing keeps the reader's "
    "attention without changing the substance or the length of the answer.",
    "Structure: the order of the ideas follows the task well, so I keep the paragraphs, lists and any "
    "code exactly as the student wrote them.",
    "Minimality: every part of the answer that is not corrected is copied verbatim, so that the "
    "revision differs from the original only where an improvement was necessary.",
)
_REASONING_CLOSE = (
    "With these changes the answer stays as close as possible to the original while being cleaner and "
    "more precise.",
    "These edits are small, but together they make the answer noticeably more polished.",
)

#: the answer layouts ``build_answer`` produces (index = style)
ANSWER_STYLES = ("plain", "bold_headers", "bold_identifiers", "markdown_headings", "mention_first")


def answer_style(student_solution: str) -> int:
    """The style the server uses for this solution (a deterministic hash, stable across processes)."""
    return zlib.crc32(student_solution.encode("utf-8", "surrogatepass")) % len(ANSWER_STYLES)


def _reasoning(student_solution: str, notes: tuple[str, ...]) -> str:
    h = zlib.crc32(student_solution.encode("utf-8", "surrogatepass"))
    changes = "\n".join(f"{i}. {note[:1].upper()}{note[1:]}." for i, note in enumerate(notes, 1))
    k = len(_REASONING_BODY)
    body = " ".join(_REASONING_BODY[(h + j) % k] for j in range(3))
    return (f"{_REASONING_INTROS[h % 3]}\n\nThe changes I will make:\n{changes}\n\n{body}\n\n"
            f"{_REASONING_CLOSE[(h >> 3) % 2]}")


def build_answer(student_solution: str, style: int) -> str:
    """The full CLAIR answer text for ``student_solution`` in answer style ``style`` (see ANSWER_STYLES).

    In every style the text after the revision header, stripped, is exactly ``mock_revision(student_solution)``.
    """
    revision, notes = _revise(student_solution)
    reasoning = _reasoning(student_solution, notes)
    s = style % len(ANSWER_STYLES)
    if s == 0:
        return f"{{teacher_reasoning}}: {reasoning}\n\n{{corrected_student_solution}}: {revision}"
    if s == 1:
        return f"**Teacher Reasoning:** {reasoning}\n\n**Corrected Student Solution:**\n\n{revision}"
    if s == 2:
        return f"**{{teacher_reasoning}}**: {reasoning}\n\n**{{corrected_student_solution}}**: {revision}"
    if s == 3:
        return f"## {{teacher_reasoning}}\n\n{reasoning}\n\n## {{corrected_student_solution}}\n\n{revision}"
    return (f"{{teacher_reasoning}}: {reasoning} Keeping this in mind, I will now write the "
            f"{{corrected_student_solution}} below.\n\n{{corrected_student_solution}}:\n{revision}")


def _no_marker_answer(student_solution: str) -> str:
    return f"Here is an improved version of the answer.\n\n{mock_revision(student_solution)}"


# ---------------------------------------------------------------------------------------------
# rate-limit buckets
# ---------------------------------------------------------------------------------------------


class _Bucket:
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
        out[f"x-ratelimit-reset-{kind}"] = _duration((self.capacity - self.level) / self.rate)


def _duration(seconds: float) -> str:
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


# ---------------------------------------------------------------------------------------------
# server state and handlers
# ---------------------------------------------------------------------------------------------

_JSON = "application/json"
_SEPARATOR = "\n\n-----------------"
_SOLUTION_MARK = "{student_solution}: "


def _err(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


_E_AUTH = _err("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
_E_500 = _err("The server had an error while processing your request. Sorry about that!", "server_error")
_E_503 = _err("The engine is currently overloaded, please try again later.", "server_error", "overloaded")
_E_429 = _err("Rate limit reached. Please try again later.", "requests", "rate_limit_exceeded")
_E_BUSY = _err("Too many concurrent requests.", "requests", "concurrency_limit_exceeded")
_E_FAIL = _err("The server is failing (fail_after_s elapsed).", "server_error")
_E_NOTFOUND = _err("Not found.", "invalid_request_error", "not_found")
_MALFORMED = b'{"id": "chatcmpl-mock", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assis'


class _State:
    def __init__(self, cfg: MockConfig) -> None:
        self.cfg = cfg
        self.fault_rng = random.Random(cfg.seed)
        self.latency_rng = random.Random(f"latency:{cfg.seed}")
        self.started = time.monotonic()
        self.rpm = _Bucket(cfg.rpm, self.started) if cfg.rpm else None
        self.tpm = _Bucket(cfg.tpm, self.started) if cfg.tpm else None
        self.auth = f"Bearer {cfg.api_key}" if cfg.api_key else None
        self.ids = itertools.count(1)
        self.sleepers: set[asyncio.Future[None]] = set()
        self.closing = False
        edges: list[tuple[float, str]] = []
        acc = 0.0
        for name in _FAULTS:
            rate = getattr(cfg, f"rate_{name}")
            if rate > 0:
                acc += rate
                edges.append((acc, name))
        self.fault_edges = tuple(edges)
        mean = cfg.latency_ms / 1000.0
        self.latency_mean = mean
        self.latency_mu = math.log(mean) - cfg.latency_sigma**2 / 2 if mean > 0 else 0.0
        self.models_body = orjson.dumps(
            {"object": "list", "data": [{"id": cfg.model, "object": "model", "created": 0, "owned_by": "mock"}]}
        )
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.completions = 0
        self.status: dict[int, int] = {}
        self.faults = dict.fromkeys((*_FAULTS, "fail_after"), 0)
        self.limited = {"rpm": 0, "tpm": 0, "concurrency": 0}
        self.peak_in_flight = self.in_flight
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.other_requests = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "completions": self.completions,
            "status": {str(k): v for k, v in sorted(self.status.items())},
            "faults": dict(self.faults),
            "limited": dict(self.limited),
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "other_requests": self.other_requests,
            "cpu_s": time.process_time(),
            "uptime_s": time.monotonic() - self.started,
        }

    def latency(self) -> float:
        mean = self.latency_mean
        if mean <= 0:
            return 0.0
        if self.cfg.latency_dist == "fixed":
            return mean
        return min(60.0 * mean, self.latency_rng.lognormvariate(self.latency_mu, self.cfg.latency_sigma))

    async def sleep(self, delay: float) -> bool:
        """Sleep ``delay`` s; returns False when woken early because the server shuts down."""
        if self.closing:
            return False
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        handle = loop.call_later(delay, _wake, fut)
        self.sleepers.add(fut)
        try:
            await fut
        finally:
            self.sleepers.discard(fut)
            handle.cancel()
        return not self.closing

    def shutdown(self) -> None:
        self.closing = True
        for fut in list(self.sleepers):
            _wake(fut)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


STATE_KEY = web.AppKey("clair_mock_state", _State)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI "parts" form
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _extract_solution(user_text: str) -> str:
    i = user_text.find(_SOLUTION_MARK)
    if i < 0:
        return user_text
    start = i + len(_SOLUTION_MARK)
    end = user_text.rfind(_SEPARATOR)
    return user_text[start:end] if end >= start else user_text[start:]


def _ceil4(n: int) -> int:
    return (n + 3) // 4


def make_app(cfg: MockConfig) -> web.Application:
    """The aiohttp application (state lives in ``app[STATE_KEY]``)."""
    st = _State(cfg)
    base_headers = {"Content-Type": _JSON}

    def reply(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
        st.status[status] = st.status.get(status, 0) + 1
        return web.Response(status=status, body=body, headers=headers or base_headers)

    def drop(request: web.BaseRequest) -> web.Response:
        # close the connection without answering; writing the placeholder response then fails with a
        # ConnectionError, which aiohttp treats as a client disconnect (no log, no warning)
        transport = request.transport
        if transport is not None:
            transport.close()
        return web.Response(status=204)

    async def models(request: web.Request) -> web.Response:
        st.other_requests += 1
        if st.auth is not None and request.headers.get("Authorization") != st.auth:
            return reply(401, _E_AUTH)
        if not cfg.models_endpoint:
            return reply(404, _E_NOTFOUND)
        return reply(200, st.models_body)

    async def chat(request: web.Request) -> web.StreamResponse:
        st.requests += 1
        st.in_flight += 1
        if st.in_flight > st.peak_in_flight:
            st.peak_in_flight = st.in_flight
        try:
            return await _chat(request)
        finally:
            st.in_flight -= 1

    async def _chat(request: web.Request) -> web.StreamResponse:
        if st.auth is not None and request.headers.get("Authorization") != st.auth:
            return reply(401, _E_AUTH)
        if cfg.fail_after_s is not None and time.monotonic() - st.started >= cfg.fail_after_s:
            st.faults["fail_after"] += 1
            return reply(500, _E_FAIL)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return reply(400, _err("We could not parse the JSON body of your request.", "invalid_request_error"))
        if not isinstance(body, dict):
            return reply(400, _err("The request body must be a JSON object.", "invalid_request_error"))
        model = body.get("model")
        if not isinstance(model, str):
            return reply(400, _err("you must provide a model parameter", "invalid_request_error", None, "model"))
        if model != cfg.model:
            return reply(404, _err(f"The model '{model}' does not exist or you do not have access to it.",
                                   "invalid_request_error", "model_not_found", "model"))
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return reply(400, _err("'messages' must be a non-empty array of message objects.",
                                   "invalid_request_error", None, "messages"))
        if body.get("stream"):
            return reply(400, _err("stream=true is not supported by the mock server.", "invalid_request_error",
                                   None, "stream"))
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                       or max_tokens < 1):
            return reply(400, _err("max_tokens must be a positive integer.", "invalid_request_error", None,
                                   "max_tokens"))
        if cfg.max_concurrency is not None and st.in_flight > cfg.max_concurrency:
            st.limited["concurrency"] += 1
            return reply(429, _E_BUSY)

        prompt_chars = 0
        user_text = None
        for m in messages:
            text = _content_text(m.get("content"))
            prompt_chars += len(text)
            if m.get("role") == "user":
                user_text = text
        if user_text is None:
            user_text = _content_text(messages[-1].get("content"))
        prompt_tokens = _ceil4(prompt_chars)

        headers = base_headers
        if st.rpm is not None or st.tpm is not None:
            headers = dict(base_headers)
            now = time.monotonic()
            wait_r = wait_t = 0.0
            if st.rpm is not None:
                st.rpm.refill(now)
                wait_r = st.rpm.wait(1)
            cost_t = prompt_tokens + (max_tokens or 0)
            if st.tpm is not None:
                st.tpm.refill(now)
                wait_t = st.tpm.wait(cost_t)
            wait = max(wait_r, wait_t)
            if wait <= 0:
                if st.rpm is not None:
                    st.rpm.level -= 1
                if st.tpm is not None:
                    st.tpm.level -= cost_t
            if st.rpm is not None:
                st.rpm.headers("requests", headers)
            if st.tpm is not None:
                st.tpm.headers("tokens", headers)
            if wait > 0:
                kind = "rpm" if wait_r >= wait_t else "tpm"
                st.limited[kind] += 1
                headers["Retry-After"] = str(max(1, math.ceil(wait)))
                headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
                what = "requests per min (RPM)" if kind == "rpm" else "tokens per min (TPM)"
                limit = cfg.rpm if kind == "rpm" else cfg.tpm
                msg = f"Rate limit reached for {what}: Limit {limit}. Please try again in {_duration(wait)}."
                return reply(429, _err(msg, "requests" if kind == "rpm" else "tokens", "rate_limit_exceeded"),
                             headers)

        fault = None
        if st.fault_edges:
            u = st.fault_rng.random()
            for edge, name in st.fault_edges:
                if u < edge:
                    fault = name
                    break
        if fault == "429":
            st.faults["429"] += 1
            if headers is base_headers:
                headers = dict(base_headers)
            headers["Retry-After"] = str(max(1, math.ceil(cfg.retry_after_s)))
            headers["retry-after-ms"] = str(math.ceil(cfg.retry_after_s * 1000))
            return reply(429, _E_429, headers)

        delay = st.latency()
        if delay > 0 and not await st.sleep(delay):
            return drop(request)  # shutting down
        if fault is not None:
            st.faults[fault] += 1
            if fault == "500":
                return reply(500, _E_500, headers)
            if fault == "503":
                return reply(503, _E_503, headers)
            if fault == "hang":
                await st.sleep(cfg.hang_s)
                return drop(request)
            if fault == "drop":
                return drop(request)
            if fault == "malformed":
                return reply(200, _MALFORMED, headers)

        solution = _extract_solution(user_text)
        if fault == "no_marker":
            answer = _no_marker_answer(solution)
        else:
            answer = build_answer(solution, answer_style(solution))
        completion_tokens = _ceil4(len(answer))
        finish = "stop"
        if max_tokens is not None and completion_tokens > max_tokens:
            answer = answer[: max_tokens * 4]
            completion_tokens = max_tokens
            finish = "length"
        st.completions += 1
        st.prompt_tokens += prompt_tokens
        st.completion_tokens += completion_tokens
        out = orjson.dumps({
            "id": f"chatcmpl-mock-{next(st.ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": cfg.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })
        return reply(200, out, headers)

    async def stats(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(st.snapshot()), headers=base_headers)

    async def stats_reset(request: web.Request) -> web.Response:
        st.reset()
        return web.Response(body=orjson.dumps(st.snapshot()), headers=base_headers)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def on_startup(app: web.Application) -> None:
        st.started = time.monotonic()

    async def on_shutdown(app: web.Application) -> None:
        st.shutdown()

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE_KEY] = st
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/stats", stats)
    app.router.add_post("/stats/reset", stats_reset)
    app.router.add_get("/health", health)
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app


async def start_server(cfg: MockConfig, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Start the mock on ``host:port`` (0 = any free port); returns the runner (``await runner.cleanup()``
    to stop it) and the bound port."""
    runner = web.AppRunner(make_app(cfg), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    return runner, bound


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    d = MockConfig()
    p = argparse.ArgumentParser(prog="python -m engine.tools.mockserver",
                                description="OpenAI-compatible mock endpoint that answers CLAIR revisions.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (default: %(default)s)")
    p.add_argument("--model", default=d.model)
    p.add_argument("--latency-ms", type=float, default=d.latency_ms)
    p.add_argument("--latency-dist", choices=("fixed", "lognormal"), default=d.latency_dist)
    p.add_argument("--latency-sigma", type=float, default=d.latency_sigma)
    p.add_argument("--seed", type=int, default=d.seed)
    for name in _FAULTS:
        p.add_argument(f"--rate-{name.replace('_', '-')}", type=float, default=0.0, dest=f"rate_{name}",
                       metavar="P", help=f"probability of the '{name}' fault per request")
    p.add_argument("--retry-after-s", type=float, default=d.retry_after_s)
    p.add_argument("--hang-s", type=float, default=d.hang_s)
    p.add_argument("--rpm", type=int, default=None)
    p.add_argument("--tpm", type=int, default=None)
    p.add_argument("--max-concurrency", type=int, default=None)
    p.add_argument("--fail-after-s", type=float, default=None)
    p.add_argument("--api-key-env", metavar="NAME", default=None,
                   help="require 'Authorization: Bearer $NAME' (the key is read from that environment variable)")
    p.add_argument("--no-models-endpoint", action="store_true", help="answer 404 to GET /v1/models")
    return p


async def _serve(cfg: MockConfig, host: str, port: int) -> int:
    runner, bound = await start_server(cfg, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"mock-server listening on http://{host}:{bound}/v1", flush=True)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            print(f"error: environment variable {args.api_key_env} is not set or empty", file=sys.stderr)
            return 2
    try:
        cfg = MockConfig(
            model=args.model, latency_ms=args.latency_ms, latency_dist=args.latency_dist,
            latency_sigma=args.latency_sigma, seed=args.seed, retry_after_s=args.retry_after_s, hang_s=args.hang_s,
            rpm=args.rpm, tpm=args.tpm, max_concurrency=args.max_concurrency, fail_after_s=args.fail_after_s,
            api_key=api_key, models_endpoint=not args.no_models_endpoint,
            **{f"rate_{name}": getattr(args, f"rate_{name}") for name in _FAULTS},
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    loop_factory = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        pass
    with asyncio.Runner(loop_factory=loop_factory) as r:
        return r.run(_serve(cfg, args.host, args.port))


if __name__ == "__main__":
    raise SystemExit(main())
