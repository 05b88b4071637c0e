"""The benchmark's input: a cached Parquet file of synthetic UltraFeedback-shaped rows per size.

``ensure_data`` returns the smallest cached input with enough rows (generation is prefix-stable, so
a bigger file serves a smaller run through ``input.limit``) or writes one (to a temp name, then
renamed: an interrupted bench leaves no truncated cache).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["DATA_SEED", "ensure_data"]

#: input rows are generated with this seed (prefix-stable: the first n rows of any size are the same)
DATA_SEED = 0


def _data_name(rows: int) -> str:
    return f"ultrafeedback-{rows}-seed{DATA_SEED}.parquet"


def _cached_rows(p: Path) -> int | None:
    stem = p.name
    if not (stem.startswith("ultrafeedback-") and stem.endswith(f"-seed{DATA_SEED}.parquet")):
        return None
    try:
        return int(stem.split("-")[1])
    except ValueError:
        return None


def ensure_data(rows: int, data_dir: Path, *, log: Callable[[str], None] | None = None) -> tuple[Path, int]:
    """A cached input holding at least ``rows`` rows: (path, rows in the file).

    Generation is prefix-stable (the first n rows of any size are identical), so the smallest cached
    file with enough rows is used (the run reads only ``rows`` of it: ``input.limit``); otherwise a file
    of exactly ``rows`` rows is written (to a temp name, then renamed: an interrupted bench leaves no
    truncated cache).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    have = sorted((n, p) for p in data_dir.glob("ultrafeedback-*.parquet") if (n := _cached_rows(p)) is not None)
    for n, p in have:
        if n >= rows:
            return p, n
    from engine.tools.synthetic.files import write_sample

    path = data_dir / _data_name(rows)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    t0 = time.perf_counter()
    if log:
        log(f"generating {rows:,} input rows (once; cached in {data_dir})")
    try:
        write_sample(tmp, rows, seed=DATA_SEED, fmt="parquet")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    if log:
        log(f"generated {path.name} in {time.perf_counter() - t0:.1f}s")
    return path, rows
