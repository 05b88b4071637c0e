"""The mock's aiohttp application: routes, the chat handler's order of checks, and starting a server.

``make_app`` wires ``/v1/models``, ``/v1/chat/completions``, ``/stats``, ``/stats/reset`` and
``/health`` to one ``State``; the chat handler applies auth, ``fail_after_s``, request validation,
``max_concurrency``, the rpm / tpm limits, the injected fault and the latency, in that order, then
answers with the mock teacher's CLAIR answer (or, for the student model, a plain student answer). ``start_server`` runs it on a (free) local port.
"""

from __future__ import annotations

import math
import time

import orjson
from aiohttp import web

from engine.tools.mockserver.answers import (
    answer_style,
    build_answer,
    identical_answer,
    no_marker_answer,
    ramble,
)
from engine.tools.mockserver.config import RAMBLE_DEFAULT_TOKENS, MockConfig
from engine.tools.mockserver.limits import refusal
from engine.tools.mockserver.protocol import (
    E_429,
    E_500,
    E_503,
    E_AUTH,
    E_BUSY,
    E_FAIL,
    E_NOTFOUND,
    JSON,
    MALFORMED,
    BadRequest,
    ceil4,
    completion_body,
    context_error,
    extract_solution,
    parse_chat,
    read_prompt,
)
from engine.tools.mockserver.state import State

__all__ = ["STATE_KEY", "make_app", "start_server"]

STATE_KEY = web.AppKey("clair_mock_state", State)


def make_app(cfg: MockConfig) -> web.Application:
    """The aiohttp application (state lives in ``app[STATE_KEY]``)."""
    st = State(cfg)
    base_headers = {"Content-Type": JSON}

    def reply(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
        st.status[status] = st.status.get(status, 0) + 1
        return web.Response(status=status, body=body, headers=headers or base_headers)

    def drop(request: web.BaseRequest) -> web.Response:
        # close the connection without answering; writing the placeholder response then fails with a
        # ConnectionError, which aiohttp treats as a client disconnect (no log, no warning)
        transport = request.transport
        if transport is not None:
            transport.close()
        return web.Response(status=204)

    async def models(request: web.Request) -> web.Response:
        st.other_requests += 1
        if st.auth is not None and request.headers.get("Authorization") != st.auth:
            return reply(401, E_AUTH)
        if not cfg.models_endpoint:
            return reply(404, E_NOTFOUND)
        return reply(200, st.models_body)

    async def chat(request: web.Request) -> web.StreamResponse:
        st.requests += 1
        st.in_flight += 1
        if st.in_flight > st.peak_in_flight:
            st.peak_in_flight = st.in_flight
        try:
            return await _chat(request)
        finally:
            st.in_flight -= 1

    async def _chat(request: web.Request) -> web.StreamResponse:
        if st.auth is not None and request.headers.get("Authorization") != st.auth:
            return reply(401, E_AUTH)
        if cfg.fail_after_s is not None and time.monotonic() - st.started >= cfg.fail_after_s:
            st.faults["fail_after"] += 1
            return reply(500, E_FAIL)
        try:
            messages, max_tokens, student = parse_chat(await request.read(), cfg.model, cfg.student_model)
        except BadRequest as e:
            return reply(e.status, e.body)
        if student:
            st.student_requests += 1
        prompt_tokens, user_text = read_prompt(messages)
        if cfg.context_length is not None and prompt_tokens + (max_tokens or 0) > cfg.context_length:
            return reply(400, context_error(cfg.context_length, prompt_tokens, max_tokens or 0))
        if cfg.max_concurrency is not None and st.in_flight > cfg.max_concurrency:
            st.limited["concurrency"] += 1
            return reply(429, E_BUSY)

        headers = base_headers
        usage = cfg.tpm_counts == "usage"
        if st.limits.active:
            headers = dict(base_headers)
            admitted = prompt_tokens if usage else prompt_tokens + (max_tokens or 0)
            refused = st.limits.charge(time.monotonic(), admitted, headers)
            if refused is not None:
                kind, wait = refused
                st.limited[kind] += 1
                return reply(429, refusal(kind, wait, cfg.rpm if kind == "rpm" else cfg.tpm, headers), headers)

        fault = st.inject.fault()
        if fault == "429":
            st.faults["429"] += 1
            if headers is base_headers:
                headers = dict(base_headers)
            headers["Retry-After"] = str(max(1, math.ceil(cfg.retry_after_s)))
            headers["retry-after-ms"] = str(math.ceil(cfg.retry_after_s * 1000))
            return reply(429, E_429, headers)

        delay = st.inject.latency()
        if delay > 0 and not await st.sleep(delay):
            return drop(request)  # shutting down
        if fault is not None:
            st.faults[fault] += 1
            if fault == "500":
                return reply(500, E_500, headers)
            if fault == "503":
                return reply(503, E_503, headers)
            if fault == "hang":
                await st.sleep(cfg.hang_s)
                return drop(request)
            if fault == "drop":
                return drop(request)
            if fault == "malformed":
                return reply(200, MALFORMED, headers)

        if student:  # a plain answer: the CLAIR faults no_marker / identical change nothing in it
            assert st.student is not None
            answer = st.student.answer(user_text)
        else:
            solution = extract_solution(user_text)
            if fault == "no_marker":
                answer = no_marker_answer(solution)
            elif fault == "identical":
                answer = identical_answer(solution)
            else:
                answer = build_answer(solution, answer_style(solution))
        if fault == "ramble":  # the model does not stop: it runs on to max_tokens
            answer = ramble(answer, max_tokens or RAMBLE_DEFAULT_TOKENS)
        completion_tokens = ceil4(len(answer))
        finish = "length" if fault == "ramble" else "stop"
        if max_tokens is not None and completion_tokens > max_tokens:
            answer = answer[: max_tokens * 4]
            completion_tokens = max_tokens
            finish = "length"
        if usage and st.limits.active:
            st.limits.charge_usage(time.monotonic(), completion_tokens)
        st.completions += 1
        st.prompt_tokens += prompt_tokens
        st.completion_tokens += completion_tokens
        name = cfg.model
        if student:
            name = cfg.student_model or name
            st.student_completions += 1
            st.student_prompt_tokens += prompt_tokens
            st.student_completion_tokens += completion_tokens
        out = completion_body(next(st.ids), int(time.time()), name, answer, finish, prompt_tokens,
                              completion_tokens)
        return reply(200, out, headers)

    async def stats(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(st.snapshot()), headers=base_headers)

    async def stats_reset(request: web.Request) -> web.Response:
        st.reset()
        return web.Response(body=orjson.dumps(st.snapshot()), headers=base_headers)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def on_startup(app: web.Application) -> None:
        st.started = time.monotonic()

    async def on_shutdown(app: web.Application) -> None:
        st.shutdown()

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE_KEY] = st
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/stats", stats)
    app.router.add_post("/stats/reset", stats_reset)
    app.router.add_get("/health", health)
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app


async def start_server(cfg: MockConfig, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Start the mock on ``host:port`` (0 = any free port); returns the runner (``await runner.cleanup()``
    to stop it) and the bound port."""
    runner = web.AppRunner(make_app(cfg), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    return runner, bound

