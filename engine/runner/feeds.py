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

from engine import records
from engine.source import DoneSet, Prepared, Source

_STUDENT = records.STUDENT_FIELDS


async def source_feed(source: Source, done: DoneSet) -> AsyncIterator[Prepared]:
    it = source.batches(done)
    while (prepared := await asyncio.to_thread(next, it, None)) is not None:
        yield prepared


async def handoff_feed(handoff: AsyncIterable[list[dict[str, Any]]], kept: tuple[str, ...]) -> AsyncIterator[Prepared]:
    """``kept``: the kept input columns' output names (they travel in the generate stage's rows)."""
    final_failure = records.final_from_student_failure
    async for recs in handoff:
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
