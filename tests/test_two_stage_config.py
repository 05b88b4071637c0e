"""The two-stage recipe's config and input (issue 16): the ``generate:`` section, ``input.columns.messages``,
a Source without a student column, the first stage's ``open_source`` and the pre-flight check of a message
list. Every new config and input message is pinned here."""

from __future__ import annotations

import copy
import dataclasses
import json
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
import yaml

from engine.core.config import (
    ColumnsConfig,
    EndpointConfig,
    GenerateConfig,
    InputConfig,
    JobConfig,
    PricingConfig,
    from_dict,
    is_secret_override,
    load_config,
)
from engine.core.errors import ConfigError, InputError
from engine.preflight import preflight
from engine.source import Prepared, Source
from engine.stages import open_source

ROOT = Path(__file__).resolve().parent.parent
MSG = pa.struct([("role", pa.string()), ("content", pa.string())])
STUDENT = {"url": "http://127.0.0.1:8001/v1", "model": "policy"}
TEACHER = {"url": "http://127.0.0.1:8000/v1", "model": "teacher"}

ISSUE_YAML = """\
input:
  path: prompts.parquet
  columns:
    task: prompt
generate:
  endpoints:
    - url: http://127.0.0.1:8001/v1
      model: my-policy-model
      max_concurrency: 256
  generation: {temperature: 0.7, max_tokens: 2048}
  system_prompt: null
  keep_truncated: false
endpoints:
  - url: http://127.0.0.1:8000/v1
    model: teacher-model
"""


def gen_only(**generate: Any) -> dict[str, Any]:
    """A generation-only config: ``generate:`` with one student endpoint, no top-level endpoints."""
    return {"input": {"path": "in.parquet"}, "generate": {"endpoints": [dict(STUDENT)], **generate}}


def two_stage(**generate: Any) -> dict[str, Any]:
    return {**gen_only(**generate), "endpoints": [dict(TEACHER)]}


