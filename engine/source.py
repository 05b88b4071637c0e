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
#: a trailing slice of a message list: ``[:N]`` (the first N messages) or ``[:-N]`` (all but the last N)
_SLICE = re.compile(r"\[:(-?\d+)\]$")
_PATH_HINT = "use e.g. prompt or rejected[1].content"



# ---------------------------------------------------------------- path expressions


@dataclass(frozen=True)
class ColumnPath:
    text: str
    head: str
    steps: tuple[str | int, ...]

    @classmethod
    def parse(cls, text: str, key: str, *, hint: str = _PATH_HINT, steps_hint: str = "") -> ColumnPath:
        m = _HEAD.match(text or "")
        if not m:
            raise InputError(f"{key} {text!r} is not a column path; {hint}")
        steps: list[str | int] = []
        pos = m.end()
        while pos < len(text):
            s = _STEP.match(text, pos)
            if not s:
                raise InputError(
                    f"{key} {text!r}: cannot read the path at {text[pos:]!r}; use .field and [index] steps{steps_hint}"
                )
            steps.append(s.group(1) if s.group(1) is not None else int(s.group(2)))
            pos = s.end()
        return cls(text, m.group(0), tuple(steps))

    def check(self, schema: pa.Schema, key: str) -> None:
        """Fail before any request if the path cannot apply to this schema."""
        tp = self.type_in(schema, key)
        if not (pa.types.is_string(tp) or pa.types.is_large_string(tp)):
            raise InputError(f"{key} {self.text!r} gives {tp}, not text; point {key} at a string")

    def type_in(self, schema: pa.Schema, key: str) -> pa.DataType:
        """The type the path gives in this schema; fails if a step cannot apply."""
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
        return tp

    def trace(self, batch: pa.RecordBatch) -> list[pa.Array]:
        """The values after the head column and after each step (``trace(b)[-1]`` is ``evaluate(b)``)."""
        arr: pa.Array = batch.column(self.head)
        out = [arr]
        for step in self.steps:
            arr = _list_index(arr, step) if isinstance(step, int) else pc.struct_field(arr, step)
            out.append(arr)
        return out

    def text_of(self, steps: tuple[str | int, ...]) -> str:
        """The path text of ``head`` followed by ``steps``."""
        return self.head + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps)

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


# ---------------------------------------------------------------- chat message lists

_MESSAGES_KEY = "input.columns.messages"


@dataclass(frozen=True)
class Conversations:
    """One batch's message lists, evaluated (one entry per row)."""

    #: each row's task as text (null: the row is invalid input)
    tasks: pa.Array
    #: each row's messages after the slice, as list<struct<role, content>> (null where the task is)
    messages: pa.Array
    #: per row: no messages (a null or empty list, or nothing left after the slice)
    empty: np.ndarray
    #: per row: the last message is not a user message (False for an empty row)
    not_user_last: np.ndarray
    #: per row: a message whose role or content is null, or whose content is empty or whitespace
    blank: np.ndarray
    #: the last messages' roles of the non-empty rows
    last_roles: pa.Array


