"""Issue 14's benchmark: the input pre-flight check (engine/preflight.py) on 1,000,000 rows.

Inputs (cached under ``benchmarks/out/preflight/``): UltraFeedback-shaped rows (``write_sample``, realistic
sizes: ~420-char prompts, ~1,600-char answers, chosen/rejected conversations) with an integer ``id`` column,
as one Parquet file (zstd, row groups of 20,000 rows) and one JSON-lines file. To keep the set-up cheap,
20,000 generated rows are repeated 50 times with fresh ids (the check reads every id and every line either
way).

Each case runs in a fresh process (``--child``, with the allocator settings of ``clair run``): ``Source`` (what every run opens anyway) is built first,
then ``preflight`` is timed; the process reports the check's wall and CPU seconds and its peak RSS (and the
RSS before the check). Cases: Parquet with ``id_column`` (the id column alone, streamed), Parquet without
(footers and the mapping sample), JSON lines with ``id_column`` (the run's own reader over every line).
The share is of a 1M-row run at 1,280 rows/s (~13 min). Results: ``benchmarks/out/preflight.json``.

    python benchmarks/preflight.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks" / "out"
DATA = OUT / "preflight"
BLOCK = 20_000
RUN_ROWS_PER_S = 1280.0


def log(msg: str) -> None:
    print(f"preflight: {msg}", file=sys.stderr, flush=True)


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def make_inputs(rows: int) -> dict[str, Path]:
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq

    from engine.tools.synthetic import write_sample

    DATA.mkdir(parents=True, exist_ok=True)
    parquet, jsonl = DATA / f"uf-{rows}.parquet", DATA / f"uf-{rows}.jsonl"
    if parquet.exists() and jsonl.exists():
        return {"parquet": parquet, "jsonl": jsonl}
    seed = DATA / f"seed-{BLOCK}.parquet"
    if not seed.exists():
        log(f"generating {BLOCK:,} UltraFeedback-shaped rows")
        write_sample(str(seed), BLOCK, seed=0)
    base = pq.read_table(seed)
    t0 = time.perf_counter()
    log(f"writing {parquet.name}")
    tmp = parquet.with_suffix(".tmp")
    with pq.ParquetWriter(str(tmp), base.schema.insert(0, pa.field("id", pa.int64())), compression="zstd") as w:
        for start in range(0, rows, BLOCK):
            n = min(BLOCK, rows - start)
            part = base.slice(0, n)
            w.write_table(part.add_column(0, "id", pa.array(range(start, start + n), pa.int64())))
    tmp.rename(parquet)
    log(f"writing {jsonl.name}")
    lines = [orjson.dumps(r)[1:] for r in base.to_pylist()]  # each without its opening brace
    tmp = jsonl.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        for start in range(0, rows, BLOCK):
            n = min(BLOCK, rows - start)
            fh.write(b"".join(b'{"id":%d,%s\n' % (start + i, lines[i]) for i in range(n)))
    tmp.rename(jsonl)
    log(f"inputs written in {time.perf_counter() - t0:.0f}s")
    return {"parquet": parquet, "jsonl": jsonl}


def child(path: str, id_column: str | None) -> None:
    """One timed check in this process (with the allocator settings `clair run` applies); prints its figures."""
    from engine.core.memory import tune_process

    tune_process()  # before pyarrow loads, as in `clair run`
    from engine.preflight import preflight
    from engine.source import Source

    src = Source(path=path, id_column=id_column, keep_input_columns=False)
    rss_before = _rss_mb()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    rep = preflight(src)
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": wall, "cpu_s": (ru.ru_utime + ru.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
                      "rows": rep.rows, "ids_checked": rep.ids_checked, "lines_checked": rep.lines_checked,
                      "sampled_rows": rep.sampled_rows, "rss_before_mb": rss_before, "rss_after_mb": _rss_mb(),
                      "peak_rss_mb": ru.ru_maxrss / 1024}))


def measure(path: Path, id_column: str | None, repeat: int) -> dict[str, Any]:
    runs = []
    for _ in range(repeat):
        cmd = [sys.executable, __file__, "--child", str(path)] + (["--id-column", id_column] if id_column else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
        runs.append(json.loads(out.stdout))
    med = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    return {**med, "seconds_all": [round(r["seconds"], 3) for r in runs],
            "seconds_median": statistics.median(r["seconds"] for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--id-column", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.id_column)
        return
    inputs = make_inputs(args.rows)
    run_s = args.rows / RUN_ROWS_PER_S
    cases = {"parquet_id_column": (inputs["parquet"], "id"), "parquet_no_id": (inputs["parquet"], None),
             "jsonl_id_column": (inputs["jsonl"], "id")}
    results: dict[str, Any] = {
        "rows": args.rows, "repeat": args.repeat, "cpus": os.cpu_count(),
        "input_bytes": {k: p.stat().st_size for k, p in inputs.items()},
        "run_seconds_at_1280_rows_per_s": round(run_s, 1), "cases": {},
    }
    for name, (path, col) in cases.items():
        log(f"{name}: {path.name}")
        r = measure(path, col, args.repeat)
        r["share_of_run_pct"] = round(100 * r["seconds_median"] / run_s, 2)
        results["cases"][name] = r
        print(f"{name:>18}: {r['seconds_median']:6.2f}s wall (runs {r['seconds_all']}), {r['cpu_s']:6.2f}s CPU, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB (before the check {r['rss_before_mb']:.0f}, after "
              f"{r['rss_after_mb']:.0f} MB), "
              f"{r['rows']:,} rows, {r['share_of_run_pct']}% of a {run_s / 60:.0f}-min run")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "preflight.json").write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {OUT / 'preflight.json'}")


if __name__ == "__main__":
    main()
