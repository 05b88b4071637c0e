"""``clair export`` and ``clair stats``: training-ready pairs and minimality figures of a run (L4).

Both read only the committed shards (``data/`` and, for failure counts, ``failures/`` with the
supersession rules of :mod:`engine.store.readers`) and stream them record batch by record batch, so memory
stays flat whatever the run's size; no request is ever sent.

Export formats (one Parquet file, written to a temp name, fsynced, then renamed):

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
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.core.errors import RunStateError, UserError
from engine.minimality import jaccard, length_ratio, levenshtein
from engine.store import readers as results
from engine.store.journal import list_segments, storage_error
from engine.store.manifest import is_active, read_manifest
from engine.store.shards import DATA, fsync_dir, list_shards

__all__ = [
    "FORMATS",
    "REASONS",
    "ExportError",
    "ExportOptions",
    "ExportResult",
    "HubPushError",
    "cmd_export",
    "cmd_stats",
    "collect_stats",
    "dataset_card",
    "export_run",
    "format_stats",
    "push_to_hub",
]

FORMATS = ("trl", "ultrafeedback")
#: why a data row is left out of an export, in the order the checks are applied
REASONS = ("duplicate", "empty", "flagged", "identical", "max_distance", "min_jaccard")
METRICS = ("jaccard", "levenshtein", "length_ratio")

#: rows read per record batch (memory per batch ~ this × a row's text)
BATCH_ROWS = 4096
#: rows / bytes buffered before a Parquet row group is written (whichever comes first)
ROW_GROUP_ROWS = 16384
ROW_GROUP_BYTES = 64 << 20
#: how many example row_ids ``clair stats`` shows per kind of suspicious revision
EXAMPLES = 5

MESSAGE = pa.struct([pa.field("content", pa.string()), pa.field("role", pa.string())])
MESSAGES = pa.list_(MESSAGE)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_INTENT = "reparse-intent.json"  # engine.commands.reparse.INTENT (not imported: reparse pulls in the parser)


class ExportError(UserError):
    """An export cannot be done as asked (bad option, unusable output path)."""


class HubPushError(ExportError):
    """Pushing to the Hugging Face Hub failed (no token, no network, refused); one line, no traceback."""


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
        if self.max_distance is not None and self.max_distance < 0:
            raise ExportError("--max-distance must be >= 0 (a Levenshtein distance in characters)")
        if self.min_jaccard is not None and not 0.0 <= self.min_jaccard <= 1.0:
            raise ExportError("--min-jaccard must be between 0 and 1 (a token Jaccard similarity)")


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


# ---------------------------------------------------------------------------- reading shards


def _check_run(run_dir: Path) -> dict[str, Any]:
    manifest = read_manifest(run_dir) if run_dir.is_dir() else None
    if manifest is None:
        raise RunStateError(f"{run_dir} is not a clair run directory (no manifest.json); check the path")
    return manifest


def _warnings(run_dir: Path) -> list[str]:
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


def _batches(path: Path, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
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


class _Dedup:
    """Keeps the first occurrence (in shard order) of each duplicated row_id."""

    def __init__(self, dups: pa.Array | None):
        self.dups = dups
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


def _bool(arr: pa.Array | pa.ChunkedArray, null: bool) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, null).to_numpy(zero_copy_only=False), dtype=bool)


def _blank(col: pa.Array) -> np.ndarray:
    """True where a text is null or only whitespace."""
    return _bool(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0), True)


def _identical(revision: pa.Array, original: pa.Array) -> np.ndarray:
    """revision == original, ignoring whitespace at both ends."""
    return _bool(pc.equal(pc.utf8_trim_whitespace(revision), pc.utf8_trim_whitespace(original)), False)


_METRIC_FN = {"jaccard": jaccard, "levenshtein": levenshtein, "length_ratio": length_ratio}


def _metric(batch: pa.RecordBatch, name: str) -> np.ndarray:
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


class _Metrics:
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
    ok = _bool(pc.equal(status, "ok"), False)

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
        drop("identical", _identical(batch.column("revision"), batch.column("student_solution")))
    if opts.max_distance is not None:
        lev = _metric(batch, "levenshtein")
        drop("max_distance", np.nan_to_num(lev, nan=-np.inf) > opts.max_distance)
    if opts.min_jaccard is not None:
        jac = _metric(batch, "jaccard")
        drop("min_jaccard", np.nan_to_num(jac, nan=np.inf) < opts.min_jaccard)
    return remaining


# ---------------------------------------------------------------------------- export

_EXPORT_COLUMNS = ["row_id", "task", "student_solution", "revision", "rational", "status", *METRICS]


def default_out(run_dir: Path, fmt: str) -> Path:
    return run_dir / f"export-{fmt}.parquet"


def _check_out(run_dir: Path, out: Path) -> None:
    if out.is_dir():
        raise ExportError(f"--out {out} is a directory; give a file name such as {out / 'pairs.parquet'}")
    parent = out.resolve().parent
    for kind in ("data", "failures", "journal"):
        d = (run_dir / kind).resolve()
        if parent == d or d in parent.parents:
            raise ExportError(f"--out {out} is inside the run's {kind}/ folder; write the export elsewhere")


def export_run(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
               opts: ExportOptions | None = None) -> ExportResult:
    """Write a run's pairs as one Parquet file (atomically); returns the counts. Streams batch by batch."""
    run = Path(run_dir)
    opts = opts or ExportOptions()
    opts.check()
    _check_run(run)
    if (run / _INTENT).exists():
        raise RunStateError(
            f"{run} has an interrupted `clair reparse`; run `clair reparse {run}` again to finish it, then export"
        )
    shards = list_shards(run, DATA)
    if not shards:
        raise RunStateError(f"{run} has no data shards yet; run the job first (clair run CONFIG)")
    out_path = Path(out) if out is not None else default_out(run, opts.format)
    _check_out(run, out_path)
    try:
        row_id_type = pq.read_schema(shards[0]).field("row_id").type
    except (pa.ArrowException, OSError, KeyError) as e:
        raise RunStateError(f"shard {shards[0]} is corrupt or unreadable ({e}); move it away") from None
    schema = output_schema(opts.format, row_id_type)
    res = ExportResult(out=str(out_path), format=opts.format, options=dict(opts.__dict__))
    dedup = _Dedup(_duplicate_ids(run))
    metrics = _Metrics()

    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
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
        out_path.parent.mkdir(parents=True, exist_ok=True)
        writer = pq.ParquetWriter(tmp, schema, compression="zstd")
        for shard in shards:
            for batch in _batches(shard, _EXPORT_COLUMNS, BATCH_ROWS):
                res.rows_read += batch.num_rows
                keep = select(batch, opts, dedup.repeated(batch.column("row_id")), res)
                if not keep.any():
                    continue
                kept = batch.filter(pa.array(keep)) if not keep.all() else batch
                for m in METRICS:
                    metrics.add(m, _metric(kept, m))
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
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, out_path)
        fsync_dir(out_path.parent)
    except OSError as e:
        raise storage_error(e, f"the export {out_path}") from None
    finally:
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
    counts = results.count_rows(run)
    res.failed, res.failure_kinds = counts["failed"], counts["failure_kinds"]
    res.metrics = metrics.summary()
    return res


