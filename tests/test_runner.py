"""The runner in-process, with a fake client: bad rows, parse failures, storage errors, progress."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import assert_exactly_once, clair, make_input, read_ids, write_config

from engine import cli, load_config, records, run_job, runner
from engine.client import FakeClient
from engine.core.errors import StorageError
from engine.core.types import Completion
from engine.runner.record import Recorder
from engine.store import MAX_PENDING_SEGMENTS
from engine.store.journal import list_segments
from engine.store.readers import current_failures
from engine.store.shards import ShardWriter
from engine.tools.mockserver import build_answer, mock_revision
from engine.tools.mockserver_proc import MockProcess


def _solution(body: dict[str, Any]) -> str:
    text = body["messages"][-1]["content"]
    return text.split("{student_solution}: ", 1)[1].split("\n\n-----------------", 1)[0]


def fake(answer=lambda sol: build_answer(sol, 0), finish="stop") -> FakeClient:
    async def handler(url: str, headers: dict[str, str], body: dict[str, Any]) -> Completion:
        sol = _solution(body)
        return Completion(content=answer(sol), finish_reason=finish, model=body["model"],
                          prompt_tokens=700, completion_tokens=800)

    return FakeClient(handler, models=["mock-clair"])


def _write_rows(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    p = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), p)
    return p


def test_empty_inputs_and_unparseable_answers_are_recorded_not_dropped(tmp_path: Path) -> None:
    rows = [{"q": f"question {i}", "a": f"answer number {i} with a teh typo"} for i in range(20)]
    rows[3]["a"] = ""
    rows[7]["q"] = None
    inp = _write_rows(tmp_path, rows)
    cfg_path = write_config(tmp_path, "http://127.0.0.1:9/v1", inp,
                            input={"path": str(inp), "columns": {"task": "q", "student_solution": "a"}})
    cfg = load_config(cfg_path)

    def answer(sol: str) -> str:
        return "I have no headers at all." if "number 5 " in sol else build_answer(sol, 1)

    rep = run_job(cfg, client=fake(answer))
    assert rep.status == "completed" and rep.rows_done == 20
    run = tmp_path / "run"
    assert_exactly_once(run, 20)
    f = current_failures(run)
    kinds = dict(zip(f.column("row_id").to_pylist(), f.column("error_kind").to_pylist(), strict=True))
    assert kinds == {3: "invalid_input", 7: "invalid_input", 5: "no_marker"}
    raw = dict(zip(f.column("row_id").to_pylist(), f.column("raw_output").to_pylist(), strict=True))
    assert raw[5] == "I have no headers at all." and raw[3] is None
    t = pq.read_table(run / "data")
    assert all(r == mock_revision(s) for r, s in zip(t.column("revision").to_pylist(),
                                                     t.column("student_solution").to_pylist(), strict=True))


def test_truncated_answers_are_flagged_not_counted_clean(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 10)
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:9/v1", inp))
    rep = run_job(cfg, client=fake(finish="length"))
    assert rep.rows_flagged == {"truncated": 10} and rep.rows_ok == 0
    t = pq.read_table(tmp_path / "run" / "data", columns=["status"])
    assert set(t.column("status").to_pylist()) == {"truncated"}


def test_disk_full_stops_cleanly_and_the_run_resumes(tmp_path: Path, monkeypatch, capsys) -> None:
    inp = make_input(tmp_path, 300)
    cfg_path = write_config(tmp_path, "http://127.0.0.1:9/v1", inp)
    real_write = os.write
    journal_writes = {"n": 0}

    def full_disk(fd: int, data: bytes) -> int:
        if data[:8].isalnum() and data[8:9] == b" " and data.endswith(b"\n"):  # journal records
            journal_writes["n"] += data.count(b"\n")
            if journal_writes["n"] > 120:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr("engine.store.journal.os.write", full_disk)
    monkeypatch.setattr("engine.runner.job._http_transport", lambda cfg: contextlib.nullcontext(fake()))
    code = cli.main(["run", str(cfg_path)])
    err = capsys.readouterr().err
    assert code == 74
    assert "the disk is full" in err and "resume with: clair run" in err and "Traceback" not in err
    data, fails = read_ids(tmp_path / "run")
    assert 0 < len(data) <= 120 and not fails
    monkeypatch.setattr("engine.store.journal.os.write", real_write)
    assert cli.main(["run", str(cfg_path)]) == 0
    assert_exactly_once(tmp_path / "run", 300)


def test_storage_error_type_names_the_fix() -> None:
    from engine.store import storage_error

    e = storage_error(OSError(errno.EACCES, "Permission denied"), "the journal")
    assert isinstance(e, StorageError) and "write permission was lost" in str(e)


def test_plain_progress_lines_when_not_a_tty(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 400)
    with MockProcess(["--latency-ms", "20"]) as m:
        cfg = write_config(tmp_path, m.url, inp, run={"progress": "auto", "progress_interval_s": 0.2})
        r = clair("run", str(cfg))  # stderr is a pipe here, as under nohup or in CI
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("clair: rows ")]
    assert len(lines) >= 2
    assert "rows/s" in lines[-1] and "ETA" in lines[-1] and "in flight" in lines[-1] and "400/400" in lines[-1]
    report = orjson.loads((tmp_path / "run" / "report.json").read_bytes())
    assert report["rows_done"] == 400 and report["latency"]["p50_s"] > 0


def test_dry_run_sends_nothing_the_mock_counts(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 50)
    with MockProcess([]) as m:
        cfg = write_config(tmp_path, m.url, inp)
        r = clair("run", str(cfg), "--dry-run", env={"CLAIR_TOKENIZER": "estimate"})
        assert r.returncode == 0, r.stderr
        assert "requests: 50" in r.stdout
        s = m.stats()
        assert s["requests"] == 0 and s["other_requests"] == 0
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("variant", ["contextualai", "length-preserving"])
def test_other_variants_run_end_to_end(tmp_path: Path, variant: str) -> None:
    inp = make_input(tmp_path, 12)
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:9/v1", inp, prompt={"variant": variant}))
    seen: list[list[dict[str, str]]] = []

    async def handler(url: str, headers: dict[str, str], body: dict[str, Any]) -> Completion:
        seen.append(body["messages"])
        text = body["messages"][-1]["content"]
        sol = text.split("{student_solution}: ", 1)[1].split("\n\n-----------------", 1)[0]
        return Completion(content=build_answer(sol, 2), finish_reason="stop")

    rep = run_job(cfg, client=FakeClient(handler, models=["mock-clair"]))
    assert rep.rows_ok == 12
    assert all(m[0] == {"role": "system", "content": ""} and len(m) == 2 for m in seen)


def _corrupt_pages(path: Path) -> None:
    """Overwrite a Parquet file's data pages, keep its footer: the row count reads, the rows do not."""
    raw = bytearray(path.read_bytes())
    footer = int.from_bytes(raw[-8:-4], "little") + 8  # metadata, its length and the magic bytes
    raw[4:len(raw) - footer] = b"\xff" * (len(raw) - footer - 4)
    path.write_bytes(bytes(raw))


