"""The input pre-flight check: before the first request, prove that the run can read ALL of its input (L3).

A run finds an input problem only when streaming reaches it, after paid requests; a corrected input then
changes the run's fingerprint. So before a run opens its run directory (and before a dry run counts),
:func:`preflight` checks the rows the job covers (``input.limit`` applies):

* the id column (``input.id_column``), whole, for nulls and duplicates. Parquet: that column alone, streamed
  row group by row group (8 bytes a row for integer ids, the ids' own bytes for strings); the duplicate
  test is a sort in numpy (integers) or an Arrow hash (strings), never a Python set per row;
* JSON lines, CSV and JSON files: one pass with the run's own streaming reader, which proves every line is
  UTF-8, parses (a truncated line, a line that is not an object) and fits the column types the reader
  fixed on the first block; Parquet files without an id column: their footers only;
* the column mapping (``input.columns.task`` or ``messages``, and ``student_solution`` when the run reads
  one) on a sample of rows (the first 1,000, then slices spread through the input, only while no usable
  value has been seen): a path that is null, empty or whitespace in every sampled row is an error that
  names the step that fails and what the rows hold there; a message list that gives no conversation
  ending in a user turn, likewise.

Every problem is an :class:`InputError` naming the file, the line or row (1-based) and the fix. Hub datasets
(``input.dataset``): the mapping sample on their first 1,000 rows only (a whole scan would download it).
"""

from __future__ import annotations

import io
import logging
import os
import time
from bisect import bisect_right
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.core.errors import InputError
from engine.source import (
    FORMATS,
    ColumnPath,
    MessagesPath,
    Source,
    bad_utf8,
    blank_mask,
    duplicate_id_message,
    null_id_message,
    read_error,
    row_location,
)

__all__ = ["SAMPLE_HEAD_ROWS", "PreflightReport", "preflight"]

log = logging.getLogger("clair")

#: the mapping is checked on the first rows of the input ...
SAMPLE_HEAD_ROWS = 1000
#: ... then on slices of this many rows spread through it (Parquet: row groups evenly spaced; text files:
#: batches 1, 2, 4, 8, ... of the scan) while no usable value has been seen
SAMPLE_SLICE_ROWS = 256
SAMPLE_SPREAD = 8
#: Parquet id column read in batches of this many rows
ID_BATCH_ROWS = 1 << 16
#: a JSON-lines file at least this big is read in byte ranges of at least RANGE_MIN_BYTES by parallel
#: threads (Arrow parses with the GIL released), every block with the column types Arrow's streaming reader
#: fixes on the file's first 4 MB block: the rule the run's reader applies to its later blocks (and the
#: first block fits the types inferred from it)
PARALLEL_MIN_BYTES = 64 << 20
RANGE_MIN_BYTES = 32 << 20
#: block size of those readers: the JSON parser holds several times a block per reader (memory), and
#: every block is parsed with the first block's column types, so the size does not change what is found
SCAN_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class PreflightReport:
    """What the check covered."""

    files: int
    rows: int  # rows checked (after input.limit); for a hub dataset, the rows sampled
    ids_checked: bool  # the id column was scanned whole for nulls and duplicates
    lines_checked: bool  # every line of the text files was decoded and parsed
    sampled_rows: int  # rows the column mapping was evaluated on
    seconds: float
    scope: str  # "full" or "mapping sample (hub dataset)"


def preflight(source: Source) -> PreflightReport:
    """Check ``source``'s input before any request; raises :class:`InputError` on the first problem."""
    t0 = time.perf_counter()
    probes = _probes(source)
    where = _where(source)
    if not source.files:  # hub dataset: the mapping sample only
        rows = 0
        for _, _, b in source.limited_batches():
            assert isinstance(b, pa.RecordBatch)
            take = b.slice(0, SAMPLE_HEAD_ROWS - rows)
            for p in probes:
                p.add(take)
            rows += take.num_rows
            if rows >= SAMPLE_HEAD_ROWS:
                break
        for p in probes:
            p.check(where)
        return _done(PreflightReport(0, rows, False, False, probes[-1].rows, time.perf_counter() - t0,
                                     "mapping sample (hub dataset)"))
    ids = _IdScan(source.id_column, source.dataset) if source.id_column is not None else None
    fmt = FORMATS[source.files[0].suffix.lower()]
    if fmt == "parquet":
        rows = _scan_parquet(source, ids, probes)
    elif fmt in ("json", "jsonl") and source.limit is None and all(_parallel(f) for f in source.files):
        rows = 0
        for f in source.files:
            rows = _scan_jsonl_parallel(source, f, ids, probes, rows)
    else:
        rows = _scan_batches(source, ids, probes, decode=fmt in ("json", "jsonl"))
    if rows == 0 and source.limit != 0:
        raise InputError(f"input {where} has no rows; give an input with rows")
    for p in probes:
        p.check(where)
    if ids is not None:
        ids.check()
    return _done(PreflightReport(len(source.files), rows, ids is not None, fmt != "parquet", probes[-1].rows,
                                 time.perf_counter() - t0, "full"))


