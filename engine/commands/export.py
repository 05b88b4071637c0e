"""``clair export``: a run's training-ready preference pairs as one Parquet file (L4).

It reads only the committed data shards (through :mod:`engine.commands.rundata`, with the supersession
rules of :mod:`engine.store.readers` for the failure counts) and streams them record batch by record
batch, so memory stays flat whatever the run's size; no request is ever sent. It selects the rows,
builds the pairs in the chosen format, writes them atomically (a temp name, fsynced, then renamed) and
prints the counts; with ``--push-to-hub`` it then hands the file to :mod:`engine.commands.hub` with the
card of :mod:`engine.commands.card`.

Export formats:

* ``trl`` — TRL's conversational explicit-prompt preference form::

      prompt   [{"content": TASK, "role": "user"}]
      chosen   [{"content": REVISION, "role": "assistant"}]
      rejected [{"content": ORIGINAL, "role": "assistant"}]
      rational str
      row_id   the run's row id (int64 or string)

* ``ultrafeedback`` — the layout of ``ContextualAI/ultrafeedback_clair_32k``: ``prompt`` (str),
  ``chosen``/``rejected`` full conversations ``[user turn, assistant turn]``, ``rational`` (str).

Which rows: status ``ok`` only (``truncated``/``worsened`` with ``include_flagged``); failures never;
revisions identical to the original (compared with surrounding whitespace trimmed) only with
``keep_identical``; then the ``max_distance`` (Levenshtein) and ``min_jaccard`` filters. Every row left
out is counted under the first reason that applies, in the order of :data:`REASONS`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.commands import rundata
from engine.commands.card import dataset_card
from engine.commands.hub import check_hub_target, push_to_hub
from engine.commands.rundata import ExportError
from engine.core.errors import RunStateError
from engine.store import RunView, atomic_output

__all__ = [
    "FORMATS",
    "REASONS",
    "ExportError",
    "ExportOptions",
    "ExportResult",
    "build_pairs",
    "cmd_export",
    "export_run",
    "format_export",
]

FORMATS = ("trl", "ultrafeedback")
#: why a data row is left out of an export, in the order the checks are applied
REASONS = ("duplicate", "empty", "flagged", "identical", "max_distance", "min_jaccard")

#: rows / bytes buffered before a Parquet row group is written (whichever comes first)
ROW_GROUP_ROWS = 16384
ROW_GROUP_BYTES = 64 << 20

MESSAGE = pa.struct([pa.field("content", pa.string()), pa.field("role", pa.string())])
MESSAGES = pa.list_(MESSAGE)


# ---------------------------------------------------------------------------- options and results


@dataclass(frozen=True)
class ExportOptions:
    format: str = "trl"
    include_flagged: bool = False
    keep_identical: bool = False
    max_distance: int | None = None
    min_jaccard: float | None = None

    def check(self) -> None:
        if self.format not in FORMATS:
            raise ExportError(f"--format {self.format!r} is unknown; use one of: {', '.join(FORMATS)}")
        rundata.check_thresholds(self.max_distance, self.min_jaccard)


@dataclass
class ExportResult:
    out: str
    format: str
    rows_exported: int = 0
    rows_read: int = 0
    left_out: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    flagged_left_out: dict[str, int] = field(default_factory=dict)  # by status
    flagged_kept: dict[str, int] = field(default_factory=dict)  # by status (with include_flagged)
    failed: int = 0
    failure_kinds: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # of the exported rows
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _blank(col: pa.Array) -> np.ndarray:
    """True where a text is null or only whitespace."""
    return rundata.as_bool(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0), True)


# ---------------------------------------------------------------------------- building pairs


def messages(contents: list[pa.Array], roles: list[str]) -> pa.ListArray:
    """A list<struct<content, role>> column: row i holds ``(contents[k][i], roles[k])`` for each k."""
    n, k = len(contents[0]), len(roles)
    cols = [c.cast(pa.string()) for c in contents]
    if k == 1:
        content = cols[0]
    else:  # interleave: row i's messages are i, n+i, 2n+i, ... of the stacked columns
        idx = (np.arange(n, dtype=np.int64)[:, None] + np.arange(k, dtype=np.int64)[None, :] * n).ravel()
        content = pa.concat_arrays(cols).take(pa.array(idx))
    role = pa.array(roles * n, pa.string())
    values = pa.StructArray.from_arrays([content, role], fields=list(MESSAGE))
    offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, values, type=MESSAGES)


def output_schema(fmt: str, row_id_type: pa.DataType) -> pa.Schema:
    if fmt == "trl":
        return pa.schema([("prompt", MESSAGES), ("chosen", MESSAGES), ("rejected", MESSAGES),
                          ("rational", pa.string()), ("row_id", row_id_type)])
    return pa.schema([("prompt", pa.string()), ("chosen", MESSAGES), ("rejected", MESSAGES),
                      ("rational", pa.string())])


def build_pairs(batch: pa.RecordBatch, fmt: str, schema: pa.Schema) -> pa.Table:
    """Rows of a data shard (already selected) → the export layout."""
    task, rev, orig = batch.column("task"), batch.column("revision"), batch.column("student_solution")
    rational = pc.fill_null(batch.column("rational").cast(pa.string()), "")
    if fmt == "trl":
        cols = [messages([task], ["user"]), messages([rev], ["assistant"]), messages([orig], ["assistant"]),
                rational, batch.column("row_id")]
    else:
        cols = [task.cast(pa.string()), messages([task, rev], ["user", "assistant"]),
                messages([task, orig], ["user", "assistant"]), rational]
    return pa.Table.from_arrays(cols, schema=schema)


def select(batch: pa.RecordBatch, opts: ExportOptions, repeated: np.ndarray, res: ExportResult) -> np.ndarray:
    """The keep-mask of one batch; counts every row left out under its first reason."""
    n = batch.num_rows
    remaining = np.ones(n, dtype=bool)
    status = batch.column("status")
    ok = rundata.as_bool(pc.equal(status, "ok"), False)

    def drop(reason: str, cond: np.ndarray) -> np.ndarray:
        hit = remaining & cond
        res.left_out[reason] += int(hit.sum())
        remaining[hit] = False
        return hit

    drop("duplicate", repeated)
    drop("empty", _blank(batch.column("task")) | _blank(batch.column("revision"))
         | _blank(batch.column("student_solution")))
    statuses = status.to_pylist()
    if opts.include_flagged:
        for i in np.flatnonzero(remaining & ~ok):
            res.flagged_kept[str(statuses[i])] = res.flagged_kept.get(str(statuses[i]), 0) + 1
    else:
        for i in np.flatnonzero(drop("flagged", ~ok)):
            res.flagged_left_out[str(statuses[i])] = res.flagged_left_out.get(str(statuses[i]), 0) + 1
    if not opts.keep_identical:
        drop("identical", rundata.identical(batch.column("revision"), batch.column("student_solution")))
    if opts.max_distance is not None:
        lev = rundata.metric(batch, "levenshtein")
        drop("max_distance", np.nan_to_num(lev, nan=-np.inf) > opts.max_distance)
    if opts.min_jaccard is not None:
        jac = rundata.metric(batch, "jaccard")
        drop("min_jaccard", np.nan_to_num(jac, nan=np.inf) < opts.min_jaccard)
    return remaining


# ---------------------------------------------------------------------------- export

_EXPORT_COLUMNS = ["row_id", "task", "student_solution", "revision", "rational", "status", *rundata.METRICS]


def default_out(run_dir: Path, fmt: str) -> Path:
    return run_dir / f"export-{fmt}.parquet"


def _check_out(view: RunView, out: Path) -> None:
    if out.is_dir():
        raise ExportError(f"--out {out} is a directory; give a file name such as {out / 'pairs.parquet'}")
    kind = view.folder_holding(out)
    if kind is not None:
        raise ExportError(f"--out {out} is inside the run's {kind}/ folder; write the export elsewhere")


def export_run(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
               opts: ExportOptions | None = None) -> ExportResult:
    """Write a run's pairs as one Parquet file (atomically); returns the counts. Streams batch by batch."""
    run = Path(run_dir)
    opts = opts or ExportOptions()
    opts.check()
    view = rundata.open_run(run)
    rundata.require_revisions(view, "clair export")
    if view.pending_rewrite():
        raise RunStateError(
            f"{run} has an interrupted `clair reparse`; run `clair reparse {run}` again to finish it, then export"
        )
    schema = output_schema(opts.format, rundata.id_type(view))
    out_path = Path(out) if out is not None else default_out(run, opts.format)
    _check_out(view, out_path)
    res = ExportResult(out=str(out_path), format=opts.format, options=dict(opts.__dict__))
    dedup = rundata.Dedup(view)
    metrics = rundata.Metrics()

    writer: pq.ParquetWriter | None = None
    pending: list[pa.Table] = []
    pending_rows = pending_bytes = 0

    def flush() -> None:
        nonlocal pending_rows, pending_bytes
        if pending:
            assert writer is not None
            writer.write_table(pa.concat_tables(pending))
            pending.clear()
            pending_rows = pending_bytes = 0

    try:
        with atomic_output(out_path, f"the export {out_path}") as tmp:
            writer = pq.ParquetWriter(tmp, schema, compression="zstd")
            for batch in rundata.batches(view, _EXPORT_COLUMNS):
                res.rows_read += batch.num_rows
                keep = select(batch, opts, dedup.repeated(batch.column("row_id")), res)
                if not keep.any():
                    continue
                kept = batch.filter(pa.array(keep)) if not keep.all() else batch
                for m in rundata.METRICS:
                    metrics.add(m, rundata.metric(kept, m))
                pairs = build_pairs(kept, opts.format, schema)
                pending.append(pairs)
                pending_rows += pairs.num_rows
                pending_bytes += pairs.nbytes
                res.rows_exported += pairs.num_rows
                if pending_rows >= ROW_GROUP_ROWS or pending_bytes >= ROW_GROUP_BYTES:
                    flush()
            flush()
            writer.close()
            writer = None
    finally:
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
    counts = view.counts()
    res.failed, res.failure_kinds = counts["failed"], counts["failure_kinds"]
    res.metrics = metrics.summary()
    return res


