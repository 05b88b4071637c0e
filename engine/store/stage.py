"""A stage's sub-store (L3): the rows of one stage of a multi-stage run (e.g. the student answers of the
``generate`` stage) in ``RUN/stages/<name>/``, with the run's layout::

    RUN/stages/<name>/data/part-NNNNN.parquet       the stage's rows that succeeded (through the seam)
    RUN/stages/<name>/failures/part-NNNNN.parquet   the stage's rows that failed (through the seam)
    RUN/stages/<name>/journal/seg-NNNNN.log         finished rows not yet in shards (always local)
    RUN/stages/<name>/schema-{data,failures}.arrow  the stage's shard schemas (for --new-run's archive)

No manifest and no lock of its own: the run's manifest and lock cover it (a stage is opened from an open
:class:`~engine.store.facade.RunStore`). The final rows of the run stay in ``RUN/data``, ``RUN/failures``.

* :class:`StageStore`: a stage opened for writing (recovered): done set, writer, counts, supersession, and
  the :class:`~engine.store.handoff.Handoff` that reads its rows back for the next stage.
* :class:`StageView`: a stage read-only (status, tests).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from engine.core.errors import RunStateError
from engine.source import DoneSet
from engine.store import readers, rewrite
from engine.store.fs import Storage, sub_storage
from engine.store.handoff import Handoff
from engine.store.journal import JOURNAL, JournalStats, count_records, list_segments
from engine.store.recovery import Recovered, recover
from engine.store.shards import DATA, FAILURES, KINDS, ShardWriter, next_segment_number, shard_names
from engine.store.writer import StoreWriter

log = logging.getLogger("clair")

__all__ = ["STAGES", "StageStore", "StageView", "compact_stage_leftovers", "stage_names", "stage_storage"]

#: the folder of a run that holds its stages' sub-stores
STAGES = "stages"
SCHEMA_FILES = {DATA: "schema-data.arrow", FAILURES: "schema-failures.arrow"}
_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _folder(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"a stage name is lower-case letters, digits and _ (got {name!r})")
    return f"{STAGES}/{name}"


def stage_storage(run_storage: Storage, name: str) -> Storage:
    """The Storage of stage ``name``'s committed files, inside the run's."""
    return sub_storage(run_storage, _folder(name))


def stage_names(run_dir: Path) -> list[str]:
    """The stages this run directory has a sub-store for (its local folder exists), sorted."""
    d = Path(run_dir) / STAGES
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))


def stage_stores(run_dir: Path, run_storage: Storage) -> list[tuple[Storage, Path]]:
    """(storage, journal dir) of every stage sub-store of the run."""
    return [(stage_storage(run_storage, n), Path(run_dir) / _folder(n) / JOURNAL) for n in stage_names(run_dir)]


def _schemas(st: Storage, data: pa.Schema, failures: pa.Schema) -> tuple[pa.Schema, pa.Schema]:
    """The schemas a stage keeps: each kind's from its existing shards; a kind without shards yet takes the
    given schema without the columns both given schemas share that the existing shards lack (an older
    stage gets no new columns); a stage without shards, the given ones."""
    given = {DATA: data, FAILURES: failures}
    have = {k: readers.shard_schema(st, names[0]) for k in KINDS if (names := shard_names(st, k))}
    if not have:
        return data, failures
    shared = set(data.names) & set(failures.names)
    for kind in KINDS:
        if kind not in have:
            (known,) = have.values()
            lacking = {n for n in shared if n not in known.names}
            have[kind] = pa.schema([f for f in given[kind] if f.name not in lacking])
    return have[DATA], have[FAILURES]


def _save_schemas(st: Storage, schemas: dict[str, pa.Schema]) -> None:
    for kind, schema in schemas.items():
        raw = schema.serialize().to_pybytes()
        name = SCHEMA_FILES[kind]
        if not st.exists(name) or st.read_bytes(name) != raw:
            st.write_atomic(name, raw)


def _saved_schemas(st: Storage) -> tuple[pa.Schema, pa.Schema] | None:
    try:
        d, f = (pa.ipc.read_schema(pa.py_buffer(st.read_bytes(SCHEMA_FILES[k]))) for k in KINDS)
    except (FileNotFoundError, pa.ArrowInvalid):
        return None
    return d, f


def compact_stage_leftovers(run_dir: Path, run_storage: Storage) -> int:
    """Every stage's leftover journal segments compacted into its shards, with the schemas the stage was
    last opened with (``--new-run``'s archive: it then holds every answer that was paid for). Returns how
    many segments. A stage whose schemas were never saved keeps its segments as they are."""
    n = 0
    for st, journal_dir in stage_stores(run_dir, run_storage):
        saved = _saved_schemas(st)
        if saved is not None:
            n += recover(st, journal_dir, ShardWriter(st, *saved)).segments_compacted
        elif list_segments(journal_dir):
            log.warning("%s: journal segments kept uncompacted (the stage's schemas are unknown)", journal_dir)
    return n


class StageStore:
    """Stage ``name``'s sub-store, opened (recovered) under the run's lock by ``RunStore.stage``."""

    def __init__(self, run_dir: Path, name: str, storage: Storage, shards: ShardWriter, recovered: Recovered):
        self.name = name
        self.dir = Path(run_dir) / _folder(name)
        self.storage = storage
        self.recovered = recovered
        self._shards = shards

    @classmethod
    def open(cls, run_dir: Path, run_storage: Storage, name: str, *, data_schema: pa.Schema,
             failure_schema: pa.Schema) -> StageStore:
        """Open (or create) stage ``name`` of the run; the caller holds the run's lock. Staged files are
        dropped and leftover journal segments compacted into its shards."""
        st = stage_storage(run_storage, name)
        d = Path(run_dir) / _folder(name)
        try:
            (d / JOURNAL).mkdir(parents=True, exist_ok=True)  # the local folder marks the stage as there
        except OSError as e:
            raise RunStateError(f"cannot create the stage folder {d} ({e.strerror}); check output.dir") from None
        st.refresh()
        data, failures = _schemas(st, data_schema, failure_schema)
        shards = ShardWriter(st, data, failures)
        recovered = recover(st, d / JOURNAL, shards)
        if recovered.segments_compacted:
            log.info("recovered %d journal segment(s) of stage %s into shards", recovered.segments_compacted, name)
        _save_schemas(st, {DATA: data, FAILURES: failures})
        return cls(run_dir, name, st, shards, recovered)

    @property
    def journal_dir(self) -> Path:
        return self.dir / JOURNAL

    @property
    def schemas(self) -> dict[str, pa.Schema]:
        """The shard schemas this stage keeps (its existing shards' columns)."""
        return dict(self._shards.schemas)

    def done_ids(self, *, retry_failed: bool = False) -> DoneSet:
        """Rows this stage does not request again: its data rows, and its failure rows (only final ones
        with ``retry_failed``)."""
        return readers.done_ids(self.storage, retry_failed=retry_failed)

    def writer(self, *, rows_per_segment: int, fsync_interval_s: float) -> StoreWriter:
        return StoreWriter(self.journal_dir, self._shards,
                           first_segment=next_segment_number(self.storage, self.journal_dir),
                           rows_per_segment=rows_per_segment, fsync_interval_s=fsync_interval_s)

    def counts(self) -> dict[str, Any]:
        """``{"data", "failed", "failure_kinds"}`` from the stage's shards."""
        return readers.counts(self.storage)

    def supersede_failures(self) -> int:
        """Drop the stage's failure rows superseded by data rows or newer failures; returns how many."""
        removed = rewrite.drop_superseded_failures(self.storage)
        if removed:
            log.info("removed %d superseded failure row(s) of stage %s", removed, self.name)
        return removed

    def handoff(self, writer: StoreWriter, *, skip: DoneSet, stage_done: DoneSet, batch_rows: int = 256) -> Handoff:
        """This stage's records for the next stage, in order: the backlog (rows in the shards older than
        ``writer``'s session), then every record ``writer`` journals, as soon as it is written. Rows in
        ``skip`` are left out; failure rows of the backlog whose row_id is not in ``stage_done`` too (this
        session requests them again: their new record arrives live). See :mod:`engine.store.handoff`."""
        return Handoff(self.storage, self.journal_dir, writer, skip=skip, stage_done=stage_done,
                       batch_rows=batch_rows)


class StageView:
    """A stage's sub-store read-only (takes no lock, changes nothing)."""

    def __init__(self, run_dir: Path, name: str, storage: Storage):
        self.name = name
        self.dir = Path(run_dir) / _folder(name)
        self.storage = storage

    @classmethod
    def open(cls, run_dir: Path, run_storage: Storage, name: str) -> StageView | None:
        """Stage ``name`` of the run, None when the run has no such stage."""
        if name not in stage_names(run_dir):
            return None
        return cls(run_dir, name, stage_storage(run_storage, name))

    def journal_segments(self) -> list[Path]:
        return list_segments(self.dir / JOURNAL)

    def journal_stats(self) -> JournalStats:
        segs = self.journal_segments()
        return JournalStats(len(segs), sum(count_records(s) for s in segs), sum(s.stat().st_size for s in segs))

    def shards(self, kind: str) -> list[str]:
        """Committed shard names of ``kind`` (``DATA`` or ``FAILURES``), in shard order."""
        return shard_names(self.storage, kind)

    def iter_batches(self, kind: str, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Every shard's record batches of ``kind``, in shard order, only ``columns``."""
        for name in self.shards(kind):
            yield from readers.iter_batches(self.storage, name, columns, batch_rows)

    def counts(self) -> dict[str, Any]:
        return readers.counts(self.storage)

    def done_ids(self, *, retry_failed: bool = False) -> DoneSet:
        return readers.done_ids(self.storage, retry_failed=retry_failed)
