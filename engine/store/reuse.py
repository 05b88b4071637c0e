"""Answers already paid for, found by their request's content key, so that the same request is never bought
twice (L3; reads other run directories, writes nothing).

Every row a run records carries ``request_key``: a hash of the exact request (model, generation
parameters, rendered messages). :class:`ReuseIndex` indexes the keys of the answers stored in earlier run
directories (this output dir's archives ``DIR.old-*`` and ``run.reuse_from``) and hands a stored answer
back for a key. Memory stays small and flat: the index is three numpy arrays (32 bytes of key and 8 of
location per stored answer), and answers are read one Parquet row group (500 rows) at a time; the last
:data:`CACHED_GROUPS` groups are kept (rows are stored in about the order they are asked for: completion
order, data and failures apart).

Reusable answers: every data row, and failure rows whose answer came back but could not be parsed (they
are parsed again with this run's parser and markers). Rows that failed without an answer (timeouts,
5xx, invalid input) are not. Run directories made before request keys existed have none to offer.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.core.errors import RunStateError
from engine.core.types import Completion
from engine.records import PARSE_FAILURES
from engine.store import manifest as mf
from engine.store.fs import LocalStorage, Storage
from engine.store.shards import DATA, FAILURES, shard_names

log = logging.getLogger("clair")

#: row groups of stored answers kept in memory (~1.7 MB each at ~3.5 KB per answer)
CACHED_GROUPS = 8

#: the columns an answer is rebuilt from
ANSWER_COLUMNS = ["raw_output", "reasoning_content", "finish_reason", "served_model", "model_name", "endpoint",
                  "prompt_tokens", "completion_tokens", "reasoning_tokens", "latency_s"]


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    completion: Completion
    model: str | None  # the model that was requested
    endpoint: str | None
    source: str  # the run directory's name, for ``reused_from``


@dataclass(frozen=True, slots=True)
class _Shard:
    source: int
    storage: Storage
    name: str
    group_starts: np.ndarray  # first row of each row group (ascending)


class ReuseIndex:
    def __init__(self, keys: np.ndarray, shard: np.ndarray, row: np.ndarray, shards: list[_Shard],
                 sources: list[str]):
        self._keys, self._shard, self._row = keys, shard, row
        self._shards, self._sources = shards, sources
        self._cached: OrderedDict[tuple[int, int], pa.Table] = OrderedDict()  # (shard, row group): answers

    def __len__(self) -> int:
        return len(self._keys)

    @classmethod
    def build(cls, dirs: list[Path], *, named: Sequence[Path] = (), exclude: Path | None = None) -> ReuseIndex | None:
        """The index of every reusable answer stored in ``dirs`` (``exclude``, the run itself, is skipped).
        A directory that is not a run is a RunStateError when the user ``named`` it (``run.reuse_from``),
        else skipped with a log line (an archived folder that never was a run). None: nothing to reuse."""
        keys: list[np.ndarray] = []
        shard_ix: list[np.ndarray] = []
        rows: list[np.ndarray] = []
        shards: list[_Shard] = []
        sources: list[str] = []
        for d in dirs:
            if exclude is not None and d.resolve() == exclude.resolve():
                continue
            st = LocalStorage(d)
            if not d.is_dir() or mf.load(st) is None:
                if d in named:
                    raise RunStateError(f"run.reuse_from names {d}, which is not a clair run directory; fix the path")
                log.info("%s is not a clair run directory; its files are not reused", d)
                continue
            src = len(sources)
            sources.append(d.name)
            for kind in (DATA, FAILURES):
                for name in shard_names(st, kind):
                    found = _shard_keys(st, name, kind)
                    if found is None:
                        continue
                    k, r, starts = found
                    shard_ix.append(np.full(len(k), len(shards), dtype=np.int32))
                    shards.append(_Shard(src, st, name, starts))
                    keys.append(k)
                    rows.append(r)
        if not keys or not sum(len(k) for k in keys):
            return None
        all_keys = np.concatenate(keys)
        order = np.argsort(all_keys, kind="stable")  # the first stored answer of a key wins
        index = cls(all_keys[order], np.concatenate(shard_ix)[order], np.concatenate(rows)[order], shards, sources)
        log.info("reusing stored answers: %d from %s", len(index), ", ".join(sources))
        return index

    def get(self, key: str) -> StoredAnswer | None:
        """The stored answer of a request, or None."""
        k = key.encode()
        i = int(np.searchsorted(self._keys, k))
        if i >= len(self._keys) or self._keys[i] != k:
            return None
        shard = self._shards[int(self._shard[i])]
        row = int(self._row[i])
        group = int(np.searchsorted(shard.group_starts, row, side="right")) - 1
        table = self._group(int(self._shard[i]), shard, group)
        r = table.slice(row - int(shard.group_starts[group]), 1).to_pylist()[0]
        comp = Completion(
            content=r["raw_output"] or "",
            finish_reason=r["finish_reason"],
            model=r["served_model"],
            reasoning_content=r["reasoning_content"],
            prompt_tokens=r["prompt_tokens"],
            completion_tokens=r["completion_tokens"],
            reasoning_tokens=r["reasoning_tokens"],
            latency_s=r["latency_s"] or 0.0,
        )
        return StoredAnswer(comp, r["model_name"], r["endpoint"], self._sources[shard.source])

    def _group(self, ix: int, shard: _Shard, group: int) -> pa.Table:
        cached = self._cached.get((ix, group))
        if cached is not None:
            self._cached.move_to_end((ix, group))
            return cached
        try:
            with shard.storage.open_input(shard.name) as src, pq.ParquetFile(src) as pf:
                table = pf.read_row_group(group, columns=ANSWER_COLUMNS)
        except (pa.ArrowException, OSError) as e:
            raise _unreadable(shard.storage, shard.name, e) from None
        self._cached[(ix, group)] = table
        if len(self._cached) > CACHED_GROUPS:
            self._cached.popitem(last=False)
        return table


def _unreadable(st: Storage, name: str, e: BaseException) -> RunStateError:
    return RunStateError(f"{st.where}/{name}, whose answers would be reused, cannot be read "
                         f"({str(e).splitlines()[0][:120] if str(e) else e!r}); move that run directory away "
                         "(or leave it out of run.reuse_from / set run.reuse_archived: false)")


def _shard_keys(st: Storage, name: str, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(keys, row numbers, row-group starts) of a shard's reusable answers; None without request keys."""
    try:
        with st.open_input(name) as src, pq.ParquetFile(src) as pf:
            if "request_key" not in pf.schema_arrow.names:
                return None  # made before request keys existed
            cols = ["request_key"] + (["error_kind"] if kind == FAILURES else [])
            t = pf.read(columns=cols)
            sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(st, name, e) from None
    keys = t.column("request_key")
    ok = pc.is_valid(keys)
    if kind == FAILURES:  # only failures that hold an answer (it could not be parsed)
        ok = pc.and_(ok, pc.is_in(t.column("error_kind"), value_set=pa.array(sorted(PARSE_FAILURES))))
    rows = np.flatnonzero(np.asarray(ok.to_numpy(zero_copy_only=False), dtype=bool))
    if not len(rows):
        return None
    k = np.array(keys.take(pa.array(rows)).to_pylist(), dtype="S32")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return k, rows.astype(np.int64), starts