def test_a_corrupt_input_file_stops_the_run_before_any_request(tmp_path: Path) -> None:
    d = tmp_path / "inputs"
    d.mkdir()
    make_input(d, 40, name="a.parquet")
    (d / "b.parquet").write_bytes(b"PAR1 this is not a parquet file")
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:9/v1", d))
    from engine.core.errors import InputError

    client = fake()
    with pytest.raises(InputError, match="b.parquet"):
        run_job(cfg, client=client)
    assert client.calls == 0  # every file's footer is read before the first request


def test_a_corrupt_later_input_file_stops_the_run_cleanly(tmp_path: Path) -> None:
    """b.parquet's footer is fine (its rows are counted up front) but its pages are not: the producer
    fails after a.parquet's rows went out. The run stops with the file's name, and the rows answered
    before that are kept, once."""
    d = tmp_path / "inputs"
    d.mkdir()
    make_input(d, 40, name="a.parquet")
    _corrupt_pages(make_input(d, 25, name="b.parquet", seed=1))
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:9/v1", d))
    from engine.core.errors import InputError

    answered: list[str] = []

    async def handler(url: str, headers: dict[str, str], body: dict[str, Any]) -> Completion:
        answered.append(_solution(body))
        return Completion(content=build_answer(answered[-1], 0), finish_reason="stop", model=body["model"])

    with pytest.raises(InputError, match="b.parquet"):
        run_job(cfg, client=FakeClient(handler, models=["mock-clair"]))
    data, fails = read_ids(tmp_path / "run")
    # a.parquet's 40 rows are all submitted before b.parquet is read, and the producer's window
    # (2 x 16 rows) only lets that happen once some of them are journaled: answers did happen
    assert answered and data and not fails
    assert len(data) == len(set(data)) and set(data) <= set(range(40))
    t = pq.read_table(tmp_path / "run" / "data", columns=["student_solution", "revision"])
    kept = t.column("student_solution").to_pylist()
    assert sorted(kept) == sorted(answered)  # every answer received is kept, once
    assert t.column("revision").to_pylist() == [mock_revision(s) for s in kept]


