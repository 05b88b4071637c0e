"""clair-engine: create CLAIR preference data at scale.

The public API (the ``clair`` command is a thin shell over it)::

    from engine import load_config, run_job, load_results
    cfg = load_config("configs/demo.yaml", ["output.dir=runs/x"])
    report = run_job(cfg)                 # or: await arun_job(cfg) inside a running loop
    ds = load_results(report.run_dir)     # a datasets.Dataset of the revised rows
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import JobConfig, load_config  # noqa: E402
from .errors import ClairError, UserError  # noqa: E402
from .results import load_results  # noqa: E402
from .runner import RunReport, arun_job, run_job  # noqa: E402

__all__ = [
    "ClairError",
    "JobConfig",
    "RunReport",
    "UserError",
    "__version__",
    "arun_job",
    "load_config",
    "load_results",
    "run_job",
]
