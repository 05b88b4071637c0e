"""``clair show``: pairs of a run as a word diff (tests/test_show.py).

The word diff is tested on its structure (runs of equal / deleted / inserted words); the command on small
runs made with the bundled mock (one with ``no_marker`` faults and a ``max_tokens`` that truncates some
answers, one with string row ids), against the rows read straight from the shards."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from helpers import ROOT, write_config

from engine.cli import main
from engine.commands import show as show_mod
from engine.commands.show import CONTEXT_WORDS, find_rows, show_run
from engine.commands.worddiff import DELETE, EQUAL, INSERT, SKIP, Run, changed, elide, render_plain, word_diff
from engine.minimality import pair_metrics
from engine.store import RunView
from engine.tools.demo import first_revised
from engine.tools.mockserver_proc import MockProcess
from engine.tools.synthetic.files import write_sample


def _kinds(runs: list[Run]) -> list[tuple[str, str]]:
    return [(r.kind, r.text) for r in runs]


# ---------------------------------------------------------------------------- the word diff


def test_identical_texts_are_one_equal_run() -> None:
    assert _kinds(word_diff("a b c", "a b c")) == [(EQUAL, "a b c")]
    assert not changed(word_diff("a b c", "a b c"))
    assert word_diff("", "") == [] and word_diff("  ", "\n") == []


def test_an_inserted_word() -> None:
    runs = word_diff("The big dog.", "The very big dog.")
    assert _kinds(runs) == [(EQUAL, "The"), (INSERT, "very"), (EQUAL, "big dog.")]
    assert render_plain(runs) == "The {+very+} big dog."


def test_a_deleted_word() -> None:
    runs = word_diff("It is very big.", "It is big.")
    assert _kinds(runs) == [(EQUAL, "It is"), (DELETE, "very"), (EQUAL, "big.")]
    assert render_plain(runs) == "It is [-very-] big."


def test_a_replaced_stretch_is_a_delete_then_an_insert() -> None:
    runs = word_diff("The capital of France is Lyon. It is big.", "The capital of France is Paris. It is big.")
    assert _kinds(runs) == [(EQUAL, "The capital of France is"), (DELETE, "Lyon."), (INSERT, "Paris."),
                            (EQUAL, "It is big.")]
    assert render_plain(runs) == "The capital of France is [-Lyon.-]{+Paris.+} It is big."


def test_changes_at_both_ends_and_whole_texts() -> None:
    assert _kinds(word_diff("Basically, bird migration", "Bird migration")) == [
        (DELETE, "Basically, bird"), (INSERT, "Bird"), (EQUAL, "migration")]
    assert render_plain(word_diff("x a b", "a b")) == "[-x-] a b"  # a space after a deletion at the start
    assert render_plain(word_diff("a b", "a b c")) == "a b {+c+}"
    assert _kinds(word_diff("", "new words")) == [(INSERT, "new words")]
    assert _kinds(word_diff("old words", "")) == [(DELETE, "old words")]


def test_whitespace_only_changes_are_not_changes() -> None:
    runs = word_diff("same  text\nhere ", "same text here")
    assert _kinds(runs) == [(EQUAL, "same text here")]
    assert not changed(runs)
    # the revision's line breaks are kept in unchanged and inserted words, the original's in deleted ones
    runs = word_diff("one two\nthree", "one\n\ntwo\nthree four\nfive")
    assert _kinds(runs) == [(EQUAL, "one\n\ntwo\nthree"), (INSERT, "four\nfive")]
    assert render_plain(runs) == "one\n\ntwo\nthree {+four\nfive+}"


def test_long_unchanged_stretches_are_cut_to_context() -> None:
    words = [f"w{i}" for i in range(100)]
    b = list(words)
    b[50] = "W50"
    runs = word_diff(" ".join(words), " ".join(b) + " end")
    cut = elide(runs, 5)
    assert [r.kind for r in cut] == [SKIP, EQUAL, DELETE, INSERT, EQUAL, SKIP, EQUAL, INSERT]
    assert cut[0].text == "45" and cut[5].text == "39"  # unchanged words left out
    assert cut[1].text == "w45 w46 w47 w48 w49" and cut[4].text == "w51 w52 w53 w54 w55"
    assert render_plain(runs, 5) == ("[... 45 unchanged words ...] w45 w46 w47 w48 w49 [-w50-]{+W50+} "
                                     "w51 w52 w53 w54 w55 [... 39 unchanged words ...] w95 w96 w97 w98 w99 {+end+}")
    assert elide(runs, -1) == runs
    same = word_diff("a b c d e f g h", "a b c d e f g h")
    assert elide(same, 0) == same == [Run(EQUAL, "a b c d e f g h")]  # nothing changed: kept whole
    short = word_diff("a b c d X e f", "a b c d Y e f")
    assert elide(short, 2) == short  # cutting would leave out fewer than MIN_CUT words


def test_the_diff_of_long_answers_rebuilds_both_texts() -> None:
    a = " ".join(f"word{i % 97}" for i in range(600))
    b = a.replace("word13 ", "WORD ", 3) + " closing line."
    runs = word_diff(a, b)
    assert " ".join(r.text for r in runs if r.kind != INSERT) == a
    assert " ".join(r.text for r in runs if r.kind != DELETE) == b


# ---------------------------------------------------------------------------- runs made with the mock


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 rows: ok and truncated data rows (max_tokens 700), and no_marker / truncated_no_revision failures."""
    tmp = tmp_path_factory.mktemp("show")
    inp = tmp / "input.parquet"
    write_sample(str(inp), 60, seed=0)
    with MockProcess(["--latency-ms", "2", "--rate-no-marker", "0.15", "--seed", "3"]) as m:
        cfg = write_config(tmp, m.url, inp, generation={"max_tokens": 700})
        assert main(["run", str(cfg)]) == 0
    return tmp / "run"


