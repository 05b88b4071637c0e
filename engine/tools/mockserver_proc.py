"""Run ``clair mock-server`` as a child process (for the demo, tests and benchmarks)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from types import TracebackType

import orjson


class MockProcess:
    """Context manager: starts the mock on a free 127.0.0.1 port, stops it on exit."""

    def __init__(self, args: list[str] | None = None, *, startup_timeout_s: float = 20.0):
        self.args = args or []
        self.timeout = startup_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.port = 0

    def __enter__(self) -> MockProcess:
        cmd = [sys.executable, "-m", "engine.cli", "mock-server", "--port", "0", *self.args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + self.timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"mock-server did not start: {err.strip()[-500:]}")
            if "listening on" in line:
                self.url = line.strip().split("listening on ", 1)[1]
                self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])
                return self
        self.stop()
        raise RuntimeError("mock-server did not start in time")

    def stats(self) -> dict:
        import urllib.request

        with urllib.request.urlopen(self.url.removesuffix("/v1") + "/stats", timeout=10) as r:
            return orjson.loads(r.read())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            for s in (self.proc.stdout, self.proc.stderr):
                if s is not None:
                    with contextlib.suppress(Exception):
                        s.close()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
