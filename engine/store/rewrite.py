"""Rewriting committed shards (L3): dropping superseded failure rows, and replacing a shard pair
(``clair reparse``) all or nothing through an intent file.

Shard pair N (``data/N`` + ``failures/N``) is replaced together so that a row is never in both or in
neither: both new files are staged (complete, fsynced), then the intent ``reparse-intent.json`` naming
what to commit and what to delete is committed (that is the commit point), then the commits and deletes
are done and the intent is removed. A crash before the intent leaves the old pair (the staged files are
dropped on the next start); a crash after it is finished by :func:`finish_rewrite` on the next start
(:mod:`engine.store.recovery`), which is idempotent.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

import orjson
import pyarrow as pa

from engine.store.fs import Storage
from engine.store.readers import read_table, superseded
from engine.store.shards import DATA, FAILURES, shard_name, stage_table, write_table

INTENT = "reparse-intent.json"


def drop_superseded_failures(storage: Storage) -> int:
    """Rewrite failure shards without superseded rows (each shard atomically). Returns rows removed.

    Idempotent: a crash part way leaves every shard either old or rewritten, and the rules give the
    same current rows either way."""
    removed = 0
    for name, keep in list(superseded(storage)):
        if keep.all():
            continue
        removed += int((~keep).sum())
        if not keep.any():
            storage.delete(name)
        else:
            write_table(storage, name, read_table(storage, name).filter(pa.array(keep)))
    return removed


def rewrite_pair(storage: Storage, n: int, data: pa.Table | None, failures: pa.Table | None) -> None:
    """Replace shard pair ``n`` by these rows, all or nothing (a kind with no rows gets no shard)."""
    commit: list[str] = []
    delete: list[str] = []
    for kind, table in ((DATA, data), (FAILURES, failures)):
        name = shard_name(kind, n)
        if table is not None and table.num_rows:
            stage_table(storage, name, table)
            commit.append(name)
        elif storage.exists(name):
            delete.append(name)
    storage.write_atomic(INTENT, orjson.dumps({"commit": commit, "delete": delete}))
    finish_rewrite(storage)


def pending_rewrite(storage: Storage) -> bool:
    """Whether an interrupted rewrite waits to be finished."""
    return storage.exists(INTENT)


def finish_rewrite(storage: Storage) -> bool:
    """Finish an interrupted rewrite (idempotent). Returns whether there was one."""
    try:
        raw = storage.read_bytes(INTENT)
    except FileNotFoundError:
        return False
    try:
        commit, delete = _parse_intent(orjson.loads(raw))
    except (orjson.JSONDecodeError, ValueError, TypeError):
        # a torn intent (older code wrote it in place, not atomically): the commits never started; the
        # staged files are dropped with the other staged files
        storage.delete(INTENT)
        return True
    for name in commit:
        tmp = storage.local_temp(name)
        if tmp.exists():  # else: committed before the crash
            storage.commit(tmp, name)
    for name in delete:
        storage.delete(name)
        storage.delete(name + ".delete")  # the marker older code left beside it
    storage.delete(INTENT)
    return True


def _parse_intent(intent: Any) -> tuple[list[str], list[str]]:
    """(names to commit, names to delete). Also reads the intent older code wrote: a list of
    ``[tmp path, final path]`` pairs, where a tmp ending in ``.none`` meant "delete the final"."""
    if isinstance(intent, dict):
        return [str(x) for x in intent["commit"]], [str(x) for x in intent["delete"]]
    commit: list[str] = []
    delete: list[str] = []
    for tmp, final in intent:
        p = PurePath(final)
        name = f"{p.parent.name}/{p.name}"
        (delete if str(tmp).endswith(".none") else commit).append(name)
    return commit, delete
