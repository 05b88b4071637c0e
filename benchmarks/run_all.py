"""Run every benchmark and regenerate benchmarks/RESULTS.md (``make bench``).

Order: ``latency``, ``lognormal``, ``ratelimited``, ``faults``, ``scale`` (1,000,000 rows, its run kept),
then ``two-stage`` (issue 16: a student answers, a teacher revises, streamed; two mocks at 6,000 and 4,000
requests/min, 32,000 rows, then the generate stage alone for its CPU share: ~14 min), then
``resume_startup.py`` on the kept ``scale`` run (1,000,000 done rows), then ``max_tokens_auto.py``
(issue 15: ``generation.max_tokens: auto`` versus a fixed 4096, ~2.5 min). Every scenario reads the same
cached input (1,001,000 generated rows, made once under benchmarks/out/data; a scenario reads only its
own row count, and the last 1,000 rows are what the resume benchmark has left to do).

Figures go to benchmarks/out/results.json and into RESULTS.md between the GENERATED markers; the rest of
RESULTS.md (profiling notes) is kept as written. About 40 minutes on 2 cores.

    python benchmarks/run_all.py [--only latency,faults] [--rows-scale N] [--quick] [--no-md]

``--quick`` runs every preset at 2,000 rows (``ratelimited``: 400 rows, a 30 s window; ``max_tokens_auto``:
100 rows; ``two-stage``: 2,000 rows, ~1 min): a smoke run; RESULTS.md is not touched.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import max_tokens_auto  # noqa: E402
import resume_startup  # noqa: E402

from engine.tools.bench.data import ensure_data  # noqa: E402
from engine.tools.bench.presets import PRESETS  # noqa: E402
from engine.tools.bench.probe import machine_info  # noqa: E402
from engine.tools.bench.report import fault_summary, format_result, format_two_stage, rate_limit_summary  # noqa: E402
from engine.tools.bench.results import TARGETS  # noqa: E402
from engine.tools.bench.run import OUT_DIR, run_scenario  # noqa: E402
from engine.tools.bench.twostage import TWO_STAGE, TWO_STAGE_NAME, TWO_STAGE_TARGETS  # noqa: E402
from engine.tools.bench.twostage_run import run_two_stage  # noqa: E402

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"
BEGIN, END = "<!-- BEGIN GENERATED (benchmarks/run_all.py) -->", "<!-- END GENERATED -->"
ORDER = ("latency", "lognormal", "ratelimited", "faults", "scale")
#: runs besides the scenarios, after them
EXTRA = (TWO_STAGE_NAME, "resume", "max_tokens_auto")


def log(msg: str) -> None:
    print(f"run_all: {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join((*ORDER, *EXTRA)),
                    help="comma-separated: scenarios, two-stage, resume and/or max_tokens_auto")
    ap.add_argument("--rows-scale", type=int, default=PRESETS["scale"].rows)
    ap.add_argument("--quick", action="store_true", help="every preset at 2,000 rows; RESULTS.md untouched")
    ap.add_argument("--no-md", action="store_true", help="do not rewrite RESULTS.md")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(ORDER) - set(EXTRA)
    if unknown:
        ap.error(f"unknown: {', '.join(sorted(unknown))}")
    out = OUT_DIR
    t_all = time.perf_counter()
    scale_rows = 2000 if args.quick else args.rows_scale
    two_stage = dataclasses.replace(TWO_STAGE, rows=2000) if args.quick else TWO_STAGE
    need = [two_stage.rows] if TWO_STAGE_NAME in only else []
    if set(only) - {TWO_STAGE_NAME, "max_tokens_auto"}:
        need.append(scale_rows + resume_startup.LEFT)
    input_path, _ = ensure_data(max(need or [1]), out / "data", log=log)
    results: dict[str, Any] = {}
    prev = out / "results.json"
    if prev.exists() and set(only) != {*ORDER, *EXTRA}:
        results = orjson.loads(prev.read_bytes())  # a partial rerun updates the figures it reruns
    for name in ORDER:
        if name not in only:
            continue
        sc = PRESETS[name]
        if args.quick:
            sc = dataclasses.replace(sc, rows=400, window_s=30.0) if sc.window_s else dataclasses.replace(sc, rows=2000)
        elif name == "scale":
            sc = dataclasses.replace(sc, rows=scale_rows)
        cmd = f"python benchmarks/run_all.py (clair bench --scenario {name}" + (
            f" --rows {sc.rows})" if sc.rows != PRESETS[name].rows else ")")
        t0 = time.perf_counter()
        res = run_scenario(sc, out_dir=out, input_path=input_path, keep=name == "scale", command=cmd, log=log)
        res["bench_s"] = round(time.perf_counter() - t0, 1)
        print(format_result(res), flush=True)
        (out / f"{name}.json").write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2) + b"\n")
        results[name] = res
    if TWO_STAGE_NAME in only:
        t0 = time.perf_counter()
        cmd = f"python benchmarks/run_all.py (clair bench --scenario {TWO_STAGE_NAME}" + (
            f" --rows {two_stage.rows})" if two_stage.rows != TWO_STAGE.rows else ")")
        res = run_two_stage(two_stage, out_dir=out, input_path=input_path, command=cmd, log=log)
        res["bench_s"] = round(time.perf_counter() - t0, 1)
        print(format_two_stage(res), flush=True)
        (out / f"{TWO_STAGE_NAME}.json").write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2) + b"\n")
        results[TWO_STAGE_NAME] = res
    if "resume" in only:
        work = out / "runs" / "scale"
        if not (work / "run" / "manifest.json").exists():
            log("no kept scale run; skipping resume_startup (run with --only scale,resume)")
        else:
            t0 = time.perf_counter()
            res = resume_startup.measure(work, repeat=3)
            res["bench_s"] = round(time.perf_counter() - t0, 1)
            res["command"] = "python benchmarks/resume_startup.py --work benchmarks/out/runs/scale"
            res["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            print(resume_startup.format_resume(res), flush=True)
            (out / "resume_startup.json").write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2) + b"\n")
            results["resume"] = res
    if "max_tokens_auto" in only:
        params = max_tokens_auto.Params(rows=100 if args.quick else max_tokens_auto.Params.rows)
        res = max_tokens_auto.measure(params, "python benchmarks/run_all.py (python benchmarks/max_tokens_auto.py"
                                      + (" --rows 100)" if args.quick else ")"))
        print(max_tokens_auto.format_results(res), flush=True)
        (out / "max_tokens_auto.json").write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2) + b"\n")
        results["max_tokens_auto"] = res
    if args.quick:  # otherwise the scale run stays for the next resume measurement (benchmarks/out is ignored)
        shutil.rmtree(out / "runs" / "scale" / "run", ignore_errors=True)
    git = git_state()
    for name in [*ORDER, *EXTRA]:
        if name in only and name in results:
            results[name]["git"] = git
    results["_meta"] = {"machine": machine_info(), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
                        "total_s": round(time.perf_counter() - t_all, 1), "quick": args.quick, "git": git,
                        "only": only}
    prev.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    log(f"done in {time.perf_counter() - t_all:.0f}s; figures in {prev}")
    if not args.no_md and not args.quick:
        write_md(results)
        log(f"regenerated {RESULTS_MD}")
    return 0


def git_state() -> str | None:
    """The commit measured, and the engine files changed in the working tree (benchmarks measure those)."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "engine"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return None
    changed = sorted(line[3:] for line in dirty if line.strip() and not line[3:].endswith("bench.py"))
    return head + (f" + working-tree changes in {', '.join(changed)}" if changed else "")


