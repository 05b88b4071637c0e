"""`clair status`, `export`, `stats`, `show` and the dataset card on runs with a generate stage (issue 16).

The run directories are made in-process by real jobs with a fake client (both models behind it): a two-stage
run, a generation-only run and a revise-only run. No test reads the wall clock: live figures are judged
against a given ``now``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from engine import load_config, run_job
from engine.cli import main as clair_main
from engine.client import FakeClient
from engine.commands import rundata
from engine.commands.card import dataset_card
from engine.commands.export import ExportOptions, export_run
from engine.commands.show import show_run
from engine.commands.stats import collect_stats
from engine.commands.status import GENERATION_ONLY, LIVE_FRESH_S, TWO_STAGE, collect_status, format_status
from engine.core.errors import StorageError, UserError
from engine.core.types import Completion
from engine.store import RunStore, RunView
from engine.store.facade import LIVE
from engine.store.fs import LocalStorage
from engine.tools.mockserver import build_answer

STUDENT, TEACHER = "student-model", "mock-clair"
N = 12
TRUNCATE = {3}  # the student's answer to row 3 is cut by max_tokens: a student_truncated final row
#: the old keys of `clair status --json` (scripts parse them): still there, with the same meaning
OLD_KEYS = {"run_dir", "active", "active_pid", "rows_total", "rows_done", "rows_revised", "rows_failed",
            "failure_kinds", "rows_in_journal", "rows_remaining", "data_shards", "failure_shards",
            "journal_segments", "journal_bytes", "last_activity", "last_run_status", "paused_since", "sessions",
            "fingerprint", "parser_version", "report"}


def _answer(prompt: str) -> str:
    return f"The answer to '{prompt}' is teh number you get by adding."


def _client() -> FakeClient:
    async def handler(url: str, headers: dict[str, str], body: dict[str, Any]) -> Completion:
        text = body["messages"][-1]["content"]
        if body["model"] == STUDENT:
            n = int(text.split("number ", 1)[1].split(":", 1)[0])
            return Completion(content=_answer(text), finish_reason="length" if n in TRUNCATE else "stop",
                              model=STUDENT, prompt_tokens=20, completion_tokens=15)
        sol = text.split("{student_solution}: ", 1)[1].split("\n\n-----------------", 1)[0]
        return Completion(content=build_answer(sol, 0), finish_reason="stop", model=TEACHER, prompt_tokens=700,
                          completion_tokens=800)

    return FakeClient(handler, models=[STUDENT, TEACHER])


def _make_run(d: Path, *, generate: bool, teacher: bool) -> Path:
    d.mkdir(parents=True)
    inp = d / "prompts.parquet"
    prompts = [f"question number {i}: what is {i} + {i}?" for i in range(N)]
    pq.write_table(pa.table({"prompt": prompts, "student_solution": [_answer(p) for p in prompts]}), inp)
    cfg: dict[str, Any] = {
        "input": {"path": str(inp), "columns": {"task": "prompt"} if generate else
                  {"task": "prompt", "student_solution": "student_solution"}},
        "generation": {"temperature": 0.0, "max_tokens": 4096},
        "output": {"dir": str(d / "run"), "rows_per_shard": 5},
        "retry": {"base_delay_s": 0.01, "max_delay_s": 0.05, "max_attempts": 2},
        "run": {"progress": "off"},
    }
    if generate:
        cfg["generate"] = {"endpoints": [{"url": "http://127.0.0.1:9/v1", "model": STUDENT, "max_concurrency": 4}],
                           "generation": {"temperature": 0.7, "max_tokens": 200}}
    if teacher:
        cfg["endpoints"] = [{"url": "http://127.0.0.1:9/v1", "model": TEACHER, "max_concurrency": 4}]
    p = d / "job.yaml"
    p.write_text(yaml.safe_dump(cfg))
    rep = run_job(load_config(p), client=_client())
    assert rep.status == "completed" and rep.rows_done == N
    return d / "run"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("runs")
    return {"two": _make_run(base / "two", generate=True, teacher=True),
            "gen": _make_run(base / "gen", generate=True, teacher=False),
            "revise": _make_run(base / "revise", generate=False, teacher=True)}


@pytest.fixture()
def two(runs: dict[str, Path], tmp_path: Path) -> Path:
    """A copy of the two-stage run that a test may change."""
    return Path(shutil.copytree(runs["two"], tmp_path / "run"))


# ---------------------------------------------------------------------------- live figures in the store

LIVE_INFO = {"at": 1000.0, "waiting": 7,
             "stages": {"generate": {"rows_done": 9, "rows_total": N, "rows_per_s": 4.5, "eta_s": 0.7,
                                     "in_flight": 3, "failed": 1},
                        "revise": {"rows_done": 2, "rows_total": N, "rows_per_s": 1.25, "eta_s": 8.0,
                                   "in_flight": 4, "failed": 0}}}


def test_live_figures_round_trip_through_the_store(two: Path) -> None:
    assert RunView.open(two).live() is None
    with RunStore.open_existing(two) as store:
        store.save_live(LIVE_INFO)
    assert RunView.open(two).live() == LIVE_INFO
    (two / LIVE).write_bytes(b"{not json")
    assert RunView.open(two).live() is None


class _FailingWrites(LocalStorage):
    """A disk that refuses every write."""

    def write_atomic(self, name: str, data: bytes) -> None:
        raise StorageError(f"no space left for {name}")


def test_save_live_is_best_effort(two: Path) -> None:
    with RunStore.open_existing(two, storage=_FailingWrites(two)) as store:
        store.save_live(LIVE_INFO)  # no error: the run goes on
    assert not (two / LIVE).exists()


# ---------------------------------------------------------------------------- clair status


def test_status_of_a_finished_two_stage_run_shows_both_stages(runs: dict[str, Path]) -> None:
    i = collect_status(runs["two"])
    assert i.keys() >= OLD_KEYS
    assert i["kind"] == TWO_STAGE and not i["active"]
    assert (i["rows_done"], i["rows_revised"], i["rows_failed"]) == (N, N - 1, 1)
    g, r = i["stages"]["generate"], i["stages"]["revise"]
    assert (g["rows_done"], g["rows_ok"], g["rows_failed"], g["failure_kinds"]) == (N, N - 1, 1,
                                                                                   {"student_truncated": 1})
    # the revise stage's own failures: none; the student_truncated row failed before it
    assert (r["rows_done"], r["rows_ok"], r["rows_failed"], r["rows_failed_upstream"]) == (N, N - 1, 0, 1)
    assert i["rows_waiting"] == 0 and i["rows_generated"] == N - 1
    report = i["report"]
    assert g["figures"] == r["figures"] == "last_session"
    assert g["rows_per_s"] == report["extra"]["stages"]["generate"]["rows_per_s"]
    assert r["rows_per_s"] == report["rows_per_s"] and g["in_flight"] is None and g["eta_s"] is None
    text = format_status(i)
    assert f"rows: {N} of {N} done, {N - 1} revised, 1 failed, 0 remaining" in text
    assert f"stage generate: {N} of {N} done, {N - 1} answered, 1 failed (student_truncated 1)" in text
    assert f"stage revise: {N} of {N} done, {N - 1} revised, 0 failed (+1 failed in the generate stage)" in text
    assert "waiting between the stages: 0 rows" in text
    assert f"last session, generate stage: {N} requests" in text


def test_rows_waiting_are_student_answers_without_a_final_row(two: Path) -> None:
    """Student answers the revise stage has not finished (its rows removed here) wait between the stages."""
    view = RunView.open(two)
    first = view.shards("data")[0]
    in_first = pq.read_metadata(two / first).num_rows
    (two / first).unlink()
    i = collect_status(two)
    assert i["rows_waiting"] == in_first
    assert i["stages"]["generate"]["rows_done"] == N and i["stages"]["revise"]["rows_done"] == N - in_first
    assert f"waiting between the stages: {in_first} rows" in format_status(i)
    # never below 0: a final row whose student answer is not in the stage's shards
    for f in (two / "stages" / "generate" / "data").glob("*.parquet"):
        f.unlink()
    assert collect_status(two)["rows_waiting"] == 0


def test_an_active_run_shows_fresh_live_figures_per_stage(two: Path) -> None:
    with RunStore.open_existing(two) as store:  # holds the run's lock: the run is ACTIVE
        store.save_live(LIVE_INFO)
        i = collect_status(two, now=LIVE_INFO["at"] + 5)
        assert i["active"] and i["live_at"] == LIVE_INFO["at"]
        g, r = i["stages"]["generate"], i["stages"]["revise"]
        assert (g["in_flight"], g["rows_per_s"], g["eta_s"], g["figures"]) == (3, 4.5, 0.7, "live")
        assert (r["in_flight"], r["rows_per_s"], r["eta_s"], r["figures"]) == (4, 1.25, 8.0, "live")
        text = format_status(i)
        assert "; 3 in flight, 4.5 rows/s" in text and "; 4 in flight, 1.2 rows/s" in text

        stale = collect_status(two, now=LIVE_INFO["at"] + LIVE_FRESH_S + 1)
        assert stale["live_at"] is None
        for st in stale["stages"].values():  # an active run: not the last session's figures either
            assert (st["in_flight"], st["rows_per_s"], st["figures"]) == (None, None, None)
        assert "no live figures yet" in format_status(stale)
    # the run ended: its live figures are not shown however fresh, the last session's rows/s are
    done = collect_status(two, now=LIVE_INFO["at"] + 5)
    assert not done["active"] and done["stages"]["revise"]["figures"] == "last_session"


def test_an_eta_is_shown_only_while_rows_remain(two: Path) -> None:
    first = RunView.open(two).shards("data")[0]
    (two / first).unlink()
    with RunStore.open_existing(two) as store:
        store.save_live(LIVE_INFO)
        text = format_status(collect_status(two, now=LIVE_INFO["at"]))
    revise_line = next(ln for ln in text.splitlines() if ln.startswith("stage revise"))
    generate_line = next(ln for ln in text.splitlines() if ln.startswith("stage generate"))
    assert "ETA 8s" in revise_line and "ETA" not in generate_line  # the generate stage is done


def test_status_of_a_generation_only_run_says_generated(runs: dict[str, Path]) -> None:
    i = collect_status(runs["gen"])
    assert i.keys() >= OLD_KEYS
    assert i["kind"] == GENERATION_ONLY and list(i["stages"]) == ["generate"]
    assert (i["rows_generated"], i["rows_revised"], i["rows_failed"], i["rows_waiting"]) == (N - 1, 0, 1, None)
    text = format_status(i)
    assert f"rows: {N} of {N} done, {N - 1} generated, 1 failed, 0 remaining" in text
    assert "revised" not in text and "generation-only" in text


def test_status_of_a_revise_only_run_keeps_its_keys_and_text(runs: dict[str, Path], capsys: Any) -> None:
    i = collect_status(runs["revise"])
    assert i["kind"] == "revise" and list(i["stages"]) == ["revise"]
    assert (i["rows_done"], i["rows_revised"], i["rows_failed"]) == (N, N, 0)
    assert i["rows_generated"] is None and i["rows_waiting"] is None
    text = format_status(i)
    assert f"rows: {N} of {N} done, {N} revised, 0 failed, 0 remaining" in text
    assert "stage" not in text and "waiting" not in text
    assert clair_main(["status", str(runs["revise"]), "--json"]) == 0
    j = orjson.loads(capsys.readouterr().out)
    assert j.keys() >= OLD_KEYS and j["rows_done"] == N


def test_status_json_of_a_two_stage_run(runs: dict[str, Path], capsys: Any) -> None:
    assert clair_main(["status", str(runs["two"]), "--json"]) == 0
    j = orjson.loads(capsys.readouterr().out)
    assert j["kind"] == TWO_STAGE and j["rows_waiting"] == 0
    assert j["stages"]["generate"]["rows_done"] == N and j["stages"]["revise"]["rows_failed_upstream"] == 1


# ---------------------------------------------------------------------------- export, stats, show, card


def test_trl_export_of_a_two_stage_run(runs: dict[str, Path], tmp_path: Path) -> None:
    run = runs["two"]
    res = export_run(run, tmp_path / "pairs.parquet", ExportOptions(format="trl"))
    assert res.rows_exported == N - 1 and res.failed == 1 and res.failure_kinds == {"student_truncated": 1}
    t = pq.read_table(tmp_path / "pairs.parquet").sort_by("row_id")
    assert t.column_names == ["prompt", "chosen", "rejected", "rational", "row_id"]
    assert 3 not in t.column("row_id").to_pylist()
    row = t.slice(0, 1).to_pylist()[0]
    prompt = "question number 0: what is 0 + 0?"
    assert row["prompt"] == [{"content": prompt, "role": "user"}]
    assert row["rejected"] == [{"content": _answer(prompt), "role": "assistant"}]  # the student's own answer
    assert row["chosen"][0]["content"] == _answer(prompt).replace("teh", "the")


def test_stats_of_a_two_stage_run(runs: dict[str, Path]) -> None:
    s = collect_stats(runs["two"])
    assert s["rows_revised"] == N - 1 and s["status"] == {"ok": N - 1}
    assert s["rows_failed"] == 1 and s["failure_kinds"] == {"student_truncated": 1}
    assert s["metrics"]["levenshtein"]["count"] == N - 1 and s["metrics"]["levenshtein"]["p50"] == 2.0


def test_show_a_truncated_student_answer(runs: dict[str, Path]) -> None:
    from io import StringIO

    out = StringIO()
    show_run(runs["two"], status="student_truncated", out=out)
    text = out.getvalue()
    assert "failed: student_truncated" in text
    assert "student answer:\n  " + _answer("question number 3: what is 3 + 3?") in text
    assert "no answer came back" not in text


def test_the_card_of_a_two_stage_export_names_the_student(runs: dict[str, Path], tmp_path: Path) -> None:
    res = export_run(runs["two"], tmp_path / "pairs.parquet")
    card = dataset_card(RunView.open(runs["two"]).manifest, res, "org/name")
    assert f"- Student (policy) model(s): `{STUDENT}`" in card
    assert "- Student generation: max_tokens=200, temperature=0.7" in card
    assert f"- Teacher model(s): `{TEACHER}`" in card
    assert "answers generated by the student model" in card
    plain = dataset_card(RunView.open(runs["revise"]).manifest, export_run(runs["revise"], tmp_path / "r.parquet"))
    assert "Student" not in plain and "answer column `student_solution`" in plain


@pytest.mark.parametrize("command", ["export", "stats", "show"])
def test_commands_that_need_revisions_refuse_a_generation_only_run(runs: dict[str, Path], command: str,
                                                                   capsys: Any) -> None:
    run = runs["gen"]
    assert clair_main([command, str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"{run} is a generation-only run (its rows are student answers, no revisions)" in err[0]
    assert "student_solution: student_solution" in err[0] and "load_dataset" in err[0]
    assert not (run / "export-trl.parquet").exists()


def test_generation_only_is_told_from_the_run(runs: dict[str, Path]) -> None:
    assert rundata.generation_only(RunView.open(runs["gen"]))
    assert not rundata.generation_only(RunView.open(runs["two"]))
    assert not rundata.generation_only(RunView.open(runs["revise"]))
    with pytest.raises(UserError, match="clair stats needs revisions"):
        collect_stats(runs["gen"])
