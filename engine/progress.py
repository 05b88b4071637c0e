"""Live progress: reporters that format the runner's :class:`~engine.policy.metrics.Progress` snapshots (L5).

``rich`` on a terminal, plain periodic log lines otherwise (nohup, CI). The runner calls
``reporter.update(snapshot)`` twice a second; building a snapshot touches only counters.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from engine.policy.metrics import Progress


def _dur(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s"


def _rows(p: Progress) -> str:
    """``done/total (pct)``; the percentage stops at 100 (a run may hold more rows than a lowered limit)."""
    total = p.rows_total if p.rows_total is not None else "?"
    pct = f" ({min(100.0, 100.0 * p.rows_done / p.rows_total):.1f}%)" if p.rows_total else ""
    return f"{p.rows_done}/{total}{pct}"


def format_line(p: Progress) -> str:
    """One line; a two-stage run's line starts with its first stage and the rows waiting between them."""
    if p.upstream is None:
        return _stage_line(p)
    up = p.upstream
    waiting = f" | waiting {p.waiting}" if p.waiting is not None else ""
    return f"generate: {_stage_line(up, short=True)}{waiting} || {p.stage or 'revise'}: {_stage_line(p)}"


def _stage_line(p: Progress, short: bool = False) -> str:
    fails = sum(p.failures.values())
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(p.failures.items()))
    line = (
        f"rows {_rows(p)} | {p.rows_per_s:.1f} rows/s | {p.output_tokens_per_s:.0f} out tok/s"
        f" | ETA {_dur(p.eta_s)} | in flight {p.in_flight} | retries {p.retries} | failed {fails}"
        + (f" ({kinds})" if kinds else "")
    )
    if short:
        return line
    if len(p.endpoints) > 1 or any(e.rate_limited or e.state != "closed" for e in p.endpoints):
        line += " | " + "; ".join(
            f"{e.name}: {e.state} {e.in_flight}/{e.limit} 429s {e.rate_limited}" for e in p.endpoints
        )
    if p.paused:
        line += f" | {paused_text(p.paused_since)}"
    return line


def paused_text(since: float | None) -> str:
    """``paused (endpoint down since HH:MM)``: ``since`` is the wall time (epoch s) every endpoint began failing."""
    when = f" since {time.strftime('%H:%M', time.localtime(since))}" if since is not None else ""
    return f"paused (endpoint down{when})"


class PlainReporter:
    """One log line every ``interval_s`` seconds (and a last one at close)."""

    def __init__(self, interval_s: float, stream: TextIO | None = None):
        self.interval_s = interval_s
        self.stream = stream or sys.stderr
        self._last = 0.0
        self._last_seen: Progress | None = None

    def update(self, p: Progress) -> None:
        self._last_seen = p
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            print(f"clair: {format_line(p)}", file=self.stream, flush=True)

    def close(self) -> None:
        """A last line with the final counts."""
        if self._last_seen is not None:
            print(f"clair: {format_line(self._last_seen)}", file=self.stream, flush=True)


class RichReporter:
    """A live panel on a terminal (rich)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.live = Live(console=self.console, refresh_per_second=2, transient=False)
        self.live.start()
        self._last_seen: Progress | None = None

    def update(self, p: Progress) -> None:
        from rich.table import Table

        self._last_seen = p
        t = Table.grid(padding=(0, 2))
        if p.upstream is not None:
            u = p.upstream
            t.add_row("[bold]generate[/]", _rows(u), "rows/s", f"{u.rows_per_s:.1f}", "ETA", _dur(u.eta_s))
            t.add_row("", f"in flight {u.in_flight}", "failed", str(sum(u.failures.values())),
                      "waiting", str(p.waiting if p.waiting is not None else "?"))
            t.add_row(f"[bold]{p.stage or 'revise'}[/]", "")
        t.add_row("rows", _rows(p), "ETA", _dur(p.eta_s))
        t.add_row("rows/s", f"{p.rows_per_s:.1f}", "out tok/s", f"{p.output_tokens_per_s:.0f}")
        t.add_row("in flight", str(p.in_flight), "retries", str(p.retries))
        fails = ", ".join(f"{k} {v}" for k, v in sorted(p.failures.items())) or "0"
        t.add_row("failed", fails, "flagged", ", ".join(f"{k} {v}" for k, v in p.flagged.items()) or "0")
        for e in p.endpoints:
            t.add_row(f"[bold]{e.name}[/]", e.state, "in flight/limit", f"{e.in_flight}/{e.limit}",
                      "429s", str(e.rate_limited))
        if p.paused:
            t.add_row("[red]PAUSED[/]", f"{paused_text(p.paused_since)}: every endpoint is failing; "
                      "waiting for one to recover")
        self.live.update(t)

    def close(self) -> None:
        if self._last_seen is not None:
            self.update(self._last_seen)  # the final counts stay on screen
        self.live.stop()


def make_reporter(mode: str, interval_s: float) -> PlainReporter | RichReporter | None:
    if mode == "off":
        return None
    if mode == "rich" or (mode == "auto" and sys.stderr.isatty()):
        return RichReporter()
    return PlainReporter(interval_s)