@dataclass(frozen=True)
class MessagesPath:
    """A column path to a chat message list (``list<struct<role: string, content: string>>``, as in
    UltraFeedback's ``chosen``), optionally ending in a slice ``[:N]`` (the first N messages) or ``[:-N]``
    (all but the last N): ``chosen[:-1]`` is the conversation without its final assistant answer."""

    text: str
    base: ColumnPath
    stop: int | None

    @classmethod
    def parse(cls, text: str, key: str = _MESSAGES_KEY) -> MessagesPath:
        m = _SLICE.search(text or "")
        base = text[: m.start()] if m else text
        if m and not base:
            raise InputError(f"{key} {text!r} is not a column path; use e.g. messages or chosen[:-1]")
        return cls(text, ColumnPath.parse(base, key, hint="use e.g. messages or chosen[:-1]",
                                          steps_hint=", and at the end an optional [:N] or [:-N] slice"),
                   int(m.group(1)) if m else None)

    @property
    def head(self) -> str:
        return self.base.head

    @property
    def unsliced(self) -> str:
        return self.base.text

    def check(self, schema: pa.Schema, key: str = _MESSAGES_KEY) -> None:
        """Fail before any request unless the path gives a list of structs with string role and content."""
        tp = self.base.type_in(schema, key)
        ok = pa.types.is_list(tp) or pa.types.is_large_list(tp) or pa.types.is_fixed_size_list(tp)
        if ok:
            item = tp.value_type
            ok = pa.types.is_struct(item) and all(
                item.get_field_index(f) >= 0
                and (pa.types.is_string(item.field(f).type) or pa.types.is_large_string(item.field(f).type))
                for f in ("role", "content"))
        if not ok:
            raise InputError(f"{key} {self.text!r}: {self.base.text!r} is {tp}, not a list of chat messages "
                             "(list<struct<role: string, content: string>>); point "
                             f"{key} at such a column (e.g. chosen[:-1]), or use input.columns.task for a text prompt")

    def evaluate(self, batch: pa.RecordBatch) -> Conversations:
        """Each row's messages (after the slice) and their text form, vectorised: one message is its
        content; more are the turns as "User: ...\n\nAssistant: ..." (a system message as "System: ...").
        A row is invalid (null task) when it has no messages, its last message is not a user message, or a
        message has a null role or a null or blank content."""
        arr: Any = self.base.evaluate(batch)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if pa.types.is_fixed_size_list(arr.type):
            arr = arr.cast(pa.list_(arr.type.value_type))
        n = len(arr)
        offsets = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
        starts = offsets[:-1]
        lens = np.where(arr.is_valid().to_numpy(zero_copy_only=False), offsets[1:] - starts, 0)
        if self.stop is not None:
            lens = np.minimum(lens, self.stop) if self.stop >= 0 else np.maximum(lens + self.stop, 0)
        new_off = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lens, out=new_off[1:])
        total = int(new_off[-1])
        idx = np.repeat(starts - new_off[:-1], lens) + np.arange(total, dtype=np.int64)
        values = arr.values.take(pa.array(idx, pa.int64()))
        roles = pc.struct_field(values, "role").cast(pa.large_string())
        contents = pc.struct_field(values, "content").cast(pa.large_string())
        empty = lens == 0
        full = np.flatnonzero(~empty)
        last_roles = roles.take(pa.array(new_off[1:][full] - 1, pa.int64()))
        not_user_last = np.zeros(n, dtype=bool)
        not_user_last[full] = ~pc.fill_null(pc.equal(last_roles, "user"), False).to_numpy(zero_copy_only=False)
        bad = pc.or_(roles.is_null(), pc.fill_null(blank_mask(contents), True)).to_numpy(zero_copy_only=False)
        blank = np.bincount(np.repeat(np.arange(n), lens)[bad], minlength=n) > 0
        invalid = empty | not_user_last | blank
        turns = pc.binary_join_element_wise(pc.utf8_capitalize(roles), contents, pa.scalar(": ", pa.large_string()))
        joined = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(new_off), turns),
                                pa.scalar("\n\n", pa.large_string()))
        if total:  # one message: its content as it is
            first = contents.take(pa.array(np.minimum(new_off[:-1], total - 1), pa.int64()))
            joined = pc.if_else(pa.array(lens == 1), first, joined)
        mask = pa.array(invalid)
        tasks = pc.if_else(mask, pa.scalar(None, pa.large_string()), joined)
        pairs = pa.StructArray.from_arrays([roles, contents], names=["role", "content"])
        messages = pa.LargeListArray.from_arrays(pa.array(new_off), pairs, mask=mask)
        return Conversations(tasks, messages, empty, not_user_last, blank, last_roles)


# ---------------------------------------------------------------- files


