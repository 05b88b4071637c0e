"""Two-stage runs (generate: then revise) killed with -9 at random moments and resumed, and stopped with Ctrl-C
(issue 16): every row exactly once per stage, each stage paid at most rows + kills x its concurrency.

`clair run` runs as a subprocess against real mock processes on 127.0.0.1: one mock answers as the student
(``--student-model``), another as the teacher. The kills are seeded and land in every phase of a two-stage
run: only the generate stage producing (the teacher is a mock that never answers in time), both stages
producing, and only the revise stage draining (the generate stage is done, the teacher is slower)."""

from __future__ import annotations

import math
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pyarrow.parquet as pq
from helpers import (
    GENERATE,
    STUDENT_MODEL,
    assert_exactly_once,
    assert_stage_exactly_once,
    clair,
    clair_popen,
    durable_rows,
    make_prompts,
    read_ids,
    write_two_stage_config,
)

from engine.store.readers import current_failures
from engine.tools.mockserver import mock_revision
from engine.tools.mockserver.student import StudentAnswers
from engine.tools.mockserver_proc import MockProcess

#: the mock student's answer length and the generate stage's max_tokens: about one answer in 14 hits the budget
#: (6 in 10 of those are cut by the mock, the others end exactly at it: both are student_truncated)
STUDENT_TOKENS, STUDENT_MAX_TOKENS, STUDENT_SEED = 60, 80, 3
#: a session whose teacher is stuck records only student_truncated rows: the quality guard is not tested here
NO_GUARD = {"max_no_revision": None}


def _student_mock(*extra: str) -> MockProcess:
    return MockProcess(["--student-model", STUDENT_MODEL, "--student-tokens", str(STUDENT_TOKENS),
                        "--seed", str(STUDENT_SEED), *extra])


def _prompts(path: Path) -> list[str]:
    return list(pq.read_table(path, columns=["prompt"]).column("prompt").to_pylist())


def _expected_answers(prompts: list[str]) -> tuple[list[str], set[int]]:
    """What the mock student answers each prompt under STUDENT_MAX_TOKENS, and the rows that hit the budget
    (student_truncated): the mock's answer has ceil(chars / 4) tokens and is cut to max_tokens (finish reason
    "length"); the engine counts an answer that used the whole budget as truncated too."""
    gen = StudentAnswers(STUDENT_TOKENS, STUDENT_SEED)
    answers, cut = [], set()
    for i, p in enumerate(prompts):
        a = gen.answer(p)
        tokens = math.ceil(len(a) / 4)
        if tokens > STUDENT_MAX_TOKENS:
            a = a[: STUDENT_MAX_TOKENS * 4]
        if tokens >= STUDENT_MAX_TOKENS:
            cut.add(i)
        answers.append(a)
    assert 0 < len(cut) < len(prompts) // 5
    return answers, cut


def _assert_final_rows(run: Path, prompts: list[str]) -> None:
    """The run's rows hold the student's answers and the teacher's revisions of them; a cut answer is a
    student_truncated failure row that keeps the answer it paid for."""
    answers, cut = _expected_answers(prompts)
    data = pq.read_table(run / "data").sort_by("row_id")
    ids = data.column("row_id").to_pylist()
    assert set(ids) == set(range(len(prompts))) - cut
    sols = data.column("student_solution").to_pylist()
    assert sols == [answers[i] for i in ids]
    assert data.column("revision").to_pylist() == [mock_revision(s) for s in sols]
    assert set(data.column("student_model").to_pylist()) == {STUDENT_MODEL}
    assert set(data.column("student_finish_reason").to_pylist()) == {"stop"}
    f = current_failures(run)
    assert f is not None
    kinds = dict(zip(f.column("row_id").to_pylist(), f.column("error_kind").to_pylist(), strict=True))
    assert kinds == dict.fromkeys(cut, "student_truncated")
    fsols = dict(zip(f.column("row_id").to_pylist(), f.column("student_solution").to_pylist(), strict=True))
    assert all(fsols[i] == answers[i] for i in cut)


