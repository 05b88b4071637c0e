"""The record stage: finished rows become output records, are counted, and go to the store (L4).

The pool hands over a batch of finished rows (answer or final error); each becomes its record
(``engine.records`` decides the columns and the status), the batch is appended to the journal with one
write, and only then are the rows' places in the producer's window freed. One row whose record cannot be
built (a bug) does not cost the batch's other answers: they are journaled first, then the error stops the
run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from engine import records
from engine.core.errors import EndpointError
from engine.core.types import Completion, WorkItem
from engine.dispatch import Endpoint, Finished
from engine.policy.metrics import RunCounters
from engine.stages import StageRecords
from engine.store import StoredAnswer, StoreWriter


class Recorder:
    def __init__(self, writer: StoreWriter, counters: RunCounters, window: asyncio.Semaphore, *,
                 records: StageRecords, keyed_by: Endpoint):
        self.writer = writer
        self.counters = counters
        self.window = window
        #: the stage's record builders
        self.records = records
        #: the endpoint whose request keys the producer made
        self.keyed_by = keyed_by
        #: sees every record as it is counted (the quality guard, ``runner.guards``); None: nobody watches
        self.observe: Callable[[dict[str, Any]], None] | None = None

    def on_done(self, batch: list[Finished]) -> None:
        """Record a batch of finished rows (one journal write), then free their places in the window."""
        try:
            recs, bug = [], None
            for item, comp, err, ep in batch:
                try:
                    recs.append(self._record(item, comp, err, ep))
                except Exception as e:  # a bug for one row: the batch's other answers are still kept
                    bug = bug or e
            self.writer.append(recs)
            if bug is not None:
                raise bug
        finally:
            for _ in batch:
                self.window.release()

    def invalid(self, item: WorkItem) -> None:
        """A row with an empty task or answer: recorded as ``invalid_input``, never sent."""
        self.writer.append([self._count(self.records.invalid(item))])

    def unsent(self, rec: dict[str, Any]) -> None:
        """A failure record of a row that is never sent (e.g. ``prompt_too_long``)."""
        self.writer.append([self._count(rec)])

    def reused(self, item: WorkItem, answer: StoredAnswer) -> None:
        """A row whose request was answered in an earlier run: that answer is recorded, nothing is sent."""
        rec = self.records.completion(item, answer.completion, model=answer.model or "", endpoint=answer.endpoint or "",
                                      reused_from=answer.source)
        self.counters.rows_reused += 1
        self.writer.append([self._count(rec)])

    def _record(self, item: WorkItem, comp: Completion | None, err: EndpointError | None, ep: Endpoint) -> dict[str, Any]:
        c = self.counters
        if ep is not self.keyed_by and item.request_key is not None:  # another endpoint: its own key
            item.request_key = ep.request_key(item.messages_json, item.max_tokens)
        if comp is not None:
            rec = self.records.completion(item, comp, model=ep.model, endpoint=ep.name)
            c.prompt_tokens += comp.prompt_tokens or 0
            c.completion_tokens += comp.completion_tokens or 0
        else:
            assert err is not None
            rec = self.records.failure(item, err.kind, str(err), err.raw, model=ep.model, endpoint=ep.name)
        if item.first_sent is not None:
            c.latency.record(asyncio.get_running_loop().time() - item.first_sent)
        return self._count(rec)

    def _count(self, rec: dict[str, Any]) -> dict[str, Any]:
        kind = rec.get("error_kind")
        if kind is not None:
            self.counters.rows_failed[kind] += 1
        elif rec["status"] == records.OK:
            self.counters.rows_ok += 1
        else:
            self.counters.rows_flagged[rec["status"]] += 1
        if self.observe is not None:
            self.observe(rec)
        return rec
