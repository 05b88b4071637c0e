"""AdaptiveController: unit tests on a manual clock, plus an end-to-end run on the fake loop clock
(real ConcurrencyGate + RequestRateLimiter + controller against a 600 rpm token-bucket endpoint)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Mapping

import asyncio_throttle.throttler
import pytest
from fakeclock import ManualClock, patch_monotonic, run

from engine.adaptive import AdaptiveController, Snapshot
from engine.limiter import ConcurrencyGate, RequestRateLimiter, TokenBucket


def make(max_concurrency: int = 1000, **kwargs) -> tuple[AdaptiveController, ManualClock]:
    clock = ManualClock(1000.0)
    return AdaptiveController(max_concurrency, clock=clock, **kwargs), clock


def round_trip(
    ctl: AdaptiveController, clock: ManualClock, latency: float, headers: Mapping[str, str] | None = None
) -> None:
    """One round trip of a dispatcher that keeps the window full: `concurrency` answers, evenly spread."""
    n = ctl.concurrency
    for _ in range(n):
        clock.advance(latency / n)
        ctl.on_send()
        ctl.on_success(latency, headers or {})


def paced_traffic(ctl: AdaptiveController, clock: ManualClock, seconds: float, latency: float = 0.05) -> None:
    """A dispatcher sending exactly at the recommended pace, every answer clean."""
    end = clock.now + seconds
    while clock.now < end:
        clock.advance(60.0 / ctl.rpm)
        ctl.on_send()
        ctl.on_success(latency, {})


# -- defaults and validation --------------------------------------------------------------------


def test_defaults():
    ctl, _ = make(64)
    assert (ctl.concurrency, ctl.rpm, ctl.tpm, ctl.decreases, ctl.slow_start) == (8, None, None, 0, True)
    assert AdaptiveController(4).concurrency == 4
    assert AdaptiveController(100, initial=30).concurrency == 30
    capped, _ = make(user_rpm=120, user_tpm=5000)
    assert (capped.rpm, capped.tpm) == (120, 5000)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((0,), {}),
        ((10,), dict(min_concurrency=0)),
        ((10,), dict(min_concurrency=11)),
        ((10,), dict(initial=11)),
        ((10,), dict(initial=2, min_concurrency=3)),
        ((10,), dict(user_rpm=0)),
        ((10,), dict(user_tpm=float("nan"))),
        ((10,), dict(min_rpm=-1)),
        ((True,), {}),
    ],
)
def test_validation(args, kwargs):
    with pytest.raises(ValueError):
        AdaptiveController(*args, **kwargs)


# -- growth -------------------------------------------------------------------------------------


def test_slow_start_doubles_per_clean_round_trip():
    ctl, clock = make()
    seen = [ctl.concurrency]
    for _ in range(4):
        round_trip(ctl, clock, latency=1.0)
        seen.append(ctl.concurrency)
    assert seen == [8, 16, 32, 64, 128]
    assert ctl.slow_start


def test_slow_start_stops_at_max_concurrency():
    ctl, clock = make(20)
    for _ in range(5):
        round_trip(ctl, clock, latency=0.5)
    assert ctl.concurrency == 20


def test_an_unused_window_does_not_grow():
    ctl, clock = make()
    for _ in range(60):  # one answer per second, 0.1 s each: ~0.1 requests in flight
        clock.advance(1.0)
        ctl.on_send()
        ctl.on_success(0.1, {})
    assert ctl.concurrency <= 10


def test_congestion_avoidance_grows_one_per_round_trip():
    ctl, clock = make()
    round_trip(ctl, clock, 1.0)  # 16
    ctl.on_congestion({}, latency_s=0.01)  # leaves slow start: 16 * 0.7 = 11.2
    assert ctl.snapshot().cwnd == pytest.approx(11.2)
    round_trip(ctl, clock, 1.0)  # the window that saw the 429 earns no growth
    cwnds = []
    for _ in range(5):
        round_trip(ctl, clock, 1.0)
        cwnds.append(ctl.snapshot().cwnd)
    steps = [b - a for a, b in zip(cwnds, cwnds[1:], strict=False)]
    assert all(0.8 <= step <= 1.1 for step in steps), cwnds
    assert not ctl.slow_start


def test_latency_plateau_stops_growth_and_a_deep_queue_shrinks_gently():
    ctl, clock = make(min_concurrency=4)
    for _ in range(2):
        round_trip(ctl, clock, latency=1.0)  # baseline ~1 s
    assert ctl.slow_start and ctl.concurrency == 32
    for _ in range(4):
        round_trip(ctl, clock, latency=2.5)  # queueing at the server
    assert not ctl.slow_start
    # stopped once the average latency crossed 2x (~9 answers into the slow round trip)
    assert ctl.concurrency <= 32 + 10
    plateau = ctl.concurrency
    for _ in range(6):
        round_trip(ctl, clock, latency=2.5)
    assert ctl.concurrency == plateau
    for _ in range(10):
        round_trip(ctl, clock, latency=5.0)  # > 3x baseline
    assert 4 <= ctl.concurrency < plateau
    assert ctl.decreases == 0  # latency is not congestion


# -- decreases ----------------------------------------------------------------------------------


def test_a_burst_of_429s_decreases_once():
    ctl, clock = make()
    for _ in range(2):
        round_trip(ctl, clock, 1.0)  # cwnd 32
    for _ in range(50):  # 50 rejections within half a second
        clock.advance(0.01)
        ctl.on_congestion({}, latency_s=0.01)
    snap = ctl.snapshot()
    assert snap.decreases == 1 and not snap.slow_start
    assert snap.cwnd == pytest.approx(32 * 0.7)
    clock.advance(1.0)  # the next burst, a window later
    ctl.on_congestion({}, latency_s=0.01)
    assert ctl.decreases == 2
    assert ctl.snapshot().cwnd == pytest.approx(32 * 0.7 * 0.7)


def test_the_decrease_window_follows_the_congestion_latency():
    ctl, clock = make()
    round_trip(ctl, clock, 1.0)
    ctl.on_congestion({}, latency_s=3.0)
    clock.advance(2.0)
    ctl.on_congestion({}, latency_s=3.0)  # same burst: 2 s < 3 s window
    assert ctl.decreases == 1
    clock.advance(1.5)
    ctl.on_congestion({}, latency_s=3.0)
    assert ctl.decreases == 2


def test_floors_are_never_crossed_and_the_pace_recovers():
    ctl, clock = make(min_concurrency=3, min_rpm=6)
    paced = False
    for _ in range(300):
        clock.advance(2.0)
        ctl.on_send()
        ctl.on_success(0.2, {})
        ctl.on_congestion({}, latency_s=0.01)
        assert ctl.concurrency >= 3
        paced = paced or ctl.rpm is not None
        assert ctl.rpm is None or ctl.rpm >= 6
    assert paced and ctl.rpm == pytest.approx(6)
    paced_traffic(ctl, clock, seconds=120)  # clean again: no stall
    assert ctl.rpm > 12


# -- pacing -------------------------------------------------------------------------------------


def test_advertised_limits_pace_before_any_429():
    ctl, clock = make()
    clock.advance(0.5)
    ctl.on_success(0.5, {"x-ratelimit-limit-requests": "600", "x-ratelimit-limit-tokens": "90000"})
    assert ctl.rpm == pytest.approx(582.0)
    assert ctl.tpm == pytest.approx(87300.0)
    assert ctl.snapshot().header_rpm_limit == 600
    # a 429 anyway (a limit shared with someone else): learn a lower pace under it
    clock.advance(0.1)
    ctl.on_congestion({"x-ratelimit-limit-requests": "600"}, latency_s=0.01)
    assert ctl.rpm == pytest.approx(0.9 * 582.0)


def test_user_limits_cap_advertised_ones():
    ctl, clock = make(user_rpm=300, user_tpm=50_000)
    clock.advance(0.5)
    ctl.on_success(0.5, {"x-ratelimit-limit-requests": "600", "x-ratelimit-limit-tokens": "90000"})
    assert (ctl.rpm, ctl.tpm) == (300, 50_000)


def test_concurrency_keeps_up_with_the_pace():
    ctl, clock = make(max_concurrency=512)
    clock.advance(10.0)
    ctl.on_success(10.0, {"x-ratelimit-limit-requests": "600"})
    # 9.7 requests/s x 10 s latency x 1.5 headroom + 2
    assert ctl.concurrency == 148


@pytest.mark.parametrize("report_sends", [True, False])
def test_a_pace_is_learned_from_the_send_rate_at_the_first_burst(report_sends):
    ctl, clock = make()
    for _ in range(60):  # 20 requests/s for 3 s, 50 ms each
        clock.advance(0.05)
        if report_sends:
            ctl.on_send()
        ctl.on_success(0.05, {})
    assert ctl.rpm is None
    ctl.on_congestion({}, latency_s=0.005)
    # counted with on_send; estimated from completions (the 429 included) without it
    assert ctl.rpm == pytest.approx(0.9 * 1200, rel=0.06 if report_sends else 0.15)  # +-1 sample
    assert ctl.snapshot().learned_rpm == ctl.rpm


def test_learned_pace_recovers_additively_then_probes_faster():
    ctl, clock = make()
    for _ in range(60):
        clock.advance(0.05)
        ctl.on_send()
        ctl.on_success(0.05, {})
    ctl.on_congestion({}, latency_s=0.005)
    start = ctl.rpm
    paced_traffic(ctl, clock, seconds=3)
    r3 = ctl.rpm
    paced_traffic(ctl, clock, seconds=1)
    step = ctl.rpm - r3
    assert step == pytest.approx(0.01 * start / 0.9, rel=0.1)  # 1 %/s of the pace at the burst
    paced_traffic(ctl, clock, seconds=30)  # past that pace, still clean: probing accelerates
    r34 = ctl.rpm
    paced_traffic(ctl, clock, seconds=1)
    assert ctl.rpm - r34 > 4 * step
    assert ctl.decreases == 1


def test_an_unused_pace_does_not_grow_beyond_the_last_burst():
    ctl, clock = make()
    for _ in range(60):
        clock.advance(0.05)
        ctl.on_send()
        ctl.on_success(0.05, {})
    ctl.on_congestion({}, latency_s=0.005)
    ref = ctl.rpm / 0.9
    for _ in range(300):  # the input dried up: one request per second
        clock.advance(1.0)
        ctl.on_send()
        ctl.on_success(0.05, {})
    assert ctl.rpm == pytest.approx(ref)


def test_remaining_low_stops_growth_and_zero_without_a_limit_is_congestion():
    ctl, clock = make()
    round_trip(ctl, clock, 1.0, {"x-ratelimit-remaining-requests": "500"})
    grown = ctl.concurrency
    for _ in range(3):
        round_trip(ctl, clock, 1.0, {"x-ratelimit-remaining-requests": "20"})  # < 10 % of 500
    assert ctl.concurrency == grown and ctl.decreases == 0
    clock.advance(0.1)
    ctl.on_success(1.0, {"x-ratelimit-remaining-requests": "0"})  # nothing paces us: act now
    assert ctl.decreases == 1 and ctl.rpm is not None


def test_remaining_zero_under_an_advertised_limit_only_holds_growth():
    ctl, clock = make()
    clock.advance(0.1)
    hdrs = {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "0"}
    ctl.on_success(0.1, hdrs)
    assert ctl.decreases == 0 and ctl.rpm == pytest.approx(582)


def test_recommendations_always_within_limits_under_random_events():
    rng = random.Random(5)
    ctl, clock = make(max_concurrency=50, min_concurrency=2, user_rpm=900, user_tpm=40_000)
    for _ in range(20_000):
        clock.advance(rng.expovariate(20))
        roll = rng.random()
        headers = {}
        if rng.random() < 0.3:
            headers = {
                "x-ratelimit-limit-requests": str(rng.choice([100, 5000, 10**6])),
                "x-ratelimit-limit-tokens": str(rng.choice([1000, 10**7])),
                "x-ratelimit-remaining-requests": str(rng.randint(0, 100)),
                "x-ratelimit-remaining-tokens": rng.choice(["0", "500", "junk"]),
            }
        if roll < 0.5:
            ctl.on_send()
        elif roll < 0.93:
            ctl.on_success(rng.uniform(0.0, 5.0), headers)
        else:
            ctl.on_congestion(headers, latency_s=rng.choice([None, 0.01, 2.0]))
        assert 2 <= ctl.concurrency <= 50
        assert ctl.rpm is None or 1.0 <= ctl.rpm <= 900
        assert ctl.tpm is None or ctl.tpm <= 40_000


def test_snapshot_reports_state():
    ctl, clock = make()
    round_trip(ctl, clock, 0.5, {"x-ratelimit-limit-requests": "6000"})
    snap = ctl.snapshot()
    assert isinstance(snap, Snapshot)
    assert snap.concurrency == ctl.concurrency and snap.rpm == pytest.approx(5820)
    assert snap.latency_s == pytest.approx(0.5) and snap.baseline_latency_s == pytest.approx(0.5)
    assert snap.goodput_rpm > 0 and snap.slow_start and snap.decreases == 0


# -- end to end, on the fake loop clock ---------------------------------------------------------


async def drive(with_headers: bool, *, seconds: float = 120.0, seed: int = 7) -> Counter:
    """A minimal single-dispatcher endpoint loop against a mock that enforces 600 requests/min
    (token bucket 10/s, capacity 10) and answers 429 beyond it. The engine's own limits are unset."""
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    server = TokenBucket(10.0, 10.0, clock=loop.time)
    ctl = AdaptiveController(256, clock=loop.time)
    gate = ConcurrencyGate(ctl.concurrency)
    rate = RequestRateLimiter(ctl.rpm)
    end = loop.time() + seconds
    stats: Counter = Counter()
    pending: set[asyncio.Task] = set()

    def apply() -> None:
        gate.limit = ctl.concurrency
        rate.set_rpm(ctl.rpm)

    async def request() -> None:
        sent = loop.time()
        ok = server.try_acquire()
        headers = {}
        if with_headers:
            headers = {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": str(int(server.level))}
        await asyncio.sleep(rng.uniform(0.03, 0.07) if ok else 0.005)
        gate.release()
        if loop.time() <= end:
            stats["ok" if ok else "429"] += 1
        if ok:
            ctl.on_success(loop.time() - sent, headers)
        else:
            ctl.on_congestion(headers, latency_s=loop.time() - sent)
        apply()

    async def dispatcher() -> None:
        while True:
            await gate.acquire()
            await rate.acquire()
            ctl.on_send()
            stats["sent"] += 1
            task = asyncio.create_task(request())
            pending.add(task)
            task.add_done_callback(pending.discard)

    dispatch = asyncio.create_task(dispatcher())
    await asyncio.sleep(seconds)
    dispatch.cancel()
    await asyncio.gather(dispatch, return_exceptions=True)
    await asyncio.gather(*pending)
    stats["decreases"] = ctl.decreases
    return stats


@pytest.mark.parametrize("with_headers", [False, True], ids=["429-only", "ratelimit-headers"])
def test_reaches_90_percent_of_a_600_rpm_limit_with_few_429s(monkeypatch, with_headers):
    async def main() -> Counter:
        patch_monotonic(monkeypatch, asyncio_throttle.throttler, asyncio.get_running_loop())
        return await drive(with_headers)

    stats = run(main())
    assert stats["ok"] >= 0.9 * 1200, stats  # 2 minutes at 600 rpm
    assert stats["429"] < 0.05 * stats["sent"], stats
