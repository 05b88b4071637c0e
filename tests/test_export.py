"""``clair export`` / ``clair stats`` on a synthetic run directory (no endpoint, no network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from engine.cli import main
from engine.commands.card import dataset_card, training_recipe
from engine.commands.export import ExportError, ExportOptions, ExportResult, export_run
from engine.commands.hub import HubPushError, check_hub_target
from engine.commands.stats import collect_stats, format_stats
from engine.core.errors import RunStateError, UserError
from engine.minimality import jaccard, length_ratio, levenshtein, pair_metrics
from engine.records import data_schema, failure_schema

REPO = Path(__file__).resolve().parents[1]
INT64 = pa.int64()

# (row_id, task, student_solution (original), revision, status, rational)
ROWS: list[tuple[int, str, str, str, str, str | None]] = [
    (0, "What is the capital of France?", "The capital of France is Lyon.", "The capital of France is Paris.",
     "ok", "Lyon is not the capital."),
    (1, "Add 2 and 2.", "2 + 2 = 5", "2 + 2 = 4", "ok", "Arithmetic slip."),
    (2, "Name a primary color.", "Red.", "Red.", "ok", "Already correct."),  # identical
    (3, "Explain gravity.", "Gravity pulls", "Gravity pulls objects together", "truncated", "cut off"),
    (4, "Spell cat.", "c a t", "d o g", "worsened", "made worse"),
    (5, "Describe the sea.", "The sea is big and blue and full of fish.",
     "Oceans: vast saline bodies covering most of Earth.", "ok", "rewritten"),  # low Jaccard, far
    (6, "Greet me.", "Hello ther, friend!", "Hello there, friend!", "ok", None),  # metrics left null
    (7, "Say red.", "Red.\n", "Red.", "ok", "same"),  # identical up to whitespace
]
SHARDS = [[0, 1, 2, 3], [4, 5, 6, 7]]
# failures: row 6 failed first (superseded by its data row), row 21 failed twice (newest wins)
FAILURES = [
    [(20, "no_marker"), (21, "timeout"), (6, "timeout")],
    [(21, "server_error")],
]
MANIFEST = {
    "format_version": 1,
    "created": 1_700_000_000.0,
    "fingerprint": {"models": ["gpt-4-turbo"]},
    "fingerprint_hash": "abc",
    "parser_version": "1",
    "config": {  # as the runner stores it: already redacted
        "input": {"dataset": "ContextualAI/ultrafeedback_clair_32k", "split": "train", "path": None,
                  "columns": {"task": "prompt", "student_solution": "rejected[-1].content"}},
        "prompt": {"variant": "contextualai", "template_file": None},
        "endpoints": [{"url": "http://secret-host.internal:8000/v1", "model": "gpt-4-turbo",
                       "headers": {"X-Api-Key": "***"}}],
        "generation": {"temperature": 0.7, "max_tokens": 4096},
    },
    "runs": [],
}


def _data_row(rid: int, task: str, orig: str, rev: str, status: str, rational: str | None) -> dict[str, Any]:
    row: dict[str, Any] = dict(row_id=rid, task=task, student_solution=orig, revision=rev, rational=rational,
                               status=status, model_name="gpt-4-turbo", finish_reason="stop",
                               raw_output=f"{{corrected_student_solution}}: {rev}")
    if rid != 6:
        row.update(pair_metrics(rev, orig))
    return row


def make_run(root: Path, rows=ROWS, shards=SHARDS, failures=FAILURES, id_type: pa.DataType = INT64) -> Path:
    run = root / "run"
    (run / "data").mkdir(parents=True)
    (run / "failures").mkdir()
    by_id = {r[0]: r for r in rows}
    dschema, fschema = data_schema(id_type, []), failure_schema(id_type, [])
    for n, ids in enumerate(shards):
        t = pa.Table.from_pylist([_data_row(*by_id[i]) for i in ids], schema=dschema)
        pq.write_table(t, run / "data" / f"part-{n:05d}.parquet")
    for n, fails in enumerate(failures):
        t = pa.Table.from_pylist(
            [dict(row_id=rid, task="t", student_solution="s", error_kind=k, error_message=k) for rid, k in fails],
            schema=fschema)
        pq.write_table(t, run / "failures" / f"part-{n:05d}.parquet")
    (run / "manifest.json").write_text(json.dumps(MANIFEST))
    return run


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path)


@pytest.fixture
def hf_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Nothing may reach the internet; the datasets cache lives in tmp_path."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    return tmp_path / "hf-cache"


def load_parquet(path: Path, cache: Path):
    import datasets

    return datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(cache))


def by_id(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {r[0]: dict(zip(("row_id", "task", "orig", "rev", "status", "rational"), r, strict=True)) for r in rows}


# ---------------------------------------------------------------------------- minimality metrics


def test_minimality_metrics_on_hand_made_pairs():
    assert jaccard("a b c", "a b d") == 0.5  # {a, b} / {a, b, c, d}
    assert jaccard("", "") == 1.0
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("same", "same") == 0
    assert length_ratio("abcdef", "abc") == 2.0
    assert length_ratio("x", "") is None
    assert pair_metrics("a b d", "a b c") == {"jaccard": 0.5, "levenshtein": 1, "length_ratio": 1.0}


# ---------------------------------------------------------------------------- TRL layout


def test_trl_export_loads_with_datasets_and_has_the_documented_structure(run, hf_offline, capsys):
    assert main(["export", str(run)]) == 0
    out = run / "export-trl.parquet"
    assert out.exists()
    assert not [p for p in run.iterdir() if ".tmp" in p.name]  # the temp file was renamed away
    ds = load_parquet(out, hf_offline)
    assert ds.column_names == ["prompt", "chosen", "rejected", "rational", "row_id"]
    want = by_id(ROWS)
    got = list(ds)
    assert [r["row_id"] for r in got] == [0, 1, 5, 6]  # ok rows, identical ones left out, shard order
    for r in got:
        w = want[r["row_id"]]
        assert set(r) == {"prompt", "chosen", "rejected", "rational", "row_id"}
        assert r["prompt"] == [{"role": "user", "content": w["task"]}]
        assert r["chosen"] == [{"role": "assistant", "content": w["rev"]}]
        assert r["rejected"] == [{"role": "assistant", "content": w["orig"]}]
        assert r["rational"] == (w["rational"] or "")
        assert isinstance(r["rational"], str)
    # the Arrow types TRL and the hub expect: list<struct<content: string, role: string>>
    msg = pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))
    schema = pq.read_schema(out)
    assert schema.field("prompt").type == msg and schema.field("chosen").type == msg
    assert schema.field("rational").type == pa.string() and schema.field("row_id").type == pa.int64()


# --- a structural stand-in for TRL's DPOTrainer preprocessing (trl.data_utils), as TRL needs torch

_SUPPORTED = ("prompt", "chosen", "rejected", "completion", "messages")


def _is_conversational(example: dict[str, Any]) -> bool:
    """Like trl's is_conversational: a supported key holding a list of {role, content} dicts.
    (TRL looks at one arbitrary supported key; we require all of them to agree.)"""
    keys = [k for k in _SUPPORTED if k in example]
    if not keys:
        return False
    verdicts = {
        isinstance(example[k], list) and bool(example[k]) and isinstance(example[k][0], dict)
        and "role" in example[k][0] and "content" in example[k][0]
        for k in keys
    }
    assert len(verdicts) == 1, f"mixed conversational/plain keys: {example}"
    return verdicts.pop()


def _maybe_extract_prompt(example: dict[str, Any]) -> dict[str, Any]:
    """Like trl's maybe_extract_prompt: an explicit prompt of the same kind as chosen is kept; otherwise
    the prompt is the longest common prefix of chosen and rejected."""
    if "prompt" in example:
        if _is_conversational({"chosen": example["chosen"]}) == _is_conversational({"prompt": example["prompt"]}):
            return example
    chosen, rejected = example["chosen"], example["rejected"]
    idx = 0
    for idx in range(min(len(chosen), len(rejected))):  # noqa: B007 - idx is used after the loop
        if chosen[idx] != rejected[idx]:
            break
    return {**example, "prompt": chosen[:idx], "chosen": chosen[idx:], "rejected": rejected[idx:]}


def _render(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """A plain concatenating chat template."""
    text = "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in messages)
    return text + ("<|assistant|>\n" if add_generation_prompt else "")


def _apply_chat_template(example: dict[str, Any]) -> dict[str, str]:
    """Like trl's apply_chat_template for an explicit-prompt preference example."""
    keys = {k for k in example if k in (*_SUPPORTED, "label")}  # other columns (rational, row_id) are ignored
    assert keys == {"prompt", "chosen", "rejected"}, keys
    assert example["prompt"][-1]["role"] == "user"  # -> add_generation_prompt=True
    prompt = _render(example["prompt"], add_generation_prompt=True)
    prompt_chosen = _render(example["prompt"] + example["chosen"])
    prompt_rejected = _render(example["prompt"] + example["rejected"])
    assert prompt_chosen.startswith(prompt) and prompt_rejected.startswith(prompt)  # TRL raises otherwise
    return {"prompt": prompt, "chosen": prompt_chosen[len(prompt):], "rejected": prompt_rejected[len(prompt):]}


