"""L3: the run store, the only code that knows a run directory.

Callers use this facade, never paths::

    from engine.store import RunStore, RunView
    with RunStore.open(run_dir, fingerprint=..., data_schema=..., failure_schema=...,
                       parser_version=..., markers=...) as store:     # locked, recovered
        done = store.done_ids()
        store.begin_session(config=..., started=..., retry_failed=False, rows_total=None)
        w = store.writer(rows_per_segment=10_000, fsync_interval_s=0.05)
        ...  # w.append(records) from the event loop, await w.run() beside it, w.close() at the end
        store.end_session(status="completed", report=..., rows_total=..., counts=store.counts(), ended=...)
    view = RunView.open(run_dir)                                      # read-only: status, export, stats

Modules: ``fs`` (the Storage seam and the one atomic-write helper), ``journal``, ``shards`` (compaction),
``manifest`` (manifest, fingerprint, lock), ``readers`` (supersession rules, reads only), ``rewrite``
(superseding failures, the reparse pair rewrite), ``recovery`` (start-up repair), ``writer`` (the
journal writer), ``stage`` (a stage's sub-store), ``handoff`` (a stage's rows read back), ``reuse`` (answers of
earlier runs by request key), ``facade``.

The names below are imported on first use (PEP 562), so that importing ``engine.store.journal`` or
``engine.store.manifest`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.store.facade import (
        MAX_PENDING_SEGMENTS,
        JournalStats,
        RunStore,
        RunView,
        StoreWriter,
        archive_dirs,
    )
    from engine.store.fs import LocalStorage, Storage, atomic_output, storage_error
    from engine.store.handoff import Handoff
    from engine.store.manifest import read_manifest
    from engine.store.readers import load_results
    from engine.store.reuse import ReuseIndex, StoredAnswer
    from engine.store.shards import DATA, FAILURES
    from engine.store.stage import StageStore, StageView

_LAZY = {
    "MAX_PENDING_SEGMENTS": "facade", "JournalStats": "facade", "RunStore": "facade", "RunView": "facade",
    "StoreWriter": "facade", "archive_dirs": "facade", "ReuseIndex": "reuse", "StoredAnswer": "reuse",
    "LocalStorage": "fs", "Storage": "fs", "atomic_output": "fs", "storage_error": "fs",
    "read_manifest": "manifest", "Handoff": "handoff", "StageStore": "stage", "StageView": "stage",
    "load_results": "readers",
    "DATA": "shards", "FAILURES": "shards",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ReuseIndex",
    "StoredAnswer",
    "archive_dirs",
    "DATA",
    "FAILURES",
    "Handoff",
    "MAX_PENDING_SEGMENTS",
    "JournalStats",
    "LocalStorage",
    "RunStore",
    "RunView",
    "StageStore",
    "StageView",
    "Storage",
    "StoreWriter",
    "atomic_output",
    "load_results",
    "read_manifest",
    "storage_error",
]
