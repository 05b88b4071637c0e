"""The producer stage: input rows not done yet become work items, only as fast as the pipe has room (L4).

Record batches are read and prepared in a worker thread (``Source.batches`` skips done rows, vectorised);
each row waits for a place in the window (rows in flight plus one window ready to go) and for the shard
writer (backpressure), is rendered into its prompt and submitted to the pool. Memory stays flat whatever
the input's size: nothing is read ahead of the window.
"""

from __future__ import annotations

import asyncio

import orjson

from engine.core.types import WorkItem
from engine.dispatch import Endpoint, Pool
from engine.policy.metrics import RunCounters
from engine.prompts import PromptTemplate, estimate_tokens, render
from engine.records import prompt_too_long_record
from engine.runner.record import Recorder
from engine.source import DoneSet, Source
from engine.stages import AutoBudget
from engine.store import ReuseIndex, StoreWriter


class Producer:
    def __init__(self, source: Source, done: DoneSet, template: PromptTemplate, pool: Pool, recorder: Recorder,
                 writer: StoreWriter, window: asyncio.Semaphore, counters: RunCounters, *, total_known: bool,
                 keyed_by: Endpoint, reuse: ReuseIndex | None = None, budget: AutoBudget | None = None):
        self.source, self.done, self.template = source, done, template
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
        pool, window, template, ready = self.pool, self.window, self.template, self.writer.ready
        key_of, reuse, dumps, budget = self.keyed_by.request_key, self.reuse, orjson.dumps, self.budget
        it = self.source.batches(self.done)
        seen_rows = self.counters.rows_done_before
        while not pool.stopping:
            prepared = await asyncio.to_thread(next, it, None)
            if prepared is None:
                break
            extras = prepared.extras
            for i, rid in enumerate(prepared.row_ids):
                if not ready.is_set():
                    await self.writer.wait_ready()  # backpressure: the shard writer is behind
                await window.acquire()
                if pool.stopping:
                    return
                task, sol = prepared.tasks[i], prepared.solutions[i]
                extra = extras[i] if extras is not None else {}
                seen_rows += 1
                if not task or not sol:
                    self.recorder.invalid(WorkItem(rid, task or "", sol or "", [], 0, extra))
                    window.release()
                    continue
                messages = render(template, task, sol)
                body = dumps(messages)
                item = WorkItem(rid, task, sol, messages, estimate_tokens(messages), extra, messages_json=body)
                if budget is not None:
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
