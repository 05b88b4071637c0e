"""``clair stats``: the minimality distribution of a run's revisions and the suspicious ones (L4).

It streams the committed data rows (through :mod:`engine.commands.rundata`; a row_id written twice is
counted once), counts them by ``status``, collects the Jaccard / Levenshtein / length-ratio columns for
exact percentiles (computing values a shard left null) and lists example row_ids of revisions that look
wrong: identical to the original, under ``--min-jaccard`` (rewritten rather than minimally revised) or
over ``--max-distance``. The failure counts come from ``failures/`` after supersession. It prints a
table, or the same figures as JSON with ``--json``; nothing is written and no request is sent.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from engine.commands import rundata

__all__ = ["EXAMPLES", "cmd_stats", "collect_stats", "format_stats"]

#: how many example row_ids ``clair stats`` shows per kind of suspicious revision
EXAMPLES = 5

_STATS_COLUMNS = ["row_id", "student_solution", "revision", "status", *rundata.METRICS]


def collect_stats(run_dir: str | os.PathLike[str], *, max_distance: int | None = None,
                  min_jaccard: float | None = 0.1, examples: int = EXAMPLES) -> dict[str, Any]:
    """Metric distribution, status counts and suspicious revisions of a run's data rows (streamed)."""
    run = Path(run_dir)
    view = rundata.open_run(run)
    rundata.require_revisions(view, "clair stats")
    rundata.check_thresholds(max_distance, min_jaccard)
    status: Counter[str] = Counter()
    metrics = rundata.Metrics()
    checks = {"identical": "revision identical to the original (whitespace at the ends ignored)"}
    if min_jaccard is not None:
        checks["low_jaccard"] = f"token Jaccard < {min_jaccard} (rewritten rather than minimally revised)"
    if max_distance is not None:
        checks["over_max_distance"] = f"Levenshtein distance > {max_distance}"
    suspicious: dict[str, dict[str, Any]] = {k: {"description": d, "count": 0, "row_ids": []} for k, d in checks.items()}
    dedup = rundata.Dedup(view)
    rows = duplicates = 0

    def flag(kind: str, mask: np.ndarray, ids: pa.Array) -> None:
        s = suspicious[kind]
        hits = np.flatnonzero(mask)
        s["count"] += int(len(hits))
        room = examples - len(s["row_ids"])
        if room > 0 and len(hits):
            s["row_ids"].extend(ids.take(pa.array(hits[:room])).to_pylist())

    for batch in rundata.batches(view, _STATS_COLUMNS):
        rep = dedup.repeated(batch.column("row_id"))
        if rep.any():
            duplicates += int(rep.sum())
            batch = batch.filter(pa.array(~rep))
        rows += batch.num_rows
        status.update(str(s) for s in batch.column("status").to_pylist())
        values = {m: rundata.metric(batch, m) for m in rundata.METRICS}
        for m in rundata.METRICS:
            metrics.add(m, values[m])
        ids = batch.column("row_id")
        flag("identical", rundata.identical(batch.column("revision"), batch.column("student_solution")), ids)
        if min_jaccard is not None:
            flag("low_jaccard", np.nan_to_num(values["jaccard"], nan=np.inf) < min_jaccard, ids)
        if max_distance is not None:
            flag("over_max_distance", np.nan_to_num(values["levenshtein"], nan=-np.inf) > max_distance, ids)
    counts = view.counts()
    failed, failure_kinds = counts["failed"], counts["failure_kinds"]
    return {
        "run_dir": str(run),
        "rows_revised": rows,
        "status": dict(sorted(status.items())),
        "rows_failed": failed,
        "failure_kinds": failure_kinds,
        "duplicate_row_ids": duplicates,
        "metrics": metrics.summary(),
        "thresholds": {"max_distance": max_distance, "min_jaccard": min_jaccard},
        "suspicious": suspicious,
        "warnings": rundata.run_warnings(view),
    }


def format_stats(s: dict[str, Any]) -> str:
    st = ", ".join(f"{k} {v}" for k, v in s["status"].items()) or "none"
    lines = [
        f"run: {s['run_dir']}",
        f"rows: {s['rows_revised']} revised ({st}), {s['rows_failed']} failed"
        + (f" ({rundata.kinds(s['failure_kinds'])})" if s["failure_kinds"] else ""),
    ]
    if s["duplicate_row_ids"]:
        lines.append(f"duplicate row_ids in data/: {s['duplicate_row_ids']} (only the first is counted)")
    lines.append("")
    lines.append(f"{'metric':<14}{'count':>8}{'mean':>10}{'p10':>10}{'p50':>10}{'p90':>10}")
    for m in rundata.METRICS:
        d = s["metrics"][m]
        lines.append(f"{m:<14}{d['count']:>8}"
                     + "".join(f"{rundata.num(d[k], m == 'levenshtein'):>10}" for k in ("mean", "p10", "p50", "p90")))
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


def cmd_stats(args: argparse.Namespace) -> int:
    s = collect_stats(Path(args.run_dir), max_distance=args.max_distance, min_jaccard=args.min_jaccard)
    if args.json:
        print(orjson.dumps(s, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
        return 0
    for w in s["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(format_stats(s))
    return 0
