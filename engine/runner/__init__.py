"""The runner (L4): wires source → prepare → pool → record → store for one job.

``run_job`` is the one code path for the CLI and for notebooks (``arun_job`` is its async form)."""

from engine.runner.job import Job, arun_job, run_job
from engine.runner.report import RunReport

__all__ = ["Job", "RunReport", "arun_job", "run_job"]
