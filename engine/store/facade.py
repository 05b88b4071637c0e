"""The run store's facade (L3): the only way the rest of the engine reaches a run directory.

* :class:`RunStore`: a run directory opened for writing (holds the run lock): a run's sessions, its
  done set, its :class:`StoreWriter`, superseding failures; and ``clair reparse``'s shard-pair rewrite.
* :class:`StoreWriter`: the event-loop side of a run's output: the journal (group commit) and the
  compaction of full segments into shards in one lower-priority writer thread, with backpressure.
* :class:`RunView`: a run directory opened read-only (status, export, stats, tests).
* :meth:`RunStore.stage` / :meth:`RunView.stage`: a multi-stage run's stage sub-stores
  (:mod:`engine.store.stage`).

Layout (``format_version`` 1)::

    RUN/manifest.json            the run's settings, fingerprint and sessions (through the Storage seam)
    RUN/report.json              the last session's report (through the seam)
    RUN/data/part-NNNNN.parquet  rows with a usable revision (through the seam)
    RUN/failures/part-NNNNN.parquet   rows without one (through the seam)
    RUN/reparse-intent.json      only while a shard pair is being replaced (through the seam)
    RUN/journal/seg-NNNNN.log    finished rows not yet in shards (always local)
    RUN/run.lock                 flock of the process using the run (always local)
    RUN/stages/<name>/           a stage's own rows (data/, failures/, journal/), e.g. the student answers
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from engine import records
from engine.core.errors import RunStateError, StorageError
from engine.source import DoneSet
from engine.store import manifest as mf
from engine.store import readers, rewrite
from engine.store.fs import LocalStorage, Storage, atomic_output
from engine.store.journal import JOURNAL, JournalStats, count_records, list_segments
from engine.store.recovery import Recovered, recover
from engine.store.shards import (
    DATA,
    FAILURES,
    KINDS,
    ShardWriter,
    has_rows,
    next_segment_number,
    shard_name,
    shard_names,
    shard_number,
)
from engine.store.stage import StageStore, StageView, compact_stage_leftovers, stage_stores
from engine.store.writer import MAX_PENDING_SEGMENTS, StoreWriter

log = logging.getLogger("clair")

__all__ = ["MAX_PENDING_SEGMENTS", "JournalStats", "RunStore", "RunView", "StoreWriter", "atomic_output"]


def _not_a_run(run_dir: Path) -> RunStateError:
    return RunStateError(f"{run_dir} is not a clair run directory (no manifest.json); check the path")


class RunStore:
    """A run directory opened for writing; holds the run lock until :meth:`close` (or the ``with`` ends)."""

    def __init__(self, run_dir: Path, storage: Storage, lock: mf.RunLock, manifest: dict[str, Any],
                 shards: ShardWriter | None, recovered: Recovered):
        self.dir = run_dir
        self.storage = storage
        self.manifest = manifest
        self.recovered = recovered
        self._lock = lock
        self._shards = shards

    # ------------------------------------------------------------ opening

    @classmethod
    def open(cls, run_dir: Path, *, fingerprint: dict[str, Any], data_schema: pa.Schema,
             failure_schema: pa.Schema, parser_version: str, markers: dict[str, Any],
             new_run: bool = False, storage: Storage | None = None) -> RunStore:
        """Open (or create) ``run_dir`` for a run with these settings, locked and recovered.

        A manifest whose run has no rows yet is ignored (start afresh); a different fingerprint is refused
        (RunStateError naming what changed) unless ``new_run``, which archives a non-empty directory to
        ``DIR.old-TIMESTAMP`` first (under its lock: never one another run uses)."""
        run = Path(run_dir)
        if run.exists() and not run.is_dir():
            raise RunStateError(f"output.dir {run} is a file, not a directory; set output.dir to a folder")
        st = storage if storage is not None else LocalStorage(run)
        journal_dir = run / JOURNAL
        fp_hash = mf.fingerprint_hash(fingerprint)
        manifest = mf.load(st)
        # the run's own rows and its stages' (a run whose first stage holds answers is not empty)
        stores = [(st, journal_dir), *stage_stores(run, st)] if manifest is not None else []
        if manifest is not None and not any(has_rows(s, j) for s, j in stores):
            manifest = None  # nothing was answered yet: nothing to mix, start afresh
        if (manifest is not None and manifest.get("fingerprint_hash") != fp_hash
                and not any(_answered(s, j) for s, j in stores)):
            # only rows that were never sent (invalid input, e.g. a wrong column mapping): nothing was
            # paid, so the corrected job starts afresh (the old rows are archived, not mixed)
            log.warning("%s holds no answer yet (only rows that were never sent); starting afresh", run)
            new_run = True
        if manifest is not None and manifest.get("fingerprint_hash") != fp_hash and not new_run:
            what = mf.describe_change(manifest.get("fingerprint", {}), fingerprint)
            raise RunStateError(
                f"{run} holds a run made with different settings ({what} changed); resuming would mix "
                f"answers. Use --new-run to archive it and start fresh, or set output.dir to another directory"
            )
        if new_run and run.exists() and any(run.iterdir()):
            _archive(run, data_schema, failure_schema)
            manifest = None
        try:
            run.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create the run directory {run} ({e.strerror}); fix output.dir") from None
        lock = mf.RunLock(run)
        lock.acquire()
        try:
            if manifest is not None and manifest.get("parser_version") != parser_version:
                log.warning(
                    "the rows already in %s were parsed by parser version %s, this is version %s; "
                    "`clair reparse %s` re-parses them from the stored answers without requests",
                    run, manifest.get("parser_version"), parser_version, run,
                )
            if manifest is None:
                manifest = mf.new_manifest(created=time.time(), fingerprint=fingerprint,
                                           parser_version=parser_version, markers=markers)
            # a run keeps the columns it was made with (one schema across its shards: an older run
            # directory resumed by a newer engine gets no new columns)
            data_schema, failure_schema = _run_schemas(st, data_schema, failure_schema)
            shards = ShardWriter(st, data_schema, failure_schema)
            recovered = recover(st, journal_dir, shards)
            if recovered.segments_compacted:
                log.info("recovered %d journal segment(s) into shards", recovered.segments_compacted)
            return cls(run, st, lock, manifest, shards, recovered)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def open_existing(cls, run_dir: Path, *, storage: Storage | None = None) -> RunStore:
        """Open an existing run to rewrite its shards (``clair reparse``): locked, an interrupted rewrite
        finished and staged files dropped; journal segments are left alone (see :meth:`journal_segments`)."""
        run = Path(run_dir)
        st = storage if storage is not None else LocalStorage(run)
        manifest = mf.load(st) if run.is_dir() else None
        if manifest is None:
            raise _not_a_run(run)
        lock = mf.RunLock(run)
        lock.acquire()
        try:
            return cls(run, st, lock, manifest, None, recover(st, run / JOURNAL))
        except BaseException:
            lock.release()
            raise

    # ------------------------------------------------------------ a run's sessions

    def done_ids(self, *, retry_failed: bool = False) -> DoneSet:
        """Rows not to request again: data rows, and failure rows (only final ones with ``retry_failed``)."""
        return readers.done_ids(self.storage, retry_failed=retry_failed)

    def begin_session(self, *, config: dict[str, Any], started: float, retry_failed: bool,
                      rows_total: int | None) -> None:
        self.manifest["config"] = config
        self.manifest["runs"].append({"started": started, "retry_failed": retry_failed})
        self.manifest["rows_total"] = rows_total
        mf.save(self.storage, self.manifest)

    def note(self, **fields: Any) -> None:
        """Record a live state of the current session (e.g. ``paused_since``) in the manifest, atomically, for
        ``clair status`` in another process. For rare transitions only, never per row."""
        self.manifest["runs"][-1].update(fields)
        mf.save(self.storage, self.manifest)

    def writer(self, *, rows_per_segment: int, fsync_interval_s: float) -> StoreWriter:
        if self._shards is None:
            raise RuntimeError("RunStore.writer needs a store opened with RunStore.open")
        journal_dir = self.dir / JOURNAL
        return StoreWriter(journal_dir, self._shards, first_segment=next_segment_number(self.storage, journal_dir),
                           rows_per_segment=rows_per_segment, fsync_interval_s=fsync_interval_s)

    def stage(self, name: str, *, data_schema: pa.Schema, failure_schema: pa.Schema) -> StageStore:
        """Stage ``name``'s sub-store ``RUN/stages/<name>/`` (e.g. the generate stage's answers), opened under
        the run's lock and recovered (staged files dropped, leftover journal segments compacted into its
        shards), keeping the columns its shards already have."""
        if self._shards is None:
            raise RuntimeError("RunStore.stage needs a store opened with RunStore.open")
        return StageStore.open(self.dir, self.storage, name, data_schema=data_schema, failure_schema=failure_schema)

    def supersede_failures(self) -> int:
        """Drop failure rows superseded by data rows or newer failures (after ``--retry-failed``); returns
        how many, and logs it."""
        removed = rewrite.drop_superseded_failures(self.storage)
        if removed:
            log.info("removed %d superseded failure row(s)", removed)
        return removed

    def counts(self) -> dict[str, Any]:
        """``{"data", "failed", "failure_kinds"}`` from the shards."""
        return readers.counts(self.storage)

    def end_session(self, *, status: str, report: dict[str, Any], rows_total: int | None,
                    counts: dict[str, Any] | None, ended: float) -> None:
        """The session's end: its status and report (and, when known, the run's counts) into the manifest."""
        self.manifest["runs"][-1].update(ended=ended, status=status, report=report)
        self.manifest["rows_total"] = rows_total
        if counts is not None:
            self.manifest["counts"] = counts
        mf.save(self.storage, self.manifest)
        with contextlib.suppress(StorageError):  # the manifest holds the report too
            import orjson

            self.storage.write_atomic(mf.REPORT, orjson.dumps(report, option=orjson.OPT_INDENT_2))

    # ------------------------------------------------------------ rewriting shards (clair reparse)

    def journal_segments(self) -> list[Path]:
        return list_segments(self.dir / JOURNAL)

    def shard_numbers(self) -> list[int]:
        """Every shard pair number there is (of either kind), ascending."""
        return sorted({shard_number(n) for k in KINDS for n in shard_names(self.storage, k)})

    def read_shard(self, kind: str, n: int) -> pa.Table | None:
        name = shard_name(kind, n)
        return readers.read_table(self.storage, name) if self.storage.exists(name) else None

    def rewrite_pair(self, n: int, data: pa.Table | None, failures: pa.Table | None) -> None:
        """Replace shard pair ``n`` by these rows, all or nothing (intent file; finished on the next open)."""
        rewrite.rewrite_pair(self.storage, n, data, failures)

    def update_manifest(self, **fields: Any) -> None:
        self.manifest.update(fields)
        mf.save(self.storage, self.manifest)

    # ------------------------------------------------------------ closing

    def close(self) -> None:
        """Release the run lock (idempotent)."""
        self._lock.release()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _answered(st: Storage, journal_dir: Path) -> bool:
    """Whether the run holds anything a request was sent for: data rows, a journal segment (not yet read:
    counted as answered), or failure rows of any kind but ``invalid_input``."""
    if shard_names(st, DATA) or list_segments(journal_dir):
        return True
    for name in shard_names(st, FAILURES):
        kinds = readers.read_table(st, name, ["error_kind"]).column("error_kind")
        if pc.any(pc.not_equal(kinds, records.INVALID_INPUT)).as_py():
            return True
    return False


def _run_schemas(st: Storage, data: pa.Schema, failures: pa.Schema) -> tuple[pa.Schema, pa.Schema]:
    """The schemas a run keeps: each kind's from its existing shards; a kind without shards yet takes the
    other kind's columns (without engine columns that one lacks: an older run gets no new columns); a run
    without shards, the given ones."""
    have = {k: readers.shard_schema(st, names[0]) for k in KINDS if (names := shard_names(st, k))}
    if not have:
        return data, failures
    for kind in KINDS:
        if kind not in have:
            (known,) = have.values()
            made = records.other_schema(known, kind)
            lacking = [n for n in records.SHARED_COLUMNS if n not in known.names]
            have[kind] = pa.schema([f for f in made if f.name not in lacking])
    return have[DATA], have[FAILURES]


def archive_dirs(run: Path) -> list[Path]:
    """This output dir's archived runs (``RUN.old-*``, made by ``--new-run``), oldest first."""
    return sorted(p for p in run.parent.glob(f"{run.name}.old-*") if p.is_dir())


