"""Guards for unattended runs (issue 15): a budget and a quality guard stop a run early and clearly.

Unit tests drive the budget's accounting (``engine.policy.budget``) and the quality guard
(``engine.runner.guards``) directly, the pool's budget permit runs on a virtual clock, and the end-to-end
tests run ``clair`` against the bundled mock: prices that hit a budget, a teacher that copies the answer
unchanged, a teacher that omits the markers. Each asserts the exit code, the one-line message, that every
journaled row survives, and that the run resumes to completion.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fakeclock import run
from helpers import assert_exactly_once, clair, make_input, read_ids, write_config

from engine.core.config import GuardConfig, from_dict
from engine.core.errors import BudgetReached, ConfigError, HTTPStatusError, QualityGuardTripped
from engine.core.types import Completion, WorkItem
from engine.dispatch import Endpoint, Finished, Pool
from engine.policy.budget import INITIAL_PROMPT_FACTOR, Budget, earlier_spending
from engine.policy.retry import RetryPolicy
from engine.runner.guards import QualityGuard, is_identical
from engine.tools.mockserver_proc import MockProcess

PRICES = {"input_per_million": 1.0, "output_per_million": 10.0}


# ------------------------------------------------------------------------------ the budget's accounting


def test_reserve_settle_release_figures() -> None:
    b = Budget(default_max_tokens=1000, max_usd=1.0, input_per_million=2.0, output_per_million=10.0)
    r = b.try_reserve(400, None)
    assert r is not None
    assert r.output_tokens == 1000 and r.prompt_tokens == 400 * INITIAL_PROMPT_FACTOR
    assert r.usd == pytest.approx(500 * 2e-6 + 1000 * 10e-6)
    assert b.reserved_usd == pytest.approx(r.usd) and b.in_flight == 1 and b.spent_usd == 0
    b.settle(r, 380, 300)  # the real usage replaces the worst case
    assert b.spent_usd == pytest.approx(380 * 2e-6 + 300 * 10e-6) and b.reserved_usd == 0 and b.in_flight == 0
    assert b.spent_output == 300
    r2 = b.try_reserve(400, 200)  # a row's own output budget
    assert r2 is not None and r2.output_tokens == 200
    b.release(r2)  # no answer, no cost
    assert b.reserved_usd == 0 and b.in_flight == 0 and b.spent_usd == pytest.approx(380 * 2e-6 + 300 * 10e-6)


def test_an_answer_without_usage_counts_at_its_worst_case() -> None:
    b = Budget(default_max_tokens=100, max_output_tokens=1000)
    r = b.try_reserve(10, None)
    assert r is not None
    b.settle(r, None, None)
    assert b.spent_output == 100


def test_the_prompt_factor_follows_the_real_prompt_sizes() -> None:
    b = Budget(default_max_tokens=10, max_usd=1.0, input_per_million=1.0, output_per_million=1.0)
    r = b.try_reserve(100, None)
    assert r is not None
    b.settle(r, 150, 5)  # the estimate was 1.5x too low: later reservations follow
    assert b.prompt_factor == pytest.approx(1.1 * 1.5)
    r = b.try_reserve(100, None)
    assert r is not None and r.prompt_tokens == pytest.approx(165)
    b.settle(r, 60, 5)  # a smaller ratio never lowers it below the largest seen
    assert b.prompt_factor == pytest.approx(1.1 * 1.5)
    low = Budget(default_max_tokens=10, max_usd=1.0, input_per_million=1.0, output_per_million=1.0)
    r = low.try_reserve(100, None)
    assert r is not None
    low.settle(r, 80, 5)  # an estimate that is too high: reserve the estimate itself, never less
    assert low.prompt_factor == 1.0


def test_the_budget_never_goes_past_its_limit_with_answers_up_to_their_max_tokens() -> None:
    """A random mix of reservations, answers (up to max_tokens, prompts up to the estimate) and failures:
    at every moment spent + reserved stays within the budget, and the budget is used up to the last request."""
    rng = random.Random(5)
    for max_usd in (0.05, 0.5, 3.0):
        b = Budget(default_max_tokens=800, max_usd=max_usd, input_per_million=2.5, output_per_million=10.0,
                   prompt_tokens_before=1000, output_tokens_before=500)
        open_: list[Any] = []
        refused = 0
        for _ in range(5000):
            if open_ and (rng.random() < 0.5 or refused):
                r = open_.pop(rng.randrange(len(open_)))
                if rng.random() < 0.1:
                    b.release(r)
                else:
                    b.settle(r, rng.randint(1, r.prompt_est), rng.randint(1, r.output_tokens))
                refused = 0
            else:
                r = b.try_reserve(rng.randint(50, 2000), rng.choice([None, 300]))
                if r is None:
                    refused += 1
                    if not open_:
                        break  # no room with nothing in flight: the budget is reached
                else:
                    open_.append(r)
            assert b.spent_usd + b.reserved_usd <= max_usd + 1e-9
        assert not open_ and b.spent_usd <= max_usd + 1e-9
        worst = b.worst_case(2000, None).usd
        assert b.spent_usd > max_usd - worst  # stopped only when the largest request no longer fit


def test_max_output_tokens_counts_output_only() -> None:
    b = Budget(default_max_tokens=100, max_output_tokens=260, output_tokens_before=40)
    a, c = b.try_reserve(10_000, None), b.try_reserve(10_000, None)
    assert a is not None and c is not None
    assert b.try_reserve(1, None) is None  # 40 + 2 x 100 + 100 > 260
    b.settle(a, 10_000, 20)
    assert b.try_reserve(1, None) is not None  # 40 + 20 + 100 + 100 <= 260
    msg = b.reached_message(1, None)
    assert msg.startswith("budget reached: 60 output tokens spent of budget.max_output_tokens 260")
    assert "--set budget.max_output_tokens=..." in msg and "\n" not in msg


def test_reserve_waits_for_requests_in_flight_and_is_none_only_with_nothing_in_flight() -> None:
    async def main() -> None:
        b = Budget(default_max_tokens=100, max_output_tokens=250)
        first = b.try_reserve(1, None)
        assert first is not None and b.try_reserve(1, None) is not None
        waiting = asyncio.create_task(b.reserve(1, None))
        await asyncio.sleep(1)
        assert not waiting.done()  # no room now, but two requests in flight may free some
        b.settle(first, 1, 10)
        assert (await waiting) is not None  # 10 + 100 + 100 <= 250
        assert b.in_flight == 2 and b.spent_output == 10
        full = Budget(default_max_tokens=100, max_output_tokens=50)
        assert (await full.reserve(1, None)) is None  # nothing in flight and no room: reached

    run(main())


def test_earlier_spending_reads_the_session_reports() -> None:
    sessions = [{"report": {"prompt_tokens": 100, "completion_tokens": 30}}, {"started": 1.0},
                {"report": {"prompt_tokens": 5, "completion_tokens": None}}]
    assert earlier_spending(sessions) == (105, 30, 1)
    b = Budget(default_max_tokens=10, max_usd=1.0, input_per_million=1e6, output_per_million=0,
               prompt_tokens_before=105)
    assert b.spent_usd == 105 and "earlier sessions" in b.reached_message(1, None)


# ------------------------------------------------------------------------------ the pool's budget permit


def _item(i: int) -> WorkItem:
    return WorkItem(i, "task", "solution", [{"role": "user", "content": str(i)}], 100, {})


def test_the_pool_never_sends_past_the_budget_and_stops_with_budget_reached() -> None:
    """Two endpoints share one budget; answers cost far less than their worst case, some attempts fail (500,
    released). Every send happens with spent + in flight within the budget; the pool stops when the next
    request does not fit although nothing is in flight."""
    price = {"input_per_million": 1.0, "output_per_million": 10.0}
    sends: list[float] = []

    async def main() -> tuple[Budget, list[Finished], BaseException | None]:
        budget = Budget(default_max_tokens=500, max_usd=0.05, **price)

        class Transport:
            calls = 0

            async def complete(self, url: str, headers: dict[str, str], body: bytes) -> Completion:
                self.calls += 1
                sends.append(budget.spent_usd + budget.reserved_usd)
                await asyncio.sleep(1.0)
                if self.calls % 7 == 0:
                    raise HTTPStatusError(500, "boom")
                return Completion(content="x", finish_reason="stop", prompt_tokens=90, completion_tokens=200)

            async def list_models(self, url: str, headers: dict[str, str]) -> list[str] | None:
                return None

        eps = [Endpoint(name=n, url=f"http://{n}/v1", model="m", headers={}, generation={}, max_concurrency=4,
                        adaptive=False) for n in ("a", "b")]
        done: list[Finished] = []
        pool = Pool(eps, Transport(), RetryPolicy(max_attempts=3, base_delay_s=0.0, max_delay_s=0.0),
                    done.extend, seed=1, budget=budget)
        for i in range(200):
            pool.submit(_item(i))
        pool.finish_input()
        await pool.run()
        await pool.drain(10.0)
        return budget, done, pool.fatal

    budget, done, fatal = run(main())
    assert isinstance(fatal, BudgetReached)
    assert str(fatal).startswith("budget reached: $0.0") and "of budget.max_usd 0.05" in str(fatal)
    assert max(sends) <= 0.05 + 1e-12
    answered = [f for f in done if f[1] is not None]
    paid = sum(90 * 1e-6 + 200 * 10e-6 for _ in answered)
    assert paid == pytest.approx(budget.spent_usd) and paid <= 0.05
    assert paid > 0.05 - budget.worst_case(100, None).usd  # the budget was used up to the last request
    assert 0 < len(answered) < 200 and budget.in_flight == 0


# ------------------------------------------------------------------------------ the quality guard


def _data(i: int, revision: str = "better", status: str = "ok", original: str = "an answer") -> dict[str, Any]:
    return {"row_id": i, "revision": revision, "student_solution": original, "status": status}


def _fail(i: int, kind: str = "no_marker") -> dict[str, Any]:
    return {"row_id": i, "error_kind": kind}


def test_is_identical_up_to_whitespace_only() -> None:
    text = "Paris is the capital of France.\n\nIt lies on the Seine."
    assert is_identical(text, text)
    assert is_identical("Paris is  the capital of France. It lies on the Seine.", "  " + text + "\n")
    assert is_identical("caf\u00e9 au\u00a0lait", "caf\u00e9 au lait")  # non-ASCII: the word path
    assert not is_identical(text.replace("Paris", "Lyon"), text)
    assert not is_identical("Paris is the capital of France.", "Parisis the capital of France.")
    assert not is_identical(text + " And a long added sentence about the river.", text)
    assert not is_identical("", "x" * 100)


def test_the_guard_waits_for_min_rows_then_trips_past_the_threshold() -> None:
    trips: list[QualityGuardTripped] = []
    g = QualityGuard(GuardConfig(min_rows=10, max_worsened=0.3), run_dir="runs/x", on_trip=trips.append)
    for i in range(3):
        g.observe(_data(i, status="worsened"))
    for i in range(3, 10):
        g.observe(_data(i))
    assert not trips  # 3 of 10 is 30%: not past 30%
    g.observe(_data(10, status="worsened"))
    assert len(trips) == 1 and g.tripped is trips[0]  # 4 of 11 = 36%: past it
    trips.clear()
    g2 = QualityGuard(GuardConfig(min_rows=10, max_worsened=0.3), run_dir="runs/x", on_trip=trips.append)
    for i in range(9):
        g2.observe(_data(i, status="worsened"))  # 100%, but fewer than min_rows
    assert not trips
    g2.observe(_data(9))
    assert len(trips) == 1 and g2.tripped is trips[0]
    msg = str(trips[0])
    assert msg.startswith("quality guard: 90% of this session's 10 rows (9) were marked worsened by the teacher")
    assert "above guard.max_worsened 30% (e.g. rows 0, 1, 2)" in msg
    assert "`clair show runs/x --status worsened`" in msg and "--set guard.max_worsened=..." in msg
    assert "\n" not in msg
    g2.observe(_data(10, status="worsened"))
    assert len(trips) == 1  # trips once


def test_the_guard_rechecks_as_the_run_goes() -> None:
    trips: list[QualityGuardTripped] = []
    g = QualityGuard(GuardConfig(min_rows=5), run_dir="r", on_trip=trips.append)
    for i in range(50):
        g.observe(_data(i))
    for i in range(50, 62):
        g.observe(_fail(i, "timeout" if i % 2 else "no_marker"))
    assert not trips  # 12 of 62 = 19%
    g.observe(_fail(62))
    assert len(trips) == 1  # 13 of 63 = 21% > 20%
    msg = str(trips[0])
    assert "have no usable revision (no_marker 7, timeout 6), above guard.max_no_revision 20% (e.g. rows 50, 51, 52)" \
        in msg and "--status no_marker" in msg


def test_input_failures_and_reused_rows_are_not_counted_and_null_turns_a_check_off() -> None:
    trips: list[QualityGuardTripped] = []
    g = QualityGuard(GuardConfig(min_rows=3, max_identical=None), run_dir="r", on_trip=trips.append)
    for i in range(10):
        g.observe(_fail(i, "invalid_input"))
        g.observe(_fail(100 + i, "prompt_too_long"))
        g.observe({**_fail(200 + i), "reused_from": "runs/old"})
        g.observe(_data(300 + i, revision="an answer"))  # identical, but that check is off
    assert not trips and g.rows == 10
    off = QualityGuard(GuardConfig(max_no_revision=None, max_identical=None, max_worsened=None), run_dir="r")
    assert not off.active


def test_identical_revisions_trip_with_an_example_to_show() -> None:
    trips: list[QualityGuardTripped] = []
    g = QualityGuard(GuardConfig(min_rows=4), run_dir="r", on_trip=trips.append)
    for i in range(4):
        g.observe(_data(i, revision=" an  answer\n" if i % 2 else "a better answer"))
    assert len(trips) == 1
    assert "50% of this session's 4 rows (2) got a revision identical to the student's answer, above " \
           "guard.max_identical 30% (e.g. rows 1, 3)" in str(trips[0])
    assert "`clair show r --row-id 1`" in str(trips[0])


# ------------------------------------------------------------------------------ config


def _cfg(**sections: Any) -> dict[str, Any]:
    return {"input": {"path": "in.jsonl"}, "endpoints": [{"url": "http://127.0.0.1:8000/v1", "model": "m"}],
            **sections}


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"budget": {"max_usd": 5}}, r"^budget\.max_usd needs prices: set pricing\.input_per_million and "
                                     r"pricing\.output_per_million \(USD per million tokens\), or use "
                                     r"budget\.max_output_tokens for an endpoint without prices$"),
        ({"budget": {"max_usd": 5}, "pricing": {"input_per_million": 1}}, r"^budget\.max_usd needs prices"),
        ({"budget": {"max_usd": 0}, "pricing": PRICES}, r"^budget\.max_usd must be > 0 \(or null for no budget\)$"),
        ({"budget": {"max_usd": 1}, "pricing": {"input_per_million": -1, "output_per_million": 1}},
         r"^pricing\.input_per_million and pricing\.output_per_million must be >= 0$"),
        ({"budget": {"max_output_tokens": 0}}, r"^budget\.max_output_tokens must be >= 1 \(or null for no budget\)$"),
        ({"budget": {"max_output_tokens": 10}, "generation": {"max_tokens": None}},
         r"^a budget needs generation\.max_tokens: without it an answer's size \(and cost\) has no bound$"),
        ({"budget": {"max_usd": "lots"}}, r"^budget\.max_usd must be a number, got 'lots'$"),
        ({"budget": {"max_dollars": 1}}, r"^unknown config key budget\.max_dollars; known keys here: max_output_tokens, "
                                         r"max_usd$"),
        ({"guard": {"min_rows": 0}}, r"^guard\.min_rows must be >= 1$"),
        ({"guard": {"max_identical": 30}}, r"^guard\.max_identical must be a share between 0 and 1 \(0\.3 = 30%\), "
                                           r"or null to turn it off$"),
        ({"guard": {"max_worsened": -0.1}}, r"^guard\.max_worsened must be a share between 0 and 1"),
        ({"guard": {"max_no_revision": "off"}}, r"^guard\.max_no_revision must be a number, got 'off'$"),
    ],
)
def test_config_errors_name_the_keys(sections: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(_cfg(**sections))


def test_config_defaults_and_null_turns_a_check_off() -> None:
    cfg = from_dict(_cfg())
    assert cfg.budget.max_usd is None and cfg.budget.max_output_tokens is None
    assert (cfg.guard.min_rows, cfg.guard.max_no_revision, cfg.guard.max_identical, cfg.guard.max_worsened) == \
        (200, 0.2, 0.3, 0.3)
    cfg = from_dict(_cfg(guard={"max_identical": None}, budget={"max_usd": 12.5}, pricing=PRICES))
    assert cfg.guard.max_identical is None and cfg.guard.max_no_revision == 0.2 and cfg.budget.max_usd == 12.5


# ------------------------------------------------------------------------------ end to end, with the mock


def _rows(run_dir: Path) -> pa.Table:
    """Every journaled row (data and failures) with its usage and answer (read after the run ended)."""
    cols = ["row_id", "prompt_tokens", "completion_tokens", "raw_output"]
    tables = [pq.read_table(p, columns=cols) for kind in ("data", "failures")
              for p in sorted((run_dir / kind).glob("*.parquet"))]
    return pa.concat_tables(tables) if tables else pa.table({c: [] for c in cols})


def _answers(run_dir: Path) -> dict[Any, str]:
    t = _rows(run_dir)
    return dict(zip(t.column("row_id").to_pylist(), t.column("raw_output").to_pylist(), strict=True))


def _last_session(run_dir: Path) -> dict[str, Any]:
    return orjson.loads((run_dir / "manifest.json").read_bytes())["runs"][-1]


def _stop_line(stderr: str, start: str) -> str:
    """The guard's message: one line, the last one on stderr."""
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(start), stderr
    assert sum(start in line for line in stderr.splitlines()) == 1
    return last


