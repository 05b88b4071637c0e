"""The benchmark's scenarios: ``Scenario`` (one preset's data size, in-flight limit and mock behaviour) and ``PRESETS``.

A scenario knows the mock's command-line flags for its behaviour (``mock_args``) and its parameters
as recorded in a result (``params``); ``FAULT_MIX`` is the endpoint issue's fault mix. Data only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FAULT_MIX", "PRESETS", "Scenario", "cli_number"]


@dataclass(frozen=True)
class Scenario:
    """One benchmark preset. Every field can be overridden with ``dataclasses.replace``."""

    name: str
    rows: int
    concurrency: int  # the engine's endpoints[0].max_concurrency (adaptive concurrency stays on)
    latency_ms: float  # the mock's mean latency
    latency_dist: str = "fixed"  # fixed | lognormal
    latency_sigma: float = 1.0  # lognormal shape (1.0: p99 ~ 6x the mean)
    rpm: int | None = None  # enforced by the mock (429 beyond); the engine is NOT told
    tpm: int | None = None
    faults: dict[str, float] = field(default_factory=dict)  # MockConfig rate_* name -> probability
    retry_after_s: float = 1.0  # Retry-After of injected 429s
    hang_s: float = 30.0  # how long a hung request hangs before the mock drops it
    request_timeout_s: float = 600.0  # the engine's timeouts.request_s
    retry_base_delay_s: float = 1.0  # the engine's retry.base_delay_s
    window_s: float | None = None  # ratelimited: achieved requests/min over this window
    max_tokens: int = 4096
    engine_set: tuple[str, ...] = ()  # extra ``--set KEY=VALUE`` overrides for the engine's job
    description: str = ""

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise ValueError("rows must be >= 1")
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")

    def mock_args(self) -> list[str]:
        args = ["--latency-ms", cli_number(self.latency_ms), "--latency-dist", self.latency_dist,
                "--latency-sigma", cli_number(self.latency_sigma), "--seed", "0",
                "--retry-after-s", cli_number(self.retry_after_s), "--hang-s", cli_number(self.hang_s)]
        if self.rpm is not None:
            args += ["--rpm", str(self.rpm)]
        if self.tpm is not None:
            args += ["--tpm", str(self.tpm)]
        for name, rate in sorted(self.faults.items()):
            args += [f"--{name.replace('_', '-')}", cli_number(rate)]
        return args

    def params(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("description")
        return d


def cli_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


#: the fault mix of the endpoint issue: 5% 429 (Retry-After: 1), 2% 500, 1% hangs, 1% malformed JSON,
#: 2% answers without CLAIR markers
FAULT_MIX = {"rate_429": 0.05, "rate_500": 0.02, "rate_hang": 0.01, "rate_malformed": 0.01,
             "rate_no_marker": 0.02}

PRESETS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("latency", rows=32_000, concurrency=256, latency_ms=200.0,
                 description="fixed 200 ms latency, 256 in flight: can the engine keep the window full?"),
        Scenario("lognormal", rows=32_000, concurrency=512, latency_ms=2000.0, latency_dist="lognormal",
                 latency_sigma=1.0,
                 description="log-normal latency, mean 2 s (p50 1.2 s, p99 12 s, capped at 120 s), 512 in flight"),
        Scenario("ratelimited", rows=1_500, concurrency=256, latency_ms=200.0, rpm=600, window_s=120.0,
                 description="the mock enforces 600 requests/min (429 beyond); the engine's own limit is "
                             "unset, adaptive concurrency on"),
        Scenario("faults", rows=32_000, concurrency=256, latency_ms=200.0, faults=dict(FAULT_MIX),
                 hang_s=30.0, request_timeout_s=10.0,
                 description="5% 429 (Retry-After 1), 2% 500, 1% hangs (engine timeout 10 s), "
                             "1% malformed JSON, 2% answers without markers"),
        Scenario("scale", rows=1_000_000, concurrency=256, latency_ms=0.0,
                 description="1,000,000 rows at zero latency: memory and per-row CPU"),
    )
}
