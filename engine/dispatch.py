"""Fan requests out to endpoints: bounded in-flight, per-endpoint limits, retries, routing (L3).

One dispatcher task per endpoint takes permits in this order: a concurrency slot (adaptive limit),
the circuit breaker, a requests/min permit, then the next work item (retries first), then tokens/min.
Only then is a request task started. Routing is work-stealing: an endpoint pulls work only when it has
free capacity, so a slow replica pulls less and a dead one (breaker open) pulls nothing.

Retries happen as errors occur: a failed attempt is put back on the shared queue after its backoff
(any endpoint may take it). A row leaves the pool exactly once, through ``on_done``.

Answers are recorded by one *finisher* task, not by the request tasks: a request task only does the
cheap accounting and queues the answer. The finisher calls ``on_done`` (parse, journal) a few rows at a
time and releases each row's concurrency slot once the row is recorded, yielding to the loop between
batches, so new requests leave as soon as slots free instead of after a whole wave of answers has been
processed. ``on_done`` gets the rows of one batch together (the journal writes them with one system
call). A slot is held from the send until the answer is journaled, so answers received but not yet
recorded never exceed the concurrency limit (a kill -9 loses at most that many paid requests).

When every endpoint is failing (circuit breakers open or half-open, or disabled) the pool *pauses*: only
the breakers' probes are sent. A probe that succeeds closes its breaker and ends the pause ("answering
again"). A pause longer than ``max_pause_s`` (measured on the event loop's clock, by one timer) stops the
pool with :class:`EndpointsDown`, like any other fatal stop. ``on_pause`` hears each transition (the wall
time the pause began, then None on recovery), e.g. to show the pause to ``clair status``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from engine.core.errors import (
    BudgetReached,
    EndpointError,
    EndpointsDown,
    HTTPStatusError,
    MalformedResponse,
    StartupError,
    TransportError,
)
from engine.core.types import Completion, Message, Transport, WorkItem
from engine.policy.adaptive import AdaptiveController
from engine.policy.breaker import CircuitBreaker
from engine.policy.budget import Budget, Reservation
from engine.policy.limiter import ConcurrencyGate, RequestRateLimiter, TokenBucket
from engine.policy.metrics import EndpointCounters, EndpointSnapshot
from engine.policy.retry import RetryPolicy
from engine.records import request_key

log = logging.getLogger("clair")

#: statuses that mean this endpoint cannot serve us at all (bad key, wrong URL or model)
FATAL_STATUSES = frozenset({401, 403, 404})
_NEW, _RETRY, _END = 1, 0, 2
#: rows the finisher records per turn of the event loop (~1-2 ms of work), so freed slots refill promptly
FINISH_BATCH_ROWS = 4

#: one finished row: the item, its answer or its final error, and the endpoint that served it
Finished = tuple[WorkItem, Completion | None, EndpointError | None, "Endpoint"]
#: records a batch of finished rows (e.g. journals them with one write)
OnDone = Callable[[list[Finished]], None]
#: hears the pool's pause transitions: the wall time (epoch s) every endpoint began failing, None on recovery
OnPause = Callable[[float | None], None]


def loop_clock() -> float:
    """The running event loop's clock (a fake-clock loop in tests), ``time.monotonic`` outside a loop."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


class Endpoint:
    """One endpoint's limits and state. ``name`` is safe to log (never a key)."""

    def __init__(
        self,
        *,
        name: str,
        url: str,
        model: str,
        headers: dict[str, str],
        generation: dict[str, Any],
        max_concurrency: int,
        rpm: float | None = None,
        tpm: float | None = None,
        weight: float = 1.0,
        adaptive: bool = True,
        breaker_failures: int = 20,
        breaker_open_s: float = 10.0,
        expected_completion_tokens: int = 1000,
        extra_body: dict[str, Any] | None = None,
        system_role: bool = True,
        query: dict[str, str] | None = None,
        clock: Callable[[], float] = loop_clock,
        tpm_counts_max_tokens: bool = False,
        context_length: int | None = None,
    ):
        self.name, self.url, self.model = name, url.rstrip("/"), model
        if query:  # the transport puts each route's path before it (Azure's ?api-version=...)
            self.url += "?" + urllib.parse.urlencode(query)
        self.headers = {"Content-Type": "application/json", **headers}
        self.generation = generation
        cap = max(1, round(max_concurrency * weight)) if weight != 1.0 else max_concurrency
        self.max_concurrency = cap
        self.controller = (
            AdaptiveController(cap, user_rpm=rpm, user_tpm=tpm) if adaptive else None
        )
        start = self.controller.concurrency if self.controller else cap
        self.gate = ConcurrencyGate(start)
        self.rpm = RequestRateLimiter(self.controller.rpm if self.controller else rpm)
        eff_tpm = self.controller.tpm if self.controller else tpm
        self.tpm = _tpm_bucket(eff_tpm)
        self.breaker = CircuitBreaker(failure_threshold=breaker_failures, open_s=breaker_open_s, clock=clock)
        self.breaker_changed = asyncio.Event()
        self.disabled: str | None = None
        self.last_error: str | None = None  #: ``kind: message`` of its last failed request
        #: no /models route at the start-up check: until its first answer parses, a malformed answer disables it
        self.unverified = False
        self.counters = EndpointCounters()
        self.in_flight = 0
        self.expected_completion = expected_completion_tokens
        #: no system role: the system text is folded into the first user message when the body is built
        self.fold_system = not system_role
        #: the endpoint's tokens/min limit charges prompt + max_tokens at admission (OpenAI): so does ours
        self.tpm_counts_max_tokens = tpm_counts_max_tokens
        mt = generation.get("max_tokens")
        self._max_tokens = mt if isinstance(mt, int) else None  # the generation's (a row's own wins)
        #: the model's context length in tokens (config, else GET /models; None: unknown)
        self.context_length = context_length
        fields = {"model": model, **generation, **(extra_body or {})}
        fields = {k: v for k, v in fields.items() if v is not None or k not in (extra_body or {})}
        self._prefix = orjson.dumps(fields, option=orjson.OPT_NON_STR_KEYS)[:-1] + b',"messages":'
        #: what makes this endpoint's requests differ from another's for the same messages (the request key)
        self._key_prefix = self._prefix + (b"\x00system_role=false" if self.fold_system else b"")

    @property
    def prefix(self) -> bytes:
        """The body's bytes before the messages (model, generation, extra_body)."""
        return self._prefix

    def request_key(self, messages_json: bytes, max_tokens: int | None = None) -> str:
        """The content key of this endpoint's request for these messages (``records.request_key`` of its body
        prefix: model, generation, extra_body; the system-role fold, which changes the messages sent; and a
        row's own ``max_tokens``)."""
        return request_key(self._key_prefix, messages_json, max_tokens)

    def body(self, item: WorkItem) -> bytes:
        """The request body; a row with its own budget (``generation.max_tokens: auto``, the prefix has
        no max_tokens then) carries it at the end."""
        if self.fold_system:  # this endpoint's model has no system role
            messages = orjson.dumps(fold_system(item.messages))
        else:
            messages = item.messages_json or orjson.dumps(item.messages)
        if item.max_tokens is None:
            return self._prefix + messages + b"}"
        return self._prefix + messages + b',"max_tokens":%d}' % item.max_tokens

    def cost(self, item: WorkItem) -> float:
        """Tokens the tokens/min limiter charges when the row is sent: prompt + its max_tokens where the
        endpoint counts max_tokens at admission, else prompt + the expected completion (within the budget)."""
        budget = item.max_tokens or self._max_tokens
        if self.tpm_counts_max_tokens and budget is not None:
            return float(item.prompt_tokens_est + budget)
        if budget is not None and budget < self.expected_completion:
            return float(item.prompt_tokens_est + budget)
        return float(item.prompt_tokens_est + self.expected_completion)

    def charged(self, item: WorkItem, prompt_tokens: int, completion_tokens: int) -> int:
        """Tokens the endpoint counted for an answered row (the limiter is refunded the rest of ``cost``)."""
        budget = item.max_tokens or self._max_tokens
        if self.tpm_counts_max_tokens and budget is not None:
            return prompt_tokens + budget
        return prompt_tokens + completion_tokens

    def apply_controller(self) -> None:
        c = self.controller
        if c is None:
            return
        concurrency, rpm = c.concurrency, c.rpm
        if concurrency != self.gate.limit:
            self.gate.limit = concurrency
        if rpm != self.rpm.rpm:
            self.rpm.set_rpm(rpm)
        tpm = c.tpm
        if tpm is None:
            self.tpm = None
        elif self.tpm is None:
            self.tpm = _tpm_bucket(tpm)
        elif abs(self.tpm.rate_per_s * 60 - tpm) > 1e-6:
            self.tpm.set_rate(tpm / 60.0, _tpm_capacity(tpm))

    def snapshot(self) -> EndpointSnapshot:
        c = self.counters
        return EndpointSnapshot(name=self.name, state="disabled" if self.disabled else self.breaker.state,
                                in_flight=self.in_flight, limit=self.gate.limit, rate_limited=c.rate_limited,
                                requests=c.requests, retries=c.retries)

    def state(self) -> dict[str, Any]:
        c = self.counters
        return {
            "name": self.name,
            "model": self.model,
            "state": "disabled" if self.disabled else self.breaker.state,
            "disabled_reason": self.disabled,
            "concurrency_limit": self.gate.limit,
            "in_flight": self.in_flight,
            "rpm_limit": self.rpm.rpm,
            "requests": c.requests,
            "ok": c.ok,
            "retries": c.retries,
            "rate_limited": c.rate_limited,
            "errors": dict(c.errors),
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "latency": c.latency.summary(),
            "breaker_opened": self.breaker.opened_count,
        }


def fold_system(messages: list[Message]) -> list[Message]:
    """The messages for a model without a system role: a leading system message is folded into the first
    user message as ``system + "\\n\\n" + user`` (the layout of the ``contextualai`` variant); an empty system
    message is dropped. Messages without a leading system message are returned as they are."""
    if not messages or messages[0].get("role") != "system":
        return messages
    system, rest = messages[0].get("content") or "", messages[1:]
    if not system:
        return rest
    for i, m in enumerate(rest):
        if m.get("role") == "user":
            return [*rest[:i], {**m, "content": system + "\n\n" + (m.get("content") or "")}, *rest[i + 1:]]
    return [{"role": "user", "content": system}, *rest]


def _tpm_capacity(tpm: float) -> float:
    return max(tpm / 60.0 * 5.0, 1.0)  # five seconds' worth of tokens


def _tpm_bucket(tpm: float | None) -> TokenBucket | None:
    return TokenBucket(tpm / 60.0, _tpm_capacity(tpm)) if tpm else None


class Pool:
    """The worker pool. ``submit`` rows, then ``finish_input``; ``run`` returns when all are done."""

    def __init__(
        self,
        endpoints: list[Endpoint],
        client: Transport,
        policy: RetryPolicy,
        on_done: OnDone,
        *,
        seed: int | None = None,
        max_pause_s: float | None = None,
        on_pause: OnPause | None = None,
        budget: Budget | None = None,
        ready_rows: int | None = None,
    ):
        self.endpoints = endpoints
        #: at most this many submitted rows wait for an endpoint (None: no bound); ``room`` is cleared at the
        #: bound and set again once half of them were taken, so a producer refills in bursts
        self.ready_rows = ready_rows
        self.room = asyncio.Event()
        self.room.set()
        #: the run's spending budget: one more permit, shared by every endpoint (None: no budget)
        self.budget = budget
        self.client = client
        self.policy = policy
        self.on_done = on_done
        self.rng = random.Random(seed)
        self.queue: asyncio.PriorityQueue[tuple[int, int, WorkItem | None]] = asyncio.PriorityQueue()
        self._seq = itertools.count()
        self.outstanding = 0
        self.input_done = False
        self.stopping = False
        self.fatal: BaseException | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.timers: set[asyncio.TimerHandle] = set()
        self.paused = False
        self.max_pause_s = max_pause_s  # None: a pause lasts until an endpoint recovers
        self.on_pause = on_pause
        self.paused_since: float | None = None  # loop time every endpoint began failing (while paused)
        self.paused_wall: float | None = None  # the same instant as wall time, for display
        self._pause_timer: asyncio.TimerHandle | None = None
        self._ended = False
        self.stopped = asyncio.Event()
        self._finq: deque[Finished] = deque()  # rows waiting to be recorded
        self._finq_ready = asyncio.Event()
        self._finisher_task: asyncio.Task[None] | None = None  # None: answers are recorded on arrival
        self._loops: list[asyncio.Task[None]] = []  # one dispatcher per live endpoint, while run() runs

    # -- feeding

    def submit(self, item: WorkItem) -> None:
        self.outstanding += 1
        self.queue.put_nowait((_NEW, next(self._seq), item))
        if self.ready_rows is not None and self.queue.qsize() >= self.ready_rows:
            self.room.clear()

    def finish_input(self) -> None:
        self.input_done = True
        self._maybe_end()

    def stop(self, error: BaseException | None = None) -> None:
        """Stop taking work (Ctrl-C, fatal error). In-flight requests are left to the caller."""
        if error is not None and self.fatal is None:
            self.fatal = error
        if self.stopping:
            return
        self.stopping = True
        self.room.set()  # a producer waiting for room sees the stop
        for h in self.timers:
            h.cancel()
        self.timers.clear()
        self._cancel_pause_timer()
        self._end_loops(priority=-1)
        # a dispatcher waiting for its rate limits holds a row it must not send now (it would be paid
        # for after the stop): cancelled, it puts the row back unsent
        for t in self._loops:
            if t is not asyncio.current_task():
                t.cancel()
        self.stopped.set()

    def _maybe_end(self) -> None:
        if self.input_done and self.outstanding == 0:
            self._end_loops(priority=_END)

    def _end_loops(self, priority: int) -> None:
        if self._ended and priority >= 0:
            return
        self._ended = True
        for _ in range(len(self.endpoints) + 1):  # one per loop (extra ones are harmless)
            self.queue.put_nowait((priority, next(self._seq), None))
        for ep in self.endpoints:
            ep.breaker_changed.set()  # a loop waiting out an open breaker (minutes) takes its end now

    @property
    def in_flight(self) -> int:
        return sum(ep.in_flight for ep in self.endpoints)

    # -- running

    async def run(self) -> None:
        live = [ep for ep in self.endpoints if not ep.disabled]
        if self.input_done and self.outstanding == 0:
            return
        loops = self._loops = [asyncio.create_task(self._loop(ep), name=f"dispatch:{ep.name}") for ep in live]
        for t in loops:
            t.add_done_callback(self._loop_ended)
        self._finisher_task = asyncio.create_task(self._finisher(), name="finisher")
        try:
            ended = await asyncio.gather(*loops, return_exceptions=True)  # stop() cancels them
            bug = next((e for e in ended if isinstance(e, Exception)), None)
            if bug is not None:
                raise bug
        finally:
            self._loops = []
            self._cancel_pause_timer()  # rows all done while paused: nothing left to stop
            for t in loops:
                t.cancel()
            if self._finisher_task is not None:  # None: it ended on a bug (and stopped the pool)
                self._finisher_task.cancel()
            self._finisher_task = None  # answers still in flight (Ctrl-C grace period) are recorded on arrival
            self.flush()

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.stop(task.exception())  # a bug in one dispatcher stops the others too

    def flush(self) -> None:
        """Record every answer already received (``drain`` and the end of ``run`` call this)."""
        while self._finq:
            self._record_batch(len(self._finq))

    async def _finisher(self) -> None:
        try:
            while True:
                if not self._finq:
                    self._finq_ready.clear()
                    await self._finq_ready.wait()
                self._record_batch(FINISH_BATCH_ROWS)
                await asyncio.sleep(0)  # let the dispatchers refill the slots just released
        except Exception as e:  # a bug: record what is left on arrival, stop the run
            self._finisher_task = None
            self.stop(e)
            self.flush()

    def _record_batch(self, rows: int) -> None:
        """Hand ``on_done`` up to ``rows`` finished rows, then free their slots."""
        q = self._finq
        batch = [q.popleft() for _ in range(min(rows, len(q)))]
        try:
            self.on_done(batch)
        except Exception as e:  # a bug or a storage error: stop the run, keep state
            self.stop(e)
        finally:
            for row in batch:
                row[3].gate.release()
        self.outstanding -= len(batch)
        self._maybe_end()

    async def drain(self, grace_s: float) -> int:
        """Wait up to ``grace_s`` for in-flight requests, then cancel the rest. Returns rows cancelled."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=grace_s)
        left = [t for t in self.tasks if not t.done()]
        for t in left:
            t.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)
        self.flush()
        return len(left)

    async def _loop(self, ep: Endpoint) -> None:
        while not self.stopping:
            await ep.gate.acquire()
            try:
                await self._wait_healthy(ep)
                if ep.disabled or self.stopping:
                    ep.gate.release()
                    break
                await ep.rpm.acquire()  # before taking a row, so another endpoint may send it meanwhile
                _, _, item = await self.queue.get()
                ep.rpm.restamp()
                if not self.room.is_set() and self.queue.qsize() <= (self.ready_rows or 0) // 2:
                    self.room.set()
            except BaseException:
                ep.breaker.release()
                ep.gate.release()
                raise
            if item is None:
                ep.breaker.release()
                ep.gate.release()
                break
            if ep.disabled or ep.breaker.state == "open":  # it failed while this loop waited for a row:
                ep.breaker.release()  # the row goes back for a healthy endpoint, this loop waits or ends
                ep.gate.release()
                self._requeue(item)
                continue
            res = None
            if self.budget is not None:
                res = await self._reserve(ep, item)
                if res is None:  # the budget is reached (the pool is stopped), or the run stopped meanwhile
                    break
            if ep.tpm is not None:
                try:
                    await ep.tpm.acquire(ep.cost(item))
                except BaseException:
                    ep.breaker.release()
                    ep.gate.release()
                    self._requeue(item)
                    self._release(res)
                    raise
            task = asyncio.create_task(self._attempt(ep, item, res))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _reserve(self, ep: Endpoint, item: WorkItem) -> Reservation | None:
        """The budget's permit: room for this request's worst case. None when the budget is reached (the pool
        is stopped) or the run stopped while this loop waited for room; the row then goes back unsent."""
        assert self.budget is not None
        try:
            res = await self.budget.reserve(item.prompt_tokens_est, item.max_tokens)
        except BaseException:
            ep.breaker.release()
            ep.gate.release()
            self._requeue(item)
            raise
        if res is None or self.stopping:
            ep.breaker.release()
            ep.gate.release()
            self._requeue(item)
            if res is None:
                self.stop(BudgetReached(self.budget.reached_message(item.prompt_tokens_est, item.max_tokens)))
            else:
                self.budget.release(res)
            return None
        return res

    def _release(self, res: Reservation | None) -> None:
        if res is not None and self.budget is not None:
            self.budget.release(res)

    def _settle(self, res: Reservation, comp: Completion | None) -> None:
        if self.budget is not None:
            if comp is not None:
                self.budget.settle(res, comp.prompt_tokens, comp.completion_tokens)
            else:
                self.budget.release(res)

    async def _wait_healthy(self, ep: Endpoint) -> None:
        while not ep.disabled and not self.stopping and not self._ended and not ep.breaker.allow():
            self._check_pause()
            ep.breaker_changed.clear()
            wait = ep.breaker.time_until_probe()
            try:
                await asyncio.wait_for(ep.breaker_changed.wait(), timeout=wait if wait > 0 else None)
            except TimeoutError:
                pass

    # -- pausing: every endpoint failing

    def _check_pause(self) -> None:
        """Pause when every endpoint is failing (breaker not closed, or disabled); arm the stop timer."""
        if self.paused or self.stopping or not all(e.disabled or e.breaker.state != "closed" for e in self.endpoints):
            return
        loop = asyncio.get_running_loop()
        self.paused = True
        self.paused_since, self.paused_wall = loop.time(), time.time()
        limit = f"; the run stops after {self.max_pause_s:g}s of this (run.max_pause_s)" if self.max_pause_s else ""
        log.warning("every endpoint is failing (circuit breakers open); pausing until one recovers%s", limit)
        if self.max_pause_s is not None:
            self._pause_timer = loop.call_at(self.paused_since + self.max_pause_s, self._pause_expired)
        self._tell_pause(self.paused_wall)

    def _resume(self, ep: Endpoint) -> None:
        """``ep`` answered a request (its breaker closed): the pause is over."""
        self.paused = False
        self.paused_since = self.paused_wall = None
        self._cancel_pause_timer()
        log.warning("endpoint %s is answering again; resuming", ep.name)
        self._tell_pause(None)

    def _pause_expired(self) -> None:
        self._pause_timer = None
        if not self.paused or self.stopping or self.paused_since is None:
            return
        failing = [(e.name, f"disabled: {e.disabled}" if e.disabled else e.last_error or "no answer")
                   for e in self.endpoints]
        self.stop(EndpointsDown(asyncio.get_running_loop().time() - self.paused_since, failing))

    def _cancel_pause_timer(self) -> None:
        if self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None

    async def _attempt(self, ep: Endpoint, item: WorkItem, res: Reservation | None = None) -> None:
        loop = asyncio.get_running_loop()
        item.attempts += 1
        if item.first_sent is None:
            item.first_sent = loop.time()
        ep.in_flight += 1
        ep.counters.requests += 1
        if ep.controller is not None:
            ep.controller.on_send()
        comp: Completion | None = None
        err: EndpointError | None = None
        queued = False
        try:
            try:
                comp = await self.client.complete(ep.url, ep.headers, ep.body(item))
            except EndpointError as e:
                err = e
            except asyncio.CancelledError:
                ep.breaker.release()
                raise
            finally:
                ep.in_flight -= 1
                if res is not None:  # the answer's real usage replaces its worst case; no answer, no cost
                    self._settle(res, comp)
            if comp is not None:
                self._on_success(ep, item, comp)
                self._queue_finish(ep, item, comp, None)
                queued = True
            else:
                assert err is not None
                if self._on_error(ep, item, err, loop.time() - item.first_sent):
                    self._queue_finish(ep, item, None, err)
                    queued = True
        except Exception as e:  # a bug: stop the run, keep state
            self.stop(e)
        finally:
            if not queued:
                ep.gate.release()  # otherwise the finisher releases it once the row is recorded

    def _tell_pause(self, since: float | None) -> None:
        """``on_pause``, whose failure (it writes the manifest) must not lose the answer being recorded."""
        if self.on_pause is None:
            return
        try:
            self.on_pause(since)
        except Exception as e:
            log.warning("could not record the pause state (%s); the run goes on", e)

    def _queue_finish(
        self, ep: Endpoint, item: WorkItem, comp: Completion | None, err: EndpointError | None
    ) -> None:
        """Hand a finished row to the finisher, which records it and then frees its slot (recorded at once
        when no finisher runs: after the pool's end, e.g. answers arriving in the Ctrl-C grace period)."""
        self._finq.append((item, comp, err, ep))
        if self._finisher_task is None:
            self.flush()
        else:
            self._finq_ready.set()

    def _on_success(self, ep: Endpoint, item: WorkItem, comp: Completion) -> None:
        c = ep.counters
        c.ok += 1
        c.latency.record(comp.latency_s)
        pt, ct = comp.prompt_tokens or 0, comp.completion_tokens or 0
        c.prompt_tokens += pt
        c.completion_tokens += ct
        if ct:
            ep.expected_completion = int(0.9 * ep.expected_completion + 0.1 * ct)
        if ep.tpm is not None and (pt or ct):
            ep.tpm.refund(ep.cost(item) - ep.charged(item, pt, ct))
        ep.breaker.record_success()
        ep.breaker_changed.set()
        if self.paused and ep.breaker.state == "closed":  # a probe succeeded (a stale answer leaves it open)
            self._resume(ep)
        ep.unverified = False
        if ep.controller is not None:
            ep.controller.on_success(comp.latency_s, comp.rate_headers)
            ep.apply_controller()

    def _on_error(self, ep: Endpoint, item: WorkItem, err: EndpointError, elapsed: float) -> bool:
        """Account for a failed attempt; retry it or not. True when the row ends here, failed."""
        c = ep.counters
        c.errors[err.kind] += 1
        ep.last_error = f"{err.kind}: {' '.join(str(err).split())[:200]}"
        status = err.status if isinstance(err, HTTPStatusError) else None
        if status in (429, 503):
            c.rate_limited += status == 429
            if ep.controller is not None:
                ep.controller.on_congestion(err.headers, latency_s=err.latency_s)
                ep.apply_controller()
        malformed = isinstance(err, MalformedResponse)
        if isinstance(err, TransportError) or malformed or (status is not None and status >= 500 and status != 503):
            ep.breaker.record_failure()  # the endpoint itself is failing (a wrong URL answers malformed)
        else:
            ep.breaker.release()  # 429 / 4xx: says nothing about the endpoint's health
        ep.breaker_changed.set()
        self._check_pause()
        if status in FATAL_STATUSES or (malformed and ep.unverified):
            self._disable(ep, item, err)
            return False
        item.last_error = f"{err.kind}: {err}"
        delay = self.policy.next_delay(err, item.attempts, elapsed, self.rng)
        if delay is None:
            return True
        if not self.stopping:  # when stopping the row is not final: it is requested again on resume
            c.retries += 1
            self._schedule_retry(item, delay)
        return False

    def _disable(self, ep: Endpoint, item: WorkItem, err: EndpointError) -> None:
        if ep.disabled is None:
            ep.disabled = f"{err}"
            log.error("endpoint %s disabled: %s", ep.name, err)
            ep.breaker_changed.set()
        item.attempts -= 1  # not the row's fault
        if all(e.disabled for e in self.endpoints):
            hint = "check the API key env var, the URL and the model name"
            self.stop(StartupError(f"every endpoint refused the requests (last: {ep.name}: {err}); {hint}"))
            return
        self._check_pause()  # the others' breakers may be open
        self._requeue(item)

    def _schedule_retry(self, item: WorkItem, delay: float) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            if handle is not None:
                self.timers.discard(handle)
            self._requeue(item)

        handle = loop.call_later(delay, fire)
        self.timers.add(handle)

    def _requeue(self, item: WorkItem) -> None:
        if not self.stopping:
            self.queue.put_nowait((_RETRY, next(self._seq), item))