def _archive(run: Path, data: pa.Schema, failures: pa.Schema) -> Path:
    """Move a run directory aside to ``RUN.old-TIMESTAMP``, holding its lock while doing it. Its journals
    (the run's and its stages') are compacted into shards first (a run killed before its last segment
    became a shard): the archive then holds every answer it was paid for, where answer reuse finds them."""
    archived = run.with_name(f"{run.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while archived.exists():  # two archives within one second
        n += 1
        archived = run.with_name(f"{run.name}.old-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
    lock = mf.RunLock(run)
    lock.acquire()  # never archive a directory another run is using
    try:
        st = LocalStorage(run)
        if mf.load(st) is not None:
            recover(st, run / JOURNAL, ShardWriter(st, *_run_schemas(st, data, failures)))
            compact_stage_leftovers(run, st)
        shutil.move(str(run), str(archived))
    except OSError as e:
        raise StorageError(f"cannot archive {run} to {archived} ({e.strerror or e}); move it away by hand") from None
    finally:
        lock.release()
    log.warning("archived the previous run to %s", archived)
    return archived


class RunView:
    """A run directory opened read-only: takes no lock, changes nothing (status, export, stats)."""

    def __init__(self, run_dir: Path, storage: Storage, manifest: dict[str, Any]):
        self.dir = run_dir
        self.storage = storage
        self.manifest = manifest

    @classmethod
    def open(cls, run_dir: Path, *, storage: Storage | None = None) -> RunView:
        run = Path(run_dir)
        st = storage if storage is not None else LocalStorage(run)
        manifest = mf.load(st) if run.is_dir() else None
        if manifest is None:
            raise _not_a_run(run)
        return cls(run, st, manifest)

    def active(self) -> dict[str, Any] | None:
        """The lock holder's info (``pid``, ``host``, ``since``) when a live process uses the run, else None."""
        return mf.is_active(self.dir)

    def shards(self, kind: str) -> list[str]:
        """Committed shard names of ``kind`` (``DATA`` or ``FAILURES``), in shard order."""
        return shard_names(self.storage, kind)

    def journal_segments(self) -> list[Path]:
        return list_segments(self.dir / JOURNAL)

    def journal_stats(self) -> JournalStats:
        segs = self.journal_segments()
        return JournalStats(len(segs), sum(count_records(s) for s in segs), sum(s.stat().st_size for s in segs))

    def pending_rewrite(self) -> bool:
        """An interrupted ``clair reparse`` waits to be finished (readers may see half of it)."""
        return rewrite.pending_rewrite(self.storage)

    def last_activity(self) -> float | None:
        names = [*self.shards(DATA), *self.shards(FAILURES), mf.MANIFEST]
        times = [t for t in (self.storage.mtime(n) for n in names) if t is not None]
        times += [s.stat().st_mtime for s in self.journal_segments()]
        return max(times, default=None)

    def folder_holding(self, path: Path) -> str | None:
        """The run folder (data, failures, journal) that ``path`` would be written into, if any."""
        parent = path.resolve().parent
        for kind in (DATA, FAILURES, JOURNAL):
            d = (self.dir / kind).resolve()
            if parent == d or d in parent.parents:
                return kind
        return None

    # ---- rows (the supersession rules applied)

    def counts(self) -> dict[str, Any]:
        return readers.counts(self.storage)

    def data_ids(self) -> pa.Array | None:
        return readers.data_ids(self.storage)

    def current_failures(self, columns: list[str] | None = None) -> pa.Table | None:
        return readers.current_failures(self.storage, columns)

    def done_ids(self, *, retry_failed: bool = False) -> DoneSet:
        return readers.done_ids(self.storage, retry_failed=retry_failed)

    def schema(self, kind: str = DATA) -> pa.Schema | None:
        """The first shard's schema of ``kind``, None without shards of that kind."""
        names = self.shards(kind)
        return readers.shard_schema(self.storage, names[0]) if names else None

    def iter_batches(self, kind: str, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Every shard's record batches of ``kind``, in shard order, only ``columns`` (data rows are all
        current; for current failure rows use :meth:`current_failures`)."""
        for name in self.shards(kind):
            yield from readers.iter_batches(self.storage, name, columns, batch_rows)

    # ---- a multi-stage run's stages

    def stage(self, name: str) -> StageView | None:
        """Stage ``name``'s sub-store read-only; None when the run has no such stage."""
        return StageView.open(self.dir, self.storage, name)
