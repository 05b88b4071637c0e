"""What the mock does to an admitted request on purpose: the injected fault and the latency.

``Injector`` draws at most one fault per request (one uniform draw from ``random.Random(seed)``; each
fault's probability is its rate, listed order wins when the rates sum past 1) and a latency (fixed, or
log-normal with the configured mean and sigma, clamped at 60x the mean) from a second seeded RNG, so a
run with the same seed injects the same faults. Acting on a fault is the app's job.
"""

from __future__ import annotations

import math
import random

from engine.tools.mockserver.config import FAULTS, MockConfig

__all__ = ["Injector"]


class Injector:
    """The seeded fault and latency draws of one server."""

    def __init__(self, cfg: MockConfig) -> None:
        self.fixed = cfg.latency_dist == "fixed"
        self.sigma = cfg.latency_sigma
        self.fault_rng = random.Random(cfg.seed)
        self.latency_rng = random.Random(f"latency:{cfg.seed}")
        edges: list[tuple[float, str]] = []
        acc = 0.0
        for name in FAULTS:
            rate = getattr(cfg, f"rate_{name}")
            if rate > 0:
                acc += rate
                edges.append((acc, name))
        self.fault_edges = tuple(edges)
        mean = cfg.latency_ms / 1000.0
        self.latency_mean = mean
        self.latency_mu = math.log(mean) - cfg.latency_sigma**2 / 2 if mean > 0 else 0.0

    def fault(self) -> str | None:
        """The fault to inject into this request (a name of ``FAULTS``), or None."""
        if self.fault_edges:
            u = self.fault_rng.random()
            for edge, name in self.fault_edges:
                if u < edge:
                    return name
        return None

    def latency(self) -> float:
        """Seconds to wait before answering this request."""
        mean = self.latency_mean
        if mean <= 0:
            return 0.0
        if self.fixed:
            return mean
        return min(60.0 * mean, self.latency_rng.lognormvariate(self.latency_mu, self.sigma))
