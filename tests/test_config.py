"""Job config: YAML → validated frozen objects; every error message is pinned here."""

from __future__ import annotations

import copy
import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.core.config import (
    VARIANTS,
    ColumnsConfig,
    EndpointConfig,
    InputConfig,
    JobConfig,
    apply_overrides,
    from_dict,
    load_config,
    parse_set,
    read_yaml,
    redact_secrets,
)
from engine.core.errors import ConfigError, UserError

FULL_YAML = """\
input:
  path: data/answers.parquet
  split: validation
  columns:
    task: instruction
    student_solution: "rejected[-1].content"
  id_column: uid
  limit: 500
  batch_rows: 256
prompt:
  variant: contextualai
  template_file: prompts/mine.yaml
endpoints:
  - url: http://127.0.0.1:8000/v1
    model: meta-llama/Llama-3.1-70B-Instruct
    api_key_env: VLLM_API_KEY
    max_concurrency: 128
    requests_per_minute: 600
    tokens_per_minute: 2000000
    weight: 2
    adaptive: false
    headers:
      X-Team: research
    name: node-a
  - url: http://127.0.0.1:8001/v1
    model: meta-llama/Llama-3.1-70B-Instruct
generation:
  temperature: 0.2
  max_tokens: 2048
  top_p: 0.9
  seed: 1234
  stop: ["</answer>", "###"]
output:
  dir: runs/full
  rows_per_shard: 5000
  keep_input_columns: false
retry:
  max_attempts: 3
  base_delay_s: 0.5
  max_delay_s: 30
  max_total_s: 600
timeouts:
  connect_s: 5
  request_s: 300
run:
  grace_period_s: 3
  fsync_interval_ms: 20
  allow_mixed_models: false
  breaker_failures: 5
  breaker_open_s: 2.5
  progress: plain
  progress_interval_s: 30
pricing:
  input_per_million: 2.5
  output_per_million: 10
"""


def minimal() -> dict[str, Any]:
    return {"input": {"path": "in.jsonl"}, "endpoints": [{"url": "http://127.0.0.1:8000/v1", "model": "m"}]}


def with_(**sections: Any) -> dict[str, Any]:
    """``minimal()`` with sections merged one level deep (``endpoints`` replaced)."""
    raw = minimal()
    for k, v in sections.items():
        if isinstance(v, dict) and isinstance(raw.get(k), dict):
            raw[k] = {**raw[k], **v}
        else:
            raw[k] = v
    return raw


def ep(**kw: Any) -> dict[str, Any]:
    return {"url": "http://127.0.0.1:8000/v1", "model": "m", **kw}


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


# ---------------------------------------------------------------------------- a full valid config


def test_full_config_every_key(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL_YAML))
    i = cfg.input
    assert (i.path, i.dataset, i.split, i.id_column, i.limit, i.batch_rows) == (
        "data/answers.parquet", None, "validation", "uid", 500, 256
    )
    assert i.columns == ColumnsConfig(task="instruction", student_solution="rejected[-1].content")
    assert (cfg.prompt.variant, cfg.prompt.template_file) == ("contextualai", "prompts/mine.yaml")
    a, b = cfg.endpoints
    assert a.url == "http://127.0.0.1:8000/v1" and a.model == "meta-llama/Llama-3.1-70B-Instruct"
    assert a.api_key_env == "VLLM_API_KEY"
    assert a.max_concurrency == 128
    assert a.requests_per_minute == 600.0 and isinstance(a.requests_per_minute, float)
    assert a.tokens_per_minute == 2_000_000.0
    assert a.weight == 2.0 and a.adaptive is False and a.headers == {"X-Team": "research"}
    assert a.label == "node-a" and b.label == "http://127.0.0.1:8001/v1"
    assert b == EndpointConfig(url="http://127.0.0.1:8001/v1", model="meta-llama/Llama-3.1-70B-Instruct")
    # generation is passed through as written
    assert cfg.generation == {"temperature": 0.2, "max_tokens": 2048, "top_p": 0.9, "seed": 1234,
                              "stop": ["</answer>", "###"]}
    assert cfg.max_tokens == 2048
    assert (cfg.output.dir, cfg.output.rows_per_shard, cfg.output.keep_input_columns) == ("runs/full", 5000, False)
    assert dataclasses.astuple(cfg.retry) == (3, 0.5, 30.0, 600.0)
    assert (cfg.timeouts.connect_s, cfg.timeouts.request_s) == (5.0, 300.0)
    r = cfg.run
    assert (r.grace_period_s, r.fsync_interval_ms, r.allow_mixed_models) == (3.0, 20.0, False)
    assert (r.breaker_failures, r.breaker_open_s, r.progress, r.progress_interval_s) == (5, 2.5, "plain", 30.0)
    assert (cfg.pricing.input_per_million, cfg.pricing.output_per_million) == (2.5, 10.0)
    assert cfg.base_dir == "."


