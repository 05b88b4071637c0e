"""``clair show RUN``: a few pairs of a run, for the eye (L4). Reads only; sends nothing.

Each data row is shown as a word-level diff of the original answer (``student_solution``) into the
``revision`` (:mod:`engine.commands.worddiff`), with its ``status``, the minimality figures of the row
(Jaccard, Levenshtein, length ratio) and the teacher's ``rational``; a failure row shows its error and
the head of the raw output. Colours on a terminal (deleted words red and struck through, inserted words
green); elsewhere git's word-diff markers: ``[-deleted words-]{+inserted words+}``.

Selection: the first ``n`` data rows in shard order (``--n``); ``--status`` picks data rows of that status
(``ok``, ``truncated``, ``worsened``) or failure rows of that kind (``no_marker``, ``timeout``, ...);
``--row-id`` picks one row, looked up in ``data/`` and then in the current failures (the run's row_id
type decides how the id is read). The run is read through the store's read-only view a few hundred
rows at a time, stopping as soon as enough rows are found: memory stays flat whatever the run's size, and
a running run shows what its shards hold so far.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.compute as pc

from engine.commands import rundata
from engine.commands.worddiff import DELETE, INSERT, SKIP, changed, elide, separator, skipped, word_diff
from engine.core.errors import RETRYABLE_KINDS, UserError
from engine.records import DATA_STATUSES, INVALID_INPUT, PARSE_FAILURES, STUDENT_EMPTY, STUDENT_TRUNCATED
from engine.store import DATA, FAILURES, RunView

__all__ = ["CONTEXT_WORDS", "DEFAULT_N", "ShowError", "cmd_show", "find_rows", "format_row", "show_run"]

#: rows shown when ``--n`` is not given
DEFAULT_N = 5
#: unchanged words kept on each side of a change (``--full`` keeps all)
CONTEXT_WORDS = 20
#: characters of a task, and of a failure's raw output, shown unless ``--full``
TASK_CHARS = 300
RAW_CHARS = 800
#: rows read per record batch (small: ``show`` stops early and holds a few rows only)
BATCH_ROWS = 256

_DATA_COLUMNS = ["row_id", "task", "student_solution", "revision", "rational", "status", *rundata.METRICS]
_FAILURE_COLUMNS = ["row_id", "task", "student_solution", "error_kind", "error_message", "finish_reason",
                    "raw_output"]
#: failure kinds of a run with a generate stage whose student answer came back but was not revised: the row
#: shows that answer (``student_solution``) where other failures show the raw output
_STUDENT_ANSWERED = frozenset({STUDENT_TRUNCATED, STUDENT_EMPTY})
#: failure kinds any run may hold (a kind found in the run is accepted too)
_KNOWN_KINDS = frozenset({*PARSE_FAILURES, INVALID_INPUT, *RETRYABLE_KINDS})

LEGEND = "diff of original -> revision: [-deleted words-] {+inserted words+}; whitespace changes are not marked"
COLOR_LEGEND = "diff of original → revision: deleted words red and struck through, inserted words green"


class ShowError(UserError):
    """``clair show`` cannot do what was asked (no such row, unknown status, bad option): exit 2."""


@dataclass(frozen=True, slots=True)
class Found:
    """The rows picked, and why there are none when there are none."""

    rows: list[dict[str, Any]]
    note: str | None = None


# ---------------------------------------------------------------------------- picking rows


def find_rows(view: RunView, *, n: int = DEFAULT_N, row_id: str | None = None, status: str | None = None) -> Found:
    """The rows to show as plain dicts (data rows have ``status``, failure rows ``error_kind``)."""
    if n < 1:
        raise ShowError(f"--n must be at least 1 (got {n})")
    if row_id is not None:
        return Found([_by_id(view, row_id)])
    if status is None or status in DATA_STATUSES:
        return _data_rows(view, n, status)
    return _failure_rows(view, n, status)


def _id_type(view: RunView) -> pa.DataType | None:
    schema = view.schema(DATA) or view.schema(FAILURES)
    return schema.field("row_id").type if schema is not None else None


def _parse_id(view: RunView, text: str) -> Any:
    t = _id_type(view)
    if t is None:
        raise ShowError(f"no row with row_id {text} in {view.dir}: the run has no committed rows yet")
    if pa.types.is_integer(t):
        try:
            return int(text)
        except ValueError:
            raise ShowError(f"--row-id {text!r}: this run's row ids are integers") from None
    return text


def _by_id(view: RunView, text: str) -> dict[str, Any]:
    """One row by its id: the data row if there is one (it supersedes failures), else the newest failure."""
    rid = _parse_id(view, text)
    for batch in view.iter_batches(DATA, _DATA_COLUMNS, BATCH_ROWS):
        hit = batch.filter(_is(batch, rid))
        if hit.num_rows:
            return _data_dicts(hit)[0]
    found: dict[str, Any] | None = None
    for batch in view.iter_batches(FAILURES, _FAILURE_COLUMNS, BATCH_ROWS):
        hit = batch.filter(_is(batch, rid))
        if hit.num_rows:
            found = hit.slice(hit.num_rows - 1).to_pylist()[0]  # shards in order: the last is the newest
    if found is None:
        raise ShowError(f"no row with row_id {rid!r} in {view.dir}")
    return found


def _is(batch: pa.RecordBatch, rid: Any) -> pa.Array:
    """The mask of the batch's rows whose row_id is ``rid`` (an id out of the column type's range: none)."""
    try:
        value = pa.scalar(rid, batch.schema.field("row_id").type)
    except (OverflowError, pa.ArrowInvalid):
        return pa.array([False] * batch.num_rows)
    return pc.fill_null(pc.equal(batch.column("row_id"), value), False)


def _data_dicts(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """Rows as dicts, with the minimality figures a shard left null computed."""
    rows = batch.to_pylist()
    for m in rundata.METRICS:
        if batch.column(m).null_count:
            for row, v in zip(rows, rundata.metric(batch, m), strict=True):
                row[m] = None if v != v else (int(v) if m == "levenshtein" else float(v))
    return rows


def _data_rows(view: RunView, n: int, status: str | None) -> Found:
    """The first ``n`` data rows (of ``status``), a row_id written twice shown once."""
    rows: list[dict[str, Any]] = []
    seen: set[Any] = set()
    statuses: Counter[str] = Counter()
    for batch in view.iter_batches(DATA, _DATA_COLUMNS, BATCH_ROWS):
        col = batch.column("status")
        if status is not None:
            for entry in pc.value_counts(col).to_pylist():
                statuses[str(entry["values"])] += int(entry["counts"])
            batch = batch.filter(pc.fill_null(pc.equal(col, status), False))
        if not batch.num_rows:
            continue
        for row in _data_dicts(batch):
            if row["row_id"] not in seen:
                seen.add(row["row_id"])
                rows.append(row)
            if len(rows) == n:
                return Found(rows)
    if rows:
        return Found(rows)
    if status is None:
        return Found([], f"{view.dir} has no revised rows yet" + _failure_note(view))
    held = rundata.kinds(dict(statuses)) or "none"
    return Found([], f"no row of {view.dir} has status {status} (data rows by status: {held})")


def _failure_note(view: RunView) -> str:
    kinds = view.counts()["failure_kinds"]
    if not kinds:
        return ""
    return f"; failed rows: {rundata.kinds(kinds)} (show them with --status KIND)"


def _failure_rows(view: RunView, n: int, kind: str) -> Found:
    """The first ``n`` current failure rows of ``kind`` (in shard order; a row failed twice shows its newest)."""
    current = view.current_failures(["row_id", "error_kind"])
    kinds: Counter[str] = Counter()
    if current is not None:
        kinds.update(str(k) for k in current.column("error_kind").to_pylist())
    if kind not in kinds:
        held = rundata.kinds(dict(kinds)) or "none"
        if kind in _KNOWN_KINDS:
            return Found([], f"no row of {view.dir} failed with {kind} (failed rows by kind: {held})")
        raise ShowError(
            f"--status {kind}: unknown status; give {', '.join(DATA_STATUSES)} or a failure kind "
            f"({view.dir} holds failures: {held})"
        )
    assert current is not None
    ids = current.filter(pc.equal(current.column("error_kind"), kind)).column("row_id").combine_chunks()
    picked: dict[Any, dict[str, Any]] = {}  # row_id -> its newest row of this kind (insertion order kept)
    for batch in view.iter_batches(FAILURES, _FAILURE_COLUMNS, BATCH_ROWS):
        mask = pc.and_(pc.equal(batch.column("error_kind"), kind), pc.is_in(batch.column("row_id"), value_set=ids))
        hit = batch.filter(pc.fill_null(mask, False))
        if not hit.num_rows:
            continue
        for row in hit.to_pylist():
            if row["row_id"] in picked or len(picked) < n:
                picked[row["row_id"]] = row
    return Found(list(picked.values()))


# ---------------------------------------------------------------------------- formatting

#: a piece of output and what it is (None: plain text; "head", "label", DELETE, INSERT, SKIP, "error")
Piece = tuple[str, str | None]


def _indent(text: str, by: str = "  ") -> str:
    return "\n".join(by + line if line.strip() else "" for line in text.split("\n"))


def _indent_breaks(text: str) -> str:
    """Whitespace or words inside the indented diff: every line break indents the next line (blank lines
    stay empty)."""
    if "\n" not in text:
        return text
    lines = text.split("\n")
    return "\n".join([lines[0]] + [("  " + ln) if ln.strip() or i == len(lines) - 1 else ln.rstrip(" \t")
                                    for i, ln in enumerate(lines[1:], 1)])


def _cut(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit:
        return text
    return text[:limit].rstrip() + f"… ({len(text):,} chars)"


def _num(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def format_row(row: dict[str, Any], *, full: bool = False) -> list[Piece]:
    """One row as pieces of text, each tagged with what it is (the renderers give tags markers or colours)."""
    task = row.get("task") or ""
    task_line = task if full else _cut(" ".join(task.split()), TASK_CHARS)
    if "error_kind" in row:
        student = row["error_kind"] in _STUDENT_ANSWERED
        raw = row.get("student_solution") if student else row.get("raw_output")
        name = "student answer" if student else "raw output"
        pieces: list[Piece] = [
            (f"── row_id {row['row_id']!r} · failed: {row['error_kind']}"
             + (f" · finish_reason {row['finish_reason']}" if row.get("finish_reason") else ""), "head"),
            ("\n", None), ("task: ", "label"), (task_line, None), ("\n", None),
            ("error: ", "label"), (str(row.get("error_message") or "-"), "error"), ("\n", None),
        ]
        if raw:
            head = raw if full or len(raw) <= RAW_CHARS else raw[:RAW_CHARS]
            what = name if head is raw else f"{name} (first {RAW_CHARS} of {len(raw):,} chars)"
            pieces += [(what + ":", "label"), ("\n", None), (_indent(head), None)]
        else:
            pieces += [(f"{name}: ", "label"), ("empty" if student else "none (no answer came back)", None)]
        return pieces
    head = (f"── row_id {row['row_id']!r} · {row['status']} · jaccard {_num(row.get('jaccard'), '.3f')} · "
            f"levenshtein {_num(row.get('levenshtein'), 'd')} · length ratio {_num(row.get('length_ratio'), '.3f')}")
    original, revision = row.get("student_solution") or "", row.get("revision") or ""
    runs = word_diff(original, revision)
    pieces = [(head, "head"), ("\n", None), ("task: ", "label"), (task_line, None), ("\n", None)]
    if not changed(runs):
        same = "identical to the original" if original == revision else "the original up to whitespace"
        pieces += [(f"revision ({same}):", "label"), ("\n", None), (_indent(revision), None), ("\n", None)]
    else:
        shown = elide(runs, -1 if full else CONTEXT_WORDS)
        pieces += [("diff:", "label"), ("\n", None), ("  ", None)]
        for i, r in enumerate(shown):
            sep = separator(shown, i)
            if sep:
                pieces.append((_indent_breaks(sep), None))
            text = skipped(r) if r.kind == SKIP else _indent_breaks(r.text)
            pieces.append((text, r.kind if r.kind in (DELETE, INSERT, SKIP) else None))
        pieces.append(("\n", None))
    rational = row.get("rational")
    pieces += [("rationale:", "label"), ("\n", None), (_indent(rational) if rational else "  -", None)]
    return pieces


def render_plain(pieces: list[Piece]) -> str:
    """Pieces as text, with ``[-...-]`` / ``{+...+}`` around deleted / inserted words."""
    out = []
    for text, tag in pieces:
        if tag == DELETE:
            out.append(f"[-{text}-]")
        elif tag == INSERT:
            out.append(f"{{+{text}+}}")
        else:
            out.append(text)
    return "".join(out)


_STYLES = {"head": "bold cyan", "label": "bold", DELETE: "red strike", INSERT: "bold green", SKIP: "dim italic",
           "error": "red"}


class _Writer:
    """Writes pieces to ``out``: plain text, or rich colours (``color``)."""

    def __init__(self, out: TextIO, color: bool):
        self.out = out
        self.console = None
        if color:
            from rich.console import Console

            self.console = Console(file=out, highlight=False, markup=False, emoji=False, force_terminal=True)

    def line(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text, style="dim")
        else:
            self.out.write(text + "\n")

    def pieces(self, pieces: list[Piece]) -> None:
        if self.console is None:
            self.out.write(render_plain(pieces) + "\n")
            return
        from rich.text import Text

        t = Text()
        for text, tag in pieces:
            t.append(text, style=_STYLES.get(tag, "") if tag else "")
        self.console.print(t)


# ---------------------------------------------------------------------------- the command


def show_run(run_dir: Path, *, n: int = DEFAULT_N, row_id: str | None = None, status: str | None = None,
             full: bool = False, color: bool = False, out: TextIO | None = None) -> int:
    """Print the picked rows of ``run_dir`` to ``out`` (stdout); 0, or ShowError / RunStateError (exit 2)."""
    out = out if out is not None else sys.stdout
    view = rundata.open_run(run_dir)
    rundata.require_revisions(view, "clair show")
    for warning in rundata.run_warnings(view):
        print(f"warning: {warning}", file=sys.stderr)
    found = find_rows(view, n=n, row_id=row_id, status=status)
    w = _Writer(out, color)
    if not found.rows:
        w.line(found.note or "no rows")
        out.flush()
        return 0
    if any("status" in r for r in found.rows):
        w.line(COLOR_LEGEND if color else LEGEND)
    for row in found.rows:
        w.line("")
        w.pieces(format_row(row, full=full))
    out.flush()  # a closed pipe shows here, inside the command, not at the interpreter's exit
    return 0


def use_color(out: TextIO, plain: bool) -> bool:
    """Colours only on a terminal, unless ``--plain``, ``NO_COLOR`` or ``TERM=dumb``."""
    if plain or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def cmd_show(args: argparse.Namespace) -> int:
    return show_run(Path(args.run_dir), n=args.n, row_id=args.row_id, status=args.status, full=args.full,
                    color=use_color(sys.stdout, args.plain))
