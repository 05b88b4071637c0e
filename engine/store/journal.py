"""The journal: every finished row is appended here before it counts as done (L3).

Layout: ``RUN/journal/seg-NNNNN.log``, one record per line::

    <crc32 of payload, 8 hex digits> <orjson payload>\\n

Finished rows are handed to the OS as soon as they are recorded (one ``os.write`` per batch of a few
rows, before their request slots are freed), so a ``kill -9`` loses nothing that was recorded; one
committer thread ``fsync``s in group commits, at most one per ``fsync_interval`` seconds (power loss
loses at most that window). It sleeps until something is written: an idle journal costs nothing, and
the event loop only flags a write (no executor job, timer or wake-up of its own per commit). A segment
holds ``rows_per_shard`` records; a full segment is handed to the shard writer
(:mod:`engine.store.shards`), which turns it into Parquet shards and deletes it only after they are
committed. A torn tail
(half a record, or a record whose checksum does not match) is detected on replay and dropped, never
parsed into a bad row.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from engine.core.errors import StorageError
from engine.store.fs import fsync, storage_error

__all__ = ["Journal", "JournalStats", "count_records", "delete_segment", "encode_record", "iter_segment_payloads",
           "line_payload", "list_segments", "read_segment", "segment_number", "segment_path"]

SEGMENT_GLOB = "seg-*.log"
JOURNAL = "journal"
_READ_BUFFER = 1 << 20  # segments are read line by line; big reads make that cheaper


def segment_path(journal_dir: Path, seg_no: int) -> Path:
    return journal_dir / f"seg-{seg_no:05d}.log"


def segment_number(path: Path) -> int:
    return int(path.stem.split("-")[1])


def list_segments(journal_dir: Path) -> list[Path]:
    return sorted(journal_dir.glob(SEGMENT_GLOB), key=segment_number) if journal_dir.exists() else []


def encode_record(rec: dict[str, Any]) -> bytes:
    payload = orjson.dumps(rec, option=orjson.OPT_NON_STR_KEYS)
    return b"%08x " % zlib.crc32(payload) + payload + b"\n"


def read_segment(path: Path) -> tuple[list[dict[str, Any]], int]:
    """All intact records of a segment, and how many torn/corrupt lines were dropped."""
    records: list[dict[str, Any]] = []
    dropped = 0
    for payload in _iter_lines(path):
        if payload is not None:
            try:
                records.append(orjson.loads(payload))
                continue
            except orjson.JSONDecodeError:
                pass
        dropped += 1
    return records, dropped


def iter_segment_payloads(path: Path, chunk: int) -> Iterator[list[bytes]]:
    """The JSON payloads of a segment's intact lines (framing and checksum checked, JSON not parsed),
    ``chunk`` at a time, in file order."""
    buf: list[bytes] = []
    for payload in _iter_lines(path):
        if payload is None:
            continue
        buf.append(payload)
        if len(buf) >= chunk:
            yield buf
            buf = []
    if buf:
        yield buf


def count_records(path: Path) -> int:
    """How many intact records a segment holds (what replaying it would keep, JSON not parsed)."""
    return sum(1 for payload in _iter_lines(path) if payload is not None)


def delete_segment(segment: Path) -> None:
    """Remove a segment once its rows are committed elsewhere (durably: the folder is fsynced)."""
    segment.unlink(missing_ok=True)
    fsync(segment.parent)


def _iter_lines(path: Path) -> Iterator[bytes | None]:
    """THE torn-tail rule. Each line's payload, or None for a torn or garbled line (no newline, bad
    framing) or a checksum mismatch; a segment's records are exactly its lines that are not None. Cheap:
    the JSON itself is not parsed (a line with a good checksum holds what ``encode_record`` wrote)."""
    with path.open("rb", buffering=_READ_BUFFER) as fh:
        for line in fh:
            yield line_payload(line)


def line_payload(line: bytes) -> bytes | None:
    """One journal line's payload (``line`` ends with its newline), or None when it is torn or garbled
    (no newline, bad framing) or its checksum does not match: THE rule of :func:`_iter_lines`, also used
    by readers that tail a segment while it is written (:mod:`engine.store.handoff`)."""
    if not line.endswith(b"\n") or len(line) < 11 or line[8:9] != b" ":
        return None  # torn tail or garbage
    payload = line[9:-1]
    try:
        crc = int(line[:8], 16)
    except ValueError:
        return None
    return payload if zlib.crc32(payload) == crc else None


class Journal:
    """Append-only, segment-rotating journal with group-commit fsync. Used from the event loop only."""

    def __init__(
        self,
        journal_dir: Path,
        *,
        first_segment: int,
        rows_per_segment: int,
        fsync_interval_s: float = 0.05,
        on_full: Callable[[Path, int], None] | None = None,
        sync_fd: Callable[[int], None] = os.fsync,
    ):
        self.dir = journal_dir
        self.rows_per_segment = rows_per_segment
        self.fsync_interval_s = fsync_interval_s
        self.on_full = on_full
        self.seg_no = first_segment
        self.count = 0
        self.records_total = 0
        self.bytes_total = 0
        self._fd: int | None = None
        self._sync_fd = sync_fd  # os.fsync (a fake in tests)
        self._dirty = False  # written since the committer last began an fsync (set here, cleared there)
        self._wake = threading.Event()  # set on the first write after a commit began, or to stop
        self._stop = threading.Event()
        self._closing = False
        self.error: StorageError | None = None

    def open(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(segment_path(self.dir, self.seg_no), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            raise storage_error(e, f"the journal in {self.dir}") from None
        self.count = 0

    def append_many(self, recs: list[dict[str, Any]]) -> None:
        """Write records to the OS now, one ``os.write`` per segment they fall in (survives kill -9);
        fsync follows within the interval."""
        if self.error is not None:
            raise self.error
        while recs:
            if self._fd is None:
                self.open()
            room = self.rows_per_segment - self.count
            head, recs = recs[:room], recs[room:]
            data = b"".join([encode_record(r) for r in head])
            self._write(data)
            self.count += len(head)
            self.records_total += len(head)
            self.bytes_total += len(data)
            if self.count >= self.rows_per_segment:
                self.rotate()

    def _write(self, data: bytes) -> None:
        try:
            n = os.write(self._fd, data)  # type: ignore[arg-type]
            if n != len(data):  # short write: only on a full disk; the torn tail is dropped on replay
                raise OSError(errno.ENOSPC, "short write")
        except OSError as e:
            self.error = storage_error(e, f"the journal in {self.dir}")
            raise self.error from None
        if not self._dirty:  # the first write since the last commit began: the committer wakes
            self._dirty = True
            self._wake.set()

    def rotate(self) -> None:
        """Close the current segment (fsynced) and hand it to ``on_full``; open the next one lazily."""
        fd, path, seg = self._fd, segment_path(self.dir, self.seg_no), self.seg_no
        if fd is None:
            return
        try:
            os.fsync(fd)
        except OSError as e:
            self.error = storage_error(e, f"the journal in {self.dir}")
            raise self.error from None
        finally:
            os.close(fd)
        self._fd = None
        self._dirty = False
        self.seg_no += 1
        self.count = 0
        if self.on_full is not None:
            self.on_full(path, seg)

    async def commit_loop(self) -> None:
        """Group commits until :meth:`close` (or until cancelled): one committer thread fsyncs what was
        written, at most once per interval, and sleeps while nothing is."""
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        thread = threading.Thread(target=self._commit_thread, args=(loop, ended), name="clair-fsync", daemon=True)
        thread.start()
        try:
            await ended
        finally:
            self._stop_committer()

    def _commit_thread(self, loop: asyncio.AbstractEventLoop, ended: asyncio.Future[None]) -> None:
        wake, stop, interval = self._wake, self._stop, self.fsync_interval_s
        try:
            while True:
                wake.wait()
                if self._closing:
                    return
                wake.clear()
                self._dirty = False  # a write from now on wakes the next commit; this one covers the earlier
                fd = self._fd
                if fd is not None:
                    try:
                        self._sync_fd(fd)
                    except OSError as e:
                        # EBADF: rotated meanwhile (rotate() fsynced it); EINVAL: the closed number was
                        # reused by a socket meanwhile. Neither is a journal failure
                        if e.errno not in (errno.EBADF, errno.EINVAL):
                            self.error = storage_error(e, f"the journal in {self.dir}")
                if stop.wait(interval):  # a group commit: what is written meanwhile waits for the next one
                    return
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for it any more
                loop.call_soon_threadsafe(_resolve, ended)

    def _stop_committer(self) -> None:
        self._closing = True
        self._stop.set()
        self._wake.set()

    def close(self) -> None:
        """fsync and close; the open segment is handed on like a full one when it holds records."""
        self._stop_committer()
        if self._fd is None:
            return
        if self.count:
            self.rotate()
        else:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            with contextlib.suppress(OSError):
                segment_path(self.dir, self.seg_no).unlink()
            self._fd = None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(frozen=True, slots=True)
class JournalStats:
    segments: int
    rows: int  # intact records (what a resume keeps)
    bytes: int