def test_a_slow_shard_writer_holds_new_requests_back(tmp_path: Path, monkeypatch) -> None:
    """Backpressure: new rows wait while MAX_PENDING_SEGMENTS full journal segments wait for the
    writer (the backlog stays bounded), and every row still ends up in a shard once."""
    inp = make_input(tmp_path, 400)
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:9/v1", inp, output={"rows_per_shard": 20}))
    journal_dir = tmp_path / "run" / "journal"
    most = {"segments": 0}
    real = ShardWriter.compact

    def slow_compact(self: ShardWriter, segment: Path) -> dict[str, int]:
        # full segments on disk, the one being compacted included (the open one is not full)
        full = [p for p in list_segments(journal_dir) if p != list_segments(journal_dir)[-1]]
        most["segments"] = max(most["segments"], len(full))
        time.sleep(0.05)
        return real(self, segment)

    monkeypatch.setattr(ShardWriter, "compact", slow_compact)
    job = runner.Job(cfg, client=fake())
    rep = asyncio.run(job.run())
    assert rep.status == "completed" and job.writer is not None and job.writer.waits > 0
    # rows already sent when the producer starts waiting still land: 16 in flight (< 20 rows per
    # segment) can fill the open segment once more
    assert most["segments"] <= MAX_PENDING_SEGMENTS + 1
    assert_exactly_once(tmp_path / "run", 400)


def test_a_run_ends_promptly_while_a_dead_endpoints_breaker_is_open() -> None:
    """When the last row is done, a dispatcher waiting out an open breaker (up to minutes) must not
    hold the run open. On the virtual clock: the pool ends at the instant of its last answer."""
    from fakeclock import run as run_on_fake_clock

    from engine.core.errors import HTTPStatusError
    from engine.core.types import WorkItem
    from engine.dispatch import Endpoint, Pool
    from engine.policy.breaker import CircuitBreaker
    from engine.policy.retry import RetryPolicy

    async def handler(url: str, headers: dict[str, str], body: dict[str, Any]) -> Completion:
        if "dead" in url:
            raise HTTPStatusError(500, "server error")
        await asyncio.sleep(0.01)
        return Completion(content=build_answer("x", 0), finish_reason="stop", model="m")

    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        eps = [Endpoint(name=n, url=f"http://{n}/v1", model="m", headers={}, generation={}, max_concurrency=2,
                        breaker_failures=1, breaker_open_s=60.0) for n in ("dead", "live")]
        for ep in eps:  # the breakers read the virtual clock too
            ep.breaker = CircuitBreaker(failure_threshold=1, open_s=60.0, clock=loop.time)
        done: list[Any] = []
        last = {"at": -1.0}

        def on_done(batch: list[Any]) -> None:
            done.extend(batch)
            last["at"] = loop.time()

        pool = Pool(eps, FakeClient(handler), RetryPolicy(max_attempts=50, base_delay_s=0.0, max_delay_s=0.0),
                    on_done, seed=1)
        for i in range(40):
            pool.submit(WorkItem(i, "t", "s", [{"role": "user", "content": "x"}], 10, {}))
        pool.finish_input()
        await asyncio.wait_for(pool.run(), timeout=30)  # virtual seconds: half the breaker's open time
        assert len(done) == 40 and all(f[1] is not None for f in done)
        assert eps[0].breaker.state == "open"  # still open when the run ended
        return last["at"], loop.time()

    last_answer, ended = run_on_fake_clock(main())
    assert 0 < last_answer < 60 and ended == last_answer  # no wait for the dead endpoint's breaker


