"""Writing synthetic rows to a file (Parquet, Arrow IPC, JSON Lines, JSON, CSV), and the bundled demo sample.

``write_sample`` streams ``rows.raw_rows`` in chunks of ``_CHUNK`` rows (memory stays flat for
millions of rows) into the format named by the extension. ``DEMO_SAMPLE`` is the bundled demo input
(240 rows, seed 7). pyarrow is imported only when a file is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.tools.synthetic.rows import generate_rows, raw_rows

__all__ = ["DEMO_SAMPLE", "FORMATS", "write_sample"]

#: the bundled demo input (240 rows, seed 7)
DEMO_SAMPLE = Path(__file__).resolve().parents[2] / "data" / "demo_sample.jsonl"

#: file formats ``write_sample`` understands (by extension)
FORMATS = ("parquet", "jsonl", "json", "csv", "arrow")

_CHUNK = 4096


def _schema() -> Any:
    import pyarrow as pa

    msg = pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))
    return pa.schema([("prompt", pa.string()), ("chosen", msg), ("rejected", msg), ("rational", pa.string())])


def _batches(n: int, seed: int) -> Iterator[Any]:
    """Record batches of at most ``_CHUNK`` rows (never all rows in memory)."""
    import pyarrow as pa

    schema = _schema()
    msg_type = schema.field("chosen").type
    it = raw_rows(n, seed, 0)
    done = 0
    while done < n:
        m = min(_CHUNK, n - done)
        rows = [next(it) for _ in range(m)]
        tasks = [t[0] for t in rows]
        offsets = pa.array(range(0, 2 * m + 1, 2), pa.int32())
        roles = pa.array(["user", "assistant"] * m, pa.string())
        cols = [pa.array(tasks, pa.string())]
        for k in (1, 2):
            flat: list[str] = [""] * (2 * m)
            flat[0::2] = tasks
            flat[1::2] = [t[k] for t in rows]
            structs = pa.StructArray.from_arrays([pa.array(flat, pa.string()), roles], fields=list(msg_type.value_type))
            cols.append(pa.ListArray.from_arrays(offsets, structs, type=msg_type))
        cols.append(pa.array([t[3] for t in rows], pa.string()))
        yield pa.RecordBatch.from_arrays(cols, schema=schema)
        done += m


def write_sample(path: str | Path, n: int, seed: int = 0, fmt: str | None = None) -> None:
    """Write ``n`` synthetic rows to ``path``; the format comes from the extension unless ``fmt`` is given.

    ``.parquet`` / ``.arrow`` (IPC file) / ``.jsonl`` / ``.json`` (one JSON array) hold the full layout;
    ``.csv`` is flattened to two columns: ``prompt`` and ``solution`` (the student answer).
    Rows are streamed in chunks of ``_CHUNK``, so memory stays flat for millions of rows.
    """
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt == "ipc":
        fmt = "arrow"
    if fmt not in FORMATS:
        raise ValueError(f"unknown sample format {fmt!r} (expected one of {', '.join(FORMATS)})")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt in ("jsonl", "json"):
        _write_json(path, n, seed, array=fmt == "json")
        return

    import pyarrow as pa

    if fmt == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetWriter(str(path), _schema(), compression="zstd", use_dictionary=False) as pw:
            for batch in _batches(n, seed):
                pw.write_batch(batch)
            if n == 0:
                pw.write_table(_schema().empty_table())
    elif fmt == "arrow":
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, _schema()) as w:
            for batch in _batches(n, seed):
                w.write_batch(batch)
    else:  # csv
        import pyarrow.csv as pacsv

        schema = pa.schema([("prompt", pa.string()), ("solution", pa.string())])
        with pacsv.CSVWriter(str(path), schema) as w:
            it = raw_rows(n, seed, 0)
            done = 0
            while done < n:
                m = min(_CHUNK, n - done)
                rows = [next(it) for _ in range(m)]
                w.write_batch(pa.RecordBatch.from_arrays(
                    [pa.array([t[0] for t in rows], pa.string()), pa.array([t[2] for t in rows], pa.string())],
                    schema=schema))
                done += m


def _write_json(path: Path, n: int, seed: int, *, array: bool) -> None:
    import orjson  # a dependency of the engine; ~25x faster than json for these rows

    with open(path, "wb") as fh:
        if array:
            fh.write(b"[")
        for i, row in enumerate(generate_rows(n, seed)):
            if array:
                fh.write((b"\n" if i == 0 else b",\n") + orjson.dumps(row))
            else:
                fh.write(orjson.dumps(row) + b"\n")
        if array:
            fh.write(b"\n]\n")
