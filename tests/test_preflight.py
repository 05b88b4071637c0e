"""The input pre-flight check (engine/preflight.py) and input problems met mid-run.

CLI tests run `clair run` against the bundled mock: each problem exits 2 with ONE line on stderr naming the
file, the line or row and the fix, prints no traceback, and the mock serves ZERO requests; the corrected
config then runs without --new-run. Unit tests drive the scanners on small files.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import assert_exactly_once, clair, make_input, read_ids, write_config

import engine.preflight
from engine.core.config import from_dict
from engine.core.errors import InputError
from engine.preflight import preflight
from engine.source import Source, resolve_files
from engine.stages import load_prompt, make_fingerprint, open_source
from engine.tools.mockserver_proc import MockProcess
from engine.tools.synthetic import write_sample

# ---------------------------------------------------------------------------- inputs


def uf_rows(tmp_path: Path, n: int) -> list[dict[str, Any]]:
    """n UltraFeedback-shaped rows with an integer ``id`` column (0..n-1)."""
    p = tmp_path / f"_sample{n}.parquet"
    if not p.exists():
        write_sample(str(p), n)
    return [{"id": i, **r} for i, r in enumerate(pq.read_table(p).to_pylist())]


def write_jsonl_rows(path: Path, data: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in data))
    return path


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def reset(m: MockProcess) -> None:
    req = urllib.request.Request(m.url.removesuffix("/v1") + "/stats/reset", method="POST")
    with urllib.request.urlopen(req, timeout=10):
        pass


def served(m: MockProcess) -> int:
    st = m.stats()
    return int(st["requests"]) + int(st["other_requests"])


def assert_refused(r: Any, *needles: str) -> str:
    """Exit 2, one line on stderr (the error) holding every needle, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    for n in needles:
        assert n in err, (n, err)
    return err


# ---------------------------------------------------------------------------- CLI: before the first request


def test_duplicate_id_at_row_550_of_600_costs_nothing(tmp_path: Path, mock: MockProcess) -> None:
    rows = uf_rows(tmp_path, 600)
    rows[549]["id"] = 17
    inp = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), inp, row_group_size=100)
    cfg = write_config(tmp_path, mock.url, inp, input={"path": str(inp), "id_column": "id"})
    reset(mock)
    r = clair("run", str(cfg))
    assert_refused(r, "duplicate value 17 at row 550 of", "in.parquet", "(first at row 18 of",
                   "make the ids unique")
    assert served(mock) == 0
    assert not (tmp_path / "run").exists()
    rows[549]["id"] = 549
    pq.write_table(pa.Table.from_pylist(rows), inp, row_group_size=100)
    r = clair("run", str(cfg))  # no --new-run
    assert r.returncode == 0, r.stderr
    data, fails = read_ids(tmp_path / "run")
    assert sorted(data + fails) == list(range(600))


def test_null_id_at_row_3_named_at_line_3(tmp_path: Path, mock: MockProcess) -> None:
    rows = uf_rows(tmp_path, 20)
    rows[2]["id"] = None
    inp = write_jsonl_rows(tmp_path / "in.jsonl", rows)
    cfg = write_config(tmp_path, mock.url, inp, input={"path": str(inp), "id_column": "id"})
    reset(mock)
    assert_refused(clair("run", str(cfg)), "input.id_column 'id' is null at line 3 of", "in.jsonl",
                   "give every row an id")
    assert served(mock) == 0
    rows[2]["id"] = 2
    write_jsonl_rows(inp, rows)
    r = clair("run", str(cfg))
    assert r.returncode == 0, r.stderr
    assert_exactly_once(tmp_path / "run", 20)


def test_invalid_utf8_mid_file(tmp_path: Path, mock: MockProcess) -> None:
    inp = write_jsonl_rows(tmp_path / "in.jsonl", uf_rows(tmp_path, 200))
    ls = lines(inp)
    good = ls[136]
    ls[136] = good.replace(b'"prompt":"', b'"prompt":"caf\xe9 ', 1)
    inp.write_bytes(b"".join(ls))
    cfg = write_config(tmp_path, mock.url, inp)
    reset(mock)
    assert_refused(clair("run", str(cfg)), "in.jsonl cannot be read as jsonl: line 137 is not UTF-8 (byte 0xe9 at "
                   "column 24)", "save the file as UTF-8")
    assert served(mock) == 0
    ls[136] = good
    inp.write_bytes(b"".join(ls))
    r = clair("run", str(cfg))
    assert r.returncode == 0, r.stderr
    assert_exactly_once(tmp_path / "run", 200)


