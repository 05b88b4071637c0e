"""The ``two-stage`` scenario (issue 16): its preset, the engine's jobs, and its figures (pure).

A student (policy) model answers every prompt (the generate stage), a teacher revises every answer
(the revise stage), streamed: a row enters the revise stage as soon as its answer is journaled. The
bench runs each stage against its OWN mock process (one rate-limit bucket each): the student
(``--student-model mock-student --student-tokens 900``, enforced ``student_rpm`` = L1) and the teacher
(``mock-clair``, enforced ``teacher_rpm`` = L2).

Definitions (the figures ``clair bench --scenario two-stage`` prints)
---------------------------------------------------------------------
* **stage window**: first chat request to last chat response at that stage's mock (sampled, each
  edge within ``POLL_S / 2``); a stage's rows/s is per second of its window.
* **makespan**: first chat request at the student mock to the last chat response of the teacher mock
  (the engine's start-up and shutdown excluded, as in the other scenarios' steady window;
  ``engine_wall_s`` is printed beside it).
* **stage rate** r_k = min(concurrency_k / mean latency_k, rpm_k / 60) (:func:`theoretical_limit`,
  nominal mock latency). **overlapped ideal** = N / min(r1, r2) + latency_1 + latency_2: the slower
  stage paces the run, and each stage adds one request latency (the first row's student answer
  before the revise stage can start; the last row's revision after its send).
  **sequential** = N / r1 + N / r2 + latency_1 + latency_2: the same stages, one after the other.
  ``ratio_to_ideal`` = makespan / ideal (the target: <= 1.10).
* **CPU per row per stage**: the engine's user+system CPU (``wait4``, start-up included) per input
  row. Both stages run in one process, so the split needs a second run: with ``split_cpu`` the bench
  also runs the generate stage ALONE (a generation-only job: the same rows, student mock, limits and
  concurrency), whose CPU per row is the generate stage's share; the revise stage's share is the
  two-stage run's CPU minus that, per row. Without it, only the total (and total / 2) is known.
* **peak RSS**: the engine's ``VmHWM`` during the two-stage run.
* **hand-off backlog**: student answers the mock has sent minus teacher requests it has received
  (sampled): rows waiting between the stages (answers in the journal or in flight to it, not yet
  sent to the teacher). Its peak shows how far the faster student ran ahead.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from engine.tools.bench.limits import theoretical_limit
from engine.tools.bench.presets import cli_number
from engine.tools.bench.results import _lat, _r
from engine.tools.bench.samples import Sample, steady_window, time_when

__all__ = [
    "STAGES",
    "TWO_STAGE",
    "TWO_STAGE_NAME",
    "TWO_STAGE_TARGETS",
    "TwoStage",
    "ideal_makespan",
    "sequential_makespan",
    "stage_rate",
    "summarize_two_stage",
    "write_generate_only_job",
    "write_two_stage_job",
]

TWO_STAGE_NAME = "two-stage"
#: the stage names, in order (as in the run's report: ``extra.stages.generate``, top level = revise)
STAGES = ("generate", "revise")
STUDENT_MODEL = "mock-student"
TEACHER_MODEL = "mock-clair"
#: the issue's targets for this scenario
TWO_STAGE_TARGETS = {"ratio_to_ideal": 1.10, "cpu_ms_per_row_per_stage": 1.0, "peak_rss_mb": 250.0}


@dataclass(frozen=True)
class TwoStage:
    """The two-stage preset; every field can be overridden with ``dataclasses.replace``.

    Defaults: L1 = 6,000 requests/min for the student, L2 = 4,000 for the teacher (L1 != L2, and the
    teacher the slower one, as in practice: a large teacher behind a tighter quota than a self-hosted
    policy model). The student then runs ahead and about a third of the rows wait between the stages
    when it finishes: the store's hand-off is exercised, not just a lock-step pipe. 100 + 67 requests/s
    is well inside what 2 cores drive (engine ~1 ms CPU per request, each mock well under a core), so
    the limits, not the machine, pace the run. At 32,000 rows: ideal 32,000 / 66.7 + 3 + 5 = 488 s,
    sequential 320 + 480 + 8 = 808 s.
    """

    rows: int = 32_000
    student_rpm: int = 6_000  # L1, enforced by the student mock
    teacher_rpm: int = 4_000  # L2, enforced by the teacher mock
    student_latency_ms: float = 3_000.0  # mean; a ~900-token answer from a served policy model
    teacher_latency_ms: float = 5_000.0  # mean; a revision by a larger model
    latency_dist: str = "lognormal"  # fixed | lognormal
    latency_sigma: float = 0.5  # lognormal shape (0.5: p99 ~2.8x the mean)
    student_tokens: int = 900  # length of a student answer (~3.6 KB)
    student_concurrency: int = 1024  # generate.endpoints[0].max_concurrency
    teacher_concurrency: int = 1024  # endpoints[0].max_concurrency
    student_max_tokens: int = 2048
    teacher_max_tokens: int = 4096
    tell_engine_rpm: bool = True  # endpoints' requests_per_minute = the mock's limit (the user knows the quota)
    split_cpu: bool = True  # also run the generate stage alone: its CPU is the generate stage's share
    description: str = ("a student (6,000 requests/min) answers, a teacher (4,000 requests/min) revises, "
                        "streamed; two mocks, lognormal latency (means 3 s / 5 s)")

    @property
    def name(self) -> str:
        return TWO_STAGE_NAME

    def __post_init__(self) -> None:
        for f in ("rows", "student_rpm", "teacher_rpm", "student_tokens", "student_concurrency",
                  "teacher_concurrency", "student_max_tokens", "teacher_max_tokens"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1")
        if self.student_latency_ms < 0 or self.teacher_latency_ms < 0:
            raise ValueError("latencies must be >= 0")
        if self.latency_dist not in ("fixed", "lognormal"):
            raise ValueError("latency_dist must be fixed or lognormal")

    def _latency_args(self, latency_ms: float) -> list[str]:
        return ["--latency-ms", cli_number(latency_ms), "--latency-dist", self.latency_dist,
                "--latency-sigma", cli_number(self.latency_sigma), "--seed", "0"]

    def student_mock_args(self) -> list[str]:
        """The student mock: answers ``mock-student`` as a policy model (it also serves ``mock-clair``,
        which this scenario never asks it for), at most ``student_rpm`` requests/min."""
        return [*self._latency_args(self.student_latency_ms), "--student-model", STUDENT_MODEL,
                "--student-tokens", str(self.student_tokens), "--rpm", str(self.student_rpm)]

    def teacher_mock_args(self) -> list[str]:
        """The teacher mock: ``mock-clair`` only, at most ``teacher_rpm`` requests/min."""
        return [*self._latency_args(self.teacher_latency_ms), "--model", TEACHER_MODEL,
                "--rpm", str(self.teacher_rpm)]

    def stage_params(self) -> dict[str, tuple[int, float, int]]:
        """Per stage: (concurrency, mean latency in seconds, rpm)."""
        return {"generate": (self.student_concurrency, self.student_latency_ms / 1000.0, self.student_rpm),
                "revise": (self.teacher_concurrency, self.teacher_latency_ms / 1000.0, self.teacher_rpm)}

    def params(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("description")
        return d


TWO_STAGE = TwoStage()


# ------------------------------------------------------------------------------------------------ the jobs


def _endpoint(url: str, model: str, concurrency: int, rpm: int, tell: bool) -> dict[str, Any]:
    ep: dict[str, Any] = {"url": url, "model": model, "max_concurrency": concurrency}
    if tell:
        ep["requests_per_minute"] = rpm
    return ep


def _generate_section(ts: TwoStage, student_url: str) -> dict[str, Any]:
    return {
        "endpoints": [_endpoint(student_url, STUDENT_MODEL, ts.student_concurrency, ts.student_rpm, ts.tell_engine_rpm)],
        "generation": {"temperature": 0.7, "max_tokens": ts.student_max_tokens},
        "system_prompt": None,
        "keep_truncated": False,
    }


def write_two_stage_job(ts: TwoStage, input_path: Path, run_dir: Path, student_url: str, teacher_url: str,
                        path: Path) -> Path:
    """The engine's YAML job: the input's ``prompt`` column as the task, no student column (the generate
    stage writes it), ``generate:`` -> the student mock, ``endpoints:`` -> the teacher mock."""
    cfg = {
        "input": {"path": str(input_path.resolve()), "limit": ts.rows, "columns": {"task": "prompt"}},
        "generate": _generate_section(ts, student_url),
        "prompt": {"variant": "distilabel"},
        "endpoints": [_endpoint(teacher_url, TEACHER_MODEL, ts.teacher_concurrency, ts.teacher_rpm,
                                ts.tell_engine_rpm)],
        "generation": {"temperature": 0.7, "max_tokens": ts.teacher_max_tokens},
        "output": {"dir": str(run_dir.resolve())},
        "run": {"progress": "off"},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def write_generate_only_job(ts: TwoStage, input_path: Path, run_dir: Path, student_url: str, path: Path) -> Path:
    """The same generate stage alone (a generation-only job: ``generate:`` and no top-level ``endpoints:``),
    for the generate stage's share of the CPU."""
    cfg = {
        "input": {"path": str(input_path.resolve()), "limit": ts.rows, "columns": {"task": "prompt"}},
        "generate": _generate_section(ts, student_url),
        "output": {"dir": str(run_dir.resolve())},
        "run": {"progress": "off"},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# ------------------------------------------------------------------------------------------------ arithmetic


def stage_rate(concurrency: int, latency_s: float, rpm: int | None) -> float:
    """A stage's best rows/s: min(concurrency / latency, rpm / 60) (inf when neither binds)."""
    return theoretical_limit(concurrency, latency_s, rpm)[0]


def ideal_makespan(rows: int, rates: tuple[float, float], latencies_s: tuple[float, float]) -> float:
    """The overlapped ideal: N / min(r1, r2) + one request latency per stage."""
    r = min(rates)
    return (rows / r if math.isfinite(r) else 0.0) + sum(latencies_s)


def sequential_makespan(rows: int, rates: tuple[float, float], latencies_s: tuple[float, float]) -> float:
    """The stages one after the other: N / r1 + N / r2 + one request latency per stage."""
    return sum(rows / r for r in rates if math.isfinite(r)) + sum(latencies_s)


# ------------------------------------------------------------------------------------------------ figures


def summarize_two_stage(
    ts: TwoStage,
    rep: dict[str, Any],
    student: list[Sample],
    teacher: list[Sample],
    cpu: tuple[float, float],
    wall: float,
    before: dict[str, dict[str, Any]],
    after: dict[str, dict[str, Any]],
    generate_only: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The scenario's result from the run's report (top level: the revise stage; ``extra.stages.generate``:
    the generate stage), the two mocks' sampled series (same times, engine figures in both), the
    engine's (user, system) CPU, its process wall time and the mocks' ``/stats`` before and after.
    ``generate_only``: ``{"cpu_s", "rows", "wall_s"}`` of the generate stage run alone (the CPU split)."""
    n = ts.rows
    reps = {"generate": rep.get("extra", {}).get("stages", {}).get("generate"), "revise": rep}
    series = {"generate": student, "revise": teacher}
    mocks = {"generate": "student", "revise": "teacher"}
    sp = ts.stage_params()
    rates = {k: stage_rate(*sp[k]) for k in STAGES}
    lats = (sp["generate"][1], sp["revise"][1])
    ideal = ideal_makespan(n, (rates["generate"], rates["revise"]), lats)
    sequential = sequential_makespan(n, (rates["generate"], rates["revise"]), lats)

    stages: dict[str, Any] = {}
    wins = {k: steady_window(series[k]) for k in STAGES}
    for k in STAGES:
        r, win, s = reps[k], wins[k], series[k]
        b, a = before[mocks[k]], after[mocks[k]]
        window_s = (win[1] - win[0]) if win else None
        done = (r["rows_done"] - r["resumed_from"]) if r else None
        status = {c: a["status"].get(c, 0) - b["status"].get(c, 0) for c in a.get("status", {})}
        status = {c: v for c, v in status.items() if v}
        responses = sum(status.values()) - (a.get("other_requests", 0) - b.get("other_requests", 0))
        in_win = [x for x in s[1:-1] if win and win[0] <= x.t <= win[1]]
        ep = (r.get("endpoints") or [{}])[0] if r else {}
        stages[k] = {
            "model": STUDENT_MODEL if k == "generate" else TEACHER_MODEL,
            "rows_done": done,
            "rows_ok": r["rows_ok"] if r else None,
            "rows_flagged": r["rows_flagged"] if r else None,
            "rows_failed": r["rows_failed"] if r else None,
            "requests": r["requests"] if r else None,
            "retries": r["retries"] if r else None,
            "completion_tokens": r["completion_tokens"] if r else None,
            "window_start_s": _r(win[0]) if win else None,
            "window_end_s": _r(win[1]) if win else None,
            "window_s": _r(window_s),
            "rows_per_s": _r(done / window_s) if (done and window_s) else None,
            "limit_rows_per_s": _r(rates[k]) if math.isfinite(rates[k]) else None,
            "rpm": sp[k][2],
            "latency_request": _lat(ep.get("latency", {})),
            "mock": {
                "cpu_s": _r(a["cpu_s"] - b["cpu_s"]),
                "status": status,
                "limited": {c: v - b.get("limited", {}).get(c, 0) for c, v in a.get("limited", {}).items()
                            if v - b.get("limited", {}).get(c, 0)},
                "peak_in_flight": a.get("peak_in_flight"),
                "mean_in_flight_window": _r(sum(x.in_flight for x in in_win) / len(in_win), 1) if in_win else None,
            },
            "share_429": _r(status.get("429", 0) / responses, 4) if responses else None,
        }
    makespan = (wins["revise"][1] - wins["generate"][0]) if (wins["generate"] and wins["revise"]) else None
    overlap = None
    if wins["generate"] and wins["revise"]:
        overlap = max(0.0, min(wins["generate"][1], wins["revise"][1]) - max(wins["generate"][0], wins["revise"][0]))

    # rows waiting between the stages: student answers sent minus teacher requests received, per sample
    backlog = [max(0, st.completions - student[0].completions - (te.requests - teacher[0].requests))
               for st, te in zip(student, teacher, strict=False)]

    cpu_total = cpu[0] + cpu[1]
    engine_samples = [x for x in teacher if x.engine_hwm_mb is not None]
    rss_at: dict[str, float] = {}
    n0 = teacher[0].responses
    total = teacher[-1].responses - n0
    for pct in (10, 50, 90):
        t = time_when(teacher, "responses", n0 + pct / 100 * total) if total else None
        if t is not None and engine_samples:
            near = min(engine_samples, key=lambda x, t=t: abs(x.t - t))  # type: ignore[misc]
            rss_at[f"{pct}%"] = round(near.engine_rss_mb or 0.0, 1)
    split: dict[str, Any] | None = None
    if generate_only is not None and n:
        gen_cpu = float(generate_only["cpu_s"])
        split = {
            "method": "the generate stage run alone (generation-only job, same rows, mock, limits and concurrency); "
                      "revise = two-stage CPU - that",
            "generate_only_cpu_s": _r(gen_cpu),
            "generate_only_wall_s": generate_only.get("wall_s"),
            "generate_only_rows": generate_only.get("rows"),
            "generate_ms_per_row": _r(gen_cpu * 1000 / n),
            "revise_ms_per_row": _r((cpu_total - gen_cpu) * 1000 / n),
        }
    res: dict[str, Any] = {
        "scenario": TWO_STAGE_NAME,
        "description": ts.description,
        "params": ts.params(),
        "rows": n,
        "stages": stages,
        "makespan_s": _r(makespan),
        "ideal_s": _r(ideal),
        "sequential_s": _r(sequential),
        "ratio_to_ideal": _r(makespan / ideal, 4) if (makespan and ideal > 0) else None,
        "ratio_to_sequential": _r(makespan / sequential, 4) if (makespan and sequential > 0) else None,
        "bound_by": "revise" if rates["revise"] <= rates["generate"] else "generate",
        "overlap_s": _r(overlap),
        "handoff_backlog_peak": max(backlog) if backlog else None,
        "engine_wall_s": rep.get("wall_s"),
        "process_wall_s": _r(wall),
        "engine": {
            "cpu_s": _r(cpu_total),
            "cpu_user_s": _r(cpu[0]),
            "cpu_system_s": _r(cpu[1]),
            "cpu_ms_per_row": _r(cpu_total * 1000 / n) if n else None,
            "cpu_ms_per_row_per_stage_mean": _r(cpu_total * 1000 / n / 2) if n else None,
            "peak_rss_mb": _r(max((x.engine_hwm_mb or 0.0) for x in teacher), 1),
            "rss_mb_at_progress": rss_at,
        },
        "cpu_split": split,
    }
    res["targets"] = check_two_stage_targets(res)
    return res


def check_two_stage_targets(res: dict[str, Any]) -> dict[str, bool]:
    t = TWO_STAGE_TARGETS
    out: dict[str, bool] = {}
    if res["ratio_to_ideal"] is not None:
        out["makespan<=1.10*ideal"] = res["ratio_to_ideal"] <= t["ratio_to_ideal"]
    split = res.get("cpu_split")
    if split:
        out["cpu_ms_per_row_generate<=1.0"] = split["generate_ms_per_row"] <= t["cpu_ms_per_row_per_stage"]
        out["cpu_ms_per_row_revise<=1.0"] = split["revise_ms_per_row"] <= t["cpu_ms_per_row_per_stage"]
    elif res["engine"]["cpu_ms_per_row"] is not None:  # only the total is known: 1.0 ms per stage, on average
        out["cpu_ms_per_row_total<=2.0"] = res["engine"]["cpu_ms_per_row"] <= 2 * t["cpu_ms_per_row_per_stage"]
    out["peak_rss_mb<=250"] = res["engine"]["peak_rss_mb"] <= t["peak_rss_mb"]
    return out
