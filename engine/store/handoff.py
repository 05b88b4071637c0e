"""The hand-off (L3): a stage's records read back from its sub-store, in order, for the next stage (the
generate stage's answers for the revise stage), with flat memory whatever the speed ratio of the two.

Two phases, one async iterator of batches (lists of plain dicts, at most ``batch_rows`` each):

1. **Backlog**: the rows in the stage's shards numbered below the writer's first segment (the shards that
   existed when the session began; recovery compacted every leftover segment, so that is all of them):
   every data row, then every current failure row (the supersession rules of :mod:`engine.store.readers`),
   read a Parquet batch at a time in a worker thread (Arrow decodes without the GIL). A row in ``skip``
   (the next stage's done set) is left out; so is a failure row whose row_id is not in ``stage_done`` (this
   stage's own done set: under ``--retry-failed`` it lacks the retryable failures, which the stage requests
   again; their new record arrives live).
2. **Live**: every record the writer journals in this session, in journal order, as soon as it is written
   (``os.write``, not waiting for the fsync or the compaction). The reader tails the segment files on the
   event loop: it opens a segment before reading it (an open file keeps a compacted, deleted segment
   readable), reads complete lines (:func:`engine.store.journal.line_payload`: the checksum rule of
   compaction, so both keep the same records), and a segment the writer rotated past that is already
   gone is read from its shards ``data/part-N`` + ``failures/part-N`` (committed before the segment is
   deleted). It waits on an :class:`asyncio.Event` the writer sets on every append and at close (never a
   sleep-poll), and ends when the writer is closed and everything it wrote was read.

Live lines are parsed on the event loop in steps of at most ``batch_rows`` lines (a step is a few ms at
most, then the loop runs others): handing each step to a thread costs more CPU than the parsing itself
(see ``tests/test_handoff.py::test_live_parsing_cpu``). Shard batches are decoded in a worker thread (one
hop per batch).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa

from engine.source import DoneSet
from engine.store import readers
from engine.store.fs import Storage
from engine.store.journal import line_payload, segment_path
from engine.store.shards import DATA, FAILURES, shard_name, shard_names, shard_number
from engine.store.writer import StoreWriter

__all__ = ["Handoff"]

Record = dict[str, Any]


class Handoff:
    """A stage's records for the next stage: ``async for batch in handoff`` (once)."""

    def __init__(self, storage: Storage, journal_dir: Path, writer: StoreWriter, *, skip: DoneSet,
                 stage_done: DoneSet, batch_rows: int = 256):
        if batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        self.storage = storage
        self.journal_dir = journal_dir
        self.writer = writer
        self.skip = skip
        self.stage_done = stage_done
        self.batch_rows = batch_rows
        #: rows yielded from the shards that existed when the session began
        self.rows_backlog = 0
        #: rows yielded that this session's writer journaled
        self.rows_live = 0
        #: the most records this reader held at once (a batch being filled): at most ``batch_rows``
        self.peak_buffered = 0
        self._below = writer.first_segment
        self._consumed = 0  # live records read (yielded or skipped)
        self._event = asyncio.Event()
        self._started = False

    @property
    def waiting(self) -> int:
        """Records journaled by the writer this session and not yet yielded (nor skipped)."""
        return max(0, self.writer.records_total - self._consumed)

    def __aiter__(self) -> AsyncIterator[list[Record]]:
        if self._started:
            raise RuntimeError("a Handoff is read once")
        self._started = True
        return self._batches()

    async def _batches(self) -> AsyncIterator[list[Record]]:
        unsubscribe = self.writer.subscribe(self._event.set)
        try:
            async for batch in self._in_thread(self._backlog()):
                self.rows_backlog += len(batch)
                yield batch
            async for batch in self._live():
                self.rows_live += len(batch)
                yield batch
        finally:
            unsubscribe()

    # ------------------------------------------------------------------ shards (worker thread)

    async def _in_thread(self, gen: Generator[list[Record], None, None]) -> AsyncIterator[list[Record]]:
        """A blocking generator's batches, each made in a worker thread (one thread hop per batch)."""
        try:
            while (batch := await asyncio.to_thread(next, gen, None)) is not None:
                yield batch
        finally:
            with contextlib.suppress(ValueError):  # cancelled while the thread still runs it: left to the GC
                gen.close()

    def _backlog(self) -> Generator[list[Record], None, None]:
        return self._rows(self._backlog_batches())

    def _backlog_batches(self) -> Iterator[pa.RecordBatch]:
        st, below, n = self.storage, self._below, self.batch_rows
        for name in shard_names(st, DATA):
            if shard_number(name) < below:
                for rb in readers.iter_batches(st, name, None, n):
                    yield rb.filter(pa.array(~self.skip.contains(rb.column("row_id"))))
        if not any(shard_number(name) < below for name in shard_names(st, FAILURES)):
            return  # (the supersession rules read every data row id: only when there are failures)
        for name, keep in readers.superseded(st, below=below):
            start = 0
            for rb in readers.iter_batches(st, name, None, n):
                ids = rb.column("row_id")
                mask = keep[start:start + len(rb)] & self.stage_done.contains(ids) & ~self.skip.contains(ids)
                start += len(rb)
                yield rb.filter(pa.array(mask))

    def _segment_shards(self, seg: int) -> Generator[list[Record], None, None]:
        """A compacted live segment's rows, from its shards (data rows, then failure rows)."""
        def batches() -> Iterator[pa.RecordBatch]:
            for kind in (DATA, FAILURES):
                name = shard_name(kind, seg)
                if not self.storage.exists(name):
                    continue
                for rb in readers.iter_batches(self.storage, name, None, self.batch_rows):
                    self._consumed += len(rb)
                    yield rb.filter(pa.array(~self.skip.contains(rb.column("row_id"))))
        return self._rows(batches())

    def _rows(self, batches: Iterator[pa.RecordBatch]) -> Generator[list[Record], None, None]:
        """Filtered record batches → lists of ``batch_rows`` dicts (the last one shorter); never more
        than one list of dicts at a time (the rest of a record batch waits as Arrow data)."""
        buf: list[Record] = []
        for rb in batches:
            while rb.num_rows:
                take = self.batch_rows - len(buf)
                buf.extend(rb.slice(0, take).to_pylist())
                rb = rb.slice(take)
                self._note(len(buf))
                if len(buf) >= self.batch_rows:
                    yield buf
                    buf = []
        if buf:
            yield buf

    def _note(self, n: int) -> None:
        if n > self.peak_buffered:
            self.peak_buffered = n

    # ------------------------------------------------------------------ live (event loop)

    async def _live(self) -> AsyncIterator[list[Record]]:
        seg = self.writer.first_segment
        fh: IO[bytes] | None = None
        partial = b""  # the start of a line whose end is not written yet
        buf: list[Record] = []
        try:
            while True:
                w = self.writer
                self._event.clear()  # before looking: an append from now on wakes the wait below
                finished = seg < w.segment or w.closed  # nothing more is appended to segment ``seg``
                if fh is None:
                    try:
                        fh = open(segment_path(self.journal_dir, seg), "rb")  # noqa: SIM115 (closed below)
                    except FileNotFoundError:
                        if seg < w.segment:  # rotated past, compacted and deleted: its shards hold it
                            async for batch in self._in_thread(self._segment_shards(seg)):
                                yield batch
                            seg += 1
                        elif w.closed:
                            return
                        else:  # not created yet
                            await self._event.wait()
                        continue
                eof, partial = self._read_step(fh, partial, buf)
                if len(buf) >= self.batch_rows or (eof and buf):
                    out, buf = buf, []
                    yield out
                    continue
                if not eof:
                    await asyncio.sleep(0)  # a step of skipped lines: let the loop run others
                    continue
                if finished:  # read to its end: a partial line left is a torn tail (dropped, as compaction does)
                    fh.close()
                    fh, partial = None, b""
                    seg += 1
                    if seg >= w.segment and w.closed:
                        return
                    continue
                await self._event.wait()
        finally:
            if fh is not None:
                fh.close()

    def _read_step(self, fh: IO[bytes], partial: bytes, buf: list[Record]) -> tuple[bool, bytes]:
        """Read up to ``batch_rows`` complete lines into ``buf`` (skipped rows left out; stops when
        ``buf`` is full). Returns (end of file reached, the partial line left over)."""
        skip = self.skip
        for _ in range(self.batch_rows):
            if len(buf) >= self.batch_rows:
                return False, partial
            line = fh.readline()
            if partial:
                line, partial = partial + line, b""
            if not line:
                return True, b""
            if not line.endswith(b"\n"):
                return True, line  # written in part so far (or a torn tail)
            payload = line_payload(line)
            if payload is None:
                continue  # a line with a bad checksum: compaction drops it too
            try:
                rec = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            self._consumed += 1
            if rec.get("row_id") in skip:
                continue
            buf.append(rec)
            self._note(len(buf))
        return False, partial