def test_defaults_of_a_minimal_config() -> None:
    cfg = from_dict(minimal())
    assert cfg.input.columns.task_column == "prompt"
    assert cfg.input.columns.student_solution_column(cfg.has_generate) == "rejected[1].content"
    assert cfg.has_revise and not cfg.has_generate and cfg.generate is None
    assert (cfg.input.split, cfg.input.limit, cfg.input.batch_rows, cfg.input.id_column) == ("train", None, 1024, None)
    assert cfg.input.precheck is True
    assert from_dict(with_(input={"path": "in.parquet", "precheck": False})).input.precheck is False
    assert cfg.prompt.variant == "distilabel" and cfg.prompt.template_file is None
    # CLAIR's reference sampling, with a budget per row instead of one max_tokens for all
    assert cfg.generation == {"temperature": 0.7, "max_tokens": "auto"}
    assert cfg.max_tokens_is_auto and cfg.max_tokens == 4096  # the most a row may get: max_tokens_auto.cap
    assert dataclasses.astuple(cfg.max_tokens_auto) == (4096, 1.5, 512)
    assert cfg.request_generation == {"temperature": 0.7}  # each request carries its own max_tokens
    assert cfg.output.keep_input_columns is True
    assert cfg.run.max_pause_s == 900.0  # every endpoint failing for 15 minutes stops a run (exit 75)
    e = cfg.endpoints[0]
    assert (e.api_key_env, e.max_concurrency, e.requests_per_minute, e.tokens_per_minute) == (None, 64, None, None)
    assert e.api_key() is None


def test_dataset_input_and_hub_fields() -> None:
    cfg = from_dict(with_(input={"path": None, "dataset": "ContextualAI/ultrafeedback_clair_32k",
                                 "name": "default", "revision": "main"}))
    assert cfg.input.dataset == "ContextualAI/ultrafeedback_clair_32k"
    assert (cfg.input.path, cfg.input.name, cfg.input.revision) == (None, "default", "main")


def test_config_objects_are_frozen() -> None:
    cfg = from_dict(minimal())
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.input.limit = 3  # type: ignore[misc]
    assert isinstance(cfg.endpoints, tuple)


def test_bundled_configs_load() -> None:
    root = Path(__file__).resolve().parent.parent / "configs"
    for name in ("demo.yaml", "example-openai.yaml", "example-vllm.yaml"):
        assert load_config(root / name).endpoints


def test_api_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_TEST_KEY", "sk-secret-value")
    cfg = from_dict(with_(endpoints=[ep(api_key_env="MY_TEST_KEY")]))
    assert cfg.endpoints[0].api_key() == "sk-secret-value"
    monkeypatch.delenv("MY_TEST_KEY")
    assert cfg.endpoints[0].api_key() is None


def test_resolve_relative_to_base_dir(tmp_path: Path) -> None:
    cfg = from_dict(with_(output={"dir": "runs/x"}), base_dir=str(tmp_path))
    assert cfg.run_dir == tmp_path / "runs" / "x"
    assert cfg.resolve("/abs/file") == Path("/abs/file")
    assert cfg.resolve("~/f") == Path.home() / "f"


def test_errors_are_user_errors() -> None:
    with pytest.raises(UserError):
        from_dict({})


# ---------------------------------------------------------------------------- unknown keys


def test_unknown_top_level_key() -> None:
    with pytest.raises(ConfigError, match=r"^unknown config key inptu; known keys here: budget, endpoints, generate, generation, guard, input,"):
        from_dict(with_(inptu={"path": "x"}))


def test_unknown_nested_key() -> None:
    raw = with_()
    raw["input"]["colums"] = {"task": "prompt"}
    with pytest.raises(ConfigError, match=r"^unknown config key input\.colums; known keys here: .*columns"):
        from_dict(raw)


def test_unknown_deeply_nested_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key input\.columns\.solution; known keys here: "
                                          r"messages, student_solution, task"):
        from_dict(with_(input={"columns": {"solution": "x"}}))


def test_unknown_key_in_an_endpoint() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key endpoints\[1\]\.max_concurency"):
        from_dict(with_(endpoints=[ep(), ep(url="http://b/v1", max_concurency=3)]))


def test_unknown_keys_of_mixed_types_do_not_crash() -> None:
    # YAML allows non-string keys (1:, null:); sorting them must not raise TypeError
    with pytest.raises(ConfigError, match=r"unknown config key 1; "):
        from_dict({**minimal(), 1: "a", "zzz": "b"})


