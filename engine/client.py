"""The network seam: one async method per call, foreign errors translated once into ours (L3).

``ChatClient.complete`` posts one chat-completion body and returns a :class:`Completion` or raises an
:class:`EndpointError` subclass. Tests above this layer use :class:`FakeClient`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from engine.core.errors import ConnectError, HTTPStatusError, MalformedResponse, RequestTimeout
from engine.core.types import Completion
from engine.policy.retry import parse_retry_after

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


def decode_completion(data: bytes, latency_s: float, rate_headers: dict[str, str]) -> Completion:
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


class ChatClient:
    """aiohttp implementation. One instance per run; the caller owns the session."""

    def __init__(self, session: aiohttp.ClientSession, *, request_timeout_s: float, connect_timeout_s: float):
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=request_timeout_s, connect=connect_timeout_s)

    async def complete(self, url: str, headers: dict[str, str], body: bytes) -> Completion:
        t0 = time.perf_counter()
        try:
            async with self.session.post(
                url + "/chat/completions", data=body, headers=headers, timeout=self.timeout
            ) as resp:
                data = await resp.read()
                status = resp.status
                rate = _rate_headers(resp.headers)
        except (TimeoutError, aiohttp.ServerTimeoutError) as e:
            raise RequestTimeout(f"no answer within the timeout ({type(e).__name__})") from None
        except (aiohttp.ClientError, OSError) as e:  # incl. an answer that is not HTTP (bad status line)
            raise ConnectError(f"{type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
        latency = time.perf_counter() - t0
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
        return decode_completion(data, latency, rate)

    async def list_models(self, url: str, headers: dict[str, str]) -> list[str] | None:
        """Model ids the endpoint serves; None when it has no /models route (404) or its JSON has no model
        list. A 2xx body that is not JSON at all raises MalformedResponse."""
        try:
            async with self.session.get(url + "/models", headers=headers, timeout=self.timeout) as resp:
                data = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise RequestTimeout("no answer to GET /models within the timeout") from None
        except (aiohttp.ClientError, OSError) as e:
            raise ConnectError(f"{type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
        if status in (404, 405):
            return None
        if status >= 400:
            raise HTTPStatusError(status, _error_message(data))
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:  # an HTML page (a web UI, a login portal): the url is wrong
            raw = data[:2000].decode("utf-8", "replace")
            raise MalformedResponse("GET /models answered something that is not JSON", raw=raw) from None
        try:
            return [str(m["id"]) for m in obj["data"]]
        except (KeyError, TypeError):  # JSON of another shape: the first request is the check
            return None


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

    async def list_models(self, url: str, headers: dict[str, str]) -> list[str] | None:
        return self.models
