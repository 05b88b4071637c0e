"""The event-loop side of a run's (or a stage's) output (L3): :class:`StoreWriter` journals finished rows
and compacts full segments into shards in one lower-priority writer thread, with backpressure; readers
that follow what it writes (:mod:`engine.store.handoff`) subscribe to its appends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from engine.core.errors import StorageError
from engine.core.memory import lower_thread_priority, release_free_memory
from engine.store.journal import Journal
from engine.store.shards import ShardWriter

log = logging.getLogger("clair")

__all__ = ["MAX_PENDING_SEGMENTS", "StoreWriter"]

#: full journal segments allowed to wait for the shard writer before new rows wait too
MAX_PENDING_SEGMENTS = 2


#: held while a segment becomes shards: the writers of a run's stages compact one after the other (each
#: compaction's Arrow buffers, ~20-40 MB for a 10,000-row segment, are freed before the next one starts)
_COMPACTING = threading.Lock()


class StoreWriter:
    """The event-loop side of a run's output: :meth:`append` journals finished rows; :meth:`run` fsyncs in
    group commits and turns full segments into shards in one writer thread at lower CPU priority.

    Backpressure: ``ready`` is set while fewer than :data:`MAX_PENDING_SEGMENTS` full segments wait for
    compaction; producers wait for it (:meth:`wait_ready`) so a CPU-bound run cannot pile segments up."""

    def __init__(self, journal_dir: Path, shards: ShardWriter, *, first_segment: int, rows_per_segment: int,
                 fsync_interval_s: float):
        self.journal = Journal(journal_dir, first_segment=first_segment, rows_per_segment=rows_per_segment,
                               fsync_interval_s=fsync_interval_s, on_full=self._segment_full)
        self.shards = shards
        self.ready = asyncio.Event()
        self.ready.set()
        self.waits = 0
        self.segments_pending = 0
        self._queue: asyncio.Queue[Path | None] = asyncio.Queue()  # bounded in effect by ``ready``
        self._closed = False
        self._first_segment = first_segment
        self._listeners: list[Callable[[], None]] = []

    # stats for the report
    @property
    def records_total(self) -> int:
        return self.journal.records_total

    @property
    def bytes_total(self) -> int:
        return self.journal.bytes_total

    @property
    def shards_written(self) -> int:
        return self.shards.shards_written

    # where its rows are, for a reader that follows them (engine.store.handoff)
    @property
    def first_segment(self) -> int:
        """The number of this writer's first journal segment (shards numbered below it are older)."""
        return self._first_segment

    @property
    def segment(self) -> int:
        """The number of the segment being written (or, after a rotation, the next one): every segment
        numbered below it is complete (closed, then compacted and deleted)."""
        return self.journal.seg_no

    @property
    def closed(self) -> bool:
        """:meth:`close` was called: nothing more is appended."""
        return self._closed

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` (on the event loop, cheap) after every :meth:`append` and at :meth:`close`.
        Returns the function that unsubscribes it."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def append(self, recs: list[dict[str, Any]]) -> None:
        """Hand finished rows to the OS now (one ``os.write`` per batch; survives kill -9). StorageError
        when the journal cannot be written."""
        try:
            self.journal.append_many(recs)
        finally:
            for cb in self._listeners:
                cb()

    async def wait_ready(self) -> None:
        """Wait while the shard writer is behind (counted in ``waits``)."""
        if self.ready.is_set():
            return
        if not self.waits:
            log.info("the shard writer is behind; new requests wait until it catches up")
        self.waits += 1
        await self.ready.wait()

    async def run(self) -> None:
        """Group commits and compaction until :meth:`close` and the last segment is a shard. A failed
        compaction (or fsync) raises StorageError, and ``ready`` is set so that nobody waits forever."""
        loop = asyncio.get_running_loop()
        # the fsyncs run in the journal's own committer thread, not behind a compaction in the writer
        # thread: a 10 000-row compaction takes about a second, the group-commit window is 50 ms
        committer = asyncio.create_task(self.journal.commit_loop(), name="journal-commit")
        try:
            # one writer thread owns the shard files; it runs at a lower CPU priority than the event loop
            # (compaction only has to keep up on average; the loop's latency is the throughput)
            with ThreadPoolExecutor(1, thread_name_prefix="clair-writer", initializer=lower_thread_priority) as pool:
                while (segment := await self._queue.get()) is not None:
                    try:
                        await loop.run_in_executor(pool, self._compact, segment)
                    except StorageError:
                        raise
                    except Exception as e:  # not an OSError (those are StorageErrors): a bug or a bad segment
                        raise StorageError(
                            f"cannot turn journal segment {segment} into shards ({e}); "
                            "run the same command again to resume"
                        ) from e
                    self._segment_written()
            if self.journal.error is not None:
                raise self.journal.error
        finally:
            self.ready.set()  # nothing may wait for a writer that has stopped
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer

    def close(self) -> None:
        """fsync and close the journal; its open segment goes to compaction like a full one (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.journal.close()
        finally:
            self._queue.put_nowait(None)
            for cb in list(self._listeners):
                cb()

    def _compact(self, segment: Path) -> None:
        with _COMPACTING:  # one compaction at a time in the process: two stages' buffers never add up
            self.shards.compact(segment)
            release_free_memory()  # the compaction's buffers, back to the OS (flat memory on long runs)

    def _segment_full(self, path: Path, seg: int) -> None:
        self.segments_pending += 1
        if self.segments_pending >= MAX_PENDING_SEGMENTS:
            self.ready.clear()
        self._queue.put_nowait(path)

    def _segment_written(self) -> None:
        self.segments_pending -= 1
        if self.segments_pending < MAX_PENDING_SEGMENTS:
            self.ready.set()
