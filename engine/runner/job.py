"""One invocation of a run: set-up, the pipe under a task group, and a clean stop (L4).

    source ──▶ Producer ──items──▶ Pool (dispatch) ──▶ transport ──▶ Recorder ──records──▶ StoreWriter
    (skips done rows)   (window)    (limits, retries,    (one HTTP      (parse, count)       (journal, then
                                     routing)             call)                               Parquet shards)

``Job.run`` opens the run store (lock, recovery, the done set), checks the endpoints, then runs the stages
as tasks of one ``asyncio.TaskGroup``. A stage that fails stops the pool like a graceful stop (everything
received is journaled) and its error is raised once the pipe has drained. SIGINT/SIGTERM stop taking new
rows and give in-flight requests ``run.grace_period_s``; a second signal exits at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from engine import records
from engine.core.config import JobConfig
from engine.core.errors import EndpointsDown, InputError, RunStopped
from engine.core.types import Transport
from engine.dispatch import Endpoint, Pool
from engine.parse import PARSER_VERSION
from engine.policy.budget import Budget
from engine.policy.metrics import Progress, RunCounters
from engine.policy.retry import RetryPolicy
from engine.preflight import preflight
from engine.runner.guards import QualityGuard
from engine.runner.produce import Producer
from engine.runner.record import Recorder
from engine.runner.report import RunReport, build_report, progress
from engine.runner.setup import kept_max_tokens, reuse_index, run_budget
from engine.runner.startup import make_endpoints, startup_check
from engine.stages import (
    auto_budget,
    load_prompt,
    make_fingerprint,
    open_source,
    smallest_context,
)
from engine.store import RunStore, StoreWriter

log = logging.getLogger("clair")


class Job:
    def __init__(
        self,
        cfg: JobConfig,
        *,
        retry_failed: bool = False,
        new_run: bool = False,
        client: Transport | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        install_signals: bool = False,
    ):
        self.cfg = cfg
        self.retry_failed = retry_failed
        self.new_run = new_run
        self.client = client
        self.on_progress = on_progress
        self.install_signals = install_signals
        self.run_dir = cfg.run_dir
        self.counters = RunCounters()
        self.started = time.time()
        self.t0 = time.perf_counter()
        self.max_tokens = cfg.max_tokens
        self.endpoints: list[Endpoint] = []
        self.pool: Pool | None = None
        self.writer: StoreWriter | None = None
        self.interrupted: int | None = None  # signal number
        self.budget: Budget | None = None

    def snapshot(self) -> Progress:
        return progress(self.counters, self.endpoints, self.pool, time.perf_counter() - self.t0)

    # ------------------------------------------------------------ set-up (no request sent)

    def _open_store(self) -> RunStore:
        cfg = self.cfg
        self.template = load_prompt(cfg)
        self.source = open_source(cfg)
        #: the input's row count when a full pre-flight pass counted it (JSONL/CSV have no cheap count)
        self.rows_checked: int | None = None
        if cfg.input.precheck:  # before the run directory is touched: a corrected input is not refused
            checked = preflight(self.source)
            self.rows_checked = checked.rows if checked.scope == "full" else None
        if not self.new_run:
            cfg = self.cfg = kept_max_tokens(cfg, self.run_dir)
            self.max_tokens = cfg.max_tokens
            cfg.budget.check(cfg.pricing, cfg.generation)  # a kept max_tokens of null leaves answers unbounded
        rid = self.source.row_id_type
        self.store = RunStore.open(
            self.run_dir,
            fingerprint=make_fingerprint(cfg, self.source, self.template),
            data_schema=records.data_schema(rid, self.source.kept),
            failure_schema=records.failure_schema(rid, self.source.kept),
            parser_version=PARSER_VERSION,
            markers=dataclasses.asdict(self.template.markers),
            new_run=self.new_run,
        )
        return self.store

    async def run(self) -> RunReport:
        with self._open_store() as store:
            self.done = store.done_ids(retry_failed=self.retry_failed)
            c = self.counters
            c.rows_done_before = len(self.done)
            counted = self.source.count_rows()
            if counted is None:
                counted = self.rows_checked
            self.total_known = counted is not None
            c.rows_total = counted if counted is not None else store.manifest.get("rows_total")
            if c.rows_total is not None and c.rows_done_before > c.rows_total:
                log.warning("%s already holds %d rows, more than the %d input rows now selected (was input.limit "
                            "lowered?); rows past the limit are kept, nothing more is sent for them",
                            self.run_dir, c.rows_done_before, c.rows_total)
            elif c.rows_done_before:
                log.warning("resuming: %d of %s rows done", c.rows_done_before, c.rows_total or "?")
            self.budget = run_budget(self.cfg, store.manifest.get("runs") or [], self.run_dir)
            store.begin_session(config=self.cfg.to_dict(), started=self.started, retry_failed=self.retry_failed,
                                rows_total=c.rows_total)
            async with AsyncExitStack() as stack:
                client = self.client if self.client is not None else await stack.enter_async_context(
                    _http_transport(self.cfg))
                self.endpoints = make_endpoints(self.cfg, self.max_tokens)
                if c.rows_total is None or c.rows_done_before < c.rows_total:
                    await startup_check(client, self.endpoints, self.cfg.timeouts.connect_s + 20)
                try:
                    await self._pipe(client)
                except (EndpointsDown, RunStopped) as e:  # a graceful stop: the session ends like any other
                    e.report = self._finish(stopped=e).to_dict()  # its report holds what it spent (the budget)
                    raise
                except BaseException as e:  # any other end (a bug, the disk, cancelled): still report the session
                    self._end_failed(e)
                    raise
            return self._finish()

    # ------------------------------------------------------------ the pipe

    async def _pipe(self, client: Transport) -> None:
        cfg = self.cfg
        writer = self.writer = self.store.writer(rows_per_segment=cfg.output.rows_per_shard,
                                   fsync_interval_s=cfg.run.fsync_interval_ms / 1000.0)
        # rows ready to go while a full window is in flight
        window = asyncio.Semaphore(2 * sum(ep.max_concurrency for ep in self.endpoints))
        recorder = Recorder(writer, self.counters, window, markers=self.template.markers, max_tokens=self.max_tokens,
                            keyed_by=self.endpoints[0])
        pool = self.pool = Pool(self.endpoints, client, RetryPolicy(**dataclasses.asdict(cfg.retry)), recorder.on_done,
                                max_pause_s=cfg.run.max_pause_s, on_pause=self._note_pause, budget=self.budget)
        guard = QualityGuard(cfg.guard, run_dir=str(self.run_dir),
                             on_trip=lambda e: None if pool.stopping else pool.stop(e))  # a stop in progress wins
        if guard.active:
            recorder.observe = guard.observe
        producer = Producer(self.source, self.done, self.template, pool, recorder, writer, window, self.counters,
                            total_known=self.total_known, keyed_by=self.endpoints[0], reuse=reuse_index(cfg, self.run_dir),
                            budget=auto_budget(cfg, smallest_context([ep.context_length for ep in self.endpoints])))
        self._signals(True)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._guard(writer.run()), name="store-writer")
                shown = tg.create_task(self._progress_loop(), name="progress") if self.on_progress else None
                produce = tg.create_task(self._guard(producer.run()), name="producer")
                await self._serve(pool, produce)
                try:
                    writer.close()  # the last segment goes to the shard writer, which the group waits for
                except Exception as e:  # e.g. the last fsync failed: a stop with its error, not an ExceptionGroup
                    pool.stop(e)
                if shown is not None:
                    shown.cancel()
        finally:
            self._signals(False)
            self._show_progress()  # the final counts, for the reporter's last line
        if pool.fatal is not None:
            raise pool.fatal

    async def _guard(self, stage: Awaitable[None]) -> None:
        """A stage that fails stops the pool like a graceful stop; ``_pipe`` raises its error at the end."""
        try:
            await stage
        except Exception as e:
            assert self.pool is not None
            self.pool.stop(e)

    async def _serve(self, pool: Pool, produce: asyncio.Task[None]) -> None:
        """Run the pool until every row is done or it is stopped; then drain what is in flight. Cancelled
        from outside (a notebook's cell interrupted), the pool stops and no request outlives the job."""
        serving = asyncio.create_task(pool.run(), name="pool")
        stopped = asyncio.create_task(pool.stopped.wait())
        try:
            await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if pool.stopping:
                produce.cancel()
                # an input problem met mid-run stops like Ctrl-C: the requests in flight are paid, let them finish
                grace = self.interrupted is not None or isinstance(pool.fatal, InputError | EndpointsDown | RunStopped)
                cancelled = await pool.drain(self.cfg.run.grace_period_s if grace else 0.0)
                if cancelled:
                    log.warning("%d request(s) in flight were cancelled; they are sent again on resume", cancelled)
                serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)  # a dispatcher's bug is pool.fatal
        finally:
            stopped.cancel()
            if not serving.done():  # cancelled from outside: nothing may go on sending (and paying)
                pool.stop()
                serving.cancel()
                left = [serving, *pool.tasks]
                for t in left:
                    t.cancel()
                await asyncio.shield(asyncio.gather(*left, return_exceptions=True))

    def _note_pause(self, since: float | None) -> None:
        """Every endpoint failing since ``since`` (None: one answers again), for ``clair status``."""
        self.store.note(paused_since=since)

    async def _progress_loop(self) -> None:
        while self.on_progress is not None:
            self._show_progress()
            await asyncio.sleep(0.5)

    def _show_progress(self) -> None:
        """Hand the reporter a snapshot. A reporter that fails (stderr closed: `clair run ... | tee log`
        killed) is switched off; the run goes on."""
        if self.on_progress is None:
            return
        try:
            self.on_progress(self.snapshot())
        except Exception as e:
            self.on_progress = None
            log.debug("progress display switched off: %s", e)

    def _signals(self, install: bool) -> None:
        if not self.install_signals:
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            if install:
                loop.add_signal_handler(sig, self._on_signal, sig)
            else:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        if self.interrupted is not None:
            os._exit(128 + sig)  # second signal: leave at once; every finished row is already in the journal
        self.interrupted = sig
        log.warning("%s received: finishing in-flight requests (up to %ss); press Ctrl-C again to quit at once",
                    signal.Signals(sig).name, self.cfg.run.grace_period_s)
        assert self.pool is not None
        self.pool.stop()

    # ------------------------------------------------------------ finishing

    def _end_failed(self, e: BaseException) -> None:
        """A session that ended with an error still records its report (what it sent and spent: a budget
        counts earlier sessions from their reports); best effort, the error itself is what the user sees."""
        try:
            rep = self.report("cancelled" if isinstance(e, asyncio.CancelledError) else "failed")
            rep.message = f"{type(e).__name__}: {e}"[:500]
            self.store.end_session(status=rep.status, report=rep.to_dict(), rows_total=rep.rows_total,
                                   ended=time.time(), counts=None)
        except Exception as err:  # the disk may be what failed
            log.debug("could not record the failed session: %s", err)

    def report(self, status: str, counts: dict[str, Any] | None = None) -> RunReport:
        c = self.counters
        return build_report(str(self.run_dir), status, c, self.endpoints, time.perf_counter() - self.t0, counts,
                            self.cfg.pricing.cost_usd(c.prompt_tokens, c.completion_tokens))

    def _finish(self, stopped: EndpointsDown | RunStopped | None = None) -> RunReport:
        """End the session: its report and counts into the store. ``stopped``: the error of a run a guard
        stopped (its ``status`` is the session's)."""
        store = self.store
        if self.retry_failed and not self.interrupted and stopped is None:
            store.supersede_failures()
        counts = store.counts()
        rep = self.report("interrupted" if self.interrupted else "completed", counts)
        if stopped is not None:  # stopped by a guard (endpoints down, budget, quality): resumable
            rep.status, rep.message = stopped.status, str(stopped)
        elif self.interrupted:
            rep.extra["signal"] = self.interrupted
        elif rep.rows_total is not None and rep.rows_done < rep.rows_total:
            rep.status = "incomplete"
        if self.budget is not None:
            bg = self.budget
            rep.extra["budget"] = {"max_usd": bg.max_usd, "max_output_tokens": bg.max_output_tokens,
                                   "spent_usd": round(bg.spent_usd, 6) if bg.max_usd is not None else None,
                                   "spent_output_tokens": bg.spent_output}
        store.end_session(status=rep.status, report=rep.to_dict(), rows_total=rep.rows_total, ended=time.time(),
                          counts={"data": counts["data"], "failed": counts["failed"],
                                  "failure_kinds": counts["failure_kinds"]})
        return rep


def _http_transport(cfg: JobConfig) -> Any:
    """The aiohttp transport for this job's endpoints, as an async context manager (imported lazily: a
    notebook passing its own transport, and the dry run, never load aiohttp)."""
    from engine.client import http_transport

    return http_transport(sum(e.max_concurrency for e in cfg.endpoints) + 8, cfg.timeouts.request_s,
                          cfg.timeouts.connect_s)


async def arun_job(cfg: JobConfig, **kwargs: Any) -> RunReport:
    """Run (or resume) a job from inside a running event loop (notebooks)."""
    return await Job(cfg, **kwargs).run()


def run_job(cfg: JobConfig, **kwargs: Any) -> RunReport:
    """Run (or resume) a job; blocks until it is done. Uses uvloop when installed."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    with runner:
        return runner.run(arun_job(cfg, **kwargs))
