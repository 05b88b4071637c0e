"""One invocation of a run: set-up, the pipe under a task group, and a clean stop (L4).

    source ──▶ Producer ──items──▶ Pool (dispatch) ──▶ transport ──▶ Recorder ──records──▶ StoreWriter
    (skips done rows)   (window)    (limits, retries,    (one HTTP      (parse, count)       (journal, then
                                     routing)             call)                               Parquet shards)

A run has one or two stages (``engine.stages.StageDef``): revise, generate, or generate then revise. Each
stage gets its own pipe (:class:`StagePipe`: endpoints, pool, recorder, producer, store writer); the revise
stage of a two-stage run reads the generate stage's answers back from the store as soon as they are
journaled (``engine.runner.feeds``), so the stages overlap and memory stays flat.

``Job.run`` opens the run store (lock, recovery, the done sets), checks the endpoints, then runs the pipes
as tasks of one ``asyncio.TaskGroup``; a stop of one stage's pool stops every stage. A stage that fails stops the pool like a graceful stop (everything
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

from engine.core.config import JobConfig
from engine.core.errors import EndpointsDown, InputError, RunStopped
from engine.core.types import Transport
from engine.dispatch import Endpoint, Pool
from engine.parse import PARSER_VERSION
from engine.policy.budget import Budget
from engine.policy.metrics import Progress, RunCounters
from engine.policy.retry import RetryPolicy
from engine.preflight import preflight
from engine.runner.feeds import handoff_feed, selection, source_feed
from engine.runner.guards import QualityGuard
from engine.runner.produce import Producer
from engine.runner.record import Recorder
from engine.runner.report import RunReport, build_report, progress
from engine.runner.setup import kept_max_tokens, reuse_index, run_budget
from engine.runner.startup import make_endpoints, startup_check
from engine.source import DoneSet
from engine.stages import (
    GENERATE,
    StageDef,
    auto_budget,
    build_stages,
    load_prompt,
    make_fingerprint,
    open_source,
    smallest_context,
)
from engine.store import RunStore, StoreWriter

log = logging.getLogger("clair")


class StagePipe:
    """One stage's pipe at run time: its endpoints, counters and done set, then (in ``Job._pipe``) its
    store writer, window, recorder, pool and producer."""

    def __init__(self, stage: StageDef, endpoints: list[Endpoint], done: DoneSet | None):
        self.stage = stage
        self.endpoints = endpoints
        self.counters = RunCounters()
        #: rows of this stage not to request again (None: the feed filters, e.g. the hand-off)
        self.done = done
        self.writer: StoreWriter | None = None
        self.pool: Pool | None = None
        self.store: Any = None  # RunStore or StageStore: where this stage's rows go
        self.where = "endpoints"  # the config key of its endpoints
        self.handoff: Any = None  # the hand-off reading this stage's input from the previous stage

    def snapshot(self, elapsed: float) -> Progress:
        return progress(self.counters, self.endpoints, self.pool, elapsed)


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
        self.budget: Budget | None = None  # the last stage's view of the run's budget
        self.budgets: dict[str, Budget] = {}  # every stage's view (one ledger)
        #: the run's stage pipes, in order; the last one writes the run's own rows
        self.pipes: list[StagePipe] = []

    def snapshot(self) -> Progress:
        elapsed = time.perf_counter() - self.t0
        snap = progress(self.counters, self.endpoints, self.pool, elapsed)
        if len(self.pipes) < 2:
            return snap
        up = self.pipes[0]
        if snap.rows_total is None and up.counters.rows_total is not None:
            snap = dataclasses.replace(snap, rows_total=up.counters.rows_total)
            if snap.rows_per_s > 0 and snap.rows_total is not None and snap.rows_total >= snap.rows_done:
                snap = dataclasses.replace(snap, eta_s=(snap.rows_total - snap.rows_done) / snap.rows_per_s)
        upsnap = up.snapshot(elapsed)
        # rows the first stage finished that have no final row yet (those stored by earlier sessions too)
        waiting = max(0, upsnap.rows_done - snap.rows_done)
        return dataclasses.replace(snap, stage=self.pipes[-1].stage.name, upstream=upsnap, waiting=waiting)

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
        if not self.new_run and cfg.endpoints:
            cfg = self.cfg = kept_max_tokens(cfg, self.run_dir)
            self.max_tokens = cfg.max_tokens
            cfg.check_budget()  # a kept max_tokens of null leaves answers unbounded
        self.stages = build_stages(cfg, self.source, self.template)
        final = self.stages[-1]
        self.store = RunStore.open(
            self.run_dir,
            fingerprint=make_fingerprint(cfg, self.source, self.template),
            data_schema=final.data_schema,
            failure_schema=final.failure_schema,
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
            final = self.stages[-1]
            budgets = run_budget(self.cfg, store.manifest.get("runs") or [], self.run_dir,
                                 [(st.name, st.cfg) for st in self.stages])
            self.budgets = budgets or {}
            self.budget = self.budgets.get(final.name)
            store.begin_session(config=self.cfg.to_dict(), started=self.started, retry_failed=self.retry_failed,
                                rows_total=c.rows_total)
            async with AsyncExitStack() as stack:
                client = self.client if self.client is not None else await stack.enter_async_context(
                    _http_transport(self.cfg))
                self._make_pipes()
                if c.rows_total is None or c.rows_done_before < c.rows_total:
                    # a stage with nothing left (the student's, once every answer is stored) is not checked:
                    # its server may be gone while the revisions are finished
                    busy = [p for p in self.pipes if p.done is None or c.rows_total is None
                            or len(p.done) < c.rows_total]
                    checked = await asyncio.gather(*(startup_check(  # every check ends before the first error
                        client, p.endpoints, self.cfg.timeouts.connect_s + 20, where=p.where) for p in busy),
                        return_exceptions=True)
                    for err in checked:
                        if isinstance(err, BaseException):
                            raise err
                try:
                    await self._pipe(client)
                except (EndpointsDown, RunStopped) as e:  # a graceful stop: the session ends like any other
                    e.report = self._finish(stopped=e).to_dict()  # its report holds what it spent (the budget)
                    raise
                except BaseException as e:  # any other end (a bug, the disk, cancelled): still report the session
                    self._end_failed(e)
                    raise
            return self._finish()

    def _make_pipes(self) -> None:
        """A pipe per stage; the last one's endpoints and counters are the run's (reports, progress)."""
        self.pipes = []
        for i, stage in enumerate(self.stages):
            last = i == len(self.stages) - 1
            where = "generate.endpoints" if stage.name == GENERATE else "endpoints"
            eps = make_endpoints(stage.cfg, self.max_tokens if stage.revises else stage.cfg.max_tokens, where=where)
            pipe = StagePipe(stage, eps, self.done if last else None)
            pipe.where = where
            if last:
                pipe.counters = self.counters
                pipe.store = self.store
            else:  # the generate stage of a two-stage run: its own rows, in its own sub-store
                pipe.store = self.store.stage(stage.name, data_schema=stage.data_schema,
                                              failure_schema=stage.failure_schema)
                pipe.done = pipe.store.done_ids(retry_failed=self.retry_failed)
                pipe.counters.rows_done_before = len(pipe.done)
                pipe.counters.rows_total = self.counters.rows_total
            self.pipes.append(pipe)
        self.endpoints = self.pipes[-1].endpoints

    # ------------------------------------------------------------ the pipe

    async def _pipe(self, client: Transport) -> None:
        cfg = self.cfg
        producers = []
        for pipe in self.pipes:
            stage = pipe.stage
            writer = pipe.writer = pipe.store.writer(rows_per_segment=cfg.output.rows_per_shard,
                                                     fsync_interval_s=cfg.run.fsync_interval_ms / 1000.0)
            # rows ready to go while a full window is in flight: as many again for the input (read in batches
            # that may be slow to come); one hand-off batch for a stage fed by the previous one (local reads)
            conc = sum(ep.max_concurrency for ep in pipe.endpoints)
            window = asyncio.Semaphore(conc + (conc if stage.upstream is None else HANDOFF_BATCH_ROWS))
            recorder = Recorder(writer, pipe.counters, window, records=stage.records, keyed_by=pipe.endpoints[0])
            pool = pipe.pool = Pool(pipe.endpoints, client, RetryPolicy(**dataclasses.asdict(cfg.retry)),
                                    recorder.on_done, max_pause_s=cfg.run.max_pause_s, on_pause=self._note_pause,
                                    budget=self.budgets.get(stage.name), ready_rows=READY_ROWS)
            if stage.revises:
                guard = QualityGuard(cfg.guard, run_dir=str(self.run_dir), on_trip=_stop_unless_stopping(pool))
                if guard.active:
                    recorder.observe = guard.observe
            if stage.upstream is None:
                assert pipe.done is not None
                feed = source_feed(self.source, pipe.done)
            else:  # the previous stage's answers, read back from its store as they are journaled
                up = self.pipes[self.pipes.index(pipe) - 1]
                assert up.writer is not None and up.done is not None
                pipe.handoff = up.store.handoff(up.writer, skip=self.done, stage_done=up.done,
                                                batch_rows=min(HANDOFF_BATCH_ROWS, cfg.input.batch_rows))
                feed = handoff_feed(pipe.handoff, tuple(out for _, out, _ in self.source.kept),
                                    selected=await asyncio.to_thread(selection, self.source))
            budget = auto_budget(stage.cfg, smallest_context([ep.context_length for ep in pipe.endpoints])) \
                if stage.revises else None
            producers.append(Producer(
                feed, stage, pool, recorder, writer, window, pipe.counters,
                total_known=self.total_known or stage.upstream is not None, keyed_by=pipe.endpoints[0],
                reuse=reuse_index(stage.cfg, self.run_dir) if stage.reuse else None, budget=budget))
        self.pool, self.writer = self.pipes[-1].pool, self.pipes[-1].writer
        self._signals(True)
        try:
            async with asyncio.TaskGroup() as tg:
                for pipe in self.pipes:
                    assert pipe.writer is not None
                    tg.create_task(self._guard(pipe.writer.run(), pipe), name=f"store-writer-{pipe.stage.name}")
                shown = tg.create_task(self._progress_loop(), name="progress") if self.on_progress else None
                live = tg.create_task(self._live_loop(), name="live-status")
                linked = tg.create_task(self._link_stops(), name="stop-link")
                await asyncio.gather(*(self._serve_stage(pipe, tg.create_task(
                    self._guard(producer.run(), pipe), name=f"producer-{pipe.stage.name}"))
                    for pipe, producer in zip(self.pipes, producers, strict=True)))
                linked.cancel()
                live.cancel()
                if shown is not None:
                    shown.cancel()
        finally:
            self._signals(False)
            self._show_progress()  # the final counts, for the reporter's last line
        for pipe in self.pipes:
            if pipe.pool is not None and pipe.pool.fatal is not None:
                raise pipe.pool.fatal

    async def _serve_stage(self, pipe: StagePipe, produce: asyncio.Task[None]) -> None:
        """One stage: its pool until done or stopped, then its writer closed (the next stage's hand-off
        ends once it has read everything this stage wrote)."""
        assert pipe.pool is not None and pipe.writer is not None
        await self._serve(pipe.pool, produce)
        try:
            pipe.writer.close()  # the last segment goes to the shard writer, which the group waits for
        except Exception as e:  # e.g. the last fsync failed: a stop with its error, not an ExceptionGroup
            self._stop_all(e, pipe)

    async def _link_stops(self) -> None:
        """A stage whose pool stops (Ctrl-C, a fatal error, a guard) stops the other stages too."""
        pools = [p.pool for p in self.pipes if p.pool is not None]
        if len(pools) < 2:
            return
        waits = [asyncio.ensure_future(p.stopped.wait()) for p in pools]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            self._stop_all()
        finally:
            for w in waits:
                w.cancel()

    def _stop_all(self, error: BaseException | None = None, where: StagePipe | None = None) -> None:
        """Stop every stage's pool; ``error`` is the fatal error of ``where``'s pool (the others stop
        gracefully: their requests in flight are paid, they get the grace period)."""
        for pipe in self.pipes:
            if pipe.pool is not None:
                pipe.pool.stop(error if pipe is where or where is None else None)

    async def _guard(self, part: Awaitable[None], pipe: StagePipe) -> None:
        """A part of a stage (producer, writer) that fails stops the run like a graceful stop; ``_pipe``
        raises its error at the end."""
        try:
            await part
        except Exception as e:
            self._stop_all(e, pipe)

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
                # a pool stopped because another stage failed has no error of its own: grace too
                fatal = pool.fatal
                grace = self.interrupted is not None or fatal is None or \
                    isinstance(fatal, InputError | EndpointsDown | RunStopped)
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

    async def _live_loop(self) -> None:
        """Every few seconds, the live figures of each stage into the run directory (``clair status`` in
        another process shows them while the run is active)."""
        while True:
            await asyncio.sleep(LIVE_INTERVAL_S)
            snap = self.snapshot()
            stages = {p.stage.name: _live(p.snapshot(snap.elapsed_s) if p is not self.pipes[-1] else snap)
                      for p in self.pipes}
            self.store.save_live({"at": time.time(), "stages": stages, "waiting": snap.waiting})

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
        self._stop_all()

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
        """The session's report: the last stage's rows (the run's own), and in ``extra["stages"]`` what each
        earlier stage did (its rows are in its sub-store)."""
        c = self.counters
        wall = time.perf_counter() - self.t0
        pricing = self.pipes[-1].stage.cfg.pricing if self.pipes else self.cfg.pricing
        if c.rows_total is None and len(self.pipes) > 1:
            c.rows_total = self.pipes[0].counters.rows_total
        rep = build_report(str(self.run_dir), status, c, self.endpoints, wall, counts,
                           pricing.cost_usd(c.prompt_tokens, c.completion_tokens))
        for pipe in self.pipes[:-1]:
            pc = pipe.counters
            up = build_report(str(self.run_dir), status, pc, pipe.endpoints, wall,
                              pipe.store.counts() if counts is not None else None,
                              pipe.stage.cfg.pricing.cost_usd(pc.prompt_tokens, pc.completion_tokens))
            rep.extra.setdefault("stages", {})[pipe.stage.name] = up.to_dict()
        return rep

    def _finish(self, stopped: EndpointsDown | RunStopped | None = None) -> RunReport:
        """End the session: its report and counts into the store. ``stopped``: the error of a run a guard
        stopped (its ``status`` is the session's)."""
        store = self.store
        if self.retry_failed and not self.interrupted and stopped is None:
            for pipe in self.pipes[:-1]:
                pipe.store.supersede_failures()
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


#: rows submitted to a pool that may wait for an endpoint at once: beyond the rows in flight, only these
#: hold their prompt (and kept input columns) in memory, however high max_concurrency is
READY_ROWS = 256
#: rows the hand-off between two stages reads at a time
HANDOFF_BATCH_ROWS = 256
#: seconds between two writes of the live figures (``RUN/live.json``)
LIVE_INTERVAL_S = 5.0


def _live(p: Progress) -> dict[str, Any]:
    return {"rows_done": p.rows_done, "rows_total": p.rows_total, "rows_per_s": round(p.rows_per_s, 3),
            "eta_s": p.eta_s, "in_flight": p.in_flight, "failed": sum(p.failures.values())}


def _stop_unless_stopping(pool: Pool) -> Callable[[BaseException], None]:
    """A guard's trip stops the pool, unless a stop is already in progress (it wins)."""
    def trip(e: BaseException) -> None:
        if not pool.stopping:
            pool.stop(e)
    return trip


def _http_transport(cfg: JobConfig) -> Any:
    """The HTTP transport for this job's endpoints, as an async context manager (imported lazily: a
    notebook passing its own transport, and the dry run, never load aiohttp)."""
    from engine.client import http_transport

    endpoints = [*cfg.endpoints, *(cfg.generate.endpoints if cfg.generate is not None else ())]
    return http_transport(sum(e.max_concurrency for e in endpoints) + 8, cfg.timeouts.request_s,
                          cfg.timeouts.connect_s, cfg.run.http_client)


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