def test_truncated_last_line(tmp_path: Path, mock: MockProcess) -> None:
    inp = write_jsonl_rows(tmp_path / "in.jsonl", uf_rows(tmp_path, 50))
    whole = inp.read_bytes()
    inp.write_bytes(whole[:-300])  # the download stopped inside the last line
    cfg = write_config(tmp_path, mock.url, inp)
    reset(mock)
    assert_refused(clair("run", str(cfg)), "in.jsonl cannot be read as jsonl: line 50 is cut off",
                   "complete or remove that line")
    assert served(mock) == 0
    inp.write_bytes(whole)
    r = clair("run", str(cfg))
    assert r.returncode == 0, r.stderr
    assert_exactly_once(tmp_path / "run", 50)


def test_mapping_missing_in_every_row(tmp_path: Path, mock: MockProcess) -> None:
    inp = make_input(tmp_path, 200)
    cfg = write_config(tmp_path, mock.url, inp, input={"path": str(inp),
                                                       "columns": {"student_solution": "rejected[5].content"}})
    reset(mock)
    assert_refused(clair("run", str(cfg)),
                   "input.columns.student_solution 'rejected[5].content' is empty in all 200 sampled rows of",
                   "the lists in 'rejected' have 2 items; use rejected[1].content or rejected[-1].content")
    assert served(mock) == 0
    cfg = write_config(tmp_path, mock.url, inp, input={"path": str(inp),
                                                       "columns": {"student_solution": "rejected[1].content"}})
    r = clair("run", str(cfg))  # no --new-run
    assert r.returncode == 0, r.stderr
    assert_exactly_once(tmp_path / "run", 200)


def test_dry_run_runs_the_check(tmp_path: Path, mock: MockProcess) -> None:
    rows = uf_rows(tmp_path, 30)
    rows[20]["id"] = 3
    inp = write_jsonl_rows(tmp_path / "in.jsonl", rows)
    cfg = write_config(tmp_path, mock.url, inp, input={"path": str(inp), "id_column": "id"})
    assert_refused(clair("run", str(cfg), "--dry-run", env={"CLAIR_TOKENIZER": "estimate"}),
                   "duplicate value 3 at line 21 of", "(first at line 4 of")


def test_precheck_false_skips_the_check(tmp_path: Path, mock: MockProcess) -> None:
    rows = uf_rows(tmp_path, 600)
    rows[549]["id"] = 17
    inp = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), inp, row_group_size=100)
    cfg = write_config(tmp_path, mock.url, inp, input={"path": str(inp), "id_column": "id", "precheck": False,
                                                       "batch_rows": 50})
    reset(mock)
    # found by streaming, after paid requests (what the check exists to prevent), still one line and exit 2
    assert_refused(clair("run", str(cfg)), "duplicate value 17 at row 550 of")
    assert served(mock) > 0


def test_precheck_is_not_part_of_the_fingerprint(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 10)
    raw = yaml.safe_load(write_config(tmp_path, "http://127.0.0.1:9/v1", inp).read_text())
    fps = []
    for flag in (True, False):
        raw["input"]["precheck"] = flag
        cfg = from_dict(raw)
        fps.append(make_fingerprint(cfg, open_source(cfg), load_prompt(cfg)))
    assert fps[0] == fps[1]


# ---------------------------------------------------------------------------- CLI: found mid-run anyway


def test_bad_utf8_found_mid_run_is_one_line_exit_2(tmp_path: Path, mock: MockProcess) -> None:
    inp = write_jsonl_rows(tmp_path / "in.jsonl", uf_rows(tmp_path, 300))
    ls = lines(inp)
    ls[249] = ls[249].replace(b'"prompt":"', b'"prompt":"\xff', 1)
    inp.write_bytes(b"".join(ls))
    cfg = write_config(tmp_path, mock.url, inp, input={"path": str(inp), "precheck": False, "batch_rows": 10})
    reset(mock)
    assert_refused(clair("run", str(cfg)), "in.jsonl cannot be read as jsonl: line 250 is not UTF-8 (byte 0xff")
    assert served(mock) > 0
    data, fails = read_ids(tmp_path / "run")  # journaled rows kept, compacted on the way out
    assert data and len(data) == len(set(data)) and max(data) < 250


# ---------------------------------------------------------------------------- the run directory is not input


def test_output_dir_inside_the_input_folder(tmp_path: Path, mock: MockProcess) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    make_input(folder, 40, name="part-0.parquet")
    cfg = write_config(tmp_path, mock.url, folder, output={"dir": str(folder / "out"), "rows_per_shard": 10})
    for args in ((), (), ("--new-run",), ()):
        r = clair("run", str(cfg), *args)
        assert r.returncode == 0, r.stderr
        assert_exactly_once(folder / "out", 40)
    assert list(folder.glob("out.old-*"))
    assert resolve_files(str(folder), exclude=folder / "out") == [folder / "part-0.parquet"]


