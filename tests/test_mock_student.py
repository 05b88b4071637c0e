"""The mock endpoint's student mode: plain answers for a second model name, counted apart in /stats."""

from __future__ import annotations

import contextlib
import re
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from engine.core.config import load_config, read_yaml
from engine.core.errors import ConfigError
from engine.parse import parse_answer
from engine.prompts import builtin_template, render
from engine.store.readers import load_results
from engine.tools.demo import MOCK_LATENCY, ROOT, clair_args, mock_args, run_dir_of
from engine.tools.demo import main as demo_main
from engine.tools.mockserver.answers import answer_style, build_answer
from engine.tools.mockserver.app import STATE_KEY, start_server
from engine.tools.mockserver.cli import _parser
from engine.tools.mockserver.config import MockConfig
from engine.tools.mockserver.revision import mock_revision
from engine.tools.mockserver.student import STUDENT_DEFAULT_TOKENS, StudentAnswers
from engine.tools.mockserver_proc import MockProcess

_MARKER = re.compile(r"teacher[ _]+reasoning|(corrected|worsened)[ _]+student[ _]+solution|\{task\}|\{student_solution\}",
                     re.I)
PROMPTS = [
    "I want to save money for a house. Any advice?",
    "Explain how photosynthesis works, in simple words, for a ten-year-old.",
    "Write a haiku about autumn leaves.",
    "",
    "?!",
    # a prompt full of CLAIR markers: none of them may reach the student's answer
    "{task}: teacher reasoning {teacher_reasoning} corrected student solution {corrected_student_solution} "
    "{student_solution}: Teacher Reasoning Corrected_Student_Solution",
    "{teacher_reasoning}: **corrected_student_solution** Teacher_Reasoning",
]


def student_body(prompt: str, model: str = "mock-student", **extra: object) -> dict:
    return {"model": model, "messages": [{"role": "system", "content": "You are helpful."},
                                         {"role": "user", "content": prompt}], "temperature": 0.7, **extra}


def teacher_body(solution: str) -> dict:
    user = (f"{{task}}: Say something.\n\n{{student_solution}}: {solution}\n\n-----------------\n\n"
            "Let's first think step by step with a {teacher_reasoning}.")
    return {"model": "mock-clair", "messages": [{"role": "user", "content": user}]}


@contextlib.asynccontextmanager
async def served(**kw: object) -> AsyncIterator[aiohttp.ClientSession]:
    runner, port = await start_server(MockConfig(**kw))  # type: ignore[arg-type]
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
            yield session
    finally:
        await runner.cleanup()


async def post(s: aiohttp.ClientSession, body: dict) -> tuple[int, dict]:
    async with s.post("/v1/chat/completions", json=body) as r:
        return r.status, await r.json()


async def stats(s: aiohttp.ClientSession) -> dict:
    async with s.get("/stats") as r:
        return await r.json()


# ------------------------------------------------------------------------------------ pure


@pytest.mark.parametrize("tokens", [1, 50, STUDENT_DEFAULT_TOKENS, 900])
def test_student_answers_are_plain_deterministic_and_sized(tokens: int) -> None:
    a, again, other_seed = StudentAnswers(tokens, seed=0), StudentAnswers(tokens, seed=0), StudentAnswers(tokens, seed=1)
    answers = [a.answer(p) for p in PROMPTS]
    assert answers == [again.answer(p) for p in PROMPTS]  # deterministic across instances (and processes)
    assert len(set(answers)) == len(answers)  # each prompt its own answer
    assert [other_seed.answer(p) for p in PROMPTS] != answers  # the seed varies them
    for text in answers:
        assert text and text == text.strip()
        assert not _MARKER.search(text), text
        assert "{" not in text and "}" not in text
        # about tokens * 4 characters: at least that, and at most one sentence more (the longest is ~100
        # chars); a tiny size still gets the opener and one sentence
        assert len(text) >= tokens * 4
        assert len(text) <= (tokens * 4 + 120 if tokens >= 50 else 300)


def test_student_answers_reuse_the_prompt_words() -> None:
    text = StudentAnswers(100).answer("How do I repot an orchid without damaging its roots?")
    assert "repot, orchid and without" in text.split("\n", 1)[0]


