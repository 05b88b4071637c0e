"""What a run did, as data: the run report (written to RUN/report.json) and the live progress snapshot (L4).

Both are built from counters only; the CLI and the progress reporters format them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from engine.dispatch import Endpoint, Pool
from engine.policy.metrics import Progress, RunCounters


@dataclass
class RunReport:
    """What a finished (or stopped) run did; also written to RUN/report.json."""

    run_dir: str
    status: str  # completed | interrupted | incomplete
    rows_total: int | None
    rows_done: int
    rows_ok: int
    rows_flagged: dict[str, int]
    rows_failed: dict[str, int]
    resumed_from: int
    requests: int
    retries: int
    prompt_tokens: int
    completion_tokens: int
    wall_s: float
    rows_per_s: float
    output_tokens_per_s: float
    latency: dict[str, Any]
    endpoints: list[dict[str, Any]]
    cost_usd: float | None = None
    rows_reused: int = 0  # rows that took an answer stored by an earlier run (no request)
    message: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def build_report(run_dir: str, status: str, c: RunCounters, endpoints: list[Endpoint], wall: float,
                 counts: dict[str, Any] | None, cost_usd: float | None) -> RunReport:
    """``counts``: the store's counts of the finished run (None while it runs: then from the counters)."""
    done = counts["data"] + counts["failed"] if counts else c.rows_done_before + c.rows_finished
    return RunReport(
        run_dir=run_dir,
        status=status,
        rows_total=c.rows_total,
        rows_done=done,
        rows_ok=c.rows_ok,
        rows_flagged=dict(c.rows_flagged),
        rows_failed=counts["failure_kinds"] if counts else dict(c.rows_failed),
        resumed_from=c.rows_done_before,
        requests=sum(ep.counters.requests for ep in endpoints),
        retries=sum(ep.counters.retries for ep in endpoints),
        prompt_tokens=c.prompt_tokens,
        completion_tokens=c.completion_tokens,
        wall_s=round(wall, 3),
        rows_per_s=round(c.rows_finished / wall, 3) if wall > 0 else 0.0,
        output_tokens_per_s=round(c.completion_tokens / wall, 1) if wall > 0 else 0.0,
        latency=c.latency.summary(),
        endpoints=[ep.state() for ep in endpoints],
        cost_usd=cost_usd,
        rows_reused=c.rows_reused,
    )


def progress(c: RunCounters, endpoints: list[Endpoint], pool: Pool | None, elapsed: float) -> Progress:
    elapsed = max(1e-9, elapsed)
    session = c.rows_finished
    done = c.rows_done_before + session
    rate = session / elapsed
    total = c.rows_total
    eta = (total - done) / rate if total is not None and rate > 0 and total >= done else None
    eps = [ep.snapshot() for ep in endpoints]
    return Progress(
        rows_done=done,
        rows_total=total,
        rows_this_session=session,
        rows_per_s=rate,
        output_tokens_per_s=c.completion_tokens / elapsed,
        eta_s=eta,
        in_flight=pool.in_flight if pool is not None else 0,
        retries=sum(e.retries for e in eps),
        failures=dict(c.rows_failed),
        flagged=dict(c.rows_flagged),
        elapsed_s=elapsed,
        endpoints=eps,
        paused=bool(pool and pool.paused),
        paused_since=pool.paused_wall if pool is not None else None,
    )
