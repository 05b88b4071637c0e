"""What a job takes from its config and its run directory before the pipe starts (L4): the output budget a
resumed run keeps, the spending budget of the whole run, and the stored answers of earlier runs to reuse.
Plain functions; ``Job`` calls each once."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from engine.core.config import JobConfig
from engine.core.errors import RunStateError
from engine.policy.budget import Budget, earlier_spending
from engine.stages import keep_run_max_tokens
from engine.store import ReuseIndex, archive_dirs, read_manifest

log = logging.getLogger("clair")


def kept_max_tokens(cfg: JobConfig, run_dir: Path) -> JobConfig:
    """A run made with a fixed max_tokens resumes with it (``generation.max_tokens: auto`` is the default)."""
    try:
        m = read_manifest(run_dir) if run_dir.is_dir() else None
    except (RunStateError, OSError):
        return cfg  # RunStore.open says what is wrong
    kept, changed = keep_run_max_tokens(cfg, (m or {}).get("fingerprint"))
    if changed:
        log.warning("%s was made with generation.max_tokens %s: it keeps it (--new-run starts a run with "
                    "max_tokens: auto)", run_dir, kept.generation.get("max_tokens", "unset"))
    return kept


def run_budget(cfg: JobConfig, sessions: list[dict[str, Any]], run_dir: Path,
               stages: list[tuple[str, JobConfig]] | None = None) -> dict[str, Budget] | None:
    """The budget of the whole run (``budget.*``), counting what the run directory's earlier sessions spent
    (their reports); None without a budget. ``stages``: (name, the stage's config) of each stage, the last
    being the run's own (default: one stage, ``cfg``); every stage spends from one budget at its own prices."""
    b = cfg.budget
    if b.max_usd is None and b.max_output_tokens is None:
        return None
    stages = stages or [("", cfg)]
    out: dict[str, Budget] = {}
    shared: Budget | None = None
    unknown = 0
    for i, (name, scfg) in enumerate(stages):
        last = i == len(stages) - 1
        prompt, output, unknown = earlier_spending(sessions, None if last else name)
        p = scfg.pricing
        budget = Budget(default_max_tokens=scfg.max_tokens, max_usd=b.max_usd, max_output_tokens=b.max_output_tokens,
                        input_per_million=p.input_per_million or 0.0, output_per_million=p.output_per_million or 0.0,
                        prompt_tokens_before=prompt, output_tokens_before=output, shared=shared)
        shared = shared or budget
        out[name] = budget
    if unknown:
        log.warning("%d earlier session(s) of %s ended without a report (killed?): what they spent is not "
                    "counted in the budget", unknown, run_dir)
    return out


def reuse_index(cfg: JobConfig, run_dir: Path) -> ReuseIndex | None:
    """Stored answers of earlier runs to take instead of new requests: this output dir's archives
    (``run.reuse_archived``) and ``run.reuse_from``."""
    named = [cfg.resolve(d) for d in cfg.run.reuse_from]
    dirs = (archive_dirs(run_dir) if cfg.run.reuse_archived else []) + named
    return ReuseIndex.build(dirs, named=named, exclude=run_dir) if dirs else None
