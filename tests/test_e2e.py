"""End to end: `clair run` as a subprocess against `clair mock-server`."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow.parquet as pq
from helpers import assert_exactly_once, clair, make_input, write_config

from engine.tools.mockserver import mock_revision
from engine.tools.mockserver_proc import MockProcess


def test_2000_rows_every_row_once_and_revisions_match_the_mock(tmp_path: Path, mock: MockProcess) -> None:
    inp = make_input(tmp_path, 2000)
    cfg = write_config(tmp_path, mock.url, inp, endpoints=[{"url": mock.url, "model": "mock-clair",
                                                            "max_concurrency": 64}])
    r = clair("run", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "rows: 2000 of 2000 done" in r.stdout
    run = tmp_path / "run"
    assert_exactly_once(run, 2000)
    t = pq.read_table(run / "data")
    assert t.num_rows == 2000
    for sol, rev, status in zip(t.column("student_solution").to_pylist(), t.column("revision").to_pylist(),
                                t.column("status").to_pylist(), strict=True):
        assert status == "ok"
        assert rev == mock_revision(sol)
    names = set(t.schema.names)
    assert {"row_id", "task", "student_solution", "revision", "rational", "model_name", "finish_reason",
            "prompt_tokens", "completion_tokens", "prompt", "chosen", "rejected"} <= names
    assert set(t.column("model_name").to_pylist()) == {"mock-clair"}
    # loads as one dataset with datasets
    import datasets

    ds = datasets.load_dataset("parquet", data_dir=str(run / "data"), split="train")
    assert len(ds) == 2000
    manifest = orjson.loads((run / "manifest.json").read_bytes())
    assert manifest["counts"]["data"] == 2000
    assert manifest["runs"][-1]["status"] == "completed"


def test_status_of_a_finished_run(tmp_path: Path, mock: MockProcess) -> None:
    inp = make_input(tmp_path, 50)
    cfg = write_config(tmp_path, mock.url, inp)
    assert clair("run", str(cfg)).returncode == 0
    r = clair("status", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    assert "rows: 50 of 50 done, 50 revised, 0 failed, 0 remaining" in r.stdout
    assert "not running" in r.stdout
    j = orjson.loads(clair("status", str(tmp_path / "run"), "--json").stdout)
    assert j["rows_done"] == 50 and j["active"] is False


def test_endpoint_down_stops_before_any_row(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 10)
    cfg = write_config(tmp_path, "http://127.0.0.1:9/v1", inp)
    r = clair("run", str(cfg))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "unreachable" in lines[0] and "Traceback" not in r.stderr
    assert not list((tmp_path / "run").glob("data/*.parquet"))


def test_unknown_model_and_rejected_key(tmp_path: Path, mock: MockProcess, monkeypatch) -> None:
    inp = make_input(tmp_path, 10)
    cfg = write_config(tmp_path, mock.url, inp, endpoints=[{"url": mock.url, "model": "no-such-model"}])
    r = clair("run", str(cfg))
    assert r.returncode == 2 and "does not serve model 'no-such-model'" in r.stderr
    monkeypatch.setenv("MOCK_KEY", "right-key")  # inherited by the mock process
    with MockProcess(["--api-key-env", "MOCK_KEY"]) as m:
        cfg = write_config(tmp_path, m.url, inp, endpoints=[{"url": m.url, "model": "mock-clair",
                                                            "api_key_env": "CLAIR_TEST_KEY"}])
        r = clair("run", str(cfg), env={"CLAIR_TEST_KEY": "wrong-key"})
        assert r.returncode == 2 and "rejected the API key" in r.stderr
        assert "wrong-key" not in r.stderr
        r = clair("run", str(cfg), env={"CLAIR_TEST_KEY": "right-key"})
        assert r.returncode == 0, r.stderr
        for f in (tmp_path / "run").rglob("*"):
            if f.is_file():
                assert b"right-key" not in f.read_bytes(), f


def test_bad_config_and_missing_column_are_one_line_errors(tmp_path: Path, mock: MockProcess) -> None:
    inp = make_input(tmp_path, 10)
    cfg = write_config(tmp_path, mock.url, inp, input={"path": str(inp), "colums": {}})
    r = clair("run", str(cfg))
    assert r.returncode == 2 and "unknown config key input.colums" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    cfg = write_config(tmp_path, mock.url, inp, input={"path": str(inp), "columns": {"task": "question"}})
    r = clair("run", str(cfg))
    assert r.returncode == 2 and "'question'" in r.stderr and "Traceback" not in r.stderr
    r = clair("run", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "does not exist" in r.stderr
