"""Before the first row: the endpoints built from the config, and the start-up check (L4).

``make_endpoints`` reads API keys from the environment (a missing one is a one-line error);
``startup_check`` asks every endpoint ``GET /models`` and stops the run before any row is sent when one is
unreachable, refuses the key or does not serve the configured model. A server without ``/models`` is
checked by its first real request instead (so is an Azure OpenAI deployment: its URL has no ``/models``;
a wrong key is refused there all the same). Azure endpoints send the key as ``api-key``, not as a bearer token.
An endpoint whose ``/models`` entry reports the model's context length (vLLM's ``max_model_len``) gets it as
``Endpoint.context_length`` unless the config set one.
"""

from __future__ import annotations

import asyncio
import logging

from engine.core.config import JobConfig
from engine.core.errors import (
    ConnectError,
    EndpointError,
    HTTPStatusError,
    MalformedResponse,
    RequestTimeout,
    StartupError,
)
from engine.core.types import Transport
from engine.dispatch import Endpoint

log = logging.getLogger("clair")


def make_endpoints(cfg: JobConfig, max_tokens: int, *, where: str = "endpoints") -> list[Endpoint]:
    """``where``: the config key of these endpoints (``generate.endpoints`` for the generate stage's)."""
    eps = []
    prefix = "endpoint" if where == "endpoints" else "generate"
    for i, e in enumerate(cfg.endpoints):
        headers = dict(e.headers)
        key = e.api_key()
        if e.api_key_env and not key:
            raise StartupError(f"{where}[{i}].api_key_env names {e.api_key_env}, which is not set; export it first")
        if key and e.azure:
            headers["api-key"] = key  # Azure OpenAI's key header (no bearer token)
        elif key:
            headers["Authorization"] = f"Bearer {key}"
        eps.append(
            Endpoint(
                name=e.name or f"{prefix}{i}",
                url=e.url,
                model=e.model,
                headers=headers,
                generation=cfg.request_generation,
                max_concurrency=e.max_concurrency,
                rpm=e.requests_per_minute,
                tpm=e.tokens_per_minute,
                weight=e.weight,
                adaptive=e.adaptive,
                breaker_failures=cfg.run.breaker_failures,
                breaker_open_s=cfg.run.breaker_open_s,
                expected_completion_tokens=min(max_tokens, 1000),
                extra_body=e.extra_body,
                system_role=e.system_role,
                query={"api-version": e.azure.api_version} if e.azure else None,
                tpm_counts_max_tokens=e.tpm_counts_max_tokens,
                context_length=e.context_length,
            )
        )
    return eps


async def startup_check(client: Transport, endpoints: list[Endpoint], timeout_s: float, *,
                        where: str = "endpoints") -> None:
    """GET /models on every endpoint, all at once; raise StartupError before any row is sent when an
    endpoint refuses the key, does not serve the model or does not speak the API, or when every one is
    unreachable. An unreachable endpoint among healthy ones is left out for now: one line, its breaker
    opened, probed later as during a run."""
    async def check(ep: Endpoint) -> list[str] | None:
        try:
            return await asyncio.wait_for(client.list_models(ep.url, ep.headers), timeout_s)
        except TimeoutError:
            raise RequestTimeout(f"no answer to GET /models within {timeout_s:g}s") from None

    # every check ends before this returns (no request outlives the transport it was made on)
    results = await asyncio.gather(*(check(ep) for ep in endpoints), return_exceptions=True)
    dead: list[tuple[int, Endpoint, BaseException]] = []
    for i, (ep, res) in enumerate(zip(endpoints, results, strict=True)):
        at = f"{where}[{i}] ({ep.url})"
        if isinstance(res, ConnectError | RequestTimeout):
            dead.append((i, ep, res))
        elif isinstance(res, HTTPStatusError) and res.status in (401, 403):
            raise StartupError(
                f"{at} rejected the API key (HTTP {res.status}); check the env var named in api_key_env")
        elif isinstance(res, MalformedResponse):
            raise StartupError(f"{at} {res}; set url to the server's OpenAI-compatible base URL (ending in /v1)")
        elif isinstance(res, EndpointError):
            raise StartupError(f"{at} failed the start-up check ({res}); check the url")
        elif isinstance(res, BaseException):
            raise res
        elif res is None:
            log.info("%s has no /models route; its first answer is the check", ep.name)
            ep.unverified = True
        elif ep.model not in res:
            shown = ", ".join(res[:10]) or "none"
            raise StartupError(f"{at} does not serve model {ep.model!r} (it serves: {shown}); fix {where}[{i}].model")
        elif ep.context_length is None:  # a ModelList (engine.client) knows the context lengths it was told
            ep.context_length = (getattr(res, "context_lengths", None) or {}).get(ep.model)
    if dead and len(dead) == len(endpoints):
        i, ep, err = dead[0]
        more = f" (and {len(dead) - 1} more endpoint(s) likewise)" if len(dead) > 1 else ""
        raise StartupError(f"{where}[{i}] ({ep.url}) is unreachable ({err}){more}; start the server or fix the url")
    for i, ep, err in dead:
        log.warning("%s[%d] (%s) is unreachable (%s); going on without it, it is tried again later",
                    where, i, ep.url, err)
        ep.breaker.trip()
