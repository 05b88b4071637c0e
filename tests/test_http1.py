"""``engine.http1.Http1Client``: the lean HTTP/1.1 client of the chat calls, against servers on 127.0.0.1.

tests/test_client.py runs every chat-call test through both clients (aiohttp's and this one); here are
the things only this client owns: connection reuse, framing (Content-Length, chunked, end of
connection, bytes split anywhere), gzip/deflate, ``Connection: close``, a connection the server closed
while idle, a cancelled request's connection never reused, and the request it writes.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer

from engine.core.errors import ConnectError, RequestTimeout
from engine.http1 import Http1Client

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    """One request off a raw connection: its request line, headers (lower-cased names) and body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return lines[0].encode(), headers, body


class Raw:
    """A raw TCP server: ``handler`` serves each connection; ``connections`` counts them."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Raw:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def answer(body: bytes, *, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: %d\r\n" % len(body) + extra + b"\r\n" + body)


def keep_alive(reply: Callable[[bytes, dict[str, str], bytes], bytes]) -> Handler:
    """A handler answering every request on the connection with ``reply(line, headers, body)``."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line, headers, body = await read_request(reader)
            writer.write(reply(line, headers, body))
            await writer.drain()
    return handle


@pytest.fixture
async def http() -> AsyncIterator[Http1Client]:
    c = Http1Client(request_timeout_s=5.0, connect_timeout_s=5.0)
    yield c
    c.close()


async def test_sequential_requests_share_one_connection_and_the_request_is_well_formed(http: Http1Client) -> None:
    seen: list[tuple[bytes, dict[str, str], bytes]] = []

    def reply(line: bytes, headers: dict[str, str], body: bytes) -> bytes:
        seen.append((line, headers, body))
        return answer(b'{"n": %d}' % len(seen), extra=b"X-RateLimit-Remaining-Requests: 7\r\n")

    async with Raw(keep_alive(reply)) as srv:
        for i in range(5):
            r = await http.post(srv.url + "/v1/chat/completions?api-version=1", {"Authorization": "Bearer k",
                                                                                   "Content-Type": "application/json"},
                                b'{"i": %d}' % i)
            assert (r.status, orjson.loads(r.body)) == (200, {"n": i + 1})
            assert r.content_type == "application/json"
            assert r.headers["x-ratelimit-remaining-requests"] == "7"
        assert srv.connections == 1
    line, headers, body = seen[-1]
    assert line == b"POST /v1/chat/completions?api-version=1 HTTP/1.1"
    assert headers["host"] == srv.url.removeprefix("http://")
    assert headers["authorization"] == "Bearer k" and headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(body)) and body == b'{"i": 4}'


async def test_concurrent_requests_open_one_connection_each_then_reuse_them(http: Http1Client) -> None:
    gate = asyncio.Event()
    waiting = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal waiting
        while True:
            await read_request(reader)
            waiting += 1
            if waiting >= 4:
                gate.set()
            await gate.wait()
            writer.write(answer(b"{}"))
            await writer.drain()

    async with Raw(handle) as srv:
        await asyncio.gather(*(http.post(srv.url + "/x", {}, b"{}") for _ in range(4)))
        assert srv.connections == 4
        await asyncio.gather(*(http.post(srv.url + "/x", {}, b"{}") for _ in range(4)))
        assert srv.connections == 4  # the second wave reused the four


