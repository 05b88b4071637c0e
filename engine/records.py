"""The output row: its columns, their Arrow types, the ``status`` values, and how an answer or a failure
becomes a record (L3; pure functions).

Every other module asks this one. Adding a column is one edit here (a ``Column`` in :data:`COLUMNS`
and, when the engine fills it, a line in the builder that knows its value) plus its test.

Two kinds of row, written to two kinds of shard:

* ``data/``: a usable revision, with ``status`` in :data:`DATA_STATUSES`;
* ``failures/``: no usable revision, with ``error_kind`` (:data:`PARSE_FAILURES`, ``invalid_input``,
  ``prompt_too_long`` or an endpoint error's kind) and ``error_message``.

A record is a plain dict on its way to the journal; a record whose ``error_kind`` is not null is a
failure row. The minimality columns are computed at compaction, for whole chunks (``store``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
import xxhash

from engine.core.types import Completion, Markers, WorkItem
from engine.minimality import pair_metrics
from engine.parse import PARSER_VERSION, parse_answer

# ---------------------------------------------------------------- statuses and kinds

OK, TRUNCATED, WORSENED = "ok", "truncated", "worsened"
#: statuses of data/ rows: a usable revision (flagged ones are exported only on request)
DATA_STATUSES = (OK, TRUNCATED, WORSENED)
#: failure kinds of answers that came back but could not be parsed (``reparse`` may change them)
PARSE_FAILURES = frozenset({"no_marker", "empty_revision", "truncated_no_revision", "empty_output"})
#: the row's own task or answer is empty (no request is made)
INVALID_INPUT = "invalid_input"
#: the row's prompt alone fills the endpoint's context, leaving no room for an answer (no request is made)
PROMPT_TOO_LONG = "prompt_too_long"
#: error messages are cut to this many characters
MAX_MESSAGE = 1000

# the generate stage (runs with a ``generate:`` section): its own failure kinds, and the final rows' kinds
# of rows whose student answer failed (``error_message`` says how)
#: the student's answer was cut by its max_tokens (``generate.keep_truncated: false``); it is kept, not revised
STUDENT_TRUNCATED = "student_truncated"
#: the student answered with nothing (only whitespace)
STUDENT_EMPTY = "student_empty"
#: the generate stage's request failed (after its retries); the final row of such a row
GENERATE_FAILED = "generate_failed"

# ---------------------------------------------------------------- columns

Kind = Literal["data", "failures", "both"]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: pa.DataType
    kind: Kind = "both"


#: every column the engine writes, in shard order (``row_id`` first; its type comes from the input)
COLUMNS: tuple[Column, ...] = (
    Column("task", pa.string()),
    Column("student_solution", pa.string()),
    Column("revision", pa.string(), "data"),
    Column("rational", pa.string(), "data"),
    Column("status", pa.string(), "data"),
    Column("error_kind", pa.string(), "failures"),
    Column("error_message", pa.string(), "failures"),
    Column("model_name", pa.string()),
    Column("served_model", pa.string()),
    Column("endpoint", pa.string()),
    Column("finish_reason", pa.string()),
    Column("prompt_tokens", pa.int64()),
    Column("completion_tokens", pa.int64()),
    Column("reasoning_tokens", pa.int64()),
    Column("attempts", pa.int32()),
    Column("latency_s", pa.float64()),
    Column("raw_output", pa.string()),
    Column("reasoning_content", pa.string()),
    Column("parser_version", pa.string()),
    Column("request_key", pa.string()),
    Column("reused_from", pa.string()),
    Column("max_tokens", pa.int64()),  # the output budget the request was sent with (null: never sent)
    Column("jaccard", pa.float64(), "data"),
    Column("levenshtein", pa.int64(), "data"),
    Column("length_ratio", pa.float64(), "data"),
)
#: the student answer's provenance: the final rows of a run with a generate stage carry them after
#: ``student_solution``; the generate stage's own rows have them too
STUDENT_COLUMNS: tuple[Column, ...] = (
    Column("student_model", pa.string()),
    Column("student_finish_reason", pa.string()),
    Column("student_prompt_tokens", pa.int64()),
    Column("student_completion_tokens", pa.int64()),
)
#: the generate stage's rows (its sub-store, and the output of a generation-only run): the student answer
#: in ``student_solution``; ``status`` ok/truncated on data rows, ``error_kind`` on failure rows
GENERATE_COLUMNS: tuple[Column, ...] = (
    Column("task", pa.string()),
    Column("student_solution", pa.string()),
    Column("status", pa.string(), "data"),
    Column("error_kind", pa.string(), "failures"),
    Column("error_message", pa.string(), "failures"),
    *STUDENT_COLUMNS,
    Column("served_model", pa.string()),
    Column("endpoint", pa.string()),
    Column("reasoning_tokens", pa.int64()),
    Column("attempts", pa.int32()),
    Column("latency_s", pa.float64()),
    Column("reasoning_content", pa.string()),
    Column("raw_output", pa.string(), "failures"),
    Column("request_key", pa.string()),
    Column("max_tokens", pa.int64()),
)
#: the minimality columns (computed from ``revision`` and ``student_solution`` at compaction)
METRIC_COLUMNS = ("jaccard", "levenshtein", "length_ratio")
#: columns only data rows have / only failure rows have / both kinds have
DATA_ONLY = tuple(c.name for c in COLUMNS if c.kind == "data")
FAILURE_ONLY = tuple(c.name for c in COLUMNS if c.kind == "failures")
SHARED_COLUMNS = tuple(c.name for c in COLUMNS if c.kind == "both")
#: output column names the engine owns; input columns with these names are kept as ``input_<name>``
RESERVED = frozenset({"row_id", *(c.name for c in COLUMNS)})
#: the same in a run with a generate stage (its rows have the student provenance columns too)
STUDENT_RESERVED = RESERVED | {c.name for c in GENERATE_COLUMNS}

#: a kept input column: (input name, output name, output type)
Kept = tuple[str, str, pa.DataType]


def kept_name(input_name: str, student: bool = False) -> str:
    """The output name of a kept input column (``student``: in a run with a generate stage)."""
    return f"input_{input_name}" if input_name in (STUDENT_RESERVED if student else RESERVED) else input_name


def _columns(student: bool) -> tuple[Column, ...]:
    if not student:
        return COLUMNS
    at = [c.name for c in COLUMNS].index("student_solution") + 1
    return (*COLUMNS[:at], *STUDENT_COLUMNS, *COLUMNS[at:])


def _schema(kind: str, row_id_type: pa.DataType, kept: list[Kept], columns: tuple[Column, ...] = COLUMNS) -> pa.Schema:
    fields = [("row_id", row_id_type)]
    fields += [(c.name, c.type) for c in columns if c.kind in (kind, "both")]
    return pa.schema(fields + [(out, t) for _, out, t in kept])


def data_schema(row_id_type: pa.DataType, kept: list[Kept], *, student: bool = False) -> pa.Schema:
    """The data rows' schema; ``student``: with the student provenance columns (a run with a generate stage)."""
    return _schema("data", row_id_type, kept, _columns(student))


