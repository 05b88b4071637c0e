"""``clair run --dry-run``: token, cost and duration figures without a request."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import threading
import types
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from engine.cli import main
from engine.commands import dryrun
from engine.commands.dryrun import (
    DEFAULT_LATENCY_S,
    ESTIMATE,
    DryRunEstimate,
    endpoint_throughput,
    estimate,
    estimate_run,
    format_duration,
    format_estimate,
    make_counter,
    with_budget,
)
from engine.core.config import EndpointConfig, from_dict
from engine.core.errors import ConfigError, InputError
from engine.prompts import builtin_template, estimate_tokens, render, student_messages
from engine.source import Source

ROWS = [
    {"task": "What is 2+2?", "answer": "It is 5."},
    {"task": "Name the capital of France.", "answer": "Lyon is the capital of France. " * 20},
    {"task": "Say hi.", "answer": ""},  # invalid: no request
    {"task": "Explain rain.", "answer": "Water falls from clouds when droplets get heavy."},
    {"task": "Sort 3 1 2.", "answer": "1 3 2"},
]


def write_input(tmp_path: Path, rows: list[dict[str, Any]] = ROWS) -> Path:
    p = tmp_path / "in.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def make_cfg(tmp_path: Path, **over: Any):
    raw: dict[str, Any] = {
        "input": {"path": str(write_input(tmp_path)), "columns": {"task": "task", "student_solution": "answer"},
                  "batch_rows": 2},
        "prompt": {"variant": "distilabel"},
        "endpoints": [{"url": "http://127.0.0.1:9/v1", "model": "gpt-4o", "max_concurrency": 64}],
        "generation": {"temperature": 0.7, "max_tokens": 4096},
        "output": {"dir": str(tmp_path / "runs" / "x")},
    }
    for key, value in over.items():
        raw[key] = value
    return from_dict(raw, base_dir=str(tmp_path))


@pytest.fixture(autouse=True)
def _estimate_counter(monkeypatch):
    monkeypatch.setenv("CLAIR_TOKENIZER", "estimate")  # tests never rely on tiktoken or the network


def _expected_prompt_tokens(variant: str = "distilabel") -> list[int]:
    t = builtin_template(variant)
    return [estimate_tokens(render(t, r["task"], r["answer"])) for r in ROWS if r["task"] and r["answer"]]


# ---------------------------------------------------------------------------- arithmetic


def test_throughput_is_the_smallest_bound():
    ep = EndpointConfig(url="http://x/v1", model="m", max_concurrency=64)
    e = endpoint_throughput(ep, latency_s=30.0, tokens_per_request=1300)
    assert e.rps == pytest.approx(64 / 30) and e.bound == "max_concurrency" and e.rpm_rps is None

    ep = EndpointConfig(url="http://x/v1", model="m", max_concurrency=64, requests_per_minute=60)
    e = endpoint_throughput(ep, latency_s=30.0, tokens_per_request=1300)
    assert e.rps == pytest.approx(1.0) and e.bound == "requests_per_minute"

    ep = EndpointConfig(url="http://x/v1", model="m", max_concurrency=64, requests_per_minute=600,
                        tokens_per_minute=78_000)
    e = endpoint_throughput(ep, latency_s=30.0, tokens_per_request=1300)
    assert e.tpm_rps == pytest.approx(78_000 / 60 / 1300) == pytest.approx(1.0)
    assert e.rps == pytest.approx(1.0) and e.bound == "tokens_per_minute"

    ep = EndpointConfig(url="http://x/v1", model="m", max_concurrency=10, weight=0.5)
    e = endpoint_throughput(ep, latency_s=10.0, tokens_per_request=1)
    assert e.concurrency == 5 and e.rps == pytest.approx(0.5)  # dispatch caps in-flight at concurrency × weight


def test_estimate_counts_tokens_cost_and_duration(tmp_path):
    cfg = make_cfg(
        tmp_path,
        endpoints=[
            {"url": "http://127.0.0.1:9/v1", "model": "gpt-4o", "max_concurrency": 64, "name": "a"},
            {"url": "http://127.0.0.2:9/v1", "model": "gpt-4o", "max_concurrency": 64, "name": "b",
             "requests_per_minute": 30},
        ],
        pricing={"input_per_million": 2.5, "output_per_million": 10.0},
    )
    e = estimate(cfg)
    want = _expected_prompt_tokens()
    assert (e.rows, e.requests, e.invalid_rows) == (5, 4, 1)
    assert e.prompt_tokens == sum(want)
    assert (e.prompt_tokens_min, e.prompt_tokens_max) == (min(want), max(want))
    assert e.prompt_tokens_mean == pytest.approx(sum(want) / 4)
    assert e.completion_tokens_per_request == 700 and e.completion_tokens == 4 * 700
    assert e.token_counter == ESTIMATE and e.token_counter_note == "CLAIR_TOKENIZER=estimate"
    assert e.input_cost_usd == pytest.approx(sum(want) * 2.5 / 1e6)
    assert e.output_cost_usd == pytest.approx(2800 * 10.0 / 1e6)
    assert e.cost_usd == pytest.approx(e.input_cost_usd + e.output_cost_usd)
    assert e.latency_s == DEFAULT_LATENCY_S
    a, b = e.endpoints
    assert a.rps == pytest.approx(64 / 30) and a.bound == "max_concurrency"
    assert b.rps == pytest.approx(0.5) and b.bound == "requests_per_minute"
    assert e.requests_per_s == pytest.approx(64 / 30 + 0.5)  # endpoints add up
    assert e.duration_s == pytest.approx(4 / (64 / 30 + 0.5))


def test_tpm_bound_uses_mean_prompt_plus_expected_completion(tmp_path):
    cfg = make_cfg(tmp_path, endpoints=[{"url": "http://127.0.0.1:9/v1", "model": "m", "max_concurrency": 1000,
                                         "tokens_per_minute": 60_000}])
    e = estimate(cfg, latency_s=10.0)
    per_request = e.prompt_tokens / e.requests + 700
    assert e.endpoints[0].bound == "tokens_per_minute"
    assert e.requests_per_s == pytest.approx(60_000 / 60 / per_request)
    assert e.duration_s == pytest.approx(4 / e.requests_per_s)


def test_limit_small_max_tokens_no_pricing_and_custom_assumptions(tmp_path):
    cfg = make_cfg(tmp_path, generation={"max_tokens": 256})
    cfg = from_dict({**_raw(cfg), "input": {**_raw(cfg)["input"], "limit": 2}}, base_dir=str(tmp_path))
    e = estimate(cfg, latency_s=5.0)
    assert (e.rows, e.requests) == (2, 2)
    assert e.prompt_tokens == sum(_expected_prompt_tokens()[:2])
    assert e.completion_tokens_per_request == 256 and e.completion_tokens == 512  # min(max_tokens, 700)
    assert e.cost_usd is None and e.input_cost_usd is None
    assert e.requests_per_s == pytest.approx(64 / 5.0)
    e2 = estimate(cfg, completion_tokens=100)
    assert e2.completion_tokens == 200


def _raw(cfg) -> dict[str, Any]:
    d = cfg.to_dict(redact=False)
    return d


def test_prompt_variant_changes_the_count(tmp_path):
    cfg = make_cfg(tmp_path, prompt={"variant": "length-preserving"})
    assert estimate(cfg).prompt_tokens == sum(_expected_prompt_tokens("length-preserving"))


def test_empty_input_after_limit(tmp_path):
    cfg = make_cfg(tmp_path)
    cfg = from_dict({**_raw(cfg), "input": {**_raw(cfg)["input"], "limit": 0}}, base_dir=str(tmp_path))
    e = estimate(cfg)
    assert (e.rows, e.requests, e.prompt_tokens, e.duration_s) == (0, 0, 0, 0.0)
    assert "requests: 0" in format_estimate(e)


def test_format_duration():
    assert format_duration(42) == "42s"
    assert format_duration(125) == "2m 5s"
    assert format_duration(3 * 3600 + 12 * 60 + 7) == "3h 12m"
    assert format_duration(2 * 86400 + 3600) == "2d 1h 0m"


# ---------------------------------------------------------------------------- no request, printing


def test_dry_run_sends_nothing_and_prints_the_figures(tmp_path, capsys, monkeypatch):
    import aiohttp

    def no_session(*a, **k):
        raise AssertionError("the dry run must not open an HTTP session")

    monkeypatch.setattr(aiohttp, "ClientSession", no_session)
    cfg = make_cfg(tmp_path, pricing={"input_per_million": 2.5, "output_per_million": 10.0})
    assert dryrun.dry_run(cfg) == 0  # the endpoint (127.0.0.1:9) has nothing listening
    out = capsys.readouterr().out
    e = estimate(cfg)
    assert "dry run: nothing was sent" in out
    assert "input: 5 rows (all input rows after input.limit; rows already done are not subtracted)" in out
    assert "requests: 4 (1 with an empty task or student_solution" in out
    assert f"prompt tokens: {e.prompt_tokens:,}, mean {e.prompt_tokens_mean:,.0f}" in out
    assert f"counter: {ESTIMATE}" in out and "counter note: CLAIR_TOKENIZER=estimate" in out
    assert "completion tokens: 2,800 expected = 4 x 700 (assumption: min(max_tokens 4,096, 700)" in out
    assert f"cost: ${e.cost_usd:,.2f}" in out
    assert "throughput: 2.13 requests/s (assumption: 30s per call)" in out
    assert "endpoint0 (gpt-4o): 2.13/s, bound by max_concurrency" in out
    assert "expected duration: 2s" in out
    assert not (tmp_path / "runs").exists()  # the run directory is not created


def test_cli_dry_run(tmp_path, capsys):
    cfg_path = tmp_path / "job.yaml"
    cfg_path.write_text(json.dumps({  # JSON is YAML
        "input": {"path": str(write_input(tmp_path)), "columns": {"task": "task", "student_solution": "answer"}},
        "endpoints": [{"url": "http://127.0.0.1:9/v1", "model": "m"}],
        "output": {"dir": str(tmp_path / "run")},
    }))
    assert main(["run", str(cfg_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "requests: 4" in out and "cost: not estimated" in out
    assert not (tmp_path / "run").exists()


def test_existing_run_dir_is_mentioned_not_subtracted(tmp_path, capsys):
    cfg = make_cfg(tmp_path)
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "manifest.json").write_text(json.dumps({"counts": {"data": 2, "failed": 1}}))
    e = estimate(cfg)
    assert e.requests == 4 and e.rows_in_run_dir == 3
    assert "already holds 3 finished rows; a real run skips them" in format_estimate(e)


def test_bad_input_raises_user_errors(tmp_path, capsys):
    cfg = make_cfg(tmp_path)
    bad = from_dict({**_raw(cfg), "input": {**_raw(cfg)["input"], "columns": {"task": "nope",
                                                                               "student_solution": "answer"}}},
                    base_dir=str(tmp_path))
    with pytest.raises(InputError, match="'nope'"):
        estimate(bad)
    missing = from_dict({**_raw(cfg), "input": {**_raw(cfg)["input"], "path": str(tmp_path / "missing.jsonl")}},
                        base_dir=str(tmp_path))
    with pytest.raises(InputError, match="does not exist"):
        dryrun.dry_run(missing)
    with pytest.raises(ConfigError):
        estimate(cfg, latency_s=0)


# ---------------------------------------------------------------------------- token counter choice


class _FakeEncoding:
    def encode_ordinary_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(range(len(t.split()))) for t in texts]  # one "token" per word


def _fake_tiktoken(monkeypatch, *, load=None) -> types.ModuleType:
    mod = types.ModuleType("tiktoken")
    calls: list[str] = []

    def encoding_for_model(model: str):
        calls.append(model)
        if load is not None:
            load()
        if model == "known":
            return _FakeEncoding()
        raise KeyError(model)

    def get_encoding(name: str):
        calls.append(name)
        if load is not None:
            load()
        return _FakeEncoding()

    mod.encoding_for_model = encoding_for_model  # type: ignore[attr-defined]
    mod.get_encoding = get_encoding  # type: ignore[attr-defined]
    mod.calls = calls  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tiktoken", mod)
    return mod


def test_tiktoken_is_used_when_it_loads(monkeypatch, tmp_path):
    monkeypatch.delenv("CLAIR_TOKENIZER")
    _fake_tiktoken(monkeypatch)
    c = make_counter("known")
    assert c.name == "tiktoken, known's encoding" and c.note is None
    msgs = [{"role": "system", "content": "a b c"}, {"role": "user", "content": "d e"}]
    assert c.count([msgs]) == [3 + (4 + 3) + (4 + 2)]
    c = make_counter("llama-3")
    assert c.name.startswith("tiktoken cl100k_base") and "approximate for llama-3" in c.name
    e = estimate(make_cfg(tmp_path), counter=c)
    assert e.token_counter == c.name and e.requests == 4


def test_tiktoken_failure_or_slowness_falls_back_to_the_estimate(monkeypatch):
    monkeypatch.delenv("CLAIR_TOKENIZER")

    def broken():
        raise ConnectionError("no network to fetch the BPE file")

    _fake_tiktoken(monkeypatch, load=broken)
    c = make_counter("known")
    assert c.name == ESTIMATE and "ConnectionError" in c.note

    gate = threading.Event()  # the test sets it only after make_counter has returned
    mod = _fake_tiktoken(monkeypatch, load=lambda: gate.wait(30))
    before = set(threading.enumerate())
    c = make_counter("known", timeout_s=0.2)
    loaders = [t for t in threading.enumerate() if t not in before and t.name == "clair-tiktoken"]
    assert c.name == ESTIMATE and "did not load within 0.2s" in c.note
    # it returned while its loader was still stuck on the gate: the thread was abandoned (a daemon, so
    # a stuck download never blocks the exit), not waited for
    assert not gate.is_set() and len(loaders) == 1 and loaders[0].is_alive() and loaders[0].daemon
    gate.set()
    loaders[0].join(30)
    assert not loaders[0].is_alive() and mod.calls == ["known"]

    monkeypatch.setitem(sys.modules, "tiktoken", None)  # not installed
    c = make_counter("known")
    assert c.name == ESTIMATE and "not installed" in c.note


def test_clair_tokenizer_env_forces_the_estimate(monkeypatch):
    mod = _fake_tiktoken(monkeypatch)
    monkeypatch.setenv("CLAIR_TOKENIZER", "estimate")
    assert make_counter("known").name == ESTIMATE and mod.calls == []
    monkeypatch.setenv("CLAIR_TOKENIZER", "bogus")
    with pytest.raises(ConfigError, match="CLAIR_TOKENIZER"):
        make_counter("known")


def test_a_counter_failing_midway_falls_back(tmp_path):
    def flaky(batch):
        raise RuntimeError("boom")

    e = estimate(make_cfg(tmp_path), counter=dryrun.TokenCounter("flaky", flaky))
    assert e.prompt_tokens == sum(_expected_prompt_tokens())
    assert e.notes and "flaky failed (RuntimeError)" in e.notes[0]
    assert isinstance(e, DryRunEstimate)


# ---------------------------------------------------------------------------- runs with a generate stage

TASKS = ["What is 2+2?", "Name the capital of France, and explain why it is the capital.", "",
         "Explain rain.", "Sort 3 1 2."]
SENT = [t for t in TASKS if t]  # the empty task is invalid input: no request in either stage
STUDENT = {"url": "http://127.0.0.1:9/v1", "model": "policy", "max_concurrency": 1}
TEACHER = {"url": "http://127.0.0.1:9/v1", "model": "gpt-4o", "max_concurrency": 2}


def make_gen_cfg(tmp_path: Path, *, teacher: bool = True, generate: dict[str, Any] | None = None, **over: Any):
    p = tmp_path / "prompts.jsonl"
    p.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in TASKS))
    raw: dict[str, Any] = {
        "input": {"path": str(p), "columns": {"task": "prompt"}, "batch_rows": 2},
        "generate": {"endpoints": [dict(STUDENT)], "generation": {"temperature": 0.7, "max_tokens": 1024},
                     "pricing": {"input_per_million": 0.5, "output_per_million": 1.5}, **(generate or {})},
        "output": {"dir": str(tmp_path / "runs" / "x")},
    }
    if teacher:
        raw.update({"endpoints": [dict(TEACHER)], "generation": {"temperature": 0.7, "max_tokens": 4096},
                    "pricing": {"input_per_million": 2.5, "output_per_million": 10.0}})
    raw.update(over)
    return from_dict(raw, base_dir=str(tmp_path))


def _student_prompt_tokens(system: str | None = None) -> list[int]:
    return [estimate_tokens(student_messages(t, system)) for t in SENT]


def _teacher_prompt_tokens(answer_tokens: int, variant: str = "distilabel") -> list[int]:
    # the template with the task and a student answer of answer_tokens tokens (4 characters each, as the
    # engine's estimate counts them): what the revise stage will render once the answer exists
    t = builtin_template(variant)
    return [estimate_tokens(render(t, task, "abcd" * answer_tokens)) for task in SENT]


def test_a_two_stage_estimate_has_both_stages_the_overlapped_total_and_the_costs(tmp_path, monkeypatch):
    passes = []
    real = Source.batches

    def counted(self, *a, **k):
        passes.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(Source, "batches", counted)
    cfg = make_gen_cfg(tmp_path, generate={"expected_output_tokens": 300, "system_prompt": "Be brief."})
    r = estimate_run(cfg)
    assert len(passes) == 1  # one pass over the input for both stages
    assert [s.stage for s in r.stages] == ["generate", "revise"]
    g, v = r.stage("generate"), r.stage("revise")

    student = _student_prompt_tokens("Be brief.")
    assert (g.rows, g.requests, g.invalid_rows) == (5, 4, 1)
    assert g.prompt_tokens == sum(student) and (g.prompt_tokens_min, g.prompt_tokens_max) == (min(student), max(student))
    assert g.completion_tokens_per_request == 300 and g.completion_tokens == 4 * 300
    assert g.budget_tokens == 4 * 1024 and g.max_tokens == 1024
    assert g.input_cost_usd == pytest.approx(sum(student) * 0.5 / 1e6)
    assert g.output_cost_usd == pytest.approx(1200 * 1.5 / 1e6)
    assert g.cost_usd == pytest.approx(g.input_cost_usd + g.output_cost_usd)
    assert g.max_cost_usd == pytest.approx((sum(student) * 0.5 + 4 * 1024 * 1.5) / 1e6)
    assert [(ep.model, ep.rps) for ep in g.endpoints] == [("policy", pytest.approx(1 / 30))]
    assert g.duration_s == pytest.approx(4 * 30)

    teacher = _teacher_prompt_tokens(300)
    assert (v.rows, v.requests, v.invalid_rows, v.student_answer_tokens) == (4, 4, 0, 300)
    assert v.prompt_tokens == sum(teacher)
    assert v.completion_tokens == 4 * 700 and v.budget_tokens == 4 * 4096
    assert v.cost_usd == pytest.approx((sum(teacher) * 2.5 + 2800 * 10.0) / 1e6)
    assert [(ep.model, ep.rps) for ep in v.endpoints] == [("gpt-4o", pytest.approx(2 / 30))]
    assert v.duration_s == pytest.approx(4 * 15)

    # the stages overlap: the slower one plus one call of the other, well under one after the other
    assert r.sequential_s == pytest.approx(120 + 60)
    assert r.overlapped_s == pytest.approx(120 + 30)
    assert r.overlapped_s < r.sequential_s
    assert r.cost_usd == pytest.approx(g.cost_usd + v.cost_usd) and r.unpriced == []
    assert r.max_cost_usd == pytest.approx(g.max_cost_usd + v.max_cost_usd)

    out = format_estimate(r)
    assert "input: 5 rows" in out
    assert "generate stage (the student: policy):" in out and "revise stage (the teacher: gpt-4o):" in out
    assert f"  prompt tokens: {sum(student):,}" in out and f"  prompt tokens: {sum(teacher):,}" in out
    assert "completion tokens: 1,200 expected = 4 x 300 (assumption: generate.expected_output_tokens 300)" in out
    assert "a student answer assumed 300 tokens long" in out
    assert "  expected duration: 2m 30s overlapped" in out and "one call's latency (30s)" in out
    assert "sequential, for comparison (one stage after the other): 3m 0s = 2m 0s generate + 1m 0s revise" in out
    assert f"  cost: ${r.cost_usd:,.2f} = ${g.cost_usd:,.2f} generate + ${v.cost_usd:,.2f} revise" in out
    d = r.to_dict()
    assert [s["stage"] for s in d["stages"]] == ["generate", "revise"]
    assert d["stages"][0]["completion_tokens"] == 1200 and d["overlapped_s"] == pytest.approx(150)


def test_the_overlapped_total_is_at_most_the_sequential_sum(tmp_path):
    fast = {**STUDENT, "max_concurrency": 1000}
    cfg = make_gen_cfg(tmp_path, generate={"endpoints": [fast]}, endpoints=[{**TEACHER, "max_concurrency": 1000}])
    r = estimate_run(cfg)
    assert r.sequential_s < r.latency_s  # a few rows on wide endpoints: less than one call's latency in all
    assert r.overlapped_s == pytest.approx(r.sequential_s)


def test_a_generation_only_estimate(tmp_path, capsys):
    cfg = make_gen_cfg(tmp_path, teacher=False)
    assert not cfg.has_revise
    r = estimate_run(cfg)
    (g,) = r.stages
    assert g.stage == "generate" and (g.rows, g.requests, g.invalid_rows) == (5, 4, 1)
    assert g.prompt_tokens == sum(_student_prompt_tokens())
    # no expected_output_tokens: every answer assumed as long as generate.generation.max_tokens
    assert g.completion_tokens_per_request == 1024 and g.completion_tokens == 4 * 1024
    assert "generate.generation.max_tokens 1,024" in (g.expected_from or "")
    assert r.overlapped_s == r.sequential_s == pytest.approx(g.duration_s) == pytest.approx(4 * 30)
    assert r.cost_usd == pytest.approx(g.cost_usd)
    out = format_estimate(r)
    assert "generate stage only (no top-level endpoints: a generation-only run; model policy):" in out
    assert "revise" not in out and "total" not in out

    # the run's budget is the generate stage's, at its prices (stages.generate_config)
    cfg = make_gen_cfg(tmp_path, teacher=False, budget={"max_usd": 0.001, "max_output_tokens": 5000})
    r = with_budget(estimate_run(cfg), cfg)
    (g,) = r.stages
    assert g.budget_max_usd == 0.001 and g.budget_max_output_tokens == 5000
    assert g.worst_completion_tokens == 4 * 1024
    assert g.worst_cost_usd == pytest.approx((g.prompt_tokens * 0.5 + 4 * 1024 * 1.5) / 1e6)
    out = format_estimate(r)
    assert "budget: budget.max_usd $0.00: the estimate ($0.01) does NOT fit" in out
    assert "budget: budget.max_output_tokens 5,000 output tokens: the estimate (4,096 output tokens) fits, and " \
           "so does the worst case (4,096 output tokens)" in out

    assert dryrun.dry_run(cfg) == 0  # what `clair run --dry-run` prints
    assert capsys.readouterr().out.strip() == out


def test_the_budget_of_a_two_stage_run_is_the_teachers(tmp_path):
    cfg = make_gen_cfg(tmp_path, budget={"max_output_tokens": 3000})
    r = with_budget(estimate_run(cfg), cfg)
    g, v = r.stages
    assert g.budget_max_output_tokens is None and g.worst_completion_tokens is None  # the run does not count it
    assert v.budget_max_output_tokens == 3000 and v.worst_completion_tokens == 4 * 4096
    out = format_estimate(r)
    assert "budget: budget.max_output_tokens 3,000 output tokens: the estimate (2,800 output tokens) fits; the " \
           "worst case" in out
    assert "the budget counts the revise stage's spending" in out


def test_expected_output_tokens_sets_the_student_answer_length_in_both_stages(tmp_path):
    auto = {"temperature": 0.7, "max_tokens": "auto"}
    teacher = [{**TEACHER, "context_length": 8192}]
    base = estimate_run(make_gen_cfg(tmp_path, generation=auto, endpoints=teacher))
    short = estimate_run(make_gen_cfg(tmp_path, generation=auto, endpoints=teacher,
                                      generate={"expected_output_tokens": 200}))
    for r, n in ((base, 1024), (short, 200)):
        g, v = r.stages
        assert g.completion_tokens == 4 * n and v.student_answer_tokens == n
        assert v.prompt_tokens == sum(_teacher_prompt_tokens(n))
        # max_tokens: auto gives each row the budget a run would give an answer of that length
        assert v.max_tokens_auto and v.budget_tokens == 4 * min(4096, math.ceil(1.5 * n) + 512)
        assert v.completion_tokens == 4 * min(700, math.ceil(1.5 * n) + 512)
    assert short.stages[1].prompt_tokens == base.stages[1].prompt_tokens - 4 * (1024 - 200)
    assert short.stages[0].cost_usd < base.stages[0].cost_usd
    assert "from the assumed student answer of 200 tokens" in format_estimate(short)

    # an expected length above max_tokens is capped: no answer can be longer
    capped = estimate_run(make_gen_cfg(tmp_path, generate={"expected_output_tokens": 5000}))
    assert capped.stages[0].completion_tokens_per_request == 1024 and capped.stages[1].student_answer_tokens == 1024
    assert "capped at generate.generation.max_tokens 1,024" in (capped.stages[0].expected_from or "")

    # a context the student answer fills: the revise stage does not send those rows
    tight = estimate_run(make_gen_cfg(tmp_path, generation=auto, endpoints=[{**TEACHER, "context_length": 1200}]))
    v = tight.stages[1]
    assert v.prompt_too_long == 4 and v.requests == 0 and v.invalid_rows == 0


def test_a_template_with_the_answer_twice_counts_it_twice(tmp_path):
    t = builtin_template("distilabel")
    twice = dataclasses.replace(t, user=t.user + "\n\nOnce more: $student_solution")
    assert dryrun._answer_slots(t) == 1 and dryrun._answer_slots(twice) == 2
    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump({"system": t.system, "user": twice.user,
                                 "markers": {"revision": ["corrected_student_solution"]}}))
    r = estimate_run(make_gen_cfg(tmp_path, prompt={"template_file": str(p)}, generate={"expected_output_tokens": 100}))
    want = [estimate_tokens(render(twice, task, "abcd" * 100)) for task in SENT]
    assert r.stages[1].prompt_tokens == sum(want)


def test_a_messages_input_is_estimated_from_the_conversations(tmp_path):
    def conv(*turns: str) -> list[dict[str, str]]:
        return [{"role": "user" if i % 2 == 0 else "assistant", "content": c} for i, c in enumerate(turns)]

    chosen = [conv("What is 2+2?", "4"),
              conv("Hi", "Hello! How can I help?", "Explain rain in two sentences.", "Rain falls."),
              [],  # no conversation: invalid input
              conv("Sort 3 1 2.", "1 2 3")]
    p = tmp_path / "uf.parquet"
    pq.write_table(pa.table({"chosen": chosen}), p)
    raw_input = {"path": str(p), "columns": {"messages": "chosen[:-1]"}}
    cfg = make_gen_cfg(tmp_path, input=raw_input, generate={"expected_output_tokens": 100, "system_prompt": "Sys."})
    r = estimate_run(cfg)
    g, v = r.stages
    turns = [c[:-1] for c in chosen if c]
    assert (g.rows, g.requests, g.invalid_rows) == (4, 3, 1)
    assert g.prompt_tokens == sum(estimate_tokens(student_messages("", "Sys.", t)) for t in turns)
    texts = ["What is 2+2?", "User: Hi\n\nAssistant: Hello! How can I help?\n\nUser: Explain rain in two sentences.",
             "Sort 3 1 2."]  # the revise stage's task: the conversation's text form
    t = builtin_template("distilabel")
    assert v.requests == 3
    assert v.prompt_tokens == sum(estimate_tokens(render(t, x, "abcd" * 100)) for x in texts)
    assert "the row's conversation (input.columns.messages)" in format_estimate(r)


def test_a_revise_only_run_estimate_is_the_estimate_as_before(tmp_path, capsys):
    cfg = make_cfg(tmp_path, pricing={"input_per_million": 2.5, "output_per_million": 10.0})
    r = estimate_run(cfg)
    (e,) = r.stages
    assert e == estimate(cfg) and e.stage == "revise"
    assert format_estimate(r) == format_estimate(e)
    assert r.overlapped_s == r.sequential_s == e.duration_s and r.cost_usd == e.cost_usd
    with pytest.raises(ValueError, match="estimate_run"):
        estimate(make_gen_cfg(tmp_path))


def test_cli_dry_run_of_a_two_stage_config(tmp_path, capsys):
    cfg = make_gen_cfg(tmp_path)
    cfg_path = tmp_path / "job.yaml"
    cfg_path.write_text(json.dumps(cfg.to_dict(redact=False)))
    assert main(["run", str(cfg_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == format_estimate(estimate_run(cfg))
    assert "generate stage (the student: policy):" in out and "revise stage (the teacher: gpt-4o):" in out
    assert not (tmp_path / "runs").exists()