# ---------------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ("input", {"limit": "100"}, r"input\.limit must be an integer, got '100'"),
        ("input", {"limit": 1.5}, r"input\.limit must be an integer, got 1\.5"),
        ("input", {"batch_rows": True}, r"input\.batch_rows must be an integer, got True"),
        ("input", {"path": ["a", "b"]}, r"input\.path must be a string, got \['a', 'b'\]"),
        ("input", {"precheck": "no"}, r"input\.precheck must be true or false, got 'no'"),
        ("input", {"columns": "prompt"}, r"input\.columns must be a mapping \(key: value\), got str"),
        ("output", {"keep_input_columns": "yes"}, r"output\.keep_input_columns must be true or false, got 'yes'"),
        ("output", {"rows_per_shard": None}, r"output\.rows_per_shard must be an integer, got None"),
        ("timeouts", {"request_s": "10s"}, r"timeouts\.request_s must be a number, got '10s'"),
        ("run", {"allow_mixed_models": 1}, r"run\.allow_mixed_models must be true or false, got 1"),
        ("pricing", {"input_per_million": "cheap"}, r"pricing\.input_per_million must be a number, got 'cheap'"),
    ],
)
def test_wrong_types_name_the_key(section: str, value: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(with_(**{section: value}))


def test_wrong_types_in_endpoints() -> None:
    with pytest.raises(ConfigError, match=r"^endpoints must be a list$"):
        from_dict(with_(endpoints=ep()))
    with pytest.raises(ConfigError, match=r"endpoints\[0\]\.max_concurrency must be an integer, got '8'"):
        from_dict(with_(endpoints=[ep(max_concurrency="8")]))
    with pytest.raises(ConfigError, match=r"endpoints\[0\] must be a mapping \(key: value\), got str"):
        from_dict(with_(endpoints=["http://127.0.0.1:8000/v1"]))
    with pytest.raises(ConfigError, match=r"endpoints\[0\]\.headers must be a mapping \(key: value\)"):
        from_dict(with_(endpoints=[ep(headers=["X-A: b"])]))


def test_wrong_type_of_a_section_and_of_generation() -> None:
    with pytest.raises(ConfigError, match=r"^input must be a mapping \(key: value\), got list"):
        from_dict(with_(input=["in.jsonl"]))
    with pytest.raises(ConfigError, match=r"^generation must be a mapping \(key: value\)"):
        from_dict(with_(generation=[0.7]))


def test_numbers_accept_ints_and_strings_accept_numbers() -> None:
    cfg = from_dict(with_(retry={"base_delay_s": 2}, output={"dir": 2024}))
    assert cfg.retry.base_delay_s == 2.0 and isinstance(cfg.retry.base_delay_s, float)
    assert cfg.output.dir == "2024"


# ---------------------------------------------------------------------------- semantic checks


def test_missing_endpoints() -> None:
    raw = minimal()
    del raw["endpoints"]
    with pytest.raises(ConfigError, match=r"^endpoints: at least one endpoint is required \(url \+ model\)"):
        from_dict(raw)
    with pytest.raises(ConfigError, match=r"^endpoints: at least one endpoint is required"):
        from_dict(with_(endpoints=[]))


def test_both_or_neither_input_path_and_dataset() -> None:
    msg = r"^input: give exactly one of input\.path \(local files\) or input\.dataset \(hub dataset\)"
    with pytest.raises(ConfigError, match=msg):
        from_dict(with_(input={"dataset": "org/name"}))
    with pytest.raises(ConfigError, match=msg):
        from_dict(with_(input={"path": None}))


@pytest.mark.parametrize(
    ("inp", "message"),
    [
        ({"limit": -1}, r"input\.limit must be >= 0 \(or null for all rows\)"),
        ({"batch_rows": 0}, r"input\.batch_rows must be between 1 and 1000000"),
        ({"batch_rows": 1_000_001}, r"input\.batch_rows must be between 1 and 1000000"),
    ],
)
def test_input_bounds(inp: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(with_(input=inp))


def test_limit_zero_and_null_are_valid() -> None:
    assert from_dict(with_(input={"limit": 0})).input.limit == 0
    assert from_dict(with_(input={"limit": None})).input.limit is None


def test_invalid_variant() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^prompt\.variant 'clair' is unknown; use one of: distilabel, contextualai, length-preserving$",
    ):
        from_dict(with_(prompt={"variant": "clair"}))
    for v in VARIANTS:
        assert from_dict(with_(prompt={"variant": v})).prompt.variant == v


def test_mixed_models_need_allow_mixed_models() -> None:
    eps = [ep(model="b-model"), ep(url="http://127.0.0.1:8001/v1", model="a-model")]
    with pytest.raises(
        ConfigError,
        match=r"^endpoints serve different models \(a-model, b-model\); set run\.allow_mixed_models: true",
    ):
        from_dict(with_(endpoints=eps))
    cfg = from_dict(with_(endpoints=eps, run={"allow_mixed_models": True}))
    assert [e.model for e in cfg.endpoints] == ["b-model", "a-model"]


def test_duplicate_endpoints() -> None:
    msg = r"^endpoints: two endpoints have the same url/name; give each a distinct name$"
    with pytest.raises(ConfigError, match=msg):
        from_dict(with_(endpoints=[ep(), ep()]))
    with pytest.raises(ConfigError, match=msg):
        from_dict(with_(endpoints=[ep(name="x"), ep(url="http://b/v1", name="x")]))
    # the same URL twice is fine when the endpoints are named apart (e.g. two keys for one API)
    cfg = from_dict(with_(endpoints=[ep(name="k1", api_key_env="K1"), ep(name="k2", api_key_env="K2")]))
    assert [e.label for e in cfg.endpoints] == ["k1", "k2"]


@pytest.mark.parametrize("value", ["sk-abc123def456ghi789", "sk-proj-AbC_dEf", "Bearer abc", "MY KEY", "1ABC", ""])
def test_api_key_env_that_looks_like_a_key(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^endpoints\[0\]\.api_key_env must be the NAME of an environment variable, "
                                          r"not the key itself$") as ei:
        from_dict(with_(endpoints=[ep(api_key_env=value)]))
    if value:
        assert value not in str(ei.value)  # the secret never appears in a message


def test_api_key_env_valid_names() -> None:
    for name in ("OPENAI_API_KEY", "_K", "key2", "HF_TOKEN"):
        assert from_dict(with_(endpoints=[ep(api_key_env=name)])).endpoints[0].api_key_env == name


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"url": "127.0.0.1:8000/v1"}, r"endpoints\[0\]\.url must be an http\(s\) URL ending in /v1"),
        ({"url": ""}, r"endpoints\[0\]\.url must be an http\(s\) URL"),
        ({"model": ""}, r"endpoints\[0\]\.model is required \(the model name the endpoint serves\)"),
        ({"max_concurrency": 0}, r"endpoints\[0\]\.max_concurrency must be >= 1"),
        ({"requests_per_minute": 0}, r"endpoints\[0\]\.requests_per_minute must be > 0 \(or null for no limit\)"),
        ({"tokens_per_minute": -5}, r"endpoints\[0\]\.tokens_per_minute must be > 0 \(or null for no limit\)"),
        ({"weight": 0}, r"endpoints\[0\]\.weight must be > 0"),
        ({"context_length": 1}, r"^endpoints\[0\]\.context_length must be an integer >= 2 \(tokens\), or null to ask "
                                r"GET /models$"),
        ({"context_length": "8k"}, r"^endpoints\[0\]\.context_length must be an integer, got '8k'$"),
        ({"tpm_counts_max_tokens": "yes"}, r"^endpoints\[0\]\.tpm_counts_max_tokens must be true or false"),
    ],
)
def test_endpoint_checks(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(with_(endpoints=[ep(**kw)]))


AZ_URL = "https://res.openai.azure.com/openai/deployments/gpt-4o"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"extra_body": {"model": "x"}},
         r"^endpoints\[0\]\.extra_body: 'messages', 'model' and 'stream' are set by the engine; remove them$"),
        ({"extra_body": {"stream": True}}, r"^endpoints\[0\]\.extra_body: 'messages', 'model' and 'stream' are set"),
        ({"extra_body": {"messages": []}}, r"^endpoints\[0\]\.extra_body: 'messages', 'model' and 'stream' are set"),
        ({"extra_body": {"max_tokens": 10}},
         r"^endpoints\[0\]\.extra_body: set the output budget in generation\.max_tokens, not per endpoint "
         r"\(the engine plans every request with it\)$"),
        ({"extra_body": {"max_completion_tokens": 10}}, r"^endpoints\[0\]\.extra_body: set the output budget in"),
        ({"extra_body": {1: "x"}},
         r"^endpoints\[0\]\.extra_body: every key must be a string \(a request body field name\)$"),
        ({"extra_body": "top_k=20"}, r"^endpoints\[0\]\.extra_body must be a mapping \(key: value\)$"),
        ({"system_role": "no"}, r"^endpoints\[0\]\.system_role must be true or false, got 'no'$"),
        ({"azure": {}}, r'^endpoints\[0\]\.azure\.api_version is required, e\.g\. api_version: "2024-10-21"$'),
        ({"azure": {"api_version": " "}}, r"^endpoints\[0\]\.azure\.api_version is required"),
        ({"azure": {"api_version": "2024-10-21", "deployment": "d"}},
         r"^unknown config key endpoints\[0\]\.azure\.deployment; known keys here: api_version$"),
        ({"azure": "2024-10-21"}, r"^endpoints\[0\]\.azure must be a mapping \(key: value\), got str$"),
        ({"url": AZ_URL + "/chat/completions", "azure": {"api_version": "2024-10-21"}},
         r"^endpoints\[0\]\.url must be the Azure deployment URL without /chat/completions and without "
         r"\?api-version, e\.g\. https://RESOURCE\.openai\.azure\.com/openai/deployments/DEPLOYMENT \(the "
         r"version goes in endpoints\[0\]\.azure\.api_version\)$"),
        ({"url": AZ_URL + "?api-version=2024-10-21", "azure": {"api_version": "2024-10-21"}},
         r"^endpoints\[0\]\.url must be the Azure deployment URL without /chat/completions"),
    ],
)
def test_endpoint_shaping_checks(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(with_(endpoints=[ep(**kw)]))


def test_endpoint_shaping_keys(tmp_path: Path) -> None:
    e = from_dict(minimal()).endpoints[0]
    assert (e.extra_body, e.system_role, e.azure) == ({}, True, None)
    cfg = load_config(write(tmp_path, f"""\
        input: {{path: in.jsonl}}
        endpoints:
          - url: {AZ_URL}
            model: gpt-4o
            azure: {{api_version: 2024-10-21}}
            system_role: false
            extra_body:
              top_k: 20
              chat_template_kwargs: {{enable_thinking: false}}
              temperature: null
        """))
    a = cfg.endpoints[0]
    assert a.azure is not None and a.azure.api_version == "2024-10-21"  # a date-like version stays text
    assert a.system_role is False
    assert a.extra_body == {"top_k": 20, "chat_template_kwargs": {"enable_thinking": False}, "temperature": None}
    assert cfg.to_dict()["endpoints"][0]["extra_body"] == a.extra_body  # not a secret: not redacted
    assert cfg.to_dict()["endpoints"][0]["azure"] == {"api_version": "2024-10-21"}
    over = load_config(write(tmp_path, "input: {path: x}\nendpoints: [{url: 'http://h/v1', model: m}]\n"),
                       ["endpoints.0.system_role=false", "endpoints.0.extra_body.top_k=40"])
    assert over.endpoints[0].system_role is False and over.endpoints[0].extra_body == {"top_k": 40}


def test_endpoint_missing_url_names_its_index() -> None:
    with pytest.raises(ConfigError, match=r"^endpoints\[1\]\.url must be"):
        from_dict(with_(endpoints=[ep(), {"model": "m"}]))


@pytest.mark.parametrize(
    ("gen", "message"),
    [
        ({"model": "x"}, r"generation: 'messages', 'model' and 'stream' are set by the engine; remove them"),
        ({"messages": []}, r"generation: 'messages', 'model' and 'stream' are set by the engine"),
        ({"stream": True}, r"generation: 'messages', 'model' and 'stream' are set by the engine"),
        ({"max_tokens": 0}, r"^generation\.max_tokens must be a positive integer or auto \(a budget per row\)$"),
        ({"max_tokens": "4096"}, r"generation\.max_tokens must be a positive integer or auto"),
        ({"max_tokens": True}, r"generation\.max_tokens must be a positive integer or auto"),
        ({"max_tokens": "Auto"}, r"generation\.max_tokens must be a positive integer or auto"),
        ({"temperature": -0.1}, r"generation\.temperature must be a number >= 0"),
        ({"temperature": "hot"}, r"generation\.temperature must be a number >= 0"),
        ({"extra_body": {"top_k": 20}}, r"^generation\.extra_body would reach the server as one unknown field; write "
                                        r"its keys directly under generation \(or under endpoints\[N\]\.extra_body "
                                        r"for one endpoint\)$"),
    ],
)
def test_generation_checks(gen: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(with_(generation=gen))


def test_generation_passthrough_of_other_keys() -> None:
    gen = {"temperature": 0, "max_tokens": 10, "top_p": 0.5, "seed": 7, "stop": ["x"], "presence_penalty": 0.1,
           "chat_template_kwargs": {"enable_thinking": False}}
    cfg = from_dict(with_(generation=gen))
    assert cfg.generation == gen
    # keys add to CLAIR's reference sampling; null removes a key (o-series models reject temperature)
    assert from_dict(with_(generation=None)).generation == {"temperature": 0.7, "max_tokens": "auto"}
    assert from_dict(with_(generation={"seed": 1})).generation == {"temperature": 0.7, "max_tokens": "auto",
                                                                     "seed": 1}
    assert from_dict(with_(generation={"temperature": None})).generation == {"max_tokens": "auto"}
    fixed = from_dict(with_(generation={"max_tokens": 4096}))
    assert not fixed.max_tokens_is_auto and fixed.request_generation == fixed.generation
    no_limit = from_dict(with_(generation={"max_tokens": None}))
    assert no_limit.generation == {"temperature": 0.7} and no_limit.max_tokens == 4096  # not sent


MAX_PAUSE = (r"run\.max_pause_s must be a number of seconds > 0 "
             r"\(how long every endpoint may fail before the run stops\)$")


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ("output", {"rows_per_shard": 0}, r"output\.rows_per_shard must be between 1 and 10000000"),
        ("retry", {"max_attempts": 0}, r"retry\.max_attempts must be >= 1 \(1 = no retries\)"),
        ("retry", {"base_delay_s": -1}, r"retry delays must be >= 0"),
        ("retry", {"max_total_s": -1}, r"retry delays must be >= 0"),
        ("timeouts", {"connect_s": 0}, r"timeouts\.connect_s and timeouts\.request_s must be > 0"),
        ("timeouts", {"request_s": -1}, r"timeouts\.connect_s and timeouts\.request_s must be > 0"),
        ("run", {"grace_period_s": -1}, r"run\.grace_period_s must be >= 0"),
        ("run", {"fsync_interval_ms": 0.5}, r"run\.fsync_interval_ms must be between 1 and 100"),
        ("run", {"fsync_interval_ms": 101}, r"run\.fsync_interval_ms must be between 1 and 100"),
        ("run", {"breaker_failures": 0}, r"run\.breaker_failures must be >= 1"),
        ("run", {"breaker_open_s": 300}, r"run\.breaker_open_s must be > 0 and <= 120"),
        ("run", {"progress": "fancy"}, r"run\.progress must be one of: auto, rich, plain, off"),
        ("run", {"max_pause_s": 0}, MAX_PAUSE),
        ("run", {"max_pause_s": -60}, MAX_PAUSE),
        ("run", {"max_pause_s": float("inf")}, MAX_PAUSE),
        ("max_tokens_auto", {"cap": 0}, r"^max_tokens_auto\.cap must be >= 1 \(tokens\)$"),
        ("max_tokens_auto", {"k": 0}, r"^max_tokens_auto\.k must be > 0 and <= 100 \(output tokens per "
                                      r"student-answer token\)$"),
        ("max_tokens_auto", {"k": 101}, r"^max_tokens_auto\.k must be > 0 and <= 100"),
        ("max_tokens_auto", {"margin": -1}, r"^max_tokens_auto\.margin must be >= 0 \(tokens for the rationale\)$"),
        ("max_tokens_auto", {"cap": 1.5}, r"^max_tokens_auto\.cap must be an integer, got 1\.5$"),
        ("max_tokens_auto", {"kk": 1}, r"^unknown config key max_tokens_auto\.kk; known keys here: cap, k, margin$"),
    ],
)
def test_section_checks(section: str, value: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(with_(**{section: value}))


# ---------------------------------------------------------------------------- --set overrides


def test_parse_set() -> None:
    assert parse_set("input.limit=100") == (["input", "limit"], 100)
    assert parse_set("a.b=null") == (["a", "b"], None)
    assert parse_set("a=true") == (["a"], True)
    assert parse_set("a=1.5") == (["a"], 1.5)
    assert parse_set("a=[1, 2]") == (["a"], [1, 2])
    assert parse_set("a=") == (["a"], "")
    assert parse_set("a=x=y") == (["a"], "x=y")  # only the first '=' splits
    assert parse_set(" a.b =http://h:1/v1") == (["a", "b"], "http://h:1/v1")
    assert parse_set("a=[unclosed") == (["a"], "[unclosed")  # not YAML: kept as the raw string


def test_parse_set_yaml_12_scalars() -> None:
    # YAML 1.1 would turn these into booleans / dates; a config value means the text
    assert parse_set("run.progress=off") == (["run", "progress"], "off")
    assert parse_set("a=yes") == (["a"], "yes")
    assert parse_set("a=no") == (["a"], "no")
    assert parse_set("a=2024-01-01") == (["a"], "2024-01-01")
    assert parse_set("a=False") == (["a"], False)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("input.limit", r"--set 'input\.limit': expected KEY\.PATH=VALUE, e\.g\. --set output\.dir=runs/x"),
        ("=5", r"--set '=5': empty key"),
        ("  =5", r"--set '  =5': empty key"),
        ("input..limit=5", r"--set 'input\.\.limit=5': empty part in key 'input\.\.limit'"),
        ("input.limit.=5", r"--set 'input\.limit\.=5': empty part in key"),
    ],
)
def test_parse_set_bad_syntax(item: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_set(item)


def test_apply_overrides_nested_and_typed() -> None:
    raw = minimal()
    out = apply_overrides(raw, ["input.limit=100", "output.dir=runs/x", "input.columns.task=instruction",
                                "input.id_column=null", "generation.seed=3"])
    assert out["input"] == {"path": "in.jsonl", "limit": 100, "columns": {"task": "instruction"}, "id_column": None}
    assert out["output"] == {"dir": "runs/x"}
    assert out["generation"] == {"seed": 3}
    assert raw == minimal()  # the input mapping is not modified


def test_apply_overrides_list_index() -> None:
    raw = with_(endpoints=[ep(), ep(url="http://127.0.0.1:9/v1")])
    out = apply_overrides(raw, ["endpoints.1.url=http://10.0.0.2:8000/v1", "endpoints.0.max_concurrency=8"])
    assert out["endpoints"][1]["url"] == "http://10.0.0.2:8000/v1"
    assert out["endpoints"][0]["max_concurrency"] == 8


def test_apply_overrides_appends_a_new_list_item() -> None:
    out = apply_overrides(minimal(), ["endpoints.1.url=http://127.0.0.1:8001/v1", "endpoints.1.model=m"])
    cfg = from_dict(out)
    assert [e.url for e in cfg.endpoints] == ["http://127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1"]
    # from nothing: endpoints given entirely on the command line
    raw = {"input": {"path": "in.jsonl"}}
    cfg = from_dict(apply_overrides(raw, ["endpoints.0.url=http://h/v1", "endpoints.0.model=x"]))
    assert cfg.endpoints[0].url == "http://h/v1"
    # a leaf list grows by one at its end
    assert apply_overrides({"g": {"stop": ["a"]}}, ["g.stop.1=b"]) == {"g": {"stop": ["a", "b"]}}


def test_apply_overrides_replaces_a_null_section() -> None:
    out = apply_overrides({"input": None}, ["input.path=x.jsonl"])
    assert out == {"input": {"path": "x.jsonl"}}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("endpoints.5.url=http://x/v1", r"endpoints\.5 is not an existing list index"),
        ("endpoints.first.url=http://x/v1", r"endpoints\.first is not an existing list index"),
        ("endpoints.-1.url=http://x/v1", r"endpoints\.-1 is not an existing list index"),
        ("endpoints.3=x", r"--set 'endpoints\.3=x': 3 is not a valid list index"),
        ("input.path.x=1", r"--set 'input\.path\.x=1': cannot set a key inside a str"),
        ("input.path.x.y=1", r"--set 'input\.path\.x\.y=1': input\.path is not a mapping"),
    ],
)
def test_apply_overrides_errors(item: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(minimal(), [item])


def test_load_config_with_overrides(tmp_path: Path) -> None:
    p = write(tmp_path, FULL_YAML)
    cfg = load_config(p, ["input.limit=100", "endpoints.0.url=http://10.1.1.1:8000/v1", "input.id_column=null",
                          "run.progress=off", "generation.stop=[a, b]", "pricing.input_per_million=null"])
    assert cfg.input.limit == 100
    assert cfg.endpoints[0].url == "http://10.1.1.1:8000/v1"
    assert cfg.input.id_column is None
    assert cfg.run.progress == "off"
    assert cfg.generation["stop"] == ["a", "b"]
    assert cfg.pricing.input_per_million is None


def test_load_config_override_errors_are_config_errors(tmp_path: Path) -> None:
    p = write(tmp_path, FULL_YAML)
    with pytest.raises(ConfigError, match=r"unknown config key input\.limt"):
        load_config(p, ["input.limt=5"])
    with pytest.raises(ConfigError, match=r"input\.limit must be an integer, got 'many'"):
        load_config(p, ["input.limit=many"])


def test_override_with_a_secret_value_is_redacted_in_to_dict(tmp_path: Path) -> None:
    p = write(tmp_path, FULL_YAML)
    cfg = load_config(p, ["endpoints.0.headers.Authorization=Bearer sk-topsecret"])
    assert cfg.endpoints[0].headers["Authorization"] == "Bearer sk-topsecret"
    assert "sk-topsecret" not in repr(cfg.to_dict())


# ---------------------------------------------------------------------------- files


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, """\
        input:
          path: in.jsonl
        endpoints:
          - url: [http://x
        """, name="broken.yaml")
    with pytest.raises(ConfigError, match=r"config file .*broken\.yaml is not valid YAML at line \d+; fix the syntax"):
        load_config(p)
    p2 = write(tmp_path, "input:\n  path: a\n bad: 1\n", name="indent.yaml")
    with pytest.raises(ConfigError, match=r"indent\.yaml is not valid YAML at line 3; fix the syntax$"):
        read_yaml(p2)


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    p = write(tmp_path, """\
        input:
          path: a.jsonl
        endpoints:
          - url: http://127.0.0.1:8000/v1
            model: m
            model: n
        """, name="dup.yaml")
    with pytest.raises(ConfigError, match=r"dup\.yaml is not valid YAML at line 6; fix the syntax"):
        load_config(p)