def resolve_files(path: str, exclude: Path | None = None) -> list[Path]:
    """The input files of ``input.path`` (a file, a folder or a glob), in sorted order.

    ``exclude``: a run directory. A folder or glob never yields its files nor those of its archived copies
    (``DIR.old-*``, see ``RunStore.open``): an output dir inside the input folder must not read the run's own
    manifest or shards as input.
    """
    p = Path(path)
    listed = True
    if any(ch in path for ch in "*?["):
        files = sorted(Path(f) for f in glob.glob(path, recursive=True))
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        files = [f for f in files if f.suffix.lower() in FORMATS]
    elif p.exists():
        files, listed = [p], False
    else:
        raise InputError(f"input.path {path} does not exist; point input.path at a file, folder or glob")
    files = [f for f in files if f.is_file()]
    if listed and exclude is not None:
        files = [f for f in files if not _in_run_dir(f, exclude)]
    if not files:
        raise InputError(f"input.path {path} matches no input files (.parquet/.jsonl/.json/.csv/.arrow)")
    exts = {f.suffix.lower() for f in files}
    bad = sorted(e or "(none)" for e in exts if e not in FORMATS)
    if bad:
        raise InputError(f"input.path {path}: unsupported file type {bad[0]}; use .parquet, .jsonl, .json, .csv or .arrow")
    if len({FORMATS[e] for e in exts}) > 1:
        raise InputError(f"input.path {path} mixes file formats ({', '.join(sorted(exts))}); use one format")
    return files


def _in_run_dir(f: Path, run_dir: Path) -> bool:
    run = run_dir.resolve()
    for parent in f.resolve().parents:
        if parent == run or (parent.parent == run.parent and parent.name.startswith(f"{run.name}.old-")):
            return True
    return False


def _json_is_array(f: Path) -> bool:
    with f.open("rb") as fh:
        head = fh.read(4096).lstrip()
    return head.startswith(b"[")


def file_batches(f: Path, batch_rows: int, text_columns: tuple[str, ...] = ()) -> Iterator[pa.RecordBatch]:
    """One input file's record batches, read the way a run reads them (streamed).

    ``text_columns``: CSV columns to read as strings whatever they look like (a CSV has no types).
    Any read error becomes an :class:`InputError` naming the file and, for text files, the line and the fix.
    """
    fmt = FORMATS[f.suffix.lower()]
    rows = 0  # rows yielded so far: a text reader's error lies in the block after them
    schema: pa.Schema | None = None  # the types a streaming text reader fixed on its first block
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            for b in pq.ParquetFile(f, pre_buffer=False).iter_batches(batch_size=batch_rows):
                rows += b.num_rows
                yield b
        elif fmt == "csv":
            import pyarrow.csv as pcsv

            creader = pcsv.open_csv(
                f,
                read_options=pcsv.ReadOptions(block_size=1 << 22),
                convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in text_columns}),
            )
            schema = creader.schema
            for b in creader:
                for s in _rebatch(b, batch_rows):
                    rows += s.num_rows
                    yield s
        elif fmt == "json" and _json_is_array(f):
            try:
                rows_ = orjson.loads(f.read_bytes())
            except orjson.JSONDecodeError as e:
                raise InputError(
                    f"input file {f} cannot be read as json: line {e.lineno} column {e.colno}: "
                    f"{e.msg.split(': line')[0]}; fix the file (a JSON array of objects, or one object per line)"
                ) from None
            if not isinstance(rows_, list):
                raise InputError(f"input file {f} must hold a JSON array of objects or JSON lines")
            bad = next((i for i, r in enumerate(rows_) if not isinstance(r, dict)), None)
            if bad is not None:
                raise InputError(
                    f"input file {f} must hold a JSON array of objects or JSON lines: element {bad + 1} of the "
                    f"array is a {_json_kind(rows_[bad])}; make every element an object"
                )
            if rows_:
                # one schema inferred from all rows (from_pylist per slice takes the keys of its first row:
                # columns would go missing or change order from one batch to the next)
                whole = pa.RecordBatch.from_struct_array(pa.array(rows_))
                del rows_
                yield from _rebatch(whole, batch_rows)
        elif fmt in ("json", "jsonl"):
            import pyarrow.json as pjson

            jreader = pjson.open_json(f, read_options=pjson.ReadOptions(block_size=1 << 22))
            schema = jreader.schema
            for b in jreader:
                for s in _rebatch(b, batch_rows):
                    rows += s.num_rows
                    yield s
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
        raise InputError(read_error(f, e, rows, schema)) from None