def test_a_budget_stops_before_it_is_exceeded_and_a_larger_one_resumes(tmp_path: Path) -> None:
    n, max_usd = 60, 0.2
    inp = make_input(tmp_path, n)
    run_dir = tmp_path / "run"
    with MockProcess(["--latency-ms", "20"]) as m:
        cfg = str(write_config(tmp_path, m.url, inp, pricing=PRICES, generation={"max_tokens": 1024},
                               budget={"max_usd": max_usd}))
        r = clair("run", cfg)
        assert r.returncode == 3, r.stderr
        line = _stop_line(r.stderr, "error: budget reached: $")
        assert f"of budget.max_usd {max_usd:g} (the next request could cost up to $" in line
        assert line.endswith("raise it with --set budget.max_usd=... and run the same command to resume")
        assert "run directory: " in r.stdout  # the summary of what was done
        paid = m.stats()
        # what the endpoint was paid for (every answer it sent, journaled or not) is within the budget
        assert paid["prompt_tokens"] * 1e-6 + paid["completion_tokens"] * 1e-5 <= max_usd
        t = _rows(run_dir)
        recorded = sum(t.column("prompt_tokens").fill_null(0).to_pylist()) * 1e-6 + \
            sum(t.column("completion_tokens").fill_null(0).to_pylist()) * 1e-5
        assert recorded <= max_usd
        assert recorded > max_usd - (1500 * 1.25e-6 + 1024 * 1e-5)  # stopped when the next request no longer fit
        first = _answers(run_dir)
        data, fails = read_ids(run_dir)
        assert 0 < len(first) < n and len(data) + len(fails) == len(set(data) | set(fails)) == len(first)
        assert paid["completions"] == len(first)  # every answer received was journaled
        session = _last_session(run_dir)
        assert session["status"] == "budget_reached" and session["report"]["message"] == line.removeprefix("error: ")

        # the same budget again: the run's earlier spending counts, nothing is sent
        r = clair("run", cfg)
        assert r.returncode == 3 and m.stats()["requests"] == paid["requests"], r.stderr
        assert "in earlier sessions of this run" in _stop_line(r.stderr, "error: budget reached: $")

        dry = clair("run", cfg, "--dry-run")
        assert dry.returncode == 0 and "budget: budget.max_usd $0.20: the estimate ($0.4" in dry.stdout
        assert "does NOT fit" in dry.stdout and "earlier sessions already spent $0." in dry.stdout

        r = clair("run", cfg, "--set", "budget.max_usd=5")  # a larger budget resumes the same run
        assert r.returncode == 0, r.stderr
        assert m.stats()["completions"] == n  # no row was paid twice
    assert_exactly_once(run_dir, n)
    final = _answers(run_dir)
    assert all(final[k] == v for k, v in first.items())  # every journaled row survived as it was
    assert _last_session(run_dir)["status"] == "completed"


