"""``clair bench``: the engine against the bundled mock endpoint, measured from outside (L3).

A scenario is a named preset (:data:`PRESETS`) of data size, in-flight limit and mock behaviour
(latency, enforced rate limits, injected faults). :func:`run_scenario`:

1. makes (once per size, cached in ``DATA_DIR``) a Parquet input of UltraFeedback-shaped rows
   (:func:`engine.tools.synthetic.write_sample`: ~3 KB prompts, ~3.5 KB answers; never shrunken payloads);
2. starts ``clair mock-server`` as a child process with the scenario's behaviour;
3. runs the engine in ITS OWN process, exactly as a user does: ``python -m engine.cli run JOB.yaml
   --progress off``; while it runs, the bench samples every :data:`POLL_S` seconds the mock's
   ``GET /stats`` (request / response counters, the mock's own CPU) and ``/proc/PID`` of the engine
   (CPU, RSS, peak RSS); when it exits, ``os.wait4`` gives the engine's exact CPU time;
4. reads the engine's ``RUN/report.json`` (:class:`engine.runner.RunReport`) for rows, tokens,
   retries and latency percentiles, and combines it all into one JSON-able dict.

Definitions (the numbers ``clair bench`` prints)
------------------------------------------------
* **steady window**: from the first chat request the mock receives to the last chat response it
  sends (both seen in the sampled counters, so each edge is within ``POLL_S / 2``). It excludes the
  engine's process start-up (imports, config, input scan, ``GET /models``) and its shutdown (last
  shard, report). ``rows_per_s`` and ``output_tokens_per_s`` are per second of this window;
  ``engine_wall_s`` (the engine's own report, which includes start-up) is printed beside it.
* **theoretical limit** (:func:`theoretical_limit`): rows/s = min(concurrency / mean latency,
  rpm / 60, tpm / 60 / tokens per request), from the scenario's NOMINAL mock latency (the mean the
  mock is told to add), not the measured one (which includes the overheads being measured).
  Infinite (no limit: the run is CPU-bound) when every term is unbounded, e.g. at zero latency.
* **achieved fraction** (:func:`achieved_fraction`): window rows/s / limit.
* **engine CPU per 1,000 rows**: user+system CPU of the engine process (all its threads, start-up
  included: ``wait4``), per 1,000 rows finished; the steady-window share is given too.
  The mock's CPU is measured separately (its ``/stats`` ``cpu_s``): when the mock uses more than
  :data:`MOCK_SATURATED` of a core it, not the engine, may be what limits the run, and the result
  says so (``mock.saturated``).
* **peak RSS**: the engine's ``VmHWM`` (the kernel's high-water mark of its resident memory), read
  with every sample; ``rss_mb_at_progress`` shows whether memory stays flat as rows accumulate.
* **latency**: request latency p50/p90/p99 are the engine's per-request figures (successful
  attempts, ``endpoints[].latency`` of the report); ``latency.row`` is first send to final answer.
  Time-to-first-byte is ``null``: the engine sends ``stream: false``, so there is no first token
  to time.

The ``two-stage`` scenario (issue 16: a student model answers, a teacher revises, streamed; two mock
processes) has its own definitions (makespan, the overlapped ideal, CPU per stage): ``twostage``
(preset, jobs, figures) and ``twostage_run`` (its processes).

Modules, one job each: ``presets`` (scenarios), ``data`` (the cached input), ``run`` (the child
processes and the sampling loop), ``probe`` (/proc and the machine), ``mockstats`` (the mock's
counters), ``samples`` (the sampled series), ``limits`` (the theoretical limits), ``results`` (one
run's figures), ``report`` (the printed lines) and ``command`` (``clair bench``). This package
re-exports their public names.
"""

from __future__ import annotations

from engine.tools.bench.command import cmd_bench
from engine.tools.bench.data import ensure_data
from engine.tools.bench.limits import achieved_fraction, fault_adjusted_limit, per_thousand, theoretical_limit
from engine.tools.bench.mockstats import MockStats
from engine.tools.bench.presets import FAULT_MIX, PRESETS, Scenario
from engine.tools.bench.probe import machine_info, proc_hwm_mb
from engine.tools.bench.report import fault_summary, format_result, format_two_stage, rate_limit_summary
from engine.tools.bench.results import TARGETS, rate_window, summarize
from engine.tools.bench.run import OUT_DIR, run_scenario
from engine.tools.bench.samples import Sample, steady_window
from engine.tools.bench.twostage import (
    TWO_STAGE,
    TwoStage,
    ideal_makespan,
    sequential_makespan,
    summarize_two_stage,
)
from engine.tools.bench.twostage_run import run_two_stage

__all__ = [
    "FAULT_MIX",
    "OUT_DIR",
    "PRESETS",
    "TARGETS",
    "TWO_STAGE",
    "TwoStage",
    "MockStats",
    "Sample",
    "Scenario",
    "achieved_fraction",
    "cmd_bench",
    "ensure_data",
    "fault_adjusted_limit",
    "fault_summary",
    "format_result",
    "format_two_stage",
    "ideal_makespan",
    "machine_info",
    "per_thousand",
    "proc_hwm_mb",
    "rate_limit_summary",
    "rate_window",
    "run_scenario",
    "run_two_stage",
    "sequential_makespan",
    "steady_window",
    "summarize",
    "summarize_two_stage",
    "theoretical_limit",
]