def refused(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        from_dict(raw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


# ---------------------------------------------------------------------------- configs that build


def test_a_generation_only_config_builds() -> None:
    cfg = from_dict(gen_only())
    assert cfg.has_generate and not cfg.has_revise and cfg.endpoints == ()
    g = cfg.generate
    assert g is not None
    assert g.endpoints == (EndpointConfig(url="http://127.0.0.1:8001/v1", model="policy"),)
    assert g.generation == {"temperature": 0.7, "max_tokens": 2048}
    assert (g.system_prompt, g.keep_truncated, g.expected_output_tokens) == (None, False, None)
    assert g.pricing == PricingConfig()
    assert (g.max_tokens, g.expected_tokens) == (2048, 2048)
    # the task column keeps its default; there is no student column to read
    assert cfg.input.columns.task_column == "prompt"
    assert cfg.input.columns.student_solution_column(cfg.has_generate) is None


def test_the_issue_example_builds_as_a_two_stage_config(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ISSUE_YAML))
    assert cfg.has_generate and cfg.has_revise
    assert cfg.generate is not None and cfg.generate.endpoints[0].max_concurrency == 256
    assert cfg.generate.endpoints[0].model == "my-policy-model"
    assert [e.model for e in cfg.endpoints] == ["teacher-model"]
    # the revise stage keeps its own defaults (a budget per row); the student has a fixed max_tokens
    assert cfg.generation == {"temperature": 0.7, "max_tokens": "auto"}
    assert cfg.generate.generation == {"temperature": 0.7, "max_tokens": 2048}


def test_every_generate_key(tmp_path: Path) -> None:
    cfg = from_dict(two_stage(generation={"temperature": 1.0, "max_tokens": 512, "top_p": 0.95},
                              system_prompt="You are a helpful assistant.", keep_truncated=True,
                              expected_output_tokens=300,
                              pricing={"input_per_million": 0.1, "output_per_million": 0.4}))
    g = cfg.generate
    assert g == GenerateConfig(
        endpoints=(EndpointConfig(url="http://127.0.0.1:8001/v1", model="policy"),),
        generation={"temperature": 1.0, "max_tokens": 512, "top_p": 0.95},
        system_prompt="You are a helpful assistant.", keep_truncated=True, expected_output_tokens=300,
        pricing=PricingConfig(input_per_million=0.1, output_per_million=0.4))
    assert g is not None and (g.max_tokens, g.expected_tokens) == (512, 300)


def test_student_generation_keys_add_to_its_defaults_and_null_removes_one() -> None:
    g = from_dict(gen_only(generation={"seed": 7})).generate
    assert g is not None and g.generation == {"temperature": 0.7, "max_tokens": 2048, "seed": 7}
    g = from_dict(gen_only(generation={"temperature": None})).generate
    assert g is not None and g.generation == {"max_tokens": 2048}


def test_a_generate_section_with_its_own_mixed_models_follows_run_allow_mixed_models() -> None:
    eps = [dict(STUDENT), {"url": "http://127.0.0.1:8002/v1", "model": "other"}]
    assert refused(gen_only(endpoints=eps)) == (
        "generate.endpoints serve different models (other, policy); set run.allow_mixed_models: true if that is "
        "intended")
    cfg = from_dict({**gen_only(endpoints=eps), "run": {"allow_mixed_models": True}})
    assert cfg.generate is not None and len(cfg.generate.endpoints) == 2


def test_student_and_teacher_may_serve_different_models() -> None:
    cfg = from_dict(two_stage())  # the mixed-models rule is per stage
    assert cfg.generate is not None and cfg.generate.endpoints[0].model != cfg.endpoints[0].model


def test_a_config_round_trips_through_to_dict() -> None:
    cfg = from_dict(two_stage(system_prompt="Be brief.", pricing={"input_per_million": 1, "output_per_million": 2}))
    plain = cfg.to_dict(redact=False)
    assert plain["generate"]["endpoints"] == [{**plain["generate"]["endpoints"][0], **STUDENT}]
    assert from_dict(copy.deepcopy(plain)) == cfg
    assert from_dict(yaml.safe_load(yaml.safe_dump(plain))) == cfg
    revise_only = from_dict({"input": {"path": "in.parquet"}, "endpoints": [dict(TEACHER)]})
    assert revise_only.to_dict()["generate"] is None and from_dict(revise_only.to_dict()) == revise_only


def test_dataclasses_construct_directly() -> None:
    cfg = JobConfig(input=InputConfig(path="x.jsonl", columns=ColumnsConfig(messages="chosen[:-1]")),
                    generate=GenerateConfig(endpoints=(EndpointConfig(url="http://h/v1", model="m"),)))
    cfg.check()
    assert cfg.has_generate and not cfg.has_revise
    assert (cfg.input.columns.task_column, cfg.input.columns.student_solution_column(True)) == (None, None)


# ---------------------------------------------------------------------------- every message


@pytest.mark.parametrize(("generate", "message"), [
    ({"endpoints": []}, "generate.endpoints: at least one endpoint is required (url + model)"),
    ({"endpoints": [{"url": "127.0.0.1:8001", "model": "p"}]},
     "generate.endpoints[0].url must be an http(s) URL ending in /v1, e.g. http://127.0.0.1:8000/v1"),
    ({"endpoints": [dict(STUDENT), {"url": "http://h/v1", "model": ""}]},
     "generate.endpoints[1].model is required (the model name the endpoint serves)"),
    ({"endpoints": [dict(STUDENT), dict(STUDENT)]},
     "generate.endpoints: two endpoints have the same url/name; give each a distinct name"),
    ({"generation": {"max_tokens": "auto"}},
     "generate.generation.max_tokens: auto is for the revise stage (its budget follows the student answer); "
     "give the student a positive integer, e.g. 2048"),
    ({"generation": {"max_tokens": None}},
     "generate.generation.max_tokens must be a positive integer (it bounds every student answer), e.g. 2048"),
    ({"generation": {"max_tokens": 0}},
     "generate.generation.max_tokens must be a positive integer (it bounds every student answer), e.g. 2048"),
    ({"generation": {"max_tokens": True}},
     "generate.generation.max_tokens must be a positive integer (it bounds every student answer), e.g. 2048"),
    ({"generation": {"max_tokens": 2.5}},
     "generate.generation.max_tokens must be a positive integer (it bounds every student answer), e.g. 2048"),
    ({"generation": {"temperature": -1}}, "generate.generation.temperature must be a number >= 0"),
    ({"generation": {"model": "x"}},
     "generate.generation: 'messages', 'model' and 'stream' are set by the engine; remove them"),
    ({"generation": {"extra_body": {"a": 1}}},
     "generate.generation.extra_body would reach the server as one unknown field; write its keys directly under "
     "generate.generation (or under generate.endpoints[N].extra_body for one endpoint)"),
    ({"expected_output_tokens": 0},
     "generate.expected_output_tokens must be >= 1 (tokens), or null to assume generate.generation.max_tokens"),
    ({"system_prompt": "  \n"},
     "generate.system_prompt is empty; give the system message's text, or null for none"),
])
def test_generate_checks(generate: dict[str, Any], message: str) -> None:
    assert refused(gen_only(**generate)) == message
    assert refused(two_stage(**generate)) == message


def test_generate_keys_are_checked_by_name_and_type() -> None:
    assert refused(gen_only(endpoint=[])).startswith(
        "unknown config key generate.endpoint; known keys here: endpoints, expected_output_tokens, generation, "
        "keep_truncated, pricing, system_prompt")
    assert refused(gen_only(keep_truncated="no")) == "generate.keep_truncated must be true or false, got 'no'"
    assert refused({**gen_only(), "generate": ["x"]}) == "generate must be a mapping (key: value), got list"


def test_an_empty_generate_section_needs_endpoints() -> None:
    raw = {"input": {"path": "in.parquet"}, "generate": {}}
    assert refused(raw) == "generate.endpoints: at least one endpoint is required (url + model)"


def test_without_generate_the_top_level_endpoints_are_required() -> None:
    raw = {"input": {"path": "in.parquet"}, "generate": None}
    assert refused(raw) == "endpoints: at least one endpoint is required (url + model)"


def test_top_level_endpoints_given_with_generate_are_still_checked() -> None:
    raw = {**gen_only(), "endpoints": [{"url": "ftp://x", "model": "t"}]}
    assert refused(raw).startswith("endpoints[0].url must be an http(s) URL")


def test_messages_without_generate() -> None:
    raw = {"input": {"path": "in.parquet", "columns": {"messages": "chosen[:-1]"}}, "endpoints": [dict(TEACHER)]}
    assert refused(raw) == (
        "input.columns.messages needs a generate: section (the student answers the conversation); without one, "
        "set input.columns.task to the prompt's text column")


def test_student_solution_with_generate() -> None:
    raw = two_stage()
    raw["input"]["columns"] = {"student_solution": "rejected[1].content"}
    msg = ("input.columns.student_solution cannot be used with generate: the generate stage writes the student "
           "answers; remove input.columns.student_solution or the generate: section")
    assert refused(raw) == msg
    raw = gen_only()
    raw["input"]["columns"] = {"student_solution": "rejected[1].content"}
    assert refused(raw) == msg


def test_task_and_messages_both_set() -> None:
    raw = two_stage()
    raw["input"]["columns"] = {"task": "prompt", "messages": "chosen[:-1]"}
    assert refused(raw) == ("input.columns.task and input.columns.messages are both set; give one of them "
                            "(task: a text column, messages: a chat message list)")


# ---------------------------------------------------------------------------- budgets


PRICES = {"input_per_million": 1.0, "output_per_million": 2.0}


def test_a_generation_only_budget_uses_the_students_prices() -> None:
    raw = {**gen_only(), "budget": {"max_usd": 5}, "pricing": PRICES}  # top-level prices: the teacher's
    assert refused(raw) == (
        "budget.max_usd needs prices: set generate.pricing.input_per_million and generate.pricing.output_per_million "
        "(USD per million tokens), or use budget.max_output_tokens for an endpoint without prices")
    cfg = from_dict({**gen_only(pricing=PRICES), "budget": {"max_usd": 5}})
    assert cfg.budget.max_usd == 5.0
    # an output-token budget needs no prices: the student's max_tokens bounds every answer
    assert from_dict({**gen_only(), "budget": {"max_output_tokens": 1000}}).budget.max_output_tokens == 1000


def test_a_two_stage_budget_needs_both_stages_prices() -> None:
    raw = {**two_stage(), "budget": {"max_usd": 5}, "pricing": PRICES}
    assert refused(raw).startswith("budget.max_usd needs prices: set generate.pricing.input_per_million")
    raw = {**two_stage(pricing=PRICES), "budget": {"max_usd": 5}}
    assert refused(raw).startswith("budget.max_usd needs prices: set pricing.input_per_million")
    cfg = from_dict({**two_stage(pricing=PRICES), "budget": {"max_usd": 5}, "pricing": PRICES})
    assert cfg.budget.max_usd == 5
    cfg.check_budget()
    # the budget check a resumed run repeats (on the config it runs with) covers both stages
    with pytest.raises(ConfigError, match=r"^budget\.max_usd needs prices: set generate\.pricing\."):
        dataclasses.replace(cfg, generate=dataclasses.replace(cfg.generate, pricing=PricingConfig())).check_budget()


def test_negative_student_prices_are_refused_with_a_budget() -> None:
    raw = {**gen_only(pricing={"input_per_million": -1, "output_per_million": 2}), "budget": {"max_usd": 5}}
    assert refused(raw) == ("generate.pricing.input_per_million and generate.pricing.output_per_million must be "
                            ">= 0")


# ---------------------------------------------------------------------------- overrides and secrets


def test_overrides_reach_the_generate_section(tmp_path: Path) -> None:
    p = write(tmp_path, ISSUE_YAML)
    cfg = load_config(p, ["generate.endpoints.0.url=http://10.0.0.5:9000/v1", "generate.generation.max_tokens=512",
                          "generate.endpoints.1.url=http://10.0.0.6:9000/v1",
                          "generate.endpoints.1.model=my-policy-model", "generate.keep_truncated=true"])
    g = cfg.generate
    assert g is not None
    assert [e.url for e in g.endpoints] == ["http://10.0.0.5:9000/v1", "http://10.0.0.6:9000/v1"]
    assert g.generation == {"temperature": 0.7, "max_tokens": 512} and g.keep_truncated is True
    with pytest.raises(ConfigError, match=r"^generate\.generation\.max_tokens: auto is for the revise stage"):
        load_config(p, ["generate.generation.max_tokens=auto"])


def test_overrides_can_add_a_generate_section(tmp_path: Path) -> None:
    p = write(tmp_path, """\
        input: {path: in.parquet}
        endpoints:
          - {url: "http://127.0.0.1:8000/v1", model: teacher}
        """)
    assert not load_config(p).has_generate
    cfg = load_config(p, ["generate.endpoints.0.url=http://127.0.0.1:8001/v1", "generate.endpoints.0.model=policy"])
    assert cfg.has_generate and cfg.has_revise
    assert cfg.generate is not None and cfg.generate.endpoints[0].model == "policy"


def test_secrets_under_generate_endpoints_are_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLICY_KEY", "sk-policy-secret")
    raw = gen_only(endpoints=[{**STUDENT, "api_key_env": "POLICY_KEY",
                               "headers": {"Authorization": "Bearer sk-header-secret", "X-Team": "research"}}])
    cfg = from_dict(raw)
    red = cfg.to_dict()
    e = red["generate"]["endpoints"][0]
    assert e["headers"] == {"Authorization": "***", "X-Team": "***"}
    assert e["api_key_env"] == "POLICY_KEY"  # the variable's NAME, not its value
    assert "sk-header-secret" not in json.dumps(red) and "sk-policy-secret" not in json.dumps(red)
    assert cfg.generate is not None and cfg.generate.endpoints[0].api_key() == "sk-policy-secret"
    assert is_secret_override("generate.endpoints.0.headers.Authorization=Bearer sk-x")
    assert not is_secret_override("generate.endpoints.0.url=http://h/v1")


# ---------------------------------------------------------------------------- inputs


def uf_table(n: int) -> pa.Table:
    """UltraFeedback-shaped rows: prompt, chosen / rejected = [user turn, assistant turn]."""
    def conv(i: int, who: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"task {i}"}, {"role": "assistant", "content": f"{who} {i}"}]

    schema = pa.schema([("prompt", pa.string()), ("chosen", pa.list_(MSG)), ("rejected", pa.list_(MSG))])
    return pa.Table.from_pylist([{"prompt": f"task {i}", "chosen": conv(i, "good"), "rejected": conv(i, "bad")}
                                 for i in range(n)], schema=schema)


