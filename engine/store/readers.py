"""Reading a run's output with the supersession rules applied (L3).

Rules every reader follows (shards are immutable):
* a row_id present in ``data/`` is done; any failure row for it is superseded;
* among failure rows of one row_id, the one in the highest-numbered shard is current.

``compact_failures`` rewrites failure shards without superseded rows (atomic per shard), so that plain
``load_dataset("parquet", data_dir=RUN/failures)`` agrees with these rules too.
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
from engine.source import DoneSet
from engine.store.shards import DATA, FAILURES, fsync_dir, list_shards, shard_number


def _read(path: Path, columns: list[str] | None = None) -> pa.Table:
    # ParquetFile, not read_table: read_table loads pyarrow.dataset, whose import alone costs a run
    # process ~30 MB of memory (and it is slower per file)
    try:
        with pq.ParquetFile(path) as f:
            return f.read(columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise RunStateError(
            f"shard {path} is corrupt or unreadable ({str(e).splitlines()[0][:120]}); "
            "move it away and run again to re-request its rows"
        ) from None


def _concat_ids(cols: list[pa.ChunkedArray]) -> pa.Array | None:
    if not cols:
        return None
    return pa.concat_arrays([c.combine_chunks() for c in cols])


def data_ids(run_dir: Path) -> pa.Array | None:
    return _concat_ids([_read(p, ["row_id"]).column("row_id") for p in list_shards(run_dir, DATA)])


def _superseded_filter(run_dir: Path, shards: list[Path]) -> Iterator[tuple[Path, np.ndarray]]:
    """Yield (shard, table-of-ids, keep-mask) newest shard first, applying the supersession rules."""
    done = data_ids(run_dir)
    seen: set[Any] = set(done.to_pylist()) if done is not None else set()
    for p in sorted(shards, key=shard_number, reverse=True):
        ids = _read(p, ["row_id"]).column("row_id").to_pylist()
        keep = np.fromiter((rid not in seen for rid in ids), dtype=bool, count=len(ids))
        seen.update(ids)
        yield p, keep


def current_failures(run_dir: Path, columns: list[str] | None = None) -> pa.Table | None:
    """Failure rows that are current (not superseded), newest shard first."""
    shards = list_shards(run_dir, FAILURES)
    if not shards:
        return None
    tables = []
    for p, keep in _superseded_filter(run_dir, shards):
        t = _read(p, columns)
        tables.append(t if keep.all() else t.filter(pa.array(keep)))
    return pa.concat_tables(tables)


def done_set(run_dir: Path, *, retry_failed: bool = False) -> DoneSet:
    """Rows not to request again: data rows, and failures (only final ones with ``retry_failed``)."""
    arrays = []
    d = data_ids(run_dir)
    if d is not None:
        arrays.append(d)
    f = current_failures(run_dir, ["row_id", "error_kind"])
    if f is not None and f.num_rows:
        if retry_failed:
            f = f.filter(pc.invert(pc.is_in(f.column("error_kind"), value_set=pa.array(sorted(RETRYABLE_KINDS)))))
        arrays.append(f.column("row_id").combine_chunks())
    ds = DoneSet()
    if arrays:
        ds.add_array(pa.concat_arrays(arrays))
    return ds


def count_rows(run_dir: Path) -> dict[str, Any]:
    """Counts straight from the shards (metadata only for data)."""
    data_rows = 0
    for p in list_shards(run_dir, DATA):
        try:
            data_rows += pq.ParquetFile(p).metadata.num_rows
        except (pa.ArrowException, OSError):
            raise RunStateError(f"shard {p} is corrupt; move it away and run again to re-request its rows") from None
    f = current_failures(run_dir, ["row_id", "error_kind"])
    kinds: dict[str, int] = {}
    if f is not None and f.num_rows:
        for k, n in zip(*np.unique(np.array(f.column("error_kind").to_pylist(), dtype=object), return_counts=True),
                        strict=True):
            kinds[str(k)] = int(n)
    return {"data": data_rows, "failed": sum(kinds.values()), "failure_kinds": kinds}


def compact_failures(run_dir: Path) -> int:
    """Rewrite failure shards without superseded rows (atomic per shard). Returns rows removed."""
    removed = 0
    for p, keep in list(_superseded_filter(run_dir, list_shards(run_dir, FAILURES))):
        if keep.all():
            continue
        removed += int((~keep).sum())
        if not keep.any():
            p.unlink()
        else:
            tmp = p.with_suffix(".parquet.tmp")
            pq.write_table(_read(p).filter(pa.array(keep)), tmp, compression="zstd")
            os.replace(tmp, p)
        fsync_dir(p.parent)
    return removed


def load_results(run_dir: str | os.PathLike[str], *, failures: bool = False) -> Any:  # a datasets.Dataset
    """A run's revised rows (or its current failure rows) as a ``datasets.Dataset``."""
    import datasets  # lazy

    run = Path(run_dir)
    if failures:
        t = current_failures(run)
        if t is None:
            return datasets.Dataset(pa.table({}))
        return datasets.Dataset(t)
    shards = list_shards(run, DATA)
    if not shards:
        raise RunStateError(f"{run} has no data shards yet; run the job first (clair run CONFIG)")
    return datasets.Dataset(pa.concat_tables([_read(p) for p in shards]))
