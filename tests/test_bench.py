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
from engine.tools.bench.report import fault_summary, format_result, format_two_stage, rate_limit_summary
from engine.tools.bench.results import rate_window
from engine.tools.bench.run import run_scenario
from engine.tools.bench.samples import Sample, steady_window
from engine.tools.bench.twostage import (
    TWO_STAGE,
    ideal_makespan,
    sequential_makespan,
    stage_rate,
    summarize_two_stage,
    write_generate_only_job,
    write_two_stage_job,
)
from engine.tools.bench.twostage_run import run_two_stage

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


# ------------------------------------------------------------------------------------------ two-stage (issue 16)


def test_two_stage_ideal_is_the_slower_stage_plus_one_latency_each() -> None:
    ts = TWO_STAGE  # 32,000 rows, student 6,000 rpm / 3 s, teacher 4,000 rpm / 5 s, 1,024 in flight each
    r1, r2 = stage_rate(ts.student_concurrency, 3.0, 6000), stage_rate(ts.teacher_concurrency, 5.0, 4000)
    assert (r1, r2) == (pytest.approx(100.0), pytest.approx(4000 / 60))
    assert ideal_makespan(32_000, (r1, r2), (3.0, 5.0)) == pytest.approx(32_000 / (4000 / 60) + 8.0)  # 488 s
    assert sequential_makespan(32_000, (r1, r2), (3.0, 5.0)) == pytest.approx(320.0 + 480.0 + 8.0)
    # the slower stage paces the run whichever it is; concurrency / latency binds when it is the smaller term
    assert ideal_makespan(600, (5.0, 10.0), (1.0, 2.0)) == pytest.approx(123.0)
    assert stage_rate(16, 2.0, 6000) == pytest.approx(8.0)
    assert TWO_STAGE.student_rpm != TWO_STAGE.teacher_rpm  # the issue asks for L1 != L2
    with pytest.raises(ValueError):
        dataclasses.replace(TWO_STAGE, rows=0)


def test_two_stage_jobs_are_valid_configs_pointing_each_stage_at_its_mock(tmp_path: Path) -> None:
    from engine.core.config import load_config

    ts = dataclasses.replace(TWO_STAGE, rows=123)
    inp, _ = ensure_data(200, tmp_path / "data")
    job = write_two_stage_job(ts, inp, tmp_path / "run", "http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1",
                              tmp_path / "job.yaml")
    cfg = load_config(job)
    assert cfg.has_generate and cfg.has_revise and cfg.input.limit == 123
    assert cfg.input.columns.task_column == "prompt" and cfg.input.columns.student_solution is None
    (g,) = cfg.generate.endpoints  # type: ignore[union-attr]
    (t,) = cfg.endpoints
    assert (g.url, g.model, g.requests_per_minute, g.max_concurrency) == ("http://127.0.0.1:1/v1", "mock-student",
                                                                          6000, 1024)
    assert (t.url, t.model, t.requests_per_minute) == ("http://127.0.0.1:2/v1", "mock-clair", 4000)
    assert cfg.generate.max_tokens == ts.student_max_tokens  # type: ignore[union-attr]
    gen = load_config(write_generate_only_job(ts, inp, tmp_path / "g", "http://127.0.0.1:1/v1", tmp_path / "g.yaml"))
    assert gen.has_generate and not gen.has_revise
    assert gen.generate == cfg.generate  # the very same generate stage, alone
    untold = load_config(write_two_stage_job(dataclasses.replace(ts, tell_engine_rpm=False), inp, tmp_path / "r",
                                             "http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1", tmp_path / "u.yaml"))
    assert untold.endpoints[0].requests_per_minute is None