def write_uf(path: Path, n: int, **kw: Any) -> Path:
    pq.write_table(uf_table(n), path, **kw)
    return path


def messages_source(tmp_path: Path, convs: list[Any], path: str = "m", **kw: Any) -> Source:
    """A Parquet input whose column ``m`` holds ``convs`` (list<struct<role, content>>)."""
    p = tmp_path / "conv.parquet"
    pq.write_table(pa.table({"m": pa.array(convs, pa.list_(MSG))}), p)
    return Source(path=str(p), messages=path, student_solution=None, **kw)


def prepared(src: Source) -> Prepared:
    (b,) = list(src.batches())
    return b


def u(c: str | None) -> dict[str, str | None]:
    return {"role": "user", "content": c}


def a(c: str | None) -> dict[str, str | None]:
    return {"role": "assistant", "content": c}


def test_messages_of_one_user_turn_give_its_text(tmp_path: Path) -> None:
    b = prepared(messages_source(tmp_path, [[u("What is 2+2?")], [u("  Say hi  ")]]))
    assert b.tasks == ["What is 2+2?", "  Say hi  "]
    assert b.messages == [[{"role": "user", "content": "What is 2+2?"}], [{"role": "user", "content": "  Say hi  "}]]
    assert b.solutions == [None, None]


