"""clair-engine: create CLAIR preference data at scale.

The public API (the ``clair`` command is a thin shell over it)::

    from engine import load_config, run_job, load_results
    cfg = load_config("configs/demo.yaml", ["output.dir=runs/x"])
    report = run_job(cfg)                 # or: await arun_job(cfg) inside a running loop
    ds = load_results(report.run_dir)     # a datasets.Dataset of the revised rows
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.core.config import GenerateConfig, JobConfig, load_config
    from engine.core.errors import (
        BudgetReached,
        ClairError,
        EndpointsDown,
        QualityGuardTripped,
        RunStopped,
        UserError,
    )
    from engine.runner import RunReport, arun_job, run_job
    from engine.store import load_results

#: where each public name lives; imported on first use (PEP 562), so that ``import engine.cli`` stays
#: light and a ``clair run`` process can choose its memory settings before pyarrow is loaded
_LAZY = {
    "JobConfig": "core.config", "GenerateConfig": "core.config", "load_config": "core.config",
    "ClairError": "core.errors", "UserError": "core.errors", "RunStopped": "core.errors",
    "BudgetReached": "core.errors", "QualityGuardTripped": "core.errors", "EndpointsDown": "core.errors",
    "load_results": "store",
    "RunReport": "runner", "arun_job": "runner", "run_job": "runner",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BudgetReached",
    "ClairError",
    "EndpointsDown",
    "QualityGuardTripped",
    "RunStopped",
    "GenerateConfig",
    "JobConfig",
    "RunReport",
    "UserError",
    "__version__",
    "arun_job",
    "load_config",
    "load_results",
    "run_job",
]
