"""Synthetic UltraFeedback-shaped rows: layout, lengths, determinism and every file format."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from engine.tools.synthetic import files as sample_files
from engine.tools.synthetic.files import DEMO_SAMPLE, write_sample
from engine.tools.synthetic.rows import generate_rows


def test_row_layout() -> None:
    for row in generate_rows(200, seed=1):
        assert list(row) == ["prompt", "chosen", "rejected", "rational"]
        assert isinstance(row["prompt"], str) and row["prompt"]
        for key in ("chosen", "rejected"):
            user, assistant = row[key]
            assert user == {"role": "user", "content": row["prompt"]}
            assert assistant["role"] == "assistant" and assistant["content"].strip()
            assert assistant["content"] == assistant["content"].strip()
        assert row["chosen"][1]["content"] != row["rejected"][1]["content"]
        assert row["rational"].startswith(("The student", "Overall")) and "However" in row["rational"]


def test_lengths_are_realistic() -> None:
    rows = list(generate_rows(3000, seed=2))
    tasks = [len(r["prompt"]) for r in rows]
    sols = [len(r["rejected"][1]["content"]) for r in rows]
    assert 330 <= statistics.median(tasks) <= 520
    assert 1350 <= statistics.median(sols) <= 1850
    assert min(tasks) >= 50 and max(tasks) <= 2100
    assert min(sols) >= 150 and max(sols) <= 5300
    assert max(tasks) > 1500 and max(sols) > 4000 and min(sols) < 500  # the whole range is used
    # chosen is a revision of rejected: similar length, large token overlap
    ratios = [len(r["chosen"][1]["content"]) / len(r["rejected"][1]["content"]) for r in rows]
    assert 0.85 <= statistics.median(ratios) <= 1.1
    assert len({r["prompt"] for r in rows}) > 0.97 * len(rows)  # diverse instructions


def test_tasks_are_varied() -> None:
    prompts = [r["prompt"] for r in generate_rows(600, seed=3)]
    joined = "\n".join(prompts)
    for needle in ("function", "How much", "Summarize", "Explain", "What should I do", "Write", "capital"):
        assert needle.lower() in joined.lower(), needle
    sols = "\n".join(r["rejected"][1]["content"] for r in generate_rows(600, seed=3))
    assert "```" in sols and "teh " in sols and "Therefore, the answer is" in sols


def test_flaws_are_fixed_in_chosen() -> None:
    for row in generate_rows(300, seed=4):
        rej, cho = row["rejected"][1]["content"], row["chosen"][1]["content"]
        for typo in (" teh ", " becuase ", " recieve ", " seperate ", " definately "):
            assert typo not in cho
        if "misspells 'the' as 'teh'" in row["rational"]:
            assert " teh " in rej


def test_deterministic_and_chunk_independent() -> None:
    a = list(generate_rows(40, seed=5))
    assert a == list(generate_rows(40, seed=5))
    assert a != list(generate_rows(40, seed=6))
    full = list(generate_rows(1100, seed=5))
    assert list(generate_rows(30, seed=5, start=1010)) == full[1010:1040]  # crosses a block boundary
    assert list(generate_rows(3, seed=5, start=0)) == full[:3]
    assert list(generate_rows(0, seed=5)) == []
    with pytest.raises(ValueError):
        list(generate_rows(-1))


def _expected(n: int, seed: int) -> list[dict]:
    return list(generate_rows(n, seed))


@pytest.mark.parametrize("ext", ["parquet", "arrow"])
def test_columnar_formats_round_trip(tmp_path: Path, ext: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sample_files, "_CHUNK", 7)  # several batches
    path = tmp_path / f"s.{ext}"
    write_sample(path, 23, seed=9)
    table = pq.read_table(path) if ext == "parquet" else pa.ipc.open_file(pa.OSFile(str(path))).read_all()
    assert table.num_rows == 23
    assert table.column_names == ["prompt", "chosen", "rejected", "rational"]
    assert table.schema.field("chosen").type == pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))
    got = table.to_pylist()
    for g, e in zip(got, _expected(23, 9), strict=True):
        assert g["prompt"] == e["prompt"] and g["rational"] == e["rational"]
        for key in ("chosen", "rejected"):
            assert [(m["role"], m["content"]) for m in g[key]] == [(m["role"], m["content"]) for m in e[key]]


def test_jsonl_and_json_round_trip(tmp_path: Path) -> None:
    write_sample(tmp_path / "s.jsonl", 12, seed=4)
    lines = (tmp_path / "s.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(x) for x in lines] == _expected(12, 4)
    write_sample(tmp_path / "s.json", 12, seed=4)
    assert json.loads((tmp_path / "s.json").read_text(encoding="utf-8")) == _expected(12, 4)
    write_sample(tmp_path / "empty.json", 0)
    assert json.loads((tmp_path / "empty.json").read_text(encoding="utf-8")) == []
    write_sample(tmp_path / "explicit.data", 2, seed=4, fmt="jsonl")
    assert [json.loads(x) for x in (tmp_path / "explicit.data").read_text().splitlines()] == _expected(2, 4)


def test_csv_is_flattened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sample_files, "_CHUNK", 5)
    path = tmp_path / "s.csv"
    write_sample(path, 11, seed=8)
    exp = _expected(11, 8)
    t = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True))
    assert t.column_names == ["prompt", "solution"]
    assert t.column("prompt").to_pylist() == [e["prompt"] for e in exp]
    assert t.column("solution").to_pylist() == [e["rejected"][1]["content"] for e in exp]
    with open(path, newline="", encoding="utf-8") as fh:  # plain csv readers agree
        assert [r["solution"] for r in csv.DictReader(fh)] == [e["rejected"][1]["content"] for e in exp]


def test_empty_parquet_and_bad_format(tmp_path: Path) -> None:
    write_sample(tmp_path / "e.parquet", 0)
    assert pq.read_table(tmp_path / "e.parquet").num_rows == 0
    with pytest.raises(ValueError, match="unknown sample format"):
        write_sample(tmp_path / "s.xlsx", 3)


def test_bundled_demo_sample() -> None:
    lines = DEMO_SAMPLE.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 240
    assert [json.loads(x) for x in lines] == list(generate_rows(240, seed=7))
    assert DEMO_SAMPLE.stat().st_size < 1_500_000