@dataclass
class Kill:
    """What one killed session did: the generate stage's durable rows before and at the kill, the run's final
    rows likewise, and the revisions the teacher mocks answered during the session."""

    gen_before: int
    gen_at: int
    final_before: int
    final_at: int
    revisions: int

    def phase(self, rows: int) -> str:
        if self.revisions == 0 and self.gen_before < self.gen_at:
            return "generate only"
        if self.gen_before == rows and self.revisions and self.final_before < self.final_at < rows:
            return "revise draining"
        if self.gen_before < self.gen_at < rows and self.revisions and self.final_before < self.final_at:
            return "both"
        return "other"


def _at_least(run_dir: Path, n: int) -> bool:
    return durable_rows(run_dir) >= n


def _wait_until(p: subprocess.Popen[str], cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if p.poll() is not None:
            _, err = p.communicate()
            raise AssertionError(f"the run ended (exit {p.returncode}) before the kill: {err[-2000:]}")
        if time.monotonic() > deadline:
            p.kill()
            p.communicate()
            raise AssertionError("the run did not get to the kill point in time")
        time.sleep(0.005)


def test_kill9_torture_of_a_two_stage_run(tmp_path: Path) -> None:
    rows, s_conc, t_conc = 3000, 32, 16
    inp = make_prompts(tmp_path, rows)
    prompts = _prompts(inp)
    run = tmp_path / "run"
    gen = run / GENERATE
    rng = random.Random(20240616)
    kills: list[Kill] = []
    with (_student_mock("--latency-ms", "10", "--latency-dist", "lognormal") as student,
          MockProcess(["--latency-ms", "40", "--latency-dist", "lognormal", "--seed", "5"]) as teacher,
          MockProcess(["--latency-ms", "60000"]) as stuck):  # a teacher that never answers in time
        cfg = write_two_stage_config(tmp_path, student.url, teacher.url, inp, student_conc=s_conc,
                                     teacher_conc=t_conc, generate={
                                         "endpoints": [{"url": student.url, "model": STUDENT_MODEL,
                                                        "max_concurrency": s_conc}],
                                         "generation": {"temperature": 0.7, "max_tokens": STUDENT_MAX_TOKENS}},
                                     output={"dir": str(run), "rows_per_shard": 250}, guard=NO_GUARD)

        def revisions() -> int:
            return int(teacher.stats()["completions"]) + int(stuck.stats()["completions"])

        def session(min_gen: int, min_final: int, delay: float, *sets: str, gen_done: bool = False) -> None:
            """One `clair run`, killed -9 ``delay`` s after this session made ``min_gen`` student answers and
            ``min_final`` final rows durable (and, with ``gen_done``, after the generate stage finished)."""
            g0, f0, r0 = durable_rows(gen), durable_rows(run), revisions()

            def ready() -> bool:
                g = durable_rows(gen)
                return g - g0 >= min_gen and durable_rows(run) - f0 >= min_final and (g >= rows or not gen_done)

            p = clair_popen("run", str(cfg), *[a for s in sets for a in ("--set", s)])
            _wait_until(p, ready)
            time.sleep(delay)
            p.send_signal(signal.SIGKILL)
            p.communicate()
            assert p.returncode == -signal.SIGKILL, p.returncode
            kills.append(Kill(g0, durable_rows(gen), f0, durable_rows(run), revisions() - r0))

        # 1: only the generate stage produces; the revise stage's requests hang at the stuck teacher
        session(rng.randint(100, 600), 0, rng.uniform(0.0, 0.3), f"endpoints.0.url={stuck.url}")
        # 2-4: both stages produce
        for _ in range(3):
            session(rng.randint(50, 300), 20, rng.uniform(0.0, 0.15))
        # 5-8: the generate stage is done; the revise stage drains the answers waiting for it
        while len(kills) < 8 and durable_rows(run) < rows - 600:
            session(0, 20, rng.uniform(0.0, 0.4), gen_done=True)

        r = clair("run", str(cfg))
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
        s_stats, t_stats, stuck_stats = student.stats(), teacher.stats(), stuck.stats()

    assert_exactly_once(run, rows)
    assert_stage_exactly_once(run, rows)
    _assert_final_rows(run, prompts)
    # each stage paid at most its rows + kills x its concurrency (only what was in flight at a kill)
    n_kills, cut = len(kills), len(_expected_answers(prompts)[1])
    assert s_stats["requests"] == s_stats["student_requests"]  # the teacher never asked the student's mock
    assert rows <= s_stats["student_requests"] <= rows + n_kills * s_conc, s_stats
    teacher_paid = t_stats["requests"] + stuck_stats["requests"]
    assert t_stats["student_requests"] == stuck_stats["student_requests"] == 0
    assert rows - cut <= teacher_paid <= rows - cut + n_kills * t_conc, (t_stats, stuck_stats)
    # the kills landed in every phase of a two-stage run
    phases = [k.phase(rows) for k in kills]
    assert {"generate only", "both", "revise draining"} <= set(phases), (phases, kills)


def test_kill9_of_a_generation_only_run(tmp_path: Path) -> None:
    """Stage 1 alone (no top-level endpoints): the answers are the run's data rows, every row once."""
    rows, conc, n_kills = 2000, 16, 4
    inp = make_prompts(tmp_path, rows)
    run = tmp_path / "run"
    rng = random.Random(7)
    with _student_mock("--latency-ms", "20", "--latency-dist", "lognormal") as student:
        cfg = write_two_stage_config(tmp_path, student.url, None, inp, student_conc=conc,
                                     output={"dir": str(run), "rows_per_shard": 200})
        for _ in range(n_kills):
            f0 = durable_rows(run)
            p = clair_popen("run", str(cfg))
            target = rng.randint(100, 300)
            _wait_until(p, partial(_at_least, run, f0 + target))
            time.sleep(rng.uniform(0.0, 0.2))
            p.send_signal(signal.SIGKILL)
            p.communicate()
        assert durable_rows(run) < rows
        r = clair("run", str(cfg))
        assert r.returncode == 0, r.stderr
        st = student.stats()
    assert_exactly_once(run, rows)
    assert not (run / "stages").exists()
    assert rows <= st["student_requests"] <= rows + n_kills * conc, st
    t = pq.read_table(run / "data").sort_by("row_id")
    gen = StudentAnswers(STUDENT_TOKENS, STUDENT_SEED)
    assert t.column("student_solution").to_pylist() == [gen.answer(p) for p in _prompts(inp)]
    assert "revision" not in t.column_names


def test_sigint_of_a_two_stage_run_exits_130_loses_nothing_and_resumes(tmp_path: Path) -> None:
    rows = 800
    inp = make_prompts(tmp_path, rows)
    prompts = _prompts(inp)
    run = tmp_path / "run"
    with (_student_mock("--latency-ms", "10") as student,
          MockProcess(["--latency-ms", "40"]) as teacher):
        cfg = write_two_stage_config(tmp_path, student.url, teacher.url, inp, student_conc=16, teacher_conc=16,
                                     generate={"endpoints": [{"url": student.url, "model": STUDENT_MODEL,
                                                              "max_concurrency": 16}],
                                               "generation": {"temperature": 0.7,
                                                              "max_tokens": STUDENT_MAX_TOKENS}},
                                     output={"dir": str(run), "rows_per_shard": 250},
                                     run={"progress": "off", "grace_period_s": 10}, guard=NO_GUARD)
        p = clair_popen("run", str(cfg))
        _wait_until(p, lambda: durable_rows(run) >= 50)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 130, err
        assert "resume with: clair run" in err and "Traceback" not in err
        # nothing lost: every answer received (either stage) was journaled before the exit
        gen_rows, final_rows = durable_rows(run / GENERATE), durable_rows(run)
        s1, t1 = student.stats(), teacher.stats()
        assert s1["student_completions"] == s1["student_requests"] == gen_rows
        assert t1["completions"] == t1["requests"]
        data, fails = read_ids(run)
        assert 50 <= final_rows == len(data) + len(fails) < rows and len(set(data + fails)) == final_rows
        cut = _expected_answers(prompts)[1]
        assert t1["requests"] == len(data) + len(set(fails) - cut)

        r = clair("run", str(cfg))
        assert r.returncode == 0, r.stderr
        assert f"resuming: {final_rows} of {rows} rows done" in r.stderr
        s2, t2 = student.stats(), teacher.stats()
    assert_exactly_once(run, rows)
    assert_stage_exactly_once(run, rows)
    _assert_final_rows(run, prompts)
    # nothing was asked twice: Ctrl-C waited for the requests in flight
    assert s2["student_requests"] == rows and t2["requests"] == rows - len(cut)
