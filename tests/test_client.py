"""``ChatClient`` (engine/client.py) against real HTTP servers on 127.0.0.1, started by each test.

The servers are aiohttp's in-process ``TestServer`` with small handlers written here, and, for answers
that are not valid HTTP at all, a raw asyncio TCP server. Every test checks what the client returns or
raises: the ``Completion`` fields, or the typed error (``engine.core.errors``) with its ``kind``,
``retryable``, ``retry_after``, ``raw`` and ``headers``. No wall-clock time is asserted.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from engine.client import ChatClient, FastChatClient
from engine.core.errors import (
    ConnectError,
    EndpointError,
    HTTPStatusError,
    MalformedResponse,
    RequestTimeout,
    TransportError,
)
from engine.core.types import Completion

KEY = "sk-test-0123456789"
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
#: a request body as engine.dispatch.Endpoint.body builds it (model, generation params, messages)
BODY = orjson.dumps({"model": "m", "temperature": 0.7, "max_tokens": 64,
                     "messages": [{"role": "system", "content": ""}, {"role": "user", "content": "Fix: 2+2=5"}]})

Responder = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    """The test's server: ``respond`` sets what it answers; ``seen`` is every request it got."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    responder: Responder | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)  # frees handlers that never answer

    def respond(self, status: int, body: bytes | str | dict[str, Any] | list[Any],
                headers: dict[str, str] | None = None, content_type: str = "application/json") -> None:
        data = orjson.dumps(body) if isinstance(body, dict | list) else body
        raw = data.encode() if isinstance(data, str) else data

        async def answer(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, body=raw, headers=headers, content_type=content_type)

        self.responder = answer


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()

    async def handle(request: web.Request) -> web.StreamResponse:
        state.seen.append(Seen(request.method, request.path, dict(request.headers), await request.read()))
        assert state.responder is not None, "the test set no answer"
        return await state.responder(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    ts = TestServer(app, host="127.0.0.1")
    await ts.start_server()
    state.url = str(ts.make_url("/v1"))
    try:
        yield state
    finally:
        state.release.set()
        await ts.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


#: both chat-call clients answer every test the same: aiohttp's and the lean HTTP/1.1 one (run.http_client)
CLIENTS = {"aiohttp": ChatClient, "fast": FastChatClient}


@pytest.fixture(params=list(CLIENTS))
async def client(request: pytest.FixtureRequest, session: aiohttp.ClientSession) -> AsyncIterator[ChatClient]:
    c = CLIENTS[request.param](session, request_timeout_s=10.0, connect_timeout_s=5.0)
    yield c
    c.close()


def chat_body(content: Any = "Hello there.", *, finish_reason: str | None = "stop", model: str = "m-served",
              usage: dict[str, Any] | None = None, **message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "finish_reason": finish_reason,
                     "message": {"role": "assistant", "content": content, **message}}],
        "usage": usage if usage is not None else {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


def openai_error(message: str, type_: str = "invalid_request_error", code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def raw_server(payload: bytes) -> tuple[asyncio.Server, str]:
    """A TCP server that reads the request, writes ``payload`` verbatim and closes: not always HTTP."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(payload)
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    return srv, f"http://127.0.0.1:{port}/v1"


# ---------------------------------------------------------------------------------------- 2xx


async def test_a_200_answer_becomes_a_completion_and_the_request_is_an_openai_chat_call(
    server: Server, client: ChatClient
) -> None:
    server.respond(200, chat_body("The answer is 4.", finish_reason="length", model="served-model-v2"))
    comp = await client.complete(server.url, HEADERS, BODY)
    assert isinstance(comp, Completion)
    assert comp.content == "The answer is 4." and comp.finish_reason == "length"
    assert comp.model == "served-model-v2"  # the served model, from the body
    assert (comp.prompt_tokens, comp.completion_tokens, comp.reasoning_tokens) == (12, 3, None)
    assert comp.reasoning_content is None and comp.rate_headers == {}
    assert comp.latency_s >= 0.0
    # what the official OpenAI client sends: POST {base_url}/chat/completions, a JSON body, a bearer key
    (req,) = server.seen
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.body == BODY
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert req.headers["Content-Type"] == "application/json"


async def test_a_null_content_is_an_empty_answer_not_an_error(server: Server, client: ChatClient) -> None:
    server.respond(200, chat_body(None, finish_reason="length"))
    comp = await client.complete(server.url, HEADERS, BODY)
    assert comp.content == "" and comp.finish_reason == "length"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"reasoning_content": "First, 2+2 is 4."}, "First, 2+2 is 4."),  # vLLM / DeepSeek
        ({"reasoning": "Let me think."}, "Let me think."),  # OpenRouter / newer vLLM
        ({"reasoning_content": "from reasoning_content", "reasoning": "from reasoning"}, "from reasoning_content"),
        ({"reasoning_content": None, "reasoning": "the other field"}, "the other field"),
        ({"reasoning_content": {"not": "a string"}}, None),
        ({}, None),
    ],
)
async def test_reasoning_is_read_from_reasoning_content_or_reasoning(
    server: Server, client: ChatClient, message: dict[str, Any], expected: str | None
) -> None:
    server.respond(200, chat_body("final answer", **message))
    comp = await client.complete(server.url, HEADERS, BODY)
    assert comp.reasoning_content == expected and comp.content == "final answer"


async def test_usage_with_reasoning_tokens(server: Server, client: ChatClient) -> None:
    usage = {"prompt_tokens": 700, "completion_tokens": 900, "total_tokens": 1600,
             "prompt_tokens_details": {"cached_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 640, "accepted_prediction_tokens": 0}}
    server.respond(200, chat_body(usage=usage))
    comp = await client.complete(server.url, HEADERS, BODY)
    assert (comp.prompt_tokens, comp.completion_tokens, comp.reasoning_tokens) == (700, 900, 640)


@pytest.mark.parametrize("usage", [{}, {"prompt_tokens": 5}, {"completion_tokens_details": None}])
async def test_missing_usage_figures_are_none(server: Server, client: ChatClient, usage: dict[str, Any]) -> None:
    body = chat_body(usage=usage)
    server.respond(200, body)
    comp = await client.complete(server.url, HEADERS, BODY)
    assert comp.prompt_tokens == usage.get("prompt_tokens")
    assert comp.completion_tokens is None and comp.reasoning_tokens is None


async def test_rate_limit_headers_of_a_200_are_captured_lower_cased(server: Server, client: ChatClient) -> None:
    sent = {
        "X-RateLimit-Limit-Requests": "500",
        "X-RateLimit-Remaining-Requests": "499",
        "X-RateLimit-Reset-Requests": "120ms",
        "X-RateLimit-Limit-Tokens": "30000",
        "X-RateLimit-Remaining-Tokens": "29000",
        "X-RateLimit-Reset-Tokens": "2s",
        "X-Request-Id": "req_123",  # not a rate header: not kept
        "OpenAI-Processing-Ms": "800",
    }
    server.respond(200, chat_body(), headers=sent)
    comp = await client.complete(server.url, HEADERS, BODY)
    assert comp.rate_headers == {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-limit-tokens": "30000",
        "x-ratelimit-remaining-tokens": "29000",
        "x-ratelimit-reset-tokens": "2s",
    }


# ------------------------------------------------------------------------------- HTTP errors


@dataclass(frozen=True)
class StatusCase:
    status: int
    body: bytes | str | dict[str, Any]
    kind: str
    retryable: bool
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: float | None = None
    message: str | None = None  # what str(error) must contain
    content_type: str = "application/json"


CONTEXT_OPENAI = openai_error(
    "This model's maximum context length is 8192 tokens. However, your messages resulted in 9120 tokens. "
    "Please reduce the length of the messages.", code="context_length_exceeded")
CONTEXT_VLLM = {"object": "error", "type": "BadRequestError", "code": 400, "param": None,
                "message": "This model's maximum context length is 4096 tokens. However, you requested "
                           "4608 tokens (512 in the messages, 4096 in the completion)."}
HTML_502 = "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<center><h1>502 Bad Gateway</h1>" \
           "</center>\n<hr><center>nginx</center>\n</body>\n</html>\n"

STATUS_CASES = {
    "429 Retry-After seconds": StatusCase(
        429, openai_error("Rate limit reached for requests", "requests", "rate_limit_exceeded"), "rate_limited",
        True, {"Retry-After": "7", "X-RateLimit-Remaining-Requests": "0"}, 7.0, "HTTP 429: Rate limit reached"),
    "429 retry-after-ms": StatusCase(
        429, openai_error("Rate limit reached for tokens", "tokens", "rate_limit_exceeded"), "rate_limited",
        True, {"retry-after-ms": "1500", "Retry-After": "2"}, 1.5),
    "429 x-ratelimit reset only": StatusCase(
        429, openai_error("Rate limit reached"), "rate_limited", True,
        {"X-RateLimit-Remaining-Requests": "0", "X-RateLimit-Reset-Requests": "6m0s"}, 360.0),
    "429 no hint": StatusCase(429, openai_error("slow down"), "rate_limited", True),
    "500": StatusCase(500, openai_error("The server had an error", "server_error"), "server_error", True,
                      message="HTTP 500: The server had an error"),
    "503 Retry-After": StatusCase(503, openai_error("overloaded", "server_error"), "server_error", True,
                                  {"Retry-After": "2"}, 2.0),
    "502 nginx page": StatusCase(502, HTML_502, "server_error", True, message="502 Bad Gateway",
                                 content_type="text/html"),
    "400 context length (OpenAI)": StatusCase(400, CONTEXT_OPENAI, "context_too_long", False,
                                              message="maximum context length is 8192 tokens"),
    "400 context length (vLLM)": StatusCase(400, CONTEXT_VLLM, "context_too_long", False,
                                            message="maximum context length is 4096 tokens"),
    "400 other": StatusCase(400, openai_error("'temperature' must be <= 2"), "client_error", False),
    "401": StatusCase(401, openai_error("Incorrect API key provided: sk-te****6789.", code="invalid_api_key"),
                      "auth_error", False, message="HTTP 401: Incorrect API key provided"),
    "403": StatusCase(403, openai_error("You are not allowed to use this model", "permission_error"),
                      "auth_error", False),
    "404": StatusCase(404, openai_error("The model `nope` does not exist", code="model_not_found"),
                      "client_error", False, message="HTTP 404: The model `nope` does not exist"),
}


@pytest.mark.parametrize("case", list(STATUS_CASES.values()), ids=list(STATUS_CASES))
async def test_error_statuses_map_to_typed_errors(server: Server, client: ChatClient, case: StatusCase) -> None:
    server.respond(case.status, case.body, headers=case.headers, content_type=case.content_type)
    with pytest.raises(HTTPStatusError) as info:
        await client.complete(server.url, HEADERS, BODY)
    err = info.value
    assert err.status == case.status
    assert err.kind == case.kind and err.retryable is case.retryable
    assert err.retry_after == case.retry_after
    expected_raw = case.body if isinstance(case.body, str) else orjson.dumps(case.body).decode()
    assert err.raw == expected_raw  # the body is kept for the failures row
    assert err.headers == {k.lower(): v for k, v in case.headers.items()}
    assert err.latency_s is not None and err.latency_s >= 0.0
    assert str(err).startswith(f"HTTP {case.status}: ")
    assert "\n" not in str(err)
    if case.message is not None:
        assert case.message in str(err)


async def test_a_long_error_body_is_kept_cut_and_the_message_short(server: Server, client: ChatClient) -> None:
    page = "<html><body>" + "x" * 5000 + "</body></html>"
    server.respond(500, page, content_type="text/html")
    with pytest.raises(HTTPStatusError) as info:
        await client.complete(server.url, HEADERS, BODY)
    assert info.value.raw == page[:2000]
    assert len(str(info.value)) <= len("HTTP 500: ") + 300


# ----------------------------------------------------------------------- no HTTP answer at all


async def test_a_closed_port_is_a_connect_error(client: ChatClient) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    with pytest.raises(ConnectError) as info:
        await client.complete(url, HEADERS, BODY)
    assert info.value.kind == "connection_error" and info.value.retryable
    assert KEY not in str(info.value)
    with pytest.raises(ConnectError):
        await client.list_models(url, HEADERS)


@pytest.mark.parametrize("kind", list(CLIENTS))
async def test_a_server_that_never_answers_is_a_request_timeout(server: Server, session: aiohttp.ClientSession,
                                                                 kind: str) -> None:
    entered = asyncio.Event()

    async def never(request: web.Request) -> web.StreamResponse:
        entered.set()
        await server.release.wait()  # set by the fixture when the test ends
        return web.Response(status=200)

    server.responder = never
    client = CLIENTS[kind](session, request_timeout_s=0.2, connect_timeout_s=0.2)
    with pytest.raises(RequestTimeout) as info:
        await client.complete(server.url, HEADERS, BODY)
    assert entered.is_set()  # the request got there: the answer is what never came
    assert info.value.kind == "timeout" and info.value.retryable
    with pytest.raises(RequestTimeout):
        await client.list_models(server.url, HEADERS)


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # the server closes without a byte
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"choices\": [",  # cut
        b"garbage\r\n\r\n",  # not HTTP at all
        b"HTTP/1.1 abc\r\n\r\n",  # a status line without a status
    ],
    ids=["closed", "cut-body", "not-http", "bad-status-line"],
)
async def test_a_dropped_or_garbled_answer_is_a_retryable_transport_error(client: ChatClient, payload: bytes) -> None:
    """No usable HTTP answer: retryable, and counted against the endpoint's health (a TransportError).
    A garbled status line used to surface as HTTP 400 ``client_error``, final: the row failed for good."""
    srv, url = await raw_server(payload)
    try:
        with pytest.raises(TransportError) as info:
            await client.complete(url, HEADERS, BODY)
    finally:
        srv.close()
        await srv.wait_closed()
    err = info.value
    assert isinstance(err, ConnectError) and err.kind == "connection_error" and err.retryable
    assert "\n" not in str(err)


# ---------------------------------------------------------------------------- malformed 2xx


MALFORMED = {
    "truncated JSON": ('{"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hel',
                       "application/json"),
    "HTML page": ("<!DOCTYPE html><html><head><title>Login</title></head><body>Sign in</body></html>", "text/html"),
    "empty body": ("", "application/json"),
    "JSON without choices": ('{"object": "chat.completion", "model": "m"}', "application/json"),
    "empty choices": ('{"choices": []}', "application/json"),
    "choice without message": ('{"choices": [{"index": 0, "finish_reason": "stop"}]}', "application/json"),
    "message is null": ('{"choices": [{"index": 0, "message": null}]}', "application/json"),
    "content is a list": ('{"choices": [{"message": {"content": [{"type": "text", "text": "hi"}]}}]}',
                          "application/json"),
    "content is a number": ('{"choices": [{"message": {"content": 42}}]}', "application/json"),
    "a JSON list": ('[{"choices": []}]', "application/json"),
    "an error object with 200": ('{"error": {"message": "upstream failed", "type": "server_error"}}',
                                 "application/json"),
}


@pytest.mark.parametrize(("body", "content_type"), list(MALFORMED.values()), ids=list(MALFORMED))
async def test_a_2xx_body_that_is_not_a_chat_completion_is_malformed_and_kept(
    server: Server, client: ChatClient, body: str, content_type: str
) -> None:
    server.respond(200, body, headers={"X-RateLimit-Remaining-Tokens": "10"}, content_type=content_type)
    with pytest.raises(MalformedResponse) as info:
        await client.complete(server.url, HEADERS, BODY)
    err = info.value
    assert err.kind == "malformed_response" and err.retryable
    assert err.raw == body


async def test_a_long_malformed_body_keeps_its_first_2000_characters(server: Server, client: ChatClient) -> None:
    body = '{"choices": [{"message": {"content": "' + "é" * 3000
    server.respond(200, body)
    with pytest.raises(MalformedResponse) as info:
        await client.complete(server.url, HEADERS, BODY)
    raw = info.value.raw
    assert raw is not None and body.startswith(raw.rstrip("\ufffd")) and len(raw) <= 2000


# ------------------------------------------------------------------------------- list_models


async def test_list_models_returns_the_ids(server: Server, client: ChatClient) -> None:
    server.respond(200, {"object": "list", "data": [{"id": "llama-3-70b", "object": "model"},
                                                     {"id": "gpt-4o", "object": "model", "owned_by": "x"}]})
    assert await client.list_models(server.url, HEADERS) == ["llama-3-70b", "gpt-4o"]
    (req,) = server.seen
    assert (req.method, req.path) == ("GET", "/v1/models")
    assert req.headers["Authorization"] == f"Bearer {KEY}"


async def test_list_models_of_an_empty_list(server: Server, client: ChatClient) -> None:
    server.respond(200, {"object": "list", "data": []})
    assert await client.list_models(server.url, HEADERS) == []


@pytest.mark.parametrize("status", [404, 405])
async def test_list_models_is_none_without_a_models_route(server: Server, client: ChatClient, status: int) -> None:
    server.respond(status, openai_error("Not Found"))
    assert await client.list_models(server.url, HEADERS) is None


@pytest.mark.parametrize(
    ("status", "body", "content_type", "kind"),
    [
        (401, orjson.dumps(openai_error("Incorrect API key provided")).decode(), "application/json", "auth_error"),
        (403, orjson.dumps(openai_error("Forbidden")).decode(), "application/json", "auth_error"),
        (500, HTML_502.replace("502", "500"), "text/html", "server_error"),
    ],
)
async def test_list_models_error_statuses_raise(
    server: Server, client: ChatClient, status: int, body: str, content_type: str, kind: str
) -> None:
    server.respond(status, body, content_type=content_type)
    with pytest.raises(HTTPStatusError) as info:
        await client.list_models(server.url, HEADERS)
    assert info.value.status == status and info.value.kind == kind


async def test_list_models_answered_by_an_html_page_is_an_error(server: Server, client: ChatClient) -> None:
    """A 200 HTML page (a web UI or a login portal: the url lacks /v1) is not "no /models route": the
    start-up check must stop the run there, not send every row to a server that answers HTML."""
    page = "<!DOCTYPE html><html><body><div id=app>Chat UI</div></body></html>"
    server.respond(200, page, content_type="text/html")
    with pytest.raises(EndpointError) as info:
        await client.list_models(server.url, HEADERS)
    assert isinstance(info.value, MalformedResponse) and info.value.raw == page


async def test_list_models_answered_by_json_of_another_shape_is_an_error(server: Server, client: ChatClient) -> None:
    """/models must parse as a model list: JSON of another shape (a health endpoint, a proxy's error
    page) is no proof that the server speaks the API."""
    server.respond(200, {"status": "ok"})
    with pytest.raises(MalformedResponse, match="GET /models is not a model list"):
        await client.list_models(server.url, HEADERS)