def failure_schema(row_id_type: pa.DataType, kept: list[Kept], *, student: bool = False) -> pa.Schema:
    return _schema("failures", row_id_type, kept, _columns(student))


def generate_schemas(row_id_type: pa.DataType, kept: list[Kept]) -> tuple[pa.Schema, pa.Schema]:
    """The generate stage's (data, failures) schemas."""
    return (_schema("data", row_id_type, kept, GENERATE_COLUMNS),
            _schema("failures", row_id_type, kept, GENERATE_COLUMNS))


def kept_from_schema(schema: pa.Schema) -> list[Kept]:
    """The kept input columns of a shard's schema (every column the engine does not own)."""
    reserved = STUDENT_RESERVED if _has_student_columns(schema) else RESERVED
    return [(f.name, f.name, f.type) for f in schema if f.name not in reserved]


def _has_student_columns(schema: pa.Schema) -> bool:
    """A shard schema of a run with a generate stage (its rows carry the student provenance)."""
    return all(c.name in schema.names for c in STUDENT_COLUMNS)


def other_schema(schema: pa.Schema, want: str) -> pa.Schema:
    """The data (``want="data"``) or failures schema that goes with a shard schema of either kind."""
    rid = schema.field("row_id").type
    kept = kept_from_schema(schema)
    if "parser_version" not in schema.names and _has_student_columns(schema):  # a generate stage's rows
        d, f = generate_schemas(rid, kept)
        return d if want == "data" else f
    student = _has_student_columns(schema)
    return data_schema(rid, kept, student=student) if want == "data" else failure_schema(rid, kept, student=student)


# ---------------------------------------------------------------- building records


