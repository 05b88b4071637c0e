"""L4: the commands besides `run` (dry run, status, reparse, export, stats)."""