def _kinds(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items()))


def format_export(res: ExportResult) -> str:
    o = res.options
    lines = [f"exported {res.rows_exported} pairs ({res.format} layout) to {res.out}"]
    left = res.left_out
    labels = {
        "duplicate": "duplicate row_id (first kept)",
        "empty": "empty task, revision or original",
        "flagged": f"flagged ({_kinds(res.flagged_left_out)}; --include-flagged keeps them)",
        "identical": "identical to the original (--keep-identical keeps them)",
        "max_distance": f"Levenshtein distance over --max-distance {o.get('max_distance')}",
        "min_jaccard": f"token Jaccard under --min-jaccard {o.get('min_jaccard')}",
    }
    parts = [f"{left[r]} {labels[r]}" for r in REASONS if left.get(r)]
    lines.append(f"left out: {sum(left.values())}" + (f" = {'; '.join(parts)}" if parts else ""))
    if res.flagged_kept:
        lines.append(f"flagged rows kept (--include-flagged): {_kinds(res.flagged_kept)}")
    if res.failed:
        lines.append(f"failed rows (never exported): {res.failed} ({_kinds(res.failure_kinds)})")
    if res.rows_exported == 0:
        lines.append("warning: the export is empty; check the filters and `clair stats RUN_DIR`")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- stats

_STATS_COLUMNS = ["row_id", "student_solution", "revision", "status", *METRICS]


