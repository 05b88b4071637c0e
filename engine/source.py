"""The producer's input side: stream Arrow record batches from files or a hub dataset (L3).

* Files are read one record batch at a time (Parquet ``iter_batches``, CSV/JSONL streaming readers,
  Arrow IPC batches), so memory does not grow with the input size.
* Column path expressions (``prompt``, ``rejected[1].content``, ``rejected[-1].content``, ``a.b``)
  are evaluated on whole batches with Arrow kernels.
* Every row gets a stable ``row_id``: the ``id_column`` value, or its ordinal in the deterministic scan
  (files in sorted order, rows in file order).
* Rows already done (``done`` ids) are filtered out per batch, vectorised.
"""

from __future__ import annotations

import glob
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from engine.core.errors import InputError
from engine.records import Kept, kept_name

FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".arrow": "arrow",
           ".feather": "arrow", ".ndjson": "jsonl"}
_STEP = re.compile(r"\.([A-Za-z_][\w\-]*)|\[(-?\d+)\]")
_HEAD = re.compile(r"[^.\[\]]+")



# ---------------------------------------------------------------- path expressions


@dataclass(frozen=True)
class ColumnPath:
    text: str
    head: str
    steps: tuple[str | int, ...]

    @classmethod
    def parse(cls, text: str, key: str) -> ColumnPath:
        m = _HEAD.match(text or "")
        if not m:
            raise InputError(f"{key} {text!r} is not a column path; use e.g. prompt or rejected[1].content")
        steps: list[str | int] = []
        pos = m.end()
        while pos < len(text):
            s = _STEP.match(text, pos)
            if not s:
                raise InputError(
                    f"{key} {text!r}: cannot read the path at {text[pos:]!r}; use .field and [index] steps"
                )
            steps.append(s.group(1) if s.group(1) is not None else int(s.group(2)))
            pos = s.end()
        return cls(text, m.group(0), tuple(steps))

    def check(self, schema: pa.Schema, key: str) -> None:
        """Fail before any request if the path cannot apply to this schema."""
        if self.head not in schema.names:
            raise InputError(
                f"input column {self.head!r} (from {key}: {self.text}) not found; the input has columns: "
                f"{', '.join(schema.names[:20])}; set {key} to one of them"
            )
        tp = schema.field(self.head).type
        for step in self.steps:
            if isinstance(step, int):
                if not (pa.types.is_list(tp) or pa.types.is_large_list(tp) or pa.types.is_fixed_size_list(tp)):
                    raise InputError(f"{key} {self.text!r}: [{step}] applied to a {tp}, not a list; fix {key}")
                tp = tp.value_type
            else:
                if not pa.types.is_struct(tp) or tp.get_field_index(step) < 0:
                    raise InputError(f"{key} {self.text!r}: no field {step!r} in {tp}; fix {key}")
                tp = tp.field(step).type
        if not (pa.types.is_string(tp) or pa.types.is_large_string(tp)):
            raise InputError(f"{key} {self.text!r} gives {tp}, not text; point {key} at a string")

    def evaluate(self, batch: pa.RecordBatch) -> pa.Array:
        arr: pa.Array = batch.column(self.head)
        for step in self.steps:
            arr = _list_index(arr, step) if isinstance(step, int) else pc.struct_field(arr, step)
        return arr