def test_dry_run_says_when_the_estimate_and_its_worst_case_fit(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path, "http://127.0.0.1:9/v1", make_input(tmp_path, 10), pricing=PRICES,
                           generation={"max_tokens": 1024}))
    out = clair("run", cfg, "--dry-run", "--set", "budget.max_usd=100").stdout
    assert "budget: budget.max_usd $100.00: the estimate ($0.08) fits, and so does the worst case ($0.11)" in out
    out = clair("run", cfg, "--dry-run", "--set", "budget.max_usd=0.1").stdout
    assert "budget: budget.max_usd $0.10: the estimate ($0.08) fits; the worst case (every answer at max_tokens: " \
           "$0.11) does not" in out
    out = clair("run", cfg, "--dry-run", "--set", "budget.max_output_tokens=3500").stdout
    assert "budget: budget.max_output_tokens 3,500 output tokens: the estimate (7,000 output tokens) does NOT fit: " \
           "the run would stop (exit 3, resumable) after about 50% of the requests" in out
    assert "budget: budget." not in clair("run", cfg, "--dry-run").stdout  # no budget set: no budget line


def _guard_stop_and_resume(tmp_path: Path, mock_args: list[str], n: int, start: str,
                           relax: str) -> tuple[str, dict[Any, str]]:
    inp = make_input(tmp_path, n)
    run_dir = tmp_path / "run"
    with MockProcess(["--latency-ms", "10", *mock_args]) as m:
        cfg = str(write_config(tmp_path, m.url, inp, guard={"min_rows": 30}))
        r = clair("run", cfg)
        assert r.returncode == 3, r.stderr
        line = _stop_line(r.stderr, start)
        first = _answers(run_dir)
        assert 30 <= len(first) < n
        assert m.stats()["completions"] == len(first)  # every answer received was journaled
        assert _last_session(run_dir)["status"] == "quality_guard"
        r = clair("run", cfg, "--set", relax)
        assert r.returncode == 0, r.stderr
        assert m.stats()["completions"] == n
    assert_exactly_once(run_dir, n)
    final = _answers(run_dir)
    assert all(final[k] == v for k, v in first.items())
    return line, first