def read_error(f: Path, e: BaseException, rows: int = 0, schema: pa.Schema | None = None) -> str:
    """The one-line message for a file that cannot be read: for a text file, the first bad line and its fix
    (found by a scan of the file: on the error path only); else the reader's own words."""
    fmt = FORMATS[f.suffix.lower()]
    if fmt in ("jsonl", "json", "csv") and not isinstance(e, OSError | UnicodeDecodeError):
        try:
            found = locate_text_problem(f, start_row=rows, schema=schema)
        except OSError:
            found = None
        if found is not None:
            return f"input file {f} cannot be read as {fmt}: {found}"
    if isinstance(e, UnicodeDecodeError):
        found = bad_utf8(f)
        if found is not None:
            return f"input file {f} cannot be read as {fmt}: {found}"
    msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    after = f" after row {rows}" if rows else ""
    return f"input file {f} cannot be read as {fmt} ({msg}){after}; check the file"


def _json_kind(v: Any) -> str:
    if isinstance(v, list):
        return "JSON array"
    if isinstance(v, str):
        return "JSON string"
    if isinstance(v, bool):
        return "JSON boolean"
    if isinstance(v, int | float):
        return "JSON number"
    return "JSON null" if v is None else "JSON value"


# ---------------------------------------------------------------- finding a bad line (error path only)

_UTF8_FIX = "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 IN > OUT)"
_CSV_NULLS = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                        "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"})


def bad_utf8(f: Path) -> str | None:
    """``line N is not UTF-8 (...); fix`` for the first invalid UTF-8 byte of ``f``, or None."""
    line = 1
    rest = b""
    with f.open("rb") as fh:
        while True:
            blk = fh.read(1 << 24)
            data = rest + blk if rest else blk
            cut = len(data) if not blk else data.rfind(b"\n") + 1
            part, rest = data[:cut], data[cut:]
            try:
                part.decode("utf-8")
            except UnicodeDecodeError as e:
                before = part.rfind(b"\n", 0, e.start)
                n = line + part.count(b"\n", 0, e.start)
                return (f"line {n} is not UTF-8 (byte 0x{part[e.start]:02x} at column {e.start - before}); "
                        f"{_UTF8_FIX}")
            line += part.count(b"\n")
            if not blk:
                return None


def locate_text_problem(f: Path, *, start_row: int = 0, schema: pa.Schema | None = None) -> str | None:
    """The first line of a JSON-lines or CSV file that a run cannot read, as ``line N ...; fix``, or None.

    Checks every line for UTF-8 and syntax (a JSON object per line; CSV rows with the header's field count);
    rows from ``start_row`` on (the block a streaming reader failed in) are also checked against ``schema``,
    the column types the reader fixed on its first block.
    """
    if FORMATS[f.suffix.lower()] == "csv":
        return _locate_csv(f, start_row, schema)
    if _json_is_array(f):
        return None
    import io

    import pyarrow.json as pjson

    opts = pjson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error") if schema else None
    row = 0
    with f.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue  # the JSON reader skips blank lines
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as u:
                    return f"line {n} is not UTF-8 (byte 0x{raw[u.start]:02x} at column {u.start + 1}); {_UTF8_FIX}"
                if not raw.endswith(b"\n"):
                    return f"line {n} is cut off (the file ends inside it); complete or remove that line"
                return f"line {n} is not valid JSON ({e.msg.split(': line')[0]}); fix or remove that line"
            if not isinstance(obj, dict):
                return f"line {n} holds a {_json_kind(obj)}, not an object; make every line one JSON object"
            if opts is not None and row >= start_row:
                try:
                    pjson.read_json(io.BytesIO(raw), parse_options=opts,
                                    read_options=pjson.ReadOptions(use_threads=False))
                except pa.ArrowInvalid as e:
                    why = str(e).splitlines()[0].removeprefix("JSON parse error: ")[:160]
                    return (f"line {n} does not fit the column types of the lines before it ({why}); give each "
                            "key one type in every line (\"\" rather than null for text, no new keys after the "
                            "first 4 MB) or convert the file to Parquet")
            row += 1
    return None


