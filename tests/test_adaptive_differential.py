"""The split AdaptiveController (engine/policy/adaptive/) makes the same decisions as the one-module
controller it replaced (engine/policy/adaptive.py at commit 778106d, read from git, not copied into
the tree): long random event sequences — regimes of latency, token-bucket limits, load-independent
refusals, rate-limit headers (advertised, remaining only, garbage), paced and idle stretches, odd
latencies — fed to both on one manual clock, every recommendation compared exactly after every
event, and the whole snapshot regularly.

This pins the refactoring. When the controller's behaviour is changed on purpose, this test fails
by design: delete it then (it has done its job), do not re-baseline it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fakeclock import ManualClock

from engine.policy.adaptive import AdaptiveController

REFERENCE_COMMIT = "778106d"
REFERENCE_PATH = "engine/policy/adaptive.py"
# the one line that differs: header_number has moved to its own module since
REFERENCE_IMPORT = ("from engine.policy.retry import header_number", "from engine.policy.ratelimit_headers import header_number")


def load_reference() -> ModuleType:
    """The controller as it was at REFERENCE_COMMIT, executed from git's copy of its source."""
    name = f"_adaptive_reference_{REFERENCE_COMMIT}"
    if name in sys.modules:
        return sys.modules[name]
    repo = Path(__file__).resolve().parent.parent
    try:
        source = subprocess.run(
            ["git", "-C", str(repo), "show", f"{REFERENCE_COMMIT}:{REFERENCE_PATH}"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:  # no git, or a tree without that history
        pytest.skip(f"the reference controller ({REFERENCE_COMMIT}:{REFERENCE_PATH}) is not in git: {e}")
    assert source.count(REFERENCE_IMPORT[0]) == 1
    source = source.replace(*REFERENCE_IMPORT)
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # (dataclasses look their module up)
    exec(compile(source, f"{REFERENCE_COMMIT}:{REFERENCE_PATH}", "exec"), module.__dict__)
    return module


@dataclasses.dataclass
class Regime:
    latency: tuple[float, float]  # of successes, uniform
    limit_rps: float | None  # a token bucket refusing beyond it (None: no limit)
    capacity: float
    noise: float  # share refused whatever the load
    headers: str  # none | advertised | remaining | garbage
    pace_factor: float  # sends at this multiple of the recommended pace (>1: a dispatcher ignoring it)


def random_regime(rng: random.Random, calm: bool) -> Regime:
    """``calm``: nothing refused (the window alone regulates: slow start, latency queues)."""
    regime = Regime(
        latency=rng.choice([(0.0005, 0.002), (0.03, 0.07), (0.005, 0.2), (0.5, 1.5), (2.0, 6.0)]),
        limit_rps=rng.choice([None, None, 2.0, 10.0, 50.0, 300.0]),
        capacity=rng.choice([1.0, 10.0, 100.0]),
        noise=rng.choice([0.0, 0.0, 0.02, 0.05, 0.15, 0.4]),
        headers=rng.choice(["none", "none", "advertised", "remaining", "garbage"]),
        pace_factor=rng.choice([1.0, 1.0, 1.0, 1.5, 3.0]),
    )
    if calm:
        regime.latency = rng.choice([(0.0005, 0.002), (0.005, 0.2), (0.5, 1.5), (1.0, 1.2), (4.0, 6.0)])
        regime.limit_rps, regime.noise = None, 0.0
        regime.headers = rng.choice(["none", "garbage"])
    return regime


def headers_for(regime: Regime, level: float, rng: random.Random) -> dict[str, str] | None:
    if regime.headers == "none":
        return rng.choice([None, {}, {"retry-after": "1"}])
    if regime.headers == "garbage":
        return {
            "x-ratelimit-limit-requests": rng.choice(["", "junk", "-5", "0", "inf", "nan", "1e400"]),
            "x-ratelimit-remaining-requests": rng.choice(["x", "", "-1", "NaN"]),
            "x-ratelimit-remaining-tokens": rng.choice(["0x10", " 7 ", "1_000"]),
        }
    rps = regime.limit_rps or 1000.0
    out = {
        "x-ratelimit-remaining-requests": str(int(level)),
        "x-ratelimit-remaining-tokens": str(int(level * 1000)),
    }
    if regime.headers == "advertised":
        out["x-ratelimit-limit-requests"] = str(int(rps * 60))
        out["x-ratelimit-limit-tokens"] = str(int(rps * 60_000))
    return out


def odd_latency(rng: random.Random, usual: float) -> Any:
    return rng.choice([usual, usual, usual, 0.0, -1.0, math.nan, math.inf, None, 1e-9])


def state(ctl: Any) -> tuple[Any, ...]:
    return (ctl.concurrency, ctl.rpm, ctl.tpm, ctl.decreases, ctl.slow_start)


def drive(seed: int, events: int) -> dict[str, int]:
    """Feed the same random events to both controllers; compare after each. Returns what was
    exercised (so that a degenerate sequence cannot pass unnoticed)."""
    reference = load_reference().AdaptiveController
    rng = random.Random(seed)
    clock = ManualClock(1000.0)
    max_c = rng.choice([4, 64, 256])
    kwargs: dict[str, Any] = dict(
        min_concurrency=rng.choice([1, 2]),
        initial=rng.choice([None, 1, 4]),
        user_rpm=rng.choice([None, None, 900.0, 6000]),
        user_tpm=rng.choice([None, 50_000.0]),
        min_rpm=rng.choice([1.0, 6.0]),
        clock=clock,
    )
    old, new = reference(max_c, **kwargs), AdaptiveController(max_c, **kwargs)
    report_sends = rng.random() < 0.8
    calm_until = rng.choice([0, events // 3, events // 2])  # the window alone, before any refusal
    seen = dict(decreases=0, learned=0, header=0, paced=0, snapshots=0)
    regime = random_regime(rng, calm=calm_until > 0)
    level, refilled = regime.capacity, clock.now
    for i in range(events):
        if i % 1500 == 0:
            regime = random_regime(rng, calm=i < calm_until)
        roll = rng.random()
        if roll < 0.002:
            clock.advance(rng.uniform(1.0, 30.0))  # the input paused
        elif roll < 0.003 and i >= calm_until:  # a storm of refusals in quick succession
            for _ in range(rng.randint(5, 60)):
                clock.advance(0.001)
                latency = odd_latency(rng, 0.005)
                old.on_congestion({}, latency_s=latency)
                new.on_congestion({}, latency_s=latency)
                assert state(new) == state(old), (seed, i)
            continue
        pace, window = new.rpm, new.concurrency
        latency = rng.uniform(*regime.latency)
        gap = latency / window
        if pace is not None:
            gap = max(gap, 60.0 / (pace * regime.pace_factor))
        clock.advance(gap * rng.expovariate(1.0))
        if report_sends:
            old.on_send()
            new.on_send()
        if regime.limit_rps is not None:
            level = min(regime.capacity, level + (clock.now - refilled) * regime.limit_rps)
            refilled = clock.now
        refused = rng.random() < regime.noise or (regime.limit_rps is not None and level < 1.0)
        if not refused and regime.limit_rps is not None:
            level -= 1.0
        headers = headers_for(regime, level, rng)
        if refused:
            latency = odd_latency(rng, rng.choice([0.005, latency]))
            old.on_congestion(headers, latency_s=latency)
            new.on_congestion(headers, latency_s=latency)
        else:
            latency = odd_latency(rng, latency) if rng.random() < 0.01 else latency
            old.on_success(latency, headers)
            new.on_success(latency, headers)
        assert state(new) == state(old), (seed, i)
        if i % 97 == 0:
            snap = dataclasses.astuple(new.snapshot())
            assert snap == dataclasses.astuple(old.snapshot()), (seed, i)
            seen["snapshots"] += 1
            seen["learned"] += new.snapshot().learned_rpm is not None
            seen["header"] += new.snapshot().header_rpm_limit is not None
            seen["paced"] += new.rpm is not None
    seen["decreases"] = new.decreases
    return seen


def test_the_split_controller_decides_exactly_as_the_old_one():
    seen = [drive(seed, 25_000) for seed in range(6)]
    # the sequences exercised every regulator: many decreases, learned paces, advertised limits
    assert all(s["decreases"] >= 5 and s["paced"] > 0 for s in seen), seen
    assert sum(s["learned"] > 0 for s in seen) >= 4 and sum(s["header"] > 0 for s in seen) >= 2, seen


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((0,), {}), ((10,), dict(min_concurrency=0)), ((10,), dict(initial=11)), ((10,), dict(user_rpm=0)),
     ((10,), dict(user_tpm=math.nan)), ((10,), dict(min_rpm=-1)), ((True,), {}), ((2.5,), {})],
)
def test_the_same_arguments_are_refused_with_the_same_message(args, kwargs):
    reference = load_reference().AdaptiveController
    with pytest.raises(ValueError) as old:
        reference(*args, **kwargs)
    with pytest.raises(ValueError) as new:
        AdaptiveController(*args, **kwargs)
    assert str(new.value) == str(old.value)
