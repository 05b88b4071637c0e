"""The writer side of the shards: journal segments become immutable Parquet shards (L3).

``data/part-NNNNN.parquet`` holds rows with a usable revision (``status`` ok/truncated/worsened),
``failures/part-NNNNN.parquet`` rows without one (their columns: :mod:`engine.records`). Shard N is made
from journal segment N: written to a staged file, committed through the store's :class:`Storage` seam,
and only then is the segment deleted. Doing it again from the same segment gives the same shards, so a
crash at any point is repaired by redoing it (:mod:`engine.store.recovery`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from engine.core.errors import StorageError
from engine.minimality import batch_metrics
from engine.store.fs import Storage, as_storage, fsync, storage_error
from engine.store.journal import delete_segment, iter_segment_payloads, list_segments, segment_number

__all__ = ["CHUNK_ROWS", "DATA", "FAILURES", "KINDS", "ROW_GROUP_ROWS", "ShardWriter", "has_rows",
           "next_segment_number", "shard_name", "shard_names", "shard_number",
           "stage_table", "write_table"]

DATA, FAILURES = "data", "failures"
KINDS = (DATA, FAILURES)
#: journal lines parsed per ``pyarrow.json`` call: small keeps the memory spike low
CHUNK_ROWS = 200
#: rows gathered per Parquet row group: chunk-sized groups (~200 data, ~20 failure rows) cost more to
#: write and to read; bigger ones raise the memory spike
ROW_GROUP_ROWS = 500
COMPRESSION = "zstd"
#: a text column whose values average more bytes than this is written without a Parquet dictionary
DICTIONARY_MAX_BYTES = 64


def shard_name(kind: str, n: int) -> str:
    return f"{kind}/part-{n:05d}.parquet"


def shard_number(name: str | Path) -> int:
    return int(Path(name).stem.split("-")[1])


def _is_shard(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.startswith("part-") and base.endswith(".parquet")


def shard_names(storage: Storage, kind: str) -> list[str]:
    """The committed shards of one kind, in shard order."""
    return sorted((n for n in storage.list(kind) if _is_shard(n)), key=shard_number)


def next_segment_number(storage: Storage | Path, journal_dir: Path) -> int:
    """The number of the next journal segment: after every shard and every segment there is."""
    st = as_storage(storage)
    nums = [shard_number(n) for k in KINDS for n in shard_names(st, k)]
    nums += [segment_number(p) for p in list_segments(journal_dir)]
    return max(nums) + 1 if nums else 0


def has_rows(storage: Storage, journal_dir: Path) -> bool:
    """Whether any row was answered: a shard or a journal segment exists."""
    return any(shard_names(storage, k) for k in KINDS) or bool(list_segments(journal_dir))


def stage_table(storage: Storage, name: str, table: pa.Table) -> Path:
    """``table`` as a complete, fsynced Parquet file at ``name``'s staging path (not yet committed)."""
    tmp = storage.local_temp(name)
    try:
        pq.write_table(table, tmp, compression=COMPRESSION, use_dictionary=_dictionary_columns(table))
        fsync(tmp)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise storage_error(e, f"{name} in {storage.where}") from None
    return tmp


def write_table(storage: Storage, name: str, table: pa.Table) -> None:
    """``table`` committed as the shard ``name`` (replacing it), whole or not at all."""
    storage.commit(stage_table(storage, name, table), name)


class ShardWriter:
    """Turns journal segments into shards. Thread-safe to call from a worker thread (pure file work).

    Lines are parsed in chunks by ``pyarrow.json`` (C++, GIL released): no Python object per row or
    value. A record with a (non-null) ``error_kind`` is a failure row, any other a data row."""

    def __init__(self, storage: Storage | Path, data: pa.Schema, failures: pa.Schema):
        self.storage = as_storage(storage)
        self.schemas = {DATA: data, FAILURES: failures}
        self.shards_written = 0
        self._json_schema = _json_schema(data, failures)
        #: the minimality metrics, only for rows that have a revision (a generate stage's rows have none)
        self._metrics = "revision" in data.names

    def compact(self, segment: Path) -> dict[str, int]:
        """Segment → shards (committed), then delete the segment. Returns rows written per kind."""
        n = segment_number(segment)
        st = self.storage
        files = {k: _ShardFile(st, shard_name(k, n), self.schemas[k]) for k in KINDS}
        seen: set[Any] = set()
        try:
            for payloads in iter_segment_payloads(segment, CHUNK_ROWS):
                table = _drop_seen(_parse_chunk(payloads, self._json_schema), seen)
                for kind, rows in self._split(table).items():
                    files[kind].add(rows)
            written = [k for k, f in files.items() if f.finish()]
            for kind in written:
                files[kind].commit()
            delete_segment(segment)
        except (OSError, StorageError) as e:
            for f in files.values():
                f.abort()
            if isinstance(e, StorageError):
                raise
            raise storage_error(e, f"shards in {st.where}") from None
        self.shards_written += len(written)
        return {k: f.rows for k, f in files.items()}

    def _split(self, table: pa.Table) -> dict[str, pa.Table]:
        """Parsed rows → data and failure rows, each with exactly its shard's columns and types; data
        rows get their minimality metrics here when they have a revision (Arrow kernels, off the event loop)."""
        failed = table.column("error_kind").is_valid()
        data = table.filter(pc.invert(failed))
        if self._metrics:
            data = _with_metrics(data)
        parts = {DATA: data, FAILURES: table.filter(failed)}
        return {k: t.select(self.schemas[k].names).cast(self.schemas[k]) for k, t in parts.items()}

    def compact_leftovers(self, journal_dir: Path) -> int:
        """Redo every segment still in the journal (a crash left it). Returns how many."""
        segs = list_segments(journal_dir)
        for seg in segs:
            self.compact(seg)
        return len(segs)


