"""A result as text: the lines ``clair bench`` prints, and the sentences RESULTS.md reuses.

``format_result`` renders a ``summarize`` result for the terminal; ``fault_summary`` and
``rate_limit_summary`` are the fault-adjusted limit and requests/min sentences (None when the
scenario has none); ``format_two_stage`` renders the ``two-stage`` scenario. Pure.
"""

from __future__ import annotations

from typing import Any

__all__ = ["fault_summary", "format_result", "format_two_stage", "rate_limit_summary"]


def _f(x: Any, spec: str = ".1f", unit: str = "") -> str:
    return "n/a" if x is None else f"{x:{spec}}{unit}"


def _pct(x: float | None, spec: str = ".1f") -> str:
    return _f(x if x is None else x * 100, spec, "%")


def fault_summary(res: dict[str, Any]) -> str | None:
    """The fault-adjusted limit sentence (``faults`` scenario), for the terminal and RESULTS.md."""
    if res.get("limit_fault_adjusted_rows_per_s") is None:
        return None
    return (f"fault-adjusted limit (429s answer at once, hangs hold a slot for the "
            f"{res['params']['request_timeout_s']:g} s timeout, retried attempts counted) "
            f"{_f(res['limit_fault_adjusted_rows_per_s'])} rows/s; achieved {_pct(res['achieved_fraction_fault_adjusted'])}")


def rate_limit_summary(res: dict[str, Any]) -> str | None:
    """The requests/min sentence (``ratelimited`` scenario), for the terminal and RESULTS.md."""
    w = res.get("ratelimit")
    if not w:
        return None
    return (f"{_f(w.get('completions_per_min'))} admitted requests/min over the first {_f(w.get('window_s'), '.0f')} s "
            f"({_pct(w.get('fraction_of_rpm'))} of {res['params']['rpm']}), {_f(w.get('sent_per_min'))} sent/min; "
            f"429 share {_pct(w.get('share_429'))} in that window, {_pct(res.get('share_429'))} over the run")


def format_result(res: dict[str, Any]) -> str:
    e, m, lat = res["engine"], res["mock"], res["latency"]
    req = lat["request"]
    lines = [
        f"scenario {res['scenario']}: {res['rows']:,} rows, {res['requests']:,} requests, {res['retries']:,} retries"
        + (f", failed {res['rows_failed']}" if res["rows_failed"] else ""),
        f"  throughput     {_f(res['rows_per_s'])} rows/s, {_f(res['output_tokens_per_s'], ',.0f')} output tokens/s "
        f"over the {_f(res['window_s'])}s window (first request to last answer; engine wall incl. start-up "
        f"{_f(res['engine_wall_s'])}s)",
        f"  limit          {_f(res['limit_rows_per_s'])} rows/s ({res['limit_bound_by'] or 'none: CPU-bound'}); "
        f"achieved {_f(res['achieved_fraction'] and res['achieved_fraction'] * 100, '.1f', '%')}"
        f"  (10-90% phase: {_f(res['rows_per_s_10_90'])} rows/s)",
        f"  engine CPU     {_f(e['cpu_s_per_1000_rows'], '.3f')} s per 1,000 rows ({_f(e['cpu_ms_per_row'], '.3f')} ms/row "
        f"end to end; {_f(e['cpu_ms_per_row_window'], '.3f')} ms/row in the window, "
        f"{_f(e['cpu_util_window'] and e['cpu_util_window'] * 100, '.0f', '%')} of a core)",
        f"  engine memory  peak RSS {_f(e['peak_rss_mb'])} MB; RSS at 10/50/90% of rows: "
        + ", ".join(f"{v:.0f}" for v in e["rss_mb_at_progress"].values()) + " MB"
        + (f" (sampled peaks: private {_f(e.get('peak_anon_mb'))} MB, mapped files {_f(e.get('peak_file_mb'))} MB)"
           if e.get("peak_anon_mb") else ""),
        f"  mock           CPU {_f(m['cpu_s'])} s, {_f(m['cpu_util_window'] and m['cpu_util_window'] * 100, '.0f', '%')}"
        f" of a core{' — SATURATED: the mock may be what limits this run' if m['saturated'] else ''}; "
        f"machine {_f(m['machine_cpu_util_window'] and m['machine_cpu_util_window'] * 100, '.0f', '%')} busy",
        f"  in flight      mean {_f(m['mean_in_flight_window'])} at the mock over the window (limit "
        f"{res['params']['concurrency']}; engine's final concurrency limit {res['endpoint'].get('concurrency_limit')}"
        + (f", learned rpm {_f(res['endpoint'].get('rpm_limit'))}" if res["endpoint"].get("rpm_limit") else "") + ")",
        f"  latency        request p50 {_f(req['p50_s'], '.3f')}s p90 {_f(req['p90_s'], '.3f')}s "
        f"p99 {_f(req['p99_s'], '.3f')}s; time to first byte: n/a (non-streaming)",
    ]
    if (faults := fault_summary(res)) is not None:
        lines.append(f"  faults         {faults}; mock faults {m['faults']}")
    if (rate := rate_limit_summary(res)) is not None:
        lines.append(f"  rate limit     {rate}")
    if res["targets"]:
        lines.append("  targets        " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in res["targets"].items()))
    return "\n".join(lines)



