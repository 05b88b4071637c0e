"""Start-up recovery of a run directory, in one place (L3).

Run under the run lock, before anything reads the shards:

1. finish an interrupted shard-pair rewrite (``clair reparse``'s intent file);
2. drop staged files a crash left behind (never committed: nothing refers to them);
3. compact every journal segment still there into its shards (a crash before, during or after a
   compaction: redoing it gives the same shards, and the segment is deleted only after they are
   committed).

After it, every row of the run is exactly once across ``data/`` and ``failures/`` (the supersession
rules in :mod:`engine.store.readers` decide between failure rows of one row_id).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.store.fs import Storage
from engine.store.rewrite import finish_rewrite
from engine.store.shards import ShardWriter


@dataclass(frozen=True, slots=True)
class Recovered:
    rewrite_finished: bool
    staged_dropped: int
    segments_compacted: int


def recover(storage: Storage, journal_dir: Path, writer: ShardWriter | None = None) -> Recovered:
    """Repair after a crash (idempotent). Without a ``writer`` leftover segments are left alone (the caller
    refuses to go on with them, e.g. ``clair reparse``)."""
    storage.refresh()
    finished = finish_rewrite(storage)
    dropped = storage.discard_staged()
    segments = writer.compact_leftovers(journal_dir) if writer is not None else 0
    return Recovered(finished, dropped, segments)
