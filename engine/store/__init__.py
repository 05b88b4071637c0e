"""L3: the run directory (journal, shards, manifest and lock, readers)."""