def _probes(source: Source) -> list[_Probe]:
    """The mapping's probes: the task (a text column or a message list), then the student answer if any
    (the last probe's sampled rows are the report's)."""
    probes: list[_Probe] = []
    if source.task_path is not None:
        probes.append(_PathProbe(source.task_path, "input.columns.task"))
    if source.messages_path is not None:
        probes.append(_MessagesProbe(source.messages_path, "input.columns.messages"))
    if source.sol_path is not None:
        probes.append(_PathProbe(source.sol_path, "input.columns.student_solution"))
    return probes


def _done(rep: PreflightReport) -> PreflightReport:
    log.info("pre-flight check: %d row(s) of %d file(s) in %.2fs (ids %s, mapping on %d sampled rows)",
             rep.rows, rep.files, rep.seconds, "checked" if rep.ids_checked else "not set", rep.sampled_rows)
    return rep


def _where(source: Source) -> str:
    if not source.files:
        return f"input.dataset {source.dataset}"
    if len(source.files) == 1:
        return str(source.files[0])
    return f"{source.path} ({len(source.files)} files)"


# ---------------------------------------------------------------- scanners


def _scan_parquet(source: Source, ids: _IdScan | None, probes: list[_Probe]) -> int:
    """Parquet: footers; the id column alone, streamed; the mapping columns on a sample."""
    import pyarrow.parquet as pq

    left = source.limit
    rows = 0
    heads = list(dict.fromkeys(p.head for p in probes))
    spread: list[tuple[Path, Any, int]] = []  # (file, ParquetFile, row group) candidates for the spread sample
    for f in source.files:
        if left == 0:
            break
        try:
            pf = pq.ParquetFile(f, pre_buffer=False)
            n = pf.metadata.num_rows if left is None else min(pf.metadata.num_rows, left)
            if pf.schema_arrow.names != source.schema.names and \
                    sorted(pf.schema_arrow.names) != sorted(source.schema.names):
                raise InputError(f"input file {f} has columns {pf.schema_arrow.names}, unlike the first file's "
                                 f"{source.schema.names}; give files of one schema")
            if ids is not None and n:
                at = 0
                for b in pf.iter_batches(batch_size=ID_BATCH_ROWS, columns=[ids.column]):
                    b = b.slice(0, n - at)
                    ids.add(f, at, b.column(0))
                    at += b.num_rows
                    if at >= n:
                        break
            if n and not all(p.satisfied for p in probes) and rows < SAMPLE_HEAD_ROWS:
                want = min(SAMPLE_HEAD_ROWS - rows, n)
                for b in pf.iter_batches(batch_size=want, columns=heads):
                    for p in probes:
                        p.add(b.slice(0, want))
                    break
            covered = 0
            for g in range(pf.metadata.num_row_groups):
                if covered >= n:
                    break
                if g:
                    spread.append((f, pf, g))
                covered += pf.metadata.row_group(g).num_rows
        except (pa.ArrowException, OSError) as e:
            raise InputError(read_error(f, e)) from None
        rows += n
        if left is not None:
            left -= n
    if spread and not all(p.satisfied for p in probes):
        step = max(1, len(spread) // SAMPLE_SPREAD)
        for f, pf, g in spread[::step][:SAMPLE_SPREAD]:
            try:
                for b in pf.iter_batches(batch_size=SAMPLE_SLICE_ROWS, row_groups=[g], columns=heads):
                    for p in probes:
                        p.add(b)
                    break
            except (pa.ArrowException, OSError) as e:
                raise InputError(read_error(f, e)) from None
            if all(p.satisfied for p in probes):
                break
    return rows


def _scan_batches(source: Source, ids: _IdScan | None, probes: list[_Probe], *, decode: bool) -> int:
    """JSON lines, CSV, JSON, Arrow IPC: every batch through the run's own reader (which locates a line it
    cannot parse); JSON text also proven UTF-8 (Arrow's JSON reader passes bad bytes through)."""
    rows = 0
    k = 0  # batches seen after the head sample
    for f, at, b in source.limited_batches():
        assert isinstance(b, pa.RecordBatch) and f is not None
        if decode:
            try:
                b.validate(full=True)
            except pa.ArrowInvalid as e:
                found = bad_utf8(f)
                raise InputError(f"input file {f} cannot be read as {FORMATS[f.suffix.lower()]}: {found}"
                                 if found else read_error(f, e, at)) from None
        if ids is not None:
            ids.add(f, at, b.column(ids.column))
        if rows < SAMPLE_HEAD_ROWS:
            for p in probes:
                p.add(b.slice(0, SAMPLE_HEAD_ROWS - rows))
        else:
            k += 1
            if k & (k - 1) == 0 and not all(p.satisfied for p in probes):
                for p in probes:
                    p.add(b.slice(0, SAMPLE_SLICE_ROWS))
        rows += b.num_rows
    return rows


def _parallel(f: Path) -> bool:
    if FORMATS[f.suffix.lower()] == "jsonl" or (FORMATS[f.suffix.lower()] == "json" and not _json_is_array(f)):
        return f.stat().st_size >= PARALLEL_MIN_BYTES
    return False


def _json_is_array(f: Path) -> bool:
    with f.open("rb") as fh:
        return fh.read(4096).lstrip().startswith(b"[")


class _Range(io.RawIOBase):
    """Bytes ``start`` .. ``end`` of a file, as a stream."""

    def __init__(self, path: Path, start: int, end: int):
        super().__init__()
        self.fh = path.open("rb", buffering=0)
        self.fh.seek(start)
        self.left = end - start

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self.left)
        if n <= 0:
            return 0
        k = self.fh.readinto(memoryview(b)[:n]) or 0
        self.left -= k
        return k

    def close(self) -> None:
        self.fh.close()
        super().close()


