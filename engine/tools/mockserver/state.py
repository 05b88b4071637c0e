"""The mutable state of one running mock server: its counters, limits, draws and sleeping handlers.

``State`` holds what ``GET /stats`` reports (``snapshot``; ``reset`` zeroes it), the rate-limit
buckets, the fault/latency ``Injector`` and the precomputed ``StudentAnswers`` built from the config, and the handlers asleep in a latency
or a hang: ``sleep`` waits on a loop timer, and ``shutdown`` wakes every sleeper at once so the server
stops promptly (``woken_at_shutdown`` counts them).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import orjson

from engine.tools.mockserver.config import FAULTS, MockConfig
from engine.tools.mockserver.faults import Injector
from engine.tools.mockserver.limits import Limits
from engine.tools.mockserver.student import StudentAnswers

__all__ = ["State"]


class State:
    def __init__(self, cfg: MockConfig) -> None:
        self.cfg = cfg
        self.inject = Injector(cfg)
        self.started = time.monotonic()
        self.limits = Limits(cfg.rpm, cfg.tpm, self.started)
        self.auth = f"Bearer {cfg.api_key}" if cfg.api_key else None
        self.ids = itertools.count(1)
        self.sleepers: set[asyncio.Future[None]] = set()
        self.closing = False
        self.woken_at_shutdown = 0
        names = (cfg.model,) if cfg.student_model is None else (cfg.model, cfg.student_model)
        entries: list[dict[str, Any]] = []
        for name in names:
            entry: dict[str, Any] = {"id": name, "object": "model", "created": 0, "owned_by": "mock"}
            if cfg.context_length is not None:
                entry["max_model_len"] = cfg.context_length  # vLLM's field
            entries.append(entry)
        self.models_body = orjson.dumps({"object": "list", "data": entries})
        self.student = StudentAnswers(cfg.student_tokens, cfg.seed) if cfg.student_model is not None else None
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.completions = 0
        self.status: dict[int, int] = {}
        self.faults = dict.fromkeys((*FAULTS, "fail_after"), 0)
        self.limited = {"rpm": 0, "tpm": 0, "concurrency": 0}
        self.peak_in_flight = self.in_flight
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.other_requests = 0
        # the share of requests / completions / tokens above that named the student model
        self.student_requests = 0
        self.student_completions = 0
        self.student_prompt_tokens = 0
        self.student_completion_tokens = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "completions": self.completions,
            "status": {str(k): v for k, v in sorted(self.status.items())},
            "faults": dict(self.faults),
            "limited": dict(self.limited),
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "other_requests": self.other_requests,
            "student_requests": self.student_requests,
            "student_completions": self.student_completions,
            "student_prompt_tokens": self.student_prompt_tokens,
            "student_completion_tokens": self.student_completion_tokens,
            "cpu_s": time.process_time(),
            "uptime_s": time.monotonic() - self.started,
        }

    async def sleep(self, delay: float) -> bool:
        """Sleep ``delay`` s; returns False when woken early because the server shuts down."""
        if self.closing:
            return False
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        handle = loop.call_later(delay, _wake, fut)
        self.sleepers.add(fut)
        try:
            await fut
        finally:
            self.sleepers.discard(fut)
            handle.cancel()
        return not self.closing

    def shutdown(self) -> None:
        self.closing = True
        for fut in list(self.sleepers):
            if _wake(fut):
                self.woken_at_shutdown += 1


def _wake(fut: asyncio.Future[None]) -> bool:
    if fut.done():
        return False
    fut.set_result(None)
    return True