def test_a_slice_drops_the_final_answer(tmp_path: Path) -> None:
    src = Source(path=str(write_uf(tmp_path / "uf.parquet", 3)), messages="chosen[:-1]", student_solution=None)
    b = prepared(src)
    assert b.tasks == ["task 0", "task 1", "task 2"]
    assert b.messages == [[{"role": "user", "content": f"task {i}"}] for i in range(3)]
    assert b.solutions == [None] * 3 and b.row_ids == [0, 1, 2]


def test_multi_turn_conversations_are_written_as_turns(tmp_path: Path) -> None:
    conv = [{"role": "system", "content": "Be terse."}, u("Hi"), a("Hello!"), u("Name a prime."), a("7")]
    b = prepared(messages_source(tmp_path, [conv], path="m[:-1]"))
    assert b.tasks == ["System: Be terse.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: Name a prime."]
    assert b.messages == [conv[:-1]]
    b = prepared(messages_source(tmp_path, [conv, conv[:2]], path="m[:4]"))  # [:N]: the first N messages
    assert b.tasks == ["System: Be terse.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: Name a prime.",
                       "System: Be terse.\n\nUser: Hi"]
    assert b.messages == [conv[:4], conv[:2]]


def test_invalid_conversations_give_no_task(tmp_path: Path) -> None:
    good = [u("q"), a("x")]
    convs = [
        good,                       # valid after [:-1]
        None,                       # null list
        [],                         # empty list
        [u("q")],                   # nothing left after the slice
        [u("q"), a("x"), a("y")],   # ends in an assistant turn after the slice
        [u("  "), a("x")],          # blank content
        [u(None), a("x")],          # null content
        [{"role": None, "content": "q"}, a("x")],  # null role
        [a("earlier"), u(""), a("x")],  # an empty user turn
        [None, u("q"), a("x")],     # a null message
        [{"role": "system", "content": "s"}, u("q2"), a("x")],  # valid
    ]
    b = prepared(messages_source(tmp_path, convs, path="m[:-1]"))
    assert b.tasks == ["q", None, None, None, None, None, None, None, None, None, "System: s\n\nUser: q2"]
    assert b.messages == [[u("q")], None, None, None, None, None, None, None, None, None,
                          [{"role": "system", "content": "s"}, u("q2")]]


