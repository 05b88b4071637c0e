"""User mistakes that cost nothing (issue 14): an endpoint that does not speak the API is caught before the
first paid request, a dead endpoint among healthy ones is left out, a run without a single usable revision
exits 3, a closed output pipe ends a command quietly, messages say what is wrong and hide secrets; and the
mistakes of a two-stage config (issue 16: generate:), each one line, exit 2, nothing paid."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from helpers import (
    ROOT,
    STUDENT_MODEL,
    assert_exactly_once,
    clair,
    make_input,
    make_prompts,
    write_config,
    write_two_stage_config,
)

from engine.client import FakeClient, http_transport
from engine.core.errors import StartupError
from engine.core.types import Completion
from engine.dispatch import Endpoint
from engine.runner.startup import startup_check
from engine.tools.mockserver_proc import MockProcess

CHATS = web.AppKey("chats", list)
HTML = "<!doctype html><html><body>Welcome to nginx!</body></html>"


def _ep(name: str, url: str) -> Endpoint:
    return Endpoint(name=name, url=url, model="mock-clair", headers={}, generation={}, max_concurrency=4)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _html_app(chat_html: bool) -> web.Application:
    async def models(request: web.Request) -> web.Response:
        if chat_html:  # no /models route, like servers that lack one
            return web.Response(status=404, text=HTML, content_type="text/html")
        return web.Response(text=HTML, content_type="text/html")

    async def chat(request: web.Request) -> web.Response:
        request.app[CHATS].append(1)
        return web.Response(text=HTML, content_type="text/html")

    app = web.Application()
    app[CHATS] = []
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def _run_against(app: web.Application, tmp_path: Path, rows: int = 50) -> tuple[BaseException | None, int]:
    from engine import load_config
    from engine.runner import arun_job

    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("/v1"))
        cfg = load_config(write_config(tmp_path, url, make_input(tmp_path, rows)))
        try:
            await arun_job(cfg)
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            return e, len(app[CHATS])
        return None, len(app[CHATS])


def test_a_url_that_serves_html_is_refused_before_any_request(tmp_path: Path) -> None:
    err, chats = asyncio.run(_run_against(_html_app(chat_html=False), tmp_path))
    assert isinstance(err, StartupError), err
    assert "does not look like an OpenAI-compatible API (got text/html;" in str(err) and "\n" not in str(err)
    assert chats == 0


def test_without_models_the_first_answer_must_be_a_chat_completion(tmp_path: Path) -> None:
    """A server with no /models route whose chat route answers HTML: the first answers disable it (one
    request per slot at most), instead of every row being burned on retries as malformed_response."""
    err, chats = asyncio.run(_run_against(_html_app(chat_html=True), tmp_path, rows=200))
    assert isinstance(err, StartupError) and "every endpoint refused" in str(err), err
    assert "does not look like an OpenAI-compatible API" in str(err)
    assert 1 <= chats <= 16  # the first wave (max_concurrency 16), never 200 x retries
    assert not list((tmp_path / "run" / "failures").glob("*.parquet")) and not list(
        (tmp_path / "run" / "data").glob("*.parquet"))


def test_one_dead_endpoint_among_healthy_ones_is_left_out_and_probed_later() -> None:
    dead, live = _ep("dead", f"http://127.0.0.1:{_closed_port()}/v1"), _ep("live", "http://live/v1")

    async def main() -> None:
        async with http_transport(8, 5, 2) as real:
            async def list_models(url: str, headers: dict[str, str]) -> list[str] | None:
                return ["mock-clair"] if url == live.url else await real.list_models(url, headers)

            fake = FakeClient(lambda *a: asyncio.sleep(0, Completion("x", "stop")))  # type: ignore[arg-type,return-value]
            fake.list_models = list_models  # type: ignore[method-assign]
            await startup_check(fake, [dead, live], 5)

    asyncio.run(main())
    assert dead.breaker.state == "open" and live.breaker.state == "closed" and not dead.disabled


def test_every_endpoint_dead_is_one_line_naming_the_first() -> None:
    eps = [_ep(f"e{i}", f"http://127.0.0.1:{_closed_port()}/v1") for i in range(2)]

    async def main() -> None:
        async with http_transport(8, 5, 2) as real:
            await startup_check(real, eps, 5)

    with pytest.raises(StartupError) as e:
        asyncio.run(main())
    msg = str(e.value)
    assert msg.startswith("endpoints[0] (") and "unreachable" in msg and "1 more endpoint" in msg and "\n" not in msg


def test_a_port_that_never_answers_has_a_reason() -> None:
    async def hang(url: str, headers: dict[str, str]) -> list[str] | None:
        await asyncio.sleep(3600)
        return None

    fake = FakeClient(lambda *a: asyncio.sleep(0))  # type: ignore[arg-type,return-value]
    fake.list_models = hang  # type: ignore[method-assign]
    with pytest.raises(StartupError, match=r"unreachable \(no answer to GET /models within 0.05s\)"):
        asyncio.run(startup_check(fake, [_ep("e", "http://e/v1")], 0.05))


def test_two_endpoints_one_a_closed_port_five_runs(tmp_path: Path, mock: MockProcess) -> None:
    """The healthy endpoint does the job; no traceback, no 'Connector is closed', every row once."""
    inp = make_input(tmp_path, 60)
    for i in range(5):
        run = tmp_path / f"run{i}"
        cfg = write_config(tmp_path, mock.url, inp, output={"dir": str(run)}, endpoints=[
            {"url": f"http://127.0.0.1:{_closed_port()}/v1", "model": "mock-clair", "max_concurrency": 8},
            {"url": mock.url, "model": "mock-clair", "max_concurrency": 8}])
        r = clair("run", str(cfg))
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr and "Connector is closed" not in r.stderr
        assert "endpoints[0]" in r.stderr and "unreachable" in r.stderr
        assert_exactly_once(run, 60)


def test_a_run_without_a_single_usable_revision_exits_3(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 40)
    with MockProcess(["--rate-no-marker", "1.0"]) as m:
        r = clair("run", str(write_config(tmp_path, m.url, inp)))
    assert r.returncode == 3, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no row got a usable revision (40 failed: no_marker 40)") and "clair status" in last


@pytest.mark.parametrize("args", [["stats", "{run}"], ["status", "{run}", "--json"], ["status", "{run}"]])
def test_a_closed_output_pipe_ends_quietly(tmp_path: Path, mock: MockProcess, args: list[str]) -> None:
    run = tmp_path / "run"
    if not run.exists():
        assert clair("run", str(write_config(tmp_path, mock.url, make_input(tmp_path, 30)))).returncode == 0
    cmd = [sys.executable, "-m", "engine.cli", *[a.format(run=run) for a in args]]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as in most shells
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()  # like `| head -0`: the reader is gone before anything is written
    with p.stderr:
        err = p.stderr.read().decode()
    code = p.wait(60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert code in (0, 141)


def test_the_resume_hint_quotes_paths_and_hides_secrets_given_by_set() -> None:
    import argparse

    from engine.cli import _resume_hint

    args = argparse.Namespace(config="my jobs/job.yaml", overrides=[
        "endpoints.0.headers.Authorization=Bearer sk-123", "endpoints.0.api_key=sk-456", "output.dir=runs/a b",
        "endpoints.0.api_key_env=OPENAI_API_KEY"])
    hint = _resume_hint(args)
    assert "sk-123" not in hint and "sk-456" not in hint
    assert hint == ("clair run 'my jobs/job.yaml' --set 'endpoints.0.headers.Authorization=***' "
                    "--set 'endpoints.0.api_key=***' --set 'output.dir=runs/a b' "
                    "--set endpoints.0.api_key_env=OPENAI_API_KEY")


def test_lowering_input_limit_below_the_rows_done_says_so(tmp_path: Path, mock: MockProcess) -> None:
    inp = make_input(tmp_path, 60)
    cfg = write_config(tmp_path, mock.url, inp)
    assert clair("run", str(cfg)).returncode == 0
    before = mock.stats()["requests"]
    r = clair("run", str(cfg), "--set", "input.limit=20", "--progress", "plain")
    assert r.returncode == 0, r.stderr
    assert "already holds 60 rows, more than the 20 input rows now selected" in r.stderr
    assert "rows: 60 (the input now selects 20) done" in r.stdout and "%" not in r.stdout
    assert "300.0%" not in r.stderr and mock.stats()["requests"] == before


def test_the_readme_dry_run_of_the_openai_example_works_as_written() -> None:
    """README: `clair run configs/example-openai.yaml --dry-run` from the repository root, no key needed."""
    r = clair("run", "configs/example-openai.yaml", "--dry-run", env={"CLAIR_TOKENIZER": "estimate"})
    assert r.returncode == 0, r.stderr
    assert "240" in r.stdout and "cost" in r.stdout and "Traceback" not in r.stderr


def test_a_run_that_sent_nothing_is_not_a_finished_job(tmp_path: Path, mock: MockProcess) -> None:
    """A wrong mapping (pre-flight off) records every row as invalid_input without a request: exit 3, and
    the corrected config then runs without --new-run (nothing was paid, nothing to mix)."""
    inp = make_input(tmp_path, 30)
    bad = write_config(tmp_path, mock.url, inp, input={"path": str(inp), "precheck": False,
                                                       "columns": {"student_solution": "rejected[5].content"}})
    before = mock.stats()["requests"]
    r = clair("run", str(bad))
    assert r.returncode == 3 and "invalid_input 30" in r.stderr and mock.stats()["requests"] == before
    good = write_config(tmp_path, mock.url, inp)
    r = clair("run", str(good))
    assert r.returncode == 0, r.stderr
    assert "holds no answer yet" in r.stderr
    assert_exactly_once(tmp_path / "run", 30)


# ------------------------------------------------------------------ two-stage configs (generate:, issue 16)


@pytest.fixture(scope="module")
def student_mock() -> object:
    """One mock serving both models: the teacher (mock-clair) and the student (--student-model)."""
    with MockProcess(["--latency-ms", "5", "--student-model", STUDENT_MODEL]) as m:
        yield m


def _refused(r: subprocess.CompletedProcess[str], m: MockProcess, before: int, *words: str) -> str:
    """A mistake: one line on stderr, exit 2, no traceback, no request sent; the line holds every word."""
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert m.stats()["requests"] == before  # nothing paid: the mock was never asked for a completion
    return lines[0]


def test_generate_with_a_wrong_student_model_is_refused_at_start(tmp_path: Path, student_mock: MockProcess) -> None:
    inp = make_prompts(tmp_path, 20)
    cfg = write_two_stage_config(tmp_path, student_mock.url, student_mock.url, inp,
                                 generate={"endpoints": [{"url": student_mock.url, "model": "no-such-student"}]})
    before = student_mock.stats()["requests"]
    line = _refused(clair("run", str(cfg)), student_mock, before, "generate.endpoints[0]",
                    "does not serve model 'no-such-student'", STUDENT_MODEL)
    assert "fix generate.endpoints[0].model" in line
    assert not list((tmp_path / "run").glob("**/*.parquet"))


def test_generate_with_an_unreachable_student_url_is_refused_at_start(tmp_path: Path,
                                                                      student_mock: MockProcess) -> None:
    inp = make_prompts(tmp_path, 20)
    dead = f"http://127.0.0.1:{_closed_port()}/v1"
    cfg = write_two_stage_config(tmp_path, dead, student_mock.url, inp)
    before = student_mock.stats()["requests"]
    _refused(clair("run", str(cfg)), student_mock, before, f"generate.endpoints[0] ({dead})", "unreachable")
    # a generation-only run says the same
    cfg = write_two_stage_config(tmp_path, dead, None, inp)
    _refused(clair("run", str(cfg)), student_mock, before, f"generate.endpoints[0] ({dead})", "unreachable")


def test_a_student_solution_column_with_generate_is_refused(tmp_path: Path, student_mock: MockProcess) -> None:
    inp = make_prompts(tmp_path, 20)
    cfg = write_two_stage_config(tmp_path, student_mock.url, student_mock.url, inp,
                                 input={"path": str(inp), "columns": {"task": "prompt", "student_solution": "prompt"}})
    before = student_mock.stats()["requests"]
    _refused(clair("run", str(cfg)), student_mock, before, "input.columns.student_solution", "generate")
    assert not (tmp_path / "run").exists()


def test_a_messages_column_without_generate_is_refused(tmp_path: Path, student_mock: MockProcess) -> None:
    inp = make_prompts(tmp_path, 20)
    cfg = write_config(tmp_path, student_mock.url, inp,
                       input={"path": str(inp), "columns": {"messages": "chat", "student_solution": "prompt"}})
    before = student_mock.stats()["requests"]
    _refused(clair("run", str(cfg)), student_mock, before, "input.columns.messages", "generate")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("column", "words"), [
    ("prompt", ("input.columns.messages", "'prompt'", "not a list of chat messages")),  # a text column
    ("chat[0].content", ("input.columns.messages",)),  # a path into the messages: text, not a list
    ("nope", ("input.columns.messages", "nope")),  # no such column
])
def test_a_messages_column_that_is_not_a_message_list_is_refused(tmp_path: Path, student_mock: MockProcess,
                                                                  column: str, words: tuple[str, ...]) -> None:
    inp = make_prompts(tmp_path, 20)
    cfg = write_two_stage_config(tmp_path, student_mock.url, student_mock.url, inp,
                                 input={"path": str(inp), "columns": {"messages": column}})
    before = student_mock.stats()["requests"]
    _refused(clair("run", str(cfg)), student_mock, before, *words)
    assert not (tmp_path / "run").exists()


def test_a_messages_column_runs_both_stages(tmp_path: Path, student_mock: MockProcess) -> None:
    """The counterpart of the mistakes above: the same one-turn chat column, mapped right, runs."""
    inp = make_prompts(tmp_path, 20)
    cfg = write_two_stage_config(tmp_path, student_mock.url, student_mock.url, inp,
                                 input={"path": str(inp), "columns": {"messages": "chat"}})
    r = clair("run", str(cfg))
    assert r.returncode == 0, r.stderr
    assert_exactly_once(tmp_path / "run", 20)


def test_generate_max_tokens_auto_is_refused(tmp_path: Path, student_mock: MockProcess) -> None:
    inp = make_prompts(tmp_path, 20)
    cfg = write_two_stage_config(tmp_path, student_mock.url, student_mock.url, inp,
                                 generate={"endpoints": [{"url": student_mock.url, "model": STUDENT_MODEL}],
                                           "generation": {"max_tokens": "auto"}})
    before = student_mock.stats()["requests"]
    _refused(clair("run", str(cfg)), student_mock, before, "generate.generation.max_tokens")
    # the same mistake given on the command line
    cfg = write_two_stage_config(tmp_path, student_mock.url, student_mock.url, inp)
    _refused(clair("run", str(cfg), "--set", "generate.generation.max_tokens=auto"), student_mock, before,
             "generate.generation.max_tokens")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override", ["generate.generation.temperature=0.2", "generate.endpoints.0.model=mock-clair",
                                      "generate.system_prompt=Answer briefly."])
def test_changed_student_params_on_resume_are_refused_naming_the_generate_stage(
        tmp_path: Path, student_mock: MockProcess, override: str) -> None:
    inp = make_prompts(tmp_path, 20)
    cfg = write_two_stage_config(tmp_path, student_mock.url, student_mock.url, inp)
    r = clair("run", str(cfg))
    assert r.returncode == 0, r.stderr
    before = student_mock.stats()["requests"]
    line = _refused(clair("run", str(cfg), "--set", override), student_mock, before, "generate stage", "--new-run")
    assert "Traceback" not in line
    # limits and concurrency are not part of the fingerprint: the same run resumes (nothing left to do)
    r = clair("run", str(cfg), "--set", "generate.endpoints.0.max_concurrency=3")
    assert r.returncode == 0, r.stderr
    assert student_mock.stats()["requests"] == before
    assert_exactly_once(tmp_path / "run", 20)
