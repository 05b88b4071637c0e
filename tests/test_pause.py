"""A dead endpoint pauses a run, and a pause longer than run.max_pause_s stops it (exit 75, resumable).

Unit tests run the pool on a fake clock (tests/fakeclock.py); end-to-end tests kill the bundled mock
(``--fail-after-s``, or a stopped process: a dead port) under a real ``clair run``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakeclock import run as run_on_fake_clock
from helpers import assert_exactly_once, clair, clair_popen, make_input, read_ids, write_config

from engine.client import FakeClient
from engine.commands.status import collect_status, format_status
from engine.core.errors import ConnectError, EndpointsDown, RunStateError
from engine.core.types import Completion, WorkItem
from engine.dispatch import Endpoint, Pool
from engine.policy.metrics import Progress
from engine.policy.retry import RetryPolicy
from engine.progress import format_line
from engine.store import RunView
from engine.tools.mockserver import build_answer
from engine.tools.mockserver_proc import MockProcess

# ---------------------------------------------------------------------------- the pool, on a fake clock

#: retries that never give a row up during these tests (the pause, not the retry budget, is under test)
PATIENT = RetryPolicy(max_attempts=100_000, base_delay_s=0.1, max_delay_s=1.0, max_total_s=1e9)


class _Messages(logging.Handler):
    """The ``clair`` logger's messages, each with the number of successful answers the client had given."""

    def __init__(self, answered: Callable[[], int]):
        super().__init__(logging.WARNING)
        self.answered = answered
        self.seen: list[tuple[str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.getMessage(), self.answered()))

    def __enter__(self) -> _Messages:
        logging.getLogger("clair").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("clair").removeHandler(self)

    def count(self, text: str) -> int:
        return sum(text in m for m, _ in self.seen)


class _Server:
    """A fake endpoint that is dead (connection refused) while ``dead(loop time)`` is true; answers take 1 s."""

    def __init__(self, dead: Callable[[float], bool]):
        self.dead = dead
        self.sent: list[float] = []  # loop time of every request
        self.ok = 0

    async def handler(self, url: str, headers: dict[str, str], body: dict[str, Any]) -> Completion:
        now = asyncio.get_running_loop().time()
        self.sent.append(now)
        if self.dead(now):
            raise ConnectError("Cannot connect to host (Connect call failed)")
        await asyncio.sleep(1.0)
        self.ok += 1
        return Completion(content=build_answer("x", 0), finish_reason="stop", model="m")


def _pool(server: _Server, rows: int, *, max_pause_s: float | None,
          notes: list[float | None]) -> tuple[Pool, Endpoint, list[Any]]:
    ep = Endpoint(name="ep0", url="http://ep0/v1", model="m", headers={}, generation={}, max_concurrency=2,
                  adaptive=False, breaker_failures=3, breaker_open_s=5.0)
    done: list[Any] = []
    pool = Pool([ep], FakeClient(server.handler), PATIENT, lambda batch: done.extend(batch), seed=1,
                max_pause_s=max_pause_s, on_pause=notes.append)
    for i in range(rows):
        pool.submit(WorkItem(i, "t", "s", [{"role": "user", "content": "x"}], 10, {}))
    pool.finish_input()
    return pool, ep, done


def test_a_pause_longer_than_max_pause_s_stops_the_pool_with_endpoints_down() -> None:
    server = _Server(lambda now: True)  # dead from the start
    notes: list[float | None] = []

    async def main() -> tuple[Pool, list[Any], float, int]:
        loop = asyncio.get_running_loop()
        pool, ep, done = _pool(server, 10, max_pause_s=60.0, notes=notes)
        await asyncio.wait_for(pool.run(), 10_000)  # virtual seconds: a hang fails the test
        return pool, done, loop.time(), loop.jumps  # type: ignore[attr-defined]

    pool, done, ended, jumps = run_on_fake_clock(main())
    assert isinstance(pool.fatal, EndpointsDown) and pool.stopping and not done
    assert pool.fatal.failing == [("ep0", "connection_error: Cannot connect to host (Connect call failed)")]
    assert "ep0: connection_error: Cannot connect" in str(pool.fatal) and EndpointsDown.exit_code == 75
    paused_at = pool.paused_since  # loop time: the third consecutive failure opened the breaker
    assert paused_at is not None and paused_at == server.sent[2]
    assert ended == pytest.approx(paused_at + 60.0) and pool.fatal.paused_s == pytest.approx(60.0)
    # while paused only the breaker's probes went out: after 5, 10 and 20 s open (doubling); the next
    # would be 40 s later, past the limit
    probes = [t - paused_at for t in server.sent if t > paused_at]
    assert probes == pytest.approx([5.0, 15.0, 35.0])
    assert len(notes) == 1 and notes[0] is not None  # the pause was announced once, never ended
    assert jumps < 30, "the pause must be timed by the loop's timers, not by polling"


