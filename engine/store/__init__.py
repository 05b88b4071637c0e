"""The run store (L3): the only code that knows a run directory's layout.

TEMPORARY facade over the store's modules (the store package's own facade replaces this file).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from engine.core.errors import RunStateError, StorageError
from engine.core.memory import lower_thread_priority, release_free_memory
from engine.source import DoneSet
from engine.store import readers
from engine.store.journal import Journal
from engine.store.manifest import (
    FORMAT_VERSION,
    RunLock,
    describe_change,
    fingerprint_hash,
    read_manifest,
    write_manifest,
)
from engine.store.shards import ShardWriter, next_segment_number

log = logging.getLogger("clair")
MAX_PENDING_SEGMENTS = 2


def _has_rows(run: Path) -> bool:
    globs = [(run / "data").glob("*.parquet"), (run / "failures").glob("*.parquet"), (run / "journal").glob("seg-*")]
    return any(next(g, None) is not None for g in globs)


class RunStore:
    def __init__(self, run_dir: Path, manifest: dict[str, Any], lock: RunLock, shards: ShardWriter):
        self.dir = run_dir
        self.manifest = manifest
        self._lock = lock
        self._shards = shards

    @classmethod
    def open(cls, run_dir: Path, *, fingerprint: dict[str, Any], data_schema: pa.Schema, failure_schema: pa.Schema,
             parser_version: str, markers: dict[str, Any], new_run: bool = False) -> RunStore:
        from engine.commands.reparse import finish_pending

        run = run_dir
        fp_hash = fingerprint_hash(fingerprint)
        manifest = read_manifest(run) if run.exists() else None
        if manifest is not None and not _has_rows(run):
            manifest = None
        if manifest is not None and manifest.get("fingerprint_hash") != fp_hash and not new_run:
            what = describe_change(manifest.get("fingerprint", {}), fingerprint)
            raise RunStateError(
                f"{run} holds a run made with different settings ({what} changed); resuming would mix "
                f"answers. Use --new-run to archive it and start fresh, or set output.dir to another directory"
            )
        if new_run and run.exists() and any(run.iterdir()):
            archived = run.with_name(f"{run.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            RunLock(run).acquire()
            shutil.move(str(run), str(archived))
            log.warning("archived the previous run to %s", archived)
            manifest = None
        try:
            run.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create the run directory {run} ({e.strerror}); fix output.dir") from None
        lock = RunLock(run)
        lock.acquire()
        try:
            if manifest is not None and manifest.get("parser_version") != parser_version:
                log.warning(
                    "the rows already in %s were parsed by parser version %s, this is version %s; "
                    "`clair reparse %s` re-parses them from the stored answers without requests",
                    run, manifest.get("parser_version"), parser_version, run,
                )
            manifest = manifest or {
                "format_version": FORMAT_VERSION, "created": time.time(), "fingerprint": fingerprint,
                "fingerprint_hash": fp_hash, "parser_version": parser_version, "markers": markers, "runs": [],
            }
            shards = ShardWriter(run, data_schema, failure_schema)
            finish_pending(run)
            recovered = shards.recover(run / "journal")
            if recovered:
                log.info("recovered %d journal segment(s) into shards", recovered)
        except BaseException:
            lock.release()
            raise
        return cls(run, manifest, lock, shards)

    def done_ids(self, *, retry_failed: bool = False) -> DoneSet:
        return readers.done_set(self.dir, retry_failed=retry_failed)

    def begin_session(self, *, config: dict[str, Any], started: float, retry_failed: bool,
                      rows_total: int | None) -> None:
        self.manifest["config"] = config
        self.manifest["runs"].append({"started": started, "retry_failed": retry_failed})
        self.manifest["rows_total"] = rows_total
        write_manifest(self.dir, self.manifest)

    def writer(self, *, rows_per_segment: int, fsync_interval_s: float) -> StoreWriter:
        return StoreWriter(self._shards, Journal(
            self.dir / "journal", first_segment=next_segment_number(self.dir, self.dir / "journal"),
            rows_per_segment=rows_per_segment, fsync_interval_s=fsync_interval_s))

    def supersede_failures(self) -> int:
        return readers.compact_failures(self.dir)

    def counts(self) -> dict[str, Any]:
        return readers.count_rows(self.dir)

    def end_session(self, *, status: str, report: dict[str, Any], rows_total: int | None,
                    counts: dict[str, Any], ended: float) -> None:
        self.manifest["runs"][-1].update(ended=ended, status=status, report=report)
        self.manifest["rows_total"] = rows_total
        self.manifest["counts"] = counts
        write_manifest(self.dir, self.manifest)
        try:
            (self.dir / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        except OSError:
            pass

    def close(self) -> None:
        self._lock.release()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StoreWriter:
    def __init__(self, shards: ShardWriter, journal: Journal):
        self._shards = shards
        self.journal = journal
        journal.on_full = self._segment_full
        self.ready = asyncio.Event()
        self.ready.set()
        self.waits = 0
        self._pending = 0
        self._q: asyncio.Queue[Path | None] = asyncio.Queue()
        journal.open()

    def append(self, recs: list[dict[str, Any]]) -> None:
        self.journal.append_many(recs)

    def _segment_full(self, path: Path, seg: int) -> None:
        self._pending += 1
        if self._pending >= MAX_PENDING_SEGMENTS:
            self.ready.clear()
        self._q.put_nowait(path)

    def close(self) -> None:
        self.journal.close()
        self._q.put_nowait(None)

    async def run(self) -> None:
        commit = asyncio.create_task(self.journal.commit_loop())
        try:
            await self._compactor()
        finally:
            commit.cancel()
            await asyncio.gather(commit, return_exceptions=True)
        if self.journal.error is not None:
            raise self.journal.error

    async def _compactor(self) -> None:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1, thread_name_prefix="clair-writer", initializer=lower_thread_priority) as pool:
            while True:
                path = await self._q.get()
                if path is None:
                    return
                try:
                    await loop.run_in_executor(pool, self._compact, path)
                except Exception:
                    self.ready.set()
                    raise
                self._pending -= 1
                if self._pending < MAX_PENDING_SEGMENTS:
                    self.ready.set()

    def _compact(self, segment: Path) -> None:
        self._shards.compact(segment)
        release_free_memory()


__all__ = ["MAX_PENDING_SEGMENTS", "RunStore", "StoreWriter", "dataclasses", "StorageError"]