def test_yaml_12_scalars_in_files(tmp_path: Path) -> None:
    p = write(tmp_path, """\
        input: {path: in.jsonl}
        endpoints: [{url: "http://127.0.0.1:8000/v1", model: m, adaptive: False}]
        output: {dir: 2024-06-01}
        run: {progress: off}
        generation: {stop: [no, yes]}
        """)
    cfg = load_config(p)
    assert cfg.run.progress == "off"
    assert cfg.output.dir == "2024-06-01"
    assert cfg.generation["stop"] == ["no", "yes"]
    assert cfg.endpoints[0].adaptive is False


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*nope\.yaml does not exist; pass the path of a YAML job config"):
        load_config(tmp_path / "nope.yaml")


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .* cannot be read \(.*\); check its permissions"):
        read_yaml(tmp_path)


def test_non_utf8_file(tmp_path: Path) -> None:
    p = tmp_path / "latin.yaml"
    p.write_bytes("input: {path: caf\xe9.jsonl}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin\.yaml is not UTF-8 text; save it as UTF-8"):
        read_yaml(p)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_top_level(tmp_path: Path, text: str) -> None:
    p = write(tmp_path, text, name="list.yaml")
    with pytest.raises(ConfigError, match=r"list\.yaml must hold a mapping at the top level \(input:, endpoints:, \.\.\.\)"):
        load_config(p)