def _check_dpo_row(row: dict[str, Any], task: str, revision: str, original: str) -> None:
    """DPOTrainer's order: maybe_extract_prompt, then maybe_apply_chat_template (if conversational)."""
    row = _maybe_extract_prompt(row)
    assert _is_conversational(row)
    assert isinstance(row["prompt"], list) and row["prompt"] and row["prompt"][-1]["role"] == "user"
    for key in ("chosen", "rejected"):
        assert len(row[key]) == 1 and row[key][0]["role"] == "assistant"
    text = _apply_chat_template(row)
    assert text["prompt"] == f"<|user|>\n{task}<|end|>\n<|assistant|>\n"
    assert text["chosen"] == f"{revision}<|end|>\n"
    assert text["rejected"] == f"{original}<|end|>\n"


def test_trl_rows_pass_dpo_preprocessing_checks(run, hf_offline):
    res = export_run(run, run / "pairs.parquet", ExportOptions(format="trl", include_flagged=True))
    assert res.rows_exported == 6
    want = by_id(ROWS)
    for row in load_parquet(run / "pairs.parquet", hf_offline):
        w = want[row["row_id"]]
        assert _maybe_extract_prompt(row) is row  # explicit conversational prompt: used as is
        _check_dpo_row(row, w["task"], w["rev"], w["orig"])