def test_a_null_list_that_spans_values_is_still_null(tmp_path: Path) -> None:
    # Arrow lets a null list entry cover child values; an IPC file keeps them as they are
    vals = pa.array([u("hidden"), u("q")], MSG)
    arr = pa.ListArray.from_arrays(pa.array([0, 1, 2], pa.int32()), vals, mask=pa.array([True, False]))
    p = tmp_path / "in.arrow"
    with ipc.new_file(p, pa.schema([("m", arr.type)])) as w:
        w.write_batch(pa.record_batch([arr], names=["m"]))
    b = prepared(Source(path=str(p), messages="m", student_solution=None))
    assert (b.tasks, b.messages) == ([None, "q"], [None, [u("q")]])


def test_other_struct_fields_are_not_part_of_a_message(tmp_path: Path) -> None:
    t = pa.struct([("content", pa.large_string()), ("name", pa.string()), ("role", pa.large_string())])
    p = tmp_path / "in.parquet"
    pq.write_table(pa.table({"m": pa.array([[{"role": "user", "content": "q", "name": "ann"}]], pa.large_list(t))}),
                   p)
    b = prepared(Source(path=str(p), messages="m", student_solution=None))
    assert (b.tasks, b.messages) == (["q"], [[{"role": "user", "content": "q"}]])