@dataclass
class _Part:
    rows: int = 0
    ids: list[tuple[int, pa.Array]] = field(default_factory=list)
    samples: list[pa.RecordBatch] = field(default_factory=list)
    error: BaseException | None = None
    utf8: bool = False


def _scan_jsonl_parallel(source: Source, f: Path, ids: _IdScan | None, probes: list[_Probe], base: int) -> int:
    """One big JSON-lines file in parallel byte ranges (cut at line ends); results are assembled in file
    order, so the first problem reported is the first in the file. Returns ``base`` + the file's rows."""
    import pyarrow.json as pjson

    size = f.stat().st_size
    n = max(1, min(os.cpu_count() or 1, size // RANGE_MIN_BYTES))
    cuts = [0]
    with f.open("rb") as fh:
        for k in range(1, n):
            fh.seek(k * size // n)
            fh.readline()
            if cuts[-1] < fh.tell() < size:
                cuts.append(fh.tell())
    cuts.append(size)
    ropts = pjson.ReadOptions(block_size=SCAN_BLOCK_BYTES, use_threads=False)  # the ranges are the parallelism
    try:  # the column types the run's reader fixes on the file's first block (4 MB)
        with pjson.open_json(f, read_options=pjson.ReadOptions(block_size=1 << 22)) as first:
            schema = first.schema
    except (pa.ArrowException, OSError) as e:
        raise InputError(read_error(f, e, 0, None)) from None
    names = sorted(source.schema.names)

    def scan(k: int) -> _Part:
        part = _Part()
        popts = pjson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
        try:
            stream = pa.PythonFile(io.BufferedReader(_Range(f, cuts[k], cuts[k + 1]), 1 << 22), mode="r")
            with pjson.open_json(stream, read_options=ropts, parse_options=popts) as reader:
                for b in reader:
                    try:
                        b.validate(full=True)
                    except pa.ArrowInvalid as e:
                        part.error, part.utf8 = e, True
                        return part
                    if sorted(b.schema.names) != names:
                        raise InputError(f"input file {f} has columns {b.schema.names}, unlike the first file's "
                                         f"{source.schema.names}; give files of one schema")
                    if ids is not None:
                        part.ids.append((part.rows, b.column(ids.column)))
                    if (k == 0 and part.rows < SAMPLE_HEAD_ROWS) or (k and not part.rows):
                        part.samples.append(b.slice(0, SAMPLE_HEAD_ROWS - part.rows if k == 0 else SAMPLE_SLICE_ROWS))
                    part.rows += b.num_rows
        except (pa.ArrowException, OSError, InputError) as e:
            part.error = e
        return part

    with ThreadPoolExecutor(len(cuts) - 1, thread_name_prefix="clair-preflight") as ex:
        parts = list(ex.map(scan, range(len(cuts) - 1)))
    at = base
    for part in parts:
        for off, arr in part.ids:
            ids.add(f, at - base + off, arr)  # type: ignore[union-attr]
        for b in part.samples:
            for p in probes:
                p.add(b)
        if part.error is not None:
            if isinstance(part.error, InputError):
                raise part.error
            found = bad_utf8(f) if part.utf8 else None
            raise InputError(f"input file {f} cannot be read as {FORMATS[f.suffix.lower()]}: {found}" if found
                             else read_error(f, part.error, at - base + part.rows, schema)) from None
        at += part.rows
    return at


# ---------------------------------------------------------------- ids


class _IdScan:
    """Collects an id column batch by batch (nulls fail at once); duplicates are found at the end."""

    def __init__(self, column: str, dataset: str | None):
        self.column, self.dataset = column, dataset
        self.ints: list[np.ndarray] = []
        self.strs: list[pa.Array] = []
        self.spans: list[tuple[int, int, Path | None, int]] = []  # (kind 0 int / 1 str, start, file, row)
        self.n = [0, 0]

    def add(self, f: Path | None, at: int, arr: pa.Array) -> None:
        if arr.null_count:
            first = int(np.flatnonzero(~arr.is_valid().to_numpy(zero_copy_only=False))[0])
            raise InputError(null_id_message(self.column, row_location(f, at + first, self.dataset)))
        kind = 0 if pa.types.is_integer(arr.type) else 1
        self.spans.append((kind, self.n[kind], f, at))
        self.n[kind] += len(arr)
        if kind == 0:
            self.ints.append(np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64))
        else:
            self.strs.append(arr.cast(pa.large_string()) if arr.type != pa.large_string() else arr)

    def check(self) -> None:
        if self.ints:
            a = np.concatenate(self.ints)
            if len(a) > 1 and not bool((a[1:] > a[:-1]).all()):  # increasing ids: no sort needed
                s = np.sort(a)
                if bool((s[1:] == s[:-1]).any()):
                    self._raise(0, a)
        if self.strs:
            ca = pa.chunked_array(self.strs)
            if pc.count_distinct(ca).as_py() < len(ca):
                codes = ca.combine_chunks().dictionary_encode().indices.to_numpy(zero_copy_only=False)
                self._raise(1, np.asarray(codes, dtype=np.int64), ca)

    def _raise(self, kind: int, keys: np.ndarray, values: pa.ChunkedArray | None = None) -> None:
        order = np.argsort(keys, kind="stable")
        same = keys[order[1:]] == keys[order[:-1]]
        second = int(order[1:][same].min())  # the first row (in scan order) whose id was seen before
        first = int(np.flatnonzero(keys == keys[second])[0])
        value: Any = int(keys[second]) if values is None else values[second].as_py()
        raise InputError(duplicate_id_message(self.column, value, self._where(kind, second),
                                              self._where(kind, first)))

    def _where(self, kind: int, i: int) -> str:
        spans = [s for s in self.spans if s[0] == kind]
        j = bisect_right([s[1] for s in spans], i) - 1
        _, start, f, at = spans[j]
        return row_location(f, at + i - start, self.dataset)


# ---------------------------------------------------------------- the column mapping


class _Probe:
    """One key of the column mapping on the sampled rows: it counts rows until one of them gives a usable
    value (then it is satisfied and takes no more)."""

    def __init__(self, key: str, head: str):
        self.key, self.head = key, head  # head: the input column the key reads
        self.rows = 0
        self.usable = 0

    @property
    def satisfied(self) -> bool:
        return self.usable > 0

    def add(self, batch: pa.RecordBatch) -> None:
        if self.satisfied or batch.num_rows == 0:
            return
        self.rows += batch.num_rows
        self._add(batch)

    def _add(self, batch: pa.RecordBatch) -> None:
        raise NotImplementedError

    def check(self, where: str) -> None:
        raise NotImplementedError


class _PathProbe(_Probe):
    """How far a column path gets in the sampled rows: rows still non-null after each step, the list
    lengths met at each index step, and the rows whose text is usable (not empty or whitespace)."""

    def __init__(self, path: ColumnPath, key: str):
        super().__init__(key, path.head)
        self.path = path
        self.present = [0] * (len(path.steps) + 1)
        self.lens: list[tuple[int, int] | None] = [None] * len(path.steps)
        self.types: list[pa.DataType] = []

    def _add(self, batch: pa.RecordBatch) -> None:
        arrs = self.path.trace(batch)
        self.types = [a.type for a in arrs]
        for i, arr in enumerate(arrs):
            self.present[i] += len(arr) - arr.null_count
            if i < len(self.path.steps) and isinstance(self.path.steps[i], int) and len(arr) - arr.null_count:
                mm = pc.min_max(pc.list_value_length(arr)).as_py()
                lo, hi = self.lens[i] or (mm["min"], mm["max"])
                self.lens[i] = (min(lo, mm["min"]), max(hi, mm["max"]))
        last = arrs[-1]
        self.usable += int(pc.sum(pc.invert(blank_mask(last))).as_py() or 0)

    def check(self, where: str) -> None:
        if self.rows == 0 or self.satisfied:
            return
        p, key = self.path, self.key
        head = f"{key} {p.text!r} is empty in all {self.rows} sampled rows of {where}"
        fail = next((i for i, n in enumerate(self.present) if n == 0), None)
        if fail is None:
            raise InputError(f"{head}: every value there is an empty or whitespace-only string; point {key} at "
                             "the text")
        if fail == 0:
            raise InputError(f"{head}: column {p.head!r} is null in every one; point {key} at a column that "
                             "holds the text")
        step = p.steps[fail - 1]
        before = p.text_of(p.steps[:fail - 1])
        if isinstance(step, int):
            lo, hi = self.lens[fail - 1] or (0, 0)
            if hi == 0:
                raise InputError(f"{head}: the lists in {before!r} are empty in every one; point {key} at a "
                                 "column that holds the text")
            items = f"{hi} item{'s' if hi != 1 else ''}" if lo == hi else f"{lo} to {hi} items"
            fixes = [p.text_of((*p.steps[:fail - 1], k, *p.steps[fail:])) for k in (max(lo, 1) - 1, -1)]
            raise InputError(f"{head}: the lists in {before!r} have {items}; use {fixes[0]} or {fixes[1]}")
        tp = self.types[fail - 1]
        fields = ", ".join(tp.field(i).name for i in range(tp.num_fields)) if pa.types.is_struct(tp) else "?"
        raise InputError(f"{head}: field {step!r} of {before!r} is null in every one (its fields: {fields}); "
                         f"point {key} at a field that holds the text")


class _MessagesProbe(_Probe):
    """How the sampled rows' message lists fare: rows with no messages, rows whose last message is not the
    user's, rows with a blank message, and the rows that give a task."""

    def __init__(self, path: MessagesPath, key: str):
        super().__init__(key, path.head)
        self.path = path
        self.empty = 0
        self.not_user = 0
        self.last_roles: set[str | None] = set()

    def _add(self, batch: pa.RecordBatch) -> None:
        conv = self.path.evaluate(batch)
        self.usable += len(conv.tasks) - conv.tasks.null_count
        self.empty += int(conv.empty.sum())
        self.not_user += int(conv.not_user_last.sum())
        self.last_roles.update(pc.unique(conv.last_roles).to_pylist())

    def check(self, where: str) -> None:
        if self.rows == 0 or self.satisfied:
            return
        p, key = self.path, self.key
        head = f"{key} {p.text!r} gives no usable conversation in all {self.rows} sampled rows of {where}"
        sliced = " after the slice" if p.stop is not None else ""
        if self.empty == self.rows:
            raise InputError(f"{head}: every message list is null or empty{sliced}; point {key} at a column of "
                             "chat messages")
        if self.empty + self.not_user == self.rows:
            roles = ", ".join(sorted(str(r) for r in self.last_roles - {"user"}))
            fix = (f"use {p.unsliced}[:-1] to drop the final answer" if p.stop is None and "assistant" in
                   self.last_roles else f"point {key} (or its slice) at the conversation up to the user's turn")
            raise InputError(f"{head}: no conversation ends in a user turn (they end in: {roles}); the student "
                             f"answers the user's last message: {fix}")
        raise InputError(f"{head}: each conversation that ends in a user turn has a message whose role or "
                         "content is null, empty or whitespace-only; fix those messages")
