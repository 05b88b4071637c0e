"""A run's committed data rows as ``clair export`` and ``clair stats`` read them (L4, shared by both).

Every look into the run directory that export and stats make goes through the few functions here:
the manifest check, the warnings about a running job or an uncompacted journal, the list of data
shards and their record batches, the row_ids written twice, and the failure counts (with the
supersession rules of :mod:`engine.store.readers`). Beside them sit the per-batch helpers both
commands apply to those rows (the minimality metric columns, computed where a shard left them null;
exact percentiles; the identical-revision test) and the two small number formats their reports share.
Nothing here writes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.core.errors import RunStateError, UserError
from engine.minimality import jaccard, length_ratio, levenshtein
from engine.store import readers as results
from engine.store.journal import list_segments
from engine.store.manifest import is_active, read_manifest
from engine.store.shards import DATA, list_shards

__all__ = [
    "BATCH_ROWS",
    "METRICS",
    "Dedup",
    "ExportError",
    "Metrics",
    "as_bool",
    "check_run",
    "check_thresholds",
    "data_shards",
    "failure_counts",
    "identical",
    "kinds",
    "metric",
    "num",
    "read_batches",
    "reparse_pending",
    "shard_id_type",
    "run_warnings",
    "summarize",
]

METRICS = ("jaccard", "levenshtein", "length_ratio")
#: rows read per record batch (memory per batch ~ this × a row's text)
BATCH_ROWS = 4096

_INTENT = "reparse-intent.json"  # engine.commands.reparse.INTENT (not imported: reparse pulls in the parser)


class ExportError(UserError):
    """An export cannot be done as asked (bad option, unusable output path)."""


def check_thresholds(max_distance: int | None, min_jaccard: float | None) -> None:
    """The ``--max-distance`` / ``--min-jaccard`` values both commands take, checked the same way."""
    if max_distance is not None and max_distance < 0:
        raise ExportError("--max-distance must be >= 0 (a Levenshtein distance in characters)")
    if min_jaccard is not None and not 0.0 <= min_jaccard <= 1.0:
        raise ExportError("--min-jaccard must be between 0 and 1 (a token Jaccard similarity)")


# ---------------------------------------------------------------------------- the run directory


def check_run(run_dir: Path) -> dict[str, Any]:
    """The run's manifest; a :class:`RunStateError` when ``run_dir`` is not a run directory."""
    manifest = read_manifest(run_dir) if run_dir.is_dir() else None
    if manifest is None:
        raise RunStateError(f"{run_dir} is not a clair run directory (no manifest.json); check the path")
    return manifest


def run_warnings(run_dir: Path) -> list[str]:
    """Why the committed shards may not be the whole run: a running job, uncompacted journal segments."""
    out = []
    if is_active(run_dir):
        out.append(f"{run_dir} is being written by a running job; only the shards committed so far are read")
    segs = list_segments(run_dir / "journal")
    if segs:
        out.append(
            f"{len(segs)} journal segment(s) in {run_dir} are not compacted into shards yet and are not read; "
            "resume the run (clair run CONFIG) to compact them"
        )
    return out


def reparse_pending(run_dir: Path) -> bool:
    """True while an interrupted ``clair reparse`` has left its intent file in the run."""
    return (run_dir / _INTENT).exists()


def data_shards(run_dir: Path) -> list[Path]:
    """The committed data shards, in shard order."""
    return list_shards(run_dir, DATA)


def failure_counts(run_dir: Path) -> tuple[int, dict[str, int]]:
    """(failed rows, by failure kind) after supersession."""
    counts = results.count_rows(run_dir)
    return counts["failed"], counts["failure_kinds"]


def shard_id_type(shard: Path) -> pa.DataType:
    """The Arrow type of a shard's ``row_id`` column."""
    try:
        return pq.read_schema(shard).field("row_id").type
    except (pa.ArrowException, OSError, KeyError) as e:
        raise RunStateError(f"shard {shard} is corrupt or unreadable ({e}); move it away") from None