def test_a_stop_sends_nothing_more_from_a_dispatcher_waiting_for_tokens_per_minute() -> None:
    """A dispatcher holding a row while it waits in the tokens/min bucket must not send it after the
    pool stopped (it would be paid for and never recorded), nor hold the pool open until tokens come."""
    from engine.core.types import WorkItem
    from engine.dispatch import Endpoint, Pool
    from engine.policy.retry import RetryPolicy

    sent: list[Any] = []

    async def handler(url: str, headers: dict[str, str], body: dict[str, Any]) -> Completion:
        sent.append(body["messages"][-1]["content"])
        return Completion(content=build_answer("x", 0), finish_reason="stop", model="m")

    async def main() -> None:
        # 0.06 tokens/min: the first row passes on the full bucket, the second waits ~1,000 s for tokens
        ep = Endpoint(name="e", url="http://e/v1", model="m", headers={}, generation={}, max_concurrency=4,
                      tpm=0.06)
        done: list[Any] = []
        pool = Pool([ep], FakeClient(handler), RetryPolicy(max_attempts=1), lambda batch: done.extend(batch))
        for i in range(3):
            pool.submit(WorkItem(i, "t", "s", [{"role": "user", "content": f"row {i}"}], 10, {}))
        pool.finish_input()
        run = asyncio.create_task(pool.run())
        while not done:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the dispatcher is now waiting in the bucket with row 1
        pool.stop()
        await asyncio.wait_for(run, timeout=30)  # a hang detector: the bucket alone would take ~1,000 s
        await pool.drain(0.0)
        assert sent == ["row 0"] and len(done) == 1 and ep.gate.in_flight == 0

    asyncio.run(main())


def test_a_bug_in_a_dispatcher_stops_the_run_with_its_error(tmp_path: Path, monkeypatch) -> None:
    """It used to end the dispatcher silently: the run returned with rows neither done nor failed."""
    from engine import dispatch

    inp = make_input(tmp_path, 30)
    cfg = load_config(write_config(
        tmp_path, "http://127.0.0.1:9/v1", inp,
        endpoints=[{"url": "http://127.0.0.1:9/v1", "model": "mock-clair", "max_concurrency": 4,
                    "tokens_per_minute": 10_000_000}],
    ))
    calls = {"n": 0}
    real_cost = dispatch.Endpoint.cost

    def cost(self: Any, item: Any) -> float:
        calls["n"] += sys._getframe(1).f_code.co_name == "_loop"  # the dispatcher's own call
        if calls["n"] == 5:
            raise RuntimeError("a bug in the dispatcher")
        return real_cost(self, item)

    monkeypatch.setattr(dispatch.Endpoint, "cost", cost)
    with pytest.raises(RuntimeError, match="a bug in the dispatcher"):
        run_job(cfg, client=fake())
    monkeypatch.setattr(dispatch.Endpoint, "cost", real_cost)
    assert run_job(cfg, client=fake()).status == "completed"
    assert_exactly_once(tmp_path / "run", 30)


def test_rows_after_a_lull_keep_the_requests_per_minute_spacing(monkeypatch) -> None:
    """The dispatcher takes its rpm slot, then waits for a row; the send it makes after a lull must
    count from when it leaves, or the next row would follow it too closely (a burst the endpoint sees)."""
    import asyncio_throttle.throttler
    from fakeclock import patch_monotonic
    from fakeclock import run as run_on_fake_clock

    from engine.core.types import WorkItem
    from engine.dispatch import Endpoint, Pool
    from engine.policy.retry import RetryPolicy

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        patch_monotonic(monkeypatch, asyncio_throttle.throttler, loop)
        sent: list[float] = []

        async def handler(url: str, headers: dict[str, str], body: dict[str, Any]) -> Completion:
            sent.append(loop.time())
            return Completion(content=build_answer("x", 0), finish_reason="stop", model="m")

        ep = Endpoint(name="e", url="http://e/v1", model="m", headers={}, generation={}, max_concurrency=4,
                      rpm=30, adaptive=False)  # one request per 2 s
        pool = Pool([ep], FakeClient(handler), RetryPolicy(max_attempts=1), lambda batch: None)
        run = asyncio.create_task(pool.run())
        for i, at in enumerate((0.0, 2.5, 2.6)):
            await asyncio.sleep(at - loop.time())
            pool.submit(WorkItem(i, "t", "s", [{"role": "user", "content": "x"}], 10, {}))
        pool.finish_input()
        await run
        return sent

    sent = run_on_fake_clock(main())
    assert len(sent) == 3 and sent[1] >= 2.5
    assert sent[2] - sent[1] >= 2.0, sent  # the window counts the send at 2.5, not the slot taken at 2.0


