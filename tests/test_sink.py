"""Journal → Parquet compaction: the shards hold exactly what per-record parsing would give."""

from __future__ import annotations

import random
import zlib
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.minimality import pair_metrics
from engine.records import data_schema, failure_schema
from engine.store import LocalStorage
from engine.store import shards as sink
from engine.store.journal import encode_record
from engine.store.shards import DATA, FAILURES, ShardWriter, shard_name

MSG = pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))
KEPT = [
    ("chosen", "chosen", MSG),
    ("score", "score", pa.float64()),
    ("small", "small", pa.int8()),
    ("flag", "flag", pa.bool_()),
    ("half", "half", pa.float16()),
    ("tags", "tags", pa.large_list(pa.string())),
    ("rational", "input_rational", pa.string()),
]
TEXTS = ["", "plain", "é 漢字 🙂 \u2028", 'quote " and \\ backslash', "ctrl \x00\x01\x1f\t\r\n end", "x" * 5000]


def _record(i: int, rid: Any, rnd: random.Random, failed: bool) -> dict[str, Any]:
    """A journal record like the runner's: kept columns first, some keys absent, some null."""
    rec: dict[str, Any] = {
        "chosen": None if i % 7 == 0 else [{"role": "user", "content": rnd.choice(TEXTS)}, {"role": "assistant"}],
        "score": rnd.uniform(-1e6, 1e6) if i % 5 else None,
        "small": i % 100 - 50,
        "flag": i % 3 == 0,
        "half": 0.1 * i,
        "tags": [rnd.choice(TEXTS) for _ in range(i % 3)],
        "input_rational": rnd.choice(TEXTS),
        "row_id": rid,
        "task": rnd.choice(TEXTS),
        "student_solution": rnd.choice(TEXTS),
        "model_name": "m",
        "endpoint": None,
        "attempts": i % 4,
        "parser_version": "3",
    }
    if i % 4:  # a completion came back
        rec.update(served_model="served/m", finish_reason="stop", prompt_tokens=rnd.randint(0, 2**40),
                   completion_tokens=i, reasoning_tokens=None, latency_s=rnd.random() * 10 ** rnd.randint(-9, 9),
                   raw_output=rnd.choice(TEXTS), reasoning_content=rnd.choice([None, *TEXTS]))
    if failed:
        rec.update(error_kind=rnd.choice(["no_marker", "timeout"]), error_message=rnd.choice(TEXTS))
    else:
        rec.update(revision=rnd.choice(TEXTS), rational=rnd.choice(TEXTS), status="ok",
                   jaccard=rnd.choice([rnd.random(), 0.1, 1e-300, 5e-324, 1, 0]), levenshtein=rnd.randint(0, 9999),
                   length_ratio=rnd.random() * 3)
    return rec


def _line(payload: bytes) -> bytes:
    return b"%08x " % zlib.crc32(payload) + payload + b"\n"


def _segment(path: Path, row_id_type: pa.DataType, n: int = 60) -> list[dict[str, Any]]:
    """Write a segment with data and failure records, a duplicate row_id, a bad-checksum line, lines with
    a good checksum but no valid JSON / no valid UTF-8, and a torn last line; return its intact records."""
    rnd = random.Random(1)
    rid = (lambda i: i) if row_id_type == pa.int64() else (lambda i: f"id-{i}-é")
    records = [_record(i, rid(i), rnd, failed=i % 3 == 1) for i in range(n)]
    records.insert(40, _record(99, rid(5), rnd, failed=False))  # duplicate of a failure row: dropped
    records.insert(12, _record(98, rid(3), rnd, failed=True))  # duplicate of a data row: dropped
    lines = [encode_record(r) for r in records]
    bad_crc = bytearray(encode_record(_record(200, rid(200), rnd, failed=False)))
    bad_crc[30] ^= 0x01
    lines.insert(20, bytes(bad_crc))
    lines.insert(30, _line(b'{"row_id": 201, "task": "cut'))  # checksummed, but not JSON
    lines.insert(50, _line(b'{"row_id": 202, "task": "\xff\xfe"}'))  # checksummed, but not UTF-8
    torn = encode_record(_record(203, rid(203), rnd, failed=False))[:-20]
    path.write_bytes(b"".join(lines) + torn)
    return records


