"""``clair bench``: the command that runs one preset (with overrides), writes its JSON and prints it.

``cmd_bench`` takes the parsed arguments (``--scenario``, ``--rows``, ``--concurrency``,
``--latency-ms``, ``--out``, ``--keep``), refuses an unknown scenario or a bad override with a
``UserError``, runs it, writes the result (default ``benchmarks/out/SCENARIO.json``) and prints the report.
``--scenario two-stage`` (issue 16) takes ``--rows`` and ``--concurrency`` (both stages' in-flight limit);
its two mocks have a latency each, so ``--latency-ms`` is refused there.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import orjson

from engine.tools.bench.presets import PRESETS, cli_number
from engine.tools.bench.report import format_result, format_two_stage
from engine.tools.bench.run import OUT_DIR, run_scenario
from engine.tools.bench.twostage import TWO_STAGE, TWO_STAGE_NAME

__all__ = ["cmd_bench"]


def cmd_bench(args: Any) -> int:
    from engine.core.errors import UserError

    if args.scenario == TWO_STAGE_NAME:
        return _two_stage(args)
    if args.scenario not in PRESETS:
        raise UserError(f"unknown scenario {args.scenario!r}; use one of: {', '.join((*PRESETS, TWO_STAGE_NAME))}")
    sc = PRESETS[args.scenario]
    over: dict[str, Any] = {}
    if args.rows is not None:
        over["rows"] = args.rows
    if args.concurrency is not None:
        over["concurrency"] = args.concurrency
    if args.latency_ms is not None:
        over["latency_ms"] = args.latency_ms
    try:
        sc = dataclasses.replace(sc, **over)
    except ValueError as e:
        raise UserError(f"bench: {e}") from None
    out = Path(args.out) if args.out else OUT_DIR / f"{sc.name}.json"
    res = run_scenario(sc, out_dir=OUT_DIR, keep=args.keep, command=_command(sc.name, over), log=_log)
    _write(res, out)
    print(format_result(res))
    print(f"results written to {out}")
    return 0


def _two_stage(args: Any) -> int:
    from engine.core.errors import UserError
    from engine.tools.bench.twostage_run import run_two_stage

    if args.latency_ms is not None:
        raise UserError("bench: --latency-ms does not apply to --scenario two-stage (each of its two mocks has "
                        "its own latency)")
    over: dict[str, Any] = {}
    if args.rows is not None:
        over["rows"] = args.rows
    if args.concurrency is not None:
        over["student_concurrency"] = over["teacher_concurrency"] = args.concurrency
    try:
        ts = dataclasses.replace(TWO_STAGE, **over)
    except ValueError as e:
        raise UserError(f"bench: {e}") from None
    shown = {k: v for k, v in (("rows", args.rows), ("concurrency", args.concurrency)) if v is not None}
    out = Path(args.out) if args.out else OUT_DIR / f"{TWO_STAGE_NAME}.json"
    res = run_two_stage(ts, out_dir=OUT_DIR, keep=args.keep, command=_command(TWO_STAGE_NAME, shown), log=_log)
    _write(res, out)
    print(format_two_stage(res))
    print(f"results written to {out}")
    return 0


def _command(name: str, over: dict[str, Any]) -> str:
    return f"clair bench --scenario {name}" + "".join(f" --{k.replace('_', '-')} {cli_number(v)}" for k, v in over.items())


def _log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def _write(res: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2) + b"\n")
