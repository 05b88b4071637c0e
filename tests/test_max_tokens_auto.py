"""``generation.max_tokens: auto``: a per-row output budget (issue 15).

The formula, the config keys, the request body and its content key, the tokens/min charge, context lengths
from ``/models``, ``prompt_too_long`` rows (never sent), the ``max_tokens`` column, resuming a run made with a
fixed max_tokens, a run against the mock and the dry run's figures.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
import xxhash
import yaml
from helpers import assert_exactly_once, make_input, write_config

from engine import load_config, records, run_job
from engine.client import FakeClient, ModelList, decode_models
from engine.commands.dryrun import estimate, format_estimate
from engine.core.config import from_dict
from engine.core.errors import RETRYABLE_KINDS
from engine.core.types import Completion, WorkItem
from engine.dispatch import Endpoint
from engine.prompts import builtin_template, estimate_tokens, render
from engine.runner.startup import make_endpoints, startup_check
from engine.stages import (
    AutoBudget,
    auto_budget,
    keep_run_max_tokens,
    make_fingerprint,
    open_source,
    text_tokens,
)
from engine.store.readers import current_failures
from engine.tools.mockserver import build_answer
from engine.tools.mockserver_proc import MockProcess
from engine.tools.synthetic import generate_rows


def minimal(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"input": {"path": "in.parquet"},
                           "endpoints": [{"url": "http://127.0.0.1:8000/v1", "model": "m"}]}
    raw.update(over)
    return raw


# ---------------------------------------------------------------------------------------- the formula


def test_the_budget_is_the_smallest_of_cap_context_room_and_k_answer_plus_margin() -> None:
    b = AutoBudget(cap=4096, k=1.5, margin=512)
    assert b(600, 400) == 1112  # ceil(1.5 x 400) + 512
    assert b(600, 401) == math.ceil(1.5 * 401) + 512 == 1114  # rounded up
    assert b(600, 0) == 512
    assert b(600, 3000) == 4096  # the cap
    ctx = AutoBudget(cap=4096, k=1.5, margin=512, context=2000)
    assert ctx(600, 400) == 1112  # room enough
    assert ctx(1500, 400) == 500  # the context term: 2000 - 1500
    assert ctx(1999, 400) == 1
    assert ctx(2000, 400) == 0 and ctx(2500, 10) == -500  # below 1: the prompt alone fills the context
    assert AutoBudget(cap=100, k=1.0, margin=0, context=8192)(50, 70) == 70
    assert text_tokens("") == 0 and text_tokens("abcd") == 1 and text_tokens("abcde") == 2


def test_auto_budget_of_a_config() -> None:
    cfg = from_dict(minimal(max_tokens_auto={"cap": 2000, "k": 2, "margin": 100}))
    b = auto_budget(cfg, 8192)
    assert b == AutoBudget(2000, 2.0, 100, 8192)
    assert auto_budget(from_dict(minimal(generation={"max_tokens": 4096})), 8192) is None
    assert auto_budget(from_dict(minimal(generation={"max_tokens": None})), None) is None


# ---------------------------------------------------------------------------------------- config keys


def test_config_keys_and_overrides(tmp_path: Path) -> None:
    cfg = from_dict(minimal(max_tokens_auto={"cap": 8000, "k": 1.25, "margin": 300},
                            endpoints=[{"url": "http://127.0.0.1:8000/v1", "model": "m", "context_length": 32768,
                                        "tpm_counts_max_tokens": True}]))
    a = cfg.max_tokens_auto
    assert (a.cap, a.k, a.margin) == (8000, 1.25, 300) and isinstance(a.k, float)
    assert cfg.max_tokens == 8000 and cfg.max_tokens_is_auto
    e = cfg.endpoints[0]
    assert e.context_length == 32768 and e.tpm_counts_max_tokens is True
    assert from_dict(minimal()).endpoints[0].context_length is None
    assert from_dict(minimal()).endpoints[0].tpm_counts_max_tokens is False
    p = tmp_path / "job.yaml"
    p.write_text("input: {path: in.parquet}\nendpoints: [{url: 'http://127.0.0.1:8000/v1', model: m}]\n"
                 "generation: {max_tokens: 1024}\n")
    assert load_config(p).generation["max_tokens"] == 1024
    cfg = load_config(p, ["generation.max_tokens=auto", "max_tokens_auto.margin=64", "endpoints.0.context_length=4096"])
    assert cfg.max_tokens_is_auto and cfg.max_tokens_auto.margin == 64 and cfg.endpoints[0].context_length == 4096
    assert cfg.to_dict()["max_tokens_auto"] == {"cap": 4096, "k": 1.5, "margin": 64}


def test_the_fingerprint_holds_the_budget_only_when_auto_is_used(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 3)

    def fp(**over: Any) -> dict[str, Any]:
        cfg = from_dict(minimal(input={"path": str(inp)}, **over))
        return make_fingerprint(cfg, open_source(cfg), builtin_template("distilabel"))

    fixed = fp(generation={"max_tokens": 4096})
    assert fixed["generation"] == {"max_tokens": 4096, "temperature": 0.7}  # as before auto existed
    assert fp(generation={"max_tokens": 4096}, max_tokens_auto={"k": 3}) == fixed  # unused: not part of it
    auto = fp()
    assert auto["generation"] == {"max_tokens": "auto", "max_tokens_auto": {"cap": 4096, "k": 1.5, "margin": 512},
                                  "temperature": 0.7}
    assert fp(max_tokens_auto={"margin": 100}) != auto  # a parameter changes where answers are cut
    # a context length (config or /models) is the endpoint's, not the request's
    assert fp(endpoints=[{"url": "http://127.0.0.1:8000/v1", "model": "m", "context_length": 999}]) == auto


def test_a_run_made_with_a_fixed_max_tokens_keeps_it() -> None:
    cfg = from_dict(minimal())
    old = {"generation": {"max_tokens": 4096, "temperature": 0.7}}
    kept, changed = keep_run_max_tokens(cfg, old)
    assert changed and kept.generation == {"temperature": 0.7, "max_tokens": 4096} and not kept.max_tokens_is_auto
    kept, changed = keep_run_max_tokens(cfg, {"generation": {"temperature": 0.7}})  # made with max_tokens: null
    assert changed and kept.generation == {"temperature": 0.7}
    assert keep_run_max_tokens(cfg, None) == (cfg, False)  # no run yet
    assert keep_run_max_tokens(cfg, {"generation": {"max_tokens": "auto"}}) == (cfg, False)
    fixed = from_dict(minimal(generation={"max_tokens": 2048}))
    assert keep_run_max_tokens(fixed, old) == (fixed, False)  # a number in the config is the user's choice


# ---------------------------------------------------------------------------------------- the request


def _item(max_tokens: int | None = None) -> WorkItem:
    msgs = [{"role": "user", "content": "hello"}]
    return WorkItem(1, "t", "s", msgs, estimate_tokens(msgs), {}, messages_json=orjson.dumps(msgs),
                    max_tokens=max_tokens)


def _endpoint(cfg_over: dict[str, Any] | None = None, **ep: Any) -> Endpoint:
    cfg = from_dict(minimal(**(cfg_over or {}),
                            endpoints=[{"url": "http://127.0.0.1:8000/v1", "model": "m", **ep}]))
    return make_endpoints(cfg, cfg.max_tokens)[0]


def test_the_body_carries_the_rows_max_tokens_in_auto_mode_only() -> None:
    auto = _endpoint()
    assert b"max_tokens" not in auto.prefix
    body = orjson.loads(auto.body(_item(777)))
    assert body == {"model": "m", "temperature": 0.7, "messages": [{"role": "user", "content": "hello"}],
                    "max_tokens": 777}
    fixed = _endpoint({"generation": {"max_tokens": 4096}})
    assert b'"max_tokens":4096' in fixed.prefix
    body = fixed.body(_item())
    assert body == fixed.prefix + b'[{"role":"user","content":"hello"}]}' and orjson.loads(body)["max_tokens"] == 4096


def test_the_request_key_includes_max_tokens_in_auto_mode_only() -> None:
    prefix, msgs = b'{"model":"m","temperature":0.7,"max_tokens":4096,"messages":', b'[{"role":"user"}]'
    # fixed max_tokens: the key is the hash of prefix + messages, as before auto existed
    assert records.request_key(prefix, msgs) == xxhash.xxh3_128_hexdigest(prefix + msgs)
    assert records.request_key(prefix, msgs, None) == records.request_key(prefix, msgs)
    # auto: the hash of the body that is sent (without its closing brace)
    auto_prefix = b'{"model":"m","temperature":0.7,"messages":'
    k700 = records.request_key(auto_prefix, msgs, 700)
    assert k700 == xxhash.xxh3_128_hexdigest(auto_prefix + msgs + b',"max_tokens":700')
    assert k700 != records.request_key(auto_prefix, msgs, 701) != records.request_key(auto_prefix, msgs)


def test_the_tpm_charge_uses_the_rows_budget_where_max_tokens_counts_at_admission() -> None:
    item = _item(900)
    usage = _endpoint(tpm_counts_max_tokens=False)  # prompt + the expected completion (1000 at first) ...
    assert usage.expected_completion == 1000
    assert usage.cost(_item(1500)) == _item().prompt_tokens_est + 1000
    assert usage.cost(item) == item.prompt_tokens_est + 900  # ... never more than the row's budget
    assert usage.charged(item, 10, 250) == 260  # refunded to what was used
    admission = _endpoint(tpm_counts_max_tokens=True)
    assert admission.cost(item) == item.prompt_tokens_est + 900
    assert admission.charged(item, 10, 250) == 910  # the provider keeps max_tokens: no refund of it
    fixed = _endpoint({"generation": {"max_tokens": 4096}}, tpm_counts_max_tokens=True)
    assert fixed.cost(_item()) == _item().prompt_tokens_est + 4096
    assert _endpoint({"generation": {"max_tokens": 4096}}).cost(_item()) == _item().prompt_tokens_est + 1000


# ---------------------------------------------------------------------------------------- /models


def test_models_with_context_lengths_vllm_shape() -> None:
    vllm = orjson.dumps({"object": "list", "data": [
        {"id": "Qwen/Qwen3-8B", "object": "model", "created": 1, "owned_by": "vllm", "root": "Qwen/Qwen3-8B",
         "parent": None, "max_model_len": 32768, "permission": [{"id": "modelperm-1", "object": "model_permission"}]},
        {"id": "lora-a", "object": "model", "parent": "Qwen/Qwen3-8B", "max_model_len": 32768},
    ]})
    ms = decode_models(vllm, "application/json")
    assert ms == ["Qwen/Qwen3-8B", "lora-a"] and isinstance(ms, list)  # still the list of ids
    assert ms.context_lengths == {"Qwen/Qwen3-8B": 32768, "lora-a": 32768}
    other = orjson.dumps({"data": [{"id": "a", "context_length": 8192}, {"id": "b", "context_window": 131072},
                                   {"id": "c", "max_model_len": "big"}, {"id": "d", "max_model_len": 0},
                                   {"id": "e", "max_model_len": True}, {"id": "f"}]})
    assert decode_models(other).context_lengths == {"a": 8192, "b": 131072}
    assert decode_models(b'{"object": "list", "data": []}').context_lengths == {}


async def test_startup_takes_the_context_length_from_models_unless_the_config_sets_one() -> None:
    cfg = from_dict(minimal(endpoints=[{"url": "http://a/v1", "model": "m", "name": "a"},
                                       {"url": "http://b/v1", "model": "m", "name": "b", "context_length": 4096}]))
    eps = make_endpoints(cfg, cfg.max_tokens)
    assert [ep.context_length for ep in eps] == [None, 4096]
    client = FakeClient(_never, models=ModelList(["m", "x"], {"m": 32768, "x": 1000}))
    await startup_check(client, eps, 5)
    assert [ep.context_length for ep in eps] == [32768, 4096]
    eps = make_endpoints(cfg, cfg.max_tokens)
    await startup_check(FakeClient(_never, models=["m"]), eps, 5)  # a transport that lists ids only
    assert [ep.context_length for ep in eps] == [None, 4096]


async def _never(url: str, headers: dict[str, str], body: dict[str, Any]) -> Completion:
    raise AssertionError("no request is sent")


# ---------------------------------------------------------------------------------------- a run


def _fake(seen: list[dict[str, Any]], finish: str = "stop") -> FakeClient:
    async def handler(url: str, headers: dict[str, str], body: dict[str, Any]) -> Completion:
        seen.append(body)
        sol = body["messages"][-1]["content"].split("{student_solution}: ", 1)[1].split("\n\n-----", 1)[0]
        return Completion(content=build_answer(sol, 0), finish_reason=finish, model=body["model"],
                          prompt_tokens=500, completion_tokens=300)

    return FakeClient(handler, models=["mock-clair"])


def _budgets(inp: Path, n: int, budget: AutoBudget) -> dict[int, int]:
    t = builtin_template("distilabel")
    out = {}
    for i, row in enumerate(generate_rows(n, seed=0)):
        sol = row["rejected"][1]["content"]
        out[i] = budget(estimate_tokens(render(t, row["prompt"], sol)), text_tokens(sol))
    return out


def test_a_prompt_that_fills_the_context_is_a_failure_without_a_request(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 30)
    budgets = _budgets(inp, 30, AutoBudget(4096, 1.5, 512, 700))
    too_long = {i for i, b in budgets.items() if b < 1}
    assert 0 < len(too_long) < 30  # the data has both kinds
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:9/v1", inp, generation={"max_tokens": "auto"},
                                   endpoints=[{"url": "http://127.0.0.1:9/v1", "model": "mock-clair",
                                               "context_length": 700}]))
    seen: list[dict[str, Any]] = []
    rep = run_job(cfg, client=_fake(seen))
    assert rep.status == "completed" and rep.rows_failed == {"prompt_too_long": len(too_long)}
    assert len(seen) == 30 - len(too_long)  # never sent
    run = tmp_path / "run"
    assert_exactly_once(run, 30)
    f = current_failures(run).to_pylist()
    assert {r["row_id"] for r in f} == too_long
    assert all(r["error_kind"] == "prompt_too_long" and r["max_tokens"] is None and r["raw_output"] is None
               and "leaves no room for an answer in the endpoint's context of 700 tokens" in r["error_message"]
               for r in f)
    data = pq.read_table(run / "data").to_pylist()
    assert {r["row_id"]: r["max_tokens"] for r in data} == {i: b for i, b in budgets.items() if b >= 1}
    assert sorted(b["max_tokens"] for b in seen) == sorted(b for b in budgets.values() if b >= 1)
    prefix, t = make_endpoints(cfg, cfg.max_tokens)[0].prefix, builtin_template("distilabel")
    for r in data:  # the content key covers the row's own max_tokens (it changes the answer)
        msgs = orjson.dumps(render(t, r["task"], r["student_solution"]))
        assert r["request_key"] == records.request_key(prefix, msgs, r["max_tokens"])
    assert "prompt_too_long" not in RETRYABLE_KINDS
    # --retry-failed does not send them again
    rep = run_job(cfg, client=_fake(seen), retry_failed=True)
    assert len(seen) == 30 - len(too_long) and rep.rows_failed == {"prompt_too_long": len(too_long)}
    assert_exactly_once(run, 30)


def test_truncation_is_judged_by_the_rows_own_budget(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 6)
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:9/v1", inp, generation={"max_tokens": "auto"},
                                   max_tokens_auto={"cap": 4096, "k": 0.0001, "margin": 300}))
    rep = run_job(cfg, client=_fake([]))  # every answer reports 300 completion tokens
    # the budget is ceil(0.0001 x answer) + 300 = 301 > 300 completion tokens: clean
    assert rep.rows_ok == 6
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:9/v1", inp, generation={"max_tokens": "auto"},
                                   output={"dir": str(tmp_path / "run2")},
                                   max_tokens_auto={"cap": 300, "k": 10, "margin": 0}))
    rep = run_job(cfg, client=_fake([]))  # 300 completion tokens = the cap: cut at the row's budget
    assert rep.rows_flagged == {"truncated": 6}
    rows = pq.read_table(tmp_path / "run2" / "data").to_pylist()
    assert {r["max_tokens"] for r in rows} == {300} and {r["status"] for r in rows} == {"truncated"}


def test_fixed_max_tokens_is_recorded_and_sent_as_before(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 5)
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:9/v1", inp))  # max_tokens: 4096
    seen: list[dict[str, Any]] = []
    run_job(cfg, client=_fake(seen))
    assert {b["max_tokens"] for b in seen} == {4096}
    rows = pq.read_table(tmp_path / "run" / "data").to_pylist()
    assert {r["max_tokens"] for r in rows} == {4096}
    prefix = make_endpoints(cfg, 4096)[0].prefix
    t = builtin_template("distilabel")
    for r in rows:  # the content key of a fixed max_tokens is what it was before auto existed
        msgs = orjson.dumps(render(t, r["task"], r["student_solution"]))
        assert r["request_key"] == xxhash.xxh3_128_hexdigest(prefix + msgs)


def test_auto_against_the_mock_end_to_end(tmp_path: Path) -> None:
    n = 40
    inp = make_input(tmp_path, n)
    with MockProcess(["--latency-ms", "2", "--context-length", "900", "--rate-ramble", "0.1", "--seed", "3"]) as m:
        cfg = load_config(write_config(tmp_path, m.url, inp, generation={"max_tokens": "auto", "temperature": 0.7}))
        rep = run_job(cfg)
        st = m.stats()
    assert rep.status == "completed"
    budgets = _budgets(inp, n, AutoBudget(4096, 1.5, 512, 900))  # the context came from GET /models
    too_long = {i for i, b in budgets.items() if b < 1}
    assert too_long and rep.rows_failed.get("prompt_too_long") == len(too_long)
    assert "400" not in st["status"]  # no request was refused for its length: the budget fits the context
    assert st["completions"] == n - len(too_long)
    run = tmp_path / "run"
    assert_exactly_once(run, n)
    sent = pq.read_table(run / "data").to_pylist() + [r for r in current_failures(run).to_pylist()
                                                      if r["error_kind"] != "prompt_too_long"]
    assert {r["row_id"]: r["max_tokens"] for r in sent} == {i: b for i, b in budgets.items() if b >= 1}
    cut = [r for r in sent if r["finish_reason"] == "length"]
    assert all(r["completion_tokens"] == r["max_tokens"] for r in cut)
    assert all(r.get("status") == "truncated" or r["error_kind"] == "truncated_no_revision" for r in cut)
    assert len(cut) >= st["faults"]["ramble"] > 0  # the ramblers are flagged, paid at their row's budget


def test_a_format_1_run_made_with_4096_resumes_with_it(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 10)
    made = load_config(write_config(tmp_path, "http://127.0.0.1:9/v1", inp, input={"path": str(inp), "limit": 5}))
    seen: list[dict[str, Any]] = []
    run_job(made, client=_fake(seen))
    # the same job without generation.max_tokens: auto is the default now, the run keeps its 4096
    job = write_config(tmp_path, "http://127.0.0.1:9/v1", inp)
    raw = yaml.safe_load(job.read_text())
    del raw["generation"]["max_tokens"]
    job.write_text(yaml.safe_dump(raw))
    resumed = load_config(job)
    assert resumed.max_tokens_is_auto
    rep = run_job(resumed, client=_fake(seen))
    assert rep.status == "completed" and {b["max_tokens"] for b in seen} == {4096}
    assert_exactly_once(tmp_path / "run", 10)
    rep = run_job(resumed, client=_fake(seen), new_run=True)  # a new run uses auto
    assert rep.rows_done == 10 and len({b["max_tokens"] for b in seen[10:]}) > 1


# ---------------------------------------------------------------------------------------- dry run


@pytest.fixture
def _estimate_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAIR_TOKENIZER", "estimate")


@pytest.mark.usefixtures("_estimate_counter")
def test_dry_run_uses_the_per_row_budgets(tmp_path: Path) -> None:
    n = 30
    inp = make_input(tmp_path, n)
    over = {"endpoints": [{"url": "http://127.0.0.1:9/v1", "model": "mock-clair", "context_length": 700,
                           "tokens_per_minute": 600_000, "tpm_counts_max_tokens": True, "max_concurrency": 1000}],
            "pricing": {"input_per_million": 1.0, "output_per_million": 10.0}}
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:9/v1", inp, generation={"max_tokens": "auto"}, **over))
    e = estimate(cfg, latency_s=10.0)
    budgets = _budgets(inp, n, AutoBudget(4096, 1.5, 512, 700))
    sent = [b for b in budgets.values() if b >= 1]
    prompts = [estimate_tokens(render(builtin_template("distilabel"), r["prompt"], r["rejected"][1]["content"]))
               for r in generate_rows(n, seed=0)]
    sent_prompts = [p for p, b in zip(prompts, budgets.values(), strict=True) if b >= 1]
    assert e.max_tokens_auto and e.context_length == 700
    assert (e.rows, e.requests, e.prompt_too_long, e.invalid_rows) == (n, len(sent), n - len(sent), 0)
    assert e.budget_tokens == sum(sent) and (e.budget_tokens_min, e.budget_tokens_max) == (min(sent), max(sent))
    assert e.prompt_tokens == sum(sent_prompts)
    assert e.completion_tokens == sum(min(b, 700) for b in sent)
    assert e.max_cost_usd == pytest.approx((sum(sent_prompts) * 1.0 + sum(sent) * 10.0) / 1e6)
    assert e.cost_usd == pytest.approx((sum(sent_prompts) * 1.0 + e.completion_tokens * 10.0) / 1e6)
    # a limit that counts max_tokens at admission is charged prompt + max_tokens per request
    per = sum(sent_prompts) / len(sent) + sum(sent) / len(sent)
    assert e.endpoints[0].bound == "tokens_per_minute"
    assert e.requests_per_s == pytest.approx(600_000 / 60 / per)
    out = format_estimate(e)
    assert f"max_tokens: auto, per row: mean {sum(sent) / len(sent):,.0f}, min {min(sent):,}, max {max(sent):,} " \
           "(cap 4,096; context 700)" in out
    assert f"{n - len(sent):,} rows whose prompt fills the context: recorded as prompt_too_long, not sent" in out
    assert f"output budget: {sum(sent):,} tokens at most" in out

    fixed = estimate(load_config(write_config(tmp_path, "http://127.0.0.1:9/v1", inp, **over)), latency_s=10.0)
    assert not fixed.max_tokens_auto and fixed.prompt_too_long == 0 and fixed.requests == n
    assert fixed.budget_tokens == n * 4096 and fixed.completion_tokens == n * 700
    assert fixed.requests_per_s < e.requests_per_s  # 4096 reserved per request
    assert "no context length known" in format_estimate(estimate(load_config(
        write_config(tmp_path, "http://127.0.0.1:9/v1", inp, generation={"max_tokens": "auto"}))))


def test_the_dry_run_of_a_resumed_fixed_max_tokens_run_shows_what_it_will_send(tmp_path: Path, mock: Any) -> None:
    """A run made with max_tokens 4096 keeps it on resume (auto is the default now): its dry run says so
    instead of showing per-row budgets the run will not use."""
    from helpers import clair, make_input, write_config

    inp = make_input(tmp_path, 20)
    fixed = write_config(tmp_path, mock.url, inp, generation={"temperature": 0.7, "max_tokens": 4096})
    assert clair("run", str(fixed)).returncode == 0
    default = write_config(tmp_path, mock.url, inp, generation={"temperature": 0.7, "max_tokens": "auto"})
    fresh = clair("run", str(default), "--dry-run", "--set", f"output.dir={tmp_path / 'new'}",
                  env={"CLAIR_TOKENIZER": "estimate"})
    assert "max_tokens: auto, per row" in fresh.stdout
    out = clair("run", str(default), "--dry-run", env={"CLAIR_TOKENIZER": "estimate"})
    assert out.returncode == 0 and "max_tokens: auto" not in out.stdout and "max_tokens 4,096" in out.stdout
