"""``clair bench``: the engine against the bundled mock endpoint, measured from outside (L3).

A scenario is a named preset (:data:`PRESETS`) of data size, in-flight limit and mock behaviour
(latency, enforced rate limits, injected faults). :func:`run_scenario`:

1. makes (once per size, cached in ``DATA_DIR``) a Parquet input of UltraFeedback-shaped rows
   (:func:`engine.tools.synthetic.write_sample`: ~3 KB prompts, ~3.5 KB answers; never shrunken payloads);
2. starts ``clair mock-server`` as a child process with the scenario's behaviour;
3. runs the engine in ITS OWN process, exactly as a user does: ``python -m engine.cli run JOB.yaml
   --progress off``; while it runs, the bench samples every :data:`POLL_S` seconds the mock's
   ``GET /stats`` (request / response counters, the mock's own CPU) and ``/proc/PID`` of the engine
   (CPU, RSS, peak RSS); when it exits, ``os.wait4`` gives the engine's exact CPU time;
4. reads the engine's ``RUN/report.json`` (:class:`engine.runner.RunReport`) for rows, tokens,
   retries and latency percentiles, and combines it all into one JSON-able dict.

Definitions (the numbers ``clair bench`` prints)
------------------------------------------------
* **steady window**: from the first chat request the mock receives to the last chat response it
  sends (both seen in the sampled counters, so each edge is within ``POLL_S / 2``). It excludes the
  engine's process start-up (imports, config, input scan, ``GET /models``) and its shutdown (last
  shard, report). ``rows_per_s`` and ``output_tokens_per_s`` are per second of this window;
  ``engine_wall_s`` (the engine's own report, which includes start-up) is printed beside it.
* **theoretical limit** (:func:`theoretical_limit`): rows/s = min(concurrency / mean latency,
  rpm / 60, tpm / 60 / tokens per request), from the scenario's NOMINAL mock latency (the mean the
  mock is told to add), not the measured one (which includes the overheads being measured).
  Infinite (no limit: the run is CPU-bound) when every term is unbounded, e.g. at zero latency.
* **achieved fraction** (:func:`achieved_fraction`): window rows/s / limit.
* **engine CPU per 1,000 rows**: user+system CPU of the engine process (all its threads, start-up
  included: ``wait4``), per 1,000 rows finished; the steady-window share is given too.
  The mock's CPU is measured separately (its ``/stats`` ``cpu_s``): when the mock uses more than
  :data:`MOCK_SATURATED` of a core it, not the engine, may be what limits the run, and the result
  says so (``mock.saturated``).
* **peak RSS**: the engine's ``VmHWM`` (the kernel's high-water mark of its resident memory), read
  with every sample; ``rss_mb_at_progress`` shows whether memory stays flat as rows accumulate.
* **latency**: request latency p50/p90/p99 are the engine's per-request figures (successful
  attempts, ``endpoints[].latency`` of the report); ``latency.row`` is first send to final answer.
  Time-to-first-byte is ``null``: the engine sends ``stream: false``, so there is no first token
  to time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import http.client
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

__all__ = [
    "PRESETS",
    "Scenario",
    "achieved_fraction",
    "cmd_bench",
    "ensure_data",
    "fault_adjusted_limit",
    "format_result",
    "machine_info",
    "run_scenario",
    "theoretical_limit",
]

#: where ``clair bench`` keeps its cached inputs, run directories and results (relative to the cwd)
OUT_DIR = Path("benchmarks") / "out"
#: seconds between samples of the mock's counters and the engine's /proc entries
POLL_S = 0.05
#: the run is stopped (and the bench fails) when the mock's counters stand still this long
STALL_S = 300.0
#: mock CPU use (fraction of one core over the window) from which the mock counts as saturated
MOCK_SATURATED = 0.85
#: input rows are generated with this seed (prefix-stable: the first n rows of any size are the same)
DATA_SEED = 0
TTFB_NOTE = "not applicable: the engine sends non-streaming requests (stream: false)"

# ---------------------------------------------------------------------------------------------
# scenarios
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One benchmark preset. Every field can be overridden with ``dataclasses.replace``."""

    name: str
    rows: int
    concurrency: int  # the engine's endpoints[0].max_concurrency (adaptive concurrency stays on)
    latency_ms: float  # the mock's mean latency
    latency_dist: str = "fixed"  # fixed | lognormal
    latency_sigma: float = 1.0  # lognormal shape (1.0: p99 ~ 6x the mean)
    rpm: int | None = None  # enforced by the mock (429 beyond); the engine is NOT told
    tpm: int | None = None
    faults: dict[str, float] = field(default_factory=dict)  # MockConfig rate_* name -> probability
    retry_after_s: float = 1.0  # Retry-After of injected 429s
    hang_s: float = 30.0  # how long a hung request hangs before the mock drops it
    request_timeout_s: float = 600.0  # the engine's timeouts.request_s
    retry_base_delay_s: float = 1.0  # the engine's retry.base_delay_s
    window_s: float | None = None  # ratelimited: achieved requests/min over this window
    max_tokens: int = 4096
    engine_set: tuple[str, ...] = ()  # extra ``--set KEY=VALUE`` overrides for the engine's job
    description: str = ""

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise ValueError("rows must be >= 1")
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")

    def mock_args(self) -> list[str]:
        args = ["--latency-ms", _num(self.latency_ms), "--latency-dist", self.latency_dist,
                "--latency-sigma", _num(self.latency_sigma), "--seed", "0",
                "--retry-after-s", _num(self.retry_after_s), "--hang-s", _num(self.hang_s)]
        if self.rpm is not None:
            args += ["--rpm", str(self.rpm)]
        if self.tpm is not None:
            args += ["--tpm", str(self.tpm)]
        for name, rate in sorted(self.faults.items()):
            args += [f"--{name.replace('_', '-')}", _num(rate)]
        return args

    def params(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("description")
        return d


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


#: the fault mix of the endpoint issue: 5% 429 (Retry-After: 1), 2% 500, 1% hangs, 1% malformed JSON,
#: 2% answers without CLAIR markers
FAULT_MIX = {"rate_429": 0.05, "rate_500": 0.02, "rate_hang": 0.01, "rate_malformed": 0.01,
             "rate_no_marker": 0.02}

PRESETS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("latency", rows=32_000, concurrency=256, latency_ms=200.0,
                 description="fixed 200 ms latency, 256 in flight: can the engine keep the window full?"),
        Scenario("lognormal", rows=32_000, concurrency=512, latency_ms=2000.0, latency_dist="lognormal",
                 latency_sigma=1.0,
                 description="log-normal latency, mean 2 s (p50 1.2 s, p99 12 s, capped at 120 s), 512 in flight"),
        Scenario("ratelimited", rows=1_500, concurrency=256, latency_ms=200.0, rpm=600, window_s=120.0,
                 description="the mock enforces 600 requests/min (429 beyond); the engine's own limit is "
                             "unset, adaptive concurrency on"),
        Scenario("faults", rows=32_000, concurrency=256, latency_ms=200.0, faults=dict(FAULT_MIX),
                 hang_s=30.0, request_timeout_s=10.0,
                 description="5% 429 (Retry-After 1), 2% 500, 1% hangs (engine timeout 10 s), "
                             "1% malformed JSON, 2% answers without markers"),
        Scenario("scale", rows=1_000_000, concurrency=256, latency_ms=0.0,
                 description="1,000,000 rows at zero latency: memory and per-row CPU"),
    )
}