def test_messages_in_a_nested_path_and_in_json_lines_read_in_small_batches(tmp_path: Path) -> None:
    p = tmp_path / "in.jsonl"
    data = [{"id": f"r{i}", "rec": {"conv": [u(f"q{i}"), a(f"a{i}")]}} for i in range(7)]
    data[3]["rec"]["conv"] = [a("only an answer")]
    p.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    src = Source(path=str(p), messages="rec.conv[:-1]", student_solution=None, id_column="id", batch_rows=2)
    batches = list(src.batches())
    assert [len(b.row_ids) for b in batches] == [2, 2, 2, 1]
    assert [t for b in batches for t in b.tasks] == ["q0", "q1", "q2", None, "q4", "q5", "q6"]
    assert [m for b in batches for m in b.messages or []][4] == [u("q4")]


def test_a_task_source_has_no_messages_and_a_source_without_a_student_column_has_no_solutions(tmp_path: Path) -> None:
    p = write_uf(tmp_path / "uf.parquet", 2)
    b = prepared(Source(path=str(p)))
    assert b.messages is None and b.solutions == ["bad 0", "bad 1"]
    b = prepared(Source(path=str(p), student_solution=None))
    assert b.tasks == ["task 0", "task 1"] and b.solutions == [None, None] and b.messages is None
    assert Prepared([1], ["t"], ["s"], None).messages is None  # older constructors keep working


