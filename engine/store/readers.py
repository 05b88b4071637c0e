"""Reading a run's output with the supersession rules applied (L3). Reads only: nothing here writes.

Rules every reader follows (shards are immutable):
* a row_id present in ``data/`` is done; any failure row for it is superseded;
* among failure rows of one row_id, the one in the highest-numbered shard is current.

:func:`engine.store.rewrite.drop_superseded_failures` rewrites failure shards without superseded rows, so
that plain ``load_dataset("parquet", data_dir=RUN/failures)`` agrees with these rules too.

Every function takes the run's :class:`Storage` (a local run directory's path is accepted too).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.core.errors import RETRYABLE_KINDS, RunStateError
from engine.records import failure_schema, other_schema
from engine.source import DoneSet
from engine.store.fs import Storage, as_storage
from engine.store.shards import DATA, FAILURES, shard_names, shard_number

Where = Storage | Path


def _unreadable(st: Storage, name: str, e: BaseException) -> RunStateError:
    return RunStateError(
        f"shard {st.where}/{name} is corrupt or unreadable ({str(e).splitlines()[0][:120] if str(e) else e!r}); "
        "move it away and run again to re-request its rows"
    )


def read_table(where: Where, name: str, columns: list[str] | None = None) -> pa.Table:
    """One shard (or some of its columns)."""
    # ParquetFile, not read_table: read_table loads pyarrow.dataset, whose import alone costs a run
    # process ~30 MB of memory (and it is slower per file)
    st = as_storage(where)
    try:
        with st.open_input(name) as src, pq.ParquetFile(src) as f:
            return f.read(columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(st, name, e) from None


def shard_schema(where: Where, name: str) -> pa.Schema:
    st = as_storage(where)
    try:
        with st.open_input(name) as src:
            return pq.read_schema(src)
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(st, name, e) from None


def iter_batches(where: Where, name: str, columns: list[str] | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """A shard's record batches, only ``columns`` (None: all); a shard without one of them is refused."""
    st = as_storage(where)
    try:
        with st.open_input(name) as src, pq.ParquetFile(src) as pf:
            missing = [c for c in columns or [] if c not in pf.schema_arrow.names]
            if missing:
                raise RunStateError(
                    f"shard {st.where}/{name} lacks column(s) {', '.join(missing)}; it was not written by this "
                    "engine version"
                )
            yield from pf.iter_batches(batch_size=batch_rows, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(st, name, e) from None


def num_rows(where: Where, name: str) -> int:
    """A shard's row count, from its footer only."""
    st = as_storage(where)
    try:
        with st.open_input(name) as src, pq.ParquetFile(src) as f:
            return int(f.metadata.num_rows)
    except (pa.ArrowException, OSError):
        raise RunStateError(
            f"shard {st.where}/{name} is corrupt; move it away and run again to re-request its rows"
        ) from None


def _concat_ids(cols: list[pa.ChunkedArray]) -> pa.Array | None:
    if not cols:
        return None
    return pa.concat_arrays([c.combine_chunks() for c in cols])


def _names(st: Storage, kind: str, below: int | None) -> list[str]:
    names = shard_names(st, kind)
    return names if below is None else [n for n in names if shard_number(n) < below]


def data_ids(where: Where, *, below: int | None = None) -> pa.Array | None:
    """Every row_id in data/ (duplicates kept), None when there is no data shard. ``below``: only the shards
    numbered below it."""
    st = as_storage(where)
    return _concat_ids([read_table(st, n, ["row_id"]).column("row_id") for n in _names(st, DATA, below)])


def superseded(where: Where, *, below: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(failure shard, keep-mask of its rows), newest shard first: the supersession rules, applied.
    ``below``: the rules applied to the shards numbered below it only (the others are not there)."""
    st = as_storage(where)
    done = data_ids(st, below=below)
    seen: set[Any] = set(done.to_pylist()) if done is not None else set()
    for name in sorted(_names(st, FAILURES, below), key=shard_number, reverse=True):
        ids = read_table(st, name, ["row_id"]).column("row_id").to_pylist()
        keep = np.fromiter((rid not in seen for rid in ids), dtype=bool, count=len(ids))
        seen.update(ids)
        yield name, keep


def current_failures(where: Where, columns: list[str] | None = None) -> pa.Table | None:
    """Failure rows that are current (not superseded), newest shard first; None without failure shards."""
    st = as_storage(where)
    tables = []
    for name, keep in superseded(st):
        t = read_table(st, name, columns)
        tables.append(t if keep.all() else t.filter(pa.array(keep)))
    return pa.concat_tables(tables) if tables else None


def done_ids(where: Where, *, retry_failed: bool = False) -> DoneSet:
    """Rows not to request again: data rows, and failures (only final ones with ``retry_failed``)."""
    st = as_storage(where)
    arrays = []
    d = data_ids(st)
    if d is not None:
        arrays.append(d)
    f = current_failures(st, ["row_id", "error_kind"])
    if f is not None and f.num_rows:
        if retry_failed:
            f = f.filter(pc.invert(pc.is_in(f.column("error_kind"), value_set=pa.array(sorted(RETRYABLE_KINDS)))))
        arrays.append(f.column("row_id").combine_chunks())
    ds = DoneSet()
    if arrays:
        ds.add_array(pa.concat_arrays(arrays))
    return ds


def counts(where: Where) -> dict[str, Any]:
    """``{"data", "failed", "failure_kinds"}`` straight from the shards (footers only for data)."""
    st = as_storage(where)
    data_rows = sum(num_rows(st, n) for n in shard_names(st, DATA))
    f = current_failures(st, ["row_id", "error_kind"])
    kinds: dict[str, int] = {}
    if f is not None and f.num_rows:
        for k, n in zip(*np.unique(np.array(f.column("error_kind").to_pylist(), dtype=object), return_counts=True),
                        strict=True):
            kinds[str(k)] = int(n)
    return {"data": data_rows, "failed": sum(kinds.values()), "failure_kinds": kinds}


def load_results(run_dir: str | os.PathLike[str], *, failures: bool = False) -> Any:  # a datasets.Dataset
    """A run's revised rows (or its current failure rows) as a ``datasets.Dataset``.

    With ``failures=True`` a run without failures gives an empty Dataset with the failure columns."""
    import datasets  # lazy

    st = as_storage(Path(run_dir))
    if failures:
        t = current_failures(st)
        if t is None:
            t = _failure_schema(st).empty_table()
        return datasets.Dataset(t)
    names = shard_names(st, DATA)
    if not names:
        raise RunStateError(f"{run_dir} has no data shards yet; run the job first (clair run CONFIG)")
    return datasets.Dataset(pa.concat_tables([read_table(st, n) for n in names]))


def _failure_schema(st: Storage) -> pa.Schema:
    """The run's failure-row schema, from a data shard's (without one: int64 row ids, no kept columns)."""
    names = shard_names(st, DATA)
    if not names:
        return failure_schema(pa.int64(), [])
    return other_schema(shard_schema(st, names[0]), FAILURES)