@pytest.fixture(scope="module")
def str_run(tmp_path_factory: pytest.TempPathFactory, mock: MockProcess) -> Path:
    tmp = tmp_path_factory.mktemp("show_str")
    inp = tmp / "input.jsonl"
    inp.write_text("".join(json.dumps({"uid": f"q-{i}", "prompt": f"Question {i}?",
                                       "answer": f"Teh answer {i} is very simple."}) + "\n" for i in range(8)))
    cfg = write_config(tmp, mock.url, inp, input={"path": str(inp), "id_column": "uid",
                                                 "columns": {"task": "prompt", "student_solution": "answer"}})
    assert main(["run", str(cfg)]) == 0
    return tmp / "run"


def _data(run: Path) -> list[dict[str, Any]]:
    """Every data row, in shard order (the ground truth, read straight from the shards)."""
    rows: list[dict[str, Any]] = []
    for p in sorted((run / "data").glob("part-*.parquet")):
        rows += pq.read_table(p).to_pylist()
    return rows


def _failures(run: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in sorted((run / "failures").glob("part-*.parquet")):
        rows += pq.read_table(p).to_pylist()
    return rows


def _show(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["show", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _heads(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith("── row_id ")]


def _head_of(row: dict[str, Any]) -> str:
    return (f"── row_id {row['row_id']!r} · {row['status']} · jaccard {row['jaccard']:.3f} · "
            f"levenshtein {row['levenshtein']} · length ratio {row['length_ratio']:.3f}")


def test_the_run_has_what_the_tests_need(run: Path) -> None:
    statuses = {r["status"] for r in _data(run)}
    kinds = {r["error_kind"] for r in _failures(run)}
    assert {"ok", "truncated"} <= statuses and "worsened" not in statuses
    assert "no_marker" in kinds
    assert any(r["levenshtein"] > 0 for r in _data(run))


def test_default_shows_the_first_five_data_rows_with_diff_rationale_and_figures(
        run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _show(capsys, str(run))
    assert code == 0, err
    first = _data(run)[:5]
    assert _heads(out) == [_head_of(r) for r in first]
    assert out.splitlines()[0] == show_mod.LEGEND
    assert out.count("\nrationale:\n") == 5
    for row in first:  # the row's rationale and the words of its diff are shown
        assert row["rational"].splitlines()[0] in out
        for r in word_diff(row["student_solution"], row["revision"]):
            if r.kind == DELETE:
                assert f"[-{r.text.splitlines()[0]}" in out
            elif r.kind == INSERT:
                assert f"{{+{r.text.splitlines()[0]}" in out
    assert "\x1b[" not in out  # not a terminal: markers, no colours


def test_n_picks_how_many(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _show(capsys, str(run), "--n", "2")
    assert code == 0 and _heads(out) == [_head_of(r) for r in _data(run)[:2]]
    code, out, _ = _show(capsys, str(run), "-n", "100")
    assert code == 0 and len(_heads(out)) == len(_data(run))
    code, out, err = _show(capsys, str(run), "--n", "0")
    assert code == 2 and out == "" and err == "error: --n must be at least 1 (got 0)\n"


def test_row_id_picks_one_data_row(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    row = next(r for r in _data(run)[5:] if r["levenshtein"] > 0)
    code, out, _ = _show(capsys, str(run), "--row-id", str(row["row_id"]), "--n", "3")
    assert code == 0 and _heads(out) == [_head_of(row)]
    expected = render_plain(word_diff(row["student_solution"], row["revision"]), CONTEXT_WORDS)
    body = out.split("\ndiff:\n", 1)[1].split("\nrationale:\n", 1)[0]
    assert "\n".join(ln.removeprefix("  ") for ln in body.splitlines()) == expected


def test_row_id_of_a_failure_shows_its_error_and_raw_output(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = next(r for r in _failures(run) if r["error_kind"] == "no_marker")
    code, out, _ = _show(capsys, str(run), "--row-id", str(f["row_id"]))
    assert code == 0
    assert _heads(out) == [f"── row_id {f['row_id']} · failed: no_marker · finish_reason stop"]
    assert f"\nerror: {f['error_message']}\n" in out
    assert "raw output" in out and f["raw_output"].splitlines()[0] in out
    assert "rationale:" not in out and show_mod.LEGEND not in out


def test_row_id_not_found_or_of_the_wrong_type_is_one_line_exit_2(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _show(capsys, str(run), "--row-id", "9999")
    assert code == 2 and out == "" and err == f"error: no row with row_id 9999 in {run}\n"
    code, out, err = _show(capsys, str(run), "--row-id", str(2**70))  # beyond int64
    assert code == 2 and out == "" and err == f"error: no row with row_id {2**70} in {run}\n"
    code, out, err = _show(capsys, str(run), "--row-id", "q-1")
    assert code == 2 and out == "" and err == "error: --row-id 'q-1': this run's row ids are integers\n"


def test_string_row_ids(str_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _show(capsys, str(str_run), "--row-id", "q-3")
    assert code == 0 and len(_heads(out)) == 1 and _heads(out)[0].startswith("── row_id 'q-3' · ok · ")
    assert "{+The+}" in out or "[-Teh-]{+The+}" in out  # the mock fixed the misspelling
    code, out, err = _show(capsys, str(str_run), "--row-id", "3")
    assert code == 2 and err == f"error: no row with row_id '3' in {str_run}\n"


def test_status_picks_data_rows_of_that_status(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truncated = [r for r in _data(run) if r["status"] == "truncated"]
    code, out, _ = _show(capsys, str(run), "--status", "truncated", "--n", "3")
    assert code == 0 and _heads(out) == [_head_of(r) for r in truncated[:3]]
    code, out, _ = _show(capsys, str(run), "--status", "ok", "--n", "1000")
    assert code == 0 and _heads(out) == [_head_of(r) for r in _data(run) if r["status"] == "ok"]


def test_status_with_no_rows_says_so(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    n_ok = sum(r["status"] == "ok" for r in _data(run))
    n_tr = sum(r["status"] == "truncated" for r in _data(run))
    code, out, _ = _show(capsys, str(run), "--status", "worsened")
    assert code == 0
    assert out == f"no row of {run} has status worsened (data rows by status: ok {n_ok}, truncated {n_tr})\n"
    code, out, _ = _show(capsys, str(run), "--status", "timeout")
    assert code == 0 and out.startswith(f"no row of {run} failed with timeout (failed rows by kind: ")


def test_status_picks_failure_rows_of_that_kind(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    no_marker = [r for r in _failures(run) if r["error_kind"] == "no_marker"]
    code, out, _ = _show(capsys, str(run), "--status", "no_marker", "--n", "2")
    assert code == 0
    assert _heads(out) == [f"── row_id {r['row_id']} · failed: no_marker · finish_reason stop" for r in no_marker[:2]]
    assert out.count("\nerror: ") == len(no_marker[:2]) and out.count("raw output") == len(no_marker[:2])


def test_an_unknown_status_is_one_line_exit_2(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _show(capsys, str(run), "--status", "great")
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert err.startswith("error: --status great: unknown status; give ok, truncated, worsened or a failure kind")
    assert "no_marker" in err  # names what the run holds


def test_not_a_run_directory_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _show(capsys, str(tmp_path))
    assert code == 2 and out == "" and err == f"error: {tmp_path} is not a clair run directory (no manifest.json); check the path\n"


def test_row_id_and_status_do_not_go_together(run: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "engine.cli", "show", str(run), "--row-id", "1", "--status", "ok"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "not allowed with argument" in r.stderr


def test_the_supersession_rules_and_missing_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hand-made run (tests/test_export.py): row 6's failure is superseded by its data row (whose figures
    the shard left null), row 21 failed with timeout and then with server_error (the newest counts)."""
    from test_export import make_run

    run = make_run(tmp_path)
    code, out, _ = _show(capsys, str(run), "--row-id", "6")
    m = pair_metrics("Hello there, friend!", "Hello ther, friend!")
    assert code == 0 and _heads(out) == [f"── row_id 6 · ok · jaccard {m['jaccard']:.3f} · levenshtein "
                                         f"{m['levenshtein']} · length ratio {m['length_ratio']:.3f}"]
    assert "[-ther,-]{+there,+}" in out and "rationale:\n  -" in out  # no rationale in that row
    code, out, _ = _show(capsys, str(run), "--row-id", "21")
    assert code == 0 and _heads(out) == ["── row_id 21 · failed: server_error"]
    assert "raw output: none" in out
    code, out, _ = _show(capsys, str(run), "--status", "server_error")
    assert code == 0 and _heads(out) == ["── row_id 21 · failed: server_error"]
    code, out, _ = _show(capsys, str(run), "--status", "timeout")  # 21 timed out first, 6 has a revision now
    assert code == 0 and out.startswith(f"no row of {run} failed with timeout (failed rows by kind: no_marker 1, "
                                        "server_error 1)")
    code, out, _ = _show(capsys, str(run), "--row-id", "2")
    assert "revision (identical to the original):\n  Red.\n" in out
    code, out, _ = _show(capsys, str(run), "--row-id", "7")
    assert "revision (the original up to whitespace):\n  Red.\n" in out


def test_a_row_id_written_twice_is_shown_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_export import make_run

    run = make_run(tmp_path, shards=[[0, 1, 2, 3], [4, 0, 5, 6, 7]])
    code, out, _ = _show(capsys, str(run), "--n", "20")
    assert code == 0 and [h.split(" · ")[0] for h in _heads(out)] == [f"── row_id {i}" for i in (0, 1, 2, 3, 4, 5, 6, 7)]


def test_colours_on_a_terminal_and_markers_elsewhere(run: Path) -> None:
    row = next(r for r in _data(run) if r["levenshtein"] > 0)
    col, plain = io.StringIO(), io.StringIO()
    assert show_run(run, row_id=str(row["row_id"]), color=True, out=col) == 0
    assert show_run(run, row_id=str(row["row_id"]), color=False, out=plain) == 0
    assert "\x1b[" in col.getvalue() and "[-" not in col.getvalue() and "{+" not in col.getvalue()
    assert "\x1b[" not in plain.getvalue() and ("[-" in plain.getvalue() or "{+" in plain.getvalue())


def test_full_shows_the_whole_texts(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    row = next(r for r in _data(run) if r["levenshtein"] > 0 and len(r["student_solution"].split()) > 100)
    _, cut, _ = _show(capsys, str(run), "--row-id", str(row["row_id"]))
    _, full, _ = _show(capsys, str(run), "--row-id", str(row["row_id"]), "--full")
    assert "unchanged words ...]" in cut and "unchanged words ...]" not in full
    assert render_plain(word_diff(row["student_solution"], row["revision"])).split()[-1] in full


def test_a_running_run_is_shown_with_a_warning(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from engine.store.manifest import RunLock

    lock = RunLock(run)
    lock.acquire()
    try:
        r = subprocess.run([sys.executable, "-m", "engine.cli", "show", str(run), "--n", "1"],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
    finally:
        lock.release()
    assert r.returncode == 0 and len(_heads(r.stdout)) == 1
    assert "being written by a running job" in r.stderr


def test_show_stops_reading_once_it_has_enough_rows(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(show_mod, "BATCH_ROWS", 4)
    view = RunView.open(run)
    read: list[int] = []
    orig = view.iter_batches

    def counting(kind: str, columns: list[str], batch_rows: int) -> Iterator[Any]:
        for b in orig(kind, columns, batch_rows):
            read.append(b.num_rows)
            yield b

    monkeypatch.setattr(view, "iter_batches", counting)
    found = find_rows(view, n=3)
    assert [r["row_id"] for r in found.rows] == [r["row_id"] for r in _data(run)[:3]]
    assert read == [4]  # one small batch, not the run


def _buffered_env() -> dict[str, str]:
    """The environment of a user's shell: stdout block-buffered into a pipe (PYTHONUNBUFFERED, set in some CI
    and sandboxes, would hide a write that fails only at the interpreter's final flush)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


@pytest.mark.parametrize(("n", "lines"), [(1, 0), (60, 0), (60, 1)])
def test_a_closed_output_pipe_ends_quietly(run: Path, n: int, lines: int) -> None:
    """Like `clair show RUN | head -1`; a short output (one row) only meets the closed pipe when flushed."""
    p = subprocess.Popen([sys.executable, "-m", "engine.cli", "show", str(run), "--n", str(n), "--full"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=_buffered_env())
    assert p.stdout is not None and p.stderr is not None
    for _ in range(lines):  # like `| head -1`: read a line, then go away
        p.stdout.readline()
    p.stdout.close()
    with p.stderr:
        err = p.stderr.read().decode()
    code = p.wait(60)
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err
    assert code in (0, 141)


@pytest.mark.parametrize("args", [["stats"], ["status"], ["status", "--json"], ["show", "--status", "worsened"]])
def test_a_short_output_into_a_closed_pipe_ends_quietly(run: Path, args: list[str]) -> None:
    """Regression: output that fits the stdout buffer met the closed pipe only at the interpreter's exit
    ("Exception ignored ... BrokenPipeError", exit code 120), hidden where PYTHONUNBUFFERED is set."""
    p = subprocess.Popen([sys.executable, "-m", "engine.cli", args[0], str(run), *args[1:]],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=_buffered_env())
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()
    with p.stderr:
        err = p.stderr.read().decode()
    assert p.wait(60) == 141 and err == "", err


def test_the_demo_picks_a_pair_with_a_revision(run: Path) -> None:
    rid = first_revised(run)
    row = next(r for r in _data(run) if r["row_id"] == rid)
    assert row["levenshtein"] > 0 and row["revision"] != row["student_solution"]
    assert rid == next(r["row_id"] for r in _data(run) if r["levenshtein"] > 0)