def test_a_recovery_before_max_pause_s_resumes_and_a_later_pause_starts_its_own_clock() -> None:
    """Down 10-40 s and 100-130 s: two pauses of 35 s each (probes 5, 10, 20 s apart), together more than
    max_pause_s."""
    server = _Server(lambda now: 10 <= now < 40 or 100 <= now < 130)
    notes: list[float | None] = []

    async def main() -> tuple[Pool, list[Any]]:
        pool, ep, done = _pool(server, 400, max_pause_s=60.0, notes=notes)
        with _Messages(lambda: server.ok) as msgs:
            await asyncio.wait_for(pool.run(), 10_000)  # virtual seconds: a hang fails the test
        assert msgs.count("answering again") == 2
        return pool, done

    pool, done = run_on_fake_clock(main())
    assert pool.fatal is None and len(done) == 400 and all(comp is not None for _, comp, _, _ in done)
    assert [n is None for n in notes] == [False, True, False, True]


def test_answering_again_is_said_once_and_only_after_a_probe_succeeded() -> None:
    """Dead for 300 s: the breaker goes half-open after each open period and its probe fails. The old code
    said "answering again" at every half-open; now it is said once, after the first successful probe."""
    server = _Server(lambda now: now < 300)
    notes: list[float | None] = []

    async def main() -> tuple[_Messages, Pool, list[Any]]:
        pool, ep, done = _pool(server, 20, max_pause_s=None, notes=notes)
        with _Messages(lambda: server.ok) as msgs:
            await asyncio.wait_for(pool.run(), 10_000)  # virtual seconds: a hang fails the test
        return msgs, pool, done

    msgs, pool, done = run_on_fake_clock(main())
    assert pool.fatal is None and len(done) == 20
    failed_probes = sum(1 for t in server.sent if 0 < t < 300)
    assert failed_probes >= 4  # the breaker went half-open (and its probe failed) that many times
    again = [answered for m, answered in msgs.seen if "answering again" in m]
    assert again == [1], msgs.seen  # once, when the first probe had come back with an answer
    assert msgs.count("pausing until one recovers") == 1
    assert [n is None for n in notes] == [False, True]


def test_a_disabled_endpoint_counts_as_failing() -> None:
    """One endpoint refuses the key (disabled), the other is dead: the run pauses and then stops."""
    from engine.core.errors import HTTPStatusError

    async def handler(url: str, headers: dict[str, str], body: dict[str, Any]) -> Completion:
        if "bad-key" in url:
            raise HTTPStatusError(401, "invalid api key")
        raise ConnectError("Cannot connect to host")

    async def main() -> Pool:
        eps = [Endpoint(name=n, url=f"http://{n}/v1", model="m", headers={}, generation={}, max_concurrency=2,
                        adaptive=False, breaker_failures=3, breaker_open_s=5.0) for n in ("bad-key", "dead")]
        pool = Pool(eps, FakeClient(handler), PATIENT, lambda batch: None, seed=1, max_pause_s=30.0)
        for i in range(10):
            pool.submit(WorkItem(i, "t", "s", [{"role": "user", "content": "x"}], 10, {}))
        pool.finish_input()
        await asyncio.wait_for(pool.run(), 10_000)  # virtual seconds: a hang fails the test
        return pool

    pool = run_on_fake_clock(main())
    assert isinstance(pool.fatal, EndpointsDown)
    assert pool.fatal.failing == [("bad-key", "disabled: HTTP 401: invalid api key"),
                                  ("dead", "connection_error: Cannot connect to host")]


# ---------------------------------------------------------------------------- what a user sees


def test_progress_and_status_show_a_pause_with_its_start_time() -> None:
    since = time.mktime((2024, 5, 1, 3, 7, 0, 0, 0, -1))  # 03:07 local time
    p = Progress(rows_done=5, rows_total=10, rows_this_session=5, rows_per_s=0.0, output_tokens_per_s=0.0,
                 eta_s=None, in_flight=0, retries=3, failures={}, flagged={}, elapsed_s=9.0, paused=True,
                 paused_since=since)
    assert format_line(p).endswith(" | paused (endpoint down since 03:07)")
    assert "paused" not in format_line(Progress(**{**p.__dict__, "paused": False, "paused_since": None}))
    info = {"run_dir": "r", "active": True, "active_pid": 1, "rows_total": 10, "rows_done": 5, "rows_revised": 5,
            "rows_failed": 0, "failure_kinds": {}, "rows_remaining": 5, "data_shards": 0, "failure_shards": 0,
            "journal_segments": 1, "rows_in_journal": 5, "journal_bytes": 10, "last_activity": None,
            "last_run_status": "running", "sessions": 1, "paused_since": since, "report": {}}
    assert "paused (endpoint down since 03:07)" in format_status(info)
    assert "paused" not in format_status({**info, "paused_since": None})


# ---------------------------------------------------------------------------- end to end, with the mock

ROWS = 3000


