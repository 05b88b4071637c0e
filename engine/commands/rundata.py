"""A run's committed data rows as ``clair export`` and ``clair stats`` read them (L4, shared by both).

Every look into the run directory that export and stats make goes through the store's read-only view
(:class:`engine.store.RunView`) and the few functions here: the warnings about a running job or an
uncompacted journal, the data rows' record batches and the row_ids written twice. The refusal of a
generation-only run (its data rows are student answers: nothing to pair) is here too, for export, stats
and show alike. Beside them sit the per-batch helpers both
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

from engine.core.errors import RunStateError, UserError
from engine.minimality import jaccard, length_ratio, levenshtein
from engine.store import DATA, RunView

__all__ = [
    "BATCH_ROWS",
    "METRICS",
    "Dedup",
    "ExportError",
    "GenerationOnlyRun",
    "Metrics",
    "as_bool",
    "batches",
    "check_thresholds",
    "id_type",
    "identical",
    "kinds",
    "metric",
    "num",
    "generation_only",
    "open_run",
    "require_revisions",
    "run_warnings",
    "summarize",
]

METRICS = ("jaccard", "levenshtein", "length_ratio")
#: rows read per record batch (memory per batch ~ this × a row's text)
BATCH_ROWS = 4096



class ExportError(UserError):
    """An export cannot be done as asked (bad option, unusable output path)."""


class GenerationOnlyRun(UserError):
    """A command that needs revisions was given a generation-only run (its rows are student answers)."""


def check_thresholds(max_distance: int | None, min_jaccard: float | None) -> None:
    """The ``--max-distance`` / ``--min-jaccard`` values both commands take, checked the same way."""
    if max_distance is not None and max_distance < 0:
        raise ExportError("--max-distance must be >= 0 (a Levenshtein distance in characters)")
    if min_jaccard is not None and not 0.0 <= min_jaccard <= 1.0:
        raise ExportError("--min-jaccard must be between 0 and 1 (a token Jaccard similarity)")


# ---------------------------------------------------------------------------- the run directory


def open_run(run_dir: Path) -> RunView:
    """The run, read-only; a :class:`RunStateError` when ``run_dir`` is not a run directory."""
    return RunView.open(run_dir)


def generation_only(view: RunView) -> bool:
    """A run of the generate stage alone (``generate:`` without top-level ``endpoints:``): its data rows are
    student answers (``student_solution``, ``student_model``, ...), with no revision. Its fingerprint has the
    generate stage's keys only; a run made before fingerprints said so is told by its data rows' columns."""
    fp = view.manifest.get("fingerprint") or {}
    if "generate" in fp:
        return "models" not in fp
    schema = view.schema(DATA)
    return schema is not None and "revision" not in schema.names and "student_model" in schema.names


def require_revisions(view: RunView, what: str) -> None:
    """A :class:`GenerationOnlyRun` error (one line naming what to do instead) when ``view`` is a
    generation-only run; ``what`` is the command, e.g. ``"clair export"``."""
    if not generation_only(view):
        return
    data = view.dir / DATA
    raise GenerationOnlyRun(
        f"{view.dir} is a generation-only run (its rows are student answers, no revisions); {what} needs "
        f"revisions. Revise the answers with a run whose input.path is {data} and input.columns "
        "{task: task, student_solution: student_solution}, or read them as they are with "
        f"datasets.load_dataset(\"parquet\", data_files=\"{data}/*.parquet\")"
    )


def run_warnings(view: RunView) -> list[str]:
    """Why the committed shards may not be the whole run: a running job, uncompacted journal segments."""
    out = []
    if view.active():
        out.append(f"{view.dir} is being written by a running job; only the shards committed so far are read")
    segs = view.journal_segments()
    if segs:
        out.append(
            f"{len(segs)} journal segment(s) in {view.dir} are not compacted into shards yet and are not read; "
            "resume the run (clair run CONFIG) to compact them"
        )
    return out


def id_type(view: RunView) -> pa.DataType:
    """The Arrow type of the data shards' ``row_id`` column (the run must have data shards)."""
    schema = view.schema(DATA)
    if schema is None:
        raise RunStateError(f"{view.dir} has no data shards yet; run the job first (clair run CONFIG)")
    return schema.field("row_id").type


def batches(view: RunView, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """Every data row's ``columns``, :data:`BATCH_ROWS` rows at a time, in shard order."""
    return view.iter_batches(DATA, columns, BATCH_ROWS)


def _duplicate_ids(view: RunView) -> pa.Array | None:
    """row_ids present more than once in data/ (normally none); one pass over the id column only."""
    ids = view.data_ids()
    if ids is None or len(ids) == 0:
        return None
    vc = pc.value_counts(ids)
    dups = vc.field("values").filter(pc.greater(vc.field("counts"), 1))
    return dups if len(dups) else None


class Dedup:
    """Keeps the first occurrence (in shard order) of each row_id that data/ holds more than once."""

    def __init__(self, view: RunView):
        self.dups = _duplicate_ids(view)
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