# ---------------------------------------------------------------------------- whitespace-only text


def test_whitespace_only_task_or_answer_is_invalid_input_never_sent(tmp_path: Path, mock: MockProcess) -> None:
    rows = [{"prompt": f"task {i}", "answer": f"answer {i}"} for i in range(10)]
    rows[2]["prompt"] = "  \n\t "
    rows[5]["answer"] = "\u3000 "
    inp = write_jsonl_rows(tmp_path / "in.jsonl", rows)
    cfg = write_config(tmp_path, mock.url, inp, input={"path": str(inp), "columns": {"student_solution": "answer"}})
    reset(mock)
    r = clair("run", str(cfg))
    assert r.returncode == 0, r.stderr
    assert mock.stats()["requests"] == 8
    fails = pq.read_table(tmp_path / "run" / "failures").to_pylist()
    assert {(f["row_id"], f["error_kind"]) for f in fails} == {(2, "invalid_input"), (5, "invalid_input")}


# ---------------------------------------------------------------------------- scanners (unit)


@pytest.fixture(params=["sequential", "parallel"])
def scan_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """JSON-lines files scanned by the run's own reader, or in parallel byte ranges (forced on small files)."""
    if request.param == "parallel":
        monkeypatch.setattr(engine.preflight, "PARALLEL_MIN_BYTES", 0)
        monkeypatch.setattr(engine.preflight, "RANGE_MIN_BYTES", 64)
        monkeypatch.setattr(engine.preflight, "SCAN_BLOCK_BYTES", 4096)
        monkeypatch.setattr(engine.preflight.os, "cpu_count", lambda: 4)
    return str(request.param)


def ids_parquet(path: Path, ids: list[Any], row_group_size: int = 100) -> Path:
    n = len(ids)
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "prompt": pa.array([f"t{i}" for i in range(n)], pa.string()),
                             "s": pa.array([f"a{i}" for i in range(n)], pa.string())}),
                   path, row_group_size=row_group_size)
    return path


def check(path: Path, **kw: Any) -> Any:
    return preflight(Source(path=str(path), student_solution=kw.pop("student_solution", "s"), **kw))


def test_parquet_with_row_groups_clean(tmp_path: Path) -> None:
    rep = check(ids_parquet(tmp_path / "in.parquet", list(range(1000))[::-1]), id_column="id")
    assert (rep.rows, rep.files, rep.ids_checked, rep.lines_checked, rep.scope) == (1000, 1, True, False, "full")


def test_parquet_duplicate_at_row_550(tmp_path: Path) -> None:
    ids = list(range(600))
    ids[549] = 12
    with pytest.raises(InputError, match=r"^input\.id_column 'id' has a duplicate value 12 at row 550 of .*in\.parquet "
                                         r"\(first at row 13 of .*in\.parquet\); make the ids unique, or remove "
                                         r"input\.id_column to number rows by position$"):
        check(ids_parquet(tmp_path / "in.parquet", ids), id_column="id")


def test_parquet_duplicate_beyond_the_limit_is_not_this_jobs(tmp_path: Path) -> None:
    ids = list(range(600))
    ids[549] = 12
    assert check(ids_parquet(tmp_path / "in.parquet", ids), id_column="id", limit=500).rows == 500


def test_parquet_null_id_at_row_3(tmp_path: Path) -> None:
    ids: list[Any] = list(range(10))
    ids[2] = None
    with pytest.raises(InputError, match=r"'id' is null at row 3 of .*in\.parquet; give every row an id"):
        check(ids_parquet(tmp_path / "in.parquet", ids, row_group_size=2), id_column="id")


def test_string_ids_duplicate_across_files(tmp_path: Path, scan_mode: str) -> None:
    write_jsonl_rows(tmp_path / "a.jsonl", [{"k": f"r{i}", "prompt": "p", "s": "a"} for i in range(5)])
    write_jsonl_rows(tmp_path / "b.jsonl", [{"k": f"q{i}", "prompt": "p", "s": "a"} for i in range(3)] +
                     [{"k": "r3", "prompt": "p", "s": "a"}])
    with pytest.raises(InputError, match=r"duplicate value 'r3' at line 4 of .*b\.jsonl \(first at line 4 of .*a\.jsonl\)"):
        check(tmp_path, id_column="k")


