"""Per-endpoint request shaping (issue 15): ``extra_body``, ``system_role: false`` and Azure OpenAI.

The body of each shape, the headers and URL an endpoint is built with, the request fingerprint (new keys
only when set: old runs still resume), the Azure request over HTTP (path, ``api-version`` query, ``api-key``
header, no ``Authorization``) and whole runs against the bundled mock and an Azure-like server."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from helpers import ROOT, assert_exactly_once, clair, make_input, write_config

from engine.client import http_transport
from engine.core.config import JobConfig, from_dict, load_config
from engine.core.errors import StartupError
from engine.core.types import Message, WorkItem
from engine.dispatch import Endpoint, fold_system
from engine.prompts import builtin_template, render
from engine.runner.startup import make_endpoints, startup_check
from engine.stages import keep_run_max_tokens, load_prompt, make_fingerprint, open_source
from engine.store import manifest as mf
from engine.tools.mockserver import build_answer, mock_revision
from engine.tools.mockserver.protocol import extract_solution, read_prompt
from engine.tools.mockserver_proc import MockProcess

GEN = {"temperature": 0.7, "max_tokens": 4096}
SYSTEM, USER = "You are a teacher.", "{task}: T\n\n{student_solution}: S"


def _item(messages: list[Message]) -> WorkItem:
    return WorkItem(row_id=0, task="T", student_solution="S", messages=messages, prompt_tokens_est=10, extra={})


def _ep(**kw: Any) -> Endpoint:
    return Endpoint(name="e", url="http://e/v1", model="m", headers={}, generation=dict(GEN), max_concurrency=4, **kw)


def _cfg(*endpoints: dict[str, Any], **sections: Any) -> JobConfig:
    sections.setdefault("generation", {"max_tokens": 4096})  # a fixed budget: it stays in the body's prefix
    return from_dict({"input": {"path": "in.jsonl"}, "endpoints": list(endpoints), **sections})


def _e(**kw: Any) -> dict[str, Any]:
    return {"url": "http://127.0.0.1:8000/v1", "model": "m", **kw}


# ---------------------------------------------------------------------------- the body


def test_default_body_is_byte_for_byte_what_it_was() -> None:
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    assert _ep().body(_item(msgs)) == orjson.dumps({"model": "m", **GEN, "messages": msgs})
    assert _ep(extra_body={}, system_role=True).body(_item(msgs)) == _ep().body(_item(msgs))


def test_extra_body_is_merged_over_generation() -> None:
    extra = {"top_k": 20, "chat_template_kwargs": {"enable_thinking": False}, "repetition_penalty": 1.05,
             "temperature": 0.2}
    body = orjson.loads(_ep(extra_body=extra).body(_item([{"role": "user", "content": USER}])))
    assert body == {"model": "m", "temperature": 0.2, "max_tokens": 4096, "top_k": 20,
                    "chat_template_kwargs": {"enable_thinking": False}, "repetition_penalty": 1.05,
                    "messages": [{"role": "user", "content": USER}]}


def test_extra_body_null_drops_a_generation_key_for_that_endpoint_only() -> None:
    body = orjson.loads(_ep(extra_body={"temperature": None}).body(_item([{"role": "user", "content": "x"}])))
    assert body == {"model": "m", "max_tokens": 4096, "messages": [{"role": "user", "content": "x"}]}
    assert "temperature" in orjson.loads(_ep().body(_item([{"role": "user", "content": "x"}])))


def test_extra_body_with_integer_keys_inside_is_sent_as_json() -> None:
    body = orjson.loads(_ep(extra_body={"logit_bias": {50256: -100}}).body(_item([{"role": "user", "content": "x"}])))
    assert body["logit_bias"] == {"50256": -100}


def test_system_role_false_folds_the_system_text_into_the_first_user_message() -> None:
    msgs = render(builtin_template("distilabel"), "What is 2+2?", "It is 5.")
    assert [m["role"] for m in msgs] == ["system", "user"]
    body = orjson.loads(_ep(system_role=False).body(_item(msgs)))
    assert body["messages"] == [{"role": "user", "content": msgs[0]["content"] + "\n\n" + msgs[1]["content"]}]
    assert [m["role"] for m in msgs] == ["system", "user"]  # the row's own messages are left as rendered
    # the folded message is the contextualai layout (instruction + blank line + body), bar its last newlines
    ctx = render(builtin_template("contextualai"), "What is 2+2?", "It is 5.")
    assert ctx[1]["content"] == body["messages"][0]["content"] + "\n\n"


def test_fold_system_cases() -> None:
    user = {"role": "user", "content": USER}
    assert fold_system([{"role": "system", "content": ""}, user]) == [user]  # empty system: dropped
    assert fold_system([user]) == [user]  # nothing to fold
    assert fold_system([]) == []
    many = [{"role": "system", "content": "S"}, {"role": "assistant", "content": "A"}, user, {"role": "user",
                                                                                            "content": "U2"}]
    assert fold_system(many) == [{"role": "assistant", "content": "A"}, {"role": "user", "content": "S\n\n" + USER},
                                 {"role": "user", "content": "U2"}]
    assert fold_system([{"role": "system", "content": "S"}]) == [{"role": "user", "content": "S"}]


def test_the_mock_finds_the_solution_in_a_folded_message() -> None:
    msgs = fold_system(render(builtin_template("distilabel"), "Say hi.", "Hello, wrold!"))
    _, last_user = read_prompt(msgs)
    assert extract_solution(last_user) == "Hello, wrold!"


# ---------------------------------------------------------------------------- endpoints from the config


def test_make_endpoints_passes_extra_body_and_system_role(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K1", "sk-plain")
    cfg = _cfg(_e(name="a", api_key_env="K1", extra_body={"top_k": 5}, system_role=False), _e(name="b"))
    a, b = make_endpoints(cfg, 4096)
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert orjson.loads(a.body(_item(msgs))) == {"model": "m", **GEN, "top_k": 5,
                                                 "messages": [{"role": "user", "content": "S\n\nU"}]}
    assert orjson.loads(b.body(_item(msgs))) == {"model": "m", **GEN, "messages": msgs}
    assert a.headers["Authorization"] == "Bearer sk-plain" and "api-key" not in a.headers
    assert a.url == "http://127.0.0.1:8000/v1"


def test_make_endpoints_for_azure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZ_KEY", "az-secret")
    url = "https://res.openai.azure.com/openai/deployments/gpt-4o/"
    (ep,) = make_endpoints(_cfg({"url": url, "model": "gpt-4o", "api_key_env": "AZ_KEY",
                                 "azure": {"api_version": "2024-10-21"}}), 4096)
    assert ep.headers == {"Content-Type": "application/json", "api-key": "az-secret"}
    assert ep.url == "https://res.openai.azure.com/openai/deployments/gpt-4o?api-version=2024-10-21"


# ---------------------------------------------------------------------------- the fingerprint


def _fp(cfg: JobConfig, tmp_path: Path) -> dict[str, Any]:
    inp = tmp_path / "in.jsonl"
    if not inp.exists():
        inp.write_text('{"prompt": "t", "rejected": [{"content": "u"}, {"content": "s"}]}\n')
    cfg = dataclasses.replace(cfg, input=dataclasses.replace(cfg.input, path=str(inp)))
    return make_fingerprint(cfg, open_source(cfg), load_prompt(cfg))


def test_fingerprint_changes_with_extra_body_and_system_role_only_when_they_are_set(tmp_path: Path) -> None:
    plain = _fp(_cfg(_e()), tmp_path)
    assert "shaping" not in plain
    assert _fp(_cfg(_e(extra_body={}, system_role=True)), tmp_path) == plain  # the keys at their defaults
    # not part of it: Azure's api_version, URLs, names, replicas with a shape already listed
    assert _fp(_cfg(_e(azure={"api_version": "2024-10-21"})), tmp_path) == plain
    top_k = _fp(_cfg(_e(extra_body={"top_k": 20})), tmp_path)
    assert top_k["shaping"] == [{"model": "m", "extra_body": {"top_k": 20}}]
    assert _fp(_cfg(_e(extra_body={"top_k": 20}), _e(url="http://h2/v1", extra_body={"top_k": 20})),
               tmp_path) == top_k
    no_sys = _fp(_cfg(_e(system_role=False)), tmp_path)
    assert no_sys["shaping"] == [{"model": "m", "system_role": False}]
    hashes = {mf.fingerprint_hash(fp) for fp in (plain, top_k, no_sys, _fp(_cfg(_e(extra_body={"top_k": 40})),
                                                                         tmp_path))}
    assert len(hashes) == 4
    # one shaped endpoint among plain ones: both shapes, in a stable order whatever the endpoints' order
    mixed = _fp(_cfg(_e(system_role=False), _e(url="http://h2/v1")), tmp_path)
    assert mixed["shaping"] == [{"model": "m", "system_role": False}, {"model": "m"}]
    assert _fp(_cfg(_e(url="http://h2/v1"), _e(system_role=False)), tmp_path) == mixed


def test_the_format_v1_run_keeps_its_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    """An old run directory's fingerprint, computed by today's code from its job.yaml: equal (it resumes),
    also with the new keys written out at their defaults."""
    fixture = ROOT / "tests" / "fixtures" / "format_v1"
    manifest = orjson.loads((fixture / "run_v1" / "manifest.json").read_bytes())
    monkeypatch.chdir(fixture)
    for extra in ([], ["endpoints.0.extra_body={}", "endpoints.0.system_role=true"]):
        cfg, _ = keep_run_max_tokens(load_config("job.yaml", extra), manifest["fingerprint"])  # as a resume does
        fp = make_fingerprint(cfg, open_source(cfg), load_prompt(cfg))
        assert mf.fingerprint_hash(fp) == manifest["fingerprint_hash"]
    cfg, _ = keep_run_max_tokens(load_config("job.yaml", ["endpoints.0.system_role=false"]), manifest["fingerprint"])
    assert mf.fingerprint_hash(make_fingerprint(cfg, open_source(cfg), load_prompt(cfg))) != manifest[
        "fingerprint_hash"]


# ---------------------------------------------------------------------------- whole runs against the mock


def test_a_run_with_extra_body_and_no_system_role_against_the_mock(tmp_path: Path, mock: MockProcess) -> None:
    rows = 120
    inp = make_input(tmp_path, rows)
    shaped = {"url": mock.url, "model": "mock-clair", "max_concurrency": 16, "system_role": False,
              "extra_body": {"top_k": 20, "chat_template_kwargs": {"enable_thinking": False},
                             "repetition_penalty": 1.05}}
    cfg = write_config(tmp_path, mock.url, inp, endpoints=[shaped], input={"path": str(inp), "limit": 60})
    r = clair("run", str(cfg))
    assert r.returncode == 0, r.stderr
    run = tmp_path / "run"
    t = pq.read_table(run / "data", columns=["student_solution", "revision", "status"])
    assert t.num_rows == 60 and set(t.column("status").to_pylist()) == {"ok"}
    assert t.column("revision").to_pylist() == [mock_revision(s) for s in t.column("student_solution").to_pylist()]
    manifest = orjson.loads((run / "manifest.json").read_bytes())
    assert manifest["fingerprint"]["shaping"] == [{"model": "mock-clair", "extra_body": shaped["extra_body"],
                                                   "system_role": False}]
    # changing the shaping would mix answers: refused; the same shaping resumes to completion
    other = write_config(tmp_path, mock.url, inp, endpoints=[{**shaped, "system_role": True}])
    r = clair("run", str(other))
    assert r.returncode != 0 and "holds a run made with different settings" in r.stderr
    cfg = write_config(tmp_path, mock.url, inp, endpoints=[shaped])
    r = clair("run", str(cfg))
    assert r.returncode == 0, r.stderr
    assert_exactly_once(run, rows)


# ---------------------------------------------------------------------------- Azure OpenAI over HTTP

SEEN = web.AppKey("seen", list)
AZ_PATH = "/openai/deployments/gpt-4o-clair"


def _azure_app(key: str) -> web.Application:
    """Like an Azure OpenAI resource: a wrong ``api-key`` is refused on every route (401), a deployment URL has
    no ``/models`` (404), chat completions need ``api-version``; every request is recorded."""
    denied = orjson.dumps({"error": {"code": "401", "message": "Access denied due to invalid subscription key."}})

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        request.app[SEEN].append({"method": request.method, "path": request.path, "query": dict(request.query),
                                  "headers": dict(request.headers), "body": orjson.loads(body) if body else None})
        if request.headers.get("api-key") != key:
            return web.Response(status=401, body=denied, content_type="application/json")
        if request.method == "GET" or request.path != AZ_PATH + "/chat/completions" or "api-version" not in request.query:
            return web.Response(status=404, body=b'{"error":{"code":"404","message": "Resource not found"}}',
                                content_type="application/json")
        req = orjson.loads(body)
        _, user = read_prompt(req["messages"])
        answer = build_answer(extract_solution(user), 0)
        return web.json_response({"id": "x", "object": "chat.completion", "model": "gpt-4o",
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                               "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}})

    app = web.Application()
    app[SEEN] = []
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def _azure_cfg(url: str, **ep: Any) -> dict[str, Any]:
    return {"url": url, "model": "gpt-4o", "api_key_env": "AZ_TEST_KEY", "azure": {"api_version": "2024-10-21"}, **ep}


def test_azure_request_shape_and_startup_check(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> list[dict[str, Any]]:
        app = _azure_app("right-key")
        async with TestServer(app, host="127.0.0.1") as server, http_transport(4, 10, 5) as client:
            url = str(server.make_url(AZ_PATH))
            monkeypatch.setenv("AZ_TEST_KEY", "right-key")
            (ep,) = make_endpoints(_cfg(_azure_cfg(url, extra_body={"seed": 7}, system_role=False)), 4096)
            await startup_check(client, [ep], 10)
            assert ep.unverified  # no /models under a deployment URL: its first answer is the check
            msgs = render(builtin_template("distilabel"), "Say hi.", "Hello, wrold!")
            comp = await client.complete(ep.url, ep.headers, ep.body(_item(msgs)))
            assert mock_revision("Hello, wrold!") in comp.content
            # a wrong key: the one-line start-up error, the key never shown
            monkeypatch.setenv("AZ_TEST_KEY", "wrong-key")
            (bad,) = make_endpoints(_cfg(_azure_cfg(url)), 4096)
            with pytest.raises(StartupError) as e:
                await startup_check(client, [bad], 10)
            assert str(e.value).startswith(f"endpoints[0] ({url}?api-version=2024-10-21) rejected the API key (HTTP 401)")
            assert "\n" not in str(e.value) and "wrong-key" not in str(e.value)
            return list(app[SEEN])

    models, chat, refused = asyncio.run(main())
    for req in (models, chat, refused):
        assert req["query"] == {"api-version": "2024-10-21"}
        assert "Authorization" not in req["headers"]
    assert (models["method"], models["path"], models["headers"]["api-key"]) == ("GET", AZ_PATH + "/models", "right-key")
    assert (chat["method"], chat["path"], chat["headers"]["api-key"]) == ("POST", AZ_PATH + "/chat/completions",
                                                                          "right-key")
    assert refused["headers"]["api-key"] == "wrong-key"
    body = chat["body"]
    assert body["model"] == "gpt-4o" and body["seed"] == 7 and body["temperature"] == 0.7
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_a_whole_run_against_an_azure_deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.runner import arun_job

    monkeypatch.setenv("AZ_TEST_KEY", "right-key")
    rows = 40

    async def main() -> list[dict[str, Any]]:
        app = _azure_app("right-key")
        async with TestServer(app, host="127.0.0.1") as server:
            url = str(server.make_url(AZ_PATH))
            cfg = load_config(write_config(tmp_path, url, make_input(tmp_path, rows),
                                           endpoints=[_azure_cfg(url, max_concurrency=8)]))
            await arun_job(cfg)
            return list(app[SEEN])

    seen = asyncio.run(main())
    assert [r["path"] for r in seen].count(AZ_PATH + "/chat/completions") == rows
    assert all(r["query"] == {"api-version": "2024-10-21"} and "Authorization" not in r["headers"] for r in seen)
    t = pq.read_table(tmp_path / "run" / "data", columns=["student_solution", "revision"])
    assert t.column("revision").to_pylist() == [mock_revision(s) for s in t.column("student_solution").to_pylist()]
    assert_exactly_once(tmp_path / "run", rows)
