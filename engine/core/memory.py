"""Keep a long run's memory flat and its CPU low: allocator and GC settings for `clair run` (L2).

Measured on the 32k-row and 1M-row benchmarks (benchmarks/RESULTS.md): the glibc allocator gives each
thread that allocates (the writer thread, the thread pool) its own arena and keeps freed pages in
them, and Arrow's default pool (mimalloc) keeps its own; together 50-100 MB that is free but never
returned. The settings here are process-wide, so only the CLI applies them (a notebook keeps its own
allocator); each is skipped quietly where it does not apply (not glibc, not Linux).
"""

from __future__ import annotations

import ctypes
import gc
import importlib.abc
import os
import sys
import threading
from functools import cache

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
ARENAS = 2
#: blocks this big get their own mapping, returned to the OS when freed. glibc raises this threshold
#: each time such a block is freed (up to 32 MB), after which response bodies and Arrow buffers land
#: in the heap and fragment it: fixing it kept the 32k-row benchmark ~30 MB lower
MMAP_THRESHOLD = 256 * 1024
#: free memory at the top of the heap beyond this is returned to the OS
TRIM_THRESHOLD = 1024 * 1024
#: the cyclic garbage collector's first-generation threshold (Python's default is 700): a run makes
#: dozens of short-lived objects per request, so the default collects several hundred times a second
GC_GEN0_THRESHOLD = 20_000
#: read by Arrow's C++ library once, when pyarrow loads (a user's own setting is kept)
ARROW_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"


@cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def tune_process() -> list[str]:
    """At most ``ARENAS`` malloc arenas, a fixed mmap threshold, Arrow allocating through malloc (so
    that trimming returns its freed buffers too), and a less eager garbage collector. Call once,
    before threads start and before pyarrow is imported. Returns what was applied."""
    applied = []
    gc.freeze()  # what is alive now (modules, config) is never scanned again
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    applied.append(f"gc threshold {GC_GEN0_THRESHOLD}")
    libc = _glibc()
    if libc is not None:
        for param, value, what in (
            (_M_ARENA_MAX, ARENAS, f"malloc arenas <= {ARENAS}"),
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD, f"mmap threshold {MMAP_THRESHOLD // 1024} KiB"),
            (_M_TRIM_THRESHOLD, TRIM_THRESHOLD, f"trim threshold {TRIM_THRESHOLD // 1024} KiB"),
        ):
            if libc.mallopt(param, value) == 1:
                applied.append(what)
    if "pyarrow" not in sys.modules:
        # Arrow's C++ default pool, which its JSON reader, Parquet writer and kernels use whatever
        # pyarrow's own default is, is chosen from this variable when pyarrow loads: with mimalloc there,
        # a run kept ~55 MB of freed compaction buffers (peak RSS 233 -> 179 MB on the 32k-row benchmark)
        pool = os.environ.setdefault(ARROW_POOL_ENV, "system")
        applied.append(f"arrow {pool} pool")
    else:  # too late for Arrow's own default: at least pyarrow's calls allocate through malloc
        try:
            import pyarrow as pa

            pa.set_memory_pool(pa.system_memory_pool())
            applied.append("arrow system pool (pyarrow calls only)")
        except (ImportError, NotImplementedError):  # pragma: no cover - system pool is always built
            pass
    return applied


def release_free_memory() -> bool:
    """Give the free pages of every malloc arena back to the OS (``malloc_trim``). Takes a few ms:
    call it from a worker thread after a burst of allocations (a compaction). False where unsupported."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


#: niceness added to background threads (the shard writer), so the event loop gets the CPU first
BACKGROUND_NICE = 10


def lower_thread_priority() -> bool:
    """Lower the calling thread's CPU priority (Linux: each thread has its own nice value). False where
    unsupported; never raises."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICE))
    except (AttributeError, OSError):
        return False
    return True


#: pyarrow's remote filesystems (their cloud SDK libraries: ~10 MB mapped); ``pyarrow.fs`` imports each
#: only if it can, and works without them. A run reads local files and writes local shards
REMOTE_FILESYSTEMS = ("pyarrow._s3fs", "pyarrow._gcsfs", "pyarrow._azurefs", "pyarrow._hdfs")


class _Refuse(importlib.abc.MetaPathFinder):
    def __init__(self, names: tuple[str, ...]):
        self.names = names

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if any(fullname == n or fullname.startswith(n + ".") for n in self.names):
            raise ModuleNotFoundError(f"{fullname} is not loaded in a clair run process", name=fullname)
        return None


def refuse_unused_imports() -> bool:
    """pyarrow imports pandas (~40 MB) the first time ``pa.array`` converts Python or numpy values,
    only to check whether they are pandas objects; a run of local files never uses pandas. Makes
    ``import pandas`` fail in this process (pyarrow then assumes it is absent), and, when ``pyarrow.fs``
    is not loaded yet, pyarrow's remote filesystems too (``REMOTE_FILESYSTEMS``). Not for processes that
    load a hub dataset (``datasets`` needs pandas). False when pandas is already loaded."""
    if "pandas" in sys.modules:
        return False
    if not any(isinstance(f, _Refuse) for f in sys.meta_path):
        remote = () if "pyarrow.fs" in sys.modules else REMOTE_FILESYSTEMS
        sys.meta_path.insert(0, _Refuse(("pandas", *remote)))
    return True
