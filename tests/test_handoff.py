"""The hand-off: a stage's records read back for the next stage (backlog from its shards, then live from
its journal as the writer appends), each exactly once, in bounded batches, ending when the writer closes."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from test_stage_store import answer, drive, failed, gen_rec, open_gen, open_run

from engine.source import DoneSet
from engine.store import Handoff, StageStore, StoreWriter
from engine.store.journal import encode_record


def done(*ids: int) -> DoneSet:
    return DoneSet(pa.array(list(ids), pa.int64()))


def key(r: dict[str, Any]) -> tuple[int, str]:
    """A yielded record: its row and whether it is an answer or a failure (and of which kind)."""
    return r["row_id"], r.get("error_kind") or "answer"


def compact_rotated(w: StoreWriter) -> list[Path]:
    """Compact the segments the writer rotated past, as its writer thread would (then they are deleted)."""
    segs = []
    while not w._queue.empty():
        seg = w._queue.get_nowait()
        assert seg is not None
        w.shards.compact(seg)
        segs.append(seg)
    return segs


async def until(cond: Callable[[], bool]) -> None:
    """Let the loop (and the threads) run until ``cond()`` (the test's timeout bounds it)."""
    while not cond():
        await asyncio.sleep(0.001)


async def collect(h: Handoff) -> list[list[dict[str, Any]]]:
    return [b async for b in h]


async def backlog_run(run: Path) -> None:
    """A stage holding, from two earlier sessions: answers 0..19 but 3, 7, 11, 15, 19 (timeouts); then
    row 3 answered, row 7 failed for good (invalid_input)."""
    with open_run(run) as store:
        store.begin_session(config={}, started=1.0, retry_failed=False, rows_total=20)
        await drive(open_gen(store).writer(rows_per_segment=6, fsync_interval_s=0.001),
                    [[gen_rec(i) for i in range(j, j + 4)] for j in range(0, 20, 4)])
    with open_run(run) as store:
        await drive(open_gen(store).writer(rows_per_segment=6, fsync_interval_s=0.001),
                    [[answer(3), failed(7, "invalid_input")]])


# ---------------------------------------------------------------------------------------------- backlog


@pytest.mark.parametrize("retry_failed", [False, True])
async def test_backlog_only(tmp_path: Path, retry_failed: bool) -> None:
    run = tmp_path / "run"
    await backlog_run(run)
    with open_run(run) as store:
        st = open_gen(store)
        w = st.writer(rows_per_segment=6, fsync_interval_s=0.001)
        h = st.handoff(w, skip=done(0, 1, 15), stage_done=st.done_ids(retry_failed=retry_failed), batch_rows=4)
        w.close()
        batches = await collect(h)
    got = [key(r) for b in batches for r in b]
    answers = [(i, "answer") for i in range(2, 19) if i not in (7, 11, 15)]
    # failures: 3 is superseded by its answer, 7's newest failure is current; 15 is skipped; the timeouts
    # 11 and 19 are current, but under --retry-failed this session requests them again
    fails = [(7, "invalid_input")] + ([] if retry_failed else [(11, "timeout"), (19, "timeout")])
    assert sorted(got[:len(answers)]) == answers and sorted(got[len(answers):]) == sorted(fails)
    assert h.rows_backlog == len(got) and h.rows_live == 0 and h.waiting == 0
    assert all(1 <= len(b) <= 4 for b in batches) and h.peak_buffered == 4
    rec = next(r for b in batches for r in b if r["row_id"] == 2)
    assert rec == {**answer(2)}  # shard rows as plain dicts of the stage's columns


async def test_backlog_ignores_the_shards_of_this_session(tmp_path: Path) -> None:
    """Shards the writer of this session made (compacted before the hand-off began) are live rows, once."""
    run = tmp_path / "run"
    await backlog_run(run)
    with open_run(run) as store:
        st = open_gen(store)
        stage_done = st.done_ids(retry_failed=True)  # (taken when the session begins)
        w = st.writer(rows_per_segment=2, fsync_interval_s=0.001)
        w.append([answer(11), answer(19), answer(20)])
        compact_rotated(w)
        h = st.handoff(w, skip=DoneSet(), stage_done=stage_done, batch_rows=50)
        w.close()
        batches = await collect(h)
    got = sorted(key(r) for b in batches for r in b)
    # 15 (a timeout) is requested again this session (not yet answered): not handed on
    assert got == sorted([(i, "answer") for i in range(21) if i not in (7, 15)] + [(7, "invalid_input")])
    assert h.rows_live == 3 and h.rows_backlog == 17


# ---------------------------------------------------------------------------------------------- live


async def test_live_only_streams_every_record_in_order(tmp_path: Path) -> None:
    with open_run(tmp_path / "run") as store:
        st = open_gen(store)
        w = st.writer(rows_per_segment=7, fsync_interval_s=0.001)
        runner = asyncio.create_task(w.run())
        h = st.handoff(w, skip=DoneSet(), stage_done=DoneSet(), batch_rows=5)
        got: list[dict[str, Any]] = []
        waiting: list[int] = []

        async def consume() -> None:
            async for b in h:
                assert len(b) <= 5
                got.extend(b)

        consumer = asyncio.create_task(consume())
        sent: list[dict[str, Any]] = []
        for j in range(0, 40, 3):
            batch = [gen_rec(i) for i in range(j, min(j + 3, 40))]
            w.append(batch)
            sent.extend(batch)
            waiting.append(h.waiting)
            await until(lambda: len(got) >= len(sent))
            assert got == sent  # streamed: read as soon as written, before the writer closes
            assert h.waiting == 0
        w.close()
        await consumer
        await runner
    assert got == sent and h.rows_live == 40 and h.rows_backlog == 0
    assert waiting[0] == 3  # the rows journaled and not yet read
    assert h.peak_buffered <= 5


async def test_segment_compacted_before_the_reader_opened_it(tmp_path: Path) -> None:
    with open_run(tmp_path / "run") as store:
        st = open_gen(store)
        w = st.writer(rows_per_segment=5, fsync_interval_s=0.001)
        h = st.handoff(w, skip=DoneSet(), stage_done=DoneSet(), batch_rows=3)
        w.append([gen_rec(i) for i in range(12)])
        segs = compact_rotated(w)
        assert [s.name for s in segs] == ["seg-00000.log", "seg-00001.log"] and not any(s.exists() for s in segs)
        it = aiter(h)
        got = [r for _ in range(4) for r in await anext(it)]  # 10 rows from shards 0, 1; 2 from segment 2
        assert sorted(key(r) for r in got[:10]) == sorted(key(gen_rec(i)) for i in range(10))
        w.append([gen_rec(12)])
        w.close()
        got += [r async for b in it for r in b]
    assert sorted(key(r) for r in got) == sorted(key(gen_rec(i)) for i in range(13))
    assert [r["row_id"] for r in got[-3:]] == [10, 11, 12]  # the open segment in journal order
    assert h.rows_live == 13 and h.peak_buffered <= 3


async def test_segment_compacted_while_the_reader_holds_it_open(tmp_path: Path) -> None:
    with open_run(tmp_path / "run") as store:
        st = open_gen(store)
        w = st.writer(rows_per_segment=10, fsync_interval_s=0.001)
        h = st.handoff(w, skip=DoneSet(), stage_done=DoneSet(), batch_rows=3)
        w.append([gen_rec(i) for i in range(8)])
        it = aiter(h)
        first = await anext(it)  # the reader has segment 0 open
        w.append([gen_rec(i) for i in range(8, 13)])  # segment 0 is full, rotated
        (seg,) = compact_rotated(w)
        assert not seg.exists() and (st.dir / "data" / "part-00000.parquet").exists()
        w.close()
        rest = [r async for b in it for r in b]
    # read from the open file: exactly once and in journal order (shards would give data rows first)
    assert [r["row_id"] for r in first + rest] == list(range(13))
    assert first + rest == [gen_rec(i) for i in range(13)]


async def test_skip_and_waiting_on_live_rows(tmp_path: Path) -> None:
    with open_run(tmp_path / "run") as store:
        st = open_gen(store)
        w = st.writer(rows_per_segment=4, fsync_interval_s=0.001)
        h = st.handoff(w, skip=done(1, 2, 5, 9), stage_done=DoneSet(), batch_rows=100)
        w.append([answer(i) for i in range(10)])
        assert h.waiting == 10
        compact_rotated(w)  # segments 0 and 1 from shards (skip applied there too), segment 2 from its file
        w.close()
        batches = await collect(h)
    assert sorted(r["row_id"] for b in batches for r in b) == [0, 3, 4, 6, 7, 8]
    assert h.waiting == 0 and h.rows_live == 6


async def test_ends_after_the_writer_closes(tmp_path: Path) -> None:
    with open_run(tmp_path / "run") as store:
        st = open_gen(store)
        # a writer that wrote nothing
        w = st.writer(rows_per_segment=4, fsync_interval_s=0.001)
        consumer = asyncio.create_task(collect(st.handoff(w, skip=DoneSet(), stage_done=DoneSet())))
        for _ in range(10):
            await asyncio.sleep(0)
        assert not consumer.done()  # waits for records while the writer is open
        w.close()
        assert await asyncio.wait_for(consumer, 30) == []
        # a writer that ended exactly at a rotation: the next segment is never created
        w = st.writer(rows_per_segment=4, fsync_interval_s=0.001)
        h = st.handoff(w, skip=DoneSet(), stage_done=DoneSet())
        consumer = asyncio.create_task(collect(h))
        w.append([answer(i) for i in range(4)])
        for _ in range(10):
            await asyncio.sleep(0)
        assert not consumer.done()
        w.close()
        assert [r["row_id"] for b in await asyncio.wait_for(consumer, 30) for r in b] == [0, 1, 2, 3]
        with pytest.raises(RuntimeError, match="read once"):
            aiter(h)


async def test_a_line_written_in_part_is_read_when_complete_and_a_torn_tail_dropped(tmp_path: Path) -> None:
    with open_run(tmp_path / "run") as store:
        st = open_gen(store)
        w = st.writer(rows_per_segment=10, fsync_interval_s=0.001)
        h = st.handoff(w, skip=DoneSet(), stage_done=DoneSet())
        got: list[dict[str, Any]] = []

        async def consume() -> None:
            async for b in h:
                got.extend(b)

        consumer = asyncio.create_task(consume())
        w.append([answer(0)])
        line = encode_record(answer(1))
        fd = w.journal._fd
        assert fd is not None
        os.write(fd, line[:20])  # the OS has half of the line so far
        w.append([])  # (wakes the reader)
        await until(lambda: len(got) >= 1)
        for _ in range(10):
            await asyncio.sleep(0)
        assert [r["row_id"] for r in got] == [0]
        os.write(fd, line[20:])
        w.append([answer(2)])
        await until(lambda: len(got) >= 2)
        assert [r["row_id"] for r in got] == [0, 1, 2]
        os.write(fd, encode_record(answer(3))[:-3])  # killed mid-write: a torn tail
        w.journal.count += 1
        w.close()
        await consumer
    assert [r["row_id"] for r in got] == [0, 1, 2]


# ---------------------------------------------------------------------------------------------- everything at once


@pytest.mark.parametrize("seed", range(12))
async def test_every_record_exactly_once_in_a_random_interleaving(tmp_path: Path, seed: int) -> None:
    """A backlog, then live rows appended in random batches while the writer thread compacts segments
    (before the reader opens them, while it holds them, or after), a consumer that lags at random:
    every expected record is yielded exactly once, in batches of at most ``batch_rows``."""
    rnd = random.Random(seed)
    run = tmp_path / "run"
    n_old = rnd.randrange(0, 40)
    with open_run(run) as store:
        store.begin_session(config={}, started=1.0, retry_failed=False, rows_total=None)
        if n_old:
            await drive(open_gen(store).writer(rows_per_segment=rnd.randrange(2, 9), fsync_interval_s=0.001),
                        [[gen_rec(i) for i in range(n_old)]])
    skip_ids = [i for i in range(n_old + 60) if rnd.random() < 0.2]
    batch_rows = rnd.randrange(1, 8)
    with open_run(run) as store:
        st = open_gen(store)
        retry = st.done_ids(retry_failed=True)
        w = st.writer(rows_per_segment=rnd.randrange(2, 12), fsync_interval_s=0.001)
        runner = asyncio.create_task(w.run())
        h = st.handoff(w, skip=done(*skip_ids), stage_done=retry, batch_rows=batch_rows)
        got: list[tuple[int, str]] = []

        async def consume() -> None:
            async for b in h:
                assert 1 <= len(b) <= batch_rows
                got.extend(key(r) for r in b)
                for _ in range(rnd.randrange(0, 4)):
                    await asyncio.sleep(0)

        consumer = asyncio.create_task(consume())
        # this session: the retryable failures of the backlog again (as answers), then new rows
        todo = [i for i in range(n_old) if i not in retry] + list(range(n_old, n_old + 60))
        live: list[dict[str, Any]] = []
        while todo:
            k = rnd.randrange(1, 6)
            batch, todo = [answer(i) if i < n_old else gen_rec(i) for i in todo[:k]], todo[k:]
            await w.wait_ready()
            w.append(batch)
            live.extend(batch)
            for _ in range(rnd.randrange(0, 3)):
                await asyncio.sleep(0)
            if rnd.random() < 0.1:
                await asyncio.sleep(0.002)  # let the writer thread compact
        w.close()
        await runner
        await asyncio.wait_for(consumer, 60)
    skip = set(skip_ids)
    backlog = [key(gen_rec(i)) for i in range(n_old) if i not in skip and i in retry]
    expected = backlog + [key(r) for r in live if r["row_id"] not in skip]
    assert sorted(got) == sorted(expected)
    assert len(got) == len(set(got))
    assert h.rows_backlog == len(backlog) and h.rows_live == len(expected) - len(backlog)
    assert h.peak_buffered <= batch_rows and h.waiting == 0


async def test_a_lagging_reader_holds_one_batch(tmp_path: Path) -> None:
    """Memory: whatever was written before the reader starts, it holds at most one batch of records."""
    run = tmp_path / "run"
    with open_run(run) as store:
        store.begin_session(config={}, started=1.0, retry_failed=False, rows_total=None)
        await drive(open_gen(store).writer(rows_per_segment=300, fsync_interval_s=0.001),
                    [[gen_rec(i) for i in range(j, j + 50)] for j in range(0, 1000, 50)])
    with open_run(run) as store:
        st: StageStore = open_gen(store)
        w = st.writer(rows_per_segment=300, fsync_interval_s=0.001)
        for j in range(1000, 2000, 50):
            w.append([answer(i) for i in range(j, j + 50)])
        compact_rotated(w)
        h = st.handoff(w, skip=DoneSet(), stage_done=st.done_ids(), batch_rows=16)
        w.close()
        n = 0
        async for b in h:
            assert len(b) <= 16
            n += len(b)
    assert n == 2000 and h.peak_buffered == 16
