"""``make demo``: revise the bundled sample against the bundled mock endpoint (no network)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from engine.cli import main as clair_main
from engine.commands.show import show_run, use_color
from engine.store import DATA, RunView
from engine.tools.mockserver_proc import MockProcess

ROOT = Path(__file__).resolve().parents[2]


def first_revised(run_dir: Path) -> Any:
    """The row_id of the first data row whose revision differs from the original (Levenshtein > 0), or None."""
    for batch in RunView.open(run_dir).iter_batches(DATA, ["row_id", "levenshtein"], 1024):
        hits = batch.filter(pc.fill_null(pc.greater(batch.column("levenshtein"), 0), False))
        if hits.num_rows:
            return hits.column("row_id")[0].as_py()
    return None


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
    rid = first_revised(run_dir)
    if rid is not None:
        print(f"demo: one pair, as `clair show {run_dir} --row-id {rid}` prints it:")
        show_run(run_dir, row_id=str(rid), color=use_color(sys.stdout, plain=False))
        print()
    print(f"demo: next: clair show {run_dir}  |  clair status {run_dir}  |  clair stats {run_dir}  |  "
          f"clair export {run_dir} --format trl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
