"""``make demo``: run a bundled config against the bundled mock endpoint (no network).

``python -m engine.tools.demo [CONFIG]`` (default ``configs/demo.yaml``: revise the bundled sample).
It starts ONE mock on a free port and points the config's endpoints at it with ``--set``: for a
two-stage config (a ``generate:`` section, e.g. ``configs/two-stage-demo.yaml``) the mock also serves
the student model (``--student-model``) and both ``generate.endpoints.0.url`` and ``endpoints.0.url``
name it. A bundled config's run directory is removed first (the demo starts fresh); another config's
run resumes. ``mock_args`` and ``clair_args`` say what is run, and are pure.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from engine.cli import main as clair_main
from engine.commands.show import show_run, use_color
from engine.core.config import read_yaml
from engine.store import DATA, RunView
from engine.tools.mockserver_proc import MockProcess

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "configs" / "demo.yaml"
#: the mock's behaviour in the demo: a realistic spread of latencies, a fixed seed
MOCK_LATENCY = ["--latency-ms", "200", "--latency-dist", "lognormal", "--seed", "7"]


def first_revised(run_dir: Path) -> Any:
    """The row_id of the first data row whose revision differs from the original (Levenshtein > 0), or None."""
    for batch in RunView.open(run_dir).iter_batches(DATA, ["row_id", "levenshtein"], 1024):
        hits = batch.filter(pc.fill_null(pc.greater(batch.column("levenshtein"), 0), False))
        if hits.num_rows:
            return hits.column("row_id")[0].as_py()
    return None


def _first_model(section: Any) -> str | None:
    """The model of a config section's first endpoint (``{endpoints: [{model: ...}]}``), or None."""
    if isinstance(section, dict):
        eps = section.get("endpoints")
        if isinstance(eps, list) and eps and isinstance(eps[0], dict) and isinstance(eps[0].get("model"), str):
            return str(eps[0]["model"])
    return None


def student_model(raw: dict[str, Any]) -> str | None:
    """The student model a two-stage config asks for (its ``generate.endpoints.0.model``), or None."""
    return _first_model(raw.get("generate"))


def mock_args(raw: dict[str, Any]) -> list[str]:
    """The mock-server flags for a config: the demo's latency, the teacher's model name (when the config
    has ``endpoints:``) and, for a two-stage config, ``--student-model``."""
    args = list(MOCK_LATENCY)
    teacher = _first_model(raw)
    if teacher is not None:
        args += ["--model", teacher]
    student = student_model(raw)
    if student is not None:
        args += ["--student-model", student]
    return args


def clair_args(config: Path, raw: dict[str, Any], url: str, run_dir: Path) -> list[str]:
    """``clair run`` for a config against the mock at ``url``: every endpoint section points at it, a
    relative input path is the bundled file when there is one, and the output goes to ``run_dir``."""
    sets = []
    if raw.get("endpoints"):
        sets.append(f"endpoints.0.url={url}")
    if student_model(raw) is not None:
        sets.append(f"generate.endpoints.0.url={url}")
    inp = raw.get("input")
    path = inp.get("path") if isinstance(inp, dict) else None
    if isinstance(path, str) and not Path(path).is_absolute() and (ROOT / path).exists():
        sets.append(f"input.path={ROOT / path}")  # the demo runs from any directory
    sets.append(f"output.dir={run_dir}")
    args = ["run", str(config)]
    for s in sets:
        args += ["--set", s]
    return [*args, "--progress", "plain"]


def run_dir_of(raw: dict[str, Any]) -> Path:
    out = raw.get("output")
    d = out.get("dir") if isinstance(out, dict) else None
    return Path(d if isinstance(d, str) and d else "runs/demo")


def _config_path(arg: str | None) -> Path:
    if arg is None:
        return DEFAULT_CONFIG
    p = Path(arg)
    if not p.exists() and not p.is_absolute() and (ROOT / p).exists():
        return ROOT / p  # a bundled config named from another directory
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.tools.demo",
                                 description="Run a bundled config against the bundled mock endpoint.")
    ap.add_argument("config", nargs="?", default=None,
                    help="the config to run (default: configs/demo.yaml; configs/two-stage-demo.yaml runs both "
                         "stages)")
    config = _config_path(ap.parse_args(argv).config)
    raw = read_yaml(config)
    run_dir = run_dir_of(raw)
    bundled = config.resolve().parent == (ROOT / "configs").resolve()
    if bundled and run_dir.exists():
        shutil.rmtree(run_dir)  # a bundled demo always starts fresh
    student = student_model(raw)
    revises = bool(raw.get("endpoints"))
    with MockProcess(mock_args(raw)) as mock:
        serves = f"; it also answers as the student model {student}" if student else ""
        print(f"demo: mock endpoint at {mock.url} (200 ms mean latency{serves})")
        code = clair_main(clair_args(config, raw, mock.url, run_dir))
        st = mock.stats()
    if student:
        print(f"demo: the mock answered {st['student_completions']} student requests and "
              f"{st['completions'] - st['student_completions']} teacher requests")
    if code != 0:
        return code
    from engine.store.readers import load_results

    ds = load_results(run_dir)
    what = "revised" if revises else "answered"
    print(f"demo: {len(ds)} {what} rows in {run_dir}/data (load with datasets.load_dataset('parquet', "
          f"data_dir='{run_dir}/data'))")
    rid = first_revised(run_dir) if revises else None
    if rid is not None:
        print(f"demo: one pair, as `clair show {run_dir} --row-id {rid}` prints it:")
        show_run(run_dir, row_id=str(rid), color=use_color(sys.stdout, plain=False))
        print()
    print(f"demo: next: clair show {run_dir}  |  clair status {run_dir}  |  clair stats {run_dir}  |  "
          f"clair export {run_dir} --format trl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