def test_empty_file_is_an_empty_mapping(tmp_path: Path) -> None:
    p = write(tmp_path, "# nothing\n", name="empty.yaml")
    assert read_yaml(p) == {}
    with pytest.raises(ConfigError, match=r"^input: give exactly one of"):
        load_config(p)


def test_load_config_resolves_relative_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "cfgs"
    sub.mkdir()
    p = write(sub, FULL_YAML)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(p)
    assert cfg.resolve(cfg.input.path) == Path("data/answers.parquet")


# ---------------------------------------------------------------------------- redaction and to_dict


def test_redact_secrets() -> None:
    d = {
        "endpoints": [{"url": "http://x/v1", "api_key_env": "OPENAI_API_KEY", "api_key": "sk-1", "apikey": "sk-2",
                       "headers": {"Authorization": "Bearer sk-3", "X-Team": "research"},
                       "tokens_per_minute": 1000.0}],
        "generation": {"max_tokens": 4096, "temperature": 0.7, "hf_token": "hf_abc", "client_secret": "s",
                       "password": "p", "key": "k", "access_token": "t", "stop_token_ids": [1, 2]},
        "nested": {"deep": ({"secret": "x"}, {"authorization": "Basic y"})},
        "empty": {"api_key": None},
    }
    r = redact_secrets(d)
    e = r["endpoints"][0]
    assert e["api_key_env"] == "OPENAI_API_KEY"  # the variable's NAME is not a secret
    assert e["api_key"] == "***" and e["apikey"] == "***"
    assert e["headers"] == {"Authorization": "***", "X-Team": "***"}  # every header value
    assert e["tokens_per_minute"] == 1000.0 and e["url"] == "http://x/v1"
    g = r["generation"]
    assert g["max_tokens"] == 4096 and g["temperature"] == 0.7 and g["stop_token_ids"] == [1, 2]
    for k in ("hf_token", "client_secret", "password", "key", "access_token"):
        assert g[k] == "***", k
    assert r["nested"]["deep"] == [{"secret": "***"}, {"authorization": "***"}]
    assert r["empty"] == {"api_key": None}  # nothing to hide
    assert d["endpoints"][0]["api_key"] == "sk-1"  # the input is not modified
    for secret in ("sk-1", "sk-2", "sk-3", "hf_abc", "Basic y"):
        assert secret not in repr(r)