def test_a_bug_in_the_finisher_stops_the_pool_cleanly() -> None:
    from engine.core.types import WorkItem
    from engine.dispatch import Endpoint, Pool
    from engine.policy.retry import RetryPolicy

    async def handler(url: str, headers: dict[str, str], body: dict[str, Any]) -> Completion:
        return Completion(content=build_answer("x", 0), finish_reason="stop", model="m")

    async def main() -> Pool:
        ep = Endpoint(name="e", url="http://e/v1", model="m", headers={}, generation={}, max_concurrency=4)
        done: list[Any] = []
        pool = Pool([ep], FakeClient(handler), RetryPolicy(max_attempts=1), lambda batch: done.extend(batch))
        real, calls = pool._maybe_end, {"n": 0}

        def maybe_end() -> None:
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("a bug in the finisher")
            real()

        pool._maybe_end = maybe_end  # type: ignore[method-assign]
        for i in range(20):
            pool.submit(WorkItem(i, "t", "s", [{"role": "user", "content": "x"}], 10, {}))
        pool.finish_input()
        await asyncio.wait_for(pool.run(), timeout=30)
        await pool.drain(5.0)
        assert ep.gate.in_flight == 0
        return pool

    pool = asyncio.run(main())
    assert isinstance(pool.fatal, RuntimeError) and pool.stopping


def test_a_failing_compaction_stops_the_run_instead_of_hanging_it(tmp_path: Path, monkeypatch) -> None:
    """With writer backpressure, a writer that died used to leave the producer waiting forever."""
    inp = make_input(tmp_path, 300)
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:9/v1", inp, output={"rows_per_shard": 20}))

    def broken(self: ShardWriter, segment: Path) -> dict[str, int]:
        raise StorageError("cannot write shards (No space left on device); free space and resume")

    monkeypatch.setattr(ShardWriter, "compact", broken)

    async def main() -> BaseException | None:
        task = asyncio.create_task(runner.Job(cfg, client=fake()).run())
        done, _ = await asyncio.wait({task}, timeout=30)  # a hang detector, not a speed check
        assert done, "the run hung after the writer failed"
        return task.exception()

    assert isinstance(asyncio.run(main()), StorageError)
    monkeypatch.undo()
    assert run_job(cfg, client=fake()).status == "completed"  # the journal kept every answer: resume
    assert_exactly_once(tmp_path / "run", 300)


def test_answers_arriving_after_the_pool_ends_are_recorded_at_once() -> None:
    """Ctrl-C: the dispatchers end, requests in flight finish in the grace period; their answers must
    reach the journal as they arrive, not only when the grace period is over."""
    from engine.core.types import WorkItem
    from engine.dispatch import Endpoint, Pool
    from engine.policy.retry import RetryPolicy

    delays = iter([0.2, 0.3, 0.4, 0.5] + [0.1] * 20)

    async def handler(url: str, headers: dict[str, str], body: dict[str, Any]) -> Completion:
        await asyncio.sleep(next(delays))
        return Completion(content=build_answer("x", 0), finish_reason="stop", model="m")

    async def main() -> None:
        ep = Endpoint(name="e", url="http://e/v1", model="m", headers={}, generation={}, max_concurrency=4,
                      adaptive=False)
        done: list[Any] = []
        pool = Pool([ep], FakeClient(handler), RetryPolicy(), lambda batch: done.extend(batch))
        for i in range(20):
            pool.submit(WorkItem(i, "t", "s", [{"role": "user", "content": "x"}], 10, {}))
        run = asyncio.create_task(pool.run())
        await asyncio.sleep(0.05)  # 4 requests in flight, answering at 0.2, 0.3, 0.4 and 0.5 s
        pool.stop()
        await asyncio.sleep(0.2)  # the first answer frees a slot: the dispatcher ends, and the pool
        assert run.done() and len(done) == 1
        await asyncio.sleep(0.35)  # the other three arrive after the pool's end
        assert len(done) == 4 and ep.gate.in_flight == 0  # recorded on arrival, slots freed
        assert await pool.drain(1.0) == 0 and len(done) == 4

    asyncio.run(main())