# ---------------------------------------------------------------------------- ultrafeedback layout


def test_ultrafeedback_layout_matches_the_reference_dataset(run, hf_offline, capsys):
    assert main(["export", str(run), "--format", "ultrafeedback"]) == 0
    out = run / "export-ultrafeedback.parquet"
    ds = load_parquet(out, hf_offline)
    assert ds.column_names == ["prompt", "chosen", "rejected", "rational"]
    want = by_id(ROWS)
    rows = list(ds)
    assert len(rows) == 4
    tasks = {w["task"]: w for w in want.values()}
    for r in rows:
        w = tasks[r["prompt"]]
        assert isinstance(r["prompt"], str)
        assert r["chosen"] == [{"role": "user", "content": w["task"]}, {"role": "assistant", "content": w["rev"]}]
        assert r["rejected"] == [{"role": "user", "content": w["task"]}, {"role": "assistant", "content": w["orig"]}]
        assert isinstance(r["rational"], str)
        # TRL: a string prompt next to conversational chosen/rejected -> the prompt is extracted
        _check_dpo_row(r, w["task"], w["rev"], w["orig"])
    assert "exported 4 pairs (ultrafeedback layout)" in capsys.readouterr().out


# ---------------------------------------------------------------------------- selection and counts


def test_default_export_leaves_out_flagged_identical_and_failures_with_counts(run, capsys):
    assert main(["export", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"exported 4 pairs (trl layout) to {run / 'export-trl.parquet'}" in out
    assert "left out: 4 = 2 flagged (truncated 1, worsened 1; --include-flagged keeps them); " \
           "2 identical to the original (--keep-identical keeps them)" in out
    # supersession: row 6's failure is superseded by its data row, row 21's newest failure counts
    assert "failed rows (never exported): 2 (no_marker 1, server_error 1)" in out


def test_include_flagged_and_keep_identical(run, capsys):
    out = run / "all.parquet"
    assert main(["export", str(run), "--out", str(out), "--include-flagged", "--keep-identical"]) == 0
    text = capsys.readouterr().out
    assert "exported 8 pairs" in text and "left out: 0" in text
    assert "flagged rows kept (--include-flagged): truncated 1, worsened 1" in text
    assert pq.read_table(out).column("row_id").to_pylist() == list(range(8))


def test_distance_and_jaccard_filters(run, capsys):
    lev = {r[0]: levenshtein(r[3], r[2]) for r in ROWS}
    assert lev[0] <= 20 and lev[1] <= 20 and lev[6] <= 20 and lev[5] > 20
    assert main(["export", str(run), "--out", str(run / "a.parquet"), "--max-distance", "20"]) == 0
    text = capsys.readouterr().out
    assert "exported 3 pairs" in text and "1 Levenshtein distance over --max-distance 20" in text
    assert pq.read_table(run / "a.parquet").column("row_id").to_pylist() == [0, 1, 6]

    assert main(["export", str(run), "--out", str(run / "b.parquet"), "--min-jaccard", "0.1"]) == 0
    text = capsys.readouterr().out
    assert "exported 3 pairs" in text and "1 token Jaccard under --min-jaccard 0.1" in text
    assert pq.read_table(run / "b.parquet").column("row_id").to_pylist() == [0, 1, 6]

    # each left-out row is counted once, under its first reason
    res = export_run(run, run / "c.parquet", ExportOptions(max_distance=0, min_jaccard=0.99))
    assert res.rows_exported == 0 and res.rows_read == 8
    assert res.left_out == {"duplicate": 0, "empty": 0, "flagged": 2, "identical": 2, "max_distance": 4,
                            "min_jaccard": 0}
    assert pq.read_table(run / "c.parquet").num_rows == 0  # an empty export is still a valid file


def test_export_streams_in_batches_and_row_groups(run, monkeypatch):
    import engine.commands.export as ex
    from engine.commands import rundata

    monkeypatch.setattr(rundata, "BATCH_ROWS", 2)
    monkeypatch.setattr(ex, "ROW_GROUP_ROWS", 2)
    res = export_run(run, run / "s.parquet", ExportOptions(include_flagged=True, keep_identical=True))
    assert res.rows_exported == 8
    f = pq.ParquetFile(run / "s.parquet")
    assert f.metadata.num_row_groups == 4
    assert f.read().column("row_id").to_pylist() == list(range(8))


def test_duplicate_row_ids_and_string_ids(tmp_path):
    rows = [(r[0], *r[1:]) for r in ROWS]
    run = make_run(tmp_path, rows=rows, shards=[[0, 1], [1, 5]], failures=[], id_type=pa.int64())
    res = export_run(run, None, ExportOptions())
    assert res.left_out["duplicate"] == 1 and res.rows_exported == 3
    assert pq.read_table(run / "export-trl.parquet").column("row_id").to_pylist() == [0, 1, 5]
    assert collect_stats(run)["duplicate_row_ids"] == 1

    srows = [(f"id-{r[0]}", *r[1:]) for r in ROWS]
    srun = make_run(tmp_path / "s", rows=srows, shards=[["id-0", "id-1"]], failures=[], id_type=pa.string())
    export_run(srun, None, ExportOptions())
    t = pq.read_table(srun / "export-trl.parquet")
    assert t.schema.field("row_id").type == pa.string() and t.column("row_id").to_pylist() == ["id-0", "id-1"]


def test_bad_runs_and_options_are_clean_user_errors(tmp_path, run, capsys):
    with pytest.raises(RunStateError, match="not a clair run directory"):
        export_run(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.json").write_text("{}")
    with pytest.raises(RunStateError, match="no data shards"):
        export_run(empty)
    with pytest.raises(ExportError, match="--min-jaccard"):
        export_run(run, None, ExportOptions(min_jaccard=2))
    with pytest.raises(ExportError, match="inside the run's data/"):
        export_run(run, run / "data" / "x.parquet")
    (run / "data" / "part-00009.parquet").write_bytes(b"not parquet")
    with pytest.raises(RunStateError, match="corrupt"):
        export_run(run, run / "x.parquet")
    assert not (run / "x.parquet").exists() and not list(run.glob(".x.parquet.tmp*"))
    # through the CLI: one line, exit code 2
    assert main(["export", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert main(["export", str(run), "--private"]) == 2
    assert "--private only applies with --push-to-hub" in capsys.readouterr().err


# ---------------------------------------------------------------------------- stats


def test_stats_distribution_status_and_suspicious_rows(run, capsys):
    s = collect_stats(run, max_distance=20, min_jaccard=0.1)
    assert s["rows_revised"] == 8
    assert s["status"] == {"ok": 6, "truncated": 1, "worsened": 1}
    assert s["rows_failed"] == 2 and s["failure_kinds"] == {"no_marker": 1, "server_error": 1}
    jac = np.array([jaccard(r[3], r[2]) for r in ROWS])  # row 6's null metrics are computed
    lev = np.array([levenshtein(r[3], r[2]) for r in ROWS], dtype=float)
    lr = np.array([length_ratio(r[3], r[2]) for r in ROWS])
    for name, values in (("jaccard", jac), ("levenshtein", lev), ("length_ratio", lr)):
        m = s["metrics"][name]
        assert m["count"] == 8
        assert m["mean"] == pytest.approx(values.mean())
        assert [m["p10"], m["p50"], m["p90"]] == pytest.approx(list(np.percentile(values, [10, 50, 90])))
    sus = s["suspicious"]
    assert sus["identical"]["count"] == 2 and sus["identical"]["row_ids"] == [2, 7]
    assert sus["low_jaccard"]["count"] == 2 and sus["low_jaccard"]["row_ids"] == [4, 5]
    assert sus["over_max_distance"]["row_ids"] == [i for i in range(8) if lev[i] > 20]

    text = format_stats(s)
    assert "rows: 8 revised (ok 6, truncated 1, worsened 1), 2 failed (no_marker 1, server_error 1)" in text
    assert "identical to the original (whitespace at the ends ignored): 2 (row_ids 2, 7)" in text
    assert "token Jaccard < 0.1 (rewritten rather than minimally revised): 2 (row_ids 4, 5)" in text
    assert f"{'jaccard':<14}{8:>8}{jac.mean():>10.3f}" in text


def test_stats_cli_text_and_json(run, capsys):
    assert main(["stats", str(run)]) == 0
    text = capsys.readouterr().out
    assert "suspicious revisions:" in text and "(pass --max-distance N" in text
    assert main(["stats", str(run), "--json", "--max-distance", "5"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["thresholds"] == {"max_distance": 5, "min_jaccard": 0.1}
    assert set(s["suspicious"]) == {"identical", "low_jaccard", "over_max_distance"}
    assert s["metrics"]["levenshtein"]["count"] == 8


def test_stats_example_ids_are_capped(tmp_path):
    rows = [(i, f"task {i}", f"same {i}", f"same {i}", "ok", "r") for i in range(12)]
    run = make_run(tmp_path, rows=rows, shards=[list(range(6)), list(range(6, 12))], failures=[])
    s = collect_stats(run, examples=3)
    assert s["suspicious"]["identical"]["count"] == 12
    assert s["suspicious"]["identical"]["row_ids"] == [0, 1, 2]
    assert "(row_ids 0, 1, 2, ...)" in format_stats(s)


# ---------------------------------------------------------------------------- dataset card and hub


def _result() -> ExportResult:
    r = ExportResult(out="x.parquet", format="trl", rows_exported=4, rows_read=8, failed=2,
                     failure_kinds={"no_marker": 1, "server_error": 1},
                     options={"format": "trl", "include_flagged": False, "keep_identical": False,
                              "max_distance": None, "min_jaccard": 0.1})
    r.left_out.update(flagged=2, identical=2)
    r.metrics = {"jaccard": {"mean": 0.41, "p10": 0.2, "p50": 0.4, "p90": 0.6},
                 "levenshtein": {"mean": 12.0, "p10": 1.0, "p50": 5.0, "p90": 30.0},
                 "length_ratio": {"mean": 1.04, "p10": 0.9, "p50": 1.0, "p90": 1.2}}
    return r


def test_dataset_card_text():
    card = dataset_card(MANIFEST, _result(), "my-org/clair-pairs")
    head, body = card.split("\n---\n", 1)
    meta = yaml.safe_load(head.removeprefix("---\n"))
    assert "clair" in meta["tags"] and meta["size_categories"] == ["n<1K"]
    assert "# my-org/clair-pairs" in body
    assert "Pairs: **4** (trl layout)" in body
    assert "token Jaccard >= 0.1" in body and "flagged 2, identical 2" in body and "never exported): 2" in body
    assert "`gpt-4-turbo`" in body and "CLAIR `contextualai` variant" in body
    assert "`ContextualAI/ultrafeedback_clair_32k` (split `train`)" in body
    assert "| jaccard | 0.410 | 0.200 | 0.400 | 0.600 |" in body
    assert "| levenshtein | 12.0 | 1.0 | 5.0 | 30.0 |" in body
    assert 'loss_type="apo_zero"' in body and 'load_dataset("my-org/clair-pairs"' in body
    assert "secret-host" not in card and "***" not in card  # no endpoint URLs or headers


def test_dataset_card_follows_the_format():
    res = _result()
    res.format = "ultrafeedback"
    body = dataset_card(MANIFEST, res).split("\n---\n", 1)[1]
    assert "Pairs: **4** (ultrafeedback layout)" in body and "full conversations `[user turn" in body
    assert "`row_id`" not in body  # the TRL layout's text is not used
    # each layout gets the recipe that works in TRL: ultrafeedback's string prompt must go (implicit prompt)
    assert training_recipe("ultrafeedback", None) in body and 'load_dataset("ORG/NAME"' in body
    assert 'train.remove_columns(["prompt"])' in body
    assert "remove_columns" not in training_recipe("trl", None) and 'loss_type="apo_zero"' in training_recipe("trl", None)


def test_hub_target_checks_need_no_network(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_dummy")
    with pytest.raises(HubPushError, match="ORG/NAME"):
        check_hub_target("no-slash")
    assert check_hub_target("my-org/clair-pairs") == "hf_dummy"
    assert issubclass(HubPushError, UserError)


def _cli(args: list[str], env_extra: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh process, so that huggingface_hub reads these variables at import."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1",
               PYTHONPATH=str(REPO))
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def _one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, p.stderr
    return errors[0]


def test_push_without_a_token_fails_cleanly_before_exporting(run, tmp_path):
    p = _cli(["export", str(run), "--push-to-hub", "my-org/clair-pairs"], {}, tmp_path)
    assert "no Hugging Face token found" in _one_line_error(p)
    assert not (run / "export-trl.parquet").exists()


def test_push_without_network_fails_cleanly_and_keeps_the_export(run, tmp_path):
    p = _cli(["export", str(run), "--push-to-hub", "my-org/clair-pairs", "--private"],
             {"HF_TOKEN": "hf_dummy_token_for_tests"}, tmp_path)
    line = _one_line_error(p)
    assert "pushing" in line and "my-org/clair-pairs failed" in line and "the export file is kept" in line
    assert (run / "export-trl.parquet").exists()
    assert "exported 4 pairs" in p.stdout
