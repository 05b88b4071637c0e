"""Keep a long run's memory flat: allocator settings for the `clair run` process (L2).

Measured on the 32k-row and 1M-row benchmarks (benchmarks/RESULTS.md): the glibc allocator gives each
thread that allocates (the writer thread, the thread pool) its own arena and keeps freed pages in
them, and Arrow's default pool (mimalloc) keeps its own; together 50-100 MB that is free but never
returned. The settings here are process-wide, so only the CLI applies them (a notebook keeps its own
allocator); each is skipped quietly where it does not apply (not glibc, not Linux).
"""

from __future__ import annotations

import ctypes
import importlib.abc
import os
import sys
import threading
from functools import cache

_M_ARENA_MAX = -8  # mallopt parameter (glibc malloc.h)
ARENAS = 2


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
    """At most ``ARENAS`` malloc arenas, and Arrow allocating through malloc (so that trimming returns
    its freed buffers too). Call once, before threads start. Returns what was applied."""
    applied = []
    libc = _glibc()
    if libc is not None and libc.mallopt(_M_ARENA_MAX, ARENAS) == 1:
        applied.append(f"malloc arenas <= {ARENAS}")
    try:
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())
        applied.append("arrow system pool")
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


class _Refuse(importlib.abc.MetaPathFinder):
    def __init__(self, name: str):
        self.name = name

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname == self.name or fullname.startswith(self.name + "."):
            raise ModuleNotFoundError(f"{self.name} is not loaded in a clair run process", name=fullname)
        return None


def refuse_pandas() -> bool:
    """pyarrow imports pandas (~40 MB) the first time ``pa.array`` converts Python or numpy values,
    only to check whether they are pandas objects; a run of local files never uses pandas. Makes
    ``import pandas`` fail in this process (pyarrow then assumes it is absent). Not for processes that
    load a hub dataset (``datasets`` needs pandas). False when pandas is already loaded."""
    if "pandas" in sys.modules:
        return False
    if not any(isinstance(f, _Refuse) for f in sys.meta_path):
        sys.meta_path.insert(0, _Refuse("pandas"))
    return True
