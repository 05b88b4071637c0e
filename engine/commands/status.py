"""``clair status RUN_DIR``: what a run directory holds, read from disk only (L4)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from engine.store import DATA, FAILURES, RunView


def run_status(run_dir: Path, as_json: bool = False) -> int:
    info = collect_status(run_dir)
    if as_json:
        print(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(format_status(info))
    return 0


def collect_status(run_dir: Path) -> dict[str, Any]:
    view = RunView.open(run_dir)
    manifest = view.manifest
    counts = view.counts()
    journal = view.journal_stats()
    total = manifest.get("rows_total")
    done = counts["data"] + counts["failed"] + journal.rows
    runs = manifest.get("runs", [])
    last_run = runs[-1] if runs else {}
    report = last_run.get("report") or {}
    holder = view.active()
    return {
        "run_dir": str(run_dir),
        "active": holder is not None,
        "active_pid": holder.get("pid") if holder else None,
        "rows_total": total,
        "rows_done": done,
        "rows_revised": counts["data"],
        "rows_failed": counts["failed"],
        "failure_kinds": counts["failure_kinds"],
        "rows_in_journal": journal.rows,
        "rows_remaining": (total - done) if total is not None else None,
        "data_shards": len(view.shards(DATA)),
        "failure_shards": len(view.shards(FAILURES)),
        "journal_segments": journal.segments,
        "journal_bytes": journal.bytes,
        "last_activity": view.last_activity(),
        "last_run_status": last_run.get("status", "running" if holder else "stopped"),
        # a live run records when every endpoint began failing (None once one answers again)
        "paused_since": last_run.get("paused_since") if holder else None,
        "sessions": len(runs),
        "fingerprint": manifest.get("fingerprint_hash"),
        "parser_version": manifest.get("parser_version"),
        "report": report,
    }


def format_status(i: dict[str, Any]) -> str:
    total = i["rows_total"] if i["rows_total"] is not None else "?"
    ago = f"{time.time() - i['last_activity']:.0f}s ago" if i["last_activity"] else "never"
    lines = [
        f"run: {i['run_dir']} ({'ACTIVE, pid ' + str(i['active_pid']) if i['active'] else 'not running'})",
        f"rows: {i['rows_done']} of {total} done, {i['rows_revised']} revised, {i['rows_failed']} failed, "
        f"{i['rows_remaining'] if i['rows_remaining'] is not None else '?'} remaining",
    ]
    if i.get("paused_since") is not None:  # the progress line's wording (engine/progress.py)
        since = time.strftime("%H:%M", time.localtime(i["paused_since"]))
        lines.append(f"paused (endpoint down since {since}): every endpoint is failing; the run sends only probes")
    if i["failure_kinds"]:
        lines.append("failures: " + ", ".join(f"{k} {v}" for k, v in sorted(i["failure_kinds"].items())))
    lines.append(
        f"shards: {i['data_shards']} data, {i['failure_shards']} failures; journal: {i['journal_segments']} "
        f"segment(s), {i['rows_in_journal']} rows, {i['journal_bytes']} bytes"
    )
    lines.append(f"last activity: {ago}; sessions: {i['sessions']}; last session: {i['last_run_status']}")
    r = i.get("report") or {}
    if r:
        lat = r.get("latency") or {}
        p50 = lat.get("p50_s")
        lines.append(
            f"last session: {r.get('requests', 0)} requests, {r.get('prompt_tokens', 0)} tokens in, "
            f"{r.get('completion_tokens', 0)} out, {r.get('rows_per_s', 0)} rows/s, "
            f"p50 latency {p50:.2f}s" if p50 is not None else
            f"last session: {r.get('requests', 0)} requests, {r.get('prompt_tokens', 0)} tokens in, "
            f"{r.get('completion_tokens', 0)} out"
        )
        if r.get("rows_reused"):
            lines.append(f"last session reused {r['rows_reused']} stored answers of earlier runs (no request)")
        if r.get("cost_usd") is not None:
            lines.append(f"estimated cost of last session: ${r['cost_usd']:.2f}")
    return "\n".join(lines)