@pytest.mark.parametrize("split", [1, 7, 4096])
async def test_chunked_answers_split_anywhere_are_read_whole(http: Http1Client, split: int) -> None:
    payload = orjson.dumps({"text": "é" * 3000})
    chunks = b"".join(b"%x\r\n" % len(payload[i:i + 1000]) + payload[i:i + 1000] + b"\r\n"
                      for i in range(0, len(payload), 1000))
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n" + chunks + b"0\r\n\r\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            for i in range(0, len(raw), split):
                writer.write(raw[i:i + split])
                await writer.drain()

    async with Raw(handle) as srv:
        for _ in range(2):
            r = await http.post(srv.url + "/x", {}, b"{}")
            assert r.body == payload
        assert srv.connections == 1


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
async def test_compressed_answers_are_decoded(http: Http1Client, encoding: str) -> None:
    payload = orjson.dumps({"text": "abc" * 1000})
    if encoding == "gzip":
        data = gzip.compress(payload)
    elif encoding == "deflate":
        data = zlib.compress(payload)
    else:
        c = zlib.compressobj(wbits=-15)
        data = c.compress(payload) + c.flush()
    name = encoding.removeprefix("raw-").encode()
    asked: list[str] = []

    def reply(line: bytes, headers: dict[str, str], body: bytes) -> bytes:
        asked.append(headers.get("accept-encoding", ""))
        return answer(data, extra=b"Content-Encoding: " + name + b"\r\n")

    async with Raw(keep_alive(reply)) as srv:
        r = await http.post(srv.url + "/x", {}, b"{}")
    assert r.body == payload
    assert asked == ["gzip, deflate"]


async def test_a_body_framed_by_the_end_of_the_connection_is_read(http: Http1Client) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"ok\": true}")
        await writer.drain()

    async with Raw(handle) as srv:
        r = await http.post(srv.url + "/x", {}, b"{}")
        assert orjson.loads(r.body) == {"ok": True}
        r = await http.post(srv.url + "/x", {}, b"{}")  # that connection is gone: a new one
        assert srv.connections == 2


async def test_connection_close_is_honoured(http: Http1Client) -> None:
    async with Raw(keep_alive(lambda *_: answer(b"{}", extra=b"Connection: close\r\n"))) as srv:
        for _ in range(3):
            assert (await http.post(srv.url + "/x", {}, b"{}")).status == 200
        assert srv.connections == 3


async def test_a_connection_the_server_closed_while_idle_is_not_reused(http: Http1Client) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"{}"))
        await writer.drain()
        # then close, as a server's keep-alive timeout does

    async with Raw(handle) as srv:
        await http.post(srv.url + "/x", {}, b"{}")
        for _ in range(20):  # let the close arrive
            await asyncio.sleep(0.01)
        assert (await http.post(srv.url + "/x", {}, b"{}")).status == 200
        assert srv.connections == 2


async def test_a_cancelled_request_never_lends_its_connection_to_the_next(http: Http1Client) -> None:
    """The first request is cancelled before its (late) answer arrives; the next request must get its own
    answer, not the late one."""
    release = asyncio.Event()
    n = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal n
        while True:
            await read_request(reader)
            n += 1
            mine = n
            if mine == 1:
                await release.wait()
            writer.write(answer(b'{"for": %d}' % mine))
            await writer.drain()

    async with Raw(handle) as srv:
        first = asyncio.create_task(http.post(srv.url + "/x", {}, b"{}"))
        while n < 1:
            await asyncio.sleep(0.005)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        release.set()
        r = await http.post(srv.url + "/x", {}, b"{}")
        assert orjson.loads(r.body) == {"for": 2}


async def test_a_timed_out_request_raises_request_timeout_and_its_connection_is_dropped() -> None:
    http = Http1Client(request_timeout_s=0.1, connect_timeout_s=1.0)
    hold = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await hold.wait()

    async with Raw(handle) as srv:
        with pytest.raises(RequestTimeout) as info:
            await http.post(srv.url + "/x", {}, b"{}")
        assert info.value.kind == "timeout" and info.value.retryable
        assert not http._idle.get(("http", "127.0.0.1", int(srv.url.rsplit(":", 1)[1])))
        hold.set()
    http.close()


@pytest.mark.parametrize("value", ["sk-abc\n", "a\r\nX-Injected: 1"])
async def test_a_header_value_with_a_line_break_is_refused_not_sent(http: Http1Client, value: str) -> None:
    async with Raw(keep_alive(lambda *_: answer(b"{}"))) as srv:
        with pytest.raises(ConnectError, match="line break"):
            await http.post(srv.url + "/x", {"Authorization": value}, b"{}")
        assert srv.connections == 0


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "http:///x", "http://127.0.0.1:99999/x"])
async def test_a_url_that_is_not_http_is_a_connect_error(http: Http1Client, url: str) -> None:
    with pytest.raises(ConnectError):
        await http.post(url, {}, b"{}")


