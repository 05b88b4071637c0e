"""The run store: its facade, recovery from every crash point, the Storage seam, an old-format run."""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import ROOT, assert_exactly_once, clair

from engine.core.errors import RunStateError, StorageError
from engine.records import data_schema, failure_schema
from engine.store import DATA, FAILURES, LocalStorage, RunStore, RunView, Storage, StoreWriter, load_results
from engine.store import fs as store_fs
from engine.store import shards as store_shards
from engine.store.fs import TMP, storage_error
from engine.store.journal import encode_record
from engine.store.manifest import FORMAT_VERSION, MANIFEST
from engine.store.rewrite import INTENT
from engine.tools.mockserver_proc import MockProcess

SCHEMAS = {"data_schema": data_schema(pa.int64(), []), "failure_schema": failure_schema(pa.int64(), [])}
FP = {"input": {"files": "abc"}, "prompt": {"variant": "distilabel"}, "models": ["m"],
      "generation": {"temperature": 0.7}}


def open_store(run: Path, fp: dict[str, Any] = FP, **kw: Any) -> RunStore:
    return RunStore.open(run, fingerprint=fp, parser_version="1", markers={}, **SCHEMAS, **kw)


def data_rec(i: int) -> dict[str, Any]:
    return {"row_id": i, "task": "t", "student_solution": "s", "revision": "r", "rational": "x", "status": "ok"}


def fail_rec(i: int, kind: str = "timeout") -> dict[str, Any]:
    return {"row_id": i, "task": "t", "student_solution": "s", "error_kind": kind, "error_message": "m"}


def rec(i: int) -> dict[str, Any]:
    """Row i: every third one a failure."""
    return fail_rec(i, "no_marker") if i % 3 == 1 else data_rec(i)


def write_segment(run: Path, n: int, recs: list[dict[str, Any]], tail: bytes = b"") -> Path:
    seg = run / "journal" / f"seg-{n:05d}.log"
    seg.parent.mkdir(parents=True, exist_ok=True)
    seg.write_bytes(b"".join(encode_record(r) for r in recs) + tail)
    return seg


def write_shard(run: Path, kind: str, n: int, recs: list[dict[str, Any]]) -> None:
    schema = SCHEMAS["data_schema" if kind == DATA else "failure_schema"]
    (run / kind).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(recs, schema=schema), run / kind / f"part-{n:05d}.parquet")


def shard_ids(run: Path, kind: str, n: int) -> list[int] | None:
    p = run / kind / f"part-{n:05d}.parquet"
    return pq.read_table(p).column("row_id").to_pylist() if p.exists() else None


def staged(run: Path) -> list[Path]:
    return [p for p in run.rglob("*" + TMP)]


def new_run(run: Path, rows: int = 10) -> None:
    """A run directory holding rows 0..rows-1 in journal segment 0 (not yet compacted)."""
    with open_store(run) as store:
        store.begin_session(config={}, started=1.0, retry_failed=False, rows_total=rows)
    write_segment(run, 0, [rec(i) for i in range(rows)])


# ---------------------------------------------------------------------------------------------- facade


def test_open_session_and_close(tmp_path: Path) -> None:
    run = tmp_path / "run"
    store = open_store(run)
    assert store.dir == run and store.manifest["format_version"] == FORMAT_VERSION
    assert store.manifest["runs"] == [] and not (run / MANIFEST).exists()  # written by begin_session
    store.begin_session(config={"a": 1}, started=5.0, retry_failed=True, rows_total=3)
    m = RunView.open(run).manifest
    assert m["config"] == {"a": 1} and m["runs"] == [{"started": 5.0, "retry_failed": True}] and m["rows_total"] == 3
    assert RunView.open(run).active() is not None
    counts = {"data": 2, "failed": 1, "failure_kinds": {"timeout": 1}}
    store.end_session(status="completed", report={"x": 1}, rows_total=3, counts=counts, ended=6.0)
    m = RunView.open(run).manifest
    assert m["runs"][-1] == {"started": 5.0, "retry_failed": True, "ended": 6.0, "status": "completed",
                             "report": {"x": 1}}
    assert m["counts"] == counts and orjson.loads((run / "report.json").read_bytes()) == {"x": 1}
    store.close()
    store.close()  # idempotent
    assert RunView.open(run).active() is None
    with open_store(run) as again:  # the lock is free again
        assert again.manifest["runs"] == [] or again.manifest["runs"][0]["started"] == 5.0