def test_jsonl_bad_byte_at_line_n(tmp_path: Path, scan_mode: str) -> None:
    p = tmp_path / "in.jsonl"
    body = [b'{"prompt": "t%d", "s": "a"}\n' % i for i in range(40)]
    body[26] = b'{"prompt": "t26", "s": "na\xefve"}\n'
    p.write_bytes(b"".join(body))
    with pytest.raises(InputError, match=r"^input file .*in\.jsonl cannot be read as jsonl: line 27 is not UTF-8 "
                                         r"\(byte 0xef at column 27\); save the file as UTF-8"):
        check(p)


def test_jsonl_bad_byte_in_a_column_not_used(tmp_path: Path, scan_mode: str) -> None:
    p = tmp_path / "in.jsonl"
    p.write_bytes(b'{"prompt": "t", "s": "a", "note": "ok"}\n{"prompt": "t", "s": "a", "note": "\xe9"}\n')
    with pytest.raises(InputError, match=r"line 2 is not UTF-8"):
        check(p)


def test_jsonl_truncated_last_line(tmp_path: Path, scan_mode: str) -> None:
    p = tmp_path / "in.jsonl"
    p.write_bytes(b'{"prompt": "a", "s": "b"}\n' * 9 + b'{"prompt": "a", "s": "b')
    with pytest.raises(InputError, match=r"line 10 is cut off \(the file ends inside it\); complete or remove"):
        check(p)


def test_jsonl_line_that_is_not_an_object(tmp_path: Path, scan_mode: str) -> None:
    p = tmp_path / "in.jsonl"
    p.write_bytes(b'{"prompt": "a", "s": "b"}\n\n[1, 2]\n')
    with pytest.raises(InputError, match=r"line 3 holds a JSON array, not an object; make every line one JSON object"):
        check(p)


def test_jsonl_type_change_after_the_first_block(tmp_path: Path, scan_mode: str) -> None:
    # the JSON reader fixes column types on its first 4 MB: a key null there and text later stops a run mid-way
    p = tmp_path / "in.jsonl"
    pad = "x" * 1000
    body = [orjson.dumps({"prompt": pad, "s": "a", "note": None}) + b"\n" for _ in range(5000)]
    body.append(orjson.dumps({"prompt": pad, "s": "a", "note": "late text"}) + b"\n")
    p.write_bytes(b"".join(body))
    with pytest.raises(InputError, match=r"line 5001 does not fit the column types of the lines before it "
                                         r"\(Column\(/note\) changed from null to string"):
        check(p)


def test_csv_latin1(tmp_path: Path) -> None:
    p = tmp_path / "in.csv"
    p.write_bytes(b"prompt,s\n" + "".join(f"t{i},a{i}\n" for i in range(30)).encode()
                  + "caf\u00e9,b\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"in\.csv cannot be read as csv: line 32 is not UTF-8 \(byte 0xe9 at "
                                         r"column 4\)"):
        check(p)


def test_csv_row_with_a_missing_field(tmp_path: Path) -> None:
    p = tmp_path / "in.csv"
    p.write_text('prompt,s\n"multi\nline",a\nonly-one-field\n')
    with pytest.raises(InputError, match=r"line 4 has 1 fields, the header has 2"):
        check(p)


def test_mapping_messages(tmp_path: Path) -> None:
    msg = pa.struct([("role", pa.string()), ("content", pa.string()), ("text", pa.string())])
    schema = pa.schema([("prompt", pa.string()), ("conv", pa.list_(msg)), ("blank", pa.string()),
                        ("none", pa.string())])
    rows = [{"prompt": "t", "conv": [{"role": "user", "content": None, "text": "x"}], "blank": " ", "none": None}
            for _ in range(5)]
    p = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), p)
    with pytest.raises(InputError, match=r"^input\.columns\.student_solution 'conv\[0\]\.content' is empty in all 5 "
                                         r"sampled rows of .*: field 'content' of 'conv\[0\]' is null in every one "
                                         r"\(its fields: .*text.*\); point input\.columns\.student_solution"):
        check(p, student_solution="conv[0].content")
    with pytest.raises(InputError, match=r"'blank' is empty in all 5 sampled rows .*: every value there is an empty "
                                         r"or whitespace-only string"):
        check(p, student_solution="blank")
    with pytest.raises(InputError, match=r"^input\.columns\.task 'conv\[-2\]\.text' .*: the lists in 'conv' have 1 item; "
                                         r"use conv\[0\]\.text or conv\[-1\]\.text$"):
        check(p, task="conv[-2].text", student_solution="conv[0].text")
    with pytest.raises(InputError, match=r"'none' is empty in all 5 sampled rows .*: column 'none' is null in every one"):
        check(p, student_solution="none")


