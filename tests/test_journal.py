"""Journal segments on replay: framing and checksums, torn tails, chunked payloads; group commits."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.core.errors import StorageError
from engine.store.journal import Journal, encode_record, iter_segment_payloads, read_segment, segment_path


def _line(payload: bytes) -> bytes:
    return b"%08x " % zlib.crc32(payload) + payload + b"\n"


def _segment(path: Path) -> None:
    bad_crc = bytearray(encode_record({"row_id": 90}))
    bad_crc[12] ^= 0x01
    path.write_bytes(
        encode_record({"row_id": 0, "task": "é"})
        + bytes(bad_crc)
        + b"\n"  # too short to be a record
        + b"zzzzzzzz {}\n"  # checksum not hex
        + encode_record({"row_id": 1})
        + _line(b'{"row_id": 91, "task": "cut')  # good checksum, bad JSON
        + encode_record({"row_id": 2})
        + encode_record({"row_id": 92})[:-1]  # torn tail: no newline
    )


def test_read_segment_drops_torn_and_corrupt_lines(tmp_path: Path) -> None:
    seg = tmp_path / "seg-00000.log"
    _segment(seg)
    records, dropped = read_segment(seg)
    assert records == [{"row_id": 0, "task": "é"}, {"row_id": 1}, {"row_id": 2}]
    assert dropped == 5


def test_payload_chunks_check_framing_and_checksum_only(tmp_path: Path) -> None:
    seg = tmp_path / "seg-00000.log"
    _segment(seg)
    chunks = list(iter_segment_payloads(seg, 2))
    assert chunks == [
        ['{"row_id":0,"task":"é"}'.encode(), b'{"row_id":1}'],
        [b'{"row_id": 91, "task": "cut', b'{"row_id":2}'],  # JSON is left to the caller
    ]
    assert list(iter_segment_payloads(seg, 10)) == [[p for c in chunks for p in c]]


# ------------------------------------------------------------------------------------ group commits


class FakeSync:
    """Stands for ``os.fsync``: records the journal's size at each call; can hold a call or fail."""

    def __init__(self, path: Path, error: int | None = None) -> None:
        self.path = path
        self.sizes: list[int] = []
        self.error = error
        self.hold: threading.Event | None = None
        self.holding = threading.Event()

    def __call__(self, fd: int) -> None:
        self.sizes.append(os.fstat(fd).st_size)
        if self.hold is not None:
            self.holding.set()
            self.hold.wait(10)
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("never happened")


def _journal(tmp_path: Path, sync: FakeSync) -> Journal:
    return Journal(tmp_path, first_segment=0, rows_per_segment=100, fsync_interval_s=0.001, sync_fd=sync)


async def test_the_committer_fsyncs_what_was_written_and_sleeps_while_nothing_is(tmp_path: Path) -> None:
    sync = FakeSync(tmp_path)
    j = _journal(tmp_path, sync)
    committer = asyncio.create_task(j.commit_loop())
    await asyncio.sleep(0.02)
    assert sync.sizes == []  # nothing written: no commit
    j.append_many([{"row_id": 0}])
    size = segment_path(tmp_path, 0).stat().st_size
    await _until(lambda: len(sync.sizes) == 1)
    assert sync.sizes == [size]
    await asyncio.sleep(0.02)  # twenty intervals without a write: no commit
    assert sync.sizes == [size]
    j.append_many([{"row_id": 1}, {"row_id": 2}])
    await _until(lambda: len(sync.sizes) == 2)
    assert sync.sizes[1] == segment_path(tmp_path, 0).stat().st_size > size
    j.close()  # the committer ends with the journal
    await asyncio.wait_for(committer, 10)
    assert j.error is None and [r["row_id"] for r in read_segment(segment_path(tmp_path, 0))[0]] == [0, 1, 2]


async def test_a_write_during_a_commit_is_in_the_next_one(tmp_path: Path) -> None:
    sync = FakeSync(tmp_path)
    sync.hold = threading.Event()
    j = _journal(tmp_path, sync)
    committer = asyncio.create_task(j.commit_loop())
    j.append_many([{"row_id": 0}])
    await _until(sync.holding.is_set)  # the first commit is under way ...
    j.append_many([{"row_id": 1}])  # ... when another row is written
    sync.hold.set()
    await _until(lambda: len(sync.sizes) == 2)
    assert sync.sizes[1] == segment_path(tmp_path, 0).stat().st_size > sync.sizes[0]
    committer.cancel()  # cancelled (the writer's way): the thread stops too
    with contextlib.suppress(asyncio.CancelledError):
        await committer
    j.close()


async def test_a_failed_commit_fails_the_next_write(tmp_path: Path) -> None:
    sync = FakeSync(tmp_path, error=errno.EIO)
    j = _journal(tmp_path, sync)
    committer = asyncio.create_task(j.commit_loop())
    j.append_many([{"row_id": 0}])
    await _until(lambda: j.error is not None)
    with pytest.raises(StorageError, match="cannot write the journal"):
        j.append_many([{"row_id": 1}])
    j._stop_committer()
    await asyncio.wait_for(committer, 10)


async def test_a_segment_closed_under_a_commit_is_no_error(tmp_path: Path) -> None:
    sync = FakeSync(tmp_path, error=errno.EBADF)  # what fsync says when rotate() closed the file meanwhile
    j = _journal(tmp_path, sync)
    committer = asyncio.create_task(j.commit_loop())
    j.append_many([{"row_id": 0}])
    await _until(lambda: len(sync.sizes) == 1)
    await asyncio.sleep(0.01)
    assert j.error is None
    j.append_many([{"row_id": 1}])
    j.close()
    await asyncio.wait_for(committer, 10)
