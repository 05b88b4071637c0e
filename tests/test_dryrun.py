"""``clair run --dry-run``: token, cost and duration figures without a request."""

from __future__ import annotations

import json
import sys
import threading
import types
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.commands import dryrun
from engine.commands.dryrun import (
    DEFAULT_LATENCY_S,
    ESTIMATE,
    DryRunEstimate,
    endpoint_throughput,
    estimate,
    format_duration,
    format_estimate,
    make_counter,
)
from engine.core.config import EndpointConfig, from_dict
from engine.core.errors import ConfigError, InputError
from engine.prompts import builtin_template, estimate_tokens, render

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
