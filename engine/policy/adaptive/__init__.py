"""Adaptive concurrency and pacing for one endpoint (L2). :class:`AdaptiveController` (controller.py)
composes small state machines, each in its own module: the concurrency window (window.py), the pace
learned from 429 bursts (pace.py), the limits the endpoint advertises in its headers (headers.py),
latency averages and their baseline (latency.py), the last minute of sends and answers with the
rates read from them (events.py), and the noise floor that tells load-independent refusals from an
overload (noise.py). The controller module's docstring describes the whole.
"""

from engine.policy.adaptive.controller import AdaptiveController, Snapshot

__all__ = ["AdaptiveController", "Snapshot"]
