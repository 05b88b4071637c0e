"""What the benchmark reads from the operating system: a live process's CPU and memory, and the machine.

``proc_cpu_s`` (user+system CPU), ``proc_rss_mb``, ``proc_hwm_mb`` (peak RSS) and ``proc_status_mb``
(peak, private and file-backed memory) read ``/proc/PID`` and return None / {} where unavailable;
``machine_info`` describes the cores, CPU, memory, Python and platform a result was measured on.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["machine_info", "proc_cpu_s", "proc_hwm_mb", "proc_rss_mb", "proc_status_mb"]

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def proc_cpu_s(pid: int) -> float | None:
    """user+system CPU seconds of a live process (all threads), from /proc; None when unavailable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14, 15 of stat)


def proc_hwm_mb(pid: int) -> float | None:
    """Peak RSS so far (VmHWM) of a live process. ``wait4``'s ``ru_maxrss`` is not used for this: a child
    started by ``fork``/``vfork`` + ``exec`` inherits the high-water mark of the parent's memory."""
    return proc_status_mb(pid).get("VmHWM")


def proc_status_mb(pid: int) -> dict[str, float]:
    """VmHWM, RssAnon (private memory) and RssFile (mapped file pages: mostly shared libraries) in MB.
    RssFile depends on the page cache: library files just written by ``pip install`` sit in large
    folios (ext4, Linux >= 6.16), and mapping one page maps the whole folio (+35-40 MB measured)."""
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                key = line.split(b":", 1)[0]
                if key in (b"VmHWM", b"RssAnon", b"RssFile"):
                    out[key.decode()] = int(line.split()[1]) / 1024
    except (OSError, IndexError, ValueError):
        pass
    return out


def proc_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return None


def machine_info() -> dict[str, Any]:
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gb": mem,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }

