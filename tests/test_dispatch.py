"""``Pool`` / ``Endpoint`` (engine/dispatch.py) with a fake transport on a virtual clock.

Every test runs on ``fakeclock.FakeClockLoop`` (the clock jumps to the next timer when the loop is idle),
with endpoints whose circuit breakers read the loop clock, so "slow" and "after 100 s" cost no wall time
and no assertion reads the wall clock. The fake transport (``Recorder``) answers per endpoint with a
behaviour the test writes, and records every send (virtual time, endpoint, row) and the most requests it
ever had in flight per endpoint.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import asyncio_throttle.throttler
import orjson
import pytest
from fakeclock import patch_monotonic, run

from engine.core.errors import (
    ConnectError,
    EndpointError,
    HTTPStatusError,
    MalformedResponse,
    RequestTimeout,
    StartupError,
)
from engine.core.types import Completion, Transport, WorkItem
from engine.dispatch import FINISH_BATCH_ROWS, Endpoint, Finished, Pool
from engine.policy.breaker import CircuitBreaker
from engine.policy.retry import RetryPolicy

#: (endpoint name, row id, attempt number of this row at this endpoint's transport, 1-based)
Behaviour = Callable[[str, int, int], Awaitable[Completion]]

NO_WAIT = RetryPolicy(max_attempts=8, base_delay_s=0.0, max_delay_s=0.0)


def answer(row: int = 0) -> Completion:
    return Completion(content=f"answer {row}", finish_reason="stop", model="m", prompt_tokens=90,
                      completion_tokens=10)


class Recorder:
    """A fake ``Transport``: ``behave(endpoint, row, attempt)`` answers or raises."""

    def __init__(self, behave: Behaviour | dict[str, Behaviour]):
        self.behave = behave
        self.sends: list[tuple[float, str, int]] = []  # (virtual time, endpoint, row)
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.cancelled = 0
        self._attempts: Counter[int] = Counter()

    async def complete(self, url: str, headers: dict[str, str], body: bytes) -> Completion:
        name = url.split("//", 1)[1].split("/", 1)[0]
        row = int(orjson.loads(body)["messages"][-1]["content"])
        self.sends.append((asyncio.get_running_loop().time(), name, row))
        self._attempts[row] += 1
        self.in_flight[name] += 1
        self.max_in_flight[name] = max(self.max_in_flight[name], self.in_flight[name])
        behave = self.behave[name] if isinstance(self.behave, dict) else self.behave
        try:
            return await behave(name, row, self._attempts[row])
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight[name] -= 1

    async def list_models(self, url: str, headers: dict[str, str]) -> list[str] | None:
        return None

    def rows_sent_to(self, name: str) -> list[int]:
        return [row for _, ep, row in self.sends if ep == name]


class Done:
    """``on_done``: keeps every finished row, in order."""

    def __init__(self) -> None:
        self.rows: list[Finished] = []

    def __call__(self, batch: list[Finished]) -> None:
        self.rows.extend(batch)

    def ids(self) -> Counter[Any]:
        return Counter(f[0].row_id for f in self.rows)


def latency(seconds: float) -> Behaviour:
    async def behave(name: str, row: int, attempt: int) -> Completion:
        await asyncio.sleep(seconds)
        return answer(row)

    return behave


def failing(make: Callable[[], EndpointError]) -> Behaviour:
    async def behave(name: str, row: int, attempt: int) -> Completion:
        raise make()

    return behave


def item(i: int, prompt_tokens: int = 90) -> WorkItem:
    return WorkItem(i, "task", "solution", [{"role": "user", "content": str(i)}], prompt_tokens, {})


def endpoint(name: str, *, max_concurrency: int = 4, breaker_failures: int = 20, breaker_open_s: float = 10.0,
             **kw: Any) -> Endpoint:
    """An endpoint whose breaker reads the (virtual) loop clock; not adaptive unless asked."""
    kw.setdefault("adaptive", False)
    ep = Endpoint(name=name, url=f"http://{name}/v1", model="m", headers={}, generation={},
                  max_concurrency=max_concurrency, breaker_failures=breaker_failures,
                  breaker_open_s=breaker_open_s, **kw)
    ep.breaker = CircuitBreaker(failure_threshold=breaker_failures, open_s=breaker_open_s,
                                clock=asyncio.get_running_loop().time)
    return ep


def make_pool(eps: list[Endpoint], transport: Transport, policy: RetryPolicy = NO_WAIT,
              rows: int | None = None) -> tuple[Pool, Done]:
    done = Done()
    pool = Pool(eps, transport, policy, done, seed=7)
    if rows is not None:
        for i in range(rows):
            pool.submit(item(i))
        pool.finish_input()
    return pool, done


def assert_pool_settled(pool: Pool, transport: Recorder) -> None:
    assert pool.outstanding == 0 and pool.in_flight == 0 and not pool.tasks
    assert all(ep.gate.in_flight == 0 for ep in pool.endpoints)
    assert sum(transport.in_flight.values()) == 0


# ------------------------------------------------------------------------------ retries first


def test_a_retried_row_is_taken_before_new_rows() -> None:
    """Row 0 is rate limited at t=0 (retry after 0.5 s); row 1 is in flight until t=1. The retry has been
    waiting since ~0.5 s, so the next request is row 0 again, not row 2: retries are not deferred."""

    async def behave(name: str, row: int, attempt: int) -> Completion:
        if row == 0 and attempt == 1:
            raise HTTPStatusError(429, "slow down", retry_after=0.5)
        await asyncio.sleep(1.0)
        return answer(row)

    async def main() -> tuple[Recorder, Done]:
        transport = Recorder(behave)
        pool, done = make_pool([endpoint("e", max_concurrency=1)], transport, rows=10)
        await pool.run()
        assert_pool_settled(pool, transport)
        return transport, done

    transport, done = run(main())
    assert [row for _, _, row in transport.sends] == [0, 1, 0, 2, 3, 4, 5, 6, 7, 8, 9]
    assert done.ids() == Counter(range(10))
    (first,) = [f for f in done.rows if f[0].row_id == 0]
    assert first[1] is not None and first[0].attempts == 2


def test_retries_are_taken_by_any_endpoint_before_new_rows() -> None:
    """Endpoint a fails every first attempt (500); its rows come back and endpoint b takes them
    before the new rows waiting in the queue."""

    async def a(name: str, row: int, attempt: int) -> Completion:
        raise HTTPStatusError(500, "boom")

    async def main() -> tuple[Recorder, Done]:
        transport = Recorder({"a": a, "b": latency(1.0)})
        eps = [endpoint("a", max_concurrency=1, breaker_failures=1, breaker_open_s=100.0),
               endpoint("b", max_concurrency=1)]
        pool, done = make_pool(eps, transport, rows=6)
        await pool.run()
        assert_pool_settled(pool, transport)
        return transport, done

    transport, done = run(main())
    failed_at_a = transport.rows_sent_to("a")
    assert len(failed_at_a) == 1  # one failure opens a's breaker (for 100 s)
    b_rows = transport.rows_sent_to("b")
    # b's first row was taken at t=0 together with a's; the retried row is b's very next one
    assert b_rows[1] == failed_at_a[0] and sorted(b_rows) == list(range(6))
    assert done.ids() == Counter(range(6)) and all(f[1] is not None for f in done.rows)


# ------------------------------------------------------------------------------ work stealing


def test_a_slow_endpoint_pulls_fewer_rows() -> None:
    async def main() -> Recorder:
        transport = Recorder({"fast": latency(0.01), "slow": latency(1.0)})
        eps = [endpoint("slow", max_concurrency=2), endpoint("fast", max_concurrency=2)]
        pool, done = make_pool(eps, transport, rows=400)
        await pool.run()
        assert done.ids() == Counter(range(400))
        assert_pool_settled(pool, transport)
        return transport

    transport = run(main())
    slow, fast = transport.rows_sent_to("slow"), transport.rows_sent_to("fast")
    assert len(slow) + len(fast) == 400
    # fast serves 200 rows/s, slow 2 rows/s: slow pulls 2 rows per second of the ~2 s run
    assert len(slow) <= 8 and len(fast) >= 392


def test_an_endpoint_whose_breaker_is_open_pulls_no_rows() -> None:
    async def main() -> tuple[Recorder, Endpoint]:
        transport = Recorder({"broken": failing(lambda: HTTPStatusError(500, "internal error")),
                              "good": latency(0.01)})
        broken = endpoint("broken", max_concurrency=2, breaker_failures=3, breaker_open_s=100.0)
        pool, done = make_pool([broken, endpoint("good", max_concurrency=2)], transport, rows=200)
        await pool.run()
        assert done.ids() == Counter(range(200))
        assert all(f[1] is not None and f[3].name == "good" for f in done.rows)
        assert_pool_settled(pool, transport)
        return transport, broken

    transport, broken = run(main())
    assert broken.breaker.state == "open" and broken.breaker.opened_count == 1
    # the failures that opened it, plus at most one row per slot already taken when it opened
    assert 3 <= len(transport.rows_sent_to("broken")) <= 3 + broken.max_concurrency
    assert broken.counters.errors["server_error"] == len(transport.rows_sent_to("broken"))


def test_an_endpoint_takes_no_row_after_its_breaker_opened() -> None:
    """Rows arriving one at a time: the dispatcher of the endpoint whose breaker just opened may already
    be waiting for the next row; that row must go to a healthy endpoint, not to the broken one (where it
    could wait a whole request timeout before failing again)."""

    async def main() -> tuple[Recorder, Done, Endpoint]:
        transport = Recorder({"broken": failing(lambda: HTTPStatusError(500, "internal error")),
                              "good": latency(0.1)})
        broken = endpoint("broken", breaker_failures=1, breaker_open_s=100.0)
        pool, done = make_pool([broken, endpoint("good")], transport)
        task = asyncio.create_task(pool.run())
        for i in range(10):
            pool.submit(item(i))
            await asyncio.sleep(1.0)
        pool.finish_input()
        await task
        assert_pool_settled(pool, transport)
        return transport, done, broken

    transport, done, broken = run(main())
    assert done.ids() == Counter(range(10)) and all(f[1] is not None for f in done.rows)
    assert broken.breaker.state == "open"
    assert transport.rows_sent_to("broken") == [0]


def test_a_disabled_endpoint_pulls_no_rows_and_its_rows_go_to_the_other() -> None:
    async def main() -> tuple[Recorder, Done, Endpoint]:
        transport = Recorder({"badkey": failing(lambda: HTTPStatusError(401, "Incorrect API key provided")),
                              "good": latency(0.1)})
        bad = endpoint("badkey", max_concurrency=3)
        pool, done = make_pool([bad, endpoint("good", max_concurrency=2)], transport, rows=30)
        await pool.run()
        assert_pool_settled(pool, transport)
        assert pool.fatal is None and not pool.stopping
        return transport, done, bad

    transport, done, bad = run(main())
    refused = transport.rows_sent_to("badkey")
    assert 1 <= len(refused) <= bad.max_concurrency  # only what it took before the first 401 came back
    assert bad.disabled is not None and "401" in bad.disabled and bad.state()["state"] == "disabled"
    assert done.ids() == Counter(range(30))
    assert all(f[1] is not None and f[3].name == "good" for f in done.rows)
    for f in done.rows:  # a 401 is not the row's fault: it does not count as one of its attempts
        assert f[0].attempts == 1


def test_a_disabled_endpoint_takes_no_row_submitted_after_it_was_disabled() -> None:
    """Rows arriving one at a time: the disabled endpoint's dispatcher may already be waiting for the
    next row when its 401 comes back; it must not send that row to the endpoint that refused us."""

    async def main() -> tuple[Recorder, Done]:
        transport = Recorder({"badkey": failing(lambda: HTTPStatusError(401, "Incorrect API key provided")),
                              "good": latency(0.1)})
        pool, done = make_pool([endpoint("badkey"), endpoint("good")], transport)
        task = asyncio.create_task(pool.run())
        for i in range(10):
            pool.submit(item(i))
            await asyncio.sleep(1.0)
        pool.finish_input()
        await task
        assert_pool_settled(pool, transport)
        return transport, done

    transport, done = run(main())
    assert done.ids() == Counter(range(10)) and all(f[3].name == "good" for f in done.rows)
    assert transport.rows_sent_to("badkey") == [0]


def test_when_every_endpoint_refuses_the_key_the_pool_stops_with_a_startup_error() -> None:
    async def main() -> tuple[Pool, Recorder, Done]:
        transport = Recorder(failing(lambda: HTTPStatusError(403, "forbidden")))
        pool, done = make_pool([endpoint("a", max_concurrency=2), endpoint("b", max_concurrency=2)],
                               transport, rows=50)
        await pool.run()
        await pool.drain(0.0)
        return pool, transport, done

    pool, transport, done = run(main())
    assert isinstance(pool.fatal, StartupError) and pool.stopping
    assert len(transport.sends) <= 4  # no row was sent more than once per slot
    assert done.rows == []  # refused rows are not failures: a resume requests them again
    assert all(ep.disabled for ep in pool.endpoints) and all(ep.gate.in_flight == 0 for ep in pool.endpoints)


# --------------------------------------------------------------------------- per-endpoint limits


@pytest.mark.parametrize("adaptive", [False, True])
def test_the_concurrency_cap_is_never_exceeded(adaptive: bool) -> None:
    rng = random.Random(3)
    waits = {i: rng.choice([0.01, 0.05, 0.2, 1.0]) for i in range(300)}

    async def behave(name: str, row: int, attempt: int) -> Completion:
        await asyncio.sleep(waits[row])
        if attempt == 1 and row % 7 == 0:
            raise HTTPStatusError(503, "busy")
        return answer(row)

    async def main() -> tuple[Recorder, list[Endpoint]]:
        transport = Recorder(behave)
        eps = [endpoint("a", max_concurrency=3, adaptive=adaptive),
               endpoint("b", max_concurrency=5, adaptive=adaptive)]
        pool, done = make_pool(eps, transport, rows=300)
        await pool.run()
        assert done.ids() == Counter(range(300))
        assert_pool_settled(pool, transport)
        return transport, eps

    transport, eps = run(main())
    assert transport.max_in_flight["a"] <= 3 and transport.max_in_flight["b"] <= 5
    if not adaptive:  # the cap is reached, so the test could see it exceeded
        assert transport.max_in_flight["a"] == 3 and transport.max_in_flight["b"] == 5


def test_slots_stay_held_until_the_answer_is_recorded() -> None:
    """An answer received but not yet recorded still holds its slot: at every send, requests in flight
    plus answers waiting for ``on_done`` stay within the cap (a kill -9 loses at most that many paid
    answers). Twelve answers arrive together and the finisher records them four at a time (yielding in
    between), so a pool that freed slots on arrival would send new requests while answers still wait."""
    cap = 3 * FINISH_BATCH_ROWS
    seen: list[int] = []
    answered = {"n": 0}

    async def main() -> None:
        done = Done()

        async def behave(name: str, row: int, attempt: int) -> Completion:
            seen.append(transport.in_flight[name] + answered["n"] - len(done.rows))
            await asyncio.sleep(0.01)
            answered["n"] += 1
            return answer(row)

        transport = Recorder(behave)
        pool = Pool([endpoint("e", max_concurrency=cap)], transport, NO_WAIT, done, seed=1)
        for i in range(200):
            pool.submit(item(i))
        pool.finish_input()
        await pool.run()
        assert done.ids() == Counter(range(200))

    run(main())
    assert len(seen) == 200 and max(seen) == cap  # reached, never exceeded


def test_requests_per_minute_are_respected_as_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> Recorder:
        patch_monotonic(monkeypatch, asyncio_throttle.throttler, asyncio.get_running_loop())
        transport = Recorder(latency(0.001))
        eps = [endpoint("a", max_concurrency=20, rpm=600), endpoint("b", max_concurrency=20, rpm=120)]
        pool, done = make_pool(eps, transport, rows=80)
        await pool.run()
        assert done.ids() == Counter(range(80))
        assert_pool_settled(pool, transport)
        return transport

    transport = run(main())
    for name, per_s in (("a", 10), ("b", 2)):
        times = [t for t, ep, _ in transport.sends if ep == name]
        assert len(times) > 2 * per_s  # enough sends to have met the limit
        # at most per_s sends in any one-second window: the (per_s+1)-th is a full second later
        assert all(times[i + per_s] - times[i] >= 1.0 for i in range(len(times) - per_s)), (name, times)
        # and in any minute, at most rpm
        assert all(sum(1 for u in times if t <= u < t + 60) <= per_s * 60 for t in times)
    counts = Counter(ep for _, ep, _ in transport.sends)
    assert counts["a"] > counts["b"]  # the faster limit gets the larger share


def test_tokens_per_minute_are_respected_as_counts() -> None:
    """6,000 tokens/min = 100 tokens/s with 5 s (500 tokens) of burst; each row costs 100 tokens (90 in
    the prompt estimate + 10 expected out, and the answers report exactly that, so nothing is refunded).
    By virtual time t at most 500 + 100 t tokens, i.e. 5 + t rows, may have been sent."""

    async def main() -> Recorder:
        transport = Recorder(latency(0.001))
        ep = endpoint("e", max_concurrency=50, tpm=6000, expected_completion_tokens=10)
        pool, done = make_pool([ep], transport, rows=40)
        await pool.run()
        assert done.ids() == Counter(range(40))
        assert_pool_settled(pool, transport)
        return transport

    transport = run(main())
    times = [t for t, _, _ in transport.sends]
    assert len(times) == 40
    for k, t in enumerate(times):
        assert (k + 1) * 100 <= 500 + 100 * t + 1e-6, (k, t)
    assert times[-1] >= 34.9  # the limit was binding (40 rows need 35 s after the 5-row burst)


# ----------------------------------------------------------------------- exactly once, on_done


def test_every_submitted_row_leaves_the_pool_exactly_once() -> None:
    """A mix of answers, retryable and final errors over three endpoints, rows submitted while the
    pool runs: every row reaches on_done once, with an answer or a final error, never both."""
    max_attempts = 4

    async def behave(name: str, row: int, attempt: int) -> Completion:
        r = random.Random(f"{name}-{row}-{attempt}")
        await asyncio.sleep(r.choice([0.0, 0.01, 0.1, 0.5]))
        x = r.random()
        if x < 0.10:
            raise HTTPStatusError(500, "boom")
        if x < 0.20:
            raise HTTPStatusError(429, "slow down", retry_after=r.choice([None, 0.2]))
        if x < 0.25:
            raise RequestTimeout("no answer")
        if x < 0.30:
            raise ConnectError("reset")
        if x < 0.35:
            raise MalformedResponse("not json", raw="<html>")
        if x < 0.40:
            raise HTTPStatusError(400, "bad request")  # final
        return answer(row)

    n = 300

    async def main() -> tuple[Pool, Recorder, Done]:
        transport = Recorder(behave)
        eps = [endpoint("a", max_concurrency=3), endpoint("b", max_concurrency=5),
               endpoint("c", max_concurrency=2)]
        pool, done = make_pool(eps, transport, RetryPolicy(max_attempts=max_attempts, base_delay_s=0.05,
                                                           max_delay_s=0.3))
        runner = asyncio.create_task(pool.run())
        for i in range(n):
            pool.submit(item(i))
            if i % 10 == 9:
                await asyncio.sleep(0.05)
        pool.finish_input()
        await runner
        assert_pool_settled(pool, transport)
        return pool, transport, done

    pool, transport, done = run(main())
    assert pool.fatal is None
    assert done.ids() == Counter(range(n))
    assert sum(f[0].attempts for f in done.rows) == len(transport.sends)  # every send belongs to a row
    finals = Counter()
    for it, comp, err, _ in done.rows:
        assert (comp is None) != (err is None)
        if comp is not None:
            assert comp.content == f"answer {it.row_id}"
        else:
            assert err is not None and (not err.retryable or it.attempts == max_attempts), (it, err)
            finals[err.kind] += 1
    ok = sum(1 for f in done.rows if f[1] is not None)
    assert ok > n // 2 and finals["client_error"] > 0  # the mix did happen
    assert sum(ep.counters.ok for ep in pool.endpoints) == ok


def test_a_row_that_keeps_failing_ends_once_with_its_last_error() -> None:
    async def main() -> tuple[Recorder, Done]:
        transport = Recorder(failing(lambda: HTTPStatusError(500, "always")))
        pool, done = make_pool([endpoint("e")], transport, RetryPolicy(max_attempts=3, base_delay_s=0.0,
                                                                        max_delay_s=0.0), rows=1)
        await pool.run()
        return transport, done

    transport, done = run(main())
    assert len(transport.sends) == 3
    ((it, comp, err, _),) = done.rows
    assert comp is None and isinstance(err, HTTPStatusError) and err.status == 500 and it.attempts == 3
    assert it.last_error is not None and it.last_error.startswith("server_error")


def test_a_pool_with_no_rows_ends_at_once() -> None:
    async def main() -> Done:
        transport = Recorder(latency(0.01))
        pool, done = make_pool([endpoint("e")], transport, rows=0)
        await pool.run()
        assert transport.sends == []
        return done

    assert run(main()).rows == []


# ------------------------------------------------------------------------------ stop and drain


def test_stop_sends_nothing_more_and_drain_records_the_requests_in_flight() -> None:
    async def main() -> tuple[Pool, Recorder, Done, int]:
        transport = Recorder(latency(10.0))
        pool, done = make_pool([endpoint("e", max_concurrency=4)], transport, rows=20)
        task = asyncio.create_task(pool.run())
        await asyncio.sleep(1.0)
        assert len(transport.sends) == 4 and done.rows == []
        pool.stop()
        await task  # the dispatchers end at once
        assert len(transport.sends) == 4 and pool.in_flight == 4
        cancelled = await pool.drain(grace_s=100.0)  # the four answers come at t=10
        return pool, transport, done, cancelled

    pool, transport, done, cancelled = run(main())
    assert cancelled == 0 and transport.cancelled == 0
    assert sorted(done.ids()) == [row for _, _, row in transport.sends]
    assert len(transport.sends) == 4 and pool.stopping and pool.fatal is None
    assert all(ep.gate.in_flight == 0 for ep in pool.endpoints)
    assert pool.outstanding == 16  # never sent: requested again on resume, never reported done


def test_drain_cancels_what_the_grace_period_does_not_cover() -> None:
    async def main() -> tuple[Pool, Recorder, Done, int]:
        transport = Recorder(latency(10.0))
        pool, done = make_pool([endpoint("e", max_concurrency=4)], transport, rows=20)
        task = asyncio.create_task(pool.run())
        await asyncio.sleep(1.0)
        pool.stop()
        await task
        cancelled = await pool.drain(grace_s=2.0)
        await asyncio.sleep(100.0)  # nothing comes back later either
        return pool, transport, done, cancelled

    pool, transport, done, cancelled = run(main())
    assert cancelled == 4 and transport.cancelled == 4
    assert done.rows == []  # cancelled rows are not failures: they are requested again on resume
    assert len(transport.sends) == 4 and not pool.tasks
    assert all(ep.gate.in_flight == 0 for ep in pool.endpoints)
    assert pool.endpoints[0].breaker.state == "closed"


def test_stop_cancels_retries_waiting_for_their_backoff() -> None:
    async def behave(name: str, row: int, attempt: int) -> Completion:
        raise HTTPStatusError(429, "slow down", retry_after=100.0)

    async def main() -> tuple[Pool, Recorder, Done]:
        transport = Recorder(behave)
        pool, done = make_pool([endpoint("e", max_concurrency=2)], transport, rows=2)
        task = asyncio.create_task(pool.run())
        await asyncio.sleep(1.0)
        assert len(pool.timers) == 2  # both rows wait ~100 s for their retry
        pool.stop()
        assert not pool.timers  # cancelled, not left to fire
        await task
        await pool.drain(1.0)
        await asyncio.sleep(500.0)  # long past the retry time
        return pool, transport, done

    pool, transport, done = run(main())
    assert [row for _, _, row in transport.sends] == [0, 1]  # never sent again
    assert done.rows == [] and not pool.timers
    assert pool.outstanding == 2  # not done, not failed: requested again on resume


def test_stop_keeps_the_first_error() -> None:
    async def main() -> Pool:
        pool, _ = make_pool([endpoint("e")], Recorder(latency(1.0)), rows=3)
        task = asyncio.create_task(pool.run())
        await asyncio.sleep(0.5)
        first = RuntimeError("first")
        pool.stop(first)
        pool.stop(RuntimeError("second"))
        await task
        await pool.drain(5.0)
        assert pool.fatal is first
        return pool

    pool = run(main())
    assert pool.stopping and pool.stopped.is_set()


def test_ready_rows_bound_what_waits_for_an_endpoint_and_refill_in_bursts() -> None:
    """With ``ready_rows`` the pool's room closes once that many rows wait for an endpoint, and opens
    again when half of them were taken: a producer that waits for room keeps at most that many rows
    (with their prompts) queued, whatever max_concurrency is."""
    async def main() -> None:
        transport = Recorder(latency(1.0))
        done = Done()
        pool = Pool([endpoint("a", max_concurrency=2)], transport, NO_WAIT, done, seed=7, ready_rows=8)
        queued: list[int] = []

        async def produce() -> None:
            for i in range(60):
                if not pool.room.is_set():
                    await pool.room.wait()
                pool.submit(item(i))
                queued.append(pool.queue.qsize())
            pool.finish_input()

        await asyncio.gather(produce(), pool.run())
        assert done.ids() == Counter(range(60))
        assert max(queued) == 8  # never more than ready_rows wait
        assert queued[:8] == list(range(1, 9))
        refills = [q for a, q in zip(queued, queued[1:], strict=False) if q > a and a <= 4]
        assert refills  # room reopened at half: the producer refilled from 4 (not one row at a time from 7)
        assert_pool_settled(pool, transport)

    run(main())