# ---------------------------------------------------------------------------------------------
# arithmetic (pure)
# ---------------------------------------------------------------------------------------------


def theoretical_limit(
    concurrency: int,
    mean_latency_s: float,
    rpm: float | None = None,
    tpm: float | None = None,
    tokens_per_request: float | None = None,
) -> tuple[float, str | None]:
    """The best possible rows/s (one request per row) and what binds it.

    rows/s = min(concurrency / mean latency, rpm / 60, tpm / 60 / tokens per request). A term is
    unbounded when its input is missing (or the latency is 0); ``(inf, None)`` when all are.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    if mean_latency_s < 0:
        raise ValueError("mean_latency_s must be >= 0")
    terms: list[tuple[float, str]] = []
    if mean_latency_s > 0:
        terms.append((concurrency / mean_latency_s, "concurrency/latency"))
    if rpm is not None:
        if rpm <= 0:
            raise ValueError("rpm must be > 0")
        terms.append((rpm / 60.0, "requests/min"))
    if tpm is not None:
        if tpm <= 0 or not tokens_per_request or tokens_per_request <= 0:
            raise ValueError("tpm needs tpm > 0 and tokens_per_request > 0")
        terms.append((tpm / 60.0 / tokens_per_request, "tokens/min"))
    if not terms:
        return math.inf, None
    return min(terms)


def fault_adjusted_limit(
    concurrency: int,
    mean_latency_s: float,
    faults: dict[str, float],
    request_timeout_s: float,
) -> float:
    """Rows/s the in-flight window allows once injected faults take their share of it.

    Slot time per attempt: an injected 429 answers at once (0), a hang holds its slot until the
    engine's timeout (``request_timeout_s``), every other attempt the mean latency. Attempts per row:
    1 / (1 - p(retried)), where 429, 500, 503, hang, drop and malformed are retried and a no-marker
    answer is final. Retry waits hold no slot. rows/s = concurrency / (attempts per row x slot time).
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    p = {k.removeprefix("rate_"): v for k, v in faults.items()}
    p429, hang = p.get("429", 0.0), p.get("hang", 0.0)
    retried = sum(p.get(k, 0.0) for k in ("429", "500", "503", "hang", "drop", "malformed"))
    if retried >= 1.0:
        return 0.0
    slot_s = (1.0 - p429 - hang) * mean_latency_s + hang * request_timeout_s
    if slot_s <= 0:
        return math.inf
    return concurrency * (1.0 - retried) / slot_s


