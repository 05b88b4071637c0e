"""``clair reparse RUN_DIR``: parse the stored raw outputs again with this version's parser (L4).

No request is sent: every answer's raw text is in the shards. Shard pair N (data/N + failures/N) is
rewritten together: both new files are written to temp names and fsynced, an intent file naming the
renames is committed, the renames are done, the intent is deleted. A crash in between is finished by
``finish_pending`` on the next start, so a row never ends up in both or in neither.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from engine import records
from engine.core.errors import RunStateError
from engine.core.types import Markers
from engine.parse import PARSER_VERSION
from engine.store import readers as results
from engine.store.journal import list_segments
from engine.store.manifest import RunLock, read_manifest, write_manifest
from engine.store.shards import DATA, FAILURES, fsync_dir, list_shards, shard_number, shard_path

INTENT = "reparse-intent.json"


def finish_pending(run_dir: Path) -> None:
    """Complete renames of an interrupted reparse (idempotent)."""
    p = run_dir / INTENT
    if not p.exists():
        return
    try:
        pairs = orjson.loads(p.read_bytes())
    except orjson.JSONDecodeError:  # torn intent: the renames never started; temps are dropped later
        p.unlink()
        return
    for tmp, final in pairs:
        if Path(tmp).exists():
            os.replace(tmp, final)
    for _, final in pairs:
        marker = Path(final + ".delete")
        if marker.exists():
            with contextlib.suppress(FileNotFoundError):
                Path(final).unlink()
            marker.unlink()
    p.unlink()
    fsync_dir(run_dir)


def _write_tmp(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> Path:
    tmp = path.with_suffix(".parquet.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp, compression="zstd")
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def reparse_run(run_dir: Path) -> dict[str, int]:
    manifest = read_manifest(run_dir) if run_dir.exists() else None
    if manifest is None:
        raise RunStateError(f"{run_dir} is not a clair run directory (no manifest.json); check the path")
    if list_segments(run_dir / "journal"):
        raise RunStateError(
            f"{run_dir} has unfinished journal segments; run `clair run` on it first (it resumes), then reparse"
        )
    lock = RunLock(run_dir)
    lock.acquire()
    try:
        finish_pending(run_dir)
        results.compact_failures(run_dir)  # superseded failures must not come back as revisions
        m = manifest.get("markers") or {}
        markers = Markers(**{k: tuple(v) for k, v in m.items()}) if m else Markers()
        max_tokens = int(((manifest.get("config") or {}).get("generation") or {}).get("max_tokens") or 4096)
        stats = {"rows": 0, "to_data": 0, "to_failures": 0, "changed": 0}
        numbers = sorted({shard_number(p) for k in (DATA, FAILURES) for p in list_shards(run_dir, k)})
        for n in numbers:
            _reparse_pair(run_dir, n, markers, max_tokens, stats)
        manifest["parser_version"] = PARSER_VERSION
        write_manifest(run_dir, manifest)
        return stats
    finally:
        lock.release()


def _reparse_pair(run_dir: Path, n: int, markers: Markers, max_tokens: int, stats: dict[str, int]) -> None:
    paths = {k: shard_path(run_dir, k, n) for k in (DATA, FAILURES)}
    schemas: dict[str, pa.Schema] = {}
    old: dict[str, list[dict[str, Any]]] = {DATA: [], FAILURES: []}
    for k, p in paths.items():
        if p.exists():
            with pq.ParquetFile(p) as f:  # not read_table: no dataset scanner threads (apache/arrow#34314)
                t = f.read()
            schemas[k] = t.schema
            old[k] = t.to_pylist()
    if len(schemas) < 2:
        missing = DATA if DATA not in schemas else FAILURES
        schemas[missing] = records.other_schema(next(iter(schemas.values())), missing)
    new: dict[str, list[dict[str, Any]]] = {DATA: [], FAILURES: []}
    for kind, rows in old.items():
        for row in rows:
            if kind == FAILURES and (row.get("error_kind") not in records.PARSE_FAILURES or row.get("raw_output") is None):
                new[FAILURES].append(row)
                continue
            stats["rows"] += 1
            out = records.reparse_record(row, markers, max_tokens)
            dest = FAILURES if "error_kind" in out else DATA
            if dest != kind:
                stats["to_data" if dest == DATA else "to_failures"] += 1
            if dest == DATA and (kind != DATA or out.get("revision") != row.get("revision")
                                 or out.get("status") != row.get("status")):
                stats["changed"] += 1
            elif dest == FAILURES and kind == DATA:
                stats["changed"] += 1
            new[dest].append(out)
    pairs: list[tuple[str, str]] = []
    for k, p in paths.items():
        if new[k]:
            pairs.append((str(_write_tmp(p, new[k], schemas[k])), str(p)))
        elif p.exists():
            Path(str(p) + ".delete").touch()
            pairs.append((str(p) + ".none", str(p)))
    intent = run_dir / INTENT
    intent.write_bytes(orjson.dumps(pairs))
    fd = os.open(intent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    finish_pending(run_dir)