def _locate_csv(f: Path, start_row: int, schema: pa.Schema | None) -> str | None:
    import csv

    found = bad_utf8(f)
    if found is not None:
        return found
    with f.open("r", encoding="utf-8", newline="") as fh:
        rd = csv.reader(fh)
        header = next(rd, None)
        if header is None:
            return None
        typed = [(j, name, schema.field(name).type) for j, name in enumerate(header)
                 if schema is not None and name in schema.names]
        typed = [(j, name, t) for j, name, t in typed if pa.types.is_integer(t) or pa.types.is_floating(t)]
        row = 0
        for fields in rd:
            if not fields:
                continue  # the CSV reader skips empty lines
            if len(fields) != len(header):
                return (f"line {rd.line_num} has {len(fields)} fields, the header has {len(header)}; quote fields "
                        "that hold commas or line breaks, or fix that line")
            if row >= start_row:
                for j, name, t in typed:
                    v = fields[j]
                    if v not in _CSV_NULLS and not _parses(v, int if pa.types.is_integer(t) else float):
                        return (f"line {rd.line_num}: column {name!r} holds {v[:40]!r}, not a number like the rows "
                                "before it; fix that value")
            row += 1
    return None


def _parses(v: str, tp: type) -> bool:
    try:
        tp(v)
    except ValueError:
        return False
    return True


