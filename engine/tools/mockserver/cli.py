"""The mock server's command line: ``clair mock-server`` / ``python -m engine.tools.mockserver``.

``main`` turns flags into a ``MockConfig`` (exit 2 with a message on a bad value or an unset key
variable), then serves until SIGINT / SIGTERM, printing ``mock-server listening on URL`` once bound.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from engine.tools.mockserver.app import start_server
from engine.tools.mockserver.config import FAULTS, TPM_COUNTS, MockConfig

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    d = MockConfig()
    p = argparse.ArgumentParser(prog="python -m engine.tools.mockserver",
                                description="OpenAI-compatible mock endpoint that answers CLAIR revisions "
                                            "(and, with --student-model, plain student answers).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (default: %(default)s)")
    p.add_argument("--model", default=d.model)
    p.add_argument("--student-model", metavar="NAME", default=None,
                   help="also serve model NAME, answering as a student (policy) model: plain answers, no CLAIR "
                        "markers (for two-stage runs)")
    p.add_argument("--student-tokens", metavar="N", type=int, default=d.student_tokens,
                   help="length of a student answer in tokens (~4 characters each) (default: %(default)s)")
    p.add_argument("--latency-ms", type=float, default=d.latency_ms)
    p.add_argument("--latency-dist", choices=("fixed", "lognormal"), default=d.latency_dist)
    p.add_argument("--latency-sigma", type=float, default=d.latency_sigma)
    p.add_argument("--seed", type=int, default=d.seed)
    for name in FAULTS:
        p.add_argument(f"--rate-{name.replace('_', '-')}", type=float, default=0.0, dest=f"rate_{name}",
                       metavar="P", help=f"probability of the '{name}' fault per request")
    p.add_argument("--retry-after-s", type=float, default=d.retry_after_s)
    p.add_argument("--hang-s", type=float, default=d.hang_s)
    p.add_argument("--rpm", type=int, default=None)
    p.add_argument("--tpm", type=int, default=None)
    p.add_argument("--tpm-counts", choices=TPM_COUNTS, default=d.tpm_counts,
                   help="what --tpm counts: prompt + max_tokens at admission, like OpenAI (default), or the "
                        "prompt at admission and the completion once answered (usage)")
    p.add_argument("--context-length", type=int, default=None, metavar="TOKENS",
                   help="report max_model_len in /v1/models (like vLLM) and refuse longer requests with 400")
    p.add_argument("--max-concurrency", type=int, default=None)
    p.add_argument("--fail-after-s", type=float, default=None)
    p.add_argument("--api-key-env", metavar="NAME", default=None,
                   help="require 'Authorization: Bearer $NAME' (the key is read from that environment variable)")
    p.add_argument("--no-models-endpoint", action="store_true", help="answer 404 to GET /v1/models")
    return p


async def _serve(cfg: MockConfig, host: str, port: int) -> int:
    runner, bound = await start_server(cfg, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"mock-server listening on http://{host}:{bound}/v1", flush=True)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            print(f"error: environment variable {args.api_key_env} is not set or empty", file=sys.stderr)
            return 2
    try:
        cfg = MockConfig(
            model=args.model, student_model=args.student_model, student_tokens=args.student_tokens,
            latency_ms=args.latency_ms, latency_dist=args.latency_dist,
            latency_sigma=args.latency_sigma, seed=args.seed, retry_after_s=args.retry_after_s, hang_s=args.hang_s,
            rpm=args.rpm, tpm=args.tpm, tpm_counts=args.tpm_counts, context_length=args.context_length,
            max_concurrency=args.max_concurrency, fail_after_s=args.fail_after_s,
            api_key=api_key, models_endpoint=not args.no_models_endpoint,
            **{f"rate_{name}": getattr(args, f"rate_{name}") for name in FAULTS},
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    loop_factory = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        pass
    with asyncio.Runner(loop_factory=loop_factory) as r:
        return r.run(_serve(cfg, args.host, args.port))
