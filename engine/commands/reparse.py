"""``clair reparse RUN_DIR``: parse the stored raw outputs again with this version's parser (L4).

No request is sent: every answer's raw text is in the shards. Each shard pair (data/N + failures/N) is
parsed again here and replaced, all or nothing, by the run store (:meth:`RunStore.rewrite_pair`; an
interrupted one is finished on the next start), so a row never ends up in both or in neither.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from engine import records
from engine.core.errors import RunStateError
from engine.core.types import Markers
from engine.parse import PARSER_VERSION
from engine.store import RunStore
from engine.store.shards import DATA, FAILURES


def reparse_run(run_dir: Path) -> dict[str, int]:
    with RunStore.open_existing(run_dir) as store:
        fp = store.manifest.get("fingerprint") or {}
        if "generate" in fp and "prompt" not in fp:
            raise RunStateError(f"{run_dir} is a generation-only run: its rows are student answers, not CLAIR "
                                "revisions; there is nothing to re-parse")
        if store.journal_segments():
            raise RunStateError(
                f"{run_dir} has unfinished journal segments; run `clair run` on it first (it resumes), then reparse"
            )
        store.supersede_failures()  # superseded failures must not come back as revisions
        manifest = store.manifest
        m = manifest.get("markers") or {}
        markers = Markers(**{k: tuple(v) for k, v in m.items()}) if m else Markers()
        config = manifest.get("config") or {}
        mt = (config.get("generation") or {}).get("max_tokens")  # "auto": each row's max_tokens column
        max_tokens = mt if isinstance(mt, int) else int((config.get("max_tokens_auto") or {}).get("cap") or 4096)
        stats = {"rows": 0, "to_data": 0, "to_failures": 0, "changed": 0}
        for n in store.shard_numbers():
            old = {k: store.read_shard(k, n) for k in (DATA, FAILURES)}
            new = _reparse_pair(old, markers, max_tokens, stats)
            store.rewrite_pair(n, new[DATA], new[FAILURES])
        store.update_manifest(parser_version=PARSER_VERSION)
        return stats


def _reparse_pair(old: dict[str, pa.Table | None], markers: Markers, max_tokens: int,
                  stats: dict[str, int]) -> dict[str, pa.Table]:
    """A shard pair's rows parsed again: which rows go to data/ and which to failures/ now."""
    schemas = {k: t.schema for k, t in old.items() if t is not None}
    if len(schemas) < 2:
        missing = DATA if DATA not in schemas else FAILURES
        schemas[missing] = records.other_schema(next(iter(schemas.values())), missing)
    new: dict[str, list[dict[str, Any]]] = {DATA: [], FAILURES: []}
    for kind, table in old.items():
        for row in table.to_pylist() if table is not None else []:
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
    return {k: pa.Table.from_pylist(rows, schema=schemas[k]) for k, rows in new.items()}