def collect_stats(run_dir: str | os.PathLike[str], *, max_distance: int | None = None,
                  min_jaccard: float | None = 0.1, examples: int = EXAMPLES) -> dict[str, Any]:
    """Metric distribution, status counts and suspicious revisions of a run's data rows (streamed)."""
    run = Path(run_dir)
    _check_run(run)
    if max_distance is not None and max_distance < 0:
        raise ExportError("--max-distance must be >= 0 (a Levenshtein distance in characters)")
    if min_jaccard is not None and not 0.0 <= min_jaccard <= 1.0:
        raise ExportError("--min-jaccard must be between 0 and 1 (a token Jaccard similarity)")
    status: Counter[str] = Counter()
    metrics = _Metrics()
    kinds = {"identical": "revision identical to the original (whitespace at the ends ignored)"}
    if min_jaccard is not None:
        kinds["low_jaccard"] = f"token Jaccard < {min_jaccard} (rewritten rather than minimally revised)"
    if max_distance is not None:
        kinds["over_max_distance"] = f"Levenshtein distance > {max_distance}"
    suspicious: dict[str, dict[str, Any]] = {k: {"description": d, "count": 0, "row_ids": []} for k, d in kinds.items()}
    dedup = _Dedup(_duplicate_ids(run))
    rows = duplicates = 0

    def flag(kind: str, mask: np.ndarray, ids: pa.Array) -> None:
        s = suspicious[kind]
        hits = np.flatnonzero(mask)
        s["count"] += int(len(hits))
        room = examples - len(s["row_ids"])
        if room > 0 and len(hits):
            s["row_ids"].extend(ids.take(pa.array(hits[:room])).to_pylist())

    for shard in list_shards(run, DATA):
        for batch in _batches(shard, _STATS_COLUMNS, BATCH_ROWS):
            rep = dedup.repeated(batch.column("row_id"))
            if rep.any():
                duplicates += int(rep.sum())
                batch = batch.filter(pa.array(~rep))
            rows += batch.num_rows
            status.update(str(s) for s in batch.column("status").to_pylist())
            values = {m: _metric(batch, m) for m in METRICS}
            for m in METRICS:
                metrics.add(m, values[m])
            ids = batch.column("row_id")
            flag("identical", _identical(batch.column("revision"), batch.column("student_solution")), ids)
            if min_jaccard is not None:
                flag("low_jaccard", np.nan_to_num(values["jaccard"], nan=np.inf) < min_jaccard, ids)
            if max_distance is not None:
                flag("over_max_distance", np.nan_to_num(values["levenshtein"], nan=-np.inf) > max_distance, ids)
    counts = results.count_rows(run)
    return {
        "run_dir": str(run),
        "rows_revised": rows,
        "status": dict(sorted(status.items())),
        "rows_failed": counts["failed"],
        "failure_kinds": counts["failure_kinds"],
        "duplicate_row_ids": duplicates,
        "metrics": metrics.summary(),
        "thresholds": {"max_distance": max_distance, "min_jaccard": min_jaccard},
        "suspicious": suspicious,
        "warnings": _warnings(run),
    }


def _num(v: float | None, distance: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.1f}" if distance else f"{v:.3f}"


