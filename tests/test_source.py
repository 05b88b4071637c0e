"""Input side: every file format, directories and globs, column paths, ids, limit, done-skip, kept columns."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from engine.core.errors import InputError, UserError
from engine.records import RESERVED
from engine.source import ColumnPath, DoneSet, Prepared, Source, fingerprint_files, resolve_files
from engine.tools.synthetic import generate_rows, write_sample

MSG = pa.struct([("role", pa.string()), ("content", pa.string())])


def rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    """UltraFeedback-shaped rows: prompt, rejected = [user turn, assistant turn], an int ``uid``."""
    return [
        {
            "uid": 1000 + i,
            "prompt": f"task {i}",
            "rejected": [{"role": "user", "content": f"task {i}"}, {"role": "assistant", "content": f"answer {i}"}],
        }
        for i in range(start, start + n)
    ]


def table(n: int, start: int = 0) -> pa.Table:
    schema = pa.schema([("uid", pa.int64()), ("prompt", pa.string()), ("rejected", pa.list_(MSG))])
    return pa.Table.from_pylist(rows(n, start), schema=schema)


def write_parquet(path: Path, n: int, start: int = 0, **kw: Any) -> Path:
    pq.write_table(table(n, start), path, **kw)
    return path


def write_jsonl(path: Path, data: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    return path


def collect(src: Source, done: DoneSet | None = None) -> tuple[list[Any], list[Any], list[Any]]:
    ids: list[Any] = []
    tasks: list[Any] = []
    sols: list[Any] = []
    for p in src.batches(done):
        assert isinstance(p, Prepared)
        assert len(p.row_ids) == len(p.tasks) == len(p.solutions)
        ids += p.row_ids
        tasks += p.tasks
        sols += p.solutions
    return ids, tasks, sols


# ---------------------------------------------------------------------------- formats


def test_parquet(tmp_path: Path) -> None:
    src = Source(path=str(write_parquet(tmp_path / "in.parquet", 5)))
    ids, tasks, sols = collect(src)
    assert ids == [0, 1, 2, 3, 4]
    assert tasks == [f"task {i}" for i in range(5)]
    assert sols == [f"answer {i}" for i in range(5)]
    assert src.row_id_type == pa.int64()


def test_jsonl(tmp_path: Path) -> None:
    src = Source(path=str(write_jsonl(tmp_path / "in.jsonl", rows(4))))
    assert collect(src)[1:] == ([f"task {i}" for i in range(4)], [f"answer {i}" for i in range(4)])


def test_ndjson_extension(tmp_path: Path) -> None:
    src = Source(path=str(write_jsonl(tmp_path / "in.ndjson", rows(2))))
    assert collect(src)[2] == ["answer 0", "answer 1"]


def test_json_array(tmp_path: Path) -> None:
    p = tmp_path / "in.json"
    p.write_text(json.dumps(rows(5), indent=2), encoding="utf-8")
    src = Source(path=str(p), batch_rows=2)
    assert [len(b.row_ids) for b in src.batches()] == [2, 2, 1]
    assert collect(src) == (list(range(5)), [f"task {i}" for i in range(5)], [f"answer {i}" for i in range(5)])


def test_json_file_holding_json_lines(tmp_path: Path) -> None:
    src = Source(path=str(write_jsonl(tmp_path / "in.json", rows(3))))
    assert collect(src)[0] == [0, 1, 2]


def test_json_array_keys_vary_between_rows(tmp_path: Path) -> None:
    # keys in another order from row to row, a key missing from the first row: one schema for the file
    data = [{"prompt": "p0", "sol": "s0"}] + [{"extra": i, "sol": f"s{i}", "prompt": f"p{i}"} for i in range(1, 5)]
    p = tmp_path / "in.json"
    p.write_text(json.dumps(data), encoding="utf-8")
    src = Source(path=str(p), student_solution="sol", batch_rows=2)
    assert sorted(src.schema.names) == ["extra", "prompt", "sol"]
    assert collect(src)[1:] == ([f"p{i}" for i in range(5)], [f"s{i}" for i in range(5)])
    extras = [e for b in src.batches() for e in (b.extras or [])]
    assert [e["extra"] for e in extras] == [None, 1, 2, 3, 4]


@pytest.mark.parametrize("text", ["[1, 2]", '[{"prompt": "a"}, "b"]', "[[1]]"])
def test_json_array_of_non_objects(tmp_path: Path, text: str) -> None:
    p = tmp_path / "in.json"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=r"input file .*in\.json must hold a JSON array of objects or JSON lines"):
        Source(path=str(p))


def test_csv_flat_columns(tmp_path: Path) -> None:
    p = tmp_path / "in.csv"
    pcsv.write_csv(pa.table({"prompt": ["a, with comma", "b"], "solution": ['say "hi"', "line1\nline2"]}), p)
    src = Source(path=str(p), student_solution="solution")
    assert collect(src) == ([0, 1], ["a, with comma", "b"], ['say "hi"', "line1\nline2"])


def test_csv_text_columns_that_look_like_numbers(tmp_path: Path) -> None:
    # a CSV has no types: an all-digit answer column is still the text to revise
    p = tmp_path / "in.csv"
    p.write_text("id,prompt,solution\n7,what is 2+2,4\n8,what is 3+3,\n", encoding="utf-8")
    src = Source(path=str(p), student_solution="solution", id_column="id")
    assert collect(src) == ([7, 8], ["what is 2+2", "what is 3+3"], ["4", ""])
    assert src.row_id_type == pa.int64()  # other columns keep their inferred types


def test_arrow_ipc_file(tmp_path: Path) -> None:
    p = tmp_path / "in.arrow"
    t = table(5)
    with pa.OSFile(str(p), "wb") as sink, ipc.new_file(sink, t.schema) as w:
        w.write_table(t, max_chunksize=2)
    src = Source(path=str(p), batch_rows=10)
    assert collect(src)[0] == [0, 1, 2, 3, 4]
    assert [len(b.row_ids) for b in src.batches()] == [2, 2, 1]  # one IPC batch at a time


def test_arrow_ipc_stream(tmp_path: Path) -> None:
    p = tmp_path / "in.arrow"
    t = table(5)
    with pa.OSFile(str(p), "wb") as sink, ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    assert collect(Source(path=str(p), batch_rows=3))[2] == [f"answer {i}" for i in range(5)]


def test_feather_extension(tmp_path: Path) -> None:
    import pyarrow.feather as feather

    p = tmp_path / "in.feather"
    feather.write_feather(table(3), p)
    assert collect(Source(path=str(p)))[1] == ["task 0", "task 1", "task 2"]


def test_uppercase_extension(tmp_path: Path) -> None:
    src = Source(path=str(write_parquet(tmp_path / "IN.PARQUET", 2)))
    assert collect(src)[0] == [0, 1]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "json", "arrow"])
def test_ultrafeedback_sample_with_default_columns(tmp_path: Path, fmt: str) -> None:
    p = tmp_path / f"uf.{fmt}"
    write_sample(p, 40, seed=3)
    src = Source(path=str(p), batch_rows=16)  # task=prompt, student_solution=rejected[1].content
    ids, tasks, sols = collect(src)
    expected = list(generate_rows(40, seed=3))
    assert ids == list(range(40))
    assert tasks == [r["prompt"] for r in expected]
    assert sols == [r["rejected"][1]["content"] for r in expected]
    assert all(s for s in sols)
    last = collect(Source(path=str(p), student_solution="rejected[-1].content"))[2]
    assert last == sols


def test_ultrafeedback_sample_csv(tmp_path: Path) -> None:
    p = tmp_path / "uf.csv"
    write_sample(p, 10, seed=4)
    ids, tasks, sols = collect(Source(path=str(p), student_solution="solution"))
    expected = list(generate_rows(10, seed=4))
    assert tasks == [r["prompt"] for r in expected]
    assert sols == [r["rejected"][1]["content"] for r in expected]


# ---------------------------------------------------------------------------- files, folders, globs


def test_directory_in_sorted_order_ordinals_continue(tmp_path: Path) -> None:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    write_parquet(d / "b.parquet", 3, start=3)
    write_parquet(d / "a.parquet", 3, start=0)
    write_parquet(d / "sub" / "c.parquet", 2, start=6)
    (d / "README.md").write_text("not data")
    (d / "_SUCCESS").write_text("")
    src = Source(path=str(d), batch_rows=2)
    assert [f.relative_to(d).as_posix() for f in src.files] == ["a.parquet", "b.parquet", "sub/c.parquet"]
    ids, tasks, _ = collect(src)
    assert ids == list(range(8))
    assert tasks == [f"task {i}" for i in range(8)]


def test_glob(tmp_path: Path) -> None:
    for k in (2, 0, 1):
        write_jsonl(tmp_path / f"part-{k}.jsonl", rows(2, start=2 * k))
    write_jsonl(tmp_path / "other.jsonl", rows(1, start=100))
    src = Source(path=str(tmp_path / "part-*.jsonl"))
    assert [f.name for f in src.files] == ["part-0.jsonl", "part-1.jsonl", "part-2.jsonl"]
    assert collect(src)[1] == [f"task {i}" for i in range(6)]


def test_recursive_glob(tmp_path: Path) -> None:
    (tmp_path / "x" / "y").mkdir(parents=True)
    write_parquet(tmp_path / "x" / "y" / "1.parquet", 1)
    write_parquet(tmp_path / "0.parquet", 1, start=5)
    files = resolve_files(str(tmp_path / "**" / "*.parquet"))
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["0.parquet", "x/y/1.parquet"]


def test_mixed_formats_refused(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", 1)
    write_jsonl(tmp_path / "b.jsonl", rows(1))
    with pytest.raises(InputError, match=r"input\.path .* mixes file formats \(\.jsonl, \.parquet\); use one format"):
        Source(path=str(tmp_path))


def test_unsupported_extension(tmp_path: Path) -> None:
    p = tmp_path / "in.txt"
    p.write_text("hello")
    with pytest.raises(InputError, match=r"input\.path .*in\.txt: unsupported file type \.txt; use \.parquet, \.jsonl"):
        Source(path=str(p))
    q = tmp_path / "noext"
    q.write_text("hello")
    with pytest.raises(InputError, match=r"unsupported file type \(none\)"):
        Source(path=str(q))


def test_glob_matching_an_unsupported_file(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", 1)
    (tmp_path / "a.xlsx").write_text("x")
    with pytest.raises(InputError, match=r"unsupported file type \.xlsx"):
        resolve_files(str(tmp_path / "a.*"))


def test_nonexistent_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"input\.path .*missing\.parquet does not exist; point input\.path at a file, "
                                         r"folder or glob"):
        Source(path=str(tmp_path / "missing.parquet"))


def test_glob_and_folder_matching_nothing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"input\.path .*\*\.parquet matches no input files \(\.parquet/\.jsonl"):
        Source(path=str(tmp_path / "*.parquet"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"input\.path .*empty matches no input files"):
        Source(path=str(tmp_path / "empty"))


@pytest.mark.parametrize(
    ("ext", "fmt"), [("jsonl", "jsonl"), ("json", "json"), ("csv", "csv"), ("parquet", "parquet"), ("arrow", "arrow")]
)
def test_empty_file(tmp_path: Path, ext: str, fmt: str) -> None:
    p = tmp_path / f"in.{ext}"
    p.write_bytes(b"")
    with pytest.raises(InputError, match=rf"input file .*in\.{ext} cannot be read as {fmt} \(.+\); check the file"):
        Source(path=str(p))


def test_empty_json_array(tmp_path: Path) -> None:
    p = tmp_path / "in.json"
    p.write_text("[]")
    with pytest.raises(InputError, match=r"input file .*in\.json is empty; give an input with rows"):
        Source(path=str(p))


def test_parquet_with_zero_rows(tmp_path: Path) -> None:
    src = Source(path=str(write_parquet(tmp_path / "in.parquet", 0)))
    assert list(src.batches()) == []
    assert src.count_rows() == 0


def test_corrupt_files(tmp_path: Path) -> None:
    p = tmp_path / "in.parquet"
    p.write_bytes(b"PAR1 this is not parquet PAR1")
    with pytest.raises(InputError, match=r"input file .*in\.parquet cannot be read as parquet"):
        Source(path=str(p))
    j = tmp_path / "in.jsonl"
    j.write_text('{"prompt": "a", "rejected": []}\n{not json\n')
    with pytest.raises(InputError, match=r"input file .*in\.jsonl cannot be read as jsonl"):
        Source(path=str(j), student_solution="prompt")
    a = tmp_path / "bad.json"
    a.write_text('[{"prompt": "a"},')
    with pytest.raises(InputError, match=r"input file .*bad\.json cannot be read as json"):
        Source(path=str(a), student_solution="prompt")


def test_files_with_other_columns_refused(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", rows(2))
    write_jsonl(tmp_path / "b.jsonl", [{"prompt": "x", "answer": "y"}])
    src = Source(path=str(tmp_path))
    with pytest.raises(InputError, match=r"input file .*b\.jsonl has columns \['prompt', 'answer'\], unlike the first "
                                         r"file's \['uid', 'prompt', 'rejected'\]; give files of one schema"):
        collect(src)


def test_files_with_columns_in_another_order(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", rows(2))
    write_jsonl(tmp_path / "b.jsonl", [{"rejected": r["rejected"], "prompt": r["prompt"], "uid": r["uid"]}
                                       for r in rows(2, start=2)])
    src = Source(path=str(tmp_path))
    assert collect(src) == (list(range(4)), [f"task {i}" for i in range(4)], [f"answer {i}" for i in range(4)])
    assert [list(e) for b in src.batches() for e in b.extras or []][-1] == ["uid", "prompt", "rejected"]


# ---------------------------------------------------------------------------- column paths


def test_column_path_parse() -> None:
    assert ColumnPath.parse("prompt", "k").steps == ()
    p = ColumnPath.parse("rejected[1].content", "k")
    assert (p.head, p.steps) == ("rejected", (1, "content"))
    assert ColumnPath.parse("rejected[-1].content", "k").steps == (-1, "content")
    assert ColumnPath.parse("a.b.c", "k").steps == ("b", "c")
    assert ColumnPath.parse("my col[0]", "k").head == "my col"
    assert ColumnPath.parse("x[0][2].y-z", "k").steps == (0, 2, "y-z")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"input\.columns\.task '' is not a column path; use e\.g\. prompt or rejected\[1\]\.content"),
        (".prompt", r"input\.columns\.task '\.prompt' is not a column path"),
        ("[0]", r"input\.columns\.task '\[0\]' is not a column path"),
        ("rejected[x]", r"input\.columns\.task 'rejected\[x\]': cannot read the path at '\[x\]'; use \.field and \[index\] steps"),
        ("rejected[1", r"cannot read the path at '\[1'"),
        ("rejected[1]content", r"cannot read the path at 'content'"),
        ("a..b", r"cannot read the path at '\.\.b'"),
        ("a.1b", r"cannot read the path at '\.1b'"),
    ],
)
def test_bad_path_syntax(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        ColumnPath.parse(text, "input.columns.task")


def test_bad_path_syntax_from_source(tmp_path: Path) -> None:
    p = write_parquet(tmp_path / "in.parquet", 1)
    with pytest.raises(InputError, match=r"^input\.columns\.student_solution 'rejected\]1\[': cannot read the path"):
        Source(path=str(p), student_solution="rejected]1[")


def test_list_index_and_struct_field(tmp_path: Path) -> None:
    data = [
        {"m": [{"role": "user", "content": "u0"}, {"role": "assistant", "content": "a0"}], "s": {"a": {"b": "x0"}}},
        {"m": [{"role": "user", "content": "u1"}], "s": {"a": {"b": "x1"}}},  # one turn only
        {"m": [], "s": {"a": None}},
        {"m": None, "s": None},
        {"m": [{"role": "user", "content": None}, {"role": "assistant", "content": "a4"},
               {"role": "user", "content": "u4"}], "s": {"a": {"b": None}}},
    ]
    p = tmp_path / "in.parquet"
    schema = pa.schema([("m", pa.list_(MSG)), ("s", pa.struct([("a", pa.struct([("b", pa.string())]))]))])
    pq.write_table(pa.Table.from_pylist(data, schema=schema), p)

    def values(path: str) -> list[Any]:
        return collect(Source(path=str(p), task="s.a.b", student_solution=path, batch_rows=2))[2]

    assert values("m[1].content") == ["a0", None, None, None, "a4"]  # out of range → null
    assert values("m[0].content") == ["u0", "u1", None, None, None]
    assert values("m[-1].content") == ["a0", "u1", None, None, "u4"]
    assert values("m[-2].content") == ["u0", None, None, None, "a4"]
    assert values("m[-4].content") == [None] * 5
    assert values("m[7].role") == [None] * 5
    assert values("s.a.b") == ["x0", "x1", None, None, None]


def test_list_of_strings_and_large_and_fixed_lists(tmp_path: Path) -> None:
    p = tmp_path / "in.parquet"
    t = pa.table({
        "prompt": ["p0", "p1"],
        "tags": pa.array([["a", "b"], ["c"]], pa.list_(pa.string())),
        "big": pa.array([["x", "y"], []], pa.large_list(pa.large_string())),
        "fixed": pa.array([["f0", "g0"], ["f1", "g1"]], pa.list_(pa.string(), 2)),
    })
    pq.write_table(t, p)
    assert collect(Source(path=str(p), student_solution="tags[1]"))[2] == ["b", None]
    assert collect(Source(path=str(p), student_solution="big[-1]"))[2] == ["y", None]
    assert collect(Source(path=str(p), student_solution="fixed[1]"))[2] == ["g0", "g1"]


def test_missing_column_names_it_and_lists_the_others(tmp_path: Path) -> None:
    p = write_parquet(tmp_path / "in.parquet", 1)
    with pytest.raises(
        InputError,
        match=r"^input column 'instruction' \(from input\.columns\.task: instruction\) not found; the input has "
              r"columns: uid, prompt, rejected; set input\.columns\.task to one of them$",
    ):
        Source(path=str(p), task="instruction")
    with pytest.raises(InputError, match=r"input column 'chosen' \(from input\.columns\.student_solution: "
                                         r"chosen\[1\]\.content\) not found; the input has columns: uid, prompt"):
        Source(path=str(p), student_solution="chosen[1].content")


def test_default_columns_on_a_flat_csv_fail_clearly(tmp_path: Path) -> None:
    p = tmp_path / "in.csv"
    p.write_text("prompt,solution\na,b\n")
    with pytest.raises(InputError, match=r"input column 'rejected' .* the input has columns: prompt, solution"):
        Source(path=str(p))


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("prompt[0]", r"input\.columns\.student_solution 'prompt\[0\]': \[0\] applied to a string, not a list; "
                      r"fix input\.columns\.student_solution"),
        ("prompt.content", r"'prompt\.content': no field 'content' in string; fix input\.columns\.student_solution"),
        ("rejected.content", r"'rejected\.content': no field 'content' in list<"),
        ("rejected[1].text", r"'rejected\[1\]\.text': no field 'text' in struct<role: string, content: string>"),
        ("rejected[1][0]", r"'rejected\[1\]\[0\]': \[0\] applied to a struct<"),
        ("rejected[1]", r"'rejected\[1\]' gives struct<role: string, content: string>, not text; "
                        r"point input\.columns\.student_solution at a string"),
        ("uid", r"'uid' gives int64, not text"),
    ],
)
def test_path_applied_to_wrong_type(tmp_path: Path, path: str, message: str) -> None:
    p = write_parquet(tmp_path / "in.parquet", 1)
    with pytest.raises(InputError, match=message):
        Source(path=str(p), student_solution=path)


def test_task_path_checked_too(tmp_path: Path) -> None:
    p = write_parquet(tmp_path / "in.parquet", 1)
    with pytest.raises(InputError, match=r"^input\.columns\.task 'uid' gives int64, not text"):
        Source(path=str(p), task="uid")


# ---------------------------------------------------------------------------- ids


def test_id_column_int(tmp_path: Path) -> None:
    src = Source(path=str(write_parquet(tmp_path / "in.parquet", 4)), id_column="uid")
    assert collect(src)[0] == [1000, 1001, 1002, 1003]
    assert src.row_id_type == pa.int64()


def test_id_column_narrow_int_becomes_int64(tmp_path: Path) -> None:
    p = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": pa.array([3, 1, 2], pa.int16()), "prompt": ["a", "b", "c"],
                             "s": ["x", "y", "z"]}), p)
    src = Source(path=str(p), student_solution="s", id_column="id")
    assert src.row_id_type == pa.int64()
    assert collect(src)[0] == [3, 1, 2]
    assert all(type(i) is int for i in collect(src)[0])


def test_id_column_string(tmp_path: Path) -> None:
    data = [{"key": f"row-{i}", **r} for i, r in enumerate(rows(3))]
    src = Source(path=str(write_jsonl(tmp_path / "in.jsonl", data)), id_column="key")
    assert collect(src)[0] == ["row-0", "row-1", "row-2"]
    assert src.row_id_type == pa.string()


def test_missing_id_column(tmp_path: Path) -> None:
    p = write_parquet(tmp_path / "in.parquet", 1)
    with pytest.raises(InputError, match=r"^input\.id_column 'id' not found; the input has columns: uid, prompt, "
                                         r"rejected$"):
        Source(path=str(p), id_column="id")


def test_id_column_of_wrong_type(tmp_path: Path) -> None:
    p = write_parquet(tmp_path / "in.parquet", 1)
    with pytest.raises(InputError, match=r"^input\.id_column 'rejected' is list<.*>; it must be an integer or string "
                                         r"column$"):
        Source(path=str(p), id_column="rejected")


def test_duplicate_ids(tmp_path: Path) -> None:
    data = rows(5)
    data[3]["uid"] = data[1]["uid"]
    src = Source(path=str(write_jsonl(tmp_path / "in.jsonl", data)), id_column="uid", batch_rows=2)
    with pytest.raises(InputError, match=r"^input\.id_column 'uid' has a duplicate value 1001 at line 4 of .*in\.jsonl "
                                         r"\(also in an earlier row\); make the ids unique, or remove "
                                         r"input\.id_column to number rows by position$"):
        collect(src)


def test_duplicate_string_ids_across_files(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", [{"k": "x", "prompt": "p", "s": "s"}])
    write_jsonl(tmp_path / "b.jsonl", [{"k": "x", "prompt": "q", "s": "t"}])
    with pytest.raises(InputError, match=r"input\.id_column 'k' has a duplicate value 'x'"):
        collect(Source(path=str(tmp_path), student_solution="s", id_column="k"))


def test_duplicate_of_a_done_row_is_still_detected(tmp_path: Path) -> None:
    # a first run with limit 2 did uid 1000, 1001; raising the limit must not silently drop the duplicate
    data = rows(4)
    data[3]["uid"] = 1000
    src = Source(path=str(write_jsonl(tmp_path / "in.jsonl", data)), id_column="uid")
    with pytest.raises(InputError, match=r"duplicate value 1000"):
        collect(src, DoneSet(pa.array([1000, 1001])))


def test_null_id(tmp_path: Path) -> None:
    data = rows(4)
    data[2]["uid"] = None
    src = Source(path=str(write_jsonl(tmp_path / "in.jsonl", data)), id_column="uid", batch_rows=2)
    with pytest.raises(InputError, match=r"^input\.id_column 'uid' is null at line 3 of .*in\.jsonl; give every row "
                                         r"an id, or remove input\.id_column to number rows by position$"):
        collect(src)


# ---------------------------------------------------------------------------- limit and batch_rows


def test_batch_rows(tmp_path: Path) -> None:
    src = Source(path=str(write_parquet(tmp_path / "in.parquet", 10)), batch_rows=3)
    assert [len(b.row_ids) for b in src.batches()] == [3, 3, 3, 1]
    src = Source(path=str(write_jsonl(tmp_path / "in.jsonl", rows(10))), batch_rows=4)
    assert [len(b.row_ids) for b in src.batches()] == [4, 4, 2]


@pytest.mark.parametrize("limit", [0, 1, 3, 4, 5, 7, 9, 10, 100])
def test_limit_across_batches_and_files(tmp_path: Path, limit: int) -> None:
    write_parquet(tmp_path / "a.parquet", 4)
    write_parquet(tmp_path / "b.parquet", 6, start=4)
    src = Source(path=str(tmp_path), limit=limit, batch_rows=3)
    ids, tasks, _ = collect(src)
    assert ids == list(range(min(limit, 10)))
    assert tasks == [f"task {i}" for i in range(min(limit, 10))]


def test_limit_stops_before_reading_further_files(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", rows(4))
    write_jsonl(tmp_path / "b.jsonl", rows(2, start=4))
    src = Source(path=str(tmp_path), limit=4, batch_rows=2)
    (tmp_path / "b.jsonl").write_text("{broken\n")  # never opened: the limit is reached in a.jsonl
    assert collect(src)[0] == [0, 1, 2, 3]


def test_limit_counts_input_rows_not_pending_rows(tmp_path: Path) -> None:
    src = Source(path=str(write_parquet(tmp_path / "in.parquet", 10)), limit=5, batch_rows=2)
    assert collect(src, DoneSet(pa.array([0, 1, 2])))[0] == [3, 4]


def test_source_is_reiterable(tmp_path: Path) -> None:
    src = Source(path=str(write_jsonl(tmp_path / "in.jsonl", rows(5))), batch_rows=2, limit=3)
    assert collect(src) == collect(src)


# ---------------------------------------------------------------------------- done rows


def test_doneset_ints() -> None:
    d = DoneSet(pa.array([5, 1, 3, 3], pa.int32()))
    assert len(d) == 3
    assert 1 in d and 3 in d and 5 in d
    assert 0 not in d and 2 not in d and 6 not in d and -1 not in d
    assert np.int64(3) in d and np.int32(4) not in d
    assert "3" not in d
    assert d.contains(pa.array([0, 1, 2, 3, 4, 5, 6, 10**12])).tolist() == [False, True, False, True, False, True,
                                                                         False, False]
    d.add_array(pa.chunked_array([[7], [1, 8]]))
    assert len(d) == 5 and 8 in d and 7 in d


def test_doneset_strings() -> None:
    d = DoneSet(pa.array(["a", "b"]))
    assert len(d) == 2 and "a" in d and "c" not in d and 1 not in d
    assert d.contains(pa.array(["c", "b", "a"])).tolist() == [False, True, True]
    assert d.contains(pa.array(["a"], pa.large_string())).tolist() == [True]
    d.add_array(pa.array(["c"]))
    assert "c" in d and len(d) == 3


def test_doneset_empty() -> None:
    d = DoneSet()
    assert len(d) == 0 and 0 not in d and "a" not in d
    assert d.contains(pa.array([1, 2])).tolist() == [False, False]
    assert d.contains(pa.array(["x"])).tolist() == [False]
    d.add_array(pa.array([], pa.int64()))
    assert len(d) == 0


def test_done_rows_skipped_ordinals_stable(tmp_path: Path) -> None:
    p = write_parquet(tmp_path / "in.parquet", 10)
    src = Source(path=str(p), batch_rows=3)
    done = DoneSet(pa.array([0, 2, 3, 4, 5, 9]))
    ids, tasks, sols = collect(src, done)
    assert ids == [1, 6, 7, 8]
    assert tasks == [f"task {i}" for i in ids]  # each id keeps its own row
    assert sols == [f"answer {i}" for i in ids]
    # a batch with every row done is not yielded at all
    assert [b.row_ids for b in src.batches(done)] == [[1], [6, 7, 8]]
    extras = [e for b in src.batches(done) for e in b.extras or []]
    assert [e["prompt"] for e in extras] == [f"task {i}" for i in ids]


def test_done_rows_skipped_by_id_column(tmp_path: Path) -> None:
    src = Source(path=str(write_parquet(tmp_path / "in.parquet", 6)), id_column="uid", batch_rows=4)
    ids, tasks, _ = collect(src, DoneSet(pa.array([1000, 1004, 9999])))
    assert ids == [1001, 1002, 1003, 1005]
    assert tasks == ["task 1", "task 2", "task 3", "task 5"]


def test_done_rows_skipped_by_string_id(tmp_path: Path) -> None:
    data = [{"key": f"k{i}", **r} for i, r in enumerate(rows(5))]
    src = Source(path=str(write_jsonl(tmp_path / "in.jsonl", data)), id_column="key", batch_rows=2)
    ids, tasks, _ = collect(src, DoneSet(pa.array(["k0", "k1", "k4"])))
    assert ids == ["k2", "k3"] and tasks == ["task 2", "task 3"]


def test_all_done_yields_nothing(tmp_path: Path) -> None:
    src = Source(path=str(write_parquet(tmp_path / "in.parquet", 5)))
    assert list(src.batches(DoneSet(pa.array(range(5))))) == []


# ---------------------------------------------------------------------------- kept input columns


def test_kept_columns(tmp_path: Path) -> None:
    src = Source(path=str(write_parquet(tmp_path / "in.parquet", 2)))
    assert [(i, o) for i, o, _ in src.kept] == [("uid", "uid"), ("prompt", "prompt"), ("rejected", "rejected")]
    assert src.kept[2][2] == pa.list_(MSG)  # JSON-safe types are kept as they are
    (first,) = [b.extras for b in src.batches()]
    assert first == [
        {"uid": 1000, "prompt": "task 0",
         "rejected": [{"role": "user", "content": "task 0"}, {"role": "assistant", "content": "answer 0"}]},
        {"uid": 1001, "prompt": "task 1",
         "rejected": [{"role": "user", "content": "task 1"}, {"role": "assistant", "content": "answer 1"}]},
    ]


def test_keep_input_columns_off(tmp_path: Path) -> None:
    src = Source(path=str(write_parquet(tmp_path / "in.parquet", 2)), keep_input_columns=False)
    assert src.kept == []
    assert all(b.extras is None for b in src.batches())


def test_reserved_names_renamed(tmp_path: Path) -> None:
    p = tmp_path / "in.jsonl"
    write_jsonl(p, [{"prompt": "p", "student_solution": "s", "row_id": 9, "status": "x", "rational": "r",
                     "task": "t", "revision": "v"}])
    src = Source(path=str(p), student_solution="student_solution")
    names = {i: o for i, o, _ in src.kept}
    assert names == {"prompt": "prompt", "student_solution": "input_student_solution", "row_id": "input_row_id",
                     "status": "input_status", "rational": "input_rational", "task": "input_task",
                     "revision": "input_revision"}
    (extra,) = next(iter(src.batches())).extras or []
    assert extra == {"prompt": "p", "input_student_solution": "s", "input_row_id": 9, "input_status": "x",
                     "input_rational": "r", "input_task": "t", "input_revision": "v"}
    assert {"row_id", "task", "student_solution", "revision", "rational", "status", "raw_output"} <= RESERVED


def test_non_json_safe_types_cast_to_string(tmp_path: Path) -> None:
    p = tmp_path / "in.parquet"
    ts = pa.timestamp("us")
    t = pa.table({
        "prompt": ["a", "b"],
        "s": ["x", "y"],
        "when": pa.array([datetime.datetime(2024, 1, 2, 3, 4, 5), None], ts),
        "day": pa.array([datetime.date(2024, 1, 2), datetime.date(2023, 5, 6)], pa.date32()),
        "blob": pa.array([b"hello", None], pa.binary()),
        "raw": pa.array([b"\xff\xfe", b"ok"], pa.binary()),  # not UTF-8
        "nested": pa.array([{"t": datetime.datetime(2024, 1, 1)}, None], pa.struct([("t", ts)])),
        "n": [1.5, None],
    })
    pq.write_table(t, p)
    src = Source(path=str(p), student_solution="s")
    types = {o: tp for _, o, tp in src.kept}
    for name in ("when", "day", "blob", "raw", "nested"):
        assert types[name] == pa.string(), name
    assert types["n"] == pa.float64() and types["prompt"] == pa.string()
    e0, e1 = next(iter(src.batches())).extras or []
    assert e0["when"].startswith("2024-01-02 03:04:05") and e1["when"] is None
    assert (e0["day"], e1["day"]) == ("2024-01-02", "2023-05-06")
    assert (e0["blob"], e1["blob"]) == ("hello", None)
    assert (e0["raw"], e1["raw"]) == ("\\xff\\xfe", "ok")
    assert json.loads(e0["nested"]) == {"t": "2024-01-01T00:00:00"} and e1["nested"] is None
    assert (e0["n"], e1["n"]) == (1.5, None)
    for e in (e0, e1):
        json.dumps(e)  # every kept value is JSON-safe


def test_kept_column_with_another_type_in_a_later_file(tmp_path: Path) -> None:
    # the first file fixes the kept types; a later file's all-null column is cast to them
    write_jsonl(tmp_path / "a.jsonl", [{"prompt": "p", "s": "x", "score": 3}])
    write_jsonl(tmp_path / "b.jsonl", [{"prompt": "q", "s": "y", "score": None}])
    src = Source(path=str(tmp_path), student_solution="s")
    extras = [e for b in src.batches() for e in b.extras or []]
    assert [e["score"] for e in extras] == [3, None]


# ---------------------------------------------------------------------------- identity and counts


def test_fingerprint_stable_and_content_sensitive(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "in.jsonl", rows(3))
    fp1 = Source(path=str(p)).fingerprint()
    assert fp1 == Source(path=str(p)).fingerprint()
    assert set(fp1) == {"files", "task", "student_solution", "id_column"}
    assert (fp1["task"], fp1["student_solution"], fp1["id_column"]) == ("prompt", "rejected[1].content", None)
    # same size, different bytes
    text = p.read_text()
    p.write_text(text.replace("answer 1", "answer 7"))
    assert p.stat().st_size == len(text)
    fp2 = Source(path=str(p)).fingerprint()
    assert fp2["files"] != fp1["files"]
    # the mapping is part of the identity; limit and batch_rows are not
    assert Source(path=str(p), student_solution="rejected[-1].content").fingerprint() != fp2
    assert Source(path=str(p), limit=1, batch_rows=2).fingerprint() == fp2


def test_fingerprint_of_large_files_covers_the_tail(tmp_path: Path) -> None:
    a = tmp_path / "big.jsonl"
    write_jsonl(a, rows(3000))
    assert a.stat().st_size > 3 * (1 << 16)
    before = fingerprint_files([a])
    assert before == fingerprint_files([a])
    data = a.read_bytes()
    a.write_bytes(data[:-20] + data[-20:].replace(b"2999", b"2998"))
    assert fingerprint_files([a]) != before


def test_fingerprint_changes_with_the_file_set(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", 2)
    fp = Source(path=str(tmp_path)).fingerprint()
    write_parquet(tmp_path / "b.parquet", 2)
    assert Source(path=str(tmp_path)).fingerprint() != fp


def test_count_rows(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", 7, row_group_size=3)
    write_parquet(tmp_path / "b.parquet", 5)
    assert Source(path=str(tmp_path)).count_rows() == 12
    assert Source(path=str(tmp_path), limit=4).count_rows() == 4
    assert Source(path=str(tmp_path), limit=50).count_rows() == 12
    assert Source(path=str(tmp_path), limit=0).count_rows() == 0


def test_count_rows_unknown_for_streaming_formats(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "in.jsonl", rows(3))
    assert Source(path=str(p)).count_rows() is None
    assert Source(path=str(p), limit=2).count_rows() is None
    assert Source(path=str(p), limit=0).count_rows() == 0


def test_input_errors_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError):
        Source(path=str(tmp_path / "nope.jsonl"))


# ---------------------------------------------------------------------------- hub datasets (offline)


def _offline_datasets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Offline mode for `datasets` / `huggingface_hub`, also when they were imported (and read the
    environment) earlier in the session; the datasets cache goes to tmp_path."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_dataset_from_a_local_parquet_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _offline_datasets(monkeypatch, tmp_path)
    d = tmp_path / "ds" / "data"
    d.mkdir(parents=True)
    write_sample(d / "train-00000-of-00002.parquet", 30, seed=5)
    pq.write_table(pq.read_table(d / "train-00000-of-00002.parquet").slice(0, 0), d / "test-00000-of-00001.parquet")
    write_sample(tmp_path / "second.parquet", 50, seed=5)
    # the second train file holds rows 30..49 of the same sequence
    pq.write_table(pq.read_table(tmp_path / "second.parquet").slice(30), d / "train-00001-of-00002.parquet")
    src = Source(dataset=str(tmp_path / "ds"), split="train", batch_rows=8)
    assert src.files == [] and src.schema.names == ["prompt", "chosen", "rejected", "rational"]
    ids, tasks, sols = collect(src)
    expected = list(generate_rows(50, seed=5))
    assert ids == list(range(50))
    assert tasks == [r["prompt"] for r in expected]
    assert sols == [r["rejected"][1]["content"] for r in expected]
    assert max(len(b.row_ids) for b in src.batches()) <= 8
    fp = src.fingerprint()
    assert (fp["dataset"], fp["split"], fp["name"], fp["revision"]) == (str(tmp_path / "ds"), "train", None, None)
    assert src.count_rows() is None
    assert collect(Source(dataset=str(tmp_path / "ds"), limit=11, batch_rows=4))[0] == list(range(11))
    assert collect(Source(dataset=str(tmp_path / "ds"), batch_rows=8), DoneSet(pa.array(range(45))))[0] == [
        45, 46, 47, 48, 49
    ]


def test_dataset_missing_column_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _offline_datasets(monkeypatch, tmp_path)
    d = tmp_path / "ds"
    d.mkdir()
    write_sample(d / "train.parquet", 5, seed=1)
    with pytest.raises(InputError, match=r"input column 'instruction' \(from input\.columns\.task: instruction\) not "
                                         r"found; the input has columns: prompt, chosen, rejected, rational"):
        Source(dataset=str(d), task="instruction")


def test_nonexistent_hub_dataset_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _offline_datasets(monkeypatch, tmp_path)
    # importing and calling `datasets` raises no warning here (pytest turns warnings into errors)
    with pytest.raises(InputError, match=r"^input\.dataset clair-test-nobody/no-such-dataset-xyz \(split train\) "
                                         r"cannot be loaded: .+; check the name, the split and your network or "
                                         r"HF_TOKEN$"):
        Source(dataset="clair-test-nobody/no-such-dataset-xyz")


def test_resume_skips_fully_done_parquet_row_groups_without_reading_them(tmp_path, monkeypatch) -> None:
    import pyarrow.parquet as pq_mod

    from engine.source import DoneSet, Source

    p = tmp_path / "rg.parquet"
    rows = [{"prompt": f"t{i}", "rejected": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": f"s{i}"}]} for i in range(35)]
    pq_mod.write_table(pa.Table.from_pylist(rows), p, row_group_size=10)
    read_groups: list[int] = []
    real = pq_mod.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        read_groups.extend(kwargs.get("row_groups") or [])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pq_mod.ParquetFile, "iter_batches", spy)
    done = DoneSet(pa.array(list(range(20)) + [25], pa.int64()))
    src = Source(path=str(p), batch_rows=4)
    got = [rid for b in src.batches(done) for rid in b.row_ids]
    assert got == [20, 21, 22, 23, 24, 26, 27, 28, 29, 30, 31, 32, 33, 34]
    assert read_groups == [2, 3]  # row groups 0 and 1 were all done: never read
    sols = [s for b in src.batches(done) for s in b.solutions]
    assert sols[0] == "s20" and sols[-1] == "s34"
    limited = Source(path=str(p), batch_rows=4, limit=22)
    assert [rid for b in limited.batches(done) for rid in b.row_ids] == [20, 21]
    assert done.count_range(0, 20) == 20 and done.count_range(20, 10) == 1


def test_a_save_to_disk_folder_is_a_local_dataset(tmp_path: Path) -> None:
    """README: input.dataset takes a local dataset folder; one written by save_to_disk must work (it used
    to fail with "Please use load_from_disk instead")."""
    import datasets

    from engine.core.errors import InputError

    rows = [{"prompt": f"task {i}", "rejected": [{"role": "user", "content": f"task {i}"},
                                                  {"role": "assistant", "content": f"answer {i}"}]} for i in range(7)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:3]),
                          "test": datasets.Dataset.from_list(rows[3:])}).save_to_disk(str(tmp_path / "dict"))
    got = [p for b in Source(dataset=str(tmp_path / "one"), batch_rows=3).batches() for p in b.solutions]
    assert got == [f"answer {i}" for i in range(7)]
    got = [p for b in Source(dataset=str(tmp_path / "dict"), split="test").batches() for p in b.tasks]
    assert got == [f"task {i}" for i in range(3, 7)]
    with pytest.raises(InputError, match="has no split 'validation'"):
        Source(dataset=str(tmp_path / "dict"), split="validation")
