"""``make demo``: revise the bundled sample against the bundled mock endpoint (no network)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from engine.cli import main as clair_main
from engine.tools.mockserver_proc import MockProcess

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    config = ROOT / "configs" / "demo.yaml"
    run_dir = Path("runs/demo")
    if run_dir.exists():
        shutil.rmtree(run_dir)  # the demo always starts fresh
    with MockProcess(["--latency-ms", "200", "--latency-dist", "lognormal", "--seed", "7"]) as mock:
        print(f"demo: mock endpoint at {mock.url} (200 ms mean latency)")
        code = clair_main(["run", str(config), "--set", f"endpoints.0.url={mock.url}",
                           "--set", f"input.path={ROOT / 'engine' / 'data' / 'demo_sample.jsonl'}",
                           "--set", f"output.dir={run_dir}", "--progress", "plain"])
    if code != 0:
        return code
    from engine.store.readers import load_results

    ds = load_results(run_dir)
    print(f"demo: {len(ds)} revised rows in {run_dir}/data (load with datasets.load_dataset('parquet', "
          f"data_dir='{run_dir}/data'))")
    row = ds[0]
    print("demo: first pair —")
    print(f"  original: {row['student_solution'][:160]!r}...")
    print(f"  revision: {row['revision'][:160]!r}...")
    print(f"  jaccard {row['jaccard']:.2f}, levenshtein {row['levenshtein']}, length ratio {row['length_ratio']:.2f}")
    print(f"demo: next: clair status {run_dir}  |  clair stats {run_dir}  |  clair export {run_dir} --format trl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