def _example_ids(line: str) -> list[int]:
    ids = line.split("(e.g. rows ", 1)[1].split(")", 1)[0].split(", ")
    return [int(i) for i in ids]


def test_a_teacher_that_copies_the_answer_trips_the_identical_guard(tmp_path: Path) -> None:
    line, first = _guard_stop_and_resume(tmp_path, ["--rate-identical", "0.6"], 150, "error: quality guard: ",
                                         "guard.max_identical=null")
    assert "got a revision identical to the student's answer, above guard.max_identical 30% (e.g. rows " in line
    assert "--set guard.max_identical=... (null turns it off) and run the same command to resume" in line
    ids = _example_ids(line)
    assert len(ids) == 3 and "`clair show " in line and f"--row-id {ids[0]}`" in line
    rows = {r["row_id"]: r for p in (tmp_path / "run" / "data").glob("*.parquet")
            for r in pq.read_table(p, columns=["row_id", "revision", "student_solution"]).to_pylist()}
    assert all(is_identical(rows[i]["revision"], rows[i]["student_solution"]) for i in ids)
    rate = int(line.split("quality guard: ", 1)[1].split("%", 1)[0])
    assert rate > 30


def test_a_teacher_that_omits_the_markers_trips_the_no_revision_guard(tmp_path: Path) -> None:
    line, first = _guard_stop_and_resume(tmp_path, ["--rate-no-marker", "0.5"], 150, "error: quality guard: ",
                                         "guard.max_no_revision=0.9")
    assert "have no usable revision (no_marker " in line and "above guard.max_no_revision 20% (e.g. rows " in line
    assert "--status no_marker`" in line
    _, fails = read_ids(tmp_path / "run")
    assert set(_example_ids(line)) <= set(fails)


