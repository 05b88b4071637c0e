"""How much more CPU the same Python work costs when it runs in short bursts with idle gaps between them.

At low request rates the engine's event loop wakes for each answer and sleeps in between; at high rates
it works continuously. On a VM (and on any CPU with power states) an interrupted core runs with cold
caches and, often, at a lower clock, so CPU seconds per row rise with idleness even when the code does
the same work. This script measures that effect on the machine itself, with no engine involved: the same
work unit (~0.5 ms of JSON encoding, the size of one row's work on the loop) run back to back, then with
1 ms and 4 ms sleeps between units. Read it next to the `lognormal` and `ratelimited` CPU figures in
RESULTS.md.

    python benchmarks/duty_cycle.py            # prints the figures, writes benchmarks/out/duty_cycle.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out" / "duty_cycle.json"
_DATA = [{"row": i, "text": "x" * 50, "tokens": [1, 2, 3]} for i in range(200)]


def work_unit() -> int:
    return sum(len(json.dumps(d)) for d in _DATA)


def cpu_us_per_unit(units: int, gap_s: float) -> float:
    """Thread CPU time per work unit, with ``gap_s`` of sleep after each unit."""
    start = time.thread_time()
    for _ in range(units):
        work_unit()
        if gap_s:
            time.sleep(gap_s)
    return (time.thread_time() - start) / units * 1e6


def measure(repeat: int, units: int) -> dict[str, float]:
    work_unit()  # warm up
    modes = {"busy": 0.0, "gap_1ms": 0.001, "gap_4ms": 0.004}
    runs: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(repeat):  # interleaved, so a slow phase of the machine hits every mode alike
        for mode, gap in modes.items():
            runs[mode].append(cpu_us_per_unit(units if not gap else max(1, units // 4), gap))
    return {mode: round(statistics.median(v), 1) for mode, v in runs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per mode (median reported)")
    ap.add_argument("--units", type=int, default=2000, help="work units per busy run (a quarter with gaps)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.repeat < 1 or args.units < 4:
        print("error: --repeat must be >= 1 and --units >= 4", file=sys.stderr)
        return 2
    res = measure(args.repeat, args.units)
    ratio = {m: round(v / res["busy"], 2) for m, v in res.items()}
    for mode, us in res.items():
        print(f"{mode:8s} {us:8.1f} us CPU per work unit  ({ratio[mode]:.2f}x busy)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "us_per_unit": res,
                                    "ratio_to_busy": ratio, "repeat": args.repeat, "units": args.units}, indent=1))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
