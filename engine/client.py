"""The network seam: one async method per call, foreign errors translated once into ours (L3).

``ChatClient.complete`` posts one chat-completion body and returns a :class:`Completion` or raises an
:class:`EndpointError` subclass. Tests above this layer use :class:`FakeClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from engine.core.errors import ConnectError, HTTPStatusError, MalformedResponse, RequestTimeout
from engine.core.types import Completion
from engine.http1 import Http1Client
from engine.policy.ratelimit_headers import parse_retry_after

_RATE_HEADERS = (
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)


def _route(url: str, path: str) -> str:
    """``url`` + ``path``, the path put before the query string of ``url`` when it has one: an endpoint's
    base URL may carry one (Azure OpenAI's ``?api-version=...``) that every route must keep."""
    if "?" not in url:
        return url + path
    base, _, query = url.partition("?")
    return f"{base}{path}?{query}"


def _not_api(what: str, content_type: str) -> str:
    return f"does not look like an OpenAI-compatible API (got {content_type}; {what})"


def decode_completion(
    data: bytes, latency_s: float, rate_headers: dict[str, str], content_type: str | None = None
) -> Completion:
    """Decode an OpenAI chat.completion body; raise MalformedResponse when it is not one."""
    try:
        obj = orjson.loads(data)
        choice = obj["choices"][0]
        msg = choice["message"]
        content = msg.get("content")
        if content is not None and not isinstance(content, str):
            raise TypeError("content is not a string")
        reasoning = msg.get("reasoning_content") or msg.get("reasoning")
        usage = obj.get("usage") or {}
        details = usage.get("completion_tokens_details") or {}
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as e:
        raw = data[:2000].decode("utf-8", "replace")
        if content_type and "json" not in content_type:
            raise MalformedResponse(_not_api("not a chat completion", content_type), raw=raw) from None
        raise MalformedResponse(f"not a chat completion ({type(e).__name__})", raw=raw) from None
    return Completion(
        content=content or "",
        finish_reason=choice.get("finish_reason"),
        model=obj.get("model"),
        reasoning_content=reasoning if isinstance(reasoning, str) else None,
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        reasoning_tokens=details.get("reasoning_tokens"),
        latency_s=latency_s,
        rate_headers=rate_headers,
    )


def _rate_headers(headers: Any) -> dict[str, str]:
    out = {}
    for k in _RATE_HEADERS:
        v = headers.get(k)
        if v is not None:
            out[k] = v
    return out


def _error_message(body: bytes) -> str:
    try:
        obj = orjson.loads(body)
        err = obj.get("error", obj) if isinstance(obj, dict) else obj
        msg = err.get("message") if isinstance(err, dict) else err
        text = str(msg if msg is not None else obj)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace")
    return " ".join(text.split())[:300]


def _answer(status: int, data: bytes, rate: dict[str, str], ctype: str | None, latency: float) -> Completion:
    """An HTTP answer to a chat call: the Completion, or the typed error of its status."""
    if status >= 400:
        err = HTTPStatusError(
            status,
            _error_message(data),
            retry_after=parse_retry_after(rate),
            raw=data[:2000].decode("utf-8", "replace"),
            headers=rate,
        )
        err.latency_s = latency
        raise err
    return decode_completion(data, latency, rate, ctype)


#: the HTTP clients a run can use for its chat calls (``run.http_client``)
HTTP_CLIENTS = ("fast", "aiohttp")


@contextlib.asynccontextmanager
async def http_transport(connections: int, request_timeout_s: float, connect_timeout_s: float,
                         http_client: str = "fast") -> AsyncIterator[ChatClient]:
    """A transport on a session of its own with room for ``connections``; closed on exit. ``fast``: the
    chat calls go through :class:`FastChatClient` (the lean HTTP/1.1 client), ``aiohttp``: through
    :class:`ChatClient`; the model list is always asked with aiohttp."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, limit_per_host=0, ttl_dns_cache=300),
        json_serialize=None,  # type: ignore[arg-type]
        skip_auto_headers=("User-Agent",),
    )
    client: ChatClient
    if http_client == "aiohttp":
        client = ChatClient(session, request_timeout_s=request_timeout_s, connect_timeout_s=connect_timeout_s)
    else:
        client = FastChatClient(session, request_timeout_s=request_timeout_s, connect_timeout_s=connect_timeout_s)
    try:
        yield client
    finally:
        client.close()
        await session.close()


class ChatClient:
    """aiohttp implementation of the Transport Protocol. One instance per run; the caller owns the session."""

    def __init__(self, session: aiohttp.ClientSession, *, request_timeout_s: float, connect_timeout_s: float):
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=request_timeout_s, connect=connect_timeout_s)

    async def complete(self, url: str, headers: dict[str, str], body: bytes) -> Completion:
        t0 = time.perf_counter()
        try:
            async with self.session.post(
                _route(url, "/chat/completions"), data=body, headers=headers, timeout=self.timeout
            ) as resp:
                data = await resp.read()
                status = resp.status
                rate = _rate_headers(resp.headers)
                ctype = resp.content_type
        except (TimeoutError, aiohttp.ServerTimeoutError) as e:
            raise RequestTimeout(f"no answer within the timeout ({type(e).__name__})") from None
        except (aiohttp.ClientError, OSError) as e:  # incl. an answer that is not HTTP (bad status line)
            raise ConnectError(f"{type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
        return _answer(status, data, rate, ctype, time.perf_counter() - t0)

    def close(self) -> None:
        """Nothing of its own to close: the caller owns the session."""

    async def list_models(self, url: str, headers: dict[str, str]) -> list[str] | None:
        """Model ids the endpoint serves (a :class:`ModelList`: with the context lengths it reports); None when
        it has no /models route (404/405). A 2xx answer that is not a model list (an HTML page, JSON of
        another shape) raises MalformedResponse."""
        try:
            async with self.session.get(_route(url, "/models"), headers=headers, timeout=self.timeout) as resp:
                data = await resp.read()
                status = resp.status
                ctype = resp.content_type
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise RequestTimeout("no answer to GET /models within the timeout") from None
        except (aiohttp.ClientError, OSError) as e:
            raise ConnectError(f"{type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
        if status in (404, 405):
            return None
        if status >= 400:
            raise HTTPStatusError(status, _error_message(data))
        return decode_models(data, ctype)


class FastChatClient(ChatClient):
    """The chat calls through :class:`engine.http1.Http1Client` (~50-80 us of CPU per request instead of
    aiohttp's ~220-300); the model list, asked once per endpoint at start-up, through aiohttp."""

    def __init__(self, session: aiohttp.ClientSession, *, request_timeout_s: float, connect_timeout_s: float):
        super().__init__(session, request_timeout_s=request_timeout_s, connect_timeout_s=connect_timeout_s)
        self.http = Http1Client(request_timeout_s=request_timeout_s, connect_timeout_s=connect_timeout_s)
        self._routes: dict[str, str] = {}

    async def complete(self, url: str, headers: dict[str, str], body: bytes) -> Completion:
        route = self._routes.get(url)
        if route is None:
            route = self._routes[url] = _route(url, "/chat/completions")
        t0 = time.perf_counter()
        resp = await self.http.post(route, headers, body)
        return _answer(resp.status, resp.body, _rate_headers(resp.headers), resp.content_type,
                       time.perf_counter() - t0)

    def close(self) -> None:
        self.http.close()


#: keys of a ``/models`` entry that hold the model's context length in tokens: vLLM and SGLang
#: (``max_model_len``), OpenRouter and others (``context_length``), Groq (``context_window``)
CONTEXT_KEYS = ("max_model_len", "context_length", "context_window")


class ModelList(list[str]):
    """The model ids of a ``/models`` answer (a plain list of ids), plus ``context_lengths``: model id →
    context length in tokens, for the entries that report one."""

    def __init__(self, ids: list[str], context_lengths: dict[str, int] | None = None):
        super().__init__(ids)
        self.context_lengths: dict[str, int] = context_lengths or {}


def _context_length(entry: dict[str, Any]) -> int | None:
    for key in CONTEXT_KEYS:
        v = entry.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def decode_models(data: bytes, content_type: str | None = None) -> ModelList:
    """The model ids of an OpenAI ``/models`` answer, with the context lengths it reports (vLLM's
    ``max_model_len``); MalformedResponse when it is not a model list."""
    try:
        obj = orjson.loads(data)
        models = obj["data"]
        if not isinstance(models, list):
            raise TypeError("data is not a list")
        ids = [str(m["id"]) for m in models]
        contexts = {}
        for m, mid in zip(models, ids, strict=True):
            n = _context_length(m)
            if n is not None:
                contexts[mid] = n
        return ModelList(ids, contexts)
    except (orjson.JSONDecodeError, KeyError, TypeError, IndexError) as e:
        raw = data[:2000].decode("utf-8", "replace")
        if content_type and "json" not in content_type:
            raise MalformedResponse(_not_api("GET /models is not a model list", content_type), raw=raw) from None
        raise MalformedResponse(f"GET /models is not a model list ({type(e).__name__})", raw=raw) from None


Handler = Callable[[str, dict[str, str], dict[str, Any]], Awaitable[Completion]]


class FakeClient:
    """A tiny in-process fake of :class:`ChatClient`: ``handler(url, headers, body_dict)`` answers."""

    def __init__(self, handler: Handler, models: list[str] | None = None):
        self.handler = handler
        self.models = models
        self.calls = 0

    async def complete(self, url: str, headers: dict[str, str], body: bytes) -> Completion:
        self.calls += 1
        await asyncio.sleep(0)
        return await self.handler(url, headers, orjson.loads(body))

    def close(self) -> None:
        """Nothing of its own to close: the caller owns the session."""

    async def list_models(self, url: str, headers: dict[str, str]) -> list[str] | None:
        return self.models
