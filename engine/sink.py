"""The writer side: journal segments become immutable Parquet shards, committed atomically (L3).

``data/part-NNNNN.parquet`` holds rows with a usable revision (``status`` ok/truncated/worsened),
``failures/part-NNNNN.parquet`` rows without one. Shard N is made from journal segment N: written to a
``.tmp`` name, fsynced, renamed, the folder fsynced, and only then is the segment deleted. Doing it
again from the same segment gives the same shards, so a crash at any point is repaired by redoing it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .journal import iter_segment_chunks, list_segments, segment_number, storage_error

DATA, FAILURES = "data", "failures"
CHUNK_ROWS = 1000

_COMMON = [
    ("model_name", pa.string()),
    ("served_model", pa.string()),
    ("endpoint", pa.string()),
    ("finish_reason", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("reasoning_tokens", pa.int64()),
    ("attempts", pa.int32()),
    ("latency_s", pa.float64()),
    ("raw_output", pa.string()),
    ("reasoning_content", pa.string()),
    ("parser_version", pa.string()),
]


def data_schema(row_id_type: pa.DataType, kept: list[tuple[str, str, pa.DataType]]) -> pa.Schema:
    fields = [
        ("row_id", row_id_type),
        ("task", pa.string()),
        ("student_solution", pa.string()),
        ("revision", pa.string()),
        ("rational", pa.string()),
        ("status", pa.string()),
        *_COMMON,
        ("jaccard", pa.float64()),
        ("levenshtein", pa.int64()),
        ("length_ratio", pa.float64()),
    ]
    return pa.schema(fields + [(o, t) for _, o, t in kept])


def failure_schema(row_id_type: pa.DataType, kept: list[tuple[str, str, pa.DataType]]) -> pa.Schema:
    fields = [
        ("row_id", row_id_type),
        ("task", pa.string()),
        ("student_solution", pa.string()),
        ("error_kind", pa.string()),
        ("error_message", pa.string()),
        *_COMMON,
    ]
    return pa.schema(fields + [(o, t) for _, o, t in kept])


def shard_path(run_dir: Path, kind: str, n: int) -> Path:
    return run_dir / kind / f"part-{n:05d}.parquet"


def list_shards(run_dir: Path, kind: str) -> list[Path]:
    d = run_dir / kind
    if not d.exists():
        return []
    return sorted(p for p in d.glob("part-*.parquet"))


def shard_number(path: Path) -> int:
    return int(path.stem.split("-")[1])


def fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardWriter:
    """Turns journal segments into shards. Thread-safe to call from a worker thread (pure file work)."""

    def __init__(self, run_dir: Path, data: pa.Schema, failures: pa.Schema):
        self.run_dir = run_dir
        self.schemas = {DATA: data, FAILURES: failures}
        self.shards_written = 0

    def compact(self, segment: Path) -> dict[str, int]:
        """Segment → shards (atomic), then delete the segment. Returns rows written per kind."""
        n = segment_number(segment)
        tmp = {k: shard_path(self.run_dir, k, n).with_suffix(".parquet.tmp") for k in (DATA, FAILURES)}
        writers: dict[str, pq.ParquetWriter] = {}
        counts = {DATA: 0, FAILURES: 0}
        seen: set[Any] = set()
        try:
            for chunk in iter_segment_chunks(segment, CHUNK_ROWS):
                by_kind: dict[str, list[dict[str, Any]]] = {DATA: [], FAILURES: []}
                for rec in chunk:
                    rid = rec["row_id"]
                    if rid in seen:  # defensive: one row per row_id per shard
                        continue
                    seen.add(rid)
                    by_kind[FAILURES if "error_kind" in rec else DATA].append(rec)
                for kind, rows in by_kind.items():
                    if not rows:
                        continue
                    table = pa.Table.from_pylist(rows, schema=self.schemas[kind])
                    if kind not in writers:
                        tmp[kind].parent.mkdir(parents=True, exist_ok=True)
                        writers[kind] = pq.ParquetWriter(tmp[kind], self.schemas[kind], compression="zstd")
                    writers[kind].write_table(table)
                    counts[kind] += len(rows)
            for kind, w in writers.items():
                w.close()
                _fsync_file(tmp[kind])
            for kind in writers:
                os.replace(tmp[kind], shard_path(self.run_dir, kind, n))
                fsync_dir(tmp[kind].parent)
            segment.unlink()
            fsync_dir(segment.parent)
        except OSError as e:
            for w in writers.values():
                with contextlib.suppress(Exception):
                    w.close()
            for p in tmp.values():
                with contextlib.suppress(OSError):
                    p.unlink()
            raise storage_error(e, f"shards in {self.run_dir}") from None
        self.shards_written += len(writers)
        return counts

    def recover(self, journal_dir: Path) -> int:
        """Start-up repair: drop temp files, redo every leftover segment. Returns segments compacted."""
        for kind in (DATA, FAILURES):
            d = self.run_dir / kind
            if d.exists():
                for p in d.glob("*.tmp"):
                    p.unlink()
        segs = list_segments(journal_dir)
        for seg in segs:
            self.compact(seg)
        return len(segs)


def _fsync_file(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def next_segment_number(run_dir: Path, journal_dir: Path) -> int:
    nums = [shard_number(p) for k in (DATA, FAILURES) for p in list_shards(run_dir, k)]
    nums += [segment_number(p) for p in list_segments(journal_dir)]
    return max(nums) + 1 if nums else 0
