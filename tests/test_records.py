"""The output row's one owner (engine/records.py): schemas, reserved names and the record builders."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engine import records
from engine.core.types import Completion, Markers, WorkItem

FIXTURE = Path(__file__).parent / "fixtures" / "format_v1" / "run_v1"
ANSWER = "{teacher_reasoning}: fix the sum.\n\n{corrected_student_solution}: 2 + 2 = 4."


def _item(**kw: object) -> WorkItem:
    base = dict(row_id=7, task="What is 2+2?", student_solution="2 + 2 = 5.", messages=[], prompt_tokens_est=3,
                extra={"source": "x"}, attempts=2)
    base.update(kw)
    return WorkItem(**base)  # type: ignore[arg-type]


def test_schemas_match_the_shards_of_a_format_1_run_directory() -> None:
    """New shards must line up with old ones: one schema across a run's shards (load_dataset reads them
    as one table), so the column order and types are pinned by the fixture made by older code (the store
    keeps an existing run's schema; see test_store)."""
    for kind, build in (("data", records.data_schema), ("failures", records.failure_schema)):
        old = pq.ParquetFile(next((FIXTURE / kind).glob("*.parquet"))).schema_arrow
        kept = records.kept_from_schema(old)
        assert [k[1] for k in kept] == [n for n in old.names if n not in records.RESERVED]
        # today's schema is format 1's plus the columns added since, which an old run never gets
        now = build(pa.int64(), kept).remove_metadata()
        added = [n for n in now.names if n not in old.names]
        assert added == ["request_key", "reused_from", "max_tokens"]
        for n in added:
            now = now.remove(now.get_field_index(n))
        assert now == old.remove_metadata()
        other = "failures" if kind == "data" else "data"
        assert records.other_schema(old, other).names[-len(kept):] == [k[1] for k in kept]


def test_every_engine_column_is_reserved_and_kept_input_columns_are_renamed() -> None:
    names = set(records.data_schema(pa.int64(), []).names) | set(records.failure_schema(pa.int64(), []).names)
    assert names == records.RESERVED
    gen = set(records.data_schema(pa.int64(), [], student=True).names) | set().union(
        *(s.names for s in records.generate_schemas(pa.int64(), [])))
    assert names | gen == records.STUDENT_RESERVED
    assert records.kept_name("student_model") == "student_model"  # a one-stage run keeps its input's names
    assert records.kept_name("student_model", student=True) == "input_student_model"
    kept = [("student_model", "input_student_model", pa.string())]
    for schema in (*records.generate_schemas(pa.int64(), kept), records.data_schema(pa.int64(), kept, student=True),
                   records.failure_schema(pa.int64(), kept, student=True)):
        assert records.kept_from_schema(schema) == [("input_student_model", "input_student_model", pa.string())]
        assert records.other_schema(schema, "data").names.count("student_model") == 1
    assert records.kept_name("status") == "input_status" and records.kept_name("source") == "source"
    assert set(records.DATA_ONLY) == {"revision", "rational", "status", *records.METRIC_COLUMNS}
    assert set(records.FAILURE_ONLY) == {"error_kind", "error_message"}


def test_a_parsed_answer_becomes_a_data_record_with_its_provenance() -> None:
    comp = Completion(content=ANSWER, finish_reason="stop", model="served", prompt_tokens=11, completion_tokens=22,
                      latency_s=0.5)
    rec = records.completion_record(_item(), comp, model="m", endpoint="e0", markers=Markers(), max_tokens=100)
    assert rec["revision"] == "2 + 2 = 4." and rec["status"] == records.OK and "error_kind" not in rec
    assert rec["rational"] == "fix the sum."
    assert (rec["row_id"], rec["model_name"], rec["served_model"], rec["endpoint"], rec["attempts"]) == (
        7, "m", "served", "e0", 2)
    assert rec["raw_output"] == ANSWER and rec["source"] == "x"
    assert set(rec) - {"source"} <= set(records.data_schema(pa.int64(), []).names)


def test_an_answer_without_markers_and_a_truncated_one_are_flagged_by_their_record() -> None:
    bad = records.completion_record(_item(), Completion(content="just text", finish_reason="stop"), model="m",
                                    endpoint="e", markers=Markers(), max_tokens=100)
    assert bad["error_kind"] == "no_marker" and bad["raw_output"] == "just text"
    cut = records.completion_record(_item(), Completion(content=ANSWER, finish_reason="stop", completion_tokens=100),
                                    model="m", endpoint="e", markers=Markers(), max_tokens=100)
    assert cut["status"] == records.TRUNCATED


def test_failure_and_invalid_input_records() -> None:
    rec = records.failure_record(_item(), "timeout", "x" * 5000, None, model="m", endpoint="e")
    assert rec["error_kind"] == "timeout" and len(rec["error_message"]) == records.MAX_MESSAGE
    inv = records.invalid_input_record(_item(student_solution=""))
    assert inv["error_kind"] == records.INVALID_INPUT and "student_solution" in inv["error_message"]
    assert inv["model_name"] is None


def test_reparse_moves_a_row_between_kinds_and_recomputes_its_metrics() -> None:
    failed = records.failure_record(_item(), "no_marker", "no marker", ANSWER, model="m", endpoint="e")
    out = records.reparse_record(failed, Markers(), 4096)
    assert out["revision"] == "2 + 2 = 4." and "error_kind" not in out and out["jaccard"] is not None
    back = records.reparse_record({**out, "raw_output": "nothing"}, Markers(), 4096)
    assert back["error_kind"] == "no_marker" and "revision" not in back and "jaccard" not in back