def achieved_fraction(rows_per_s: float, limit_rows_per_s: float) -> float | None:
    """measured / limit; None when there is no finite limit (a CPU-bound run)."""
    if not math.isfinite(limit_rows_per_s) or limit_rows_per_s <= 0:
        return None
    return rows_per_s / limit_rows_per_s


def per_thousand(value: float, rows: int) -> float | None:
    return value * 1000.0 / rows if rows > 0 else None


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def _data_name(rows: int) -> str:
    return f"ultrafeedback-{rows}-seed{DATA_SEED}.parquet"


def _cached_rows(p: Path) -> int | None:
    stem = p.name
    if not (stem.startswith("ultrafeedback-") and stem.endswith(f"-seed{DATA_SEED}.parquet")):
        return None
    try:
        return int(stem.split("-")[1])
    except ValueError:
        return None


def ensure_data(rows: int, data_dir: Path, *, log: Callable[[str], None] | None = None) -> tuple[Path, int]:
    """A cached input holding at least ``rows`` rows: (path, rows in the file).

    Generation is prefix-stable (the first n rows of any size are identical), so the smallest cached
    file with enough rows is used (the run reads only ``rows`` of it: ``input.limit``); otherwise a file
    of exactly ``rows`` rows is written (to a temp name, then renamed: an interrupted bench leaves no
    truncated cache).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    have = sorted((n, p) for p in data_dir.glob("ultrafeedback-*.parquet") if (n := _cached_rows(p)) is not None)
    for n, p in have:
        if n >= rows:
            return p, n
    from engine.tools.synthetic import write_sample

    path = data_dir / _data_name(rows)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    t0 = time.perf_counter()
    if log:
        log(f"generating {rows:,} input rows (once; cached in {data_dir})")
    try:
        write_sample(tmp, rows, seed=DATA_SEED, fmt="parquet")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    if log:
        log(f"generated {path.name} in {time.perf_counter() - t0:.1f}s")
    return path, rows


def write_job(sc: Scenario, input_path: Path, run_dir: Path, url: str, path: Path) -> Path:
    """The engine's YAML job for a scenario (UltraFeedback columns, distilabel prompt)."""
    cfg = {
        "input": {"path": str(input_path.resolve()), "limit": sc.rows},
        "prompt": {"variant": "distilabel"},
        "endpoints": [{"url": url, "model": "mock-clair", "max_concurrency": sc.concurrency}],
        "generation": {"temperature": 0.7, "max_tokens": sc.max_tokens},
        "output": {"dir": str(run_dir.resolve())},
        "retry": {"base_delay_s": sc.retry_base_delay_s},
        "timeouts": {"request_s": sc.request_timeout_s},
        "run": {"progress": "off"},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------
# sampling: the mock's counters and the engine's /proc entries
# ---------------------------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def proc_cpu_s(pid: int) -> float | None:
    """user+system CPU seconds of a live process (all threads), from /proc; None when unavailable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14, 15 of stat)


def proc_hwm_mb(pid: int) -> float | None:
    """Peak RSS so far (VmHWM) of a live process. ``wait4``'s ``ru_maxrss`` is not used for this: a child
    started by ``fork``/``vfork`` + ``exec`` inherits the high-water mark of the parent's memory."""
    return proc_status_mb(pid).get("VmHWM")


def proc_status_mb(pid: int) -> dict[str, float]:
    """VmHWM, RssAnon (private memory) and RssFile (mapped file pages: mostly shared libraries) in MB.
    RssFile depends on the page cache: library files just written by ``pip install`` sit in large
    folios (ext4, Linux >= 6.16), and mapping one page maps the whole folio (+35-40 MB measured)."""
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                key = line.split(b":", 1)[0]
                if key in (b"VmHWM", b"RssAnon", b"RssFile"):
                    out[key.decode()] = int(line.split()[1]) / 1024
    except (OSError, IndexError, ValueError):
        pass
    return out


def proc_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return None


class MockStats:
    """``GET /stats`` over one kept-alive connection (a new TCP connection per sample would cost more)."""

    def __init__(self, url: str):
        base = url.removesuffix("/v1")
        hostport = base.split("://", 1)[1]
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)
        self.conn: http.client.HTTPConnection | None = None

    def get(self) -> dict[str, Any]:
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                self.conn.request("GET", "/stats")
                r = self.conn.getresponse()
                return orjson.loads(r.read())
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def chat_responses(stats: dict[str, Any]) -> int:
    """Chat-completion answers the mock has sent (its status counts also hold GET /models answers)."""
    return sum(stats.get("status", {}).values()) - stats.get("other_requests", 0)


