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
