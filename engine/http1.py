"""A lean HTTP/1.1 client for the hot path: POST a body, read the answer, keep the connection (L3).

Why not aiohttp here: at the request rates a rate-limited endpoint allows (tens to a few hundred per
second) every answer arrives alone, so the per-request cost of the client is paid once per row, per
stage. aiohttp's request path (ClientRequest, ClientResponse, timers, cookie and header merging, the
stream reader) costs ~220-300 us of CPU per request; this client costs ~50-80 us (measured in
``benchmarks/RESULTS.md``, session 6). aiohttp stays the engine's client for everything else (the
start-up checks' ``GET /models``), and ``run.http_client: aiohttp`` routes the chat calls through it too.

What it does: keep-alive connections per (scheme, host, port), reused last-in first-out (the warmest
first) and dropped after ``IDLE_S`` unused; TLS with the default CA store; bodies framed by
``Content-Length``, chunked or closed by the server; ``gzip``/``deflate`` answers decoded (we ask for them,
as aiohttp does); one timer per request from its start (a new connection also has the connect timeout).
Parsing is ``httptools`` (llhttp, the parser aiohttp and uvicorn use). Errors are ours
(:mod:`engine.core.errors`): :class:`ConnectError` when no usable HTTP answer came (refused, dropped, cut,
not HTTP), :class:`RequestTimeout` when it did not come in time. A request cancelled or failed midway
closes its connection: a late answer can never be read as the next request's.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import urllib.parse
import zlib
from collections import deque
from dataclasses import dataclass

import httptools

from engine.core.errors import ConnectError, RequestTimeout

__all__ = ["IDLE_S", "Http1Client", "Response"]

#: an idle connection unused this long is closed, not reused (aiohttp's keep-alive default)
IDLE_S = 15.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: a resolved host name is reused this long (aiohttp's ``ttl_dns_cache`` in engine.client)
_DNS_TTL_S = 300.0


@dataclass(frozen=True, slots=True)
class Response:
    """An answer: its status, its headers (names lower-cased; a repeated header keeps its last value),
    its decoded body, and its media type (``Content-Type`` without parameters, lower-cased;
    ``application/octet-stream`` when absent, as aiohttp reports it)."""

    status: int
    headers: dict[str, str]
    body: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class _Target:
    key: tuple[str, str, int]  # scheme, host, port: the connection pool's key
    host: str
    port: int
    tls: bool
    path: bytes  # path and query, as sent on the request line
    authority: str  # the Host header


def _target(url: str) -> _Target:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ConnectError(f"not an http(s) URL: {url[:200]}")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise ConnectError(f"bad port in URL: {url[:200]}") from None
    host = parts.hostname
    # percent-encoded as a browser would (already-encoded characters are kept): the request line is ASCII
    path = urllib.parse.quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                              safe="/?&=%:@!$'()*+,;~-._")
    shown = f"[{host}]" if ":" in host else host
    authority = shown if port == _DEFAULT_PORTS[scheme] else f"{shown}:{port}"
    return _Target((scheme, host, port), host, port, scheme == "https", path.encode("ascii", "strict"), authority)


def _head(target: _Target, headers: dict[str, str]) -> bytes:
    """The request line and headers, without Content-Length (added per request)."""
    lines = [b"POST " + target.path + b" HTTP/1.1", f"Host: {target.authority}".encode("latin-1"),
             b"Accept: */*", b"Accept-Encoding: gzip, deflate"]
    for k, v in headers.items():
        if any(c in k or c in v for c in "\r\n\0"):
            raise ConnectError(f"header {k!r} holds a line break: fix the configured value")
        if k.lower() not in ("host", "content-length", "accept-encoding", "connection", "transfer-encoding"):
            lines.append(f"{k}: {v}".encode("latin-1", "replace"))
    return b"\r\n".join(lines) + b"\r\n"


class _Conn(asyncio.Protocol):
    """One keep-alive connection; httptools calls its ``on_*`` methods while it parses an answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.status = 0
        self.headers_done = False
        self.keep_alive = True
        self.closed = False
        self.idle_since = 0.0

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():  # bytes nobody asked for: this connection is spoiled
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(ConnectError(f"not an HTTP answer ({type(e).__name__}: {' '.join(str(e).split())[:120]})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        w = self.waiter
        if w is None or w.done():
            return
        if self.headers_done and "content-length" not in self.headers and "transfer-encoding" not in self.headers:
            self._finish()  # a body framed by the end of the connection (HTTP/1.0 style)
            return
        what = "the server closed the connection before answering" if not self.headers_done else \
            "the server closed the connection in the middle of its answer"
        w.set_exception(ConnectError(f"ServerDisconnected: {what}" + (f" ({exc})" if exc else "")))

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self._finish()

    # -- ours
    def start(self) -> asyncio.Future[Response]:
        self.headers, self.body, self.status, self.headers_done = {}, [], 0, False
        self.waiter = asyncio.get_running_loop().create_future()
        return self.waiter

    def _finish(self) -> None:
        w = self.waiter
        if w is None or w.done():
            return
        body = b"".join(self.body)
        self.body = []
        encoding = self.headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate") and body:
            try:
                body = zlib.decompress(body, 47 if encoding != "deflate" else 15)
            except zlib.error:
                try:
                    body = zlib.decompress(body, -15)  # a raw deflate stream, as some servers send
                except zlib.error as e:
                    w.set_exception(ConnectError(f"an answer that does not decode as {encoding} ({e})"))
                    return
        ctype = self.headers.get("content-type")
        media = ctype.split(";", 1)[0].strip().lower() if ctype else "application/octet-stream"
        w.set_result(Response(self.status, self.headers, body, media))

    def expire(self) -> None:
        """The request's timer: no (complete) answer in time."""
        self._fail(RequestTimeout("no answer within the timeout (timeouts.request_s)"))

    def _fail(self, err: Exception) -> None:
        self.close()
        w = self.waiter
        if w is not None and not w.done():
            w.set_exception(err)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Http1Client:
    """POST over pooled keep-alive connections; one instance per run, used from one event loop."""

    def __init__(self, *, request_timeout_s: float, connect_timeout_s: float,
                 ssl_context: ssl.SSLContext | None = None):
        self.request_timeout_s = request_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._idle: dict[tuple[str, str, int], deque[_Conn]] = {}
        self._targets: dict[str, _Target] = {}
        self._heads: dict[tuple[str, tuple[tuple[str, str], ...]], bytes] = {}
        self._dns: dict[tuple[str, int], tuple[float, asyncio.Future[list[tuple[str, int]]]]] = {}
        self._literal: dict[tuple[str, int], list[tuple[str, int]]] = {}
        self._ssl = ssl_context  # None: the default context (the system's CA store), made on first use

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Response:
        """POST ``body`` to ``url``; the answer, whatever its status. Raises ConnectError / RequestTimeout."""
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = _target(url)
        hkey = (url, tuple(headers.items()))
        head = self._heads.get(hkey)
        if head is None:
            if len(self._heads) > 256:  # headers that change per request (a user's transport): no cache
                self._heads.clear()
            head = self._heads[hkey] = _head(target, headers)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout_s
        conn = self._take(target.key) or await self._connect(target)
        waiter = conn.start()
        timer = loop.call_at(deadline, conn.expire)
        try:
            assert conn.transport is not None
            conn.transport.writelines((head, b"Content-Length: %d\r\n\r\n" % len(body), body))
            resp = await waiter
        except BaseException:  # cancelled, timed out, dropped: a late answer must never be read as the next one's
            conn.close()
            raise
        finally:
            timer.cancel()
        conn.waiter = None
        if conn.keep_alive and not conn.closed:
            conn.idle_since = loop.time()
            self._idle.setdefault(target.key, deque()).append(conn)
        else:
            conn.close()
        return resp

    def _take(self, key: tuple[str, str, int]) -> _Conn | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle and now - idle[0].idle_since > IDLE_S:  # the coldest sit at the left
            idle.popleft().close()
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def _connect(self, target: _Target) -> _Conn:
        loop = asyncio.get_running_loop()
        addrs = await self._resolve(target)
        ctx = self._tls() if target.tls else None
        last: Exception | None = None
        for host, port in addrs:
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    _, proto = await loop.create_connection(
                        _Conn, host, port, ssl=ctx, server_hostname=target.host if ctx else None)
            except TimeoutError:
                last = RequestTimeout(f"no connection to {target.authority} within the timeout (timeouts.connect_s)")
                continue
            except (OSError, ssl.SSLError) as e:
                last = ConnectError(f"cannot connect to {target.authority}: {' '.join(str(e).split())[:160]}")
                continue
            return proto
        assert last is not None
        raise last

    async def _resolve(self, target: _Target) -> list[tuple[str, int]]:
        """The addresses to connect to: an IP literal as it is; a host name resolved once per ``_DNS_TTL_S``,
        by one lookup however many connections open at once (a run's first wave opens hundreds)."""
        key = (target.host, target.port)
        if key in self._literal:
            return self._literal[key]
        try:
            ipaddress.ip_address(target.host)
        except ValueError:
            pass
        else:
            addrs = self._literal[key] = [key]
            return addrs
        loop = asyncio.get_running_loop()
        hit = self._dns.get(key)
        if hit is not None and loop.time() < hit[0]:
            return await hit[1]
        lookup: asyncio.Future[list[tuple[str, int]]] = asyncio.ensure_future(self._lookup(target))
        self._dns[key] = (loop.time() + _DNS_TTL_S, lookup)
        try:
            return await asyncio.shield(lookup)
        except ConnectError:
            self._dns.pop(key, None)  # a failed lookup is not cached
            raise

    @staticmethod
    async def _lookup(target: _Target) -> list[tuple[str, int]]:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(target.host, target.port, type=1)  # SOCK_STREAM
        except OSError as e:
            raise ConnectError(f"cannot resolve {target.host}: {' '.join(str(e).split())[:160]}") from None
        addrs = list(dict.fromkeys((str(i[4][0]), int(i[4][1])) for i in infos))
        if not addrs:
            raise ConnectError(f"cannot resolve {target.host}: no address")
        return addrs

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def close(self) -> None:
        """Close the idle connections (a request in flight closes its own when it ends or is cancelled)."""
        for conns in self._idle.values():
            for c in conns:
                c.close()
        self._idle.clear()