def _expected(records: list[dict[str, Any]], schemas: dict[str, pa.Schema]) -> dict[str, pa.Table]:
    """What compaction gave when every line was parsed with orjson: first row per row_id, then
    ``pa.Table.from_pylist`` per kind, with the metrics of each data row from ``pair_metrics``."""
    seen: set[Any] = set()
    by_kind: dict[str, list[dict[str, Any]]] = {DATA: [], FAILURES: []}
    for rec in orjson.loads(orjson.dumps(records)):
        if rec["row_id"] not in seen:
            seen.add(rec["row_id"])
            by_kind[FAILURES if "error_kind" in rec else DATA].append(rec)
    for rec in by_kind[DATA]:  # compaction computes the metrics (whatever the journal said)
        rec.update(pair_metrics(rec["revision"], rec["student_solution"]))
    return {k: pa.Table.from_pylist(rows, schema=schemas[k]) for k, rows in by_kind.items()}


def _assert_same(got: pa.Table, want: pa.Table) -> None:
    assert got.schema.equals(want.schema), (got.schema, want.schema)
    assert got.column_names == want.column_names
    for name in want.column_names:  # exact values, floats bit for bit (no NaN in the data)
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
    assert got.equals(want)


@pytest.mark.parametrize("row_id_type", [pa.int64(), pa.string()])
@pytest.mark.parametrize(("chunk_rows", "row_group_rows"), [(200, 500), (7, 10)])
def test_compaction_matches_per_record_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, row_id_type: pa.DataType, chunk_rows: int, row_group_rows: int
) -> None:
    monkeypatch.setattr(sink, "CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr(sink, "ROW_GROUP_ROWS", row_group_rows)
    seg = tmp_path / "journal" / "seg-00003.log"
    seg.parent.mkdir()
    records = _segment(seg, row_id_type)
    schemas = {DATA: data_schema(row_id_type, KEPT), FAILURES: failure_schema(row_id_type, KEPT)}
    want = _expected(records, schemas)
    counts = ShardWriter(LocalStorage(tmp_path), schemas[DATA], schemas[FAILURES]).compact(seg)
    assert not seg.exists()
    assert counts == {k: t.num_rows for k, t in want.items()} and counts[DATA] > 0 and counts[FAILURES] > 0
    for kind in (DATA, FAILURES):
        _assert_same(pq.read_table(tmp_path / shard_name(kind, 3)), want[kind])


def test_only_corrupt_chunks_are_parsed_line_by_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyarrow.json reads every intact chunk; orjson sees only the chunks holding a corrupt line."""
    monkeypatch.setattr(sink, "CHUNK_ROWS", 10)
    calls: list[int] = []
    real = sink._loads_intact

    def spy(payloads: list[bytes]) -> list[dict[str, Any]]:
        calls.append(len(payloads))
        return real(payloads)

    monkeypatch.setattr(sink, "_loads_intact", spy)
    seg = tmp_path / "journal" / "seg-00000.log"
    seg.parent.mkdir()
    _segment(seg, pa.int64())
    ShardWriter(LocalStorage(tmp_path), data_schema(pa.int64(), KEPT), failure_schema(pa.int64(), KEPT)).compact(seg)
    assert calls == [10, 10]  # the chunks with the non-JSON and the non-UTF-8 line


def test_segment_without_intact_lines_writes_no_shards(tmp_path: Path) -> None:
    seg = tmp_path / "journal" / "seg-00001.log"
    seg.parent.mkdir()
    seg.write_bytes(_line(b"{not json") + b"garbage\n" + encode_record({"row_id": 1})[:-3])
    w = ShardWriter(LocalStorage(tmp_path), data_schema(pa.int64(), []), failure_schema(pa.int64(), []))
    assert w.compact(seg) == {DATA: 0, FAILURES: 0}
    assert not seg.exists() and w.shards_written == 0
    assert not (tmp_path / DATA).exists() and not (tmp_path / FAILURES).exists()


def test_row_groups_gather_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sink, "CHUNK_ROWS", 4)
    monkeypatch.setattr(sink, "ROW_GROUP_ROWS", 10)
    seg = tmp_path / "journal" / "seg-00000.log"
    seg.parent.mkdir()
    seg.write_bytes(b"".join(encode_record({"row_id": i, "task": "t", "status": "ok"}) for i in range(25)))
    ShardWriter(LocalStorage(tmp_path), data_schema(pa.int64(), []), failure_schema(pa.int64(), [])).compact(seg)
    f = pq.ParquetFile(tmp_path / shard_name(DATA, 0))
    assert [f.metadata.row_group(i).num_rows for i in range(f.num_row_groups)] == [12, 12, 1]
    assert f.read().column("row_id").to_pylist() == list(range(25))
