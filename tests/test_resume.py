"""Resumable runs: SIGINT, kill -9 torture, refused resumes, torn journal, locks, retry-failed, reparse."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import assert_exactly_once, clair, clair_popen, make_input, read_ids, write_config

from engine.records import data_schema, failure_schema
from engine.store import LocalStorage
from engine.store.journal import encode_record, read_segment
from engine.store.manifest import RunLock
from engine.store.recovery import recover
from engine.store.shards import ShardWriter
from engine.tools.mockserver import mock_revision
from engine.tools.mockserver_proc import MockProcess


def _served(m: MockProcess) -> int:
    return int(m.stats()["completions"])


def _wait_for_rows(run: Path, at_least: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = sum(s.read_bytes().count(b"\n") for s in (run / "journal").glob("seg-*.log"))
        n += len(read_ids(run)[0]) if (run / "data").exists() else 0
        if n >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} rows finished in {timeout}s")


def test_sigint_stops_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 600)
    with MockProcess(["--latency-ms", "100"]) as m:
        cfg = write_config(tmp_path, m.url, inp, run={"progress": "off", "grace_period_s": 5})
        p = clair_popen("run", str(cfg))
        _wait_for_rows(tmp_path / "run", 50)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 130, err
        assert "resume with: clair run" in err
        data, fails = read_ids(tmp_path / "run")
        assert 50 <= len(data) < 600 and not fails
        st = orjson.loads(clair("status", str(tmp_path / "run"), "--json").stdout)
        assert st["rows_done"] == len(data) and st["active"] is False
        r = clair("run", str(cfg))
        assert r.returncode == 0, r.stderr
        assert f"resuming: {len(data)} of 600 rows done" in r.stderr
        assert_exactly_once(tmp_path / "run", 600)
        assert _served(m) <= 600 + 16


def test_kill9_torture_exactly_once_and_bounded_requests(tmp_path: Path) -> None:
    rows, conc, kills = 5000, 32, 10
    inp = make_input(tmp_path, rows)
    rng = random.Random(1234)
    with MockProcess(["--latency-ms", "30", "--latency-dist", "lognormal"]) as m:
        cfg = write_config(tmp_path, m.url, inp, endpoints=[{"url": m.url, "model": "mock-clair",
                                                            "max_concurrency": conc}],
                           output={"dir": str(tmp_path / "run"), "rows_per_shard": 250})
        for _ in range(kills):
            p = clair_popen("run", str(cfg))
            time.sleep(rng.uniform(0.8, 2.5))
            p.kill()
            p.communicate()
        r = clair("run", str(cfg))
        assert r.returncode == 0, r.stderr
        assert_exactly_once(tmp_path / "run", rows)
        served = _served(m)
        assert served <= rows + kills * conc, served
        data, _ = read_ids(tmp_path / "run")
        t = pq.read_table(tmp_path / "run" / "data")
        assert all(rev == mock_revision(s) for rev, s in zip(t.column("revision").to_pylist(),
                                                             t.column("student_solution").to_pylist(), strict=True))


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("prompt.variant=contextualai", "the prompt"),
        ("endpoints.0.model=other-model", "the model name"),
        ("generation.temperature=0.2", "generation parameters (temperature)"),
        ("input.columns.student_solution=chosen[1].content", "the input"),
    ],
)
def test_resume_refused_when_requests_would_change(tmp_path: Path, mock: MockProcess, override: str,
                                                   words: str) -> None:
    inp = make_input(tmp_path, 20)
    cfg = write_config(tmp_path, mock.url, inp)
    assert clair("run", str(cfg)).returncode == 0
    r = clair("run", str(cfg), "--set", override)
    assert r.returncode == 2
    assert words in r.stderr and "--new-run" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # limits, concurrency and urls are not part of the fingerprint
    r = clair("run", str(cfg), "--set", "endpoints.0.max_concurrency=3", "--set", "input.batch_rows=7")
    assert r.returncode == 0, r.stderr


def test_changed_input_file_is_refused_and_new_run_archives(tmp_path: Path, mock: MockProcess) -> None:
    inp = make_input(tmp_path, 20)
    cfg = write_config(tmp_path, mock.url, inp)
    assert clair("run", str(cfg)).returncode == 0
    make_input(tmp_path, 20, seed=99)  # same name, other content
    r = clair("run", str(cfg))
    assert r.returncode == 2 and "the input" in r.stderr
    r = clair("run", str(cfg), "--new-run")
    assert r.returncode == 0, r.stderr
    archived = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(archived) == 1 and (archived[0] / "manifest.json").exists()
    assert_exactly_once(tmp_path / "run", 20)


def test_raising_the_limit_extends_the_run(tmp_path: Path, mock: MockProcess) -> None:
    inp = make_input(tmp_path, 60)
    cfg = write_config(tmp_path, mock.url, inp)
    assert clair("run", str(cfg), "--set", "input.limit=25").returncode == 0
    assert_exactly_once(tmp_path / "run", 25)
    r = clair("run", str(cfg), "--set", "input.limit=60")
    assert r.returncode == 0, r.stderr
    assert_exactly_once(tmp_path / "run", 60)


def _schemas():
    return data_schema(pa.int64(), []), failure_schema(pa.int64(), [])


def _data_rec(i: int) -> dict:
    return {"row_id": i, "task": "t", "student_solution": "s", "revision": "r", "rational": "x", "status": "ok"}


def test_torn_journal_tail_is_dropped_not_parsed(tmp_path: Path) -> None:
    jdir = tmp_path / "journal"
    jdir.mkdir()
    seg = jdir / "seg-00000.log"
    good = b"".join(encode_record(_data_rec(i)) for i in range(3))
    corrupt = bytearray(encode_record(_data_rec(3)))
    corrupt[20] ^= 0x01  # checksum mismatch
    torn = encode_record(_data_rec(4))[:-7]  # half-written last record
    seg.write_bytes(good + bytes(corrupt) + torn)
    recs, dropped = read_segment(seg)
    assert [r["row_id"] for r in recs] == [0, 1, 2] and dropped == 2
    w = ShardWriter(LocalStorage(tmp_path), *_schemas())
    assert recover(w.storage, jdir, w).segments_compacted == 1
    assert pq.read_table(tmp_path / "data" / "part-00000.parquet").column("row_id").to_pylist() == [0, 1, 2]
    assert not seg.exists()


def test_interrupted_compaction_is_redone_idempotently(tmp_path: Path) -> None:
    jdir = tmp_path / "journal"
    jdir.mkdir()
    seg = jdir / "seg-00004.log"
    seg.write_bytes(b"".join(encode_record(_data_rec(i)) for i in range(5)))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "part-00004.parquet.tmp").write_bytes(b"half a parquet file")
    w = ShardWriter(LocalStorage(tmp_path), *_schemas())
    recover(w.storage, jdir, w)
    assert not list((tmp_path / "data").glob("*.tmp"))
    # a crash after the rename but before the segment was deleted: redo gives the same shard
    seg.write_bytes(b"".join(encode_record(_data_rec(i)) for i in range(5)))
    recover(w.storage, jdir, w)
    assert pq.read_table(tmp_path / "data").column("row_id").to_pylist() == [0, 1, 2, 3, 4]


def test_stale_lock_is_taken_over_and_live_lock_refused(tmp_path: Path, mock: MockProcess) -> None:
    inp = make_input(tmp_path, 10)
    cfg = write_config(tmp_path, mock.url, inp)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.lock").write_bytes(orjson.dumps({"pid": 999999, "host": "x"}))  # dead pid, no flock
    r = clair("run", str(cfg))
    assert r.returncode == 0, r.stderr
    lock = RunLock(run)
    lock.acquire()  # a live holder (this process)
    try:
        r = clair("run", str(cfg))
        assert r.returncode == 2 and "another clair run is active" in r.stderr and str(os.getpid()) in r.stderr
        st = orjson.loads(clair("status", str(run), "--json").stdout)
        assert st["active"] is True
    finally:
        lock.release()


def test_retry_failed_moves_recovered_rows_to_data(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 40)
    with MockProcess(["--rate-500", "1.0"]) as bad:
        cfg = write_config(tmp_path, bad.url, inp, retry={"max_attempts": 1},
                           run={"progress": "off", "breaker_failures": 1000})
        r = clair("run", str(cfg))
        assert r.returncode == 3, r.stderr  # not a single usable revision: exit 3, the rows are recorded
    data, fails = read_ids(tmp_path / "run")
    assert not data and sorted(fails) == list(range(40))
    with MockProcess([]) as good:
        r = clair("run", str(cfg), "--set", f"endpoints.0.url={good.url}")
        assert r.returncode == 3 and _served(good) == 0  # a plain resume re-requests nothing
        r = clair("run", str(cfg), "--set", f"endpoints.0.url={good.url}", "--retry-failed")
        assert r.returncode == 0, r.stderr
        assert _served(good) == 40
    assert_exactly_once(tmp_path / "run", 40)
    data, fails = read_ids(tmp_path / "run")
    assert len(data) == 40 and not fails
    # the superseded failure rows were compacted away, so plain readers agree
    assert not list((tmp_path / "run" / "failures").glob("*.parquet"))


def test_reparse_uses_stored_outputs_without_requests(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 30)
    with MockProcess([]) as m:
        cfg = write_config(tmp_path, m.url, inp)
        assert clair("run", str(cfg)).returncode == 0
    run = tmp_path / "run"
    # pretend an older parser failed rows 0-4: move them to failures as no_marker, and break row 5's revision
    data_path = run / "data" / "part-00000.parquet"
    t = pq.read_table(data_path)
    rows = t.to_pylist()
    fschema = pq.read_schema(data_path)
    moved = []
    for r in rows[:5]:
        f = {k: v for k, v in r.items() if k not in ("revision", "rational", "status", "jaccard", "levenshtein",
                                                      "length_ratio")}
        f.update(error_kind="no_marker", error_message="old parser")
        moved.append(f)
    rows[5]["revision"] = "**: garbage from an old parser"
    fsch = failure_schema(pa.int64(), [(n, n, fschema.field(n).type) for n in fschema.names
                                       if n not in data_schema(pa.int64(), []).names])
    pq.write_table(pa.Table.from_pylist(rows[5:], schema=t.schema), data_path)
    (run / "failures").mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pylist(moved, schema=fsch), run / "failures" / "part-00000.parquet")
    r = clair("reparse", str(run))  # the mock is stopped: any request would fail
    assert r.returncode == 0, r.stderr
    assert "5 now revised" in r.stdout
    assert_exactly_once(run, 30)
    t = pq.read_table(run / "data")
    by_id = dict(zip(t.column("row_id").to_pylist(), t.column("revision").to_pylist(), strict=True))
    sols = dict(zip(t.column("row_id").to_pylist(), t.column("student_solution").to_pylist(), strict=True))
    assert all(by_id[i] == mock_revision(sols[i]) for i in range(30))
