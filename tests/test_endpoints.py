"""Endpoint trouble, end to end: the fault mix, a replica that dies mid-run, a 404 /models server."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow.parquet as pq
from helpers import assert_exactly_once, clair, make_input, read_ids, write_config

from engine.store import RunView
from engine.tools.mockserver_proc import MockProcess


def test_fault_mix_every_transient_fault_retried_only_markerless_rows_fail(tmp_path: Path) -> None:
    rows = 5000
    inp = make_input(tmp_path, rows)
    faults = ["--rate-429", "0.05", "--retry-after-s", "1", "--rate-500", "0.02", "--rate-hang", "0.01",
              "--hang-s", "30", "--rate-malformed", "0.01", "--rate-no-marker", "0.02", "--latency-ms", "5",
              "--seed", "3"]
    with MockProcess(faults) as m:
        cfg = write_config(
            tmp_path, m.url, inp,
            endpoints=[{"url": m.url, "model": "mock-clair", "max_concurrency": 128}],
            timeouts={"connect_s": 5, "request_s": 2},
            retry={"max_attempts": 10, "base_delay_s": 0.05, "max_delay_s": 1.0},
            output={"dir": str(tmp_path / "run"), "rows_per_shard": 1000},
        )
        r = clair("run", str(cfg))
        assert r.returncode == 0, r.stderr
        stats = m.stats()
    run = tmp_path / "run"
    assert_exactly_once(run, rows)
    f = RunView.open(run).current_failures()
    kinds = set(f.column("error_kind").to_pylist()) if f is not None else set()
    assert kinds == {"no_marker"}, kinds
    # every failure holds the raw output that could not be parsed
    assert all(f.column("raw_output").to_pylist())
    # the faults really happened and were retried
    injected = stats["faults"]
    assert injected["429"] > 100 and injected["500"] > 40 and injected["hang"] > 10 and injected["malformed"] > 10
    t = pq.read_table(run / "data", columns=["attempts"])
    assert max(t.column("attempts").to_pylist()) >= 2
    # markerless answers are about 2% of the rows
    assert 0.01 * rows < f.num_rows < 0.04 * rows
    report = orjson.loads((run / "report.json").read_bytes())
    assert report["retries"] >= injected["429"] + injected["500"]


def test_a_replica_that_dies_after_30s_loses_no_row(tmp_path: Path) -> None:
    # 2 x 4 in flight at 100 ms: at most 80 rows/s, so the replica dies with ~600 rows still to do
    rows = 3000
    inp = make_input(tmp_path, rows)
    with MockProcess(["--latency-ms", "100", "--fail-after-s", "30"]) as dying, \
         MockProcess(["--latency-ms", "100"]) as healthy:
        cfg = write_config(
            tmp_path, dying.url, inp,
            endpoints=[
                {"url": dying.url, "model": "mock-clair", "max_concurrency": 4, "name": "dying"},
                {"url": healthy.url, "model": "mock-clair", "max_concurrency": 4, "name": "healthy"},
            ],
            retry={"max_attempts": 8, "base_delay_s": 0.05, "max_delay_s": 0.5},
            output={"dir": str(tmp_path / "run"), "rows_per_shard": 2000},
        )
        r = clair("run", str(cfg), timeout=240)
        assert r.returncode == 0, r.stderr
        d, h = dying.stats(), healthy.stats()
    run = tmp_path / "run"
    assert_exactly_once(run, rows)
    data, fails = read_ids(run)
    assert not fails and len(data) == rows
    assert d["faults"]["fail_after"] > 0, "the replica never died: the run ended before 30 s"
    assert h["completions"] > d["completions"]
    report = orjson.loads((run / "report.json").read_bytes())
    eps = {e["name"]: e for e in report["endpoints"]}
    assert eps["dying"]["breaker_opened"] >= 1
    # the breaker kept the dead replica from eating the retries: few requests after it died
    assert d["faults"]["fail_after"] < 200


def test_endpoint_without_models_route_is_checked_by_the_first_request(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 30)
    with MockProcess(["--no-models-endpoint"]) as m:
        cfg = write_config(tmp_path, m.url, inp)
        r = clair("run", str(cfg))
        assert r.returncode == 0, r.stderr
        assert_exactly_once(tmp_path / "run", 30)
        # a wrong model on such a server: the requests are refused (404) and the run stops cleanly
        cfg = write_config(tmp_path, m.url, inp, endpoints=[{"url": m.url, "model": "nope"}],
                           output={"dir": str(tmp_path / "run2")})
        r = clair("run", str(cfg))
        assert r.returncode == 2 and "every endpoint refused" in r.stderr and "Traceback" not in r.stderr
        data, fails = read_ids(tmp_path / "run2")
        assert not data and not fails  # nothing was recorded as failed: a resume requests every row
