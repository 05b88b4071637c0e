"""The bundled mock endpoint: answers, revisions, limits, faults, stats and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from engine.tools.mockserver.answers import ANSWER_STYLES, answer_style, build_answer
from engine.tools.mockserver.app import STATE_KEY, make_app, start_server
from engine.tools.mockserver.cli import main as mock_main
from engine.tools.mockserver.config import MockConfig
from engine.tools.mockserver.limits import duration
from engine.tools.mockserver.revision import EMPTY_REVISION, mock_revision, revise
from engine.tools.synthetic.rows import generate_rows

ROOT = Path(__file__).resolve().parents[1]

INSTRUCTION = (
    "You are a teacher and your task is to minimally improve a student's answer. I will give you a {task} and a "
    "{student_solution}. Your job is to revise the {student_solution} such that it is clearer, more correct, and "
    "more engaging. Copy all non-corrected parts of the student's answer. Do not allude to the "
    "{corrected_student_solution} being a revision or a correction in your final solution."
)


def body_b(task: str, solution: str) -> str:
    return (
        f"{{task}}: {task}\n\n{{student_solution}}: {solution}\n\n-----------------\n\n"
        "Let's first think step by step with a {teacher_reasoning} to decide how to improve the "
        "{student_solution}, then give the {corrected_student_solution}. Mention the {teacher_reasoning} and "
        "{corrected_student_solution} identifiers to structure your answer."
    )


def chat_body(solution: str, task: str = "Say something helpful.", **extra: object) -> dict:
    return {
        "model": "mock-clair",
        "messages": [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": body_b(task, solution)}],
        "temperature": 0.7,
        **extra,
    }


# a header = the identifier at the start of a line, optionally as a markdown heading, bolded (the bold
# must be balanced: a revision may itself start with "**Title**") and/or followed by a colon
def _header(ident: str) -> re.Pattern[str]:
    i = rf"\{{?{ident}\}}?"
    return re.compile(rf"^[ \t]*(?:#{{1,6}}[ \t]*)?(?:\*\*{i}[ \t]*:?\*\*[ \t]*:?|{i}[ \t]*:?)", re.I | re.M)


_REV_HEADER = _header(r"corrected[ _]student[ _]solution")
_RSN_HEADER = _header(r"teacher[ _]reasoning")
_ANY_MARKER = re.compile(r"teacher[ _]reasoning|(corrected|worsened)[ _]student[ _]solution", re.I)


def parse(answer: str) -> tuple[str, str]:
    """(rational, revision) split at the first line-start revision header (a reference parser for tests)."""
    m = _REV_HEADER.search(answer)
    assert m is not None, answer[:300]
    r = _RSN_HEADER.search(answer)
    assert r is not None and r.end() <= m.start()
    return answer[r.end() : m.start()].strip(), answer[m.end() :].strip()


SOLUTIONS = [row["rejected"][1]["content"] for row in generate_rows(60, seed=11)] + [
    "Teh answer is 42.",
    "  leading and trailing whitespace, very much so  \n\n",
    "No flaws here.",
    "As a {teacher_reasoning} I say: the Corrected Student Solution is below.\n{corrected_student_solution}: x",
    "line one\n\n-----------------\n\nline two with a rule above",
    "",
]


@contextlib.asynccontextmanager
async def served(**kw: object) -> AsyncIterator[aiohttp.ClientSession]:
    runner, port = await start_server(MockConfig(**kw))  # type: ignore[arg-type]
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
            yield session
    finally:
        await runner.cleanup()


async def stats(s: aiohttp.ClientSession) -> dict:
    async with s.get("/stats") as r:
        return await r.json()


# ------------------------------------------------------------------------------------ pure functions


def test_mock_revision_is_deterministic_minimal_and_clean() -> None:
    changed = 0
    for sol in SOLUTIONS:
        rev = mock_revision(sol)
        assert rev == mock_revision(sol) == revise.__wrapped__(sol)[0]
        assert rev and rev == rev.strip()
        assert not _ANY_MARKER.search(rev)
        assert "{student_solution}" not in rev and "{task}" not in rev
        changed += rev != sol.strip()
    assert changed == len(SOLUTIONS)
    assert mock_revision("Teh answer is 42.") == "The answer is 42."
    assert mock_revision("I beleive it is teh best. Basically, it works.") == "I believe it is the best. It works."
    assert mock_revision("") == mock_revision("  \n ") == EMPTY_REVISION
    assert mock_revision("No flaws here.") == "No flaws here.\n\nI hope this helps!"


def test_sample_rows_get_a_small_real_edit() -> None:
    for sol in SOLUTIONS[:60]:
        rev = mock_revision(sol)
        assert rev != sol
        assert abs(len(rev) - len(sol)) < 60  # minimal: a word or two and one phrase


@pytest.mark.parametrize("style", range(len(ANSWER_STYLES)))
def test_every_style_parses_to_the_revision(style: int) -> None:
    for sol in SOLUTIONS:
        answer = build_answer(sol, style)
        rational, revision = parse(answer)
        assert revision == mock_revision(sol)
        assert rational and not rational.startswith(("*", ":")) and not rational.endswith("*")
        assert "Teacher Reasoning" not in rational and "**:" not in rational
        if ANSWER_STYLES[style] == "mention_first":
            first = answer.find("{corrected_student_solution}")
            assert first < _REV_HEADER.search(answer).start()  # type: ignore[union-attr]
            assert answer[first - 1] == " "  # mentioned inside a sentence, not a header


def test_answer_style_is_stable_and_covers_all_styles() -> None:
    seen = {answer_style(s) for s in SOLUTIONS}
    assert seen == set(range(len(ANSWER_STYLES)))
    assert answer_style("abc") == answer_style("abc")
    assert build_answer("abc", 7) == build_answer("abc", 7 % len(ANSWER_STYLES))


def test_duration_format() -> None:
    d = duration
    assert [d(0), d(-1), d(0.12), d(0.0001), d(1), d(1.5), d(59.9996), d(360), d(3723)] == [
        "0s", "0s", "120ms", "1ms", "1s", "1.5s", "60s", "6m0s", "1h2m3s",
    ]


def test_config_validation_and_secret_free_repr() -> None:
    for bad, msg in [
        ({"rate_500": 1.5}, "rate_500 must be within"),
        ({"latency_dist": "uniform"}, "latency_dist must be"),
        ({"rpm": 0}, "rpm must be >= 1"),
        ({"latency_ms": -1}, "latency_ms must be >= 0"),
        ({"fail_after_s": -2}, "fail_after_s must be >= 0"),
    ]:
        with pytest.raises(ValueError, match=msg):
            MockConfig(**bad)  # type: ignore[arg-type]
    assert "s3cret" not in repr(MockConfig(api_key="s3cret"))


def test_lognormal_latency_keeps_the_mean_and_clamps() -> None:
    st = make_app(MockConfig(latency_ms=10, latency_dist="lognormal", latency_sigma=1.0, seed=3))[STATE_KEY].inject
    xs = [st.latency() for _ in range(40000)]
    assert abs(sum(xs) / len(xs) - 0.010) < 0.0008
    assert max(xs) <= 0.6 + 1e-12
    assert make_app(MockConfig(latency_ms=10))[STATE_KEY].inject.latency() == 0.010
    st2 = make_app(MockConfig(latency_ms=10, latency_dist="lognormal", latency_sigma=3.0))[STATE_KEY].inject
    assert max(st2.latency() for _ in range(5000)) == pytest.approx(0.6)


# ------------------------------------------------------------------------------------ HTTP behaviour


async def test_completion_shape_and_usage() -> None:
    sol = SOLUTIONS[0]
    body = chat_body(sol, max_tokens=4096)
    async with served() as s:
        async with s.post("/v1/chat/completions", json=body) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("application/json")
            assert "x-ratelimit-limit-requests" not in r.headers  # no limits configured
            d = await r.json()
    assert d["object"] == "chat.completion" and d["model"] == "mock-clair" and d["id"].startswith("chatcmpl-")
    assert isinstance(d["created"], int)
    (choice,) = d["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert content == build_answer(sol, answer_style(sol))
    assert parse(content)[1] == mock_revision(sol)
    prompt_chars = sum(len(m["content"]) for m in body["messages"])
    u = d["usage"]
    assert u["prompt_tokens"] == math.ceil(prompt_chars / 4)
    assert u["completion_tokens"] == math.ceil(len(content) / 4)
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]


async def test_contextualai_variant_and_plain_user_message() -> None:
    sol = SOLUTIONS[3]
    one_user = {"model": "mock-clair", "messages": [{"role": "system", "content": ""},
                                                    {"role": "user", "content": INSTRUCTION + "\n\n" + body_b("T", sol) + "\n\n"}]}
    plain = {"model": "mock-clair", "messages": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "x"},
                                                 {"role": "user", "content": [{"type": "text", "text": "Teh end."}]}]}
    async with served() as s:
        async with s.post("/v1/chat/completions", json=one_user) as r:
            assert parse((await r.json())["choices"][0]["message"]["content"])[1] == mock_revision(sol)
        async with s.post("/v1/chat/completions", json=plain) as r:
            assert parse((await r.json())["choices"][0]["message"]["content"])[1] == "The end."
        ruled = SOLUTIONS[-2]  # the solution itself contains the separator line
        assert "\n\n-----------------" in ruled
        async with s.post("/v1/chat/completions", json=chat_body(ruled)) as r:
            assert parse((await r.json())["choices"][0]["message"]["content"])[1] == mock_revision(ruled)


async def test_max_tokens_truncates_with_finish_reason_length() -> None:
    async with served() as s:
        async with s.post("/v1/chat/completions", json=chat_body(SOLUTIONS[1], max_tokens=50)) as r:
            d = await r.json()
        async with s.post("/v1/chat/completions", json=chat_body(SOLUTIONS[1], max_completion_tokens=60)) as r:
            d2 = await r.json()
    assert d["choices"][0]["finish_reason"] == "length"
    assert d["usage"]["completion_tokens"] == 50
    assert d["choices"][0]["message"]["content"] == build_answer(SOLUTIONS[1], answer_style(SOLUTIONS[1]))[:200]
    assert d2["usage"]["completion_tokens"] == 60 and d2["choices"][0]["finish_reason"] == "length"


async def test_request_validation_errors() -> None:
    async with served() as s:
        async with s.post("/v1/chat/completions", json={**chat_body("x"), "model": "gpt-9"}) as r:
            assert r.status == 404
            err = (await r.json())["error"]
            assert err["type"] == "invalid_request_error" and err["code"] == "model_not_found"
            assert "gpt-9" in err["message"]
        for payload in (b"", b"{not json", b"[1, 2]", b'{"model": "mock-clair"}', b'{"messages": []}',
                        orjson.dumps({**chat_body("x"), "max_tokens": 0}),
                        orjson.dumps({**chat_body("x"), "stream": True})):
            async with s.post("/v1/chat/completions", data=payload,
                              headers={"Content-Type": "application/json"}) as r:
                assert r.status == 400, payload
                assert "message" in (await r.json())["error"]
        async with s.post("/v1/chat/completions", json=chat_body("still alive")) as r:
            assert r.status == 200  # one bad request never kills the server
        st = await stats(s)
    assert st["status"] == {"200": 1, "400": 7, "404": 1}


async def test_models_endpoint_and_its_absence() -> None:
    async with served(model="m-1") as s:
        async with s.get("/v1/models") as r:
            assert r.status == 200
            d = await r.json()
    assert d["object"] == "list" and d["data"][0]["id"] == "m-1" and d["data"][0]["object"] == "model"
    async with served(models_endpoint=False) as s:
        async with s.get("/v1/models") as r:
            assert r.status == 404
        async with s.post("/v1/chat/completions", json=chat_body("x")) as r:
            assert r.status == 200


async def test_api_key_required() -> None:
    async with served(api_key="k-123") as s:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "k-123"}):
            async with s.post("/v1/chat/completions", json=chat_body("x"), headers=headers) as r:
                assert r.status == 401
                assert (await r.json())["error"]["code"] == "invalid_api_key"
            async with s.get("/v1/models", headers=headers) as r:
                assert r.status == 401
        good = {"Authorization": "Bearer k-123"}
        async with s.post("/v1/chat/completions", json=chat_body("x"), headers=good) as r:
            assert r.status == 200
            assert "k-123" not in await r.text()
        async with s.get("/v1/models", headers=good) as r:
            assert r.status == 200


@pytest.mark.parametrize("status", [500, 503])
async def test_fault_server_errors(status: int) -> None:
    async with served(**{f"rate_{status}": 1.0}) as s:
        for _ in range(3):
            async with s.post("/v1/chat/completions", json=chat_body("x")) as r:
                assert r.status == status
                assert (await r.json())["error"]["type"] == "server_error"
        st = await stats(s)
    assert st["faults"][str(status)] == 3 and st["completions"] == 0


async def test_fault_429_has_retry_after() -> None:
    async with served(rate_429=1.0, retry_after_s=2.5) as s:
        async with s.post("/v1/chat/completions", json=chat_body("x")) as r:
            assert r.status == 429
            assert r.headers["Retry-After"] == "3" and r.headers["retry-after-ms"] == "2500"
            assert (await r.json())["error"]["code"] == "rate_limit_exceeded"
        assert (await stats(s))["faults"]["429"] == 1


async def test_fault_malformed_and_no_marker() -> None:
    async with served(rate_malformed=1.0) as s:
        async with s.post("/v1/chat/completions", json=chat_body("x")) as r:
            assert r.status == 200
            raw = await r.read()
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)
    sol = SOLUTIONS[2]
    async with served(rate_no_marker=1.0) as s:
        async with s.post("/v1/chat/completions", json=chat_body(sol)) as r:
            d = await r.json()
        st = await stats(s)
    content = d["choices"][0]["message"]["content"]
    assert d["choices"][0]["finish_reason"] == "stop"
    assert not _ANY_MARKER.search(content) and mock_revision(sol) in content
    assert st["faults"]["no_marker"] == 1 and st["completions"] == 1


async def test_fault_identical_answers_the_student_solution_unchanged() -> None:
    from engine.core.types import DEFAULT_MARKERS
    from engine.parse import parse_answer

    sol = "  " + SOLUTIONS[3] + "\n"
    async with served(rate_identical=1.0) as s:
        async with s.post("/v1/chat/completions", json=chat_body(sol)) as r:
            d = await r.json()
        st = await stats(s)
    content = d["choices"][0]["message"]["content"]
    pr = parse_answer(content, truncated=False, markers=DEFAULT_MARKERS)
    assert pr.ok and pr.status == "ok" and pr.revision == sol.strip() != mock_revision(sol)
    assert st["faults"]["identical"] == 1 and st["completions"] == 1


async def test_fault_drop_closes_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    async with served(rate_drop=1.0) as s:
        for _ in range(2):
            with pytest.raises(aiohttp.ClientConnectionError):
                async with s.post("/v1/chat/completions", json=chat_body("x")) as r:
                    await r.read()
        st = await stats(s)
    assert st["faults"]["drop"] == 2 and st["status"] == {} and st["in_flight"] == 0
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]


async def test_fault_hang_times_out_and_shutdown_is_prompt(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    runner, port = await start_server(MockConfig(rate_hang=1.0, hang_s=600))
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(base_url=url) as s:
        with pytest.raises(asyncio.TimeoutError):
            async with s.post("/v1/chat/completions", json=chat_body("x"),
                              timeout=aiohttp.ClientTimeout(total=0.2)) as r:
                await r.read()
        st = await stats(s)
        assert st["faults"]["hang"] == 1 and st["in_flight"] == 1
        # a second hanging request whose client is still waiting when the server stops
        pending = asyncio.ensure_future(s.post("/v1/chat/completions", json=chat_body("y")))
        while (await stats(s))["in_flight"] < 2:
            await asyncio.sleep(0.01)
        st = runner.app[STATE_KEY]
        assert len(st.sleepers) == 2 and st.woken_at_shutdown == 0
        # must not wait for hang_s (nor for the 5 s shutdown timeout): shutdown wakes both sleeping
        # handlers, which then drop their connections
        await runner.cleanup()
        assert st.woken_at_shutdown == 2 and not st.sleepers and st.in_flight == 0
        with pytest.raises(aiohttp.ClientConnectionError):
            await pending
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]


async def test_faults_follow_the_seed() -> None:
    async def statuses(seed: int) -> list[int]:
        async with served(rate_500=0.5, seed=seed) as s:
            out = []
            for _ in range(24):
                async with s.post("/v1/chat/completions", json=chat_body("x")) as r:
                    out.append(r.status)
            return out

    a, b, c = await statuses(1), await statuses(1), await statuses(2)
    assert a == b and a != c and set(a) == {200, 500}


async def test_rpm_limit_429_with_headers() -> None:
    async with served(rpm=60) as s:  # one request per second, bucket of one
        async with s.post("/v1/chat/completions", json=chat_body("x")) as r:
            assert r.status == 200
            assert r.headers["x-ratelimit-limit-requests"] == "60"
            assert r.headers["x-ratelimit-remaining-requests"] == "0"
            assert re.fullmatch(r"\d+ms|1s|0\.\d+s", r.headers["x-ratelimit-reset-requests"])
            assert "x-ratelimit-limit-tokens" not in r.headers
        async with s.post("/v1/chat/completions", json=chat_body("x")) as r:
            assert r.status == 429
            assert r.headers["Retry-After"] == "1"
            assert 0 < int(r.headers["retry-after-ms"]) <= 1000
            assert r.headers["x-ratelimit-remaining-requests"] == "0"
            err = (await r.json())["error"]
            assert err["code"] == "rate_limit_exceeded" and err["type"] == "requests"
        st = await stats(s)
    assert st["limited"]["rpm"] == 1 and st["status"] == {"200": 1, "429": 1}


async def test_rpm_bucket_refills_continuously() -> None:
    async with served(rpm=1200) as s:  # 20 per second, bucket of 20
        codes = []
        for _ in range(25):
            async with s.post("/v1/chat/completions", json=chat_body("x")) as r:
                codes.append(r.status)
        assert codes[:20] == [200] * 20 and 429 in codes[20:]
        await asyncio.sleep(0.12)  # refills 2 requests
        async with s.post("/v1/chat/completions", json=chat_body("x")) as r:
            assert r.status == 200


async def test_tpm_limit_charges_prompt_plus_max_tokens() -> None:
    body = chat_body("x", max_tokens=800)
    async with served(tpm=60_000) as s:  # 1000 tokens per second
        async with s.post("/v1/chat/completions", json=body) as r:
            assert r.status == 200
            p = (await r.json())["usage"]["prompt_tokens"]
            assert r.headers["x-ratelimit-limit-tokens"] == "60000"
            remaining = int(r.headers["x-ratelimit-remaining-tokens"])
            assert 1000 - p - 800 - 5 <= remaining <= 1000 - p - 800
            assert "x-ratelimit-limit-requests" not in r.headers
        async with s.post("/v1/chat/completions", json=body) as r:
            assert r.status == 429
            assert (await r.json())["error"]["type"] == "tokens"
            assert int(r.headers["Retry-After"]) >= 1
        assert (await stats(s))["limited"]["tpm"] == 1
    # a request bigger than one second's worth is admitted on a full bucket and leaves a debt
    async with served(tpm=6_000, rpm=6000) as s:  # 100 tokens/s
        async with s.post("/v1/chat/completions", json=chat_body("x", max_tokens=500)) as r:
            assert r.status == 200 and r.headers["x-ratelimit-remaining-tokens"] == "0"
            assert r.headers["x-ratelimit-remaining-requests"] == "99"
        async with s.post("/v1/chat/completions", json=chat_body("x", max_tokens=1)) as r:
            assert r.status == 429 and int(r.headers["Retry-After"]) >= 5


async def test_max_concurrency_429() -> None:
    async with served(max_concurrency=2, latency_ms=150) as s:

        async def one() -> int:
            async with s.post("/v1/chat/completions", json=chat_body("x")) as r:
                await r.read()
                return r.status

        codes = await asyncio.gather(*(one() for _ in range(5)))
        st = await stats(s)
    assert sorted(codes) == [200, 200, 429, 429, 429]
    assert st["limited"]["concurrency"] == 3 and st["peak_in_flight"] >= 3


async def test_fail_after_s() -> None:
    async with served(fail_after_s=0) as s:
        async with s.post("/v1/chat/completions", json=chat_body("x")) as r:
            assert r.status == 500
        async with s.get("/v1/models") as r:
            assert r.status == 200  # only chat requests fail
        assert (await stats(s))["faults"]["fail_after"] == 1
    async with served(fail_after_s=3600) as s:
        async with s.post("/v1/chat/completions", json=chat_body("x")) as r:
            assert r.status == 200


async def test_stats_counters_and_reset() -> None:
    async with served(latency_ms=20) as s:
        async def one(i: int) -> None:
            async with s.post("/v1/chat/completions", json=chat_body(f"a{i}")) as r:
                await r.read()

        await asyncio.gather(*(one(i) for i in range(4)))
        async with s.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}):
            pass
        st = await stats(s)
        assert st["requests"] == 5 and st["completions"] == 4
        assert st["status"] == {"200": 4, "404": 1}
        assert st["in_flight"] == 0 and st["peak_in_flight"] == 4
        assert st["prompt_tokens"] > 0 and st["completion_tokens"] > 0
        assert st["cpu_s"] > 0 and st["uptime_s"] >= 0
        assert set(st["faults"]) == {"429", "500", "503", "hang", "drop", "malformed", "no_marker", "identical",
                                     "ramble", "fail_after"}
        async with s.post("/stats/reset") as r:
            zero = await r.json()
        assert zero["requests"] == zero["completions"] == zero["peak_in_flight"] == 0 and zero["status"] == {}
        async with s.get("/health") as r:
            assert await r.text() == "ok"


async def test_latency_is_applied() -> None:
    runner, port = await start_server(MockConfig(latency_ms=80))
    st = runner.app[STATE_KEY]
    slept: list[float] = []
    real_sleep = st.sleep

    async def recording_sleep(delay: float) -> bool:  # the real sleep, with a record of each delay
        slept.append(delay)
        return await real_sleep(delay)

    st.sleep = recording_sleep  # type: ignore[method-assign]
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as s:
            async with s.post("/v1/chat/completions", json=chat_body("x")) as r:
                assert r.status == 200
            assert slept == [0.080]  # the answer waited for the configured latency
            async with s.get("/v1/models") as r:
                assert r.status == 200
        assert slept == [0.080]  # only chat requests wait
    finally:
        await runner.cleanup()


def test_cli_serves_and_stops_on_sigterm() -> None:
    env = {**os.environ, "MOCK_TEST_KEY": "abc", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.tools.mockserver", "--port", "0", "--model", "cli-model", "--rate-500", "0",
         "--rpm", "6000", "--max-concurrency", "8", "--api-key-env", "MOCK_TEST_KEY", "--no-models-endpoint"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.fullmatch(r"mock-server listening on http://127\.0\.0\.1:(\d+)/v1\n", line)
        assert m, line

        async def probe() -> tuple[int, int, int]:
            async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{m.group(1)}") as s:
                body = {**chat_body("x"), "model": "cli-model"}
                async with s.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer abc"}) as r:
                    a = r.status
                async with s.post("/v1/chat/completions", json=body) as r:
                    b = r.status
                async with s.get("/v1/models", headers={"Authorization": "Bearer abc"}) as r:
                    c = r.status
                return a, b, c

        assert asyncio.run(probe()) == (200, 401, 404)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "abc" not in out + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_cli_rejects_missing_key_env(capsys: pytest.CaptureFixture[str]) -> None:
    assert mock_main(["--api-key-env", "CLAIR_SURELY_UNSET_VAR_123"]) == 2
    assert "CLAIR_SURELY_UNSET_VAR_123" in capsys.readouterr().err
    assert mock_main(["--rate-500", "2"]) == 2


# ------------------------------------------------------------------------- issue 15: budgets and context


async def test_ramble_runs_on_to_max_tokens_with_finish_reason_length() -> None:
    sol = SOLUTIONS[2]
    async with served(rate_ramble=1.0) as s:
        async with s.post("/v1/chat/completions", json=chat_body(sol, max_tokens=900)) as r:
            d = await r.json()
        async with s.post("/v1/chat/completions", json=chat_body(sol)) as r:  # no max_tokens: 4096
            d2 = await r.json()
        st = await stats(s)
    text = d["choices"][0]["message"]["content"]
    assert d["choices"][0]["finish_reason"] == "length" and d["usage"]["completion_tokens"] == 900
    assert len(text) == 900 * 4 and text.startswith(build_answer(sol, answer_style(sol)))  # the answer, run on
    assert d2["usage"]["completion_tokens"] == 4096 and d2["choices"][0]["finish_reason"] == "length"
    assert st["faults"]["ramble"] == 2 and st["completion_tokens"] == 900 + 4096
    async with served(rate_ramble=0.05, seed=1) as s:
        finishes = []
        for _ in range(200):
            async with s.post("/v1/chat/completions", json=chat_body(sol, max_tokens=2000)) as r:
                finishes.append((await r.json())["choices"][0]["finish_reason"])
        st = await stats(s)
    assert finishes.count("length") == st["faults"]["ramble"] and 2 <= st["faults"]["ramble"] <= 25


async def test_tpm_counts_usage_charges_the_completion_after_the_answer() -> None:
    body = chat_body("x", max_tokens=800)
    async with served(tpm=60_000, tpm_counts="usage") as s:  # 1000 tokens per second
        async with s.post("/v1/chat/completions", json=body) as r:
            assert r.status == 200
            d = await r.json()
            p, c = d["usage"]["prompt_tokens"], d["usage"]["completion_tokens"]
            remaining = int(r.headers["x-ratelimit-remaining-tokens"])
            assert 1000 - p - 5 <= remaining <= 1000 - p  # admission: the prompt only, not max_tokens
        async with s.post("/v1/chat/completions", json=body) as r:
            # the first answer's completion was charged afterwards: this one waits for it
            left = 1000 - p - c
            assert (r.status == 200) == (left >= p)
    with pytest.raises(ValueError, match="tpm_counts must be one of: max_tokens, usage"):
        MockConfig(tpm_counts="estimate")


async def test_context_length_is_reported_like_vllm_and_enforced() -> None:
    async with served(context_length=1000) as s:
        async with s.get("/v1/models") as r:
            entry = (await r.json())["data"][0]
        async with s.post("/v1/chat/completions", json=chat_body("x", max_tokens=300)) as r:
            assert r.status == 200
            p = (await r.json())["usage"]["prompt_tokens"]
        async with s.post("/v1/chat/completions", json=chat_body("x", max_tokens=1000 - p + 1)) as r:
            assert r.status == 400
            msg = (await r.json())["error"]["message"]
    assert entry["max_model_len"] == 1000
    assert msg.startswith("This model's maximum context length is 1000 tokens. However, you requested 1001 tokens")
    async with served() as s:
        async with s.get("/v1/models") as r:
            assert "max_model_len" not in (await r.json())["data"][0]