async def test_against_an_aiohttp_server_with_many_requests(http: Http1Client) -> None:
    """A real server (aiohttp's): 200 requests, 20 at a time, each answer the request's own."""
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        await asyncio.sleep(0.001)
        return web.json_response({"echo": orjson.loads(body)["i"]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", echo)
    async with TestServer(app, host="127.0.0.1") as ts:
        url = str(ts.make_url("/v1/chat/completions"))
        sem = asyncio.Semaphore(20)

        async def one(i: int) -> int:
            async with sem:
                r = await http.post(url, {"Content-Type": "application/json"}, orjson.dumps({"i": i}))
                return int(orjson.loads(r.body)["echo"])

        assert await asyncio.gather(*(one(i) for i in range(200))) == list(range(200))


# ----------------------------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def tls_server(ca: trustme.CA, reply: bytes) -> tuple[asyncio.Server, str]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await read_request(reader)
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    return srv, f"https://127.0.0.1:{srv.sockets[0].getsockname()[1]}/v1/chat/completions"


async def test_https_with_a_trusted_certificate_is_answered_on_one_connection(ca: trustme.CA) -> None:
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    http = Http1Client(request_timeout_s=5.0, connect_timeout_s=5.0, ssl_context=client_ctx)
    srv, url = await tls_server(ca, answer(b'{"ok": 1}'))
    try:
        for _ in range(3):
            r = await http.post(url, {"Authorization": "Bearer k"}, b"{}")
            assert (r.status, r.body) == (200, b'{"ok": 1}')
        assert len(http._idle[("https", "127.0.0.1", int(url.split(":")[2].split("/")[0]))]) == 1
    finally:
        http.close()
        srv.close()
        await srv.wait_closed()


async def test_https_with_an_untrusted_certificate_is_refused(ca: trustme.CA) -> None:
    """The default context (the system's CA store) does not trust the test CA: the request is never sent."""
    http = Http1Client(request_timeout_s=5.0, connect_timeout_s=5.0)
    srv, url = await tls_server(ca, answer(b"{}"))
    try:
        with pytest.raises(ConnectError, match="(?i)certificate"):
            await http.post(url, {"Authorization": "Bearer k"}, b"{}")
    finally:
        http.close()
        srv.close()
        await srv.wait_closed()


async def test_a_host_name_is_resolved_once_for_a_whole_wave_of_new_connections(
        http: Http1Client, monkeypatch: pytest.MonkeyPatch) -> None:
    lookups = 0
    real = Http1Client._lookup

    async def counting(target: object) -> list[tuple[str, int]]:
        nonlocal lookups
        lookups += 1
        return await real(target)  # type: ignore[arg-type]

    monkeypatch.setattr(Http1Client, "_lookup", staticmethod(counting))
    async with Raw(keep_alive(lambda *_: answer(b"{}"))) as srv:
        url = srv.url.replace("127.0.0.1", "localhost") + "/x"
        rs = await asyncio.gather(*(http.post(url, {}, b"{}") for _ in range(20)))
        assert {r.status for r in rs} == {200} and lookups == 1
        await http.post(srv.url + "/x", {}, b"{}")  # an IP literal: no lookup at all
        assert lookups == 1


async def test_a_path_with_non_ascii_characters_is_percent_encoded(http: Http1Client) -> None:
    seen: list[bytes] = []

    def reply(line: bytes, headers: dict[str, str], body: bytes) -> bytes:
        seen.append(line)
        return answer(b"{}")

    async with Raw(keep_alive(reply)) as srv:
        await http.post(srv.url + "/deployments/modèle/chat/completions?api-version=2024-06-01", {}, b"{}")
    assert seen == [b"POST /deployments/mod%C3%A8le/chat/completions?api-version=2024-06-01 HTTP/1.1"]
