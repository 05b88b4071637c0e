"""Issue 3's benchmark: how long `clair run` takes to resume a run that already holds 1,000,000 done rows.

Two cases, each timed from the moment ``python -m engine.cli run JOB`` is started:

* ``nothing_left``: every row of the job is done (``input.limit`` = done rows); the time until the
  process has found nothing to do and exited (done set, input scan, report).
* ``rows_left``: ``input.limit`` is raised by 1,000 rows, so the job must skip the 1,000,000 done rows
  and request the rest; the time until the mock receives the FIRST request (sampled every 10 ms),
  and until the process exits. The rows it adds are removed afterwards (new shards, manifest restored),
  so the run can be measured again.

The run is either a kept ``scale`` bench run (``--work benchmarks/out/runs/scale``, what ``run_all.py``
does) or, by default, a synthetic one: a real 10,000-row engine run whose shard is replicated (row ids
shifted, 1% of the rows turned into failure rows) to ``--rows`` rows, with the engine's own manifest.
An in-process breakdown (``done_set``, ``count_rows``, the input scan that skips done rows) follows.
Target: under 5 s. Results go to ``benchmarks/out/resume_startup.json``.

    python benchmarks/resume_startup.py [--work DIR | --rows 1000000] [--repeat 3] [--profile]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.store import (  # noqa: E402
    DATA,
    FAILURES,
    LocalStorage,
    RunView,
    manifest,  # noqa: E402
)
from engine.store.manifest import MANIFEST  # noqa: E402
from engine.store.readers import read_table  # noqa: E402
from engine.store.shards import shard_name, write_table  # noqa: E402
from engine.tools.bench.data import ensure_data  # noqa: E402
from engine.tools.bench.mockstats import MockStats  # noqa: E402
from engine.tools.bench.presets import PRESETS  # noqa: E402
from engine.tools.bench.probe import machine_info, proc_hwm_mb  # noqa: E402
from engine.tools.bench.run import OUT_DIR, run_scenario  # noqa: E402
from engine.tools.mockserver_proc import MockProcess  # noqa: E402

TARGET_S = 5.0
LEFT = 1000
SEED_ROWS = 10_000


def log(msg: str) -> None:
    print(f"resume: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- the run


def build_synthetic(out_dir: Path, rows: int, fail_every: int = 100) -> Path:
    """A run directory with ``rows`` done rows; returns its work dir (holding job.yaml and run/)."""
    if rows % SEED_ROWS:
        raise SystemExit(f"--rows must be a multiple of {SEED_ROWS}")
    input_path, have = ensure_data(rows + LEFT, out_dir / "data", log=log)
    sc = dataclasses.replace(PRESETS["scale"], name="resume_seed", rows=SEED_ROWS)
    log(f"seeding a real {SEED_ROWS:,}-row run, then replicating its shard to {rows:,} rows")
    res = run_scenario(sc, out_dir=out_dir, input_path=input_path, keep=True)
    work = Path(res["run_dir"]).parent
    run = work / "run"
    st = LocalStorage(run)
    seed = read_table(st, shard_name(DATA, 0))
    assert seed.num_rows == SEED_ROWS, seed.num_rows
    fail_schema = None
    t0 = time.perf_counter()
    for k in range(rows // SEED_ROWS):
        ids = pc.add(seed.column("row_id"), k * SEED_ROWS)
        t = seed.set_column(seed.schema.get_field_index("row_id"), "row_id", ids)
        ids_np = ids.to_numpy()
        is_fail = pa.array((ids_np % fail_every) == 7 if fail_every > 0 else np.zeros(len(ids_np), bool))
        data, fails = t.filter(pc.invert(is_fail)), t.filter(is_fail)
        write_table(st, shard_name(DATA, k), data)
        if fails.num_rows:
            if fail_schema is None:
                fail_schema = _failure_schema(work)
            write_table(st, shard_name(FAILURES, k), _as_failures(fails, fail_schema))
    man = manifest.load(st)
    assert man is not None
    man["rows_total"] = rows
    nfail = len(range(7, rows, fail_every)) if fail_every > 0 else 0
    man["counts"] = {"data": rows - nfail, "failed": nfail, "failure_kinds": {"server_error": nfail} if nfail else {}}
    manifest.save(st, man)
    log(f"wrote {rows // SEED_ROWS} data shards ({nfail:,} failure rows) in {time.perf_counter() - t0:.1f}s")
    return work


def _failure_schema(work: Path) -> pa.Schema:
    from engine.core.config import load_config
    from engine.records import failure_schema
    from engine.stages import open_source

    src = open_source(load_config(work / "job.yaml"))
    return failure_schema(src.row_id_type, src.kept)


def _as_failures(t: pa.Table, schema: pa.Schema) -> pa.Table:
    n = t.num_rows
    cols = []
    for f in schema:
        if f.name == "error_kind":
            cols.append(pa.array(["server_error"] * n, f.type))
        elif f.name == "error_message":
            cols.append(pa.array(["HTTP 500: synthetic failure row"] * n, f.type))
        else:
            cols.append(t.column(f.name).cast(f.type))
    return pa.table(cols, schema=schema)


# ---------------------------------------------------------------------------------------------- timing


def done_rows(run: Path) -> int:
    c = RunView.open(run).counts()
    return c["data"] + c["failed"]


def _shards(run: Path) -> set[str]:
    view = RunView.open(run)
    return {n for k in (DATA, FAILURES) for n in view.shards(k)}


def time_resume(work: Path, url: str, ms: MockStats, limit: int, profile: Path | None = None) -> dict[str, Any]:
    run = work / "run"
    before_shards = _shards(run)
    st = LocalStorage(run)
    saved = st.read_bytes(MANIFEST)
    before = ms.get()["requests"]
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "cProfile", "-o", str(profile)]
    cmd += ["-m", "engine.cli", "run", str(work / "job.yaml"), "--progress", "off",
            "--set", f"endpoints.0.url={url}", "--set", f"input.limit={limit}"]
    logf = (work / "resume.log").open("wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
    first = None
    prev_t = 0.0
    hwm = 0.0
    try:
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            hwm = max(hwm, proc_hwm_mb(proc.pid) or 0.0)
            if first is None:
                now = time.perf_counter() - t0
                if ms.get()["requests"] > before:
                    first = (prev_t + now) / 2
                prev_t = now
            time.sleep(0.01)
    finally:
        logf.close()
    exit_s = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if first is None and ms.get()["requests"] > before:  # the first request came in the last interval
        first = (prev_t + exit_s) / 2
    proc.returncode = code
    if code != 0:
        raise RuntimeError(f"the resumed run failed ({code}): {(work / 'resume.log').read_text()[-1500:]}")
    # undo what a rows-left run added, so that the run can be measured again
    for name in _shards(run) - before_shards:
        st.delete(name)
    for seg in RunView.open(run).journal_segments():
        seg.unlink()
    st.write_atomic(MANIFEST, saved)
    return {"exit_s": round(exit_s, 3), "first_request_s": round(first, 3) if first is not None else None,
            "cpu_s": round(ru.ru_utime + ru.ru_stime, 3), "peak_rss_mb": round(hwm, 1)}


def phases(work: Path, done: int) -> dict[str, float]:
    """Where start-up time goes, measured in this process with the engine's own functions."""
    from engine.core.config import load_config
    from engine.stages import open_source
    cfg = load_config(work / "job.yaml", [f"input.limit={done}"])
    out = {}
    t = time.perf_counter()
    ds = RunView.open(cfg.run_dir).done_ids()
    out["done_set_s"] = time.perf_counter() - t
    t = time.perf_counter()
    src = open_source(cfg)
    out["open_source_s"] = time.perf_counter() - t
    t = time.perf_counter()
    src.count_rows()
    out["count_rows_s"] = time.perf_counter() - t
    t = time.perf_counter()
    left = sum(len(b.row_ids) for b in src.batches(ds))
    out["scan_skipping_done_s"] = time.perf_counter() - t
    t = time.perf_counter()
    RunView.open(cfg.run_dir).counts()
    out["count_results_s"] = time.perf_counter() - t
    assert left == 0, left
    return {k: round(v, 3) for k, v in out.items()}