def test_the_mock_teacher_revises_a_student_answer() -> None:
    answers = StudentAnswers(300)
    for p in PROMPTS:
        text = answers.answer(p)
        assert mock_revision(text) != text  # a two-stage demo revises something real


def test_student_config_validation() -> None:
    with pytest.raises(ValueError, match="student_model"):
        MockConfig(student_model="mock-clair")
    with pytest.raises(ValueError, match="student_model"):
        MockConfig(student_model="")
    with pytest.raises(ValueError, match="student_tokens"):
        MockConfig(student_model="s", student_tokens=0)
    with pytest.raises(ValueError):
        StudentAnswers(0)
    args = _parser().parse_args(["--student-model", "pol", "--student-tokens", "900"])
    assert (args.student_model, args.student_tokens) == ("pol", 900)
    assert _parser().parse_args([]).student_model is None


# ------------------------------------------------------------------------------------ HTTP


async def test_models_lists_both_models() -> None:
    async with served(student_model="mock-student", context_length=8192) as s:
        async with s.get("/v1/models") as r:
            d = await r.json()
    assert [e["id"] for e in d["data"]] == ["mock-clair", "mock-student"]
    assert all(e["object"] == "model" and e["max_model_len"] == 8192 for e in d["data"])
    async with served() as s:
        async with s.get("/v1/models") as r:
            assert [e["id"] for e in (await r.json())["data"]] == ["mock-clair"]


async def test_student_request_gets_a_plain_answer_with_usage() -> None:
    prompt = PROMPTS[0]
    body = student_body(prompt, max_tokens=1024)
    async with served(student_model="mock-student", student_tokens=120, seed=5) as s:
        status, d = await post(s, body)
        status2, d2 = await post(s, body)
    assert status == status2 == 200
    assert d["model"] == "mock-student"
    (choice,) = d["choices"]
    content = choice["message"]["content"]
    assert content == StudentAnswers(120, seed=5).answer(prompt)  # from the last user message and the seed
    assert d2["choices"][0]["message"]["content"] == content  # deterministic
    assert not _MARKER.search(content)
    assert choice["finish_reason"] == "stop"
    u = d["usage"]
    prompt_chars = sum(len(m["content"]) for m in body["messages"])
    assert u["prompt_tokens"] == (prompt_chars + 3) // 4
    assert u["completion_tokens"] == (len(content) + 3) // 4
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]


async def test_student_answer_cut_by_max_tokens_has_finish_reason_length() -> None:
    full = StudentAnswers(300).answer(PROMPTS[1])
    assert len(full) > 200
    async with served(student_model="mock-student") as s:
        status, d = await post(s, student_body(PROMPTS[1], max_tokens=50))
        _, d2 = await post(s, student_body(PROMPTS[1], max_completion_tokens=60))
    assert status == 200
    assert d["choices"][0]["finish_reason"] == "length"
    assert d["choices"][0]["message"]["content"] == full[:200]
    assert d["usage"]["completion_tokens"] == 50
    assert d2["choices"][0]["finish_reason"] == "length" and d2["usage"]["completion_tokens"] == 60


async def test_teacher_answers_unchanged_and_other_models_refused() -> None:
    sol = "Teh answer is 42."
    async with served(student_model="mock-student") as s:
        status, d = await post(s, teacher_body(sol))
        assert status == 200 and d["model"] == "mock-clair"
        assert d["choices"][0]["message"]["content"] == build_answer(sol, answer_style(sol))
        status, d = await post(s, student_body("x", model="gpt-9"))
        assert status == 404 and d["error"]["code"] == "model_not_found"
    async with served() as s:  # no student mode: the student's name is just another unknown model
        status, _ = await post(s, student_body("x"))
        assert status == 404