def format_two_stage(res: dict[str, Any]) -> str:
    """The ``two-stage`` scenario's lines (a ``summarize_two_stage`` result)."""
    e, st, split = res["engine"], res["stages"], res.get("cpu_split")
    lines = [
        f"scenario {res['scenario']}: {res['rows']:,} rows; generate {_f(st['generate']['rows_done'], ',')} rows, "
        f"revise {_f(st['revise']['rows_done'], ',')} rows",
        f"  makespan       {_f(res['makespan_s'])}s (first student request to last teacher answer; engine wall incl. "
        f"start-up {_f(res['process_wall_s'])}s)",
        f"  ideal          {_f(res['ideal_s'])}s overlapped (N / min(r1, r2) + one latency per stage, bound by "
        f"{res['bound_by']}); sequential {_f(res['sequential_s'])}s",
        f"  ratio          {_f(res['ratio_to_ideal'], '.3f')} of the ideal, {_f(res['ratio_to_sequential'], '.3f')} of "
        f"the sequential; stages overlapped {_f(res['overlap_s'])}s; hand-off backlog peak "
        f"{_f(res['handoff_backlog_peak'], ',')} rows",
    ]
    for name in ("generate", "revise"):
        s = st[name]
        req = s["latency_request"]
        lines.append(
            f"  {name:<14} {_f(s['rows_per_s'])} rows/s over {_f(s['window_s'])}s (limit {_f(s['limit_rows_per_s'])}, "
            f"{s['rpm']} rpm); requests {_f(s['requests'], ',')}, retries {_f(s['retries'], ',')}, 429 share "
            f"{_pct(s['share_429'])}; failed {s['rows_failed'] or {}}; request p50/p99 {_f(req['p50_s'], '.2f')}/"
            f"{_f(req['p99_s'], '.2f')}s; mock CPU {_f(s['mock']['cpu_s'])}s")
    cpu = (f"  engine CPU     {_f(e['cpu_s'])}s = {_f(e['cpu_ms_per_row'], '.3f')} ms per input row for both stages")
    if split:
        cpu += (f"; generate {_f(split['generate_ms_per_row'], '.3f')} ms/row (the stage run alone: "
                f"{_f(split['generate_only_cpu_s'])}s), revise {_f(split['revise_ms_per_row'], '.3f')} ms/row (the rest)")
    else:
        cpu += f" ({_f(e['cpu_ms_per_row_per_stage_mean'], '.3f')} per stage on average; not split)"
    lines.append(cpu)
    lines.append(f"  engine memory  peak RSS {_f(e['peak_rss_mb'])} MB; RSS at 10/50/90% of revisions: "
                 + ", ".join(f"{v:.0f}" for v in e["rss_mb_at_progress"].values()) + " MB")
    if res["targets"]:
        lines.append("  targets        " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in res["targets"].items()))
    return "\n".join(lines)
