"""Two-stage runs in-process with a fake client: generate the student answers, then revise them (issue 16)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import assert_exactly_once

from engine import load_config, run_job
from engine.client import FakeClient
from engine.core.errors import ConnectError, HTTPStatusError, RunStateError
from engine.core.types import Completion
from engine.store import RunView
from engine.store.readers import current_failures
from engine.tools.mockserver import build_answer

STUDENT, TEACHER = "student-model", "mock-clair"


def _prompts(tmp_path: Path, n: int) -> Path:
    p = tmp_path / "prompts.parquet"
    pq.write_table(pa.table({"prompt": [f"question number {i}: what is {i} + {i}?" for i in range(n)],
                             "topic": [f"t{i % 3}" for i in range(n)]}), p)
    return p


def _config(tmp_path: Path, inp: Path, *, teacher: bool = True, **generate: Any) -> Path:
    cfg: dict[str, Any] = {
        "input": {"path": str(inp), "columns": {"task": "prompt"}},
        "generate": {"endpoints": [{"url": "http://127.0.0.1:9/v1", "model": STUDENT, "max_concurrency": 8}],
                     "generation": {"temperature": 0.7, "max_tokens": 200}, **generate},
        "generation": {"temperature": 0.0, "max_tokens": 4096},
        "output": {"dir": str(tmp_path / "run"), "rows_per_shard": 7},
        "retry": {"base_delay_s": 0.01, "max_delay_s": 0.05, "max_attempts": 2},
        "run": {"progress": "off"},
    }
    if teacher:
        cfg["endpoints"] = [{"url": "http://127.0.0.1:9/v1", "model": TEACHER, "max_concurrency": 4}]
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _student_answer(prompt: str) -> str:
    return f"The answer to '{prompt}' is teh number you get by adding."


class Fake:
    """Both models behind one fake transport; counts what each stage was asked."""

    def __init__(self, *, truncate: set[int] | None = None, fail_student: set[int] | None = None,
                 teacher_delay: float = 0.0):
        self.student_calls: list[str] = []
        self.teacher_calls: list[str] = []
        self.truncate = truncate or set()
        self.fail_student = fail_student or set()
        self.teacher_delay = teacher_delay

    def client(self) -> FakeClient:
        async def handler(url: str, headers: dict[str, str], body: dict[str, Any]) -> Completion:
            text = body["messages"][-1]["content"]
            if body["model"] == STUDENT:
                self.student_calls.append(text)
                n = int(text.split("number ", 1)[1].split(":", 1)[0])
                if n in self.fail_student:
                    raise HTTPStatusError(500, "boom")
                finish = "length" if n in self.truncate else "stop"
                return Completion(content=_student_answer(text), finish_reason=finish, model=STUDENT,
                                  prompt_tokens=20, completion_tokens=15)
            self.teacher_calls.append(text)
            if self.teacher_delay:
                await asyncio.sleep(self.teacher_delay)
            sol = text.split("{student_solution}: ", 1)[1].split("\n\n-----------------", 1)[0]
            return Completion(content=build_answer(sol, 0), finish_reason="stop", model=TEACHER,
                              prompt_tokens=700, completion_tokens=800)

        return FakeClient(handler, models=[STUDENT, TEACHER])


def test_both_stages_every_row_once_with_the_student_answer_and_its_provenance(tmp_path: Path) -> None:
    n = 30
    fake = Fake()
    rep = run_job(load_config(_config(tmp_path, _prompts(tmp_path, n))), client=fake.client())
    run = tmp_path / "run"
    assert rep.status == "completed" and rep.rows_done == n
    assert_exactly_once(run, n)
    assert len(fake.student_calls) == n and len(fake.teacher_calls) == n
    t = pq.read_table(run / "data").sort_by("row_id")
    assert t.column("student_solution").to_pylist()[4] == _student_answer("question number 4: what is 4 + 4?")
    assert set(t.column("student_model").to_pylist()) == {STUDENT}
    assert set(t.column("student_finish_reason").to_pylist()) == {"stop"}
    assert set(t.column("student_completion_tokens").to_pylist()) == {15}
    assert set(t.column("model_name").to_pylist()) == {TEACHER}
    assert "revision" in t.column_names and "topic" in t.column_names
    assert t.column("topic").to_pylist()[4] == "t1"
    stages = rep.extra["stages"]["generate"]
    assert stages["rows_done"] == n and stages["requests"] == n


def test_generation_only_run_writes_the_answers_as_data_rows(tmp_path: Path) -> None:
    n = 12
    fake = Fake()
    rep = run_job(load_config(_config(tmp_path, _prompts(tmp_path, n), teacher=False)), client=fake.client())
    run = tmp_path / "run"
    assert rep.status == "completed" and rep.rows_done == n and not fake.teacher_calls
    assert_exactly_once(run, n)
    t = pq.read_table(run / "data")
    assert "revision" not in t.column_names
    assert set(t.column("status").to_pylist()) == {"ok"}
    assert set(t.column("student_model").to_pylist()) == {STUDENT}
    assert not (run / "stages").exists()


def test_a_truncated_student_answer_is_not_revised_unless_kept(tmp_path: Path) -> None:
    n = 10
    fake = Fake(truncate={2, 5})
    run_job(load_config(_config(tmp_path, _prompts(tmp_path, n))), client=fake.client())
    run = tmp_path / "run"
    assert_exactly_once(run, n)
    f = current_failures(run)
    kinds = dict(zip(f.column("row_id").to_pylist(), f.column("error_kind").to_pylist(), strict=True))
    assert kinds == {2: "student_truncated", 5: "student_truncated"}
    assert len(fake.teacher_calls) == n - 2
    sols = dict(zip(f.column("row_id").to_pylist(), f.column("student_solution").to_pylist(), strict=True))
    assert sols[2] == _student_answer("question number 2: what is 2 + 2?")  # paid for: kept

    (tmp_path / "kept").mkdir()
    fake2 = Fake(truncate={2, 5})
    cfg = _config(tmp_path / "kept", _prompts(tmp_path / "kept", n), keep_truncated=True)
    run_job(load_config(cfg), client=fake2.client())
    assert len(fake2.teacher_calls) == n
    t = pq.read_table(tmp_path / "kept" / "run" / "data").sort_by("row_id")
    assert t.column("student_finish_reason").to_pylist()[2] == "length"


def test_a_failed_student_request_is_a_generate_failed_row_and_retry_failed_retries_that_stage(tmp_path: Path) -> None:
    n = 10
    inp = _prompts(tmp_path, n)
    fake = Fake(fail_student={3})
    run_job(load_config(_config(tmp_path, inp)), client=fake.client())
    run = tmp_path / "run"
    assert_exactly_once(run, n)
    f = current_failures(run)
    assert f.column("row_id").to_pylist() == [3]
    assert f.column("error_kind").to_pylist() == ["generate_failed"]
    assert "server_error" in f.column("error_message").to_pylist()[0]

    again = Fake()
    rep = run_job(load_config(_config(tmp_path, inp)), client=again.client(), retry_failed=True)
    assert len(again.student_calls) == 1 and len(again.teacher_calls) == 1
    assert_exactly_once(run, n)
    assert current_failures(run) is None or current_failures(run).num_rows == 0
    assert rep.status == "completed"


def test_resume_sends_nothing_twice_and_changed_student_params_are_refused(tmp_path: Path) -> None:
    n = 20
    inp = _prompts(tmp_path, n)
    cfg = _config(tmp_path, inp)
    fake = Fake()
    run_job(load_config(cfg), client=fake.client())
    again = Fake()
    rep = run_job(load_config(cfg), client=again.client())
    assert rep.status == "completed" and not again.student_calls and not again.teacher_calls

    raw = yaml.safe_load(cfg.read_text())
    raw["generate"]["generation"]["temperature"] = 1.0
    cfg.write_text(yaml.safe_dump(raw))
    with pytest.raises(RunStateError, match="generate stage"):
        run_job(load_config(cfg), client=Fake().client())


def test_revise_stage_resumes_from_the_stored_student_answers(tmp_path: Path) -> None:
    """Student answers journaled by a session whose revisions never happened are revised on resume, without
    asking the student again."""
    n = 16
    inp = _prompts(tmp_path, n)
    cfg = _config(tmp_path, inp)
    run_job(load_config(cfg), client=Fake().client())
    run = tmp_path / "run"
    # forget the revise stage's rows: the generate stage's rows stay
    for d in ("data", "failures", "journal"):
        for f in (run / d).glob("*"):
            f.unlink()
    again = Fake()
    rep = run_job(load_config(cfg), client=again.client())
    assert not again.student_calls and len(again.teacher_calls) == n
    assert rep.status == "completed"
    assert_exactly_once(run, n)
    view = RunView.open(run)
    assert view.stage("generate") is not None


def test_a_budget_counts_both_stages_at_their_own_prices(tmp_path: Path) -> None:
    n = 8
    cfg = _config(tmp_path, _prompts(tmp_path, n))
    raw = yaml.safe_load(cfg.read_text())
    raw["budget"] = {"max_usd": 100.0}
    raw["pricing"] = {"input_per_million": 1.0, "output_per_million": 10.0}
    raw["generate"]["pricing"] = {"input_per_million": 0.5, "output_per_million": 2.0}
    cfg.write_text(yaml.safe_dump(raw))
    rep = run_job(load_config(cfg), client=Fake().client())
    spent = rep.extra["budget"]["spent_usd"]
    teacher = n * (700 * 1.0 + 800 * 10.0) / 1e6
    student = n * (20 * 0.5 + 15 * 2.0) / 1e6
    assert spent == pytest.approx(teacher + student)


def test_reparse_keeps_the_student_failures_and_refuses_a_generation_only_run(tmp_path: Path) -> None:
    from engine.commands.reparse import reparse_run

    n = 6
    run_job(load_config(_config(tmp_path, _prompts(tmp_path, n))), client=Fake(truncate={1}).client())
    run = tmp_path / "run"
    reparse_run(run)
    f = current_failures(run)
    assert f.column("error_kind").to_pylist() == ["student_truncated"]
    assert_exactly_once(run, n)

    gen = tmp_path / "gen"
    gen.mkdir()
    run_job(load_config(_config(gen, _prompts(gen, n), teacher=False)), client=Fake().client())
    with pytest.raises(RunStateError, match="generation-only"):
        reparse_run(gen / "run")


def test_the_quality_guard_does_not_count_failed_student_answers(tmp_path: Path) -> None:
    n = 40
    cfg = _config(tmp_path, _prompts(tmp_path, n))
    raw = yaml.safe_load(cfg.read_text())
    raw["guard"] = {"min_rows": 10, "max_no_revision": 0.2}
    cfg.write_text(yaml.safe_dump(raw))
    rep = run_job(load_config(cfg), client=Fake(truncate=set(range(0, n, 2))).client())  # half the answers cut
    assert rep.status == "completed"
    assert_exactly_once(tmp_path / "run", n)


def _forget_revise_rows(run: Path) -> None:
    """What a kill -9 leaves when the generate stage ran ahead of the revise stage."""
    for d in ("data", "failures", "journal"):
        for f in (run / d).glob("*"):
            f.unlink()


def test_resume_of_the_revise_stage_needs_no_student_endpoint(tmp_path: Path) -> None:
    """Every student answer is stored; only revisions are left. The student server is gone (shut down
    after its stage finished): the resume should revise, not refuse to start."""
    n = 10
    cfg = _config(tmp_path, _prompts(tmp_path, n))
    raw = yaml.safe_load(cfg.read_text())
    raw["generate"]["endpoints"][0]["url"] = "http://127.0.0.1:8/v1"  # the student server
    cfg.write_text(yaml.safe_dump(raw))
    run_job(load_config(cfg), client=Fake().client())
    _forget_revise_rows(tmp_path / "run")
    fake = Fake()
    inner = fake.client()

    class StudentDown(FakeClient):
        async def list_models(self, url: str, headers: dict[str, str]) -> list[str] | None:
            if ":8/" in url:
                raise ConnectError("connection refused")
            return [STUDENT, TEACHER]

        async def complete(self, url: str, headers: dict[str, str], body: bytes) -> Completion:
            if ":8/" in url:
                raise ConnectError("connection refused")
            return await super().complete(url, headers, body)

    client = StudentDown(inner.handler, models=[TEACHER])
    rep = run_job(load_config(cfg), client=client)
    assert rep.status == "completed"
    assert not fake.student_calls and len(fake.teacher_calls) == n
    assert_exactly_once(tmp_path / "run", n)


def test_lowered_limit_sends_nothing_for_rows_past_it(tmp_path: Path) -> None:
    """Single stage: 'rows past the limit are kept, nothing more is sent for them'. Two stages: the
    revise stage revises every stored student answer, past the limit too."""
    n = 20
    cfg = _config(tmp_path, _prompts(tmp_path, n))
    run_job(load_config(cfg), client=Fake().client())
    _forget_revise_rows(tmp_path / "run")
    raw = yaml.safe_load(cfg.read_text())
    raw["input"]["limit"] = 5
    cfg.write_text(yaml.safe_dump(raw))
    fake = Fake()
    run_job(load_config(cfg), client=fake.client())
    assert len(fake.teacher_calls) <= 5, len(fake.teacher_calls)


def test_a_student_stage_failure_does_not_throw_away_paid_revisions(tmp_path: Path) -> None:
    """The student endpoint starts refusing the key (401 -> every generate endpoint disabled ->
    StartupError stops the run). The revise stage's in-flight requests are already paid; they get no
    grace and are cancelled (sent and paid again on resume)."""
    n = 60
    cfg = _config(tmp_path, _prompts(tmp_path, n))
    raw = yaml.safe_load(cfg.read_text())
    raw["run"]["grace_period_s"] = 5
    cfg.write_text(yaml.safe_dump(raw))
    teacher_started = 0
    teacher_done = 0
    student_n = 0

    async def handler(url: str, headers: dict[str, str], body: dict[str, Any]) -> Completion:
        nonlocal teacher_started, teacher_done, student_n
        text = body["messages"][-1]["content"]
        if body["model"] == STUDENT:
            student_n += 1
            if student_n > 20:
                await asyncio.sleep(0.05)
                raise HTTPStatusError(401, "key revoked")
            return Completion(content=f"answer to {text}", finish_reason="stop", model=STUDENT,
                              prompt_tokens=20, completion_tokens=15)
        teacher_started += 1
        await asyncio.sleep(0.3)
        teacher_done += 1
        sol = text.split("{student_solution}: ", 1)[1].split("\n\n-----------------", 1)[0]
        return Completion(content=build_answer(sol, 0), finish_reason="stop", model=TEACHER,
                          prompt_tokens=700, completion_tokens=800)

    with pytest.raises(Exception) as ei:
        run_job(load_config(cfg), client=FakeClient(handler, models=[STUDENT, TEACHER]))
    assert "401" in str(ei.value) or "key" in str(ei.value)
    assert teacher_started == teacher_done, "revise requests in flight were cancelled (paid, sent again on resume)"


def test_the_run_writes_live_figures_per_stage_for_clair_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.runner import job

    monkeypatch.setattr(job, "LIVE_INTERVAL_S", 0.01)
    n = 20
    run_job(load_config(_config(tmp_path, _prompts(tmp_path, n))), client=Fake(teacher_delay=0.05).client())
    live = RunView.open(tmp_path / "run").live()
    assert live is not None and set(live["stages"]) == {"generate", "revise"}
    assert live["stages"]["generate"]["rows_total"] == n
    assert set(live["stages"]["revise"]) >= {"rows_done", "rows_per_s", "eta_s", "in_flight", "failed"}