def read_batches(path: Path, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """A shard's ``columns``, ``batch_rows`` rows at a time; a bad shard is one :class:`RunStateError`."""
    try:
        pf = pq.ParquetFile(path)
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise RunStateError(
                f"shard {path} lacks column(s) {', '.join(missing)}; it was not written by this engine version"
            )
        yield from pf.iter_batches(batch_size=batch_rows, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise RunStateError(
            f"shard {path} is corrupt or unreadable ({str(e).splitlines()[0][:120]}); "
            "move it away and run again to re-request its rows"
        ) from None


def _duplicate_ids(run_dir: Path) -> pa.Array | None:
    """row_ids present more than once in data/ (normally none); one pass over the id column only."""
    ids = results.data_ids(run_dir)
    if ids is None or len(ids) == 0:
        return None
    vc = pc.value_counts(ids)
    dups = vc.field("values").filter(pc.greater(vc.field("counts"), 1))
    return dups if len(dups) else None


class Dedup:
    """Keeps the first occurrence (in shard order) of each row_id that data/ holds more than once."""

    def __init__(self, run_dir: Path):
        self.dups = _duplicate_ids(run_dir)
        self.seen: set[Any] = set()

    def repeated(self, ids: pa.Array) -> np.ndarray:
        n = len(ids)
        out = np.zeros(n, dtype=bool)
        if self.dups is None:
            return out
        cand = np.flatnonzero(pc.is_in(ids, value_set=self.dups).to_numpy(zero_copy_only=False))
        for i in cand:
            rid = ids[int(i)].as_py()
            if rid in self.seen:
                out[i] = True
            else:
                self.seen.add(rid)
        return out


# ---------------------------------------------------------------------------- per-batch helpers


def as_bool(arr: pa.Array | pa.ChunkedArray, null: bool) -> np.ndarray:
    """A boolean Arrow column as a numpy mask, nulls read as ``null``."""
    return np.asarray(pc.fill_null(arr, null).to_numpy(zero_copy_only=False), dtype=bool)


def identical(revision: pa.Array, original: pa.Array) -> np.ndarray:
    """revision == original, ignoring whitespace at both ends."""
    return as_bool(pc.equal(pc.utf8_trim_whitespace(revision), pc.utf8_trim_whitespace(original)), False)


_METRIC_FN = {"jaccard": jaccard, "levenshtein": levenshtein, "length_ratio": length_ratio}


def metric(batch: pa.RecordBatch, name: str) -> np.ndarray:
    """A metric column as float64 (nan = unknown); values missing in the shard are computed."""
    arr = np.array(batch.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
    missing = np.flatnonzero(np.isnan(arr))
    if len(missing):
        rev, orig = batch.column("revision"), batch.column("student_solution")
        for i in missing:
            r, o = rev[int(i)].as_py(), orig[int(i)].as_py()
            if r is not None and o is not None:
                v = _METRIC_FN[name](r, o)
                arr[i] = np.nan if v is None else v
    return arr


class Metrics:
    """Collects the metric columns (8 bytes per row and metric) for exact percentiles."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}

    def add(self, name: str, values: np.ndarray) -> None:
        self.parts[name].append(values[~np.isnan(values)])

    def summary(self) -> dict[str, dict[str, Any]]:
        return {m: summarize(np.concatenate(p) if p else np.empty(0)) for m, p in self.parts.items()}


def summarize(values: np.ndarray) -> dict[str, Any]:
    """count, mean, p10, p50, p90, min, max of the non-nan values (None when there are none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if not len(v):
        return {"count": 0, "mean": None, "p10": None, "p50": None, "p90": None, "min": None, "max": None}
    p10, p50, p90 = (float(x) for x in np.percentile(v, [10, 50, 90]))
    return {"count": int(len(v)), "mean": float(v.mean()), "p10": p10, "p50": p50, "p90": p90,
            "min": float(v.min()), "max": float(v.max())}


# ---------------------------------------------------------------------------- report formats


def num(v: float | None, distance: bool = False) -> str:
    """A metric figure: ``-`` when unknown, one decimal for a distance, three otherwise."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.1f}" if distance else f"{v:.3f}"


def kinds(d: dict[str, int]) -> str:
    """``{"a": 1, "b": 2}`` → ``a 1, b 2`` (sorted by name)."""
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items()))
