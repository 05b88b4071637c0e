"""The ``clair`` command: a thin shell over the library (L5). Argument parsing, exit codes, display.

Exit codes (the README's table): 0 done; 1 unexpected internal error; 2 a user mistake (config, input,
endpoint check, run state); 3 the run ended without a single usable revision, or a guard stopped it
(budget reached, quality guard; resumable); 74 the disk or permissions failed (resumable); 75 every endpoint
kept failing for ``run.max_pause_s`` (resumable once one is back); 130/143 stopped by SIGINT/SIGTERM
(resumable); 141 the output pipe was closed (e.g. ``| head``): quietly, like other Unix tools.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from engine import __version__
from engine.core.errors import ClairError, EndpointsDown, RunStopped, StorageError, UserError

log = logging.getLogger("clair")


def _setup_logging(verbose: bool) -> None:
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("clair: %(message)s"))
    log.handlers[:] = [h]
    log.setLevel(logging.INFO if verbose else logging.WARNING)
    log.propagate = False


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clair", description="Create CLAIR preference data at scale.")
    p.add_argument("--version", action="version", version=f"clair-engine {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="more log lines")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run or resume a revision job from a YAML config")
    r.add_argument("config", help="path of the YAML job config")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config key, e.g. --set output.dir=runs/x (repeatable)")
    r.add_argument("--new-run", action="store_true",
                   help="archive the existing run directory (renamed, never deleted) and start fresh")
    r.add_argument("--retry-failed", action="store_true",
                   help="request again the failed rows whose error is retryable (timeouts, 5xx, 429, ...)")
    r.add_argument("--dry-run", action="store_true",
                   help="read the input and render prompts, count tokens, estimate cost and time; send nothing")
    r.add_argument("--progress", choices=["auto", "rich", "plain", "off"], default=None,
                   help="progress display (default: run.progress from the config)")

    s = sub.add_parser("status", help="show a run directory's state")
    s.add_argument("run_dir")
    s.add_argument("--json", action="store_true", help="print JSON")

    rp = sub.add_parser("reparse", help="parse stored raw outputs again with this version's parser (no requests)")
    rp.add_argument("run_dir")

    m = sub.add_parser("mock-server", help="serve a local OpenAI-compatible CLAIR mock endpoint", add_help=False)
    m.add_argument("args", nargs=argparse.REMAINDER)

    e = sub.add_parser("export", help="write training-ready preference pairs (TRL / ultrafeedback layout)")
    e.add_argument("run_dir")
    e.add_argument("--format", choices=["trl", "ultrafeedback"], default="trl")
    e.add_argument("--out", help="output Parquet file (default: RUN_DIR/export-FORMAT.parquet)")
    e.add_argument("--include-flagged", action="store_true", help="keep truncated/worsened rows")
    e.add_argument("--max-distance", type=int, default=None, help="drop pairs whose Levenshtein distance is larger")
    e.add_argument("--min-jaccard", type=float, default=None, help="drop pairs whose token Jaccard is lower")
    e.add_argument("--keep-identical", action="store_true", help="keep revisions identical to the original")
    e.add_argument("--push-to-hub", metavar="ORG/NAME", default=None, help="also push to the Hugging Face Hub")
    e.add_argument("--private", action="store_true", help="with --push-to-hub: a private dataset")

    st = sub.add_parser("stats", help="minimality metrics of a run and suspicious revisions")
    st.add_argument("run_dir")
    st.add_argument("--max-distance", type=int, default=None, help="flag pairs rewritten beyond this distance")
    st.add_argument("--min-jaccard", type=float, default=0.1, help="flag pairs with lower token Jaccard")
    st.add_argument("--json", action="store_true")

    sh = sub.add_parser("show", help="print a few pairs: word diff of original -> revision, rationale, metrics")
    sh.add_argument("run_dir")
    sh.add_argument("--n", "-n", type=int, default=5, help="how many rows (default: %(default)s)")
    pick = sh.add_mutually_exclusive_group()
    pick.add_argument("--row-id", metavar="ID", default=None, help="show this one row (data or failure)")
    pick.add_argument("--status", metavar="S", default=None,
                      help="only rows of this status (ok, truncated, worsened) or failure kind (no_marker, ...)")
    sh.add_argument("--full", action="store_true", help="whole texts (default: long unchanged stretches cut)")
    sh.add_argument("--plain", action="store_true", help="[-deleted-] {+inserted+} markers even on a terminal")

    b = sub.add_parser("bench", help="measure throughput against the bundled mock endpoint")
    b.add_argument("--scenario", default="latency", help="latency | lognormal | ratelimited | faults | scale | two-stage")
    b.add_argument("--rows", type=int, default=None, help="override the scenario's row count")
    b.add_argument("--concurrency", type=int, default=None, help="override the scenario's in-flight limit")
    b.add_argument("--latency-ms", type=float, default=None, help="override the mock's mean latency")
    b.add_argument("--out", default=None, help="JSON results file (default: benchmarks/out/SCENARIO.json)")
    b.add_argument("--keep", action="store_true", help="keep the run directory")
    return p


def main(argv: list[str] | None = None) -> int:
    own_process = argv is None  # a `clair` process of its own, not a call from Python
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["mock-server"]:
        from engine.tools.mockserver.cli import main as mock_main

        return mock_main(argv[1:])
    args = build_parser().parse_args(argv)
    args.own_process = own_process
    _setup_logging(args.verbose)
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # a closed pipe (`| head`) shows here, not in the interpreter's final flush
        return code
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except StorageError as e:
        print(f"error: {e}", file=sys.stderr)
        return StorageError.exit_code
    except RunStopped as e:  # a guard stopped the run (budget, quality): one line, resumable
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except ClairError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _closed_pipe()


#: exit code when the reader of our output went away (128 + SIGPIPE), as with other Unix tools
EXIT_CLOSED_PIPE = 141
#: exit code of a run that ended without a single usable revision
EXIT_NO_REVISION = 3


def _closed_pipe() -> int:
    """The reader of stdout went away (``clair stats RUN | head -1``): stop quietly. Later writes (and the
    interpreter's final flush) go to /dev/null, so no second BrokenPipeError is printed at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_CLOSED_PIPE


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return cmd_run(args)
    if args.command == "status":
        from engine.commands.status import run_status

        return run_status(Path(args.run_dir), as_json=args.json)
    if args.command == "reparse":
        from engine.commands.reparse import reparse_run

        res = reparse_run(Path(args.run_dir))
        print(f"reparsed {res['rows']} rows: {res['to_data']} now revised, {res['to_failures']} now failed, "
              f"{res['changed']} changed; no request was sent")
        return 0
    if args.command == "export":
        from engine.commands.export import cmd_export

        return cmd_export(args)
    if args.command == "stats":
        from engine.commands.stats import cmd_stats

        return cmd_stats(args)
    if args.command == "show":
        from engine.commands.show import cmd_show

        return cmd_show(args)
    if args.command == "bench":
        from engine.tools.bench.command import cmd_bench

        return cmd_bench(args)
    raise AssertionError(args.command)


def _resume_hint(args: argparse.Namespace) -> str:
    """The command that resumes this run: paths quoted for a shell, secret values given by --set (headers,
    keys, tokens) shown as ``***`` (never printed; the user gives them again)."""
    from engine.core.config import is_secret_override

    sets = [o.split("=", 1)[0] + "=***" if is_secret_override(o) else o for o in args.overrides]
    return " ".join(["clair", "run", shlex.quote(args.config)] + [f"--set {shlex.quote(o)}" for o in sets])


def cmd_run(args: argparse.Namespace) -> int:
    from engine.core.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        from engine.commands.dryrun import dry_run

        return dry_run(cfg)
    if getattr(args, "own_process", False):  # process-wide memory settings: only in a process of our own
        from engine.core.memory import refuse_unused_imports, tune_process

        if cfg.input.path and not cfg.input.dataset:
            refuse_unused_imports()  # before the runner imports pyarrow
        tune_process()
    from engine.progress import make_reporter
    from engine.runner import run_job

    mode = args.progress or cfg.run.progress
    reporter = make_reporter(mode, cfg.run.progress_interval_s)
    try:
        try:
            rep = run_job(cfg, retry_failed=args.retry_failed, new_run=args.new_run,
                          on_progress=reporter.update if reporter else None, install_signals=True)
        finally:  # the display's last line comes before any summary or error line
            if reporter:
                reporter.close()
    except StorageError:
        print(f"resume with: {_resume_hint(args)}", file=sys.stderr)
        raise
    except EndpointsDown as e:  # one line: the endpoints, the last error of each, the command to resume
        if e.report is not None:
            _print_summary(e.report)
        print(f"error: {e}; resume with: {_resume_hint(args)}", file=sys.stderr)
        return EndpointsDown.exit_code
    except RunStopped as e:
        if e.report is not None:
            _print_summary(e.report)
        raise
    _print_summary(rep.to_dict())
    if rep.status == "interrupted":
        print(f"stopped; resume with: {_resume_hint(args)}", file=sys.stderr)
        return 128 + int(rep.extra.get("signal", 2))
    failed = sum(rep.rows_failed.values())
    if rep.rows_done and failed == rep.rows_done:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(rep.rows_failed.items(), key=lambda kv: -kv[1]))
        print(f"error: no row got a usable revision ({failed} failed: {kinds}); look at the reasons with "
              f"`clair status {rep.run_dir}` and fix the config, the input or the endpoint", file=sys.stderr)
        return EXIT_NO_REVISION
    return 0