def test_changed_fingerprint_is_refused_naming_the_change(tmp_path: Path) -> None:
    run = tmp_path / "run"
    new_run(run)
    other = {**FP, "models": ["other"]}
    with pytest.raises(RunStateError) as e:
        open_store(run, other)
    assert "the model name (m → other)" in str(e.value) and "--new-run" in str(e.value)
    assert RunView.open(run).active() is None  # refused before locking


def test_manifest_without_rows_is_ignored(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with open_store(run) as store:
        store.begin_session(config={}, started=1.0, retry_failed=False, rows_total=None)
    other = {**FP, "models": ["other"]}
    with open_store(run, other) as store:  # nothing answered yet: start afresh with the new settings
        assert store.manifest["fingerprint"] == other and store.manifest["runs"] == []


def test_new_run_archives_and_starts_fresh(tmp_path: Path) -> None:
    run = tmp_path / "run"
    new_run(run)
    other = {**FP, "models": ["other"]}
    with open_store(run, other, new_run=True) as store:
        assert store.manifest["fingerprint"] == other
        assert store.counts() == {"data": 0, "failed": 0, "failure_kinds": {}}
    archived = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(archived) == 1 and (archived[0] / MANIFEST).exists()
    # the journal the old run left was compacted into its shards before the move (answer reuse reads shards)
    assert not list((archived[0] / "journal").glob("seg-*.log"))
    done = RunView.open(archived[0]).counts()
    assert done["data"] + done["failed"] > 0


def test_lock_refused_while_active_and_archive_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    new_run(run)
    with open_store(run):
        with pytest.raises(RunStateError, match="another clair run is active") as e:
            open_store(run)
        assert str(os.getpid()) in str(e.value)
        with pytest.raises(RunStateError, match="another clair run is active"):
            open_store(run, {**FP, "models": ["other"]}, new_run=True)
        assert (run / MANIFEST).exists() and not [p for p in tmp_path.iterdir() if ".old-" in p.name]
        assert RunView.open(run).active()["pid"] == os.getpid()  # type: ignore[index]


def test_stale_lock_is_taken_over(tmp_path: Path) -> None:
    run = tmp_path / "run"
    new_run(run)
    (run / "run.lock").write_bytes(orjson.dumps({"pid": 999999, "host": "x"}))  # a dead holder, no flock
    assert RunView.open(run).active() is None
    with open_store(run) as store:
        assert store.counts()["data"] + store.counts()["failed"] == 10


def test_unusable_run_directory_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="cannot create the run directory .*fix output.dir"):
        open_store(tmp_path / "file" / "run")


def test_newer_format_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    new_run(run)
    m = orjson.loads((run / MANIFEST).read_bytes())
    (run / MANIFEST).write_bytes(orjson.dumps({**m, "format_version": FORMAT_VERSION + 1}))
    for opener in (lambda: RunView.open(run), lambda: open_store(run)):
        with pytest.raises(RunStateError) as e:
            opener()
        assert "made by a newer clair-engine" in str(e.value) and "upgrade" in str(e.value)
        assert len(str(e.value).splitlines()) == 1
    assert clair("status", str(run)).returncode == 2


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(RunStateError, match="is not a clair run directory"):
        RunView.open(tmp_path)


def test_done_ids_with_and_without_retry_failed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with open_store(run) as store:
        store.begin_session(config={}, started=1.0, retry_failed=False, rows_total=None)
    write_shard(run, DATA, 0, [data_rec(i) for i in range(3)])
    write_shard(run, FAILURES, 0, [fail_rec(3, "timeout"), fail_rec(4, "no_marker"), fail_rec(5, "server_error")])
    with open_store(run) as store:
        done = store.done_ids()
        assert sorted(i for i in range(8) if i in done) == [0, 1, 2, 3, 4, 5]
        retry = store.done_ids(retry_failed=True)  # retryable failures are asked again
        assert sorted(i for i in range(8) if i in retry) == [0, 1, 2, 4]


