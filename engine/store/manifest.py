"""A run directory's own state: manifest, fingerprints and the run lock (L3).

The manifest (``manifest.json``) is read and written through the store's :class:`Storage` seam, whole
(:meth:`Storage.write_atomic`). Its ``format_version`` says which layout the run directory has; a
manifest from a newer layout than this code knows is refused. The lock is an ``flock`` on a local file.

The request fingerprint covers what changes the ANSWER (input identity and mapping, prompt variant and
template text, model names, generation params); the parser version is kept separately. URLs, keys,
weights, concurrency and rate limits are deliberately not part of it, and neither is ``input.limit``
(raising it extends a run).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import time
from pathlib import Path
from typing import Any

import orjson

from engine.core.errors import RunStateError
from engine.store.fs import LocalStorage, Storage, storage_error

MANIFEST = "manifest.json"
REPORT = "report.json"
LOCK = "run.lock"
#: the run directory's layout: journal/seg-N.log, data|failures/part-N.parquet, manifest.json, run.lock,
#: reparse-intent.json. Raise it when a change means older code would misread a run directory.
FORMAT_VERSION = 1


def fingerprint_hash(fp: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(fp, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def describe_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Human words for what differs between two request fingerprints."""
    names = {
        "input": "the input (files, dataset or column mapping)",
        "prompt": "the prompt (variant or template text)",
        "models": "the model name",
        "generation": "the generation parameters",
        "shaping": "the endpoints' request shaping (extra_body, system_role)",
        "keep_truncated": "generate.keep_truncated",
    }
    changed = []
    og, ng = old.get("generate"), new.get("generate")
    if (og is None) != (ng is None) or ("prompt" in old) != ("prompt" in new):
        return "the stages (a generate: section or the top-level endpoints were added or removed)"
    if isinstance(og, dict) and isinstance(ng, dict) and og != ng:  # a generate stage: what changed in it
        changed.append("the generate stage's " + describe_change(og, ng).replace("the ", "", 1))
    for key, label in names.items():
        if old.get(key) != new.get(key):
            detail = ""
            if key == "models":
                detail = f" ({', '.join(old.get(key) or [])} → {', '.join(new.get(key) or [])})"
            elif key == "prompt" and old[key].get("variant") != new[key].get("variant"):
                detail = f" ({old[key].get('variant')} → {new[key].get('variant')})"
            elif key == "generation":
                diff = sorted(k for k in set(old[key]) | set(new[key]) if old[key].get(k) != new[key].get(k))
                detail = f" ({', '.join(diff)})"
            changed.append(label + detail)
    return "; ".join(changed) or "the request settings"


def load(storage: Storage) -> dict[str, Any] | None:
    """The manifest, or None when there is none. Corrupt or from a newer clair-engine: RunStateError."""
    where = f"{storage.where}/{MANIFEST}"
    try:
        raw = storage.read_bytes(MANIFEST)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        raw = b""
    try:
        manifest = orjson.loads(raw)
        if not isinstance(manifest, dict):
            raise ValueError
    except (orjson.JSONDecodeError, ValueError):
        raise RunStateError(
            f"{where} is corrupt; move the run directory away or use --new-run to start over"
        ) from None
    version = manifest.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RunStateError(
            f"{storage.where} was made by a newer clair-engine (run format {version}; this one reads up to "
            f"{FORMAT_VERSION}); upgrade clair-engine to use it"
        )
    return manifest


def save(storage: Storage, manifest: dict[str, Any]) -> None:
    storage.write_atomic(MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))


def new_manifest(*, created: float, fingerprint: dict[str, Any], parser_version: str,
                 markers: dict[str, Any]) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "created": created,
        "fingerprint": fingerprint,
        "fingerprint_hash": fingerprint_hash(fingerprint),
        "parser_version": parser_version,
        "markers": markers,
        "runs": [],
    }


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    """The manifest of a local run directory (None when there is none)."""
    return load(LocalStorage(run_dir))


class RunLock:
    """An flock on ``RUN/run.lock`` holding our pid: released by the OS when the process dies, so a
    stale lock from a dead process is simply taken over."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise storage_error(e, str(self.path)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = lock_holder(self.path.parent)
            who = f" (pid {holder['pid']} on {holder.get('host', '?')})" if holder else ""
            raise RunStateError(
                f"another clair run is active on {self.path.parent}{who}; wait for it or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, orjson.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def lock_holder(run_dir: Path) -> dict[str, Any] | None:
    try:
        return orjson.loads((run_dir / LOCK).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None


def is_active(run_dir: Path) -> dict[str, Any] | None:
    """The holder's info when a live process holds the run lock, else None."""
    p = run_dir / LOCK
    if not p.exists():
        return None
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return lock_holder(run_dir) or {"pid": None}
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