def measure(work: Path, repeat: int = 3, profile: bool = False) -> dict[str, Any]:
    run = work / "run"
    done = done_rows(run)
    job = load_job(work)
    input_rows = pq.ParquetFile(job["input"]["path"]).metadata.num_rows
    log(f"{run}: {done:,} done rows; input has {input_rows:,}")
    res: dict[str, Any] = {"run_dir": str(run), "done_rows": done, "repeat": repeat, "target_s": TARGET_S}
    with MockProcess(["--latency-ms", "0"]) as mock:
        ms = MockStats(mock.url)
        try:
            runs = [time_resume(work, mock.url, ms, done) for _ in range(repeat)]
            res["nothing_left"] = _agg(runs)
            if input_rows >= done + LEFT:
                runs = [time_resume(work, mock.url, ms, done + LEFT) for _ in range(repeat)]
                res["rows_left"] = {"rows": LEFT, **_agg(runs)}
            if profile:
                prof = work / "resume.prof"
                time_resume(work, mock.url, ms, done, profile=prof)
                res["profile"] = _top(prof)
        finally:
            ms.close()
    res["phases"] = phases(work, done)
    worst = max(res["nothing_left"]["exit_s"], (res.get("rows_left") or {}).get("first_request_s") or 0.0)
    res["pass"] = worst < TARGET_S
    return res