def format_stats(s: dict[str, Any]) -> str:
    st = ", ".join(f"{k} {v}" for k, v in s["status"].items()) or "none"
    lines = [
        f"run: {s['run_dir']}",
        f"rows: {s['rows_revised']} revised ({st}), {s['rows_failed']} failed"
        + (f" ({_kinds(s['failure_kinds'])})" if s["failure_kinds"] else ""),
    ]
    if s["duplicate_row_ids"]:
        lines.append(f"duplicate row_ids in data/: {s['duplicate_row_ids']} (only the first is counted)")
    lines.append("")
    lines.append(f"{'metric':<14}{'count':>8}{'mean':>10}{'p10':>10}{'p50':>10}{'p90':>10}")
    for m in METRICS:
        d = s["metrics"][m]
        lines.append(f"{m:<14}{d['count']:>8}"
                     + "".join(f"{_num(d[k], m == 'levenshtein'):>10}" for k in ("mean", "p10", "p50", "p90")))
    lines.append("(jaccard: whitespace-token set similarity; levenshtein: characters; length_ratio: "
                 "revision/original chars. CLAIR paper, GPT-4 revisions: median jaccard ~0.27, length ratio ~1.04)")
    lines.append("")
    lines.append("suspicious revisions:")
    for d in s["suspicious"].values():
        ids = ", ".join(str(i) for i in d["row_ids"])
        more = ", ..." if d["count"] > len(d["row_ids"]) else ""
        lines.append(f"  {d['description']}: {d['count']}" + (f" (row_ids {ids}{more})" if ids else ""))
    if s["thresholds"]["max_distance"] is None:
        lines.append("  (pass --max-distance N to also flag revisions beyond N edits)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- dataset card and hub


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "10M<n<100M"


def card_metadata(res: ExportResult) -> dict[str, Any]:
    return {
        "tags": ["clair", "preference", "dpo", "apo", "synthetic", "clair-engine"],
        "task_categories": ["text-generation"],
        "size_categories": [_size_category(res.rows_exported)],
    }


def dataset_card(manifest: dict[str, Any], res: ExportResult, repo_id: str | None = None) -> str:
    """The README.md of a pushed export (YAML metadata + markdown): a pure function of its inputs.

    Uses only the manifest's (already redacted) config: models, prompt, generation settings and the
    input's name — never endpoint URLs, headers or local directories.
    """
    import yaml

    cfg = manifest.get("config") or {}
    fp = manifest.get("fingerprint") or {}
    inp = cfg.get("input") or {}
    models = sorted({e.get("model") for e in cfg.get("endpoints") or [] if e.get("model")}) or fp.get("models") or []
    prompt = cfg.get("prompt") or {}
    variant = "custom template file" if prompt.get("template_file") else prompt.get("variant", "distilabel")
    if inp.get("dataset"):
        source = f"`{inp['dataset']}` (split `{inp.get('split', 'train')}`)"
    elif inp.get("path"):
        source = f"local file(s) `{Path(str(inp['path'])).name}`"
    else:
        source = "unknown"
    cols = inp.get("columns") or {}
    gen = cfg.get("generation") or {}
    name = repo_id or "CLAIR preference pairs"
    o = res.options
    filters = [
        "status `ok` only" if not o.get("include_flagged") else "status `ok`, `truncated` and `worsened` (flagged rows kept)",
        "identical revisions removed" if not o.get("keep_identical") else "identical revisions kept",
    ]
    if o.get("max_distance") is not None:
        filters.append(f"Levenshtein distance <= {o['max_distance']}")
    if o.get("min_jaccard") is not None:
        filters.append(f"token Jaccard >= {o['min_jaccard']}")
    left = ", ".join(f"{k} {v}" for k, v in res.left_out.items() if v) or "none"

    def row(m: str) -> str:
        d = res.metrics.get(m) or {}
        return f"| {m} | " + " | ".join(_num(d.get(k), m == "levenshtein") for k in ("mean", "p10", "p50", "p90")) + " |"

    if res.format == "trl":
        layout = (
            "TRL's conversational explicit-prompt preference format: `prompt` = `[{role: user, content: TASK}]`, "
            "`chosen` = `[{role: assistant, content: REVISION}]`, `rejected` = `[{role: assistant, content: "
            "ORIGINAL}]`, plus `rational` (the teacher's reasoning) and `row_id`."
        )
    else:
        layout = (
            "the layout of `ContextualAI/ultrafeedback_clair_32k`: `prompt` (str), `chosen` and `rejected` as "
            "full conversations `[user turn, assistant turn]` (chosen = revision, rejected = original), "
            "and `rational` (the teacher's reasoning)."
        )
    meta = yaml.safe_dump(card_metadata(res), sort_keys=False).strip()
    return f"""---
{meta}
---

# {name}

CLAIR preference pairs (Contrastive Learning from AI Revisions; D'Oosterlinck et al., 2024,
[arXiv:2408.06266](https://arxiv.org/abs/2408.06266)) made with clair-engine: a teacher model
minimally revised each answer, and each pair is (chosen = revision, rejected = original answer).

## Contents

- Pairs: **{res.rows_exported}** ({res.format} layout)
- Selection: {"; ".join(filters)}
- Left out: {left}; failed requests (never exported): {res.failed}
- Layout: {layout}

## How it was made

- Teacher model(s): {", ".join(f"`{m}`" for m in models) or "unknown"}
- Prompt: CLAIR `{variant}` variant
- Generation: {", ".join(f"{k}={v}" for k, v in sorted(gen.items())) or "defaults"}
- Input: {source}; task column `{cols.get("task", "prompt")}`, answer column `{cols.get("student_solution", "rejected[1].content")}`

## Minimality of the pairs

| metric | mean | p10 | p50 | p90 |
|---|---|---|---|---|
{row("jaccard")}
{row("levenshtein")}
{row("length_ratio")}

`jaccard`: whitespace-token set similarity of revision and original; `levenshtein`: character edit
distance; `length_ratio`: revision length / original length. The paper reports median Jaccard ~0.27 and
length ratio ~1.04 for GPT-4-turbo revisions of UltraFeedback answers.

## Training with APO

CLAIR pairs are meant for Anchored Preference Optimization (`apo_zero`: the revisions are better than
the model's own answers). With TRL:

```python
from datasets import load_dataset
from trl import DPOConfig, DPOTrainer

train = load_dataset("{repo_id or 'ORG/NAME'}", split="train")
args = DPOConfig(output_dir="clair-apo", loss_type="apo_zero", beta=0.1, learning_rate=2e-7)
trainer = DPOTrainer(model="YOUR/BASE-MODEL", args=args, train_dataset=train)
trainer.train()
```

## Citation

```bibtex
@article{{doosterlinck2024anchored,
  title={{Anchored Preference Optimization and Contrastive Revisions: Addressing Underspecification in Alignment}},
  author={{D'Oosterlinck, Karel and Xu, Winnie and Develder, Chris and Demeester, Thomas and Singh, Amanpreet and Potts, Christopher and Kiela, Douwe and Mehri, Shikib}},
  journal={{arXiv preprint arXiv:2408.06266}},
  year={{2024}}
}}
```
"""


def check_hub_target(repo_id: str) -> str:
    """Validate ORG/NAME and find a token, before any work or network; returns the token."""
    if not _REPO_ID.match(repo_id or ""):
        raise HubPushError(f"--push-to-hub {repo_id!r} is not a dataset id; use ORG/NAME, e.g. my-org/clair-pairs")
    try:
        from huggingface_hub import get_token

        token = get_token()
    except Exception as e:  # noqa: BLE001 - boundary: any hub-library failure becomes one line
        raise HubPushError(f"cannot read the Hugging Face token ({_line(e)}); set HF_TOKEN") from None
    if not token:
        raise HubPushError(
            "no Hugging Face token found; run `hf auth login` (or `huggingface-cli login`) or set HF_TOKEN "
            "to a token with write access"
        )
    return token


def _line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg[:200]}" if msg else type(e).__name__


