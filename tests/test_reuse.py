"""Paid answers are never bought twice (issue 14): every stored answer carries its request's content key;
a fresh run of the same output dir (--new-run) or one naming run.reuse_from takes the stored answer for
every request it has already paid for."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import assert_exactly_once, clair, make_input, write_config

from engine import records
from engine.store import ReuseIndex, archive_dirs
from engine.tools.mockserver_proc import MockProcess


def _served(m: MockProcess) -> int:
    return int(m.stats()["completions"])


def _column(run: Path, name: str, kinds: tuple[str, ...] = ("data", "failures")) -> list[object]:
    out: list[object] = []
    for kind in kinds:
        for p in sorted((run / kind).glob("*.parquet")):
            out += pq.read_table(p, columns=[name]).column(name).to_pylist()
    return out


def _change_rows(src: Path, dst: Path, rows: list[int]) -> None:
    t = pq.read_table(src)
    prompts = t.column("prompt").to_pylist()
    for i in rows:
        prompts[i] = prompts[i] + " (edited)"
    t = t.set_column(t.schema.get_field_index("prompt"), "prompt", pa.array(prompts, pa.string()))
    pq.write_table(t, dst)


def test_ten_changed_rows_cost_ten_requests_after_new_run(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 300)
    with MockProcess(["--latency-ms", "1", "--rate-no-marker", "0.05", "--seed", "4"]) as m:
        cfg = write_config(tmp_path, m.url, inp)
        assert clair("run", str(cfg)).returncode == 0
        first = _served(m)
        assert first == 300
        keys = [k for k in _column(tmp_path / "run", "request_key") if k]
        assert len(set(keys)) == 300 and all(len(k) == 32 for k in keys)  # type: ignore[arg-type]
        changed = [3, 17, 50, 99, 120, 150, 201, 250, 277, 299]
        _change_rows(inp, inp, changed)  # the input changed: a resume is refused, --new-run starts afresh
        r = clair("run", str(cfg))
        assert r.returncode == 2 and "--new-run" in r.stderr
        r = clair("run", str(cfg), "--new-run")
        assert r.returncode == 0, r.stderr
        assert _served(m) - first == 10  # exactly the changed rows were requested
        assert "290 answers reused from earlier runs" in r.stdout
    run = tmp_path / "run"
    assert_exactly_once(run, 300)
    archived = archive_dirs(run)
    assert len(archived) == 1
    reused = _column(run, "reused_from")
    assert reused.count(archived[0].name) == 290 and reused.count(None) == 10
    # reused answers go through this run's parser: the markerless ones are failures here too
    old_fails = _column(archived[0], "error_kind", ("failures",))
    assert old_fails and "no_marker" in set(old_fails)
    fails = dict(zip(_column(run, "row_id", ("failures",)), _column(run, "reused_from", ("failures",)), strict=True))
    assert sum(1 for v in fails.values() if v == archived[0].name) >= len(old_fails) - 10
    st = clair("status", str(run))
    assert "reused 290 stored answers" in st.stdout


def test_reuse_from_another_output_dir_and_nothing_reused_when_the_model_differs(tmp_path: Path,
                                                                               mock: MockProcess) -> None:
    inp = make_input(tmp_path, 40)
    cfg = write_config(tmp_path, mock.url, inp, output={"dir": str(tmp_path / "a")})
    assert clair("run", str(cfg)).returncode == 0
    before = mock.stats()["completions"]
    cfg = write_config(tmp_path, mock.url, inp, output={"dir": str(tmp_path / "b")},
                       run={"progress": "off", "reuse_from": [str(tmp_path / "a")]})
    r = clair("run", str(cfg))
    assert r.returncode == 0, r.stderr
    assert mock.stats()["completions"] == before  # all 40 taken from run a
    assert _column(tmp_path / "b", "reused_from").count("a") == 40
    assert_exactly_once(tmp_path / "b", 40)
    # another temperature is another request: nothing to reuse
    cfg = write_config(tmp_path, mock.url, inp, output={"dir": str(tmp_path / "c")},
                       generation={"temperature": 0.2, "max_tokens": 4096},
                       run={"progress": "off", "reuse_from": [str(tmp_path / "a")]})
    assert clair("run", str(cfg)).returncode == 0
    assert mock.stats()["completions"] == before + 40
    assert set(_column(tmp_path / "c", "reused_from")) == {None}


def test_a_reuse_from_path_that_is_not_a_run_is_one_line(tmp_path: Path, mock: MockProcess) -> None:
    inp = make_input(tmp_path, 5)
    cfg = write_config(tmp_path, mock.url, inp, run={"progress": "off", "reuse_from": [str(tmp_path / "nope")]})
    r = clair("run", str(cfg))
    assert r.returncode == 2 and "run.reuse_from names" in r.stderr and "Traceback" not in r.stderr


def test_request_keys_cover_model_generation_and_messages() -> None:
    msgs = b'[{"role":"user","content":"x"}]'
    a = records.request_key(b'{"model":"m","temperature":0.7,"messages":', msgs)
    assert a == records.request_key(b'{"model":"m","temperature":0.7,"messages":', msgs)
    assert a != records.request_key(b'{"model":"n","temperature":0.7,"messages":', msgs)
    assert a != records.request_key(b'{"model":"m","temperature":0.2,"messages":', msgs)
    assert a != records.request_key(b'{"model":"m","temperature":0.7,"messages":', msgs.replace(b"x", b"y"))


def test_an_index_over_runs_without_keys_is_empty(tmp_path: Path) -> None:
    import shutil

    old = Path(__file__).parent / "fixtures" / "format_v1" / "run_v1"
    shutil.copytree(old, tmp_path / "run_v1")
    assert ReuseIndex.build([tmp_path / "run_v1"]) is None  # made before request keys: nothing to offer


@pytest.mark.parametrize("bad", ["file"])
def test_an_output_dir_that_is_a_file_is_a_user_mistake(tmp_path: Path, mock: MockProcess, bad: str) -> None:
    f = tmp_path / "out"
    f.write_text("not a folder")
    cfg = write_config(tmp_path, mock.url, make_input(tmp_path, 5), output={"dir": str(f)})
    r = clair("run", str(cfg))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "is a file, not a directory" in r.stderr and "resume with" not in r.stderr


def test_new_run_after_kill9_reuses_the_journaled_answers(tmp_path: Path) -> None:
    """A run killed before its last segment became a shard: --new-run compacts that journal into the
    archive first, so every answer the killed run journaled is reused, not bought again."""
    import subprocess
    import sys
    import time

    from helpers import ROOT

    from engine.store.journal import list_segments, read_segment

    inp = make_input(tmp_path, 300)
    with MockProcess(["--latency-ms", "20"]) as m:
        cfg = write_config(tmp_path, m.url, inp, endpoints=[{"url": m.url, "model": "mock-clair",
                                                            "max_concurrency": 8}],
                           output={"dir": str(tmp_path / "run"), "rows_per_shard": 5000})
        p = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(cfg)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        journal = tmp_path / "run" / "journal"
        deadline = time.monotonic() + 60  # a hang guard, not a timing assertion
        while time.monotonic() < deadline:
            segs = list_segments(journal)
            if segs and len(read_segment(segs[-1])[0]) >= 60:
                break
            time.sleep(0.05)
        p.kill()
        p.wait()
        journaled = sum(len(read_segment(s)[0]) for s in list_segments(journal))
        assert 60 <= journaled < 300 and not list((tmp_path / "run" / "data").glob("*.parquet"))
        while m.stats().get("in_flight") and time.monotonic() < deadline + 30:  # the killed run's last requests
            time.sleep(0.05)
        before = _served(m)
        r = clair("run", str(cfg), "--new-run")
        assert r.returncode == 0, r.stderr
        assert _served(m) - before == 300 - journaled  # every journaled answer reused
    assert_exactly_once(tmp_path / "run", 300)


def test_system_role_changes_the_request_key() -> None:
    from engine.dispatch import Endpoint

    msgs = b'[{"role":"system","content":"s"},{"role":"user","content":"u"}]'
    keep = Endpoint(name="a", url="http://a/v1", model="m", headers={}, generation={}, max_concurrency=1)
    fold = Endpoint(name="b", url="http://b/v1", model="m", headers={}, generation={}, max_concurrency=1,
                    system_role=False)
    other = Endpoint(name="c", url="http://c/v1", model="m", headers={}, generation={}, max_concurrency=1)
    assert keep.request_key(msgs) == other.request_key(msgs)  # replicas share keys
    assert keep.request_key(msgs) != fold.request_key(msgs)


def test_a_resumed_format_1_run_with_new_failures_reads_as_one_table(tmp_path: Path) -> None:
    """An old run keeps its columns on resume, for failure shards too (a kind it had no shard of yet
    included): failures read as one table and load_results works."""
    import shutil

    import yaml

    from engine import load_results
    from engine.store import RunView

    fx = Path(__file__).parent / "fixtures" / "format_v1"
    for name in ("run_v1", "input.parquet", "job.yaml"):
        src = fx / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    old_fail_schema = pq.read_schema(next((tmp_path / "run_v1" / "failures").glob("*.parquet")))
    shutil.rmtree(tmp_path / "run_v1" / "failures")  # only data shards: the failure schema must be derived
    with MockProcess(["--rate-no-marker", "0.5", "--seed", "2"]) as m:
        job = yaml.safe_load((tmp_path / "job.yaml").read_text())
        job["endpoints"][0]["url"] = m.url
        job["input"]["limit"] = 60
        job["input"]["path"] = str(tmp_path / "input.parquet")
        job["output"]["dir"] = str(tmp_path / "run_v1")
        (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
        r = clair("run", str(tmp_path / "job.yaml"))
    assert r.returncode == 0, r.stderr
    view = RunView.open(tmp_path / "run_v1")
    fails = view.current_failures()
    assert fails is not None and fails.num_rows > 0
    assert fails.schema.remove_metadata() == old_fail_schema.remove_metadata()
    assert load_results(tmp_path / "run_v1", failures=True).num_rows == fails.num_rows
    assert "request_key" not in pq.read_schema(sorted((tmp_path / "run_v1" / "data").glob("*.parquet"))[-1]).names


def test_an_archive_that_is_not_a_run_is_skipped(tmp_path: Path, mock: MockProcess) -> None:
    junk = tmp_path / "run.old-20260101-000000"
    junk.mkdir()
    (junk / "notes.txt").write_text("not a run")
    cfg = write_config(tmp_path, mock.url, make_input(tmp_path, 5))
    r = clair("run", str(cfg))
    assert r.returncode == 0, r.stderr
