"""A stage's sub-store (RUN/stages/<name>/): open, write, reopen recovered, done ids, counts, supersession,
crash states made by hand, and how it counts in RunStore.open's checks and --new-run's archive."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.core.errors import RunStateError
from engine.records import data_schema, failure_schema
from engine.store import DATA, FAILURES, RunStore, RunView, StageStore, StoreWriter
from engine.store.fs import TMP, SubStorage
from engine.store.journal import encode_record
from engine.store.manifest import MANIFEST

SCHEMAS = {"data_schema": data_schema(pa.int64(), []), "failure_schema": failure_schema(pa.int64(), [])}
FP = {"input": {"files": "abc"}, "models": ["teacher"], "generate": {"models": ["student"]}}

#: a generate stage's rows: no revision, no minimality metrics
GEN_DATA = pa.schema([("row_id", pa.int64()), ("task", pa.string()), ("student_solution", pa.string()),
                      ("finish_reason", pa.string()), ("request_key", pa.string())])
GEN_FAIL = pa.schema([("row_id", pa.int64()), ("task", pa.string()), ("error_kind", pa.string()),
                      ("error_message", pa.string()), ("request_key", pa.string())])
GEN = {"data_schema": GEN_DATA, "failure_schema": GEN_FAIL}


def open_run(run: Path, fp: dict[str, Any] = FP, **kw: Any) -> RunStore:
    return RunStore.open(run, fingerprint=fp, parser_version="1", markers={}, **SCHEMAS, **kw)


def open_gen(store: RunStore, **schemas: pa.Schema) -> StageStore:
    return store.stage("generate", **{**GEN, **schemas})


def answer(i: int) -> dict[str, Any]:
    return {"row_id": i, "task": f"t{i}", "student_solution": f"answer {i}", "finish_reason": "stop",
            "request_key": f"k{i}"}


def failed(i: int, kind: str = "timeout") -> dict[str, Any]:
    return {"row_id": i, "task": f"t{i}", "error_kind": kind, "error_message": "m", "request_key": f"k{i}"}


def gen_rec(i: int) -> dict[str, Any]:
    """Row i of the generate stage: every fourth one a failure."""
    return failed(i) if i % 4 == 3 else answer(i)


def stage_dir(run: Path) -> Path:
    return run / "stages" / "generate"


def ids(path: Path) -> list[int]:
    return pq.read_table(path).column("row_id").to_pylist() if path.exists() else []


def stage_ids(run: Path) -> tuple[list[int], list[int]]:
    d = stage_dir(run)
    return ids(d / DATA), ids(d / FAILURES)


def write_stage_segment(run: Path, n: int, recs: list[dict[str, Any]], tail: bytes = b"") -> Path:
    seg = stage_dir(run) / "journal" / f"seg-{n:05d}.log"
    seg.parent.mkdir(parents=True, exist_ok=True)
    seg.write_bytes(b"".join(encode_record(r) for r in recs) + tail)
    return seg


async def drive(w: StoreWriter, batches: list[list[dict[str, Any]]]) -> None:
    runner = asyncio.create_task(w.run())
    for b in batches:
        await w.wait_ready()
        w.append(b)
        await asyncio.sleep(0)
    w.close()
    await runner


async def make_run(run: Path, rows: int, rows_per_segment: int = 5) -> None:
    """A run whose generate stage answered rows 0..rows-1 (compacted into its shards), the revise stage none."""
    with open_run(run) as store:
        store.begin_session(config={}, started=1.0, retry_failed=False, rows_total=rows)
        st = open_gen(store)
        w = st.writer(rows_per_segment=rows_per_segment, fsync_interval_s=0.001)
        await drive(w, [[gen_rec(i) for i in range(j, min(j + 3, rows))] for j in range(0, rows, 3)])


def assert_stage_exactly_once(run: Path, n: int) -> None:
    data, fails = stage_ids(run)
    assert len(data) == len(set(data)) and len(fails) == len(set(fails))
    assert not set(data) & set(fails)
    assert sorted(data + fails) == list(range(n))


# ---------------------------------------------------------------------------------------------- the sub-store


async def test_stage_is_written_reopened_and_counted(tmp_path: Path) -> None:
    run = tmp_path / "run"
    await make_run(run, 20)
    d = stage_dir(run)
    assert sorted(p.name for p in (d / DATA).iterdir()) == [f"part-0000{i}.parquet" for i in range(4)]
    assert not list((d / "journal").glob("seg-*")) and not (d / MANIFEST).exists()
    # the final store has nothing: the stage's rows are its own
    assert not (run / DATA).exists() and not (run / FAILURES).exists()
    # no revision column, so no minimality metrics: the shards have exactly the stage's columns
    assert pq.read_schema(d / DATA / "part-00000.parquet").names == GEN_DATA.names
    assert pq.read_table(d / DATA).column("student_solution").to_pylist()[:2] == ["answer 0", "answer 1"]
    assert_stage_exactly_once(run, 20)

    with open_run(run) as store:
        st = open_gen(store)
        assert st.dir == d and st.recovered.segments_compacted == 0
        assert st.counts() == {"data": 15, "failed": 5, "failure_kinds": {"timeout": 5}}
        assert store.counts() == {"data": 0, "failed": 0, "failure_kinds": {}}
        done = st.done_ids()
        assert all(i in done for i in range(20)) and 20 not in done
        retry = st.done_ids(retry_failed=True)  # timeouts are asked again
        assert sorted(i for i in range(20) if i not in retry) == [3, 7, 11, 15, 19]
        # a new writer continues after the existing shards
        w = st.writer(rows_per_segment=5, fsync_interval_s=0.001)
        assert w.first_segment == 4

    view = RunView.open(run)
    sv = view.stage("generate")
    assert sv is not None and view.stage("revise") is None and view.stage("nope") is None
    assert sv.counts() == {"data": 15, "failed": 5, "failure_kinds": {"timeout": 5}}
    assert sv.shards(FAILURES) == [f"failures/part-0000{i}.parquet" for i in range(4)]
    assert sum(b.num_rows for b in sv.iter_batches(DATA, ["row_id", "student_solution"], 4)) == 15
    assert sv.journal_stats().rows == 0
    assert len(sv.done_ids()) == 20


async def test_retry_and_supersede_failures(tmp_path: Path) -> None:
    run = tmp_path / "run"
    await make_run(run, 12)
    with open_run(run) as store:
        st = open_gen(store)
        retry = st.done_ids(retry_failed=True)
        w = st.writer(rows_per_segment=5, fsync_interval_s=0.001)
        # rows 3 and 7 answer now, row 11 fails again for good
        await drive(w, [[answer(3), answer(7), failed(11, "invalid_input")]])
        assert [i for i in (3, 7, 11) if i in retry] == []
        assert st.counts() == {"data": 11, "failed": 1, "failure_kinds": {"invalid_input": 1}}
        assert st.supersede_failures() == 3
        assert st.supersede_failures() == 0
    data, fails = stage_ids(run)
    assert sorted(fails) == [11] and sorted(data) == [i for i in range(12) if i != 11]


def test_stage_names_are_checked(tmp_path: Path) -> None:
    with open_run(tmp_path / "run") as store:
        for bad in ("../x", "Generate", "", "a/b"):
            with pytest.raises(ValueError, match="stage name"):
                store.stage(bad, **GEN)


async def test_stage_keeps_the_columns_its_shards_have(tmp_path: Path) -> None:
    run = tmp_path / "run"
    await make_run(run, 4)  # row 3 failed: both kinds have shards
    wider = GEN_DATA.append(pa.field("student_model", pa.string()))
    with open_run(run) as store:
        st = open_gen(store, data_schema=wider)
        assert st.schemas[DATA] == GEN_DATA
    # a stage with data shards only: the failures schema keeps no shared column the data shards lack
    run2 = tmp_path / "run2"
    with open_run(run2) as store:
        store.begin_session(config={}, started=1.0, retry_failed=False, rows_total=2)
        await drive(open_gen(store).writer(rows_per_segment=5, fsync_interval_s=0.001), [[answer(0)]])
    fail_wider = GEN_FAIL.append(pa.field("student_model", pa.string()))
    with open_run(run2) as store:
        st = open_gen(store, data_schema=wider, failure_schema=fail_wider)
        assert st.schemas == {DATA: GEN_DATA, FAILURES: GEN_FAIL}


# ---------------------------------------------------------------------------------------------- crash states


async def test_crash_states_are_recovered_exactly_once(tmp_path: Path) -> None:
    run = tmp_path / "run"
    await make_run(run, 10)  # shards 0, 1 (segments of 5)
    d = stage_dir(run)
    # segment 2 was compacted (its shards committed) but the kill came before it was deleted
    seg2 = [gen_rec(i) for i in range(10, 15)]
    write_stage_segment(run, 2, seg2)
    for kind, rows, schema in ((DATA, [r for r in seg2 if "error_kind" not in r], GEN_DATA),
                               (FAILURES, [r for r in seg2 if "error_kind" in r], GEN_FAIL)):
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), d / kind / "part-00002.parquet")
    # segment 3 has a torn tail and a line with a bad checksum
    bad = bytearray(encode_record(answer(17)))
    bad[15] ^= 1
    write_stage_segment(run, 3, [gen_rec(i) for i in range(15, 17)],
                        tail=bytes(bad) + encode_record(answer(18))[:-4])
    # a staged shard a kill left behind
    (d / DATA / f"part-00009.parquet{TMP}").write_bytes(b"half a parquet file")
    assert RunView.open(run).stage("generate").journal_stats().rows == 7  # type: ignore[union-attr]

    with open_run(run) as store:
        st = open_gen(store)
        assert st.recovered.segments_compacted == 2 and st.recovered.staged_dropped == 1
        assert st.counts()["data"] + st.counts()["failed"] == 17
    assert not list(d.rglob("*" + TMP)) and not list((d / "journal").glob("seg-*"))
    assert_stage_exactly_once(run, 17)


# ---------------------------------------------------------------------------------------------- the run's checks


async def test_changed_fingerprint_refused_when_only_the_stage_has_answers(tmp_path: Path) -> None:
    run = tmp_path / "run"
    await make_run(run, 6)
    other = {**FP, "generate": {"models": ["another student"]}}
    with pytest.raises(RunStateError, match="different settings"):
        open_run(run, other)
    # the same with the stage's answers still in its journal only (killed before any compaction)
    run2 = tmp_path / "run2"
    with open_run(run2) as store:
        store.begin_session(config={}, started=1.0, retry_failed=False, rows_total=3)
        open_gen(store)
    write_stage_segment(run2, 0, [answer(0)])
    with pytest.raises(RunStateError, match="different settings"):
        open_run(run2, other)
    with open_run(run2) as store:  # the same settings resume it
        assert len(store.manifest["runs"]) == 1
        assert open_gen(store).counts()["data"] == 1


async def test_stage_with_only_rows_never_sent_starts_afresh(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with open_run(run) as store:
        store.begin_session(config={}, started=1.0, retry_failed=False, rows_total=3)
        await drive(open_gen(store).writer(rows_per_segment=5, fsync_interval_s=0.001),
                    [[failed(0, "invalid_input")]])
    other = {**FP, "generate": {"models": ["another student"]}}
    with open_run(run, other) as store:  # nothing paid for: the old rows are archived, not mixed
        assert store.manifest["fingerprint"] == other and store.manifest["runs"] == []
    assert not (stage_dir(run) / FAILURES).exists()
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]) == 1


async def test_new_run_archives_the_stages_with_their_journals_compacted(tmp_path: Path) -> None:
    run = tmp_path / "run"
    await make_run(run, 10)
    write_stage_segment(run, 2, [answer(10), failed(11)], tail=b"torn")  # killed before its compaction
    other = {**FP, "generate": {"models": ["another student"]}}
    with open_run(run, other, new_run=True) as store:
        assert open_gen(store).counts() == {"data": 0, "failed": 0, "failure_kinds": {}}
    (archived,) = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert not list((stage_dir(archived) / "journal").glob("seg-*"))
    assert_stage_exactly_once(archived, 12)
    sv = RunView.open(archived).stage("generate")
    assert sv is not None and sv.counts()["data"] + sv.counts()["failed"] == 12


# ---------------------------------------------------------------------------------------------- another Storage


async def test_stage_on_another_storage(tmp_path: Path) -> None:
    """A stage's committed files go through the run's Storage (a folder of it), never to local disk."""
    from test_store import MemoryStorage

    run = tmp_path / "run"
    mem = MemoryStorage(tmp_path / "staging")
    with open_run(run, storage=mem) as store:
        store.begin_session(config={}, started=1.0, retry_failed=False, rows_total=8)
        st = open_gen(store)
        assert isinstance(st.storage, SubStorage)
        await drive(st.writer(rows_per_segment=5, fsync_interval_s=0.001), [[gen_rec(i) for i in range(8)]])
        assert st.counts() == {"data": 6, "failed": 2, "failure_kinds": {"timeout": 2}}
        assert st.supersede_failures() == 0
    assert sorted(n for n in mem.objects if n.startswith("stages/")) == [
        "stages/generate/data/part-00000.parquet", "stages/generate/data/part-00001.parquet",
        "stages/generate/failures/part-00000.parquet", "stages/generate/failures/part-00001.parquet",
        "stages/generate/schema-data.arrow", "stages/generate/schema-failures.arrow"]
    assert not [p for p in run.rglob("*") if p.is_file() and p.name != "run.lock"]
    sv = RunView.open(run, storage=mem).stage("generate")
    assert sv is not None and len(sv.done_ids()) == 8