def row_location(f: Path | None, row: int, dataset: str | None = None) -> str:
    """Where row ``row`` (0-based, within file ``f``) is, for a message: ``row 3 of F`` (Parquet, Arrow),
    ``line 3 of F`` (JSON lines, CSV: counts blank lines and a CSV header; error path only: it scans the file),
    ``element 3 of F`` (a JSON array)."""
    if f is None:
        return f"row {row + 1} of input.dataset {dataset}"
    fmt = FORMATS[f.suffix.lower()]
    if fmt in ("parquet", "arrow"):
        return f"row {row + 1} of {f}"
    if fmt == "json" and _json_is_array(f):
        return f"element {row + 1} of {f}"
    try:
        if fmt == "csv":
            import csv

            with f.open("r", encoding="utf-8", newline="") as fh:
                rd = csv.reader(fh)
                next(rd, None)
                i = 0
                for fields in rd:
                    if fields:
                        if i == row:
                            return f"line {rd.line_num} of {f}"
                        i += 1
        else:
            with f.open("rb") as fh:
                i = 0
                for n, raw in enumerate(fh, 1):
                    if raw.strip():
                        if i == row:
                            return f"line {n} of {f}"
                        i += 1
    except (OSError, UnicodeDecodeError):
        pass
    return f"row {row + 1} of {f}"


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
    #: the task as text (None: invalid input); from ``input.columns.messages``, the conversation's text form
    tasks: list[str | None]
    #: the student answers (all None for a source without a student column)
    solutions: list[str | None]
    extras: list[dict[str, Any]] | None
    #: each row's chat messages ({"role", "content"}; None where the task is None), for a source read from
    #: ``input.columns.messages``; None for a source read from a text column
    messages: list[list[dict[str, str]] | None] | None = None
    #: final failure records of rows an earlier stage failed (the hand-off between stages), else None
    failed: list[dict[str, Any]] | None = None


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
        task: str | None = None,
        student_solution: str | None = "rejected[1].content",
        messages: str | None = None,
        id_column: str | None = None,
        limit: int | None = None,
        batch_rows: int = 1024,
        keep_input_columns: bool = True,
        exclude: Path | None = None,
        reserve_student: bool = False,
    ):
        """``task``: the task's text column (None: ``prompt``, unless ``messages`` gives the task);
        ``student_solution``: the student answer's column (None: none, the generate stage writes them);
        ``messages``: a chat message list column (see :class:`MessagesPath`) instead of ``task``;
        ``exclude``: the run directory, never read as input (see :func:`resolve_files`);
        ``reserve_student``: a run with a generate stage (kept input columns named like its student
        provenance columns are renamed ``input_NAME``)."""
        self.reserve_student = reserve_student
        if task is not None and messages is not None:
            raise InputError("input.columns.task and input.columns.messages are both set; give one of them")
        self.path, self.dataset, self.name, self.split, self.revision = path, dataset, name, split, revision
        self.messages_path = MessagesPath.parse(messages) if messages is not None else None
        self.task_path = (ColumnPath.parse(task if task is not None else "prompt", "input.columns.task")
                          if self.messages_path is None else None)
        self.sol_path = (ColumnPath.parse(student_solution, "input.columns.student_solution")
                         if student_solution is not None else None)
        self.id_column, self.limit, self.batch_rows = id_column, limit, batch_rows
        self.keep_input_columns = keep_input_columns
        #: the task / solution columns: read as text from CSV even when they look like numbers
        self._text_columns = tuple(p.head for p in (self.task_path, self.sol_path) if p is not None)
        self.files = resolve_files(path, exclude) if path is not None else []
        self.schema = self._first_schema()
        if self.task_path is not None:
            self.task_path.check(self.schema, "input.columns.task")
        if self.messages_path is not None:
            self.messages_path.check(self.schema)
        if self.sol_path is not None:
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
        return [(f.name, kept_name(f.name, self.reserve_student), f.type if _json_safe(f.type) else pa.string())
                for f in self.schema]

    def fingerprint(self) -> dict[str, Any]:
        ident = (
            {"files": fingerprint_files(self.files)}
            if self.files
            else {"dataset": self.dataset, "name": self.name, "split": self.split, "revision": self.revision}
        )
        mapping: dict[str, Any] = (
            {"task": self.task_path.text} if self.task_path is not None
            else {"messages": self.messages_path.text} if self.messages_path is not None else {}
        )
        if self.sol_path is not None:
            mapping["student_solution"] = self.sol_path.text
        return {**ident, **mapping, "id_column": self.id_column}

    def _first_schema(self) -> pa.Schema:
        if self.files:
            for b in file_batches(self.files[0], 16, self._text_columns):
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
            ds = _saved_dataset(datasets, self.dataset, self.split) if self.dataset else None
            if ds is None:
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

    def located_batches(self, done: DoneSet | None = None) -> Iterator[tuple[Path | None, int, pa.RecordBatch | _Skip]]:
        """Record batches in scan order with where each batch comes from: (file or None for a hub dataset, the 0-based row of
        the file the batch starts at, batch)."""
        if self.files:
            ordinal = 0
            for f in self.files:
                if done is not None and FORMATS[f.suffix.lower()] == "parquet":
                    batches: Iterator[pa.RecordBatch | _Skip] = _parquet_skipping(f, self.batch_rows, done, ordinal)
                else:
                    batches = file_batches(f, self.batch_rows, self._text_columns)
                row = 0
                for b in batches:
                    ordinal += b.num_rows
                    at = row
                    row += b.num_rows
                    if isinstance(b, _Skip):
                        yield f, at, b
                        continue
                    if b.schema.names != self.schema.names and sorted(b.schema.names) == sorted(self.schema.names):
                        b = b.select(self.schema.names)  # e.g. JSON files whose keys come in another order
                    if b.schema.names != self.schema.names:
                        raise InputError(
                            f"input file {f} has columns {b.schema.names}, unlike the first file's "
                            f"{self.schema.names}; give files of one schema"
                        )
                    yield f, at, b
        else:
            row = 0
            for b in self._hub_batches(self.batch_rows):
                yield None, row, b
                row += b.num_rows

    def batches(self, done: DoneSet | None = None) -> Iterator[Prepared]:
        """Prepared rows in scan order, skipping rows in ``done``; stops after ``limit`` input rows.

        A task or student solution that is only whitespace comes out as None: like a null or empty one, the
        row is invalid input (recorded, never sent)."""
        ordinal = 0
        seen: set[Any] | None = set() if self.id_column is not None else None
        skip_with = done if done is not None and len(done) and self.id_column is None else None
        for f, at, b in self.limited_batches(skip_with):
            n = b.num_rows
            if isinstance(b, _Skip):
                ordinal += n
                continue
            if self.id_column is None:
                ids_arr = pa.array(np.arange(ordinal, ordinal + n, dtype=np.int64))
            else:
                ids_arr = b.column(self.id_column)
                if ids_arr.null_count:
                    first = int(np.flatnonzero(~ids_arr.is_valid().to_numpy(zero_copy_only=False))[0])
                    raise InputError(null_id_message(self.id_column, row_location(f, at + first, self.dataset)))
                if pa.types.is_integer(ids_arr.type):
                    ids_arr = ids_arr.cast(pa.int64())
                # before the done-skip: a duplicate of a done row (e.g. after raising input.limit) must not
                # vanish silently
                assert seen is not None
                for i, rid in enumerate(ids_arr.to_pylist()):
                    if rid in seen:
                        raise InputError(duplicate_id_message(
                            self.id_column, rid, row_location(f, at + i, self.dataset), None))
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
            try:
                row_ids = ids_arr.to_pylist()
                messages = None
                if self.task_path is not None:
                    tasks = blank_to_null(self.task_path.evaluate(b)).to_pylist()
                else:
                    assert self.messages_path is not None
                    conv = self.messages_path.evaluate(b)
                    tasks, messages = conv.tasks.to_pylist(), conv.messages.to_pylist()
                sols = (blank_to_null(self.sol_path.evaluate(b)).to_pylist() if self.sol_path is not None
                        else [None] * b.num_rows)
                extras = None
                if self.kept:
                    cols = {}
                    for iname, oname, t in self.kept:
                        col = b.column(iname)
                        if col.type != t:
                            col = _to_text(col) if t == pa.string() else col.cast(t)
                        cols[oname] = col
                    extras = pa.RecordBatch.from_pydict(cols).to_pylist()
            except (UnicodeDecodeError, pa.ArrowInvalid) as e:  # text a JSON reader passed through unchecked
                if f is None:
                    raise InputError(f"input.dataset {self.dataset} has text that is not UTF-8 after row {at}; "
                                     "fix the dataset") from None
                raise InputError(read_error(f, e, at)) from None
            yield Prepared(row_ids, tasks, sols, extras, messages)

    def limited_batches(self, done: DoneSet | None = None) -> Iterator[tuple[Path | None, int, pa.RecordBatch | _Skip]]:
        """``located_batches`` cut at ``limit`` rows; never reads a batch (or opens a file) past it."""
        if self.limit is None:
            yield from self.located_batches(done)
            return
        left = self.limit
        if left <= 0:
            return
        for f, at, b in self.located_batches(done):
            if b.num_rows >= left:
                yield f, at, (_Skip(left) if isinstance(b, _Skip) else b.slice(0, left))
                return
            left -= b.num_rows
            yield f, at, b

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


