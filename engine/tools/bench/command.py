"""``clair bench``: the command that runs one preset (with overrides), writes its JSON and prints it.

``cmd_bench`` takes the parsed arguments (``--scenario``, ``--rows``, ``--concurrency``,
``--latency-ms``, ``--out``, ``--keep``), refuses an unknown scenario or a bad override with a
``UserError``, runs it, writes the result (default ``benchmarks/out/SCENARIO.json``) and prints the report.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import orjson

from engine.tools.bench.presets import PRESETS, cli_number
from engine.tools.bench.report import format_result
from engine.tools.bench.run import OUT_DIR, run_scenario

__all__ = ["cmd_bench"]


def cmd_bench(args: Any) -> int:
    from engine.core.errors import UserError

    if args.scenario not in PRESETS:
        raise UserError(f"unknown scenario {args.scenario!r}; use one of: {', '.join(PRESETS)}")
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
    command = f"clair bench --scenario {sc.name}" + "".join(
        f" --{k.replace('_', '-')} {cli_number(v)}" for k, v in over.items())

    def log(msg: str) -> None:
        print(f"bench: {msg}", file=sys.stderr, flush=True)

    res = run_scenario(sc, out_dir=OUT_DIR, keep=args.keep, command=command, log=log)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2) + b"\n")
    print(format_result(res))
    print(f"results written to {out}")
    return 0
