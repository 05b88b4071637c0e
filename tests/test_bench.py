"""The benchmark suite: its arithmetic (pure) and a short run of every preset against the real mock.

No test asserts a wall-clock figure: runs are checked for completeness and for consistent arithmetic.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.tools.bench.data import ensure_data
from engine.tools.bench.limits import achieved_fraction, fault_adjusted_limit, per_thousand, theoretical_limit
from engine.tools.bench.presets import FAULT_MIX, PRESETS, Scenario
from engine.tools.bench.report import fault_summary, format_result, rate_limit_summary
from engine.tools.bench.results import rate_window
from engine.tools.bench.run import run_scenario
from engine.tools.bench.samples import Sample, steady_window

# ------------------------------------------------------------------------------------------ arithmetic


def test_limit_is_concurrency_over_latency_without_rate_limits() -> None:
    assert theoretical_limit(256, 0.2) == (pytest.approx(1280.0), "concurrency/latency")
    assert theoretical_limit(512, 2.0) == (pytest.approx(256.0), "concurrency/latency")


def test_limit_takes_the_smallest_term() -> None:
    assert theoretical_limit(256, 0.2, rpm=600) == (pytest.approx(10.0), "requests/min")
    # 1,000,000 tokens/min at 5,000 tokens per request = 200 requests/min = 3.33/s
    lim, bound = theoretical_limit(256, 0.2, rpm=600, tpm=1_000_000, tokens_per_request=5000)
    assert bound == "tokens/min" and lim == pytest.approx(1_000_000 / 60 / 5000)
    # a generous rpm does not bind
    assert theoretical_limit(10, 1.0, rpm=6000) == (pytest.approx(10.0), "concurrency/latency")


def test_zero_latency_and_no_rate_limits_means_no_limit() -> None:
    lim, bound = theoretical_limit(256, 0.0)
    assert math.isinf(lim) and bound is None
    assert achieved_fraction(1500.0, lim) is None
    assert theoretical_limit(256, 0.0, rpm=120) == (pytest.approx(2.0), "requests/min")


def test_limit_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        theoretical_limit(0, 0.2)
    with pytest.raises(ValueError):
        theoretical_limit(8, -1.0)
    with pytest.raises(ValueError):
        theoretical_limit(8, 0.2, tpm=1000)  # tokens per request missing


def test_achieved_fraction() -> None:
    assert achieved_fraction(1152.0, 1280.0) == pytest.approx(0.9)
    assert achieved_fraction(0.0, 10.0) == 0.0
    assert achieved_fraction(5.0, 0.0) is None
    assert per_thousand(0.75, 1000) == pytest.approx(0.75)
    assert per_thousand(1.5, 3000) == pytest.approx(0.5)
    assert per_thousand(1.0, 0) is None


def test_fault_adjusted_limit() -> None:
    # no faults: the plain limit
    assert fault_adjusted_limit(256, 0.2, {}, 10.0) == pytest.approx(1280.0)
    # the issue's mix: retried 9% (429 5, 500 2, hang 1, malformed 1); slot time per attempt
    # 0.94 * 0.2 s + 0.01 * 10 s = 0.288 s; rows/s = 256 * 0.91 / 0.288
    assert fault_adjusted_limit(256, 0.2, FAULT_MIX, 10.0) == pytest.approx(256 * 0.91 / 0.288)
    # answers without markers are final (not retried) and take a normal slot
    assert fault_adjusted_limit(100, 1.0, {"rate_no_marker": 0.5}, 10.0) == pytest.approx(100.0)
    assert fault_adjusted_limit(100, 1.0, {"rate_500": 1.0}, 10.0) == 0.0


def _s(t: float, req: int, resp: int, ok: int | None = None, r429: int = 0) -> Sample:
    return Sample(t=t, requests=req, responses=resp, completions=resp if ok is None else ok, status_429=r429,
                  in_flight=req - resp, mock_cpu_s=0.0, engine_cpu_s=0.0, engine_rss_mb=100.0)


def test_steady_window_runs_from_first_request_to_last_answer() -> None:
    samples = [_s(0.0, 0, 0), _s(1.0, 0, 0), _s(2.0, 10, 0), _s(3.0, 20, 10), _s(4.0, 20, 20), _s(5.0, 20, 20)]
    # first request between t=1 and t=2, last answer between t=3 and t=4: midpoints
    assert steady_window(samples) == (1.5, 3.5)
    assert steady_window([_s(0.0, 0, 0), _s(1.0, 0, 0)]) is None


def test_rate_window_counts_admitted_requests_per_minute() -> None:
    # 10 answers/s for 200 s, 1 in 11 requests refused with 429
    samples = [_s(float(t), 11 * t, 11 * t, ok=10 * t, r429=t) for t in range(0, 201)]
    rw = rate_window(samples, start=0.0, window_s=120.0, rpm=600)
    assert rw["window_s"] == pytest.approx(120.0) and rw["full_window"] is True
    assert rw["completions_per_min"] == pytest.approx(600.0)
    assert rw["fraction_of_rpm"] == pytest.approx(1.0)
    assert rw["share_429"] == pytest.approx(1 / 11, abs=1e-4)
    short = rate_window(samples[:61], start=0.0, window_s=120.0, rpm=600)
    assert short["full_window"] is False and short["window_s"] == pytest.approx(60.0)


def test_presets_follow_the_issue() -> None:
    assert set(PRESETS) == {"latency", "lognormal", "ratelimited", "faults", "scale"}
    lat = PRESETS["latency"]
    assert (lat.rows, lat.concurrency, lat.latency_ms, lat.latency_dist) == (32_000, 256, 200.0, "fixed")
    ln = PRESETS["lognormal"]
    assert (ln.concurrency, ln.latency_ms, ln.latency_dist) == (512, 2000.0, "lognormal")
    assert PRESETS["ratelimited"].rpm == 600 and PRESETS["ratelimited"].window_s == 120.0
    assert PRESETS["faults"].faults == {"rate_429": 0.05, "rate_500": 0.02, "rate_hang": 0.01,
                                        "rate_malformed": 0.01, "rate_no_marker": 0.02}
    assert PRESETS["faults"].retry_after_s == 1.0
    assert PRESETS["scale"].rows == 1_000_000 and PRESETS["scale"].latency_ms == 0.0
    args = PRESETS["faults"].mock_args()
    assert args[args.index("--rate-429") + 1] == "0.05" and args[args.index("--retry-after-s") + 1] == "1"
    with pytest.raises(ValueError):
        dataclasses.replace(lat, rows=0)


def test_cached_input_is_reused_and_prefix_stable(tmp_path: Path) -> None:
    p, n = ensure_data(50, tmp_path)
    assert n == 50 and p.exists()
    again, n2 = ensure_data(30, tmp_path)  # a bigger cached file serves a smaller run (input.limit)
    assert again == p and n2 == 50
    assert not list(tmp_path.glob("*.tmp*"))


# ------------------------------------------------------------------------------------------ short runs

#: each preset shrunk to a few hundred rows and tiny latencies, so a run takes a few seconds
#: (long enough for the 10 ms samples to see a window: about a second each)
SHORT = {
    "latency": dict(rows=300, latency_ms=40.0, concurrency=16),
    "lognormal": dict(rows=300, latency_ms=40.0, concurrency=16),
    "ratelimited": dict(rows=200, latency_ms=5.0, rpm=6000, window_s=1.0),
    "faults": dict(rows=300, latency_ms=5.0, concurrency=64, hang_s=2.0, request_timeout_s=1.0,
                   retry_base_delay_s=0.05),
    "scale": dict(rows=300, concurrency=2),
}


@pytest.mark.parametrize("name", sorted(SHORT))
def test_each_preset_runs_on_a_few_hundred_rows(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engine.tools.bench.run.POLL_S", 0.01)
    sc: Scenario = dataclasses.replace(PRESETS[name], **SHORT[name])
    res = run_scenario(sc, out_dir=tmp_path, data_dir=tmp_path / "data")
    n = sc.rows
    assert res["scenario"] == name and res["rows"] == n  # every row finished (revised or failed)
    assert res["rows_ok"] + sum(res["rows_flagged"].values()) + sum(res["rows_failed"].values()) == n
    assert res["requests"] >= n
    assert res["window_s"] > 0 and res["rows_per_s"] == pytest.approx(n / res["window_s"], rel=max(2e-3, 6e-4 / res["window_s"]))
    lim, bound = theoretical_limit(sc.concurrency, sc.latency_ms / 1000, sc.rpm)
    if math.isinf(lim):
        assert res["limit_rows_per_s"] is None and res["achieved_fraction"] is None
    else:
        assert res["limit_rows_per_s"] == pytest.approx(lim, rel=1e-3) and res["limit_bound_by"] == bound
        assert res["achieved_fraction"] == pytest.approx(res["rows_per_s"] / lim, rel=1e-2)
    e, m = res["engine"], res["mock"]
    assert e["cpu_s"] > 0 and e["cpu_ms_per_row"] == pytest.approx(e["cpu_s"] * 1000 / n, rel=1e-2)
    assert e["peak_rss_mb"] > 20
    if sys.platform.startswith("linux"):  # the split of the peak: private memory and mapped files
        assert 0 < e["peak_anon_mb"] < e["peak_rss_mb"] and 0 < e["peak_file_mb"] < e["peak_rss_mb"]
    assert m["cpu_s"] > 0 and isinstance(m["saturated"], bool)
    lat = res["latency"]
    assert lat["ttfb"] is None and "stream" in lat["ttfb_note"]
    assert lat["request"]["p50_s"] is not None and lat["request"]["p50_s"] <= lat["request"]["p99_s"]
    assert res["output_tokens_per_s"] > 0
    assert "date" in res and res["machine"]["cores"] and res["command"]
    text = format_result(res)
    assert f"scenario {name}" in text and "time to first byte: n/a" in text
    md = _benchmark_script("run_all").render({name: res, "_meta": {"only": [name], "machine": res["machine"]}})  # RESULTS.md
    assert f"| {name} | {n:,} |" in md and f"client CPU <= 1.0 ms/row (`{name}`)" in md
    assert (fault_summary(res) is not None) == (name == "faults")
    assert (rate_limit_summary(res) is not None) == (name == "ratelimited")
    for sentence in filter(None, (fault_summary(res), rate_limit_summary(res))):
        assert sentence in text and sentence in md
    assert not (tmp_path / "runs" / name / "run").exists()  # not kept unless asked
    if name == "faults":
        assert sum(m["faults"].values()) > 0
        assert res["retries"] > 0
        assert res["limit_fault_adjusted_rows_per_s"] < res["limit_rows_per_s"]
    if name == "ratelimited":
        rl = res["ratelimit"]
        assert rl["completions_per_min"] > 0 and rl["fraction_of_rpm"] == pytest.approx(
            rl["completions_per_min"] / sc.rpm, rel=1e-3)
        assert res["share_429"] is not None and 0 <= res["share_429"] < 1


def _benchmark_script(name: str) -> Any:
    """A script of benchmarks/ as a module (they import each other by name, so from that folder)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_clair_bench_command_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "lat.json"
    r = subprocess.run([sys.executable, "-m", "engine.cli", "bench", "--scenario", "latency", "--rows", "200",
                        "--latency-ms", "50", "--concurrency", "16", "--out", str(out)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    res = orjson.loads(out.read_bytes())
    assert res["rows"] == 200 and res["params"]["concurrency"] == 16 and res["params"]["latency_ms"] == 50.0
    assert res["command"].startswith("clair bench") and "--rows 200" in res["command"]
    assert "scenario latency" in r.stdout and "rows/s" in r.stdout
    r = subprocess.run([sys.executable, "-m", "engine.cli", "bench", "--scenario", "nope"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "unknown scenario 'nope'" in r.stderr


def test_duty_cycle_script_writes_its_figures(tmp_path: Path) -> None:
    duty_cycle = _benchmark_script("duty_cycle")
    out = tmp_path / "duty.json"
    assert duty_cycle.main(["--repeat", "1", "--units", "8", "--out", str(out)]) == 0
    res = orjson.loads(out.read_bytes())
    assert set(res["us_per_unit"]) == {"busy", "gap_1ms", "gap_4ms"} and res["ratio_to_busy"]["busy"] == 1.0
    assert all(v > 0 for v in res["us_per_unit"].values())
    assert duty_cycle.main(["--units", "2", "--out", str(out)]) == 2  # a bad argument: a clear error, no figures
