"""The ``two-stage`` scenario's run: two mock processes, the engine as a child process, sampled.

``run_two_stage`` makes (or reuses) the input, starts the student mock and the teacher mock (one
process and one rate-limit bucket each), writes the two-stage job, runs ``python -m engine.cli run
JOB --progress off`` and, every ``POLL_S`` seconds until it exits, samples both mocks' ``/stats`` and
the engine's ``/proc`` entries (``os.wait4`` gives its exact CPU). With ``split_cpu`` it then runs the
generate stage alone against a fresh student mock (its CPU is the generate stage's share). The
figures: :func:`engine.tools.bench.twostage.summarize_two_stage`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from engine.tools.bench import run as _run
from engine.tools.bench.data import ensure_data
from engine.tools.bench.mockstats import MockStats
from engine.tools.bench.probe import machine_info, proc_cpu_s, proc_rss_mb, proc_status_mb
from engine.tools.bench.samples import Sample, from_stats
from engine.tools.bench.twostage import (
    TWO_STAGE_NAME,
    TwoStage,
    summarize_two_stage,
    write_generate_only_job,
    write_two_stage_job,
)

__all__ = ["run_two_stage"]

Log = Callable[[str], None]


def run_two_stage(
    ts: TwoStage,
    *,
    out_dir: Path = _run.OUT_DIR,
    data_dir: Path | None = None,
    input_path: Path | None = None,
    keep: bool = False,
    command: str | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Run the scenario and return its figures. ``out_dir/runs/two-stage/`` holds the jobs, the engine's
    logs, the sampled series and (with ``keep``) the run directories."""
    from engine.tools.mockserver_proc import MockProcess

    if input_path is None:
        input_path, _ = ensure_data(ts.rows, data_dir or out_dir / "data", log=log)
    work = out_dir / "runs" / TWO_STAGE_NAME
    run_dir, gen_dir = work / "run", work / "run-generate-only"
    for d in (run_dir, gen_dir):
        if d.exists():
            shutil.rmtree(d)
    work.mkdir(parents=True, exist_ok=True)
    if log:
        log(f"{TWO_STAGE_NAME}: {ts.rows:,} rows; student {ts.student_rpm} rpm, {ts.student_latency_ms:g} ms "
            f"{ts.latency_dist}, {ts.student_tokens} tokens; teacher {ts.teacher_rpm} rpm, {ts.teacher_latency_ms:g} ms")
    with MockProcess(ts.student_mock_args()) as student, MockProcess(ts.teacher_mock_args()) as teacher:
        job = write_two_stage_job(ts, input_path, run_dir, student.url, teacher.url, work / "job.yaml")
        stats = {"student": MockStats(student.url), "teacher": MockStats(teacher.url)}
        try:
            before = {k: m.get() for k, m in stats.items()}
            series, cpu, wall = _sampled_run(job, work / "engine.log", stats, log)
            after = {k: m.get() for k, m in stats.items()}
        finally:
            for m in stats.values():
                m.close()
    with contextlib.suppress(OSError):
        (work / "samples.jsonl").write_bytes(b"".join(
            orjson.dumps({"student": dataclasses.asdict(a), "teacher": dataclasses.asdict(b)}) + b"\n"
            for a, b in zip(series["student"], series["teacher"], strict=False)))
    rep = orjson.loads((run_dir / "report.json").read_bytes())
    generate_only = None
    if ts.split_cpu:
        if log:
            log(f"{TWO_STAGE_NAME}: the generate stage alone (its CPU share)")
        with MockProcess(ts.student_mock_args()) as student:
            job = write_generate_only_job(ts, input_path, gen_dir, student.url, work / "job-generate-only.yaml")
            ms = MockStats(student.url)
            try:
                _, gcpu, gwall = _sampled_run(job, work / "engine-generate-only.log", {"student": ms}, log)
            finally:
                ms.close()
        grep = orjson.loads((gen_dir / "report.json").read_bytes())
        generate_only = {"cpu_s": gcpu[0] + gcpu[1], "wall_s": round(gwall, 3),
                         "rows": grep["rows_done"] - grep["resumed_from"]}
    res = summarize_two_stage(ts, rep, series["student"], series["teacher"], cpu, wall, before, after,
                              generate_only)
    res["date"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    res["machine"] = machine_info()
    res["command"] = command or f"clair bench --scenario {TWO_STAGE_NAME}"
    if keep:
        res["run_dir"] = str(run_dir)
    else:
        for d in (run_dir, gen_dir):
            shutil.rmtree(d, ignore_errors=True)
    return res


def _sampled_run(job: Path, engine_log: Path, stats: dict[str, MockStats],
                 log: Log | None) -> tuple[dict[str, list[Sample]], tuple[float, float], float]:
    """Run the engine on ``job`` and sample every mock and the engine until it exits: the series per mock
    (same times), the engine's (user, system) CPU from ``wait4`` and the process wall time."""
    cmd = [sys.executable, "-m", "engine.cli", "run", str(job), "--progress", "off"]
    series: dict[str, list[Sample]] = {k: [] for k in stats}
    with engine_log.open("wb") as logf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
        for k, m in stats.items():
            series[k].append(from_stats(0.0, m.get(), 0.0))
        status = 0
        ru = None
        next_progress = t0 + 30
        last_change, last_key = 0.0, None
        try:
            while True:
                pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                t = time.perf_counter() - t0
                cpu_s, rss, mem = proc_cpu_s(proc.pid), proc_rss_mb(proc.pid), proc_status_mb(proc.pid)
                for k, m in stats.items():
                    series[k].append(from_stats(t, m.get(), cpu_s, rss, mem))
                key = tuple((s[-1].requests, s[-1].responses) for s in series.values())
                if key != last_key:
                    last_key, last_change = key, t
                elif t - last_change > _run.STALL_S:
                    tail = engine_log.read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"{TWO_STAGE_NAME}: the mocks saw no request and sent no answer for "
                                       f"{_run.STALL_S:.0f}s while the engine was running; the engine was stopped. "
                                       f"Its log ends: {tail}")
                if log and time.perf_counter() >= next_progress:
                    log(f"  {t:6.0f}s  " + ", ".join(f"{k} {s[-1].responses - s[0].responses:,} answers"
                                                    for k, s in series.items()) + f", engine RSS {rss or 0:.0f} MB")
                    next_progress += 30
                time.sleep(_run.POLL_S)
        except BaseException:
            proc.kill()
            os.waitpid(proc.pid, 0)
            proc.returncode = -9  # reaped here: Popen must not wait for it again
            raise
        wall = time.perf_counter() - t0
    code = proc.returncode = os.waitstatus_to_exitcode(status)
    for k, m in stats.items():
        series[k].append(from_stats(wall, m.get(), None))
    if code != 0:
        tail = engine_log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the engine exited with code {code}: {tail}")
    assert ru is not None
    return series, (ru.ru_utime, ru.ru_stime), wall
