"""The producer: a stage's input rows not done yet become work items, only as fast as the pipe has room (L4).

A stage's feed (:mod:`engine.runner.feeds`) gives prepared batches: the run's input read in a worker thread
(``Source.batches`` skips done rows, vectorised), or the previous stage's answers read back from the store.
Each row waits for a place in the window (rows in flight plus one window ready to go) and for the shard
writer (backpressure), is rendered into its prompt by the stage's prompt builder and submitted to the pool.
Memory stays flat whatever the input's size: nothing is read ahead of the window.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson

from engine.core.types import Message, WorkItem
from engine.dispatch import Endpoint, Pool
from engine.policy.metrics import RunCounters
from engine.prompts import estimate_tokens
from engine.records import prompt_too_long_record
from engine.runner.record import Recorder
from engine.source import Prepared
from engine.stages import AutoBudget, StageDef
from engine.store import ReuseIndex, StoreWriter

_NONE: list[Message] = []  # shared, never changed


class Producer:
    def __init__(self, feed: AsyncIterator[Prepared], stage: StageDef, pool: Pool, recorder: Recorder,
                 writer: StoreWriter, window: asyncio.Semaphore, counters: RunCounters, *, total_known: bool,
                 keyed_by: Endpoint, reuse: ReuseIndex | None = None, budget: AutoBudget | None = None):
        self.feed, self.stage = feed, stage
        self.pool, self.recorder, self.writer, self.window = pool, recorder, writer, window
        self.counters = counters
        #: the input's row count was known up front (Parquet metadata), not a hint from an earlier session
        self.total_known = total_known
        #: request keys are made as this endpoint makes them (the first one; the Recorder re-keys rows that
        #: another endpoint answers differently, e.g. another model)
        self.keyed_by = keyed_by
        #: answers of earlier runs, by request key (None: nothing to reuse)
        self.reuse = reuse
        #: each row's own output budget (``generation.max_tokens: auto``; None: the generation's max_tokens)
        self.budget = budget

    async def run(self) -> None:
        pool, window, build, ready = self.pool, self.window, self.stage.prompt, self.writer.ready
        room = pool.room
        key_of, reuse, dumps, budget = self.keyed_by.request_key, self.reuse, orjson.dumps, self.budget
        needs_solution = self.stage.needs_solution
        fold = any(ep.fold_system for ep in pool.endpoints)
        seen_rows = self.counters.rows_done_before
        async for prepared in self.feed:
            if pool.stopping:
                return
            for rec in prepared.failed or ():  # rows the previous stage failed: their final rows
                seen_rows += 1
                self.recorder.unsent(rec)
            extras, convs = prepared.extras, prepared.messages
            for i, rid in enumerate(prepared.row_ids):
                if not ready.is_set():
                    await self.writer.wait_ready()  # backpressure: the shard writer is behind
                if not room.is_set():
                    await room.wait()  # enough rows wait for an endpoint already
                await window.acquire()
                if pool.stopping:
                    return
                task, sol = prepared.tasks[i], prepared.solutions[i]
                extra = extras[i] if extras is not None else {}
                seen_rows += 1
                if not task or (needs_solution and not sol):
                    self.recorder.invalid(WorkItem(rid, task or "", sol or "", [], 0, extra))
                    window.release()
                    continue
                messages = build(task, sol, convs[i] if convs is not None else None)
                body = dumps(messages)
                # the rendered messages are kept only for an endpoint that must fold them (no system role):
                # every other one sends their JSON; a window of rows then holds one copy of each prompt
                item = WorkItem(rid, task, sol or "", messages if fold else _NONE, estimate_tokens(messages), extra,
                                messages_json=body)
                if budget is not None and sol:
                    max_tokens = budget(item.prompt_tokens_est, (len(sol) + 3) // 4)
                    if max_tokens < 1:  # the prompt alone fills the context: never sent
                        assert budget.context is not None
                        self.recorder.unsent(prompt_too_long_record(item, budget.context))
                        window.release()
                        continue
                    item.max_tokens = max_tokens
                key = item.request_key = key_of(body, item.max_tokens)
                stored = reuse.get(key) if reuse is not None else None
                if stored is not None:
                    self.recorder.reused(item, stored)
                    window.release()
                    continue
                pool.submit(item)
        if not pool.stopping:
            if not self.total_known:  # JSONL, CSV, hub datasets: the total is known once read to the end
                self.counters.rows_total = seen_rows
            pool.finish_input()