def test_the_default_guard_lets_a_healthy_run_finish(tmp_path: Path, mock: MockProcess) -> None:
    """min_rows 30 and default thresholds: the mock's ordinary answers never trip the guard."""
    inp = make_input(tmp_path, 120)
    r = clair("run", str(write_config(tmp_path, mock.url, inp, guard={"min_rows": 30})))
    assert r.returncode == 0, r.stderr
    assert_exactly_once(tmp_path / "run", 120)
    assert _last_session(tmp_path / "run")["status"] == "completed"


def test_a_session_that_ends_with_an_error_still_counts_toward_the_budget(tmp_path: Path) -> None:
    """Every endpoint starts refusing the key mid-run (StartupError): the session's report is still
    written, so the next session's budget counts what it spent (it used to count nothing)."""
    import asyncio

    from engine import load_config
    from engine.client import FakeClient
    from engine.core.errors import HTTPStatusError, StartupError
    from engine.core.types import Completion
    from engine.runner import arun_job
    from engine.store import RunView
    from engine.tools.mockserver import build_answer

    inp = make_input(tmp_path, 60)
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:9/v1", inp, generation={"max_tokens": 1000},
                                   budget={"max_output_tokens": 1_000_000}))
    served: list[int] = []

    async def handler(url: str, headers: dict[str, str], body: dict[str, Any]) -> Completion:
        served.append(1)
        if len(served) > 20:
            raise HTTPStatusError(401, "key revoked")
        sol = body["messages"][-1]["content"].split("{student_solution}: ", 1)[1].split("\n\n-----", 1)[0]
        return Completion(content=build_answer(sol, 0), finish_reason="stop", model=body["model"],
                          prompt_tokens=700, completion_tokens=800)

    with pytest.raises(StartupError):
        asyncio.run(arun_job(cfg, client=FakeClient(handler, models=["mock-clair"])))
    last = RunView.open(tmp_path / "run").manifest["runs"][-1]
    assert last["status"] == "failed" and last["report"]["completion_tokens"] >= 800 * 16
