"""Wires the stages together and owns the HTTP session and the task group (L4).

    source ──batches──▶ prepare ──items──▶ Pool (dispatch) ──▶ client ──▶ parse ──records──▶ journal ──▶ sink

``run_job`` is the one code path for the CLI and for notebooks (``arun_job`` is its async form).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from engine import records
from engine.client import ChatClient
from engine.commands.reparse import finish_pending
from engine.core.config import JobConfig
from engine.core.errors import (
    ClairError,
    ConnectError,
    EndpointError,
    HTTPStatusError,
    RequestTimeout,
    RunStateError,
    StartupError,
    StorageError,
)
from engine.core.memory import lower_thread_priority, release_free_memory
from engine.core.types import Completion, Transport, WorkItem
from engine.dispatch import Endpoint, Finished, Pool
from engine.parse import PARSER_VERSION
from engine.policy.metrics import RunCounters
from engine.policy.retry import RetryPolicy
from engine.prompts import estimate_tokens, render
from engine.stages import load_prompt, make_fingerprint, open_source
from engine.store import readers as results
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

#: full journal segments allowed to wait for the shard writer before new rows wait too
MAX_PENDING_SEGMENTS = 2


@dataclass
class RunReport:
    """What a finished (or stopped) run did; also written to RUN/report.json."""

    run_dir: str
    status: str  # completed | interrupted | failed
    rows_total: int | None
    rows_done: int
    rows_ok: int
    rows_flagged: dict[str, int]
    rows_failed: dict[str, int]
    resumed_from: int
    requests: int
    retries: int
    prompt_tokens: int
    completion_tokens: int
    wall_s: float
    rows_per_s: float
    output_tokens_per_s: float
    latency: dict[str, Any]
    endpoints: list[dict[str, Any]]
    cost_usd: float | None = None
    message: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _has_rows(run: Path) -> bool:
    globs = [(run / "data").glob("*.parquet"), (run / "failures").glob("*.parquet"), (run / "journal").glob("seg-*")]
    return any(next(g, None) is not None for g in globs)


class Job:
    """One invocation of a run: set-up, the pool, and a clean stop."""

    def __init__(
        self,
        cfg: JobConfig,
        *,
        retry_failed: bool = False,
        new_run: bool = False,
        client: Transport | None = None,
        on_progress: Callable[[Job], None] | None = None,
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
        self.pool: Pool | None = None
        self.endpoints: list[Endpoint] = []
        self.interrupted: int | None = None  # signal number
        self.stop_reason: str | None = None
        self.journal: Journal | None = None
        self._compact_q: asyncio.Queue[tuple[Path, int]] = asyncio.Queue()
        self._segments_pending = 0  # full journal segments not yet turned into shards
        self._writer_ready = asyncio.Event()  # set while that backlog is below MAX_PENDING_SEGMENTS
        self._writer_ready.set()
        self.writer_waits = 0
        self._window: asyncio.Semaphore | None = None
        self.max_tokens = cfg.max_tokens

    # ------------------------------------------------------------ set-up (no request sent)

    def prepare(self) -> None:
        cfg = self.cfg
        self.template = load_prompt(cfg)
        self.source = open_source(cfg)
        self.fp = make_fingerprint(cfg, self.source, self.template)
        self.fp_hash = fingerprint_hash(self.fp)
        run = self.run_dir
        manifest = read_manifest(run) if run.exists() else None
        if manifest is not None and not _has_rows(run):
            manifest = None  # nothing was answered yet: nothing to mix, start afresh
        if manifest is not None and manifest.get("fingerprint_hash") != self.fp_hash:
            if not self.new_run:
                what = describe_change(manifest.get("fingerprint", {}), self.fp)
                raise RunStateError(
                    f"{run} holds a run made with different settings ({what} changed); resuming would mix "
                    f"answers. Use --new-run to archive it and start fresh, or set output.dir to another directory"
                )
        if self.new_run and run.exists() and any(run.iterdir()):
            archived = run.with_name(f"{run.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            self._lock_or_raise()  # never archive a directory another run is using
            self.lock.release()
            shutil.move(str(run), str(archived))
            log.warning("archived the previous run to %s", archived)
            manifest = None
        try:
            run.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create the run directory {run} ({e.strerror}); fix output.dir") from None
        self._lock_or_raise()
        if manifest is not None and manifest.get("parser_version") != PARSER_VERSION:
            log.warning(
                "the rows already in %s were parsed by parser version %s, this is version %s; "
                "`clair reparse %s` re-parses them from the stored answers without requests",
                run, manifest.get("parser_version"), PARSER_VERSION, run,
            )
        self.manifest = manifest or {
            "format_version": FORMAT_VERSION,
            "created": self.started,
            "fingerprint": self.fp,
            "fingerprint_hash": self.fp_hash,
            "parser_version": PARSER_VERSION,
            "markers": dataclasses.asdict(self.template.markers),
            "runs": [],
        }
        self.kept = self.source.kept
        self.data_schema = records.data_schema(self.source.row_id_type, self.kept)
        self.fail_schema = records.failure_schema(self.source.row_id_type, self.kept)
        self.writer = ShardWriter(run, self.data_schema, self.fail_schema)
        finish_pending(run)
        recovered = self.writer.recover(run / "journal")
        if recovered:
            log.info("recovered %d journal segment(s) into shards", recovered)
        self.done = results.done_set(run, retry_failed=self.retry_failed)
        self.counters.rows_done_before = len(self.done)
        self.counters.rows_total = self.source.count_rows() or self.manifest.get("rows_total")
        self.seg_start = next_segment_number(run, run / "journal")

    def _lock_or_raise(self) -> None:
        self.lock = RunLock(self.run_dir)
        self.lock.acquire()

    # ------------------------------------------------------------ the run

    async def run(self) -> RunReport:
        try:
            self.prepare()
        except BaseException:
            if hasattr(self, "lock"):
                self.lock.release()
            raise
        try:
            return await self._run()
        finally:
            self.lock.release()

    async def _run(self) -> RunReport:
        cfg = self.cfg
        total = self.counters.rows_total
        done = self.counters.rows_done_before
        if done:
            log.warning("resuming: %d of %s rows done", done, total if total is not None else "?")
        self._record_start()
        session: aiohttp.ClientSession | None = None
        client = self.client
        if client is None:
            conns = sum(e.max_concurrency for e in cfg.endpoints) + 8
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=conns, limit_per_host=0, ttl_dns_cache=300),
                json_serialize=None,  # type: ignore[arg-type]
                skip_auto_headers=("User-Agent",),
            )
            client = ChatClient(session, request_timeout_s=cfg.timeouts.request_s,
                                connect_timeout_s=cfg.timeouts.connect_s)
        try:
            self.endpoints = self._make_endpoints()
            if total is None or done < total:
                await self._startup_check(client)
            await self._run_pool(client)
        finally:
            if session is not None:
                await session.close()
        return self._finish()

    def _make_endpoints(self) -> list[Endpoint]:
        cfg = self.cfg
        eps = []
        for i, e in enumerate(cfg.endpoints):
            headers = dict(e.headers)
            key = e.api_key()
            if e.api_key_env and not key:
                raise StartupError(
                    f"endpoints[{i}].api_key_env names {e.api_key_env}, which is not set; export it first"
                )
            if key:
                headers["Authorization"] = f"Bearer {key}"
            eps.append(
                Endpoint(
                    name=e.name or f"endpoint{i}",
                    url=e.url,
                    model=e.model,
                    headers=headers,
                    generation=cfg.generation,
                    max_concurrency=e.max_concurrency,
                    rpm=e.requests_per_minute,
                    tpm=e.tokens_per_minute,
                    weight=e.weight,
                    adaptive=e.adaptive,
                    breaker_failures=cfg.run.breaker_failures,
                    breaker_open_s=cfg.run.breaker_open_s,
                    expected_completion_tokens=min(self.max_tokens, 1000),
                )
            )
        return eps

    async def _startup_check(self, client: Transport) -> None:
        """GET /models on every endpoint; stop before any row is sent if one is unusable."""

        async def check(i: int, ep: Endpoint) -> None:
            where = f"endpoints[{i}] ({ep.url})"
            try:
                models = await asyncio.wait_for(client.list_models(ep.url, ep.headers), self.cfg.timeouts.connect_s + 20)
            except (ConnectError, RequestTimeout, TimeoutError) as e:
                raise StartupError(f"{where} is unreachable ({e}); start the server or fix the url") from None
            except HTTPStatusError as e:
                if e.status in (401, 403):
                    raise StartupError(
                        f"{where} rejected the API key (HTTP {e.status}); check the env var named in api_key_env"
                    ) from None
                raise StartupError(f"{where} failed the start-up check ({e}); check the url") from None
            except EndpointError as e:
                raise StartupError(f"{where} failed the start-up check ({e}); check the url") from None
            if models is None:
                log.info("%s has no /models route; the first request is the check", ep.name)
                return
            if ep.model not in models:
                shown = ", ".join(models[:10]) or "none"
                raise StartupError(
                    f"{where} does not serve model {ep.model!r} (it serves: {shown}); fix endpoints[{i}].model"
                )

        await asyncio.gather(*(check(i, ep) for i, ep in enumerate(self.endpoints)))

    async def _run_pool(self, client: Transport) -> None:
        cfg = self.cfg
        self.journal = Journal(
            self.run_dir / "journal",
            first_segment=self.seg_start,
            rows_per_segment=cfg.output.rows_per_shard,
            fsync_interval_s=cfg.run.fsync_interval_ms / 1000.0,
            on_full=self._segment_full,
        )
        self.journal.open()
        window = sum(ep.max_concurrency for ep in self.endpoints)
        self._window = asyncio.Semaphore(2 * window)  # rows ready to go while a full window is in flight
        self.pool = Pool(self.endpoints, client, RetryPolicy(**dataclasses.asdict(cfg.retry)), self._on_done)
        loop = asyncio.get_running_loop()
        if self.install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._on_signal, sig)
        background = [
            asyncio.create_task(self.journal.commit_loop(), name="journal-commit"),
            asyncio.create_task(self._compactor(), name="compactor"),
        ]
        if self.on_progress is not None:
            background.append(asyncio.create_task(self._progress_loop(), name="progress"))
        producer = asyncio.create_task(self._produce(), name="producer")
        runner = asyncio.create_task(self.pool.run(), name="pool")
        stopped = asyncio.create_task(self.pool.stopped.wait())
        try:
            await asyncio.wait({runner, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if self.pool.stopping:
                producer.cancel()
                cancelled = await self.pool.drain(cfg.run.grace_period_s if self.interrupted else 0.0)
                if cancelled:
                    log.warning("%d request(s) in flight were cancelled; they are sent again on resume", cancelled)
                runner.cancel()
            await asyncio.gather(producer, runner, return_exceptions=True)
            if producer.done() and not producer.cancelled() and producer.exception() is not None:
                raise producer.exception()  # type: ignore[misc]
        finally:
            stopped.cancel()
            if self.install_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            self.journal.close()  # hands the last segment to the compactor
            self._compact_q.put_nowait((Path(), -1))
            await asyncio.gather(*background[1:2], return_exceptions=False)
            for t in background:
                t.cancel()
            await asyncio.gather(*background, return_exceptions=True)
        if self.pool.fatal is not None:
            raise self.pool.fatal
        if self.journal.error is not None:
            raise self.journal.error

    def _on_signal(self, sig: int) -> None:
        if self.interrupted is not None:
            # second signal: leave at once; every finished row is already in the journal
            os._exit(128 + sig)
        self.interrupted = sig
        name = signal.Signals(sig).name
        log.warning(
            "%s received: finishing in-flight requests (up to %ss); press Ctrl-C again to quit at once",
            name, self.cfg.run.grace_period_s,
        )
        assert self.pool is not None
        self.pool.stop()

    def _segment_full(self, path: Path, seg: int) -> None:
        self._segments_pending += 1
        if self._segments_pending >= MAX_PENDING_SEGMENTS:
            self._writer_ready.clear()
        self._compact_q.put_nowait((path, seg))

    def _segment_written(self) -> None:
        self._segments_pending -= 1
        if self._segments_pending < MAX_PENDING_SEGMENTS:
            self._writer_ready.set()

    async def _compactor(self) -> None:
        loop = asyncio.get_running_loop()
        # one writer thread owns the shard files; it runs at a lower CPU priority than the event loop
        # (compaction only has to keep up on average; the loop's latency is the throughput)
        with ThreadPoolExecutor(1, thread_name_prefix="clair-writer", initializer=lower_thread_priority) as pool:
            while True:
                path, n = await self._compact_q.get()
                if n < 0:
                    return
                try:
                    await loop.run_in_executor(pool, self._compact, path)
                except Exception as e:  # e.g. the disk is full: stop the run (its state stays resumable)
                    assert self.pool is not None
                    self.pool.stop(e)
                    self._writer_ready.set()  # nothing may wait for a writer that has stopped
                    return
                self._segment_written()

    def _compact(self, segment: Path) -> None:
        self.writer.compact(segment)
        release_free_memory()  # the compaction's buffers, back to the OS (flat memory on long runs)

    async def _progress_loop(self) -> None:
        assert self.on_progress is not None
        while True:
            self.on_progress(self)
            await asyncio.sleep(0.5)

    async def _produce(self) -> None:
        assert self.pool is not None
        try:
            await self._produce_rows()
        except Exception as e:  # e.g. a corrupt later input file: stop the run (state stays consistent)
            self.pool.stop(e)
            raise

    async def _produce_rows(self) -> None:
        assert self.pool is not None and self._window is not None
        pool, window = self.pool, self._window
        it = self.source.batches(self.done)
        template = self.template
        seen_rows = self.counters.rows_done_before
        while not pool.stopping:
            prepared = await asyncio.to_thread(next, it, None)
            if prepared is None:
                break
            extras = prepared.extras
            for i, rid in enumerate(prepared.row_ids):
                if not self._writer_ready.is_set():
                    await self._wait_for_writer()
                await window.acquire()
                if pool.stopping:
                    return
                task, sol = prepared.tasks[i], prepared.solutions[i]
                extra = extras[i] if extras is not None else {}
                seen_rows += 1
                if not task or not sol:
                    self._append([self._count(records.invalid_input_record(WorkItem(rid, task or "", sol or "", [], 0, extra)))])
                    window.release()
                    continue
                messages = render(template, task, sol)
                pool.submit(WorkItem(rid, task, sol, messages, estimate_tokens(messages), extra))
        if not pool.stopping:
            self.counters.rows_total = seen_rows
            pool.finish_input()

    async def _wait_for_writer(self) -> None:
        """Backpressure from the shard writer: new rows wait while MAX_PENDING_SEGMENTS full journal
        segments wait for compaction (a CPU-bound run would otherwise pile segments up on disk and
        spend its last minutes compacting them)."""
        if not self.writer_waits:
            log.info("the shard writer is behind; new requests wait until it catches up")
        self.writer_waits += 1
        await self._writer_ready.wait()

    # ------------------------------------------------------------ results

    def _on_done(self, batch: list[Finished]) -> None:
        """Record a batch of finished rows (one journal write), then free their producer window."""
        assert self._window is not None
        try:
            recs, bug = [], None
            for item, comp, err, ep in batch:
                try:
                    recs.append(self._record(item, comp, err, ep))
                except Exception as e:  # a bug for one row: the batch's other answers are still kept
                    bug = bug or e
            self._append(recs)
            if bug is not None:
                raise bug
        finally:
            for _ in batch:
                self._window.release()

    def _record(self, item: WorkItem, comp: Completion | None, err: EndpointError | None, ep: Endpoint) -> dict[str, Any]:
        """A finished row as its output record (``records`` builds it), counted."""
        if comp is not None:
            rec = records.completion_record(item, comp, model=ep.model, endpoint=ep.name,
                                            markers=self.template.markers, max_tokens=self.max_tokens)
            self.counters.prompt_tokens += comp.prompt_tokens or 0
            self.counters.completion_tokens += comp.completion_tokens or 0
        else:
            assert err is not None
            rec = records.failure_record(item, err.kind, str(err), err.raw, model=ep.model, endpoint=ep.name)
        if item.first_sent is not None:
            self.counters.latency.record(asyncio.get_running_loop().time() - item.first_sent)
        return self._count(rec)

    def _count(self, rec: dict[str, Any]) -> dict[str, Any]:
        kind = rec.get("error_kind")
        if kind is not None:
            self.counters.rows_failed[kind] += 1
        elif rec["status"] == records.OK:
            self.counters.rows_ok += 1
        else:
            self.counters.rows_flagged[rec["status"]] += 1
        return rec

    def _append(self, recs: list[dict[str, Any]]) -> None:
        assert self.journal is not None
        try:
            self.journal.append_many(recs)
        except StorageError as e:
            assert self.pool is not None
            self.pool.stop(e)
            raise

    # ------------------------------------------------------------ finishing

    def _record_start(self) -> None:
        self.manifest["config"] = self.cfg.to_dict()
        self.manifest["runs"].append({"started": self.started, "retry_failed": self.retry_failed})
        self.manifest["rows_total"] = self.counters.rows_total
        write_manifest(self.run_dir, self.manifest)

    def report(self, status: str, message: str | None = None) -> RunReport:
        c = self.counters
        wall = time.perf_counter() - self.t0
        counts = results.count_rows(self.run_dir) if status != "running" else None
        flagged = dict(c.rows_flagged)
        done = counts["data"] + counts["failed"] if counts else c.rows_done_before + c.rows_finished
        return RunReport(
            run_dir=str(self.run_dir),
            status=status,
            rows_total=c.rows_total,
            rows_done=done,
            rows_ok=c.rows_ok,
            rows_flagged=flagged,
            rows_failed=counts["failure_kinds"] if counts else dict(c.rows_failed),
            resumed_from=c.rows_done_before,
            requests=sum(ep.counters.requests for ep in self.endpoints),
            retries=sum(ep.counters.retries for ep in self.endpoints),
            prompt_tokens=c.prompt_tokens,
            completion_tokens=c.completion_tokens,
            wall_s=round(wall, 3),
            rows_per_s=round(c.rows_finished / wall, 3) if wall > 0 else 0.0,
            output_tokens_per_s=round(c.completion_tokens / wall, 1) if wall > 0 else 0.0,
            latency=c.latency.summary(),
            endpoints=[ep.state() for ep in self.endpoints],
            cost_usd=self.cfg.pricing.cost_usd(c.prompt_tokens, c.completion_tokens),
            message=message,
        )

    def _finish(self) -> RunReport:
        if self.retry_failed and not self.interrupted:
            removed = results.compact_failures(self.run_dir)
            if removed:
                log.info("removed %d superseded failure row(s)", removed)
        status = "interrupted" if self.interrupted else "completed"
        rep = self.report(status)
        if self.interrupted:
            rep.extra["signal"] = self.interrupted
        if rep.rows_total is not None and rep.rows_done < rep.rows_total and status == "completed":
            status = rep.status = "incomplete"
        self.manifest["runs"][-1].update(ended=time.time(), status=status, report=rep.to_dict())
        self.manifest["rows_total"] = rep.rows_total
        self.manifest["counts"] = {"data": rep.rows_done - sum(rep.rows_failed.values()),
                                   "failed": sum(rep.rows_failed.values()), "failure_kinds": rep.rows_failed}
        write_manifest(self.run_dir, self.manifest)
        with contextlib.suppress(OSError):
            import orjson

            (self.run_dir / "report.json").write_bytes(orjson.dumps(rep.to_dict(), option=orjson.OPT_INDENT_2))
        return rep


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


__all__ = ["Job", "RunReport", "arun_job", "run_job", "ClairError"]