@pytest.mark.parametrize(("path", "message"), [
    ("prompt", "input.columns.messages 'prompt': 'prompt' is string, not a list of chat messages "
               "(list<struct<role: string, content: string>>); point input.columns.messages at such a column "
               "(e.g. chosen[:-1]), or use input.columns.task for a text prompt"),
    ("chosen[0]", "input.columns.messages 'chosen[0]': 'chosen[0]' is struct<role: string, content: string>, not "
                  "a list of chat messages"),
    ("tags", "input.columns.messages 'tags': 'tags' is list<element: string>, not a list of chat messages"),
    ("nocontent[:-1]", "input.columns.messages 'nocontent[:-1]': 'nocontent' is list<element: struct<role: string, "
                       "text: string>>, not a list of chat messages"),
    ("introle", "input.columns.messages 'introle': 'introle' is list<element: struct<role: int64, content: string>>, "
                "not a list of chat messages"),
    ("missing[:-1]", "input column 'missing' (from input.columns.messages: missing) not found"),
    ("chosen[1:]", "input.columns.messages 'chosen[1:]': cannot read the path at '[1:]'; use .field and [index] "
                   "steps, and at the end an optional [:N] or [:-N] slice"),
    ("[:-1]", "input.columns.messages '[:-1]' is not a column path; use e.g. messages or chosen[:-1]"),
])
def test_a_path_that_is_not_a_message_list_is_refused(tmp_path: Path, path: str, message: str) -> None:
    p = tmp_path / "in.parquet"
    pq.write_table(pa.table({
        "prompt": ["q"],
        "chosen": pa.array([[u("q"), a("x")]], pa.list_(MSG)),
        "tags": [["a"]],
        "nocontent": pa.array([[{"role": "user", "text": "q"}]]),
        "introle": pa.array([[{"role": 1, "content": "q"}]]),
    }), p)
    with pytest.raises(InputError) as e:
        Source(path=str(p), messages=path, student_solution=None)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_task_and_messages_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^input\.columns\.task and input\.columns\.messages are both set"):
        Source(path=str(write_uf(tmp_path / "uf.parquet", 1)), task="prompt", messages="chosen[:-1]")


# ---------------------------------------------------------------------------- fingerprints and open_source


V1 = ROOT / "tests" / "fixtures" / "format_v1"
V1_INPUT_FP = {"files": "3422dad4ee8f0062c0e14f7d", "task": "prompt", "student_solution": "rejected[1].content",
               "id_column": None}


def v1_config(**columns: Any) -> JobConfig:
    raw = yaml.safe_load((V1 / "job.yaml").read_text())
    raw["output"]["dir"] = "elsewhere"
    if columns:
        raw["input"]["columns"] = columns
    return from_dict(raw, base_dir=str(V1))


def test_revise_only_fingerprints_are_unchanged() -> None:
    # the fingerprint stored by a run made before the generate stage existed: the run must resume
    stored = json.loads((V1 / "run_v1" / "manifest.json").read_text())["fingerprint"]["input"]
    assert stored == V1_INPUT_FP
    assert open_source(v1_config()).fingerprint() == V1_INPUT_FP
    spelled = v1_config(task="prompt", student_solution="rejected[1].content")
    assert open_source(spelled).fingerprint() == V1_INPUT_FP
    assert list(open_source(spelled).fingerprint()) == list(V1_INPUT_FP)  # same keys, same order
    other = open_source(v1_config(student_solution="rejected[-1].content")).fingerprint()
    assert other == {**V1_INPUT_FP, "student_solution": "rejected[-1].content"}


def test_the_first_stage_of_a_generate_run_reads_no_student_column(tmp_path: Path) -> None:
    p = write_uf(tmp_path / "uf.parquet", 4)
    cfg = from_dict({**two_stage(), "input": {"path": str(p)}, "output": {"dir": str(tmp_path / "run")}})
    src = open_source(cfg)
    assert src.sol_path is None and src.task_path is not None and src.messages_path is None
    fp = src.fingerprint()
    assert set(fp) == {"files", "task", "id_column"} and fp["task"] == "prompt"
    assert prepared(src).solutions == [None] * 4
    # a generation-only run reads its input the same way
    cfg = from_dict({**gen_only(), "input": {"path": str(p)}, "output": {"dir": str(tmp_path / "run")}})
    assert open_source(cfg).fingerprint() == fp