def _print_summary(rep: dict[str, Any]) -> None:
    failed = rep["rows_failed"]
    flagged = rep["rows_flagged"]
    total = rep["rows_total"]
    print(f"run directory: {rep['run_dir']}")
    of = f"of {total if total is not None else '?'}" if total is None or rep["rows_done"] <= total else \
        f"(the input now selects {total})"
    print(f"rows: {rep['rows_done']} {of} done"
          f" ({sum(failed.values())} failed{', ' + ', '.join(f'{k} {v}' for k, v in sorted(failed.items())) if failed else ''})"
          + (f"; flagged: {', '.join(f'{k} {v}' for k, v in sorted(flagged.items()))}" if flagged else ""))
    lat = rep["latency"]
    p50 = f"{lat['p50_s']:.2f}s" if lat.get("p50_s") is not None else "-"
    p99 = f"{lat['p99_s']:.2f}s" if lat.get("p99_s") is not None else "-"
    reused = f"{rep['rows_reused']} answers reused from earlier runs (no request), " if rep.get("rows_reused") else ""
    print(f"this session: {rep['requests']} requests, {reused}{rep['retries']} retries, {rep['rows_per_s']:.1f} rows/s, "
          f"{rep['output_tokens_per_s']:.0f} output tokens/s, latency p50 {p50} p99 {p99}, {rep['wall_s']:.1f}s")
    if rep.get("cost_usd") is not None:
        print(f"estimated cost: ${rep['cost_usd']:.2f}")
    for name, st in ((rep.get("extra") or {}).get("stages") or {}).items():  # a two-stage run's first stage
        sfailed = st.get("rows_failed") or {}
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(sfailed.items()))
        cost = f", estimated cost ${st['cost_usd']:.2f}" if st.get("cost_usd") is not None else ""
        print(f"{name} stage: {st['rows_done']} rows done ({sum(sfailed.values())} failed{', ' + kinds if kinds else ''}); "
              f"this session {st['requests']} requests, {st['retries']} retries, {st['rows_per_s']:.1f} rows/s, "
              f"{st['output_tokens_per_s']:.0f} output tokens/s{cost}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