def test_two_stage_mocks_serve_their_model_at_their_limit() -> None:
    import urllib.request

    from engine.tools.mockserver_proc import MockProcess

    ts = dataclasses.replace(TWO_STAGE, student_latency_ms=0.0, teacher_latency_ms=0.0)
    assert "--student-tokens" in ts.student_mock_args() and "900" in ts.student_mock_args()
    with MockProcess(ts.student_mock_args()) as s, MockProcess(ts.teacher_mock_args()) as t:
        for mock, model in ((s, "mock-student"), (t, "mock-clair")):
            with urllib.request.urlopen(mock.url + "/models", timeout=10) as r:
                assert model in {m["id"] for m in orjson.loads(r.read())["data"]}
        body = orjson.dumps({"model": "mock-student", "max_tokens": 2048,
                             "messages": [{"role": "user", "content": "How do I learn to play the violin?"}]})
        req = urllib.request.Request(s.url + "/chat/completions", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            answer = orjson.loads(r.read())
            headers = dict(r.headers)
        assert len(answer["choices"][0]["message"]["content"]) >= 900 * 4 * 0.9  # ~3.6 KB, realistic
        assert headers.get("x-ratelimit-limit-requests") == "6000"
        assert s.stats()["student_requests"] == 1 and t.stats()["requests"] == 0


def _series(points: list[tuple[float, int, int]], cpu_per_s: float = 0.1, hwm: float = 150.0) -> list[Sample]:
    """(t, requests, completions) points of one mock: every request answered, no 429s, a flat RSS."""
    return [Sample(t=t, requests=rq, responses=c, completions=c, status_429=0, in_flight=rq - c, mock_cpu_s=t / 10,
                   engine_cpu_s=t * cpu_per_s, engine_rss_mb=hwm - 10, engine_hwm_mb=hwm) for t, rq, c in points]


def _stage_report(rows: int) -> dict[str, Any]:
    return {"rows_done": rows, "resumed_from": 0, "rows_ok": rows, "rows_flagged": {}, "rows_failed": {},
            "requests": rows, "retries": 0, "completion_tokens": rows * 900, "wall_s": 12.0,
            "endpoints": [{"latency": {"count": rows, "mean_s": 1.0, "p50_s": 1.0, "p90_s": 1.0, "p99_s": 1.0,
                                       "max_s": 1.0}}]}


def _stats(requests: int, cpu_s: float) -> dict[str, Any]:
    return {"requests": requests, "completions": requests, "status": {"200": requests + 1}, "other_requests": 1,
            "cpu_s": cpu_s, "limited": {}, "peak_in_flight": 10}


def test_summarize_two_stage_computes_makespan_ratios_and_cpu_split() -> None:
    # 600 rows; the student runs from 1.0 s to 7.0 s, the teacher from 2.0 s to 11.0 s (halfway between samples)
    ts = dataclasses.replace(TWO_STAGE, rows=600, student_rpm=6000, teacher_rpm=4000, student_latency_ms=1000.0,
                             teacher_latency_ms=1000.0)
    t = (0.0, 0.5, 1.5, 2.5, 4.0, 6.5, 7.5, 10.5, 11.5, 12.0)  # both mocks are sampled at the same times
    student = _series(list(zip(t, (0, 0, 100, 200, 400, 600, 600, 600, 600, 600),
                               (0, 0, 0, 100, 300, 550, 600, 600, 600, 600), strict=True)))
    teacher = _series(list(zip(t, (0, 0, 0, 50, 150, 350, 450, 600, 600, 600),
                               (0, 0, 0, 0, 100, 300, 400, 590, 600, 600), strict=True)))
    rep = {**_stage_report(600), "extra": {"stages": {"generate": _stage_report(600)}}}
    before = {"student": _stats(0, 0.0), "teacher": _stats(0, 0.0)}
    after = {"student": _stats(600, 1.0), "teacher": _stats(600, 2.0)}
    res = summarize_two_stage(ts, rep, student, teacher, (0.9, 0.3), 12.0, before, after,
                              {"cpu_s": 0.48, "rows": 600, "wall_s": 8.0})
    assert res["stages"]["generate"]["window_s"] == pytest.approx(6.0)  # 1.0 .. 7.0
    assert res["stages"]["revise"]["window_s"] == pytest.approx(9.0)  # 2.0 .. 11.0
    assert res["makespan_s"] == pytest.approx(10.0)  # first student request to last teacher answer
    assert res["ideal_s"] == pytest.approx(600 / (4000 / 60) + 2.0)  # 11 s: the teacher's limit binds
    assert res["sequential_s"] == pytest.approx(6.0 + 9.0 + 2.0)
    assert res["ratio_to_ideal"] == pytest.approx(10.0 / 11.0, rel=1e-3) and res["bound_by"] == "revise"
    assert res["ratio_to_sequential"] == pytest.approx(10.0 / 17.0, rel=1e-3)
    assert res["overlap_s"] == pytest.approx(5.0)  # both stages active from 2.0 to 7.0
    assert res["handoff_backlog_peak"] == 550 - 350  # student answers sent minus teacher requests, at 6.5 s
    assert res["stages"]["generate"]["rows_done"] == 600 and res["stages"]["revise"]["rows_per_s"] == pytest.approx(600 / 9, rel=1e-3)
    assert res["stages"]["revise"]["mock"]["cpu_s"] == pytest.approx(2.0) and res["stages"]["revise"]["share_429"] == 0
    e, split = res["engine"], res["cpu_split"]
    assert e["cpu_s"] == pytest.approx(1.2) and e["cpu_ms_per_row"] == pytest.approx(2.0)
    assert split["generate_ms_per_row"] == pytest.approx(0.8) and split["revise_ms_per_row"] == pytest.approx(1.2)
    assert res["targets"] == {"makespan<=1.10*ideal": True, "cpu_ms_per_row_generate<=1.0": True,
                              "cpu_ms_per_row_revise<=1.0": False, "peak_rss_mb<=250": True}
    text = format_two_stage(res)
    assert "scenario two-stage: 600 rows" in text and "cpu_ms_per_row_revise<=1.0 FAIL" in text
    md = _benchmark_script("run_all").render({"two-stage": {**res, "date": "d", "command": "c"},
                                              "_meta": {"only": ["two-stage"]}})  # RESULTS.md
    assert "| `two-stage`: makespan <= 1.10 x the overlapped ideal (600 rows) | 10.0 s = 0.909 x 11.0 s" in md
    assert "| `two-stage`: CPU <= 1.0 ms/row, revise stage | 1.200 ms | **FAIL** |" in md
    assert "| revise | mock-clair | 4,000 | 600 |" in md
    # without the generate-only run: only the total is known, checked against 1.0 ms per stage on average
    res = summarize_two_stage(ts, rep, student, teacher, (0.9, 0.3), 12.0, before, after)
    assert res["cpu_split"] is None and res["targets"]["cpu_ms_per_row_total<=2.0"] is True
    assert "not split" in format_two_stage(res)


def test_two_stage_runs_on_a_few_hundred_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engine.tools.bench.run.POLL_S", 0.01)
    ts = dataclasses.replace(TWO_STAGE, rows=300, student_rpm=30_000, teacher_rpm=20_000, student_latency_ms=20.0,
                             teacher_latency_ms=30.0, student_tokens=300, student_concurrency=32,
                             teacher_concurrency=32)
    res = run_two_stage(ts, out_dir=tmp_path, data_dir=tmp_path / "data")
    st = res["stages"]
    assert st["generate"]["rows_done"] == 300 and st["revise"]["rows_done"] == 300  # every row, both stages
    assert st["generate"]["requests"] >= 300 and st["revise"]["requests"] >= 300
    assert st["generate"]["mock"]["status"].get("200", 0) >= 300 and st["revise"]["mock"]["status"].get("200", 0) >= 300
    for k in ("generate", "revise"):
        assert st[k]["window_s"] > 0 and st[k]["rows_per_s"] > 0 and st[k]["limit_rows_per_s"] is not None
    assert st["revise"]["window_end_s"] > st["generate"]["window_start_s"]
    assert res["makespan_s"] > 0 and res["ideal_s"] < res["sequential_s"]
    assert res["ratio_to_ideal"] == pytest.approx(res["makespan_s"] / res["ideal_s"], rel=1e-2)
    e, split = res["engine"], res["cpu_split"]
    assert e["cpu_s"] > 0 and e["peak_rss_mb"] > 20
    assert split["generate_only_rows"] == 300 and split["generate_only_cpu_s"] > 0
    assert split["generate_ms_per_row"] + split["revise_ms_per_row"] == pytest.approx(e["cpu_ms_per_row"], abs=2e-3)
    assert set(res["targets"]) == {"makespan<=1.10*ideal", "cpu_ms_per_row_generate<=1.0",
                                   "cpu_ms_per_row_revise<=1.0", "peak_rss_mb<=250"}
    assert "scenario two-stage" in format_two_stage(res) and res["machine"]["cores"]
    md = _benchmark_script("run_all").render({"two-stage": res, "_meta": {"only": ["two-stage"],
                                                                          "machine": res["machine"]}})
    assert "### `two-stage`" in md and "| `two-stage`: makespan <= 1.10 x the overlapped ideal" in md
    assert not (tmp_path / "runs" / "two-stage" / "run").exists()  # not kept unless asked


def test_clair_bench_two_stage_refuses_a_latency_override(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "engine.cli", "bench", "--scenario", "two-stage", "--latency-ms", "5"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "--latency-ms does not apply" in r.stderr
    r = subprocess.run([sys.executable, "-m", "engine.cli", "bench", "--scenario", "two-stage", "--rows", "0"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "rows must be >= 1" in r.stderr
    r = subprocess.run([sys.executable, "-m", "engine.cli", "bench", "--scenario", "nope"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "two-stage" in r.stderr
