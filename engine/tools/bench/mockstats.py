"""The benchmark's client for the mock's ``GET /stats`` counters, over one kept-alive connection.

A new TCP connection per sample would cost more than the sample; a broken connection is reopened once
before the error is raised.
"""

from __future__ import annotations

import http.client
from typing import Any

import orjson

__all__ = ["MockStats"]


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

