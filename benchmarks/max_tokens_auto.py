"""Issue 15's benchmark: ``generation.max_tokens: auto`` versus a fixed 4096, in one run.

Both arms run the same job (synthetic UltraFeedback-shaped rows, distilabel prompt, 64 in flight) against a
fresh bundled mock each (``clair mock-server``, 200 ms latency) that enforces a tokens-per-minute limit
counting ``prompt + max_tokens`` at admission, like OpenAI (``--tpm-counts max_tokens``), and lets 5% of
its answers ramble on to max_tokens (``--rate-ramble 0.05``, ``finish_reason: length``). The engine is
told the limit and that it counts max_tokens (``tokens_per_minute``, ``tpm_counts_max_tokens: true``),
as a user of such a provider would configure it. The only difference between the arms is
``generation.max_tokens``: ``4096`` or ``auto`` (the defaults of ``max_tokens_auto``).

Figures per arm, from the rows the run wrote and the mock's counters:

* reserved tokens per request: mean of ``prompt_tokens + max_tokens`` (what the limit charges per request);
* rows/s: rows / wall time of the run (start-up included) and the mock's 429s;
* output tokens paid: every completion token, and those of the answers cut at max_tokens (the ramblers);
* truncation rate: rows whose answer ended with ``finish_reason: length``.

Auto must reserve less, run at least as fast, pay less on rambling answers and truncate no more; the
script checks these and exits 1 when one fails. About 2-3 minutes on 2 cores.

    python benchmarks/max_tokens_auto.py [--rows 400] [--tpm 1200000]   # writes benchmarks/out/max_tokens_auto.json
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.core.config import from_dict  # noqa: E402
from engine.runner.job import run_job  # noqa: E402
from engine.tools.mockserver_proc import MockProcess  # noqa: E402
from engine.tools.synthetic import write_sample  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
ARMS = {"fixed_4096": 4096, "auto": "auto"}


def log(msg: str) -> None:
    print(f"max_tokens_auto: {msg}", file=sys.stderr, flush=True)


def job(input_path: Path, run_dir: Path, url: str, *, rows: int, tpm: int, concurrency: int,
        max_tokens: int | str) -> dict[str, Any]:
    return {
        "input": {"path": str(input_path), "limit": rows},
        "prompt": {"variant": "distilabel"},
        "endpoints": [{"url": url, "model": "mock-clair", "max_concurrency": concurrency,
                       "tokens_per_minute": tpm, "tpm_counts_max_tokens": True}],
        "generation": {"temperature": 0.7, "max_tokens": max_tokens},
        "output": {"dir": str(run_dir)},
        "run": {"progress": "off"},
    }


def rows_of(run_dir: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    cols = ["prompt_tokens", "completion_tokens", "max_tokens", "finish_reason", "error_kind"]
    out: list[dict[str, Any]] = []
    for kind in ("data", "failures"):
        for f in sorted((run_dir / kind).glob("part-*.parquet")):
            t = pq.read_table(f)
            out += t.select([c for c in cols if c in t.column_names]).to_pylist()
    return out


def run_arm(name: str, max_tokens: int | str, args: Params, input_path: Path) -> dict[str, Any]:
    run_dir = OUT / "max_tokens_auto" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    mock_args = ["--latency-ms", str(args.latency_ms), "--seed", "0", "--tpm", str(args.tpm),
                 "--tpm-counts", "max_tokens", "--rate-ramble", str(args.ramble)]
    with MockProcess(mock_args) as mock:
        cfg = from_dict(job(input_path, run_dir, mock.url, rows=args.rows, tpm=args.tpm,
                            concurrency=args.concurrency, max_tokens=max_tokens))
        t0 = time.perf_counter()
        rep = run_job(cfg)
        wall = time.perf_counter() - t0
        stats = mock.stats()
    rows = rows_of(run_dir)
    sent = [r for r in rows if r.get("completion_tokens") is not None]
    cut = [r for r in sent if r["finish_reason"] == "length"]
    n = len(rows)
    res = {
        "max_tokens": max_tokens,
        "rows": n,
        "answered": len(sent),
        "wall_s": round(wall, 2),
        "rows_per_s": round(n / wall, 2),
        "reserved_tokens_per_request": round(sum(r["prompt_tokens"] + r["max_tokens"] for r in sent) / len(sent), 1),
        "max_tokens_per_request": round(sum(r["max_tokens"] for r in sent) / len(sent), 1),
        "prompt_tokens_per_request": round(sum(r["prompt_tokens"] for r in sent) / len(sent), 1),
        "output_tokens_paid": sum(r["completion_tokens"] for r in sent),
        "output_tokens_paid_on_truncated": sum(r["completion_tokens"] for r in cut),
        "truncated_rows": len(cut),
        "truncation_rate": round(len(cut) / n, 4) if n else 0.0,
        "rambling_answers": stats["faults"].get("ramble", 0),
        "mock_429_tpm": stats["limited"].get("tpm", 0),
        "status": rep.status,
    }
    shutil.rmtree(run_dir, ignore_errors=True)
    return res


def checks(fixed: dict[str, Any], auto: dict[str, Any]) -> dict[str, bool]:
    return {
        "auto reserves less per request": auto["reserved_tokens_per_request"] < fixed["reserved_tokens_per_request"],
        "auto runs at least as fast": auto["rows_per_s"] >= fixed["rows_per_s"],
        "auto pays less on rambling answers":
            auto["output_tokens_paid_on_truncated"] < fixed["output_tokens_paid_on_truncated"],
        "auto truncates no more": auto["truncation_rate"] <= fixed["truncation_rate"],
    }


def format_results(res: dict[str, Any]) -> str:
    arms = res["arms"]
    keys = ["rows", "wall_s", "rows_per_s", "reserved_tokens_per_request", "max_tokens_per_request",
            "prompt_tokens_per_request", "output_tokens_paid", "output_tokens_paid_on_truncated",
            "rambling_answers", "truncated_rows", "truncation_rate", "mock_429_tpm"]
    lines = [f"{'':34s}" + "".join(f"{a:>14s}" for a in arms)]
    for k in keys:
        lines.append(f"{k:34s}" + "".join(f"{arms[a][k]:>14,}" if isinstance(arms[a][k], int)
                                          else f"{arms[a][k]:>14}" for a in arms))
    lines += [f"{'PASS' if ok else 'FAIL'}: {what}" for what, ok in res["checks"].items()]
    return "\n".join(lines)


@dataclass(frozen=True)
class Params:
    rows: int = 400
    tpm: int = 1_200_000  # the mock's tokens/min limit
    concurrency: int = 64
    latency_ms: int = 200
    ramble: float = 0.05  # share of answers that ramble to max_tokens


def measure(args: Params, command: str = "python benchmarks/max_tokens_auto.py") -> dict[str, Any]:
    """Both arms, one after the other, each against a fresh mock; the figures and the checks."""
    input_path = OUT / "max_tokens_auto" / f"input-{args.rows}.parquet"
    if not input_path.exists():
        write_sample(input_path, args.rows, seed=0)
    t0 = time.perf_counter()
    arms: dict[str, Any] = {}
    for name, mt in ARMS.items():
        log(f"{name}: {args.rows} rows, mock tpm {args.tpm:,} (prompt + max_tokens at admission), "
            f"{args.ramble:.0%} rambling answers")
        arms[name] = run_arm(name, mt, args, input_path)
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
        "params": dataclasses.asdict(args),
        "arms": arms,
        "checks": checks(arms["fixed_4096"], arms["auto"]),
        "bench_s": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    d = Params()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=d.rows)
    ap.add_argument("--tpm", type=int, default=d.tpm, help="the mock's tokens/min limit (default: %(default)s)")
    ap.add_argument("--concurrency", type=int, default=d.concurrency)
    ap.add_argument("--latency-ms", type=int, default=d.latency_ms)
    ap.add_argument("--ramble", type=float, default=d.ramble, help="share of answers that ramble to max_tokens")
    ap.add_argument("--out", type=Path, default=OUT / "max_tokens_auto.json")
    args = ap.parse_args(argv)
    params = Params(args.rows, args.tpm, args.concurrency, args.latency_ms, args.ramble)
    cmd = "python benchmarks/max_tokens_auto.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    res = measure(params, cmd)
    print(format_results(res), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2) + b"\n")
    log(f"written to {args.out} ({res['bench_s']}s)")
    return 0 if all(res["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