def test_the_first_stage_reads_messages_when_configured(tmp_path: Path) -> None:
    p = write_uf(tmp_path / "uf.parquet", 2)
    raw = {**gen_only(), "input": {"path": str(p), "columns": {"messages": "chosen[:-1]"}, "id_column": None},
           "output": {"dir": str(tmp_path / "run")}}
    src = open_source(from_dict(raw))
    assert src.task_path is None and src.sol_path is None
    fp = src.fingerprint()
    assert set(fp) == {"files", "messages", "id_column"} and fp["messages"] == "chosen[:-1]"
    b = prepared(src)
    assert b.tasks == ["task 0", "task 1"] and b.messages == [[u("task 0")], [u("task 1")]]
    raw["input"]["columns"] = {"messages": "chosen[:1]"}  # another slice: another fingerprint
    assert open_source(from_dict(raw)).fingerprint()["messages"] == "chosen[:1]"


# ---------------------------------------------------------------------------- preflight


def test_preflight_of_a_messages_source(tmp_path: Path) -> None:
    p = write_uf(tmp_path / "uf.parquet", 300, row_group_size=100)
    rep = preflight(Source(path=str(p), messages="chosen[:-1]", student_solution=None))
    assert (rep.rows, rep.sampled_rows) == (300, 300)
    j = tmp_path / "uf.jsonl"
    j.write_text("".join(json.dumps(r) + "\n" for r in uf_table(50).to_pylist()), encoding="utf-8")
    rep = preflight(Source(path=str(j), messages="chosen[:-1]", student_solution=None, batch_rows=16))
    assert (rep.rows, rep.sampled_rows) == (50, 16)  # the sample stops at the first batch with a usable row


def test_preflight_of_a_source_without_a_student_column(tmp_path: Path) -> None:
    p = write_uf(tmp_path / "uf.parquet", 20)
    rep = preflight(Source(path=str(p), student_solution=None))
    assert (rep.rows, rep.sampled_rows) == (20, 20)
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"prompt": [" ", ""]}), empty)
    with pytest.raises(InputError, match=r"^input\.columns\.task 'prompt' is empty in all 2 sampled rows"):
        preflight(Source(path=str(empty), student_solution=None))


def test_preflight_refuses_conversations_that_never_end_in_a_user_turn(tmp_path: Path) -> None:
    p = write_uf(tmp_path / "uf.parquet", 30)
    with pytest.raises(InputError) as e:
        preflight(Source(path=str(p), messages="chosen", student_solution=None))
    assert str(e.value) == (
        f"input.columns.messages 'chosen' gives no usable conversation in all 30 sampled rows of {p}: no "
        "conversation ends in a user turn (they end in: assistant); the student answers the user's last message: "
        "use chosen[:-1] to drop the final answer")
    with pytest.raises(InputError) as e:
        preflight(Source(path=str(p), messages="chosen[:2]", student_solution=None))
    assert str(e.value).endswith("(they end in: assistant); the student answers the user's last message: point "
                                 "input.columns.messages (or its slice) at the conversation up to the user's turn")


def test_preflight_refuses_empty_and_blank_conversations(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        preflight(messages_source(tmp_path, [[u("q")], None, []], path="m[:-1]"))
    assert str(e.value) == (
        f"input.columns.messages 'm[:-1]' gives no usable conversation in all 3 sampled rows of "
        f"{tmp_path / 'conv.parquet'}: every message list is null or empty after the slice; point "
        "input.columns.messages at a column of chat messages")
    with pytest.raises(InputError) as e:
        preflight(messages_source(tmp_path, [[u(" ")], [a("x")], [u(None)]]))
    assert str(e.value).endswith(
        "gives no usable conversation in all 3 sampled rows of " + str(tmp_path / "conv.parquet") + ": each "
        "conversation that ends in a user turn has a message whose role or content is null, empty or "
        "whitespace-only; fix those messages")


def test_preflight_passes_when_some_rows_are_usable(tmp_path: Path) -> None:
    rep = preflight(messages_source(tmp_path, [[a("x")], None, [u("q")]]))
    assert rep.sampled_rows == 3
