"""Where a stage's rows come from (L4): the run's input, or the previous stage's answers.

* :func:`source_feed`: the input's prepared batches (``Source.batches`` skips done rows), read in a
  worker thread, one batch at a time.
* :func:`handoff_feed`: the generate stage's records as the store hands them back (``StageStore.handoff``:
  its shards at the start, then what its journal gets, as soon as it is written), turned into the revise
  stage's batches: a student answer becomes a row to revise (its provenance in the row's extras); a failed
  one becomes the row's final failure record, written by the revise stage's recorder without a request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import numpy as np
import pyarrow as pa

from engine import records
from engine.source import DoneSet, Prepared, Source

_STUDENT = records.STUDENT_FIELDS


async def source_feed(source: Source, done: DoneSet) -> AsyncIterator[Prepared]:
    it = source.batches(done)
    while (prepared := await asyncio.to_thread(next, it, None)) is not None:
        yield prepared


def selection(source: Source) -> DoneSet | None:
    """The row ids the input now selects when ``input.limit`` cuts it (None: every stored row is selected).
    A lowered limit leaves answers the generate stage stored for rows past it: nothing more is sent for
    them, as in a one-stage run."""
    if source.limit is None:
        return None
    if source.id_column is None:  # ordinals: the first ``limit`` rows
        return _ordinals(source.limit)
    ids = DoneSet()
    for _, _, b in source.limited_batches():
        if isinstance(b, pa.RecordBatch):
            col = b.column(source.id_column)
            ids.add_array(col.cast(pa.int64()) if pa.types.is_integer(col.type) else col)
    return ids


def _ordinals(n: int) -> DoneSet:
    return DoneSet(pa.array(np.arange(n, dtype=np.int64)))


async def handoff_feed(handoff: AsyncIterable[list[dict[str, Any]]], kept: tuple[str, ...],
                       selected: DoneSet | None = None) -> AsyncIterator[Prepared]:
    """``kept``: the kept input columns' output names (they travel in the generate stage's rows);
    ``selected``: the row ids the input selects now (None: all)."""
    final_failure = records.final_from_student_failure
    async for recs in handoff:
        if selected is not None:
            recs = [r for r in recs if r["row_id"] in selected]
        ids: list[Any] = []
        tasks: list[str | None] = []
        sols: list[str | None] = []
        extras: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for r in recs:
            if r.get("error_kind") is not None:
                failed.append(final_failure(r, kept))
                continue
            ids.append(r["row_id"])
            tasks.append(r.get("task"))
            sols.append(r.get("student_solution"))
            extra = {k: r.get(k) for k in kept}
            for k in _STUDENT:
                extra[k] = r.get(k)
            extras.append(extra)
        yield Prepared(ids, tasks, sols, extras, failed=failed or None)