def load_job(work: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((work / "job.yaml").read_text())


def _agg(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": runs}
    for k in ("exit_s", "first_request_s", "cpu_s", "peak_rss_mb"):
        vals = [r[k] for r in runs if r.get(k) is not None]
        if vals:
            out[k] = round(statistics.median(vals), 3)
    return out


def _top(prof: Path, n: int = 12) -> list[str]:
    import io
    import pstats

    buf = io.StringIO()
    pstats.Stats(str(prof), stream=buf).sort_stats("cumulative").print_stats(n)
    return [line for line in buf.getvalue().splitlines() if line.strip()][-n:]


def format_resume(res: dict[str, Any]) -> str:
    nl = res["nothing_left"]
    lines = [f"resume start-up with {res['done_rows']:,} done rows (median of {res['repeat']}; target < {TARGET_S:g} s)",
             f"  nothing left to do: process exits after {nl['exit_s']:.2f}s (CPU {nl['cpu_s']:.2f}s, "
             f"peak RSS {nl['peak_rss_mb']:.0f} MB)"]
    rl = res.get("rows_left")
    if rl:
        lines.append(f"  {rl['rows']:,} rows left: first request after {rl['first_request_s']:.2f}s, exit after "
                     f"{rl['exit_s']:.2f}s (peak RSS {rl['peak_rss_mb']:.0f} MB)")
    ph = res["phases"]
    lines.append("  in-process phases: " + ", ".join(f"{k.removesuffix('_s')} {v:.2f}s" for k, v in ph.items()))
    lines.append(f"  target: {'PASS' if res['pass'] else 'FAIL'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, help="a kept bench run (holding job.yaml and run/), e.g. benchmarks/out/runs/scale")
    ap.add_argument("--rows", type=int, default=1_000_000, help="synthetic run size (without --work)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="also run once under cProfile and list the top functions")
    ap.add_argument("--out", type=Path, default=OUT_DIR / "resume_startup.json")
    args = ap.parse_args(argv)
    if args.work is not None:
        work, synthetic = args.work, False
    else:
        work = OUT_DIR / "runs" / "resume_seed"
        synthetic = True
        marker = work / f"synthetic-{args.rows}"
        if not marker.exists():
            if work.exists():
                shutil.rmtree(work)
            work = build_synthetic(OUT_DIR, args.rows)
            marker.touch()
    res = measure(work, args.repeat, args.profile)
    res["synthetic"] = synthetic
    res["machine"] = machine_info()
    res["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    res["command"] = "python benchmarks/resume_startup.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2) + b"\n")
    print(format_resume(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