def push_to_hub(out: str | os.PathLike[str], repo_id: str, card: str, *, private: bool = False,
                token: str | None = None) -> None:
    """Push an export file as the ``train`` split of ``repo_id`` and set its README (dataset card).

    Every failure of ``datasets``/``huggingface_hub`` (no network, offline mode, bad token, refused)
    becomes a one-line :class:`HubPushError`; the local export is kept either way.
    """
    token = token or check_hub_target(repo_id)
    try:
        import datasets
        import yaml
        from huggingface_hub import DatasetCard

        ds = datasets.load_dataset("parquet", data_files=str(out), split="train")
        ds.push_to_hub(repo_id, private=private, token=token,
                       commit_message="Add CLAIR preference pairs (clair-engine export)")
        # push_to_hub wrote the card's dataset_info/configs metadata: keep it, add ours, set the text
        existing = DatasetCard.load(repo_id, repo_type="dataset", token=token).data.to_dict()
        head, body = card.split("\n---\n", 1)
        ours = yaml.safe_load(head.removeprefix("---\n")) or {}
        merged = {**ours, **existing}
        new = DatasetCard("---\n" + yaml.safe_dump(merged, sort_keys=False) + "---\n" + body)
        new.push_to_hub(repo_id, repo_type="dataset", token=token, commit_message="Add the dataset card")
    except Exception as e:  # noqa: BLE001 - boundary: datasets/huggingface_hub raise many unrelated types
        raise HubPushError(
            f"pushing {out} to the Hugging Face Hub as {repo_id} failed ({_line(e)}); the export file is kept; "
            "check the network, HF_HUB_OFFLINE and that your token may write to that namespace"
        ) from None


# ---------------------------------------------------------------------------- commands


def cmd_export(args: argparse.Namespace) -> int:
    run = Path(args.run_dir)
    opts = ExportOptions(format=args.format, include_flagged=args.include_flagged,
                         keep_identical=args.keep_identical, max_distance=args.max_distance,
                         min_jaccard=args.min_jaccard)
    opts.check()
    if args.private and not args.push_to_hub:
        raise ExportError("--private only applies with --push-to-hub ORG/NAME")
    token = check_hub_target(args.push_to_hub) if args.push_to_hub else None
    manifest = _check_run(run)
    for w in _warnings(run):
        print(f"warning: {w}", file=sys.stderr)
    res = export_run(run, args.out, opts)
    print(format_export(res))
    if args.push_to_hub:
        card = dataset_card(manifest, res, args.push_to_hub)
        push_to_hub(res.out, args.push_to_hub, card, private=args.private, token=token)
        print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}"
              + (" (private)" if args.private else ""))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    s = collect_stats(Path(args.run_dir), max_distance=args.max_distance, min_jaccard=args.min_jaccard)
    if args.json:
        print(orjson.dumps(s, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
        return 0
    for w in s["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(format_stats(s))
    return 0