@dataclass
class Sample:
    t: float  # seconds since the engine process was started
    requests: int  # chat requests received by the mock
    responses: int  # chat responses sent
    completions: int  # 200 answers with a completion
    status_429: int
    in_flight: int  # chat requests the mock holds now
    mock_cpu_s: float
    engine_cpu_s: float | None
    engine_rss_mb: float | None
    engine_hwm_mb: float | None = None
    engine_anon_mb: float | None = None  # private memory (RssAnon)
    engine_file_mb: float | None = None  # mapped file pages (RssFile)


def _from_stats(t: float, s: dict[str, Any], cpu: float | None, rss: float | None = None,
                mem: dict[str, float] | None = None) -> Sample:
    mem = mem or {}
    return Sample(t=t, requests=s["requests"], responses=chat_responses(s), completions=s["completions"],
                  status_429=s.get("status", {}).get("429", 0), in_flight=s.get("in_flight", 0),
                  mock_cpu_s=s["cpu_s"], engine_cpu_s=cpu, engine_rss_mb=rss, engine_hwm_mb=mem.get("VmHWM"),
                  engine_anon_mb=mem.get("RssAnon"), engine_file_mb=mem.get("RssFile"))


def _sample(t0: float, mock: MockStats, pid: int) -> Sample:
    s = mock.get()
    return _from_stats(time.perf_counter() - t0, s, proc_cpu_s(pid), proc_rss_mb(pid), proc_status_mb(pid))


def steady_window(samples: list[Sample]) -> tuple[float, float] | None:
    """(start, end) in seconds since the engine's start: first chat request to last chat response,
    each placed halfway between the sample that first shows it and the one before."""
    start = end = None
    for prev, cur in zip(samples, samples[1:], strict=False):
        if start is None and cur.requests > prev.requests:
            start = (prev.t + cur.t) / 2
        if cur.responses > prev.responses:
            end = (prev.t + cur.t) / 2
    if start is None or end is None or end <= start:
        return None
    return start, end


def _at(samples: list[Sample], t: float, attr: str) -> float:
    """A counter at time t, linearly interpolated between samples."""
    prev = samples[0]
    for cur in samples:
        if cur.t >= t:
            if cur.t == prev.t:
                return float(getattr(cur, attr))
            w = (t - prev.t) / (cur.t - prev.t)
            return getattr(prev, attr) + w * (getattr(cur, attr) - getattr(prev, attr))
        prev = cur
    return float(getattr(samples[-1], attr))


def _time_when(samples: list[Sample], attr: str, value: float) -> float | None:
    """The first time a counter reaches ``value`` (interpolated)."""
    prev = samples[0]
    for cur in samples:
        v = getattr(cur, attr)
        if v >= value:
            pv = getattr(prev, attr)
            if v == pv or cur is prev:
                return cur.t
            return prev.t + (value - pv) / (v - pv) * (cur.t - prev.t)
        prev = cur
    return None


