"""One scenario run: the mock and the engine as child processes, sampled while the engine works.

``run_scenario`` makes (or reuses) the input, starts ``clair mock-server`` with the scenario's
behaviour, writes the engine's job, runs ``python -m engine.cli run JOB.yaml`` in its own process and,
every ``POLL_S`` seconds until it exits, samples the mock's ``/stats`` and the engine's ``/proc``
entries; ``os.wait4`` gives the engine's exact CPU time. It stops a run whose counters stand still
(``STALL_S``) and returns ``summarize``'s result with the date, machine and command added.
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
import yaml

from engine.tools.bench.data import ensure_data
from engine.tools.bench.mockstats import MockStats
from engine.tools.bench.presets import Scenario
from engine.tools.bench.probe import machine_info, proc_cpu_s, proc_rss_mb, proc_status_mb
from engine.tools.bench.results import summarize
from engine.tools.bench.samples import Sample, from_stats

__all__ = ["OUT_DIR", "POLL_S", "STALL_S", "run_scenario", "write_job"]

#: where ``clair bench`` keeps its cached inputs, run directories and results (relative to the cwd)
OUT_DIR = Path("benchmarks") / "out"
#: seconds between samples of the mock's counters and the engine's /proc entries
POLL_S = 0.05
#: the run is stopped (and the bench fails) when the mock's counters stand still this long
STALL_S = 300.0


def write_job(sc: Scenario, input_path: Path, run_dir: Path, url: str, path: Path) -> Path:
    """The engine's YAML job for a scenario (UltraFeedback columns, distilabel prompt)."""
    cfg = {
        "input": {"path": str(input_path.resolve()), "limit": sc.rows},
        "prompt": {"variant": "distilabel"},
        "endpoints": [{"url": url, "model": "mock-clair", "max_concurrency": sc.concurrency}],
        "generation": {"temperature": 0.7, "max_tokens": sc.max_tokens},
        "output": {"dir": str(run_dir.resolve())},
        "retry": {"base_delay_s": sc.retry_base_delay_s},
        "timeouts": {"request_s": sc.request_timeout_s},
        "run": {"progress": "off"},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def take_sample(t0: float, mock: MockStats, pid: int) -> Sample:
    s = mock.get()
    return from_stats(time.perf_counter() - t0, s, proc_cpu_s(pid), proc_rss_mb(pid), proc_status_mb(pid))


def run_scenario(
    sc: Scenario,
    *,
    out_dir: Path = OUT_DIR,
    data_dir: Path | None = None,
    input_path: Path | None = None,
    keep: bool = False,
    profile: Path | None = None,
    engine_cmd: list[str] | None = None,
    env: dict[str, str] | None = None,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run one scenario and return its figures (see the module docstring for the definitions).

    ``out_dir/runs/NAME/`` holds the job, the engine's log and (with ``keep``) its run directory.
    ``input_path``: a Parquet input of at least ``sc.rows`` rows (default: the cached generated one).
    ``profile``: run the engine under cProfile and write the stats there. ``engine_cmd`` replaces
    ``[python, -m, engine.cli]`` (experiments: another interpreter, a wrapper); ``env`` is added to the
    engine's environment (not the mock's).
    """
    from engine.tools.mockserver_proc import MockProcess

    if input_path is None:
        input_path, _ = ensure_data(sc.rows, data_dir or out_dir / "data", log=log)
    work = out_dir / "runs" / sc.name
    run_dir = work / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    work.mkdir(parents=True, exist_ok=True)
    with MockProcess(sc.mock_args()) as mock:
        job = write_job(sc, input_path, run_dir, mock.url, work / "job.yaml")
        ms = MockStats(mock.url)
        try:
            res = _run_engine(sc, job, run_dir, work, ms, profile, engine_cmd, env, log)
        finally:
            ms.close()
    res["date"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    res["machine"] = machine_info()
    res["command"] = command or f"clair bench --scenario {sc.name}"
    if not keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        res["run_dir"] = str(run_dir)
    return res


def _run_engine(
    sc: Scenario,
    job: Path,
    run_dir: Path,
    work: Path,
    ms: MockStats,
    profile: Path | None,
    engine_cmd: list[str] | None,
    env: dict[str, str] | None,
    log: Callable[[str], None] | None,
) -> dict[str, Any]:
    before = ms.get()
    if engine_cmd is not None:
        cmd = list(engine_cmd)
    elif profile is not None:
        cmd = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "engine.cli"]
    else:
        cmd = [sys.executable, "-m", "engine.cli"]
    cmd += ["run", str(job), "--progress", "off"]
    for item in sc.engine_set:
        cmd += ["--set", item]
    if log:
        log(f"{sc.name}: {sc.rows:,} rows, {sc.concurrency} in flight, mock {sc.latency_ms:g} ms "
            f"{sc.latency_dist}" + (f", {sc.rpm} rpm" if sc.rpm else "") + (", faults" if sc.faults else ""))
    engine_log = work / "engine.log"
    with engine_log.open("wb") as logf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                env={**os.environ, **env} if env else None)
        samples: list[Sample] = [from_stats(0.0, before, 0.0)]
        ru = None
        status = 0
        next_progress = time.perf_counter() + 30
        stall_s = max(STALL_S, 2 * sc.request_timeout_s + 60) if sc.request_timeout_s < 600 else STALL_S
        last_change, last_key = 0.0, None
        try:
            while True:
                pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                cur = take_sample(t0, ms, proc.pid)
                samples.append(cur)
                key = (cur.requests, cur.responses)
                if key != last_key:
                    last_key, last_change = key, cur.t
                elif cur.t - last_change > stall_s:
                    tail = engine_log.read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"{sc.name}: the mock saw no request and sent no answer for {stall_s:.0f}s "
                                       f"while the engine was running; the engine was stopped. Its log ends: {tail}")
                if log and time.perf_counter() >= next_progress:
                    s = samples[-1]
                    log(f"  {s.t:6.0f}s  {s.responses - samples[0].responses:,} answers, "
                        f"engine RSS {s.engine_rss_mb or 0:.0f} MB")
                    next_progress += 30
                time.sleep(POLL_S)
        except BaseException:
            proc.kill()
            os.waitpid(proc.pid, 0)
            proc.returncode = -9
            raise
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    after = ms.get()
    samples.append(from_stats(wall, after, None))
    if proc.returncode != 0:
        tail = engine_log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the engine exited with code {proc.returncode}: {tail}")
    with contextlib.suppress(OSError):  # the sampled series, for a closer look (not summarised)
        (work / "samples.jsonl").write_bytes(b"".join(orjson.dumps(dataclasses.asdict(s)) + b"\n" for s in samples))
    rep = orjson.loads((run_dir / "report.json").read_bytes())
    return summarize(sc, rep, samples, before, after, ru, wall)