def _config(tmp_path: Path, url: str, inp: Path, max_pause_s: float) -> Path:
    return write_config(
        tmp_path, url, inp,
        endpoints=[{"url": url, "model": "mock-clair", "max_concurrency": 4}],
        retry={"max_attempts": 100_000, "base_delay_s": 0.05, "max_delay_s": 0.2, "max_total_s": 100_000},
        timeouts={"connect_s": 2, "request_s": 5},
        run={"progress": "off", "breaker_failures": 3, "breaker_open_s": 0.2, "max_pause_s": max_pause_s,
             "grace_period_s": 5},
        output={"dir": str(tmp_path / "run"), "rows_per_shard": 200},
    )


def _wait_for(what: Callable[[], bool], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def _rows_done(run: Path) -> int:
    try:
        return int(collect_status(run)["rows_done"])
    except RunStateError:  # no manifest yet
        return 0


def _resume_exactly_once(tmp_path: Path, inp: Path, before: tuple[list[Any], list[Any]]) -> None:
    """Resume against a healthy mock: every row ends exactly once, no journaled row is requested again."""
    run = tmp_path / "run"
    with MockProcess(["--latency-ms", "2"]) as healthy:
        cfg = _config(tmp_path, healthy.url, inp, 900)  # a new URL and a new max_pause_s: not the fingerprint
        r = clair("run", str(cfg), timeout=240)
        assert r.returncode == 0, r.stderr
        sent = healthy.stats()["completions"]
    assert_exactly_once(run, ROWS)
    data, fails = read_ids(run)
    assert set(before[0]) <= set(data) and set(before[1]) <= set(data) | set(fails)
    assert sent == ROWS - len(set(before[0]) | set(before[1]))  # rows journaled before were kept, not re-sent


@pytest.mark.parametrize("death", ["fail-after", "stopped"])
def test_a_dead_endpoint_stops_the_run_with_75_and_it_resumes_exactly_once(tmp_path: Path, death: str) -> None:
    inp = make_input(tmp_path, ROWS)
    run = tmp_path / "run"
    args = ["--latency-ms", "20"] + (["--fail-after-s", "5"] if death == "fail-after" else [])
    with MockProcess(args) as dying:
        proc = clair_popen("run", str(_config(tmp_path, dying.url, inp, 2)))
        try:
            if death == "stopped":
                _wait_for(lambda: _rows_done(run) >= 100 or proc.poll() is not None)
                dying.stop()  # the port is dead: connections are refused
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        if death == "fail-after":
            assert dying.stats()["faults"]["fail_after"] > 0
    assert proc.returncode == 75, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    last = "server_error: HTTP 500" if death == "fail-after" else "connection_error: "
    assert re.search(rf"every endpoint has been failing for \d+s, the run stopped \(endpoint0: {last}", lines[0])
    assert lines[0].endswith(f"; resume with: clair run {tmp_path / 'job.yaml'}")
    assert "answering again" not in err
    # a graceful stop: every row received is in the shards, the session says why it ended
    before = read_ids(run)
    assert before[0], "no row was done before the endpoint died"
    view = RunView.open(run)
    assert view.journal_stats().rows == 0
    assert view.manifest["runs"][-1]["status"] == "endpoints_down"
    assert collect_status(run)["rows_done"] == len(before[0]) + len(before[1]) < ROWS
    _resume_exactly_once(tmp_path, inp, before)


def test_status_shows_a_run_paused_right_now(tmp_path: Path) -> None:
    inp = make_input(tmp_path, ROWS)
    run = tmp_path / "run"
    with MockProcess(["--latency-ms", "20"]) as dying:
        proc = clair_popen("run", str(_config(tmp_path, dying.url, inp, 600)))
        try:
            _wait_for(lambda: _rows_done(run) >= 100 or proc.poll() is not None)
            assert proc.poll() is None
            dying.stop()
            _wait_for(lambda: collect_status(run)["paused_since"] is not None)
            shown = clair("status", str(run))
            assert shown.returncode == 0, shown.stderr
            assert re.search(r"^paused \(endpoint down since \d\d:\d\d\)", shown.stdout, re.M), shown.stdout
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert collect_status(run)["paused_since"] is None  # not running: not paused
    assert "endpoint down" not in clair("status", str(run)).stdout
    _resume_exactly_once(tmp_path, inp, read_ids(run))


def test_max_pause_s_is_not_part_of_the_fingerprint(tmp_path: Path) -> None:
    import yaml

    from engine.core.config import from_dict
    from engine.stages import load_prompt, make_fingerprint, open_source

    inp = make_input(tmp_path, 10)
    raw = yaml.safe_load(write_config(tmp_path, "http://127.0.0.1:9/v1", inp).read_text())
    fps = []
    for limit in (2, 900):
        raw["run"]["max_pause_s"] = limit
        cfg = from_dict(raw)
        assert cfg.run.max_pause_s == limit
        fps.append(make_fingerprint(cfg, open_source(cfg), load_prompt(cfg)))
    assert fps[0] == fps[1]