def blank_mask(arr: pa.Array) -> pa.Array:
    """True where a text value is empty or only whitespace; null where it is null (Arrow kernels: no per-row
    Python; ``utf8_is_space`` stops at the first other character)."""
    return pc.or_(pc.equal(pc.binary_length(arr), 0), pc.utf8_is_space(arr))


def blank_to_null(arr: pa.Array) -> pa.Array:
    """``arr`` with its whitespace-only values made null (empty ones already count as invalid input)."""
    blank = pc.utf8_is_space(arr)
    if not pc.any(blank).as_py():
        return arr
    return pc.if_else(blank, pa.scalar(None, arr.type), arr)


ID_FIX = "remove input.id_column to number rows by position"


def null_id_message(column: str, where: str) -> str:
    return f"input.id_column {column!r} is null at {where}; give every row an id, or {ID_FIX}"


def duplicate_id_message(column: str, value: Any, where: str, first: str | None) -> str:
    also = f" (first at {first})" if first else " (also in an earlier row)"
    return f"input.id_column {column!r} has a duplicate value {value!r} at {where}{also}; make the ids unique, or {ID_FIX}"


def _saved_dataset(datasets: Any, path: str, split: str) -> Any:
    """A local folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (memory-mapped
    Arrow files: read in batches, not loaded), or None when ``path`` is not one."""
    p = Path(path).expanduser()
    if not ((p / "state.json").is_file() or (p / "dataset_dict.json").is_file()):
        return None
    ds = datasets.load_from_disk(str(p))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise InputError(f"input.dataset {path} has no split {split!r} (it has: {', '.join(ds)}); "
                             "set input.split to one of them")
        ds = ds[split]
    return ds


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