class _ShardFile:
    """One shard being written to its temp path, in row groups of about ``ROW_GROUP_ROWS`` rows; the file
    is created by the first row group (a kind without rows gets no file)."""

    def __init__(self, storage: Storage, name: str, schema: pa.Schema):
        self.storage = storage
        self.name = name
        self.path: Path | None = None
        self.schema = schema
        self.rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._writer: pq.ParquetWriter | None = None

    def add(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def finish(self) -> bool:
        """Write what is pending and close (the commit fsyncs). False when there were no rows (no file)."""
        self._flush()
        if self._writer is None:
            return False
        self._writer.close()
        return True

    def commit(self) -> None:
        assert self.path is not None
        self.storage.commit(self.path, self.name)

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def _flush(self) -> None:
        if not self._pending:
            return
        if self._writer is None:
            self.path = self.storage.local_temp(self.name)
            self._writer = pq.ParquetWriter(self.path, self.schema, compression=COMPRESSION,
                                            use_dictionary=_dictionary_columns(self._pending[0]))
        self._writer.write_table(pa.concat_tables(self._pending))
        self.rows += self._pending_rows
        self._pending, self._pending_rows = [], 0


def _dictionary_columns(table: pa.Table) -> list[str]:
    """The columns worth Parquet's dictionary encoding: all but text (or binary) columns whose values
    average more than ``DICTIONARY_MAX_BYTES`` (answers, prompts, raw outputs: hashing kilobytes per row
    costs a third of a shard's write time, and their dictionary would be dropped at its size limit
    anyway). Readers see no difference."""
    rows = max(table.num_rows, 1)
    out = []
    for f, col in zip(table.schema, table.columns, strict=True):
        if (pa.types.is_string(f.type) or pa.types.is_large_string(f.type) or pa.types.is_binary(f.type)
                or pa.types.is_large_binary(f.type)):
            if col.nbytes > DICTIONARY_MAX_BYTES * rows:
                continue
        elif pa.types.is_nested(f.type):
            continue
        out.append(f.name)
    return out


def _with_metrics(data: pa.Table) -> pa.Table:
    """The metric columns computed from ``revision`` and ``student_solution`` (what the journal holds
    for them, if anything, is replaced)."""
    if not data.num_rows:
        return data
    metrics = batch_metrics(data.column("revision"), data.column("student_solution"))
    for name, values in metrics.items():
        data = data.set_column(data.schema.get_field_index(name), name, values)
    return data


def _json_schema(data: pa.Schema, failures: pa.Schema) -> pa.Schema:
    """Every column of both shard kinds, in types ``pyarrow.json`` can read (cast to the shards' after)."""
    fields = {f.name: f.with_type(_json_type(f.type)) for f in [*data, *failures]}
    return pa.schema(list(fields.values()))


def _json_type(t: pa.DataType) -> pa.DataType:
    """``t``, or the nearest type ``pyarrow.json`` reads (it has no half floats and no large lists)."""
    if pa.types.is_float16(t):
        return pa.float64()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(t.value_field.with_type(_json_type(t.value_type)))
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_json_type(f.type)) for f in t])
    return t


def _parse_chunk(payloads: list[bytes], schema: pa.Schema) -> pa.Table:
    """Journal payloads → a table of ``schema`` (absent keys null, unknown keys ignored), in order.

    Checksummed lines hold what ``encode_record`` wrote, so ``pyarrow.json`` reads them; should it
    fail all the same, the chunk is parsed line by line and the lines orjson cannot read are dropped."""
    buf = b"\n".join(payloads)
    try:
        table = pajson.read_json(
            pa.BufferReader(buf),  # zero-copy, read without calling back into Python
            read_options=pajson.ReadOptions(use_threads=False, block_size=len(buf) + 1),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
        table.validate(full=True)  # pyarrow.json does not check that strings are UTF-8; orjson does
        return table
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.Table.from_pylist(_loads_intact(payloads), schema=schema)


def _loads_intact(payloads: list[bytes]) -> list[dict[str, Any]]:
    """The payloads orjson can parse, parsed; the others dropped."""
    records: list[dict[str, Any]] = []
    for p in payloads:
        try:
            records.append(orjson.loads(p))
        except orjson.JSONDecodeError:
            continue
    return records


def _drop_seen(table: pa.Table, seen: set[Any]) -> pa.Table:
    """Rows whose ``row_id`` is not in ``seen`` nor earlier in ``table`` (defensive: one row per row_id
    per segment, whichever its kind; the first wins); adds the new ids to ``seen``."""
    keep: list[bool] = []
    for rid in table.column("row_id").to_pylist():
        keep.append(rid not in seen)
        seen.add(rid)
    return table if all(keep) else table.filter(pa.array(keep, pa.bool_()))
