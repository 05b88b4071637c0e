"""One run's figures: the engine's report, the sampled series and the mock's counters combined into a result dict.

``summarize`` computes the JSON-able result ``clair bench`` writes (window throughput, limit and
achieved fraction, engine CPU and memory, mock load, latency, fault and rate-limit shares, the
issue's ``TARGETS`` checked); ``rate_window`` is the requests/min over the rate-limit window. Pure
(the machine's core count aside); the definitions are in the package docstring.
"""

from __future__ import annotations

import math
import os
from typing import Any

from engine.tools.bench.limits import achieved_fraction, fault_adjusted_limit, per_thousand, theoretical_limit
from engine.tools.bench.presets import Scenario
from engine.tools.bench.samples import Sample, steady_window, time_when, value_at

__all__ = ["MOCK_SATURATED", "TARGETS", "TTFB_NOTE", "check_targets", "rate_window", "summarize"]

#: mock CPU use (fraction of one core over the window) from which the mock counts as saturated
MOCK_SATURATED = 0.85
TTFB_NOTE = "not applicable: the engine sends non-streaming requests (stream: false)"


def summarize(
    sc: Scenario,
    rep: dict[str, Any],
    samples: list[Sample],
    before: dict[str, Any],
    after: dict[str, Any],
    ru: Any,
    wall: float,
) -> dict[str, Any]:
    rows = rep["rows_done"] - rep["resumed_from"]
    win = steady_window(samples)
    window_s = (win[1] - win[0]) if win else None
    rows_per_s = rows / window_s if window_s else 0.0
    tokens_per_s = rep["completion_tokens"] / window_s if window_s else 0.0
    mean_lat = sc.latency_ms / 1000.0
    tokens_per_request = None
    if sc.tpm is not None:  # what the mock charges: prompt + max_tokens
        n = max(1, after["requests"] - before["requests"])
        tokens_per_request = (after["prompt_tokens"] - before["prompt_tokens"]) / n + sc.max_tokens
    limit, bound = theoretical_limit(sc.concurrency, mean_lat, sc.rpm, sc.tpm, tokens_per_request)
    frac = achieved_fraction(rows_per_s, limit)

    # rows/s between 10% and 90% of the answers: the fill phase, without ramp-up and the tail's drain
    n0 = samples[0].responses
    total = samples[-1].responses - n0
    mid = None
    if total >= 20:
        ta = time_when(samples, "responses", n0 + 0.1 * total)
        tb = time_when(samples, "responses", n0 + 0.9 * total)
        if ta is not None and tb is not None and tb > ta:
            mid = 0.8 * total / (tb - ta) * (rows / total)

    cpu_total = ru.ru_utime + ru.ru_stime
    cpu_window = None
    if win:
        a, b = value_at(samples, win[0], "engine_cpu_s"), value_at(samples, win[1], "engine_cpu_s")
        cpu_window = b - a
    mock_cpu = after["cpu_s"] - before["cpu_s"]
    mock_cpu_window = (value_at(samples, win[1], "mock_cpu_s") - value_at(samples, win[0], "mock_cpu_s")) if win else None
    mock_util = mock_cpu_window / window_s if (window_s and mock_cpu_window is not None) else None
    cores = os.cpu_count() or 1
    rss_at = {}
    live = [s for s in samples if s.engine_rss_mb is not None]
    for pct in (10, 50, 90):
        t = time_when(samples, "responses", n0 + pct / 100 * total) if total else None
        if t is not None and live:
            near = min(live, key=lambda s, t=t: abs(s.t - t))  # type: ignore[misc]
            rss_at[f"{pct}%"] = round(near.engine_rss_mb or 0.0, 1)

    ep = rep["endpoints"][0] if rep.get("endpoints") else {}
    ep_lat = ep.get("latency", {})
    in_win = [s for s in samples[1:-1] if win and win[0] <= s.t <= win[1]]
    mean_in_flight = sum(s.in_flight for s in in_win) / len(in_win) if in_win else None
    status = {k: after["status"].get(k, 0) - before["status"].get(k, 0) for k in after.get("status", {})}
    status = {k: v for k, v in status.items() if v}
    responses = sum(status.values()) - (after["other_requests"] - before["other_requests"])
    res: dict[str, Any] = {
        "scenario": sc.name,
        "description": sc.description,
        "params": sc.params(),
        "rows": rows,
        "rows_ok": rep["rows_ok"],
        "rows_flagged": rep["rows_flagged"],
        "rows_failed": rep["rows_failed"],
        "requests": rep["requests"],
        "retries": rep["retries"],
        "window_s": _r(window_s),
        "window_start_s": _r(win[0]) if win else None,
        "engine_wall_s": rep["wall_s"],
        "process_wall_s": _r(wall),
        "rows_per_s": _r(rows_per_s),
        "rows_per_s_10_90": _r(mid),
        "output_tokens_per_s": _r(tokens_per_s, 1),
        "limit_rows_per_s": _r(limit) if math.isfinite(limit) else None,
        "limit_bound_by": bound,
        "achieved_fraction": _r(frac, 4),
        "engine": {
            "cpu_s": _r(cpu_total),
            "cpu_user_s": _r(ru.ru_utime),
            "cpu_system_s": _r(ru.ru_stime),
            "cpu_ms_per_row": _r(cpu_total * 1000 / rows) if rows else None,
            "cpu_s_per_1000_rows": _r(per_thousand(cpu_total, rows)),
            "cpu_s_window": _r(cpu_window),
            "cpu_ms_per_row_window": _r(cpu_window * 1000 / rows) if (rows and cpu_window is not None) else None,
            "cpu_util_window": _r(cpu_window / window_s) if (window_s and cpu_window is not None) else None,
            "peak_rss_mb": _r(max((x.engine_hwm_mb or 0.0) for x in samples), 1),
            "peak_anon_mb": _r(max((x.engine_anon_mb or 0.0) for x in samples), 1),
            "peak_file_mb": _r(max((x.engine_file_mb or 0.0) for x in samples), 1),
            "rss_mb_at_progress": rss_at,
        },
        "mock": {
            "cpu_s": _r(mock_cpu),
            "cpu_util_window": _r(mock_util),
            "saturated": bool(mock_util is not None and mock_util >= MOCK_SATURATED),
            "machine_cpu_util_window": _r(((cpu_window or 0) + (mock_cpu_window or 0)) / window_s / cores)
            if window_s else None,
            "status": status,
            "faults": {k: v - before["faults"].get(k, 0) for k, v in after["faults"].items()
                       if v - before["faults"].get(k, 0)},
            "limited": {k: v - before["limited"].get(k, 0) for k, v in after["limited"].items()
                        if v - before["limited"].get(k, 0)},
            "peak_in_flight": after["peak_in_flight"],
            "mean_in_flight_window": _r(mean_in_flight, 1),
        },
        "endpoint": {k: ep.get(k) for k in ("concurrency_limit", "rpm_limit", "rate_limited", "errors",
                                             "breaker_opened", "state")},
        "latency": {
            "request": _lat(ep_lat),
            "row": _lat(rep["latency"]),
            "ttfb": None,
            "ttfb_note": TTFB_NOTE,
        },
        "share_429": _r(status.get("429", 0) / responses, 4) if responses else None,
    }
    if sc.faults:
        res["limit_fault_adjusted_rows_per_s"] = _r(
            min(limit, fault_adjusted_limit(sc.concurrency, mean_lat, sc.faults, sc.request_timeout_s)))
        adj = res["limit_fault_adjusted_rows_per_s"]
        res["achieved_fraction_fault_adjusted"] = _r(achieved_fraction(rows_per_s, adj), 4) if adj else None
    if sc.window_s and win:
        res["ratelimit"] = rate_window(samples, win[0], sc.window_s, sc.rpm)
    res["targets"] = check_targets(sc, res)
    return res


