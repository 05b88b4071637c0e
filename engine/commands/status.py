"""``clair status RUN_DIR``: what a run directory holds, read from disk only (L4).

A run with a ``generate:`` stage is shown stage by stage: rows done and failed per stage (each stage's shards
and journal), the rows waiting between the stages (student answers without a final row yet), and, while the
run is active and its live figures (``RUN/live.json``, saved by the runner every few seconds) are fresh, the
rows in flight, rows/s and ETA of each stage; a run that is not active shows its last session's rows/s per
stage (from the session's report). ``--json`` prints the same figures: the keys of a single-stage run are
unchanged, ``kind``, ``stages``, ``rows_generated`` and ``rows_waiting`` are added.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from engine.commands.rundata import generation_only
from engine.records import GENERATE_FAILED, INVALID_INPUT, STUDENT_EMPTY, STUDENT_TRUNCATED
from engine.stages import GENERATE, REVISE
from engine.store import DATA, FAILURES, RunView

__all__ = ["KINDS", "LIVE_FRESH_S", "collect_status", "format_status", "run_status"]

#: live figures older than this are not shown (a run that stopped writing them, or a stuck one)
LIVE_FRESH_S = 60.0
#: what a run is: revisions of given answers, both stages (generate then revise), or the generate stage alone
REVISE_ONLY, TWO_STAGE, GENERATION_ONLY = "revise", "two_stage", "generation_only"
KINDS = (REVISE_ONLY, TWO_STAGE, GENERATION_ONLY)
#: final failure kinds of a two-stage run whose row failed in the generate stage (never sent for revision)
_UPSTREAM_KINDS = frozenset({GENERATE_FAILED, STUDENT_TRUNCATED, STUDENT_EMPTY, INVALID_INPUT})


def run_status(run_dir: Path, as_json: bool = False) -> int:
    info = collect_status(run_dir)
    if as_json:
        print(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(format_status(info))
    return 0


def collect_status(run_dir: Path, *, now: float | None = None) -> dict[str, Any]:
    """The run's state as a dict (``--json`` prints it). ``now``: the wall time live figures are judged
    fresh against (default: the clock)."""
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
    info: dict[str, Any] = {
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
    info.update(_stages(view, info, report, _fresh_live(view, holder is not None, now)))
    return info


def _fresh_live(view: RunView, active: bool, now: float | None) -> dict[str, Any] | None:
    """The live figures of an active run when they are fresh (saved less than :data:`LIVE_FRESH_S` ago)."""
    if not active:
        return None
    live = view.live()
    at = live.get("at") if live is not None else None
    if live is None or not isinstance(at, int | float):
        return None
    now = time.time() if now is None else now
    return live if now - at < LIVE_FRESH_S else None


def _stage(*, total: int | None, done: int, ok: int, failed: int, kinds: dict[str, int], journal: int,
           live: dict[str, Any] | None, last: dict[str, Any] | None) -> dict[str, Any]:
    """One stage's figures: rows from disk; in flight, rows/s and ETA from fresh live figures, else the last
    session's rows/s (``last``: its report of the stage; None while a run is active)."""
    if total is None and live is not None and isinstance(live.get("rows_total"), int):
        total = live["rows_total"]
    st: dict[str, Any] = {
        "rows_total": total,
        "rows_done": done,
        "rows_ok": ok,
        "rows_failed": failed,
        "failure_kinds": kinds,
        "rows_in_journal": journal,
        "rows_remaining": max(0, total - done) if total is not None else None,
        "in_flight": None,
        "rows_per_s": None,
        "eta_s": None,
        "figures": None,  # where in_flight / rows_per_s / eta_s come from: "live" or "last_session"
    }
    if live is not None:
        st.update(in_flight=live.get("in_flight"), rows_per_s=live.get("rows_per_s"), eta_s=live.get("eta_s"),
                  figures="live")
    elif last is not None and last.get("rows_per_s") is not None:
        st.update(rows_per_s=last.get("rows_per_s"), figures="last_session")
    return st


def _stages(view: RunView, info: dict[str, Any], report: dict[str, Any],
            live: dict[str, Any] | None) -> dict[str, Any]:
    """``kind``, ``stages`` (name -> :func:`_stage`), ``rows_generated``, ``rows_waiting`` and ``live_at``."""
    live_stages = (live or {}).get("stages") or {}
    last = report if report and not info["active"] else None  # an active run's report is an earlier session's
    gen = view.stage(GENERATE)
    if gen is None:
        kind = GENERATION_ONLY if generation_only(view) else REVISE_ONLY
        name = GENERATE if kind == GENERATION_ONLY else REVISE
        final = _stage(total=info["rows_total"], done=info["rows_done"], ok=info["rows_revised"],
                       failed=info["rows_failed"], kinds=info["failure_kinds"], journal=info["rows_in_journal"],
                       live=live_stages.get(name), last=last)
        out: dict[str, Any] = {"kind": kind, "stages": {name: final}, "rows_waiting": None,
                               "rows_generated": info["rows_revised"] if kind == GENERATION_ONLY else None}
        if kind == GENERATION_ONLY:
            out["rows_revised"] = 0  # nothing is revised: the data rows are student answers
        out["live_at"] = live.get("at") if live else None
        return out
    gc, gj = gen.counts(), gen.journal_stats()
    gen_done = gc["data"] + gc["failed"] + gj.rows
    stage_reports = (last or {}).get("extra", {}).get("stages", {}) if last else {}
    generate = _stage(total=info["rows_total"], done=gen_done, ok=gc["data"], failed=gc["failed"],
                      kinds=gc["failure_kinds"], journal=gj.rows, live=live_stages.get(GENERATE),
                      last=stage_reports.get(GENERATE))
    own = {k: v for k, v in info["failure_kinds"].items() if k not in _UPSTREAM_KINDS}
    revise = _stage(total=info["rows_total"], done=info["rows_done"], ok=info["rows_revised"],
                    failed=sum(own.values()), kinds=own, journal=info["rows_in_journal"],
                    live=live_stages.get(REVISE), last=last)
    revise["rows_failed_upstream"] = info["rows_failed"] - revise["rows_failed"]
    return {"kind": TWO_STAGE, "stages": {GENERATE: generate, REVISE: revise},
            "rows_generated": gc["data"], "rows_waiting": max(0, gen_done - info["rows_done"]),
            "live_at": live.get("at") if live else None}


