"""Before the first row: the endpoints built from the config, and the start-up check (L4).

``make_endpoints`` reads API keys from the environment (a missing one is a one-line error);
``startup_check`` asks every endpoint ``GET /models`` and stops the run before any row is sent when one is
unreachable, refuses the key or does not serve the configured model. A server without ``/models`` is
checked by its first real request instead.
"""

from __future__ import annotations

import asyncio
import logging

from engine.core.config import JobConfig
from engine.core.errors import ConnectError, EndpointError, HTTPStatusError, RequestTimeout, StartupError
from engine.core.types import Transport
from engine.dispatch import Endpoint

log = logging.getLogger("clair")


def make_endpoints(cfg: JobConfig, max_tokens: int) -> list[Endpoint]:
    eps = []
    for i, e in enumerate(cfg.endpoints):
        headers = dict(e.headers)
        key = e.api_key()
        if e.api_key_env and not key:
            raise StartupError(f"endpoints[{i}].api_key_env names {e.api_key_env}, which is not set; export it first")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        eps.append(
            Endpoint(
                name=e.name or f"endpoint{i}",
                url=e.url,
                model=e.model,
                headers=headers,
                generation=cfg.generation,
                max_concurrency=e.max_concurrency,
                rpm=e.requests_per_minute,
                tpm=e.tokens_per_minute,
                weight=e.weight,
                adaptive=e.adaptive,
                breaker_failures=cfg.run.breaker_failures,
                breaker_open_s=cfg.run.breaker_open_s,
                expected_completion_tokens=min(max_tokens, 1000),
            )
        )
    return eps


async def startup_check(client: Transport, endpoints: list[Endpoint], connect_timeout_s: float) -> None:
    """GET /models on every endpoint; raise StartupError before any row is sent if one is unusable."""

    async def check(i: int, ep: Endpoint) -> None:
        where = f"endpoints[{i}] ({ep.url})"
        try:
            models = await asyncio.wait_for(client.list_models(ep.url, ep.headers), connect_timeout_s + 20)
        except (ConnectError, RequestTimeout, TimeoutError) as e:
            raise StartupError(f"{where} is unreachable ({e}); start the server or fix the url") from None
        except HTTPStatusError as e:
            if e.status in (401, 403):
                raise StartupError(
                    f"{where} rejected the API key (HTTP {e.status}); check the env var named in api_key_env"
                ) from None
            raise StartupError(f"{where} failed the start-up check ({e}); check the url") from None
        except EndpointError as e:
            raise StartupError(f"{where} failed the start-up check ({e}); check the url") from None
        if models is None:
            log.info("%s has no /models route; the first request is the check", ep.name)
            return
        if ep.model not in models:
            shown = ", ".join(models[:10]) or "none"
            raise StartupError(f"{where} does not serve model {ep.model!r} (it serves: {shown}); fix endpoints[{i}].model")

    await asyncio.gather(*(check(i, ep) for i, ep in enumerate(endpoints)))