def rate_window(samples: list[Sample], start: float, window_s: float, rpm: int | None) -> dict[str, Any]:
    """Admitted (200) and sent requests per minute over ``window_s`` from ``start`` (or what the run had)."""
    end = min(start + window_s, samples[-1].t)
    span = end - start
    if span <= 0:
        return {}
    ok = value_at(samples, end, "completions") - value_at(samples, start, "completions")
    sent = value_at(samples, end, "requests") - value_at(samples, start, "requests")
    r429 = value_at(samples, end, "status_429") - value_at(samples, start, "status_429")
    per_min = ok * 60 / span
    return {
        "window_s": _r(span),
        "full_window": span >= window_s - 1e-6,
        "completions_per_min": _r(per_min, 1),
        "sent_per_min": _r(sent * 60 / span, 1),
        "share_429": _r(r429 / sent, 4) if sent else None,
        "fraction_of_rpm": _r(per_min / rpm, 4) if rpm else None,
    }


#: the issue's targets (2-core machine, mock and engine on the same machine)
TARGETS = {"latency_fraction": 0.90, "cpu_ms_per_row": 1.0, "peak_rss_mb": 250.0,
           "ratelimited_fraction": 0.90, "ratelimited_429_share": 0.05}


def check_targets(sc: Scenario, res: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    e = res["engine"]
    if e["cpu_ms_per_row"] is not None:
        out["cpu_ms_per_row<=1.0"] = e["cpu_ms_per_row"] <= TARGETS["cpu_ms_per_row"]
    out["peak_rss_mb<=250"] = e["peak_rss_mb"] <= TARGETS["peak_rss_mb"]
    if sc.name == "latency" and res["achieved_fraction"] is not None:
        out["achieved_fraction>=0.90"] = res["achieved_fraction"] >= TARGETS["latency_fraction"]
    if sc.name == "ratelimited" and res.get("ratelimit"):
        rl = res["ratelimit"]
        if rl.get("fraction_of_rpm") is not None:
            out["rpm_fraction>=0.90"] = rl["fraction_of_rpm"] >= TARGETS["ratelimited_fraction"]
        if res["share_429"] is not None:
            out["429_share<0.05"] = res["share_429"] < TARGETS["ratelimited_429_share"]
    return out


def _lat(s: dict[str, Any]) -> dict[str, Any]:
    return {k: _r(s.get(k), 4) for k in ("count", "mean_s", "p50_s", "p90_s", "p99_s", "max_s")}


def _r(x: float | None, nd: int = 3) -> float | None:
    if x is None:
        return None
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return round(x, nd)