# ------------------------------------------------------------------------------------------------ markdown


def _f(x: Any, spec: str = ".1f") -> str:
    return "–" if x is None else format(x, spec)


def _pct(x: Any) -> str:
    return "–" if x is None else f"{x * 100:.1f}%"


def _ok(v: bool | None) -> str:
    return "–" if v is None else ("pass" if v else "**FAIL**")


def render(results: dict[str, Any]) -> str:
    meta = results.get("_meta", {})
    m = meta.get("machine", {})
    gits = sorted({r.get("git") or "?" for k, r in results.items() if not k.startswith("_")})
    partial = set(meta.get("only") or ORDER) != {*ORDER, *EXTRA}
    lines = [
        BEGIN,
        "",
        f"Generated {meta.get('date', '?')} by `python benchmarks/run_all.py` (`make bench`"
        + (f", this time only: {', '.join(meta['only'])}" if partial else "")
        + f", {_f((meta.get('total_s') or 0) / 60, '.0f')} min) on {m.get('cores')} cores ({m.get('cpu')}, "
        f"{m.get('memory_gb')} GB), Python {m.get('python')}, {m.get('platform')}; engine at "
        f"{' / '.join(gits)} (per scenario below). "
        "Mock endpoint and engine on the same machine; the engine in its own process "
        "(`python -m engine.cli run JOB --progress off`). Definitions: `engine/bench.py` docstring.",
        "",
        "| scenario | rows | rows/s | limit rows/s | achieved | output tok/s | engine CPU ms/row | peak RSS MB "
        "| RSS 10/50/90% MB | request p50 / p90 / p99 s | mock CPU | window s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for name in ORDER:
        r = results.get(name)
        if not r:
            continue
        e, lat, mk = r["engine"], r["latency"]["request"], r["mock"]
        rss = "/".join(f"{v:.0f}" for v in e["rss_mb_at_progress"].values()) or "–"
        lines.append(
            f"| {name} | {r['rows']:,} | {_f(r['rows_per_s'])} | {_f(r['limit_rows_per_s'])} "
            f"| {_pct(r['achieved_fraction'])} | {_f(r['output_tokens_per_s'], ',.0f')} | {_f(e['cpu_ms_per_row'], '.3f')} "
            f"| {_f(e['peak_rss_mb'], '.0f')} | {rss} | {_f(lat['p50_s'], '.3f')} / {_f(lat['p90_s'], '.3f')} / "
            f"{_f(lat['p99_s'], '.3f')} | {_pct(mk['cpu_util_window'])}{' (saturated)' if mk['saturated'] else ''} "
            f"| {_f(r['window_s'])} |")
    lines += ["", "Time to first byte: not applicable (the engine sends non-streaming requests).", ""]
    lines += ["### Targets (issue 5; 2-core machine)", "", "| target | figure | result |", "|---|---|---|"]
    lat = results.get("latency")
    if lat:
        lines.append(f"| `latency`: achieved >= {TARGETS['latency_fraction']:.0%} of the limit at 32,000 rows "
                     f"| {_pct(lat['achieved_fraction'])} ({_f(lat['rows_per_s'])} of {_f(lat['limit_rows_per_s'])} rows/s) "
                     f"| {_ok(lat['targets'].get('achieved_fraction>=0.90'))} |")
    for name in ORDER:
        r = results.get(name)
        if r:
            e = r["engine"]
            fixed = None if e.get("cpu_s_window") is None else e["cpu_s"] - e["cpu_s_window"]
            lines.append(f"| client CPU <= 1.0 ms/row (`{name}`) | {_f(e['cpu_ms_per_row'], '.3f')} ms "
                         f"({_f(e.get('cpu_ms_per_row_window'), '.3f')} ms/row in the window; {_f(fixed, '.1f')} s "
                         f"outside it: start-up, last shard) | {_ok(r['targets'].get('cpu_ms_per_row<=1.0'))} |")
    for name in ("latency", "scale"):
        r = results.get(name)
        if r:
            lines.append(f"| peak RSS <= 250 MB (`{name}`, {r['rows']:,} rows) | {_f(r['engine']['peak_rss_mb'], '.0f')} MB "
                         f"| {_ok(r['targets'].get('peak_rss_mb<=250'))} |")
    rl = results.get("ratelimited")
    if rl and rl.get("ratelimit"):
        w = rl["ratelimit"]
        lines.append(f"| `ratelimited`: >= 90% of 600 requests/min over {_f(w['window_s'], '.0f')} s "
                     f"| {_f(w['completions_per_min'])}/min ({_pct(w['fraction_of_rpm'])}) "
                     f"| {_ok(rl['targets'].get('rpm_fraction>=0.90'))} |")
        lines.append(f"| `ratelimited`: 429 share < 5% | {_pct(rl['share_429'])} of all answers "
                     f"| {_ok(rl['targets'].get('429_share<0.05'))} |")
    ts = results.get(TWO_STAGE_NAME)
    if ts:
        lines += _two_stage_targets(ts)
    rs = results.get("resume")
    if rs:
        worst = max(rs["nothing_left"]["exit_s"], (rs.get("rows_left") or {}).get("first_request_s") or 0.0)
        lines.append(f"| resume start-up with {rs['done_rows']:,} done rows < 5 s | {_f(worst, '.2f')} s | {_ok(rs['pass'])} |")
    lines.append("")
    for name in ORDER:
        r = results.get(name)
        if r:
            lines += _details(name, r)
    if ts:
        lines += _two_stage_details(ts)
    if rs:
        lines += _resume_details(rs)
    if results.get("max_tokens_auto"):
        lines += _max_tokens_details(results["max_tokens_auto"])
    lines += [END]
    return "\n".join(lines)


def _details(name: str, r: dict[str, Any]) -> list[str]:
    p, e, mk = r["params"], r["engine"], r["mock"]
    desc = r.get("description") or ""
    out = [f"### `{name}` — {desc}", "",
           f"Command: `{r['command']}`; {r['date']}; engine at {r.get('git', '?')}; bench wall {r.get('bench_s', '?')} s.", "",
           f"- rows {r['rows']:,} (ok {r['rows_ok']:,}, flagged {r['rows_flagged'] or 0}, failed {r['rows_failed'] or 0}); "
           f"requests {r['requests']:,}, retries {r['retries']:,}",
           f"- steady window {_f(r['window_s'])} s (first request to last answer; the engine's own wall time, "
           f"start-up included: {_f(r['engine_wall_s'])} s); {_f(r['rows_per_s'])} rows/s "
           f"(10–90% phase {_f(r['rows_per_s_10_90'])}), {_f(r['output_tokens_per_s'], ',.0f')} output tokens/s",
           f"- limit {_f(r['limit_rows_per_s'])} rows/s ({r['limit_bound_by'] or 'none: zero latency, CPU-bound'}), "
           f"achieved {_pct(r['achieved_fraction'])}",
           f"- engine: {_f(e['cpu_s'])} s CPU (user {_f(e.get('cpu_user_s'))}, system {_f(e.get('cpu_system_s'))}) "
           f"= {_f(e['cpu_s_per_1000_rows'], '.3f')} s per 1,000 rows "
           f"({_f(e['cpu_ms_per_row_window'], '.3f')} ms/row inside the window, {_pct(e['cpu_util_window'])} of a core); "
           f"peak RSS {_f(e['peak_rss_mb'], '.0f')} MB",
           f"- mock: {_f(mk['cpu_s'])} s CPU ({_pct(mk['cpu_util_window'])} of a core"
           f"{', SATURATED' if mk['saturated'] else ''}); machine {_pct(mk['machine_cpu_util_window'])} busy; "
           f"mean in flight at the mock {_f(mk.get('mean_in_flight_window'))} of {p['concurrency']}; "
           f"HTTP statuses sent (GET /models included) {mk['status']}"
           + (f"; injected faults {mk['faults']}" if mk["faults"] else "")
           + (f"; limiter refusals {mk['limited']}" if mk["limited"] else ""),
           f"- engine endpoint state at the end: {r.get('endpoint')}",
           f"- latency per request p50/p90/p99/max {_f(r['latency']['request']['p50_s'], '.3f')}/"
           f"{_f(r['latency']['request']['p90_s'], '.3f')}/{_f(r['latency']['request']['p99_s'], '.3f')}/"
           f"{_f(r['latency']['request']['max_s'], '.3f')} s; per row (first send to final answer) p50/p99 "
           f"{_f(r['latency']['row']['p50_s'], '.3f')}/{_f(r['latency']['row']['p99_s'], '.3f')} s"]
    if (faults := fault_summary(r)) is not None:
        out.append(f"- {faults}")
    if (rate := rate_limit_summary(r)) is not None:
        out.append(f"- rate limit: {rate}")
    out.append("")
    return out


def _two_stage_targets(r: dict[str, Any]) -> list[str]:
    t, e, split = r["targets"], r["engine"], r.get("cpu_split")
    out = [f"| `two-stage`: makespan <= {TWO_STAGE_TARGETS['ratio_to_ideal']:.2f} x the overlapped ideal "
           f"({r['rows']:,} rows) | {_f(r['makespan_s'])} s = {_f(r['ratio_to_ideal'], '.3f')} x {_f(r['ideal_s'])} s "
           f"(sequential would be {_f(r['sequential_s'])} s) | {_ok(t.get('makespan<=1.10*ideal'))} |"]
    if split:
        for stage in ("generate", "revise"):
            out.append(f"| `two-stage`: CPU <= 1.0 ms/row, {stage} stage | {_f(split[f'{stage}_ms_per_row'], '.3f')} ms "
                       f"| {_ok(t.get(f'cpu_ms_per_row_{stage}<=1.0'))} |")
    else:
        out.append(f"| `two-stage`: CPU <= 2 x 1.0 ms/row, both stages (not split) | {_f(e['cpu_ms_per_row'], '.3f')} ms "
                   f"| {_ok(t.get('cpu_ms_per_row_total<=2.0'))} |")
    out.append(f"| peak RSS <= 250 MB (`two-stage`, {r['rows']:,} rows) | {_f(e['peak_rss_mb'], '.0f')} MB "
               f"| {_ok(t.get('peak_rss_mb<=250'))} |")
    return out


def _two_stage_details(r: dict[str, Any]) -> list[str]:
    p, e, split = r["params"], r["engine"], r.get("cpu_split")
    out = [f"### `two-stage` — {r.get('description') or ''}", "",
           f"Command: `{r['command']}`; {r['date']}; engine at {r.get('git', '?')}; bench wall {r.get('bench_s', '?')} s. "
           f"Two mock processes (one rate-limit bucket each); the engine is "
           f"{'told' if p['tell_engine_rpm'] else 'not told'} the limits (`requests_per_minute`). "
           f"Student answers {p['student_tokens']} tokens (~{p['student_tokens'] * 4 / 1000:.1f} KB); latency "
           f"{p['latency_dist']} (sigma {p['latency_sigma']}).", "",
           f"- makespan {_f(r['makespan_s'])} s (first student request to last teacher answer; engine process "
           f"{_f(r['process_wall_s'])} s with start-up); overlapped ideal {_f(r['ideal_s'])} s (bound by the "
           f"{r['bound_by']} stage), sequential {_f(r['sequential_s'])} s; ratio {_f(r['ratio_to_ideal'], '.3f')} "
           f"of the ideal, {_f(r['ratio_to_sequential'], '.3f')} of the sequential; stages overlapped "
           f"{_f(r['overlap_s'])} s; peak hand-off backlog {_f(r['handoff_backlog_peak'], ',')} rows",
           "",
           "| stage | model | rpm | rows | failed | requests | retries | 429 share | window s | rows/s | limit rows/s "
           "| request p50 / p99 s | mock CPU s |",
           "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for name in ("generate", "revise"):
        s = r["stages"][name]
        lat = s["latency_request"]
        out.append(f"| {name} | {s['model']} | {s['rpm']:,} | {_f(s['rows_done'], ',')} | {s['rows_failed'] or '–'} "
                   f"| {_f(s['requests'], ',')} | {_f(s['retries'], ',')} | {_pct(s['share_429'])} | {_f(s['window_s'])} "
                   f"| {_f(s['rows_per_s'])} | {_f(s['limit_rows_per_s'])} | {_f(lat['p50_s'], '.2f')} / "
                   f"{_f(lat['p99_s'], '.2f')} | {_f(s['mock']['cpu_s'])} |")
    out.append("")
    cpu = (f"- engine: {_f(e['cpu_s'])} s CPU (user {_f(e['cpu_user_s'])}, system {_f(e['cpu_system_s'])}) = "
           f"{_f(e['cpu_ms_per_row'], '.3f')} ms per input row for both stages")
    if split:
        cpu += (f"; split by running the generate stage alone ({_f(split['generate_only_cpu_s'])} s CPU, "
                f"{_f(split['generate_only_wall_s'])} s): generate {_f(split['generate_ms_per_row'], '.3f')} ms/row, "
                f"revise {_f(split['revise_ms_per_row'], '.3f')} ms/row (the rest)")
    out.append(cpu + f"; peak RSS {_f(e['peak_rss_mb'], '.0f')} MB (RSS at 10/50/90% of the revisions: "
               + ("/".join(f"{v:.0f}" for v in e["rss_mb_at_progress"].values()) or "–") + " MB)")
    out.append("")
    return out


def _resume_details(rs: dict[str, Any]) -> list[str]:
    nl, rl = rs["nothing_left"], rs.get("rows_left")
    out = ["### Resume start-up (issue 3)", "",
           f"Command: `{rs.get('command')}`; {rs.get('date')}; engine at {rs.get('git', '?')}; the kept `scale` run "
           f"({rs['done_rows']:,} done rows); median of {rs['repeat']}, warm page cache.", "",
           f"- nothing left to do: `clair run` exits after {_f(nl['exit_s'], '.2f')} s "
           f"(CPU {_f(nl.get('cpu_s'), '.2f')} s, peak RSS {_f(nl.get('peak_rss_mb'), '.0f')} MB)"]
    if rl:
        out.append(f"- {rl['rows']:,} rows left: first request after {_f(rl['first_request_s'], '.2f')} s, "
                   f"exit after {_f(rl['exit_s'], '.2f')} s (peak RSS {_f(rl.get('peak_rss_mb'), '.0f')} MB)")
    out.append("- in-process phases (engine functions timed one by one): "
               + ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in rs["phases"].items()))
    out.append("")
    return out


def _max_tokens_details(r: dict[str, Any]) -> list[str]:
    p, a = r["params"], r["arms"]
    fixed, auto = a["fixed_4096"], a["auto"]
    out = ["### `generation.max_tokens: auto` versus a fixed 4096 (issue 15)", "",
           f"Command: `{r['command']}`; {r['date']}; engine at {r.get('git', '?')}; bench wall {r.get('bench_s')} s. "
           f"{p['rows']:,} rows per arm against the mock ({p['latency_ms']} ms latency, {p['concurrency']} in flight) "
           f"with {p['tpm']:,} tokens/min counted as prompt + max_tokens at admission (like OpenAI) and "
           f"{p['ramble']:.0%} of answers rambling on to max_tokens; the engine is told the limit "
           "(`tokens_per_minute`, `tpm_counts_max_tokens: true`).", "",
           "| | fixed 4096 | auto |", "|---|---:|---:|"]
    for label, key, spec in (("tokens reserved per request (prompt + max_tokens)", "reserved_tokens_per_request", ",.0f"),
                             ("max_tokens per request", "max_tokens_per_request", ",.0f"),
                             ("rows/s", "rows_per_s", ".2f"),
                             ("output tokens paid", "output_tokens_paid", ","),
                             ("output tokens paid on truncated (rambling) answers", "output_tokens_paid_on_truncated", ","),
                             ("truncated rows", "truncated_rows", ","),
                             ("truncation rate", "truncation_rate", ".2%"),
                             ("429s of the mock's tokens limit", "mock_429_tpm", ",")):
        out.append(f"| {label} | {format(fixed[key], spec)} | {format(auto[key], spec)} |")
    out += ["", "Checks: " + "; ".join(f"{what}: {_ok(ok)}" for what, ok in r["checks"].items()), ""]
    return out


def write_md(results: dict[str, Any]) -> None:
    block = render(results)
    if RESULTS_MD.exists():
        text = RESULTS_MD.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            RESULTS_MD.write_text(head + block + tail)
            return
        RESULTS_MD.write_text(text.rstrip() + "\n\n" + block + "\n")
        return
    RESULTS_MD.write_text("# Benchmark results\n\n" + block + "\n")


if __name__ == "__main__":
    sys.exit(main())