def is_truncated(finish_reason: str | None, completion_tokens: int | None, max_tokens: int) -> bool:
    """The answer hit its token budget (reasoning tokens count: they are part of completion_tokens)."""
    return finish_reason == "length" or (completion_tokens is not None and completion_tokens >= max_tokens)


def request_key(body_prefix: bytes, messages_json: bytes, max_tokens: int | None = None) -> str:
    """The content key of a request: a hash of its body (model, generation parameters, messages, and the
    row's own ``max_tokens`` when it has one: ``generation.max_tokens: auto``). The same request has the
    same key in every run, so a stored answer can be found instead of bought again."""
    h = xxhash.xxh3_128(body_prefix)  # 128 bits, ~0.1 us for a 3 KB body (blake2b: ~4 us on the hot path)
    h.update(messages_json)
    if max_tokens is not None:
        h.update(b',"max_tokens":%d' % max_tokens)
    return h.hexdigest()


def _base(item: WorkItem, model: str | None, endpoint: str | None) -> dict[str, Any]:
    rec = dict(item.extra) if item.extra else {}
    rec.update(
        row_id=item.row_id,
        task=item.task,
        student_solution=item.student_solution,
        model_name=model,
        endpoint=endpoint,
        attempts=item.attempts,
        parser_version=PARSER_VERSION,
        request_key=item.request_key,
    )
    return rec


def completion_record(
    item: WorkItem, comp: Completion, *, model: str, endpoint: str, markers: Markers, max_tokens: int,
    reused_from: str | None = None,
) -> dict[str, Any]:
    """An answer → a data record (usable revision) or a failure record (it could not be parsed).
    ``reused_from``: the run directory whose stored answer this is (no request was sent).
    ``max_tokens``: the generation's; a row with its own budget (``item.max_tokens``) is judged by that."""
    budget = item.max_tokens or max_tokens
    pr = parse_answer(
        comp.content, truncated=is_truncated(comp.finish_reason, comp.completion_tokens, budget), markers=markers
    )
    rec = _base(item, model, endpoint)
    rec.update(
        max_tokens=budget,
        served_model=comp.model,
        finish_reason=comp.finish_reason,
        prompt_tokens=comp.prompt_tokens,
        completion_tokens=comp.completion_tokens,
        reasoning_tokens=comp.reasoning_tokens,
        latency_s=comp.latency_s,
        raw_output=comp.content,
        reasoning_content=comp.reasoning_content,
    )
    if reused_from is not None:
        rec["reused_from"] = reused_from
    if pr.ok:
        rec.update(revision=pr.revision, rational=pr.rational, status=pr.status)
    else:
        rec.update(error_kind=pr.error_kind, error_message=pr.message)
    return rec