def test_to_dict_redacts_and_round_trips(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL_YAML))
    plain = cfg.to_dict(redact=False)
    assert "base_dir" not in plain
    assert isinstance(plain["endpoints"], list) and plain["endpoints"][0]["headers"] == {"X-Team": "research"}
    assert from_dict(copy.deepcopy(plain)) == cfg
    # through YAML text too (what a manifest stores)
    assert from_dict(yaml.safe_load(yaml.safe_dump(plain))) == cfg
    red = cfg.to_dict()
    assert red["endpoints"][0]["headers"] == {"X-Team": "***"}
    assert red["endpoints"][0]["api_key_env"] == "VLLM_API_KEY"
    assert red["generation"]["max_tokens"] == 2048
    assert red["endpoints"][0]["tokens_per_minute"] == 2_000_000.0
    red["endpoints"][0]["headers"] = plain["endpoints"][0]["headers"]
    assert red == plain  # nothing else changed


def test_to_dict_round_trip_of_defaults() -> None:
    cfg = from_dict(minimal())
    assert from_dict(cfg.to_dict()) == cfg


def test_dataclasses_construct_directly() -> None:
    cfg = JobConfig(input=InputConfig(path="x.jsonl"), endpoints=(EndpointConfig(url="http://h/v1", model="m"),))
    cfg.check()
    assert cfg.to_dict()["input"]["path"] == "x.jsonl"