# ---------------------------------------------------------------------------- the text


def _duration(s: float | None) -> str:
    if s is None:
        return "?"
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def _rate(st: dict[str, Any]) -> str:
    """A stage's in flight / rows/s / ETA part ('' when there are no figures)."""
    r = st.get("rows_per_s")
    if st.get("figures") == "live":
        parts = [f"{st.get('in_flight') or 0} in flight", f"{r or 0:.1f} rows/s"]
        if st.get("rows_remaining"):
            parts.append(f"ETA {_duration(st.get('eta_s'))}")
        return "; " + ", ".join(parts)
    if st.get("figures") == "last_session" and r is not None:
        return f"; last session {r:.1f} rows/s"
    return ""


def _stage_lines(i: dict[str, Any]) -> list[str]:
    stages = i.get("stages") or {}
    total = i["rows_total"] if i["rows_total"] is not None else "?"
    if i.get("kind") != TWO_STAGE:
        st: dict[str, Any] = next(iter(stages.values()), {})
        return [f"live: {_rate(st)[2:]}"] if st.get("figures") == "live" else []
    g, r = stages[GENERATE], stages[REVISE]
    lines = [
        f"stage generate: {g['rows_done']} of {total} done, {g['rows_ok']} answered, {g['rows_failed']} failed"
        + (f" ({', '.join(f'{k} {v}' for k, v in sorted(g['failure_kinds'].items()))})" if g["failure_kinds"] else "")
        + _rate(g),
        f"stage revise: {r['rows_done']} of {total} done, {r['rows_ok']} revised, {r['rows_failed']} failed"
        + (f" (+{r['rows_failed_upstream']} failed in the generate stage)" if r.get("rows_failed_upstream") else "")
        + _rate(r),
        f"waiting between the stages: {i.get('rows_waiting') or 0} rows (student answers not revised yet)",
    ]
    if i.get("active") and i.get("live_at") is None:
        lines.append("(no live figures yet: the run saves them every few seconds)")
    return lines


def format_status(i: dict[str, Any]) -> str:
    total = i["rows_total"] if i["rows_total"] is not None else "?"
    ago = f"{time.time() - i['last_activity']:.0f}s ago" if i["last_activity"] else "never"
    gen_only = i.get("kind") == GENERATION_ONLY
    made = f"{i.get('rows_generated') or 0} generated" if gen_only else f"{i['rows_revised']} revised"
    lines = [
        f"run: {i['run_dir']} ({'ACTIVE, pid ' + str(i['active_pid']) if i['active'] else 'not running'})"
        + (" — a generation-only run (student answers, no revisions)" if gen_only else ""),
        f"rows: {i['rows_done']} of {total} done, {made}, {i['rows_failed']} failed, "
        f"{i['rows_remaining'] if i['rows_remaining'] is not None else '?'} remaining",
    ]
    lines += _stage_lines(i)
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
        upstream = (r.get("extra") or {}).get("stages") or {}
        label = "last session" + (", revise stage" if upstream else "")
        lines.append(_session_line(label, r))
        for name, sr in upstream.items():
            lines.append(_session_line(f"last session, {name} stage", sr))
        if r.get("rows_reused"):
            lines.append(f"last session reused {r['rows_reused']} stored answers of earlier runs (no request)")
        costs = {n: c for n, c in ((n, s.get("cost_usd")) for n, s in upstream.items()) if c is not None}
        if r.get("cost_usd") is not None:
            if costs:
                each = ", ".join(f"{n} ${c:.2f}" for n, c in {**costs, REVISE: r["cost_usd"]}.items())
                lines.append(f"estimated cost of last session: ${r['cost_usd'] + sum(costs.values()):.2f} ({each})")
            else:
                lines.append(f"estimated cost of last session: ${r['cost_usd']:.2f}")
        elif costs:
            lines.append("estimated cost of last session: "
                         + ", ".join(f"{n} ${c:.2f}" for n, c in costs.items()))
    return "\n".join(lines)


def _session_line(label: str, r: dict[str, Any]) -> str:
    p50 = (r.get("latency") or {}).get("p50_s")
    head = (f"{label}: {r.get('requests', 0)} requests, {r.get('prompt_tokens', 0)} tokens in, "
            f"{r.get('completion_tokens', 0)} out")
    return head + (f", {r.get('rows_per_s', 0)} rows/s, p50 latency {p50:.2f}s" if p50 is not None else "")