def _list_index(arr: pa.Array, k: int) -> pa.Array:
    """Element k of each list (negative counts from the end); null where out of range."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_fixed_size_list(arr.type):
        arr = arr.cast(pa.list_(arr.type.value_type))
    offsets = arr.offsets.to_numpy(zero_copy_only=False)
    starts, ends = offsets[:-1], offsets[1:]
    lens = ends - starts
    idx = (starts + k) if k >= 0 else (ends + k)
    ok = (lens > (k if k >= 0 else -k - 1)) & arr.is_valid().to_numpy(zero_copy_only=False)
    idx = np.where(ok, idx, 0)
    values = arr.values
    if len(values) == 0:
        return pa.nulls(len(arr), values.type)
    taken = values.take(pa.array(idx))
    return pc.if_else(pa.array(ok), taken, pa.scalar(None, taken.type))


# ---------------------------------------------------------------- files


def resolve_files(path: str) -> list[Path]:
    p = Path(path)
    if any(ch in path for ch in "*?["):
        files = sorted(Path(f) for f in glob.glob(path, recursive=True))
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        files = [f for f in files if f.suffix.lower() in FORMATS]
    elif p.exists():
        files = [p]
    else:
        raise InputError(f"input.path {path} does not exist; point input.path at a file, folder or glob")
    files = [f for f in files if f.is_file()]
    if not files:
        raise InputError(f"input.path {path} matches no input files (.parquet/.jsonl/.json/.csv/.arrow)")
    exts = {f.suffix.lower() for f in files}
    bad = sorted(e or "(none)" for e in exts if e not in FORMATS)
    if bad:
        raise InputError(f"input.path {path}: unsupported file type {bad[0]}; use .parquet, .jsonl, .json, .csv or .arrow")
    if len({FORMATS[e] for e in exts}) > 1:
        raise InputError(f"input.path {path} mixes file formats ({', '.join(sorted(exts))}); use one format")
    return files


def _json_is_array(f: Path) -> bool:
    with f.open("rb") as fh:
        head = fh.read(4096).lstrip()
    return head.startswith(b"[")


def _file_batches(f: Path, batch_rows: int, text_columns: tuple[str, ...] = ()) -> Iterator[pa.RecordBatch]:
    """``text_columns``: CSV columns to read as strings whatever they look like (a CSV has no types)."""
    fmt = FORMATS[f.suffix.lower()]
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            yield from pq.ParquetFile(f, pre_buffer=False).iter_batches(batch_size=batch_rows)
        elif fmt == "csv":
            import pyarrow.csv as pcsv

            reader = pcsv.open_csv(
                f,
                read_options=pcsv.ReadOptions(block_size=1 << 22),
                convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in text_columns}),
            )
            for b in reader:
                yield from _rebatch(b, batch_rows)
        elif fmt == "json" and _json_is_array(f):
            rows = orjson.loads(f.read_bytes())
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise InputError(f"input file {f} must hold a JSON array of objects or JSON lines")
            if rows:
                # one schema inferred from all rows (from_pylist per slice takes the keys of its first row:
                # columns would go missing or change order from one batch to the next)
                whole = pa.RecordBatch.from_struct_array(pa.array(rows))
                del rows
                yield from _rebatch(whole, batch_rows)
        elif fmt in ("json", "jsonl"):
            import pyarrow.json as pjson

            reader = pjson.open_json(f, read_options=pjson.ReadOptions(block_size=1 << 22))
            for b in reader:
                yield from _rebatch(b, batch_rows)
        else:
            import pyarrow.ipc as ipc

            try:
                rf = ipc.open_file(f)
                for i in range(rf.num_record_batches):
                    yield from _rebatch(rf.get_batch(i), batch_rows)
            except pa.ArrowInvalid:
                with ipc.open_stream(f) as rs:
                    for b in rs:
                        yield from _rebatch(b, batch_rows)
    except InputError:
        raise
    except (pa.ArrowException, OSError, orjson.JSONDecodeError, ValueError) as e:
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise InputError(f"input file {f} cannot be read as {fmt} ({msg}); check the file") from None


@dataclass(frozen=True)
class _Skip:
    """``num_rows`` input rows that are all done and were not read."""

    num_rows: int


def _parquet_skipping(f: Path, batch_rows: int, done: DoneSet, ordinal: int) -> Iterator[pa.RecordBatch | _Skip]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f, pre_buffer=False)  # pre-buffering keeps whole row groups alive: memory grows
        for i in range(pf.num_row_groups):
            n = pf.metadata.row_group(i).num_rows
            if done.count_range(ordinal, n) == n:
                yield _Skip(n)
            else:
                yield from pf.iter_batches(batch_size=batch_rows, row_groups=[i])
            ordinal += n
    except (pa.ArrowException, OSError) as e:
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise InputError(f"input file {f} cannot be read as parquet ({msg}); check the file") from None


def _rebatch(b: pa.RecordBatch, n: int) -> Iterator[pa.RecordBatch]:
    for i in range(0, b.num_rows, n):
        yield b.slice(i, n)


def fingerprint_files(files: list[Path]) -> str:
    """Identity of local input: names, sizes and the bytes at both ends of each file."""
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f.name.encode() + b"\0" + str(st.st_size).encode() + b"\0")
        with f.open("rb") as fh:
            h.update(fh.read(1 << 16))
            if st.st_size > 1 << 16:
                fh.seek(max(1 << 16, st.st_size - (1 << 16)))
                h.update(fh.read())
    return h.hexdigest()[:24]


# ---------------------------------------------------------------- the source


@dataclass
class Prepared:
    """One batch of rows ready for prompting (Python lists, same length)."""

    row_ids: list[Any]
    tasks: list[str | None]
    solutions: list[str | None]
    extras: list[dict[str, Any]] | None


class Source:
    """A re-iterable, streaming view of the input rows."""

    def __init__(
        self,
        *,
        path: str | None = None,
        dataset: str | None = None,
        name: str | None = None,
        split: str = "train",
        revision: str | None = None,
        task: str = "prompt",
        student_solution: str = "rejected[1].content",
        id_column: str | None = None,
        limit: int | None = None,
        batch_rows: int = 1024,
        keep_input_columns: bool = True,
    ):
        self.path, self.dataset, self.name, self.split, self.revision = path, dataset, name, split, revision
        self.task_path = ColumnPath.parse(task, "input.columns.task")
        self.sol_path = ColumnPath.parse(student_solution, "input.columns.student_solution")
        self.id_column, self.limit, self.batch_rows = id_column, limit, batch_rows
        self.keep_input_columns = keep_input_columns
        #: the task / solution columns: read as text from CSV even when they look like numbers
        self._text_columns = (self.task_path.head, self.sol_path.head)
        self.files = resolve_files(path) if path is not None else []
        self.schema = self._first_schema()
        self.task_path.check(self.schema, "input.columns.task")
        self.sol_path.check(self.schema, "input.columns.student_solution")
        if id_column is not None:
            if id_column not in self.schema.names:
                raise InputError(
                    f"input.id_column {id_column!r} not found; the input has columns: "
                    f"{', '.join(self.schema.names[:20])}"
                )
            t = self.schema.field(id_column).type
            if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
                raise InputError(f"input.id_column {id_column!r} is {t}; it must be an integer or string column")
        self.kept = self._kept_fields() if keep_input_columns else []

    # -- schema and identity

    @property
    def row_id_type(self) -> pa.DataType:
        if self.id_column is None:
            return pa.int64()
        t = self.schema.field(self.id_column).type
        return pa.int64() if pa.types.is_integer(t) else pa.string()

    def _kept_fields(self) -> list[Kept]:
        """(input name, output name, output type) for every kept input column."""
        return [(f.name, kept_name(f.name), f.type if _json_safe(f.type) else pa.string()) for f in self.schema]

    def fingerprint(self) -> dict[str, Any]:
        ident = (
            {"files": fingerprint_files(self.files)}
            if self.files
            else {"dataset": self.dataset, "name": self.name, "split": self.split, "revision": self.revision}
        )
        return {
            **ident,
            "task": self.task_path.text,
            "student_solution": self.sol_path.text,
            "id_column": self.id_column,
        }

    def _first_schema(self) -> pa.Schema:
        if self.files:
            for b in _file_batches(self.files[0], 16, self._text_columns):
                return b.schema
            f0 = self.files[0]
            if FORMATS[f0.suffix.lower()] == "parquet":
                import pyarrow.parquet as pq

                return pq.read_schema(f0)
            raise InputError(f"input file {f0} is empty; give an input with rows")
        for b in self._hub_batches(16):
            return b.schema
        raise InputError(f"input.dataset {self.dataset} split {self.split} has no rows")

    # -- batches

    def _hub_batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        try:
            import datasets  # lazy: costs memory at import
        except ImportError:  # pragma: no cover - datasets is a core dependency
            raise InputError("input.dataset needs the 'datasets' package; pip install datasets") from None
        try:
            ds = datasets.load_dataset(
                self.dataset, self.name, split=self.split, revision=self.revision, streaming=True
            )
            for tbl in ds.with_format("arrow").iter(batch_size=batch_rows):
                yield from tbl.to_batches()
        except InputError:
            raise
        except Exception as e:  # datasets raises many unrelated types (network, hub, file not found)
            msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise InputError(
                f"input.dataset {self.dataset} (split {self.split}) cannot be loaded: {msg}; "
                "check the name, the split and your network or HF_TOKEN"
            ) from None

    def raw_batches(self, done: DoneSet | None = None) -> Iterator[pa.RecordBatch | _Skip]:
        """Record batches in scan order. With ``done`` (ordinal ids only), a Parquet row group whose rows
        are all done is not read at all: a ``_Skip`` stands for it (fast resume of big runs)."""
        if self.files:
            ordinal = 0
            for f in self.files:
                if done is not None and FORMATS[f.suffix.lower()] == "parquet":
                    batches: Iterator[pa.RecordBatch | _Skip] = _parquet_skipping(f, self.batch_rows, done, ordinal)
                else:
                    batches = _file_batches(f, self.batch_rows, self._text_columns)
                for b in batches:
                    ordinal += b.num_rows
                    if isinstance(b, _Skip):
                        yield b
                        continue
                    if b.schema.names != self.schema.names and sorted(b.schema.names) == sorted(self.schema.names):
                        b = b.select(self.schema.names)  # e.g. JSON files whose keys come in another order
                    if b.schema.names != self.schema.names:
                        raise InputError(
                            f"input file {f} has columns {b.schema.names}, unlike the first file's "
                            f"{self.schema.names}; give files of one schema"
                        )
                    yield b
        else:
            yield from self._hub_batches(self.batch_rows)

    def batches(self, done: DoneSet | None = None) -> Iterator[Prepared]:
        """Prepared rows in scan order, skipping rows in ``done``; stops after ``limit`` input rows."""
        ordinal = 0
        seen: set[Any] | None = set() if self.id_column is not None else None
        skip_with = done if done is not None and len(done) and self.id_column is None else None
        for b in self._limited_batches(skip_with):
            n = b.num_rows
            if isinstance(b, _Skip):
                ordinal += n
                continue
            if self.id_column is None:
                ids_arr = pa.array(np.arange(ordinal, ordinal + n, dtype=np.int64))
            else:
                ids_arr = b.column(self.id_column)
                if ids_arr.null_count:
                    raise InputError(f"input.id_column {self.id_column!r} has a null value near row {ordinal}")
                if pa.types.is_integer(ids_arr.type):
                    ids_arr = ids_arr.cast(pa.int64())
                # before the done-skip: a duplicate of a done row (e.g. after raising input.limit) must not
                # vanish silently
                assert seen is not None
                for rid in ids_arr.to_pylist():
                    if rid in seen:
                        raise InputError(
                            f"input.id_column {self.id_column!r} has a duplicate value {rid!r}; "
                            "use a unique column or remove id_column to use row ordinals"
                        )
                    seen.add(rid)
            ordinal += n
            if done is not None and len(done):
                keep = ~done.contains(ids_arr)
                if not keep.all():
                    mask = pa.array(keep)
                    b = b.filter(mask)
                    ids_arr = ids_arr.filter(mask)
            if b.num_rows == 0:
                continue
            row_ids = ids_arr.to_pylist()
            tasks = self.task_path.evaluate(b).to_pylist()
            sols = self.sol_path.evaluate(b).to_pylist()
            extras = None
            if self.kept:
                cols = {}
                for iname, oname, t in self.kept:
                    col = b.column(iname)
                    if col.type != t:
                        col = _to_text(col) if t == pa.string() else col.cast(t)
                    cols[oname] = col
                extras = pa.RecordBatch.from_pydict(cols).to_pylist()
            yield Prepared(row_ids, tasks, sols, extras)

    def _limited_batches(self, done: DoneSet | None = None) -> Iterator[pa.RecordBatch | _Skip]:
        """``raw_batches`` cut at ``limit`` rows; never reads a batch (or opens a file) past it."""
        if self.limit is None:
            yield from self.raw_batches(done)
            return
        left = self.limit
        if left <= 0:
            return
        for b in self.raw_batches(done):
            if b.num_rows >= left:
                yield _Skip(left) if isinstance(b, _Skip) else b.slice(0, left)
                return
            left -= b.num_rows
            yield b

    def count_rows(self) -> int | None:
        """Total rows the job covers (after limit), when cheap to know (Parquet metadata); else None."""
        if not self.files or any(FORMATS[f.suffix.lower()] != "parquet" for f in self.files):
            return self.limit if self.limit == 0 else None
        import pyarrow.parquet as pq

        total = 0
        for f in self.files:
            try:
                total += pq.ParquetFile(f).metadata.num_rows
            except (pa.ArrowException, OSError) as e:
                raise InputError(f"input file {f} is not a readable Parquet file ({e}); check the file") from None
        return total if self.limit is None else min(total, self.limit)


def _to_text(col: pa.Array) -> pa.Array:
    """A kept column as strings: Arrow's cast where it works (timestamps, dates, decimals, UTF-8 binary),
    else per value: bytes decoded with escapes, nested values as JSON (a binary column of non-UTF-8
    bytes or a struct holding a timestamp would make the cast raise in the middle of a run)."""
    try:
        return col.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return pa.array([None if v is None else _value_text(v) for v in col.to_pylist()], pa.string())


def _value_text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "backslashreplace")
    return orjson.dumps(v, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _json_safe(t: pa.DataType) -> bool:
    """Types that survive a JSON round trip through the journal unchanged."""
    if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t):
        return True
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _json_safe(t.value_type)
    if pa.types.is_struct(t):
        return all(_json_safe(t.field(i).type) for i in range(t.num_fields))
    return False


class DoneSet:
    """Row ids already finished, with a vectorised membership test.

    Integer ids live in a sorted int64 array (8 bytes each: 1M ids = 8 MB); string ids in a Python set.
    """

    def __init__(self, ids: pa.Array | None = None):
        self._ints = np.empty(0, dtype=np.int64)
        self._strs: set[str] = set()
        if ids is not None:
            self.add_array(ids)

    def add_array(self, ids: pa.Array | pa.ChunkedArray) -> None:
        if len(ids) == 0:
            return
        if pa.types.is_integer(ids.type):
            arr = np.sort(np.concatenate([self._ints, np.asarray(ids.to_numpy(zero_copy_only=False), dtype=np.int64)]))
            if len(arr) > 1:  # sorted unique without np.unique's extra passes (40x faster on 1M ids)
                arr = arr[np.concatenate(([True], arr[1:] != arr[:-1]))]
            self._ints = arr
        else:
            self._strs.update(ids.to_pylist())

    def __len__(self) -> int:
        return len(self._ints) + len(self._strs)

    def count_range(self, start: int, n: int) -> int:
        """How many of the integer ids start .. start+n-1 are done."""
        ints = self._ints
        return int(np.searchsorted(ints, start + n) - np.searchsorted(ints, start))

    def __contains__(self, rid: Any) -> bool:
        if isinstance(rid, int | np.integer):
            i = np.searchsorted(self._ints, rid)
            return bool(i < len(self._ints) and self._ints[i] == rid)
        return rid in self._strs

    def contains(self, ids: pa.Array) -> np.ndarray:
        if pa.types.is_integer(ids.type):
            arr = np.asarray(ids.to_numpy(zero_copy_only=False), dtype=np.int64)
            if not len(self._ints):
                return np.zeros(len(arr), dtype=bool)
            pos = np.searchsorted(self._ints, arr)
            pos = np.minimum(pos, len(self._ints) - 1)
            return self._ints[pos] == arr
        return np.fromiter((s in self._strs for s in ids.to_pylist()), dtype=bool, count=len(ids))