def failure_record(
    item: WorkItem, kind: str, message: str, raw: str | None, *, model: str | None, endpoint: str | None,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """A row with no answer to parse (an endpoint error after the retries, or a row never sent).
    ``max_tokens``: the generation's, for a row that was sent (its own budget wins)."""
    rec = _base(item, model, endpoint)
    rec.update(error_kind=kind, error_message=message[:MAX_MESSAGE], raw_output=raw,
               max_tokens=item.max_tokens or max_tokens)
    return rec


def invalid_input_record(item: WorkItem) -> dict[str, Any]:
    """A row whose task or answer is empty or missing: recorded, never sent."""
    which = "task" if not item.task else "student_solution"
    return failure_record(item, INVALID_INPUT, f"the row's {which} is empty or missing", None, model=None, endpoint=None)


def prompt_too_long_record(item: WorkItem, context_length: int) -> dict[str, Any]:
    """A row whose prompt alone fills the context: recorded, never sent."""
    return failure_record(
        item, PROMPT_TOO_LONG,
        f"the prompt (~{item.prompt_tokens_est} tokens, estimated) leaves no room for an answer in the "
        f"endpoint's context of {context_length} tokens",
        None, model=None, endpoint=None,
    )


def reparse_record(row: dict[str, Any], markers: Markers, max_tokens: int) -> dict[str, Any]:
    """A stored row (either kind) parsed again from its ``raw_output`` with this version's parser
    (``max_tokens``: the run's; the row's own ``max_tokens`` column wins)."""
    pr = parse_answer(
        row.get("raw_output"),
        truncated=is_truncated(row.get("finish_reason"), row.get("completion_tokens"),
                               row.get("max_tokens") or max_tokens),
        markers=markers,
    )
    out = {k: v for k, v in row.items() if k not in DATA_ONLY and k not in FAILURE_ONLY}
    out["parser_version"] = PARSER_VERSION
    if pr.ok:
        assert pr.revision is not None
        out.update(revision=pr.revision, rational=pr.rational, status=pr.status)
        out.update(pair_metrics(pr.revision, row["student_solution"]))
    else:
        out.update(error_kind=pr.error_kind, error_message=pr.message)
    return out


# ---------------------------------------------------------------- the generate stage's rows

#: the student provenance fields (``STUDENT_COLUMNS``' names)
STUDENT_FIELDS = tuple(c.name for c in STUDENT_COLUMNS)
#: the generate stage's failure kinds that keep their name in the final row (any other becomes
#: ``generate_failed``, its own kind in the message)
_FINAL_STUDENT_KINDS = frozenset({INVALID_INPUT, STUDENT_TRUNCATED, STUDENT_EMPTY})


def _student_base(item: WorkItem, model: str | None, endpoint: str | None) -> dict[str, Any]:
    rec = dict(item.extra) if item.extra else {}
    rec.update(row_id=item.row_id, task=item.task, student_model=model, endpoint=endpoint, attempts=item.attempts,
               request_key=item.request_key)
    return rec


def student_record(item: WorkItem, comp: Completion, *, model: str, endpoint: str, max_tokens: int,
                   keep_truncated: bool) -> dict[str, Any]:
    """A student's answer → a generate-stage data row (``ok``, or ``truncated`` when kept) or failure row
    (``student_truncated``: cut by max_tokens and not kept; ``student_empty``). The answer is kept either way."""
    budget = item.max_tokens or max_tokens
    rec = _student_base(item, model, endpoint)
    rec.update(
        student_solution=comp.content,
        student_finish_reason=comp.finish_reason,
        student_prompt_tokens=comp.prompt_tokens,
        student_completion_tokens=comp.completion_tokens,
        served_model=comp.model,
        reasoning_tokens=comp.reasoning_tokens,
        reasoning_content=comp.reasoning_content,
        latency_s=comp.latency_s,
        max_tokens=budget,
    )
    truncated = is_truncated(comp.finish_reason, comp.completion_tokens, budget)
    if not comp.content or comp.content.isspace():
        rec.update(error_kind=STUDENT_EMPTY, error_message="the student model answered with nothing")
    elif truncated and not keep_truncated:
        rec.update(error_kind=STUDENT_TRUNCATED,
                   error_message=f"the student answer was cut at max_tokens {budget} (finish_reason "
                                 f"{comp.finish_reason}); raise generate.generation.max_tokens or set "
                                 "generate.keep_truncated: true")
    else:
        rec["status"] = TRUNCATED if truncated else OK
    return rec


def student_failure_record(item: WorkItem, kind: str, message: str, raw: str | None, *, model: str | None,
                           endpoint: str | None, max_tokens: int | None = None) -> dict[str, Any]:
    """A generate-stage row without an answer (an endpoint error after the retries, or never sent)."""
    rec = _student_base(item, model, endpoint)
    rec.update(error_kind=kind, error_message=message[:MAX_MESSAGE], raw_output=raw,
               max_tokens=item.max_tokens or max_tokens)
    return rec


def student_invalid_record(item: WorkItem) -> dict[str, Any]:
    """A row whose prompt is empty or missing (or a conversation that does not end with a user turn)."""
    return student_failure_record(item, INVALID_INPUT, "the row's task (prompt) is empty or missing", None,
                                  model=None, endpoint=None)


def final_from_student_failure(gen: dict[str, Any], kept: tuple[str, ...]) -> dict[str, Any]:
    """The run's final failure row of a row whose student answer failed (a generate-stage failure row):
    ``generate_failed`` (the stage's own kind and message in ``error_message``), or ``invalid_input`` /
    ``student_truncated`` / ``student_empty`` as they are. ``kept``: the kept input columns' names."""
    kind = gen.get("error_kind") or GENERATE_FAILED
    message = gen.get("error_message") or ""
    if kind not in _FINAL_STUDENT_KINDS:
        message, kind = f"generate stage: {kind}: {message}", GENERATE_FAILED
    rec = {k: gen.get(k) for k in kept}
    rec.update(row_id=gen["row_id"], task=gen.get("task"), student_solution=gen.get("student_solution"),
               error_kind=kind, error_message=message[:MAX_MESSAGE], parser_version=PARSER_VERSION)
    for k in STUDENT_FIELDS:
        rec[k] = gen.get(k)
    return rec