def test_mapping_sample_spreads_beyond_the_first_rows(tmp_path: Path) -> None:
    # the first 1,000 rows have one-item lists, later row groups two: [1] is valid, found by the spread sample
    n = 5000
    conv = [[{"content": "a"}] if i < 1200 else [{"content": "a"}, {"content": "b"}] for i in range(n)]
    p = tmp_path / "in.parquet"
    pq.write_table(pa.table({"prompt": ["t"] * n, "conv": conv}), p, row_group_size=500)
    rep = check(p, student_solution="conv[1].content")
    assert rep.sampled_rows > 1000
    with pytest.raises(InputError, match=r"the lists in 'conv' have 1 to 2 items; use conv\[0\]\.content"):
        check(p, student_solution="conv[2].content")


def test_empty_parquet_is_an_error(tmp_path: Path) -> None:
    p = ids_parquet(tmp_path / "in.parquet", [])
    with pytest.raises(InputError, match=r"^input .*in\.parquet has no rows; give an input with rows$"):
        check(p)
    assert check(p, limit=0).rows == 0


def test_resolve_files_excludes_the_run_dir_and_its_archives(tmp_path: Path) -> None:
    ids_parquet(tmp_path / "a.parquet", [1])
    for d in ("run", "run.old-20250101-000000", "runx"):
        (tmp_path / d).mkdir()
        ids_parquet(tmp_path / d / "b.parquet", [2])
    assert [f.relative_to(tmp_path).as_posix() for f in resolve_files(str(tmp_path), exclude=tmp_path / "run")] \
        == ["a.parquet", "runx/b.parquet"]
    assert len(resolve_files(str(tmp_path / "**" / "*.parquet"), exclude=tmp_path / "run")) == 2
    assert len(resolve_files(str(tmp_path))) == 4


def test_whitespace_only_text_comes_out_as_none(tmp_path: Path) -> None:
    p = write_jsonl_rows(tmp_path / "in.jsonl", [{"prompt": " \n", "s": "a"}, {"prompt": "t", "s": "\t"},
                                                 {"prompt": " t ", "s": ""}])
    (b,) = list(Source(path=str(p), student_solution="s").batches())
    assert (b.tasks, b.solutions) == ([None, "t", " t "], ["a", None, ""])


def test_jsonl_ranges_report_the_first_problem_in_file_order(tmp_path: Path, scan_mode: str) -> None:
    p = tmp_path / "in.jsonl"
    body = [b'{"id": %d, "prompt": "t", "s": "a"}\n' % i for i in range(3000)]
    body[2500] = b'{"id": 7, "prompt": "t", "s": "a"}\n'
    p.write_bytes(b"".join(body))
    with pytest.raises(InputError, match=r"duplicate value 7 at line 2501 of .*in\.jsonl \(first at line 8 of"):
        check(p, id_column="id")
    body[2900] = b'{"id": null, "prompt": "t", "s": "a"}\n'
    body[1200] = b'{"id": 1200, "prompt": "t", "s": "a"\n'
    p.write_bytes(b"".join(body))
    with pytest.raises(InputError, match=r"line 1201 is not valid JSON"):
        check(p, id_column="id")
    body[1200] = b'{"id": 1200, "prompt": "t", "s": "a"}\n'
    p.write_bytes(b"".join(body))
    with pytest.raises(InputError, match=r"'id' is null at line 2901 of"):
        check(p, id_column="id")
    body[2900] = b'{"id": 2900, "prompt": "t", "s": "a"}\n'
    body[2500] = b'{"id": 2500, "prompt": "t", "s": "a"}\n'
    p.write_bytes(b"".join(body))
    rep = check(p, id_column="id")
    assert (rep.rows, rep.ids_checked, rep.lines_checked) == (3000, True, True)


def test_file_changed_under_the_run_is_an_input_error_naming_the_line(tmp_path: Path) -> None:
    # the check passed; then the file is rewritten (a download still being written, an edit) before the run
    # reaches it: the streaming source names the file and the line instead of raising the reader's error
    p = write_jsonl_rows(tmp_path / "in.jsonl", [{"prompt": f"t{i}", "s": "a"} for i in range(20)])
    src = Source(path=str(p), student_solution="s", batch_rows=5)
    assert check(p).rows == 20
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(InputError, match=r"^input file .*in\.jsonl cannot be read as jsonl: line 20 is cut off"):
        list(src.batches())
    p.write_bytes(b'{"prompt": "t", "s": "a"}\n{"prompt": "t", "s": "\xff"}\n')
    with pytest.raises(InputError, match=r"^input file .*in\.jsonl cannot be read as jsonl: line 2 is not UTF-8"):
        list(src.batches())
