"""Helpers for the tests that run `clair` against the mock (imported as `helpers`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from engine.tools.synthetic.files import write_sample

ROOT = Path(__file__).resolve().parent.parent


def make_input(tmp_path: Path, n: int, name: str = "input.parquet", seed: int = 0) -> Path:
    p = tmp_path / name
    write_sample(str(p), n, seed=seed)
    return p


def write_config(tmp_path: Path, url: str, input_path: Path, **sections: Any) -> Path:
    cfg: dict[str, Any] = {
        "input": {"path": str(input_path)},
        "prompt": {"variant": "distilabel"},
        "endpoints": [{"url": url, "model": "mock-clair", "max_concurrency": 16}],
        "generation": {"temperature": 0.7, "max_tokens": 4096},
        "output": {"dir": str(tmp_path / "run"), "rows_per_shard": 500},
        "retry": {"base_delay_s": 0.05, "max_delay_s": 0.5},
        "run": {"progress": "off"},
    }
    return _dump_config(tmp_path, cfg, sections)


def _dump_config(tmp_path: Path, cfg: dict[str, Any], sections: dict[str, Any]) -> Path:
    """``cfg`` with ``sections`` merged in (a mapping updates the section, anything else replaces it), as
    ``tmp_path/job.yaml``."""
    for k, v in sections.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def clair(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=e, cwd=ROOT)


def clair_popen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "engine.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)


def read_ids(run_dir: Path) -> tuple[list[Any], list[Any]]:
    """row_ids in data/ and (current) failures/ — raw, duplicates kept."""
    from engine.store import LocalStorage
    from engine.store.readers import current_failures  # not RunView: a run stopped early has no manifest

    data: list[Any] = []
    for p in sorted((run_dir / "data").glob("*.parquet")):
        data += pq.read_table(p, columns=["row_id"]).column("row_id").to_pylist()
    f = current_failures(LocalStorage(run_dir), ["row_id"])
    fails = f.column("row_id").to_pylist() if f is not None else []
    return data, fails


def assert_exactly_once(run_dir: Path, n: int) -> None:
    data, fails = read_ids(run_dir)
    assert len(data) == len(set(data)), "duplicate row_id in data/"
    assert not set(data) & set(fails), "row_id in both data/ and failures/"
    assert sorted(data + fails) == list(range(n)), "rows missing or extra"


# ------------------------------------------------------------------ two-stage runs (generate: + revise)

#: the student (policy) model name the mock serves with --student-model in the two-stage tests
STUDENT_MODEL = "mock-student"
#: the generate stage's sub-store inside a run directory
GENERATE = "stages/generate"


def make_prompts(tmp_path: Path, n: int, name: str = "prompts.parquet") -> Path:
    """A prompts file for a two-stage run: ``prompt`` (distinct texts) and ``chat``, a one-turn chat message
    list holding the same prompt (for ``input.columns.messages``). No student column."""
    import pyarrow as pa

    prompts = [f"Question {i}: how would you plan a garden of {i % 97 + 3} square metres on a budget?"
               for i in range(n)]
    chat = [[{"role": "user", "content": p}] for p in prompts]
    p = tmp_path / name
    pq.write_table(pa.table({"prompt": prompts, "chat": chat}), p)
    return p


def write_two_stage_config(tmp_path: Path, student_url: str, teacher_url: str | None, input_path: Path,
                           *, student_conc: int = 16, teacher_conc: int = 16, **sections: Any) -> Path:
    """A two-stage job (``generate:`` then the revise stage); ``teacher_url=None``: a generation-only job.
    ``sections`` update the config's sections like ``write_config`` (a dict merges into a dict)."""
    cfg: dict[str, Any] = {
        "input": {"path": str(input_path), "columns": {"task": "prompt"}},
        "generate": {"endpoints": [{"url": student_url, "model": STUDENT_MODEL, "max_concurrency": student_conc}],
                     "generation": {"temperature": 0.7, "max_tokens": 1024}},
        "prompt": {"variant": "distilabel"},
        "generation": {"temperature": 0.7, "max_tokens": 4096},
        "output": {"dir": str(tmp_path / "run"), "rows_per_shard": 500},
        "retry": {"base_delay_s": 0.05, "max_delay_s": 0.5},
        "run": {"progress": "off"},
    }
    if teacher_url is not None:
        cfg["endpoints"] = [{"url": teacher_url, "model": "mock-clair", "max_concurrency": teacher_conc}]
    return _dump_config(tmp_path, cfg, sections)


def durable_rows(run_dir: Path) -> int:
    """Rows finished in a run (or a stage sub-store) directory: journal records plus shard rows, duplicates
    counted. Cheap enough to poll while a run is writing (a shard being renamed in is read once or missed)."""
    n = 0
    for seg in (run_dir / "journal").glob("seg-*.log"):
        try:
            n += seg.read_bytes().count(b"\n")
        except FileNotFoundError:  # compacted just now
            pass
    for kind in ("data", "failures"):
        for shard in (run_dir / kind).glob("part-*.parquet"):
            try:
                n += pq.read_metadata(shard).num_rows
            except (FileNotFoundError, OSError):
                pass
    return n


def assert_stage_exactly_once(run_dir: Path, n: int, stage: str = GENERATE) -> None:
    """Every row once across the stage sub-store's data/ and failures/ (after a finished run: compacted)."""
    sub = run_dir / stage
    assert not list((sub / "journal").glob("seg-*.log")), f"{stage}: journal segments left after the run"
    assert_exactly_once(sub, n)