# ---------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gb": mem,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def run_scenario(
    sc: Scenario,
    *,
    out_dir: Path = OUT_DIR,
    data_dir: Path | None = None,
    input_path: Path | None = None,
    keep: bool = False,
    profile: Path | None = None,
    engine_cmd: list[str] | None = None,
    env: dict[str, str] | None = None,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run one scenario and return its figures (see the module docstring for the definitions).

    ``out_dir/runs/NAME/`` holds the job, the engine's log and (with ``keep``) its run directory.
    ``input_path``: a Parquet input of at least ``sc.rows`` rows (default: the cached generated one).
    ``profile``: run the engine under cProfile and write the stats there. ``engine_cmd`` replaces
    ``[python, -m, engine.cli]`` (experiments: another interpreter, a wrapper); ``env`` is added to the
    engine's environment (not the mock's).
    """
    from engine.tools.mockserver_proc import MockProcess

    if input_path is None:
        input_path, _ = ensure_data(sc.rows, data_dir or out_dir / "data", log=log)
    work = out_dir / "runs" / sc.name
    run_dir = work / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    work.mkdir(parents=True, exist_ok=True)
    with MockProcess(sc.mock_args()) as mock:
        job = write_job(sc, input_path, run_dir, mock.url, work / "job.yaml")
        ms = MockStats(mock.url)
        try:
            res = _run_engine(sc, job, run_dir, work, ms, profile, engine_cmd, env, log)
        finally:
            ms.close()
    res["date"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    res["machine"] = machine_info()
    res["command"] = command or f"clair bench --scenario {sc.name}"
    if not keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        res["run_dir"] = str(run_dir)
    return res


def _run_engine(
    sc: Scenario,
    job: Path,
    run_dir: Path,
    work: Path,
    ms: MockStats,
    profile: Path | None,
    engine_cmd: list[str] | None,
    env: dict[str, str] | None,
    log: Callable[[str], None] | None,
) -> dict[str, Any]:
    before = ms.get()
    if engine_cmd is not None:
        cmd = list(engine_cmd)
    elif profile is not None:
        cmd = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "engine.cli"]
    else:
        cmd = [sys.executable, "-m", "engine.cli"]
    cmd += ["run", str(job), "--progress", "off"]
    for item in sc.engine_set:
        cmd += ["--set", item]
    if log:
        log(f"{sc.name}: {sc.rows:,} rows, {sc.concurrency} in flight, mock {sc.latency_ms:g} ms "
            f"{sc.latency_dist}" + (f", {sc.rpm} rpm" if sc.rpm else "") + (", faults" if sc.faults else ""))
    engine_log = work / "engine.log"
    with engine_log.open("wb") as logf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                env={**os.environ, **env} if env else None)
        samples: list[Sample] = [_from_stats(0.0, before, 0.0)]
        ru = None
        status = 0
        next_progress = time.perf_counter() + 30
        stall_s = max(STALL_S, 2 * sc.request_timeout_s + 60) if sc.request_timeout_s < 600 else STALL_S
        last_change, last_key = 0.0, None
        try:
            while True:
                pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                cur = _sample(t0, ms, proc.pid)
                samples.append(cur)
                key = (cur.requests, cur.responses)
                if key != last_key:
                    last_key, last_change = key, cur.t
                elif cur.t - last_change > stall_s:
                    tail = engine_log.read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"{sc.name}: the mock saw no request and sent no answer for {stall_s:.0f}s "
                                       f"while the engine was running; the engine was stopped. Its log ends: {tail}")
                if log and time.perf_counter() >= next_progress:
                    s = samples[-1]
                    log(f"  {s.t:6.0f}s  {s.responses - samples[0].responses:,} answers, "
                        f"engine RSS {s.engine_rss_mb or 0:.0f} MB")
                    next_progress += 30
                time.sleep(POLL_S)
        except BaseException:
            proc.kill()
            os.waitpid(proc.pid, 0)
            proc.returncode = -9
            raise
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    after = ms.get()
    samples.append(_from_stats(wall, after, None))
    if proc.returncode != 0:
        tail = engine_log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the engine exited with code {proc.returncode}: {tail}")
    with contextlib.suppress(OSError):  # the sampled series, for a closer look (not summarised)
        (work / "samples.jsonl").write_bytes(b"".join(orjson.dumps(dataclasses.asdict(s)) + b"\n" for s in samples))
    rep = orjson.loads((run_dir / "report.json").read_bytes())
    return summarize(sc, rep, samples, before, after, ru, wall)


def summarize(
    sc: Scenario,
    rep: dict[str, Any],
    samples: list[Sample],
    before: dict[str, Any],
    after: dict[str, Any],
    ru: Any,
    wall: float,
) -> dict[str, Any]:
    rows = rep["rows_done"] - rep["resumed_from"]
    win = steady_window(samples)
    window_s = (win[1] - win[0]) if win else None
    rows_per_s = rows / window_s if window_s else 0.0
    tokens_per_s = rep["completion_tokens"] / window_s if window_s else 0.0
    mean_lat = sc.latency_ms / 1000.0
    tokens_per_request = None
    if sc.tpm is not None:  # what the mock charges: prompt + max_tokens
        n = max(1, after["requests"] - before["requests"])
        tokens_per_request = (after["prompt_tokens"] - before["prompt_tokens"]) / n + sc.max_tokens
    limit, bound = theoretical_limit(sc.concurrency, mean_lat, sc.rpm, sc.tpm, tokens_per_request)
    frac = achieved_fraction(rows_per_s, limit)

    # rows/s between 10% and 90% of the answers: the fill phase, without ramp-up and the tail's drain
    n0 = samples[0].responses
    total = samples[-1].responses - n0
    mid = None
    if total >= 20:
        ta = _time_when(samples, "responses", n0 + 0.1 * total)
        tb = _time_when(samples, "responses", n0 + 0.9 * total)
        if ta is not None and tb is not None and tb > ta:
            mid = 0.8 * total / (tb - ta) * (rows / total)

    cpu_total = ru.ru_utime + ru.ru_stime
    cpu_window = None
    if win:
        a, b = _at(samples, win[0], "engine_cpu_s"), _at(samples, win[1], "engine_cpu_s")
        cpu_window = b - a
    mock_cpu = after["cpu_s"] - before["cpu_s"]
    mock_cpu_window = (_at(samples, win[1], "mock_cpu_s") - _at(samples, win[0], "mock_cpu_s")) if win else None
    mock_util = mock_cpu_window / window_s if (window_s and mock_cpu_window is not None) else None
    cores = os.cpu_count() or 1
    rss_at = {}
    live = [s for s in samples if s.engine_rss_mb is not None]
    for pct in (10, 50, 90):
        t = _time_when(samples, "responses", n0 + pct / 100 * total) if total else None
        if t is not None and live:
            near = min(live, key=lambda s, t=t: abs(s.t - t))  # type: ignore[misc]
            rss_at[f"{pct}%"] = round(near.engine_rss_mb or 0.0, 1)

    ep = rep["endpoints"][0] if rep.get("endpoints") else {}
    ep_lat = ep.get("latency", {})
    in_win = [s for s in samples[1:-1] if win and win[0] <= s.t <= win[1]]
    mean_in_flight = sum(s.in_flight for s in in_win) / len(in_win) if in_win else None
    status = {k: after["status"].get(k, 0) - before["status"].get(k, 0) for k in after.get("status", {})}
    status = {k: v for k, v in status.items() if v}
    responses = sum(status.values()) - (after["other_requests"] - before["other_requests"])
    res: dict[str, Any] = {
        "scenario": sc.name,
        "description": sc.description,
        "params": sc.params(),
        "rows": rows,
        "rows_ok": rep["rows_ok"],
        "rows_flagged": rep["rows_flagged"],
        "rows_failed": rep["rows_failed"],
        "requests": rep["requests"],
        "retries": rep["retries"],
        "window_s": _r(window_s),
        "window_start_s": _r(win[0]) if win else None,
        "engine_wall_s": rep["wall_s"],
        "process_wall_s": _r(wall),
        "rows_per_s": _r(rows_per_s),
        "rows_per_s_10_90": _r(mid),
        "output_tokens_per_s": _r(tokens_per_s, 1),
        "limit_rows_per_s": _r(limit) if math.isfinite(limit) else None,
        "limit_bound_by": bound,
        "achieved_fraction": _r(frac, 4),
        "engine": {
            "cpu_s": _r(cpu_total),
            "cpu_user_s": _r(ru.ru_utime),
            "cpu_system_s": _r(ru.ru_stime),
            "cpu_ms_per_row": _r(cpu_total * 1000 / rows) if rows else None,
            "cpu_s_per_1000_rows": _r(per_thousand(cpu_total, rows)),
            "cpu_s_window": _r(cpu_window),
            "cpu_ms_per_row_window": _r(cpu_window * 1000 / rows) if (rows and cpu_window is not None) else None,
            "cpu_util_window": _r(cpu_window / window_s) if (window_s and cpu_window is not None) else None,
            "peak_rss_mb": _r(max((x.engine_hwm_mb or 0.0) for x in samples), 1),
            "peak_anon_mb": _r(max((x.engine_anon_mb or 0.0) for x in samples), 1),
            "peak_file_mb": _r(max((x.engine_file_mb or 0.0) for x in samples), 1),
            "rss_mb_at_progress": rss_at,
        },
        "mock": {
            "cpu_s": _r(mock_cpu),
            "cpu_util_window": _r(mock_util),
            "saturated": bool(mock_util is not None and mock_util >= MOCK_SATURATED),
            "machine_cpu_util_window": _r(((cpu_window or 0) + (mock_cpu_window or 0)) / window_s / cores)
            if window_s else None,
            "status": status,
            "faults": {k: v - before["faults"].get(k, 0) for k, v in after["faults"].items()
                       if v - before["faults"].get(k, 0)},
            "limited": {k: v - before["limited"].get(k, 0) for k, v in after["limited"].items()
                        if v - before["limited"].get(k, 0)},
            "peak_in_flight": after["peak_in_flight"],
            "mean_in_flight_window": _r(mean_in_flight, 1),
        },
        "endpoint": {k: ep.get(k) for k in ("concurrency_limit", "rpm_limit", "rate_limited", "errors",
                                             "breaker_opened", "state")},
        "latency": {
            "request": _lat(ep_lat),
            "row": _lat(rep["latency"]),
            "ttfb": None,
            "ttfb_note": TTFB_NOTE,
        },
        "share_429": _r(status.get("429", 0) / responses, 4) if responses else None,
    }
    if sc.faults:
        res["limit_fault_adjusted_rows_per_s"] = _r(
            min(limit, fault_adjusted_limit(sc.concurrency, mean_lat, sc.faults, sc.request_timeout_s)))
        adj = res["limit_fault_adjusted_rows_per_s"]
        res["achieved_fraction_fault_adjusted"] = _r(achieved_fraction(rows_per_s, adj), 4) if adj else None
    if sc.window_s and win:
        res["ratelimit"] = rate_window(samples, win[0], sc.window_s, sc.rpm)
    res["targets"] = check_targets(sc, res)
    return res


def rate_window(samples: list[Sample], start: float, window_s: float, rpm: int | None) -> dict[str, Any]:
    """Admitted (200) and sent requests per minute over ``window_s`` from ``start`` (or what the run had)."""
    end = min(start + window_s, samples[-1].t)
    span = end - start
    if span <= 0:
        return {}
    ok = _at(samples, end, "completions") - _at(samples, start, "completions")
    sent = _at(samples, end, "requests") - _at(samples, start, "requests")
    r429 = _at(samples, end, "status_429") - _at(samples, start, "status_429")
    per_min = ok * 60 / span
    return {
        "window_s": _r(span),
        "full_window": span >= window_s - 1e-6,
        "completions_per_min": _r(per_min, 1),
        "sent_per_min": _r(sent * 60 / span, 1),
        "share_429": _r(r429 / sent, 4) if sent else None,
        "fraction_of_rpm": _r(per_min / rpm, 4) if rpm else None,
    }


#: the issue's targets (2-core machine, mock and engine on the same machine)
TARGETS = {"latency_fraction": 0.90, "cpu_ms_per_row": 1.0, "peak_rss_mb": 250.0,
           "ratelimited_fraction": 0.90, "ratelimited_429_share": 0.05}


def check_targets(sc: Scenario, res: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    e = res["engine"]
    if e["cpu_ms_per_row"] is not None:
        out["cpu_ms_per_row<=1.0"] = e["cpu_ms_per_row"] <= TARGETS["cpu_ms_per_row"]
    out["peak_rss_mb<=250"] = e["peak_rss_mb"] <= TARGETS["peak_rss_mb"]
    if sc.name == "latency" and res["achieved_fraction"] is not None:
        out["achieved_fraction>=0.90"] = res["achieved_fraction"] >= TARGETS["latency_fraction"]
    if sc.name == "ratelimited" and res.get("ratelimit"):
        rl = res["ratelimit"]
        if rl.get("fraction_of_rpm") is not None:
            out["rpm_fraction>=0.90"] = rl["fraction_of_rpm"] >= TARGETS["ratelimited_fraction"]
        if res["share_429"] is not None:
            out["429_share<0.05"] = res["share_429"] < TARGETS["ratelimited_429_share"]
    return out


def _lat(s: dict[str, Any]) -> dict[str, Any]:
    return {k: _r(s.get(k), 4) for k in ("count", "mean_s", "p50_s", "p90_s", "p99_s", "max_s")}


def _r(x: float | None, nd: int = 3) -> float | None:
    if x is None:
        return None
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return round(x, nd)


# ---------------------------------------------------------------------------------------------
# display and the command
# ---------------------------------------------------------------------------------------------


def _f(x: Any, spec: str = ".1f", unit: str = "") -> str:
    return "n/a" if x is None else f"{x:{spec}}{unit}"


def _pct(x: float | None, spec: str = ".1f") -> str:
    return _f(x if x is None else x * 100, spec, "%")


def fault_summary(res: dict[str, Any]) -> str | None:
    """The fault-adjusted limit sentence (``faults`` scenario), for the terminal and RESULTS.md."""
    if res.get("limit_fault_adjusted_rows_per_s") is None:
        return None
    return (f"fault-adjusted limit (429s answer at once, hangs hold a slot for the "
            f"{res['params']['request_timeout_s']:g} s timeout, retried attempts counted) "
            f"{_f(res['limit_fault_adjusted_rows_per_s'])} rows/s; achieved {_pct(res['achieved_fraction_fault_adjusted'])}")


def rate_limit_summary(res: dict[str, Any]) -> str | None:
    """The requests/min sentence (``ratelimited`` scenario), for the terminal and RESULTS.md."""
    w = res.get("ratelimit")
    if not w:
        return None
    return (f"{_f(w.get('completions_per_min'))} admitted requests/min over the first {_f(w.get('window_s'), '.0f')} s "
            f"({_pct(w.get('fraction_of_rpm'))} of {res['params']['rpm']}), {_f(w.get('sent_per_min'))} sent/min; "
            f"429 share {_pct(w.get('share_429'))} in that window, {_pct(res.get('share_429'))} over the run")


def format_result(res: dict[str, Any]) -> str:
    e, m, lat = res["engine"], res["mock"], res["latency"]
    req = lat["request"]
    lines = [
        f"scenario {res['scenario']}: {res['rows']:,} rows, {res['requests']:,} requests, {res['retries']:,} retries"
        + (f", failed {res['rows_failed']}" if res["rows_failed"] else ""),
        f"  throughput     {_f(res['rows_per_s'])} rows/s, {_f(res['output_tokens_per_s'], ',.0f')} output tokens/s "
        f"over the {_f(res['window_s'])}s window (first request to last answer; engine wall incl. start-up "
        f"{_f(res['engine_wall_s'])}s)",
        f"  limit          {_f(res['limit_rows_per_s'])} rows/s ({res['limit_bound_by'] or 'none: CPU-bound'}); "
        f"achieved {_f(res['achieved_fraction'] and res['achieved_fraction'] * 100, '.1f', '%')}"
        f"  (10-90% phase: {_f(res['rows_per_s_10_90'])} rows/s)",
        f"  engine CPU     {_f(e['cpu_s_per_1000_rows'], '.3f')} s per 1,000 rows ({_f(e['cpu_ms_per_row'], '.3f')} ms/row "
        f"end to end; {_f(e['cpu_ms_per_row_window'], '.3f')} ms/row in the window, "
        f"{_f(e['cpu_util_window'] and e['cpu_util_window'] * 100, '.0f', '%')} of a core)",
        f"  engine memory  peak RSS {_f(e['peak_rss_mb'])} MB; RSS at 10/50/90% of rows: "
        + ", ".join(f"{v:.0f}" for v in e["rss_mb_at_progress"].values()) + " MB"
        + (f" (sampled peaks: private {_f(e.get('peak_anon_mb'))} MB, mapped files {_f(e.get('peak_file_mb'))} MB)"
           if e.get("peak_anon_mb") else ""),
        f"  mock           CPU {_f(m['cpu_s'])} s, {_f(m['cpu_util_window'] and m['cpu_util_window'] * 100, '.0f', '%')}"
        f" of a core{' — SATURATED: the mock may be what limits this run' if m['saturated'] else ''}; "
        f"machine {_f(m['machine_cpu_util_window'] and m['machine_cpu_util_window'] * 100, '.0f', '%')} busy",
        f"  in flight      mean {_f(m['mean_in_flight_window'])} at the mock over the window (limit "
        f"{res['params']['concurrency']}; engine's final concurrency limit {res['endpoint'].get('concurrency_limit')}"
        + (f", learned rpm {_f(res['endpoint'].get('rpm_limit'))}" if res["endpoint"].get("rpm_limit") else "") + ")",
        f"  latency        request p50 {_f(req['p50_s'], '.3f')}s p90 {_f(req['p90_s'], '.3f')}s "
        f"p99 {_f(req['p99_s'], '.3f')}s; time to first byte: n/a (non-streaming)",
    ]
    if (faults := fault_summary(res)) is not None:
        lines.append(f"  faults         {faults}; mock faults {m['faults']}")
    if (rate := rate_limit_summary(res)) is not None:
        lines.append(f"  rate limit     {rate}")
    if res["targets"]:
        lines.append("  targets        " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in res["targets"].items()))
    return "\n".join(lines)


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
        f" --{k.replace('_', '-')} {_num(v)}" for k, v in over.items())

    def log(msg: str) -> None:
        print(f"bench: {msg}", file=sys.stderr, flush=True)

    res = run_scenario(sc, out_dir=OUT_DIR, keep=args.keep, command=command, log=log)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2) + b"\n")
    print(format_result(res))
    print(f"results written to {out}")
    return 0