def format_export(res: ExportResult) -> str:
    o = res.options
    lines = [f"exported {res.rows_exported} pairs ({res.format} layout) to {res.out}"]
    left = res.left_out
    labels = {
        "duplicate": "duplicate row_id (first kept)",
        "empty": "empty task, revision or original",
        "flagged": f"flagged ({rundata.kinds(res.flagged_left_out)}; --include-flagged keeps them)",
        "identical": "identical to the original (--keep-identical keeps them)",
        "max_distance": f"Levenshtein distance over --max-distance {o.get('max_distance')}",
        "min_jaccard": f"token Jaccard under --min-jaccard {o.get('min_jaccard')}",
    }
    parts = [f"{left[r]} {labels[r]}" for r in REASONS if left.get(r)]
    lines.append(f"left out: {sum(left.values())}" + (f" = {'; '.join(parts)}" if parts else ""))
    if res.flagged_kept:
        lines.append(f"flagged rows kept (--include-flagged): {rundata.kinds(res.flagged_kept)}")
    if res.failed:
        lines.append(f"failed rows (never exported): {res.failed} ({rundata.kinds(res.failure_kinds)})")
    if res.rows_exported == 0:
        lines.append("warning: the export is empty; check the filters and `clair stats RUN_DIR`")
    return "\n".join(lines)


def cmd_export(args: argparse.Namespace) -> int:
    run = Path(args.run_dir)
    opts = ExportOptions(format=args.format, include_flagged=args.include_flagged,
                         keep_identical=args.keep_identical, max_distance=args.max_distance,
                         min_jaccard=args.min_jaccard)
    opts.check()
    if args.private and not args.push_to_hub:
        raise ExportError("--private only applies with --push-to-hub ORG/NAME")
    token = check_hub_target(args.push_to_hub) if args.push_to_hub else None
    view = rundata.open_run(run)
    rundata.require_revisions(view, "clair export")
    manifest = view.manifest
    for w in rundata.run_warnings(view):
        print(f"warning: {w}", file=sys.stderr)
    res = export_run(run, args.out, opts)
    print(format_export(res))
    if args.push_to_hub:
        card = dataset_card(manifest, res, args.push_to_hub)
        push_to_hub(res.out, args.push_to_hub, card, private=args.private, token=token)
        print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}"
              + (" (private)" if args.private else ""))
    return 0