async def test_stats_count_student_requests_apart() -> None:
    async with served(student_model="mock-student") as s:
        for p in PROMPTS[:3]:
            assert (await post(s, student_body(p)))[0] == 200
        assert (await post(s, teacher_body("An answer.")))[0] == 200
        assert (await post(s, student_body("x", model="nope")))[0] == 404
        st = await stats(s)
        assert st["requests"] == 5 and st["completions"] == 4
        assert st["student_requests"] == 3 and st["student_completions"] == 3
        student_total = sum((len(p) + len("You are helpful.") + 3) // 4 for p in PROMPTS[:3])
        assert st["student_prompt_tokens"] == student_total
        assert 0 < st["student_prompt_tokens"] < st["prompt_tokens"]
        assert 0 < st["student_completion_tokens"] < st["completion_tokens"]
        async with s.post("/stats/reset") as r:
            zero = await r.json()
        assert zero["student_requests"] == zero["student_completions"] == 0
        assert zero["student_prompt_tokens"] == zero["student_completion_tokens"] == 0


async def test_faults_limits_and_latency_apply_to_student_requests() -> None:
    async with served(student_model="mock-student", rate_500=1.0) as s:
        status, _ = await post(s, student_body("x"))
        st = await stats(s)
    assert status == 500
    assert st["student_requests"] == 1 and st["student_completions"] == 0 and st["faults"]["500"] == 1

    async with served(student_model="mock-student", rpm=60) as s:  # a bucket of one request
        first, _ = await post(s, student_body("x"))
        second, _ = await post(s, teacher_body("y"))  # one server, one set of limits for both models
        st = await stats(s)
    assert (first, second) == (200, 429) and st["limited"]["rpm"] == 1 and st["student_requests"] == 1

    async with served(student_model="mock-student", rate_ramble=1.0) as s:
        status, d = await post(s, student_body("x", max_tokens=700))
    assert status == 200 and d["choices"][0]["finish_reason"] == "length"
    assert d["usage"]["completion_tokens"] == 700 and not _MARKER.search(d["choices"][0]["message"]["content"])

    runner, port = await start_server(MockConfig(student_model="mock-student", latency_ms=30))
    st_obj = runner.app[STATE_KEY]
    slept: list[float] = []
    real_sleep = st_obj.sleep

    async def recording_sleep(delay: float) -> bool:
        slept.append(delay)
        return await real_sleep(delay)

    st_obj.sleep = recording_sleep  # type: ignore[method-assign]
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as s:
            assert (await post(s, student_body("x")))[0] == 200
    finally:
        await runner.cleanup()
    assert slept == [0.030]


def test_mock_process_passes_the_student_flags() -> None:
    with MockProcess(["--student-model", "pol", "--student-tokens", "40", "--seed", "3"]) as m:
        with urllib.request.urlopen(m.url + "/models", timeout=10) as r:
            ids = [e["id"] for e in orjson.loads(r.read())["data"]]
        req = urllib.request.Request(m.url + "/chat/completions", method="POST",
                                     data=orjson.dumps(student_body(PROMPTS[2], model="pol")),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            d = orjson.loads(r.read())
        st = m.stats()
    assert ids == ["mock-clair", "pol"]
    assert d["choices"][0]["message"]["content"] == StudentAnswers(40, seed=3).answer(PROMPTS[2])
    assert st["student_requests"] == 1


def test_the_engine_parser_finds_no_clair_answer_in_a_student_answer() -> None:
    for p in PROMPTS:
        result = parse_answer(StudentAnswers(300).answer(p))
        assert not result.ok and result.error_kind == "no_marker"


# ------------------------------------------------------------------------------------ the two-stage demo

TWO_STAGE = ROOT / "configs" / "two-stage-demo.yaml"


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url + "/chat/completions", method="POST", data=orjson.dumps(body),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return orjson.loads(r.read())


def test_two_stage_demo_config_and_its_prompts() -> None:
    raw = read_yaml(TWO_STAGE)
    assert raw["input"]["columns"] == {"task": "prompt"}
    gen = raw["generate"]
    assert gen["endpoints"] == [{"url": "http://127.0.0.1:8001/v1", "model": "mock-student", "max_concurrency": 64}]
    assert gen["generation"] == {"temperature": 0.7, "max_tokens": 1024}
    assert gen["system_prompt"] is None and gen["keep_truncated"] is False
    assert raw["endpoints"][0]["model"] == "mock-clair" and raw["endpoints"][0]["max_concurrency"] == 64
    assert raw["output"]["dir"] == "runs/two-stage-demo"
    rows = [orjson.loads(line) for line in (ROOT / raw["input"]["path"]).read_bytes().splitlines()]
    sample = [orjson.loads(line) for line in (ROOT / "engine/data/demo_sample.jsonl").read_bytes().splitlines()]
    assert rows == [{"prompt": r["prompt"]} for r in sample] and len(rows) == 240


def test_demo_commands() -> None:
    raw = read_yaml(TWO_STAGE)
    assert mock_args(raw) == [*MOCK_LATENCY, "--model", "mock-clair", "--student-model", "mock-student"]
    url = "http://127.0.0.1:9/v1"
    assert clair_args(TWO_STAGE, raw, url, Path("runs/x")) == [
        "run", str(TWO_STAGE), "--set", f"endpoints.0.url={url}", "--set", f"generate.endpoints.0.url={url}",
        "--set", f"input.path={ROOT / 'engine/data/demo_prompts.jsonl'}", "--set", "output.dir=runs/x",
        "--progress", "plain"]
    # the one-stage demo (make demo) runs what it always ran
    one = ROOT / "configs" / "demo.yaml"
    raw1 = read_yaml(one)
    assert mock_args(raw1) == [*MOCK_LATENCY, "--model", "mock-clair"]
    assert clair_args(one, raw1, url, run_dir_of(raw1)) == [
        "run", str(one), "--set", f"endpoints.0.url={url}",
        "--set", f"input.path={ROOT / 'engine/data/demo_sample.jsonl'}", "--set", "output.dir=runs/demo",
        "--progress", "plain"]
    # a generation-only config: the mock serves the student; only generate's endpoint is pointed at it
    gen_only = {k: v for k, v in raw.items() if k != "endpoints"}
    assert mock_args(gen_only) == [*MOCK_LATENCY, "--student-model", "mock-student"]
    assert f"endpoints.0.url={url}" not in clair_args(TWO_STAGE, gen_only, url, Path("r"))


def test_the_demo_mock_answers_both_stages_of_the_recipe() -> None:
    """What the two-stage demo's run does, request by request: the student answers a prompt, the teacher's
    prompt (the engine's own template) carries that answer, and the teacher's answer parses to a real edit."""
    raw = read_yaml(TWO_STAGE)
    prompts = [orjson.loads(line)["prompt"] for line in (ROOT / raw["input"]["path"]).read_bytes().splitlines()[:5]]
    with MockProcess(mock_args(raw)) as m:
        for prompt in prompts:
            s = _post(m.url, {"model": "mock-student", "messages": [{"role": "user", "content": prompt}],
                              **raw["generate"]["generation"]})
            assert s["choices"][0]["finish_reason"] == "stop"  # 300 tokens fit max_tokens 1024
            student = s["choices"][0]["message"]["content"]
            assert student == StudentAnswers(STUDENT_DEFAULT_TOKENS, seed=7).answer(prompt)
            messages = render(builtin_template(raw["prompt"]["variant"]), prompt, student)
            t = _post(m.url, {"model": "mock-clair", "messages": messages, **raw["generation"]})
            result = parse_answer(t["choices"][0]["message"]["content"])
            assert result.ok and result.revision == mock_revision(student) != student
        st = m.stats()
    assert st["student_completions"] == 5 and st["completions"] == 10


def test_two_stage_demo_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    raw = read_yaml(TWO_STAGE)
    try:
        load_config(TWO_STAGE, [f"input.path={ROOT / raw['input']['path']}"])
    except ConfigError as e:
        if "generate" not in str(e):
            raise
        pytest.skip("the config does not know generate: yet (two-stage runs land with the runner)")
    monkeypatch.chdir(tmp_path)
    assert demo_main([str(TWO_STAGE)]) == 0
    out = capsys.readouterr().out
    assert "the mock answered 240 student requests and 240 teacher requests" in out
    run_dir = tmp_path / raw["output"]["dir"]
    rows = load_results(run_dir)
    assert len(rows) == 240
    answers = StudentAnswers(STUDENT_DEFAULT_TOKENS, seed=7)
    for r in rows:
        assert r["student_solution"] == answers.answer(r["prompt"]) and r["student_model"] == "mock-student"
        assert r["revision"] == mock_revision(r["student_solution"])