def test_supersession_rules_and_supersede_failures(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with open_store(run) as store:
        store.begin_session(config={}, started=1.0, retry_failed=False, rows_total=None)
    write_shard(run, DATA, 0, [data_rec(0)])
    write_shard(run, FAILURES, 0, [fail_rec(1, "timeout"), fail_rec(2, "timeout"), fail_rec(3, "timeout")])
    write_shard(run, DATA, 1, [data_rec(1)])  # row 1 succeeded later: its failure is superseded
    write_shard(run, FAILURES, 1, [fail_rec(2, "no_marker")])  # row 2 failed again: the newest failure wins
    view = RunView.open(run)
    f = view.current_failures()
    assert f is not None
    assert dict(zip(f.column("row_id").to_pylist(), f.column("error_kind").to_pylist(), strict=True)) == {
        2: "no_marker", 3: "timeout"}
    assert view.counts() == {"data": 2, "failed": 2, "failure_kinds": {"no_marker": 1, "timeout": 1}}
    with open_store(run) as store:
        assert store.supersede_failures() == 2
        assert store.supersede_failures() == 0  # idempotent
    # plain readers now agree with the rules
    plain = pq.read_table(run / FAILURES).column("row_id").to_pylist()
    assert sorted(plain) == [2, 3] and view.counts()["failure_kinds"] == {"no_marker": 1, "timeout": 1}
    assert_exactly_once(run, 4)


def test_load_results_failures_of_a_run_without_failures(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with open_store(run) as store:
        store.begin_session(config={}, started=1.0, retry_failed=False, rows_total=None)
    write_shard(run, DATA, 0, [data_rec(i) for i in range(3)])
    ds = load_results(run, failures=True)
    assert ds.num_rows == 0 and ds.column_names == SCHEMAS["failure_schema"].names
    assert load_results(run).num_rows == 3


# ---------------------------------------------------------------------------------------------- the writer


async def _drive(w: StoreWriter, batches: list[list[dict[str, Any]]]) -> None:
    runner = asyncio.create_task(w.run())
    for b in batches:
        await w.wait_ready()
        w.append(b)
        await asyncio.sleep(0)
    w.close()
    await runner


async def test_writer_journals_and_compacts_every_row(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with open_store(run) as store:
        store.begin_session(config={}, started=1.0, retry_failed=False, rows_total=25)
        w = store.writer(rows_per_segment=4, fsync_interval_s=0.001)
        await _drive(w, [[rec(i) for i in range(j, min(j + 3, 25))] for j in range(0, 25, 3)])
        assert w.records_total == 25 and w.bytes_total > 0
        assert not list((run / "journal").glob("seg-*"))
        assert store.counts()["data"] + store.counts()["failed"] == 25
    assert_exactly_once(run, 25)
    with open_store(run) as store:  # a later session continues after the last shard
        w = store.writer(rows_per_segment=4, fsync_interval_s=0.001)
        await _drive(w, [[rec(25)]])
    assert shard_ids(run, FAILURES, 7) == [25]  # (row 25 is a failure row)
    assert_exactly_once(run, 26)


class _GatedShards(store_shards.ShardWriter):
    """A shard writer whose compactions wait for a gate (or fail)."""

    def __init__(self, *a: Any, fail: bool = False) -> None:
        super().__init__(*a)
        self.gate = threading.Event()
        self.fail = fail

    def compact(self, segment: Path) -> dict[str, int]:
        if self.fail:
            raise OSError(28, "No space left on device")
        self.gate.wait(10)
        return super().compact(segment)


async def test_writer_backpressure(tmp_path: Path) -> None:
    shards = _GatedShards(LocalStorage(tmp_path), SCHEMAS["data_schema"], SCHEMAS["failure_schema"])
    w = StoreWriter(tmp_path / "journal", shards, first_segment=0, rows_per_segment=2, fsync_interval_s=0.001)
    runner = asyncio.create_task(w.run())
    w.append([rec(0), rec(1)])  # a full segment waits
    assert w.ready.is_set()
    w.append([rec(2), rec(3)])  # the second: producers must wait
    assert not w.ready.is_set()
    waiter = asyncio.create_task(w.wait_ready())
    await asyncio.sleep(0.01)
    assert not waiter.done() and w.waits == 1
    shards.gate.set()
    await asyncio.wait_for(waiter, 10)
    w.close()
    await runner
    assert w.ready.is_set() and w.segments_pending == 0
    assert shard_ids(tmp_path, DATA, 0) == [0] and shard_ids(tmp_path, DATA, 1) == [2, 3]


async def test_writer_compaction_failure_raises_and_releases_waiters(tmp_path: Path) -> None:
    shards = _GatedShards(LocalStorage(tmp_path), SCHEMAS["data_schema"], SCHEMAS["failure_schema"], fail=True)
    w = StoreWriter(tmp_path / "journal", shards, first_segment=0, rows_per_segment=1, fsync_interval_s=0.001)
    runner = asyncio.create_task(w.run())
    w.append([rec(0), rec(2), rec(3)])
    assert not w.ready.is_set()
    with pytest.raises(StorageError):
        await runner
    assert w.ready.is_set()  # nobody waits forever for a writer that stopped
    await asyncio.wait_for(w.wait_ready(), 1)


async def test_writer_journal_failure_is_a_storage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shards = _GatedShards(LocalStorage(tmp_path), SCHEMAS["data_schema"], SCHEMAS["failure_schema"])
    w = StoreWriter(tmp_path / "journal", shards, first_segment=0, rows_per_segment=10, fsync_interval_s=0.001)

    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("engine.store.journal.os.write", full)
    with pytest.raises(StorageError, match="disk is full"):
        w.append([rec(0)])


# ---------------------------------------------------------------------------------------------- crashes


class Crash(BaseException):
    """A kill -9 at this point: no cleanup code runs (not an Exception, so nothing catches it)."""


def _resolve(target: str) -> tuple[Any, str]:
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:-1]:
            obj = getattr(obj, p)
        return obj, parts[-1]
    raise AssertionError(target)


def crash_on(monkeypatch: pytest.MonkeyPatch, target: str, call: int = 1, *, after: bool = False,
             when: Callable[..., bool] = lambda *a, **kw: True) -> None:
    """Kill the process (raise Crash) at the ``call``-th matching call of ``target`` (e.g.
    ``"engine.store.fs.os.replace"``): before it does anything, or just ``after`` it."""
    owner, name = _resolve(target)
    real = getattr(owner, name)
    seen = [0]

    def fake(*a: Any, **kw: Any) -> Any:
        hit = when(*a, **kw)
        if hit:
            seen[0] += 1
        if hit and seen[0] == call and not after:
            raise Crash(target)
        out = real(*a, **kw)
        if hit and seen[0] == call:
            raise Crash(target)
        return out

    monkeypatch.setattr(owner, name, fake)


@pytest.mark.parametrize(
    ("point", "target", "call"),
    [
        ("after the temp files", "engine.store.fs.os.replace", 1),
        ("after the data rename, before the failures rename", "engine.store.fs.os.replace", 2),
        ("after both renames, before the segment delete", "engine.store.shards.delete_segment", 1),
        ("while the folder is fsynced after the data rename", "engine.store.fs.fsync", 2),
    ],
)
def test_compaction_killed_anywhere_is_repaired(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str,
                                                target: str, call: int) -> None:
    run = tmp_path / "run"
    new_run(run, 12)
    with monkeypatch.context() as m:
        crash_on(m, target, call)
        with pytest.raises(Crash):
            open_store(run)  # its recovery compacts segment 0, and is killed
    assert RunView.open(run).active() is None  # the lock was released
    assert (run / "journal" / "seg-00000.log").exists()
    with open_store(run) as store:
        assert store.recovered.segments_compacted == 1
    assert not staged(run) and not list((run / "journal").glob("seg-*"))
    assert_exactly_once(run, 12)


def test_compaction_killed_after_the_segment_unlink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The segment is gone but its folder was not fsynced yet: nothing to redo, the shards are there."""
    run = tmp_path / "run"
    new_run(run, 12)
    with monkeypatch.context() as m:
        crash_on(m, "engine.store.journal.fsync")
        with pytest.raises(Crash):
            open_store(run)
    assert not (run / "journal" / "seg-00000.log").exists()
    with open_store(run) as store:
        assert store.recovered.segments_compacted == 0
    assert_exactly_once(run, 12)


def test_torn_journal_tail(tmp_path: Path) -> None:
    run = tmp_path / "run"
    new_run(run, 9)
    torn = encode_record(data_rec(9))[:-5]
    write_segment(run, 0, [rec(i) for i in range(9)], tail=torn)
    bad = bytearray(encode_record(data_rec(10)))
    bad[15] ^= 1  # a checksum mismatch
    write_segment(run, 1, [data_rec(11)], tail=bytes(bad))
    assert RunView.open(run).journal_stats().rows == 10  # the intact records only
    with open_store(run) as store:
        assert store.recovered.segments_compacted == 2
    assert shard_ids(run, DATA, 1) == [11]
    data, _ = pq.read_table(run / DATA).column("row_id").to_pylist(), None
    assert 9 not in data and 10 not in data
    (run / DATA / "part-00001.parquet").unlink()  # to check rows 0..8 exactly once
    assert_exactly_once(run, 9)


def test_torn_manifest_temp_and_killed_manifest_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    new_run(run, 6)
    before = (run / MANIFEST).read_bytes()
    (run / (MANIFEST + TMP)).write_bytes(before[: len(before) // 2])  # a torn temp from a killed write
    with open_store(run) as store:
        assert not (run / (MANIFEST + TMP)).exists()
        with monkeypatch.context() as m:
            crash_on(m, "engine.store.fs.os.replace", 1)
            with pytest.raises(Crash):
                store.begin_session(config={}, started=2.0, retry_failed=False, rows_total=6)
    assert (run / MANIFEST).read_bytes() == before  # the old manifest, whole
    with open_store(run) as store:
        assert len(store.manifest["runs"]) == 1
    assert not staged(run)
    assert_exactly_once(run, 6)


def _reparse_run(run: Path) -> None:
    """A compacted run: pair 0 holds data 0-2 and failures 3-4, pair 1 data 5 and failure 6."""
    with open_store(run) as store:
        store.begin_session(config={}, started=1.0, retry_failed=False, rows_total=7)
    write_shard(run, DATA, 0, [data_rec(i) for i in range(3)])
    write_shard(run, FAILURES, 0, [fail_rec(3, "no_marker"), fail_rec(4, "no_marker")])
    write_shard(run, DATA, 1, [data_rec(5)])
    write_shard(run, FAILURES, 1, [fail_rec(6, "no_marker")])


def _rewrite(run: Path) -> None:
    """Pair 0: row 3 becomes a revision and row 0 a failure; pair 1: row 6 becomes a revision (no failures)."""
    d, f = SCHEMAS["data_schema"], SCHEMAS["failure_schema"]
    with RunStore.open_existing(run) as store:
        store.rewrite_pair(0, pa.Table.from_pylist([data_rec(1), data_rec(2), data_rec(3)], schema=d),
                           pa.Table.from_pylist([fail_rec(0, "no_marker"), fail_rec(4, "no_marker")], schema=f))
        store.rewrite_pair(1, pa.Table.from_pylist([data_rec(5), data_rec(6)], schema=d), None)


OLD = {(DATA, 0): [0, 1, 2], (FAILURES, 0): [3, 4], (DATA, 1): [5], (FAILURES, 1): [6]}
NEW = {(DATA, 0): [1, 2, 3], (FAILURES, 0): [0, 4], (DATA, 1): [5, 6], (FAILURES, 1): None}


def _is_intent(p: Any, *a: Any, **kw: Any) -> bool:
    return Path(p).name == INTENT


@pytest.mark.parametrize(
    ("point", "target", "call", "after", "pair1_done", "finished"),
    [
        # os.replace calls: pair 0: intent, data, failures; pair 1: intent, data (its failures are deleted)
        ("before pair 0's intent", "engine.store.fs.os.replace", 1, False, None, False),
        ("inside pair 0: intent committed, nothing renamed", "engine.store.fs.os.replace", 2, False, False, True),
        ("inside pair 0: data renamed, failures not", "engine.store.fs.os.replace", 3, False, False, True),
        ("after pair 0's renames, its intent not deleted", "pathlib.Path.unlink", 1, False, False, True),
        ("after pair 0's intent was deleted", "pathlib.Path.unlink", 1, True, False, False),
        ("inside pair 1: data renamed, failures not deleted", "engine.store.fs.os.replace", 5, True, True, True),
    ],
)
def test_reparse_killed_anywhere_is_finished_or_undone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str,
                                                        target: str, call: int, after: bool,
                                                        pair1_done: bool | None, finished: bool) -> None:
    run = tmp_path / "run"
    _reparse_run(run)
    with monkeypatch.context() as m:
        crash_on(m, target, call, after=after, when=_is_intent if "unlink" in target else lambda *a, **kw: True)
        with pytest.raises(Crash):
            _rewrite(run)
    assert RunView.open(run).active() is None
    with open_store(run) as store:  # a run's start-up recovery (or `clair reparse` again) finishes it
        assert store.recovered.rewrite_finished == finished
    assert not (run / INTENT).exists() and not staged(run)
    want = {**(OLD if pair1_done is None else NEW), **{k: v for k, v in (NEW if pair1_done else OLD).items()
                                                      if k[1] == 1}}
    for (kind, n), ids in want.items():
        assert shard_ids(run, kind, n) == ids, (kind, n)
    assert_exactly_once(run, 7)


def test_intent_of_older_code_is_finished(tmp_path: Path) -> None:
    """The intent format before this store: absolute [tmp, final] pairs, ``.none`` + ``.delete`` = delete."""
    run = tmp_path / "run"
    _reparse_run(run)
    d = run / DATA / "part-00001.parquet"
    f = run / FAILURES / "part-00001.parquet"
    pq.write_table(pa.Table.from_pylist([data_rec(5), data_rec(6)], schema=SCHEMAS["data_schema"]),
                   str(d) + ".tmp")
    Path(str(f) + ".delete").touch()
    (run / INTENT).write_bytes(orjson.dumps([[str(d) + ".tmp", str(d)], [str(f) + ".none", str(f)]]))
    with open_store(run) as store:
        assert store.recovered.rewrite_finished
    assert shard_ids(run, DATA, 1) == [5, 6] and shard_ids(run, FAILURES, 1) is None
    assert not Path(str(f) + ".delete").exists() and not (run / INTENT).exists()
    assert_exactly_once(run, 7)


def test_torn_intent_of_older_code_is_dropped(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _reparse_run(run)
    (run / DATA / "part-00000.parquet.tmp").write_bytes(b"half")
    (run / INTENT).write_bytes(b'[["/x/data/part-00000.parquet.tmp", "/x/da')
    with open_store(run):
        pass
    assert not (run / INTENT).exists() and not staged(run)
    assert shard_ids(run, DATA, 0) == OLD[(DATA, 0)]
    assert_exactly_once(run, 7)


# ---------------------------------------------------------------------------------------------- the seam


class MemoryStorage:
    """An object store in memory: no rename, a commit is one PUT of the whole object, staging is local.

    Records every call, so that a test can see what went through the seam."""

    def __init__(self, staging: Path):
        self.objects: dict[str, tuple[bytes, float]] = {}
        self.staging = staging
        self.where = "mem://run"
        self.calls: list[str] = []

    def exists(self, name: str) -> bool:
        self.calls.append("exists")
        return name in self.objects

    def list(self, folder: str) -> list[str]:
        self.calls.append("list")
        return sorted(n for n in self.objects if n.rsplit("/", 1)[0] == folder and "/" in n)

    def read_bytes(self, name: str) -> bytes:
        self.calls.append("read_bytes")
        if name not in self.objects:
            raise FileNotFoundError(name)
        return self.objects[name][0]

    def open_input(self, name: str) -> pa.NativeFile:
        self.calls.append("open_input")
        return pa.BufferReader(self.read_bytes(name))

    def mtime(self, name: str) -> float | None:
        return self.objects[name][1] if name in self.objects else None

    def local_temp(self, name: str) -> Path:
        p = self.staging / (name.replace("/", "__") + TMP)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def commit(self, local_tmp: Path, name: str) -> None:
        self.calls.append("commit")
        self.objects[name] = (local_tmp.read_bytes(), time.time())  # one PUT
        local_tmp.unlink()

    def write_atomic(self, name: str, data: bytes) -> None:
        self.calls.append("write_atomic")
        self.objects[name] = (data, time.time())

    def delete(self, name: str) -> None:
        self.calls.append("delete")
        self.objects.pop(name, None)

    def discard_staged(self) -> int:
        n = 0
        for p in self.staging.glob("*" + TMP) if self.staging.exists() else []:
            p.unlink()
            n += 1
        return n

    def refresh(self) -> None:
        self.calls.append("refresh")


def _local_files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


async def test_the_whole_store_runs_on_another_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writer, compaction, readers, manifest, report, supersession, reparse rewrite and recovery against
    an object-store-like Storage: no committed file appears on local disk, and no rename happens."""
    run = tmp_path / "run"
    mem = MemoryStorage(tmp_path / "staging")
    assert isinstance(mem, Storage)
    renames: list[Any] = []
    real_replace = os.replace
    monkeypatch.setattr(store_fs.os, "replace", lambda *a: renames.append(a) or real_replace(*a))

    with open_store(run, storage=mem) as store:
        store.begin_session(config={}, started=1.0, retry_failed=False, rows_total=20)
        w = store.writer(rows_per_segment=6, fsync_interval_s=0.001)
        await _drive(w, [[fail_rec(i, "timeout") if i % 4 == 1 else data_rec(i) for i in range(j, j + 5)]
                         for j in range(0, 20, 5)])
        counts = store.counts()
        store.end_session(status="completed", report={"ok": True}, rows_total=20, counts=counts, ended=2.0)
    assert counts == {"data": 15, "failed": 5, "failure_kinds": {"timeout": 5}}
    assert sorted(mem.objects) == ["data/part-00000.parquet", "data/part-00001.parquet", "data/part-00002.parquet",
                                   "data/part-00003.parquet", "failures/part-00000.parquet",
                                   "failures/part-00001.parquet", "failures/part-00002.parquet", "manifest.json",
                                   "report.json"]

    # a retry: rows 1 and 5 now succeed; their failures are superseded, then dropped
    write_segment(run, 4, [data_rec(1), data_rec(5)])
    with open_store(run, storage=mem) as store:
        assert store.recovered.segments_compacted == 1
        retry = store.done_ids(retry_failed=True)
        assert sorted(i for i in range(20) if i not in retry) == [9, 13, 17]
        assert store.supersede_failures() == 2
    view = RunView.open(run, storage=mem)
    assert view.counts() == {"data": 17, "failed": 3, "failure_kinds": {"timeout": 3}}
    assert view.manifest["runs"][-1]["status"] == "completed" and view.last_activity() is not None
    assert sum(b.num_rows for b in view.iter_batches(DATA, ["row_id"], 4)) == 17

    # a killed reparse of pair 1 (row 9 becomes a revision) is finished by the next open
    real_delete = mem.delete

    def delete(name: str) -> None:
        if name == INTENT:
            raise Crash(name)
        real_delete(name)

    with RunStore.open_existing(run, storage=mem) as store, monkeypatch.context() as m:
        m.setattr(mem, "delete", delete)
        old = store.read_shard(DATA, 1)
        assert old is not None
        new = pa.concat_tables([old, pa.Table.from_pylist([data_rec(9)], schema=old.schema)])
        with pytest.raises(Crash):
            store.rewrite_pair(1, new, None)
    assert INTENT in mem.objects
    with open_store(run, storage=mem) as store:
        assert store.recovered.rewrite_finished
    assert INTENT not in mem.objects and "failures/part-00001.parquet" not in mem.objects

    assert renames == []  # a commit is a PUT, never a rename
    assert not list((tmp_path / "staging").iterdir())
    assert _local_files(run) == ["run.lock"]  # besides the (now empty) journal, only the lock is local
    assert {"commit", "write_atomic", "open_input", "list", "delete", "refresh"} <= set(mem.calls)
    ids = [r for b in view.iter_batches(DATA, ["row_id"], 100) for r in b.column("row_id").to_pylist()]
    f = view.current_failures(["row_id"])
    fails = f.column("row_id").to_pylist() if f is not None else []
    assert sorted(ids + fails) == list(range(20)) and sorted(fails) == [13, 17]


# ---------------------------------------------------------------------------------------------- old format


FIXTURE = ROOT / "tests" / "fixtures" / "format_v1"


@pytest.fixture
def v1(tmp_path: Path) -> Iterator[Path]:
    work = tmp_path / "format_v1"
    shutil.copytree(FIXTURE, work)
    cfg = yaml.safe_load((work / "job.yaml").read_text())  # its paths are relative to the folder it was made in
    cfg["input"]["path"] = str(work / cfg["input"]["path"])
    cfg["output"]["dir"] = str(work / cfg["output"]["dir"])
    (work / "job.yaml").write_text(yaml.safe_dump(cfg))
    yield work


def test_format_v1_run_resumes_reports_and_exports(v1: Path, mock: MockProcess) -> None:
    run = v1 / "run_v1"
    assert_exactly_once(run, 40)
    st = orjson.loads(clair("status", str(run), "--json").stdout)
    assert st["rows_done"] == 40 and st["rows_revised"] == 34 and st["failure_kinds"] == {"no_marker": 6}
    r = clair("run", str(v1 / "job.yaml"), "--set", f"endpoints.0.url={mock.url}", "--set", "input.limit=60")
    assert r.returncode == 0, r.stderr
    assert "resuming: 40 of 60 rows done" in r.stderr
    assert_exactly_once(run, 60)
    st = orjson.loads(clair("status", str(run), "--json").stdout)
    assert st["rows_done"] == 60 and st["rows_remaining"] == 0 and st["sessions"] == 2
    assert RunView.open(run).manifest["format_version"] == 1
    r = clair("export", str(run), "--out", str(v1 / "pairs.parquet"))
    assert r.returncode == 0, r.stderr
    exported = pq.read_table(v1 / "pairs.parquet")
    ds = load_results(run)
    assert exported.num_rows == ds.num_rows == st["rows_revised"]
    assert sorted(exported.column("row_id").to_pylist()) == sorted(list(ds["row_id"]))
    fails = load_results(run, failures=True)
    assert sorted(list(ds["row_id"]) + list(fails["row_id"])) == list(range(60))


def test_storage_error_hint() -> None:
    assert "disk is full" in str(storage_error(OSError(28, "No space"), "x"))
    assert "permission" in str(storage_error(OSError(13, "denied"), "x"))


def test_shards_use_a_dictionary_only_for_short_values_and_read_back_the_same(tmp_path: Path) -> None:
    """Long text columns (answers) are written plain (hashing them for a dictionary Parquet drops anyway
    is a third of the write time); short ones keep their dictionary; the rows read back identical."""
    run = tmp_path / "run"
    recs = [{**data_rec(i), "revision": f"answer {i} " + "text " * 200} for i in range(0, 60, 3)]
    seg = write_segment(run, 0, recs)
    store_shards.ShardWriter(run, SCHEMAS["data_schema"], SCHEMAS["failure_schema"]).compact(seg)
    f = pq.ParquetFile(run / DATA / "part-00000.parquet")
    col = {f.metadata.row_group(0).column(i).path_in_schema: f.metadata.row_group(0).column(i).encodings
           for i in range(f.metadata.num_columns)}
    assert not any("DICTIONARY" in e for e in col["revision"])
    assert any("DICTIONARY" in e for e in col["status"]) and any("DICTIONARY" in e for e in col["row_id"])
    table = f.read()
    assert table.column("revision").to_pylist() == [r["revision"] for r in recs]
    assert table.column("status").to_pylist() == [r["status"] for r in recs]