def test_a_bug_recording_one_answer_keeps_the_rest_of_its_batch(tmp_path: Path, monkeypatch) -> None:
    """Answers are journaled in batches: if building one row's record raises (a bug), the run stops,
    but the batch's other answers are kept, so a resume pays again only for the row that hit the bug."""
    inp = make_input(tmp_path, 120)
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:9/v1", inp))
    bad: dict[str, Any] = {}
    real_done, real_record = Recorder.on_done, records.completion_record

    def on_done(self: Recorder, batch: list) -> None:
        if "row" not in bad and len(batch) >= 2:
            bad["row"], bad["batch"] = batch[1][0].row_id, [(f[0].row_id, f[0].student_solution) for f in batch]
        real_done(self, batch)

    def completion_record(item: Any, comp: Any, **kw: Any) -> dict[str, Any]:
        if item.row_id == bad.get("row"):
            raise RuntimeError("a bug in record building")
        return real_record(item, comp, **kw)

    monkeypatch.setattr(Recorder, "on_done", on_done)
    monkeypatch.setattr(records, "completion_record", completion_record)
    with pytest.raises(RuntimeError, match="a bug in record building"):
        run_job(cfg, client=fake())
    assert bad, "no batch of two or more answers was recorded"

    monkeypatch.setattr(Recorder, "on_done", real_done)
    monkeypatch.setattr(records, "completion_record", real_record)
    asked: list[str] = []

    async def handler(url: str, headers: dict[str, str], body: dict[str, Any]) -> Completion:
        asked.append(_solution(body))
        return Completion(content=build_answer(_solution(body), 0), finish_reason="stop", model=body["model"])

    rep = run_job(cfg, client=FakeClient(handler, models=["mock-clair"]))
    assert rep.status == "completed"
    assert_exactly_once(tmp_path / "run", 120)
    again = {rid for rid, solution in bad["batch"] if solution in asked}
    assert again == {bad["row"]}


def test_a_failing_progress_reporter_does_not_stop_the_run(tmp_path: Path) -> None:
    """stderr closed under a running job (`clair run ... | tee log`, tee killed): the display goes off, the
    run goes on to the end."""
    inp = make_input(tmp_path, 200)
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:9/v1", inp))
    calls: list[int] = []

    def broken(p: Any) -> None:
        calls.append(1)
        raise BrokenPipeError("stderr is gone")

    rep = run_job(cfg, client=fake(), on_progress=broken)
    assert rep.status == "completed" and len(calls) == 1
    assert_exactly_once(tmp_path / "run", 200)


def test_a_job_cancelled_from_outside_sends_nothing_more(tmp_path: Path) -> None:
    """A notebook cell interrupted (the job's task cancelled): the pool stops with it; no request is sent
    after the cancellation, and the run resumes exactly once."""
    inp = make_input(tmp_path, 400)
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:9/v1", inp))
    sent: list[float] = []

    async def slow(url: str, headers: dict[str, str], body: dict[str, Any]) -> Completion:
        sent.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.05)
        return Completion(content=build_answer(_solution(body), 0), finish_reason="stop", model=body["model"])

    async def main() -> tuple[int, int]:
        task = asyncio.create_task(runner.arun_job(cfg, client=FakeClient(slow, models=["mock-clair"])))
        while len(sent) < 40:
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        at_cancel = len(sent)
        await asyncio.sleep(0.3)  # anything still alive would send more by now
        return at_cancel, len(sent)

    at_cancel, later = asyncio.run(main())
    assert later == at_cancel
    assert run_job(cfg, client=fake()).status == "completed"
    assert_exactly_once(tmp_path / "run", 400)


def test_extending_a_jsonl_run_checks_the_endpoints_again(tmp_path: Path, mock: MockProcess) -> None:
    """JSON lines have no cheap row count: the pre-flight pass counts them, so a raised input.limit is seen
    as work to do (start-up check, 'resuming: 20 of 40')."""
    from engine.tools.synthetic import write_sample

    inp = tmp_path / "in.jsonl"
    write_sample(str(inp), 40)
    cfg = write_config(tmp_path, mock.url, inp, input={"path": str(inp), "limit": 20})
    assert clair("run", str(cfg)).returncode == 0
    r = clair("run", str(cfg), "--set", "input.limit=40")
    assert r.returncode == 0, r.stderr
    assert "resuming: 20 of 40 rows done" in r.stderr
    assert_exactly_once(tmp_path / "run", 40)
