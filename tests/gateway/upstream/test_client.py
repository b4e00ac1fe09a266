"""The upstream client against real sockets: servers that answer by script, well and badly
(keep-alive, chunks, bodies that end at close, informational answers, broken status
lines, bytes past an answer's end, a slow reader, TLS with a certificate of its own)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme

from gateway.errors import (
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamProtocolError,
)
from gateway.upstream import Origin, UpstreamClient
from gateway.upstream.connection import HIGH_WATER

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
POST = b"POST"
JSON = [(b"content-type", b"application/json")]


class Scripted:
    """A TCP server on a free port; each connection runs `handler`. Counts connections and
    the requests it read (by their request line)."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler, self.tls = handler, tls
        self.connections = 0
        self.active = 0
        self.max_active = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._run, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2)

    def origin(self, scheme: str = "http", tls: ssl.SSLContext | None = None) -> Origin:
        return Origin.of(f"{scheme}://127.0.0.1:{self.port}/v1", tls)

    async def _run(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self.handler(r, w)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.active -= 1
            w.close()


async def read_request(r: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """(request line, headers, body) of one request with a content-length."""
    head = await r.readuntil(b"\r\n\r\n")
    line, *rest = head[:-4].split(b"\r\n")
    headers = {k.lower(): v for k, _, v in (h.partition(b": ") for h in rest)}
    body = await r.readexactly(int(headers.get(b"content-length", b"0")))
    return line, headers, body


def answer(body: bytes, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-length: %d\r\n%s\r\n%s" % (status, len(body), extra, body)


async def keep_alive_echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while True:
        _, headers, body = await read_request(r)
        w.write(answer(b'{"echo": %d, "host": "%s"}' % (len(body), headers[b"host"])))
        await w.drain()


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    c = UpstreamClient()
    yield c
    await c.close()


async def test_one_connection_serves_many_calls_and_sends_what_it_was_given(client):
    seen: list[tuple[bytes, dict[bytes, bytes], bytes]] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            req = await read_request(r)
            seen.append(req)
            w.write(answer(b'{"ok": true}', extra=b"x-upstream: 1\r\n"))
            await w.drain()

    async with Scripted(handler) as srv:
        origin = srv.origin()
        for i in range(20):
            resp = await client.send(origin, POST, b"/v1/chat/completions?x=%d" % i,
                                     JSON, b'{"n": %d}' % i, 5)  # fmt: skip
            assert resp.status == 200
            assert resp.header(b"x-upstream") == b"1"
            assert await resp.read() == b'{"ok": true}'
            resp.release()
    assert srv.connections == 1 and client.connects == 1
    line, headers, body = seen[7]
    assert line == b"POST /v1/chat/completions?x=7 HTTP/1.1"
    assert headers[b"host"] == b"127.0.0.1:%d" % srv.port
    assert headers[b"content-type"] == b"application/json" and body == b'{"n": 7}'


async def test_a_chunked_stream_arrives_piece_by_piece(client):
    go_on = asyncio.Event()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n")  # fmt: skip
        w.write(b"d\r\ndata: first\n\n\r\n")
        await w.drain()
        await go_on.wait()  # the second piece waits until the first was read
        w.write(b"e\r\ndata: second\n\n\r\n0\r\n\r\n")
        await w.drain()
        await read_request(r)  # the connection is kept for the next call

    async with Scripted(handler) as srv:
        resp = await client.send(srv.origin(), POST, b"/v1/x", JSON, b"{}", 5)
        got = []
        async for chunk in resp.chunks():
            got.append(chunk)
            go_on.set()
        resp.release()
        assert got == [b"data: first\n\n", b"data: second\n\n"]
        assert client.idle_connections == 1


async def test_a_body_without_length_ends_with_the_connection(client):
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\npart one, ")
        await w.drain()
        w.write(b"part two")
        await w.drain()

    async with Scripted(handler) as srv:
        resp = await client.send(srv.origin(), POST, b"/v1/x", JSON, b"{}", 5)
        assert await resp.read() == b"part one, part two"
        resp.release()
        assert client.open_connections == 0  # never reused


async def test_an_answer_cut_short_is_an_error(client):
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")
        await w.drain()

    async with Scripted(handler) as srv:
        resp = await client.send(srv.origin(), POST, b"/v1/x", JSON, b"{}", 5)
        with pytest.raises(UpstreamClosed, match="middle of its answer"):
            await resp.read()
        resp.release()


async def test_informational_answers_are_skipped_and_204_has_no_body(client):
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + answer(b"fine"))
        await read_request(r)
        w.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await read_request(r)

    async with Scripted(handler) as srv:
        resp = await client.send(srv.origin(), POST, b"/v1/x", JSON, b"{}", 5)
        assert (resp.status, await resp.read(), resp.header(b"link")) == (200, b"fine", None)
        resp.release()
        resp = await client.send(srv.origin(), POST, b"/v1/x", JSON, b"{}", 5)
        assert (resp.status, await resp.read()) == (204, b"")
        resp.release()
    assert srv.connections == 1


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 2OO OK\r\ncontent-length: 0\r\n\r\n",  # letters in the status code
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 7\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n",
    ],
)
async def test_an_answer_that_is_not_http_is_a_protocol_error(client, reply: bytes):
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(reply)
        await w.drain()
        await asyncio.sleep(1)

    async with Scripted(handler) as srv:
        with pytest.raises(UpstreamProtocolError, match=r"not valid HTTP/1\.1"):
            await client.send(srv.origin(), POST, b"/v1/x", JSON, b"{}", 5)
    assert client.open_connections == 0


async def test_bytes_past_the_end_of_an_answer_retire_the_connection(client):
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await read_request(r)
            # One answer, and a second one nobody asked for (a desynchronised upstream).
            w.write(answer(b"first") + answer(b"smuggled"))
            await w.drain()

    async with Scripted(handler) as srv:
        for _ in range(3):
            resp = await client.send(srv.origin(), POST, b"/v1/x", JSON, b"{}", 5)
            assert await resp.read() == b"first"  # each call gets its own answer
            resp.release()
    assert srv.connections == 3  # and each on a new connection


async def test_late_bytes_on_an_idle_connection_retire_it(client):
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(answer(b"first"))
        await w.drain()
        await asyncio.sleep(0.2)
        w.write(answer(b"late"))  # while the connection sits in the pool
        await w.drain()
        await read_request(r)

    async with Scripted(handler) as srv:
        resp = await client.send(srv.origin(), POST, b"/v1/x", JSON, b"{}", 5)
        assert await resp.read() == b"first"
        resp.release()
        assert client.idle_connections == 1
        await asyncio.sleep(0.5)
        assert client.idle_connections == 0 and client.open_connections == 0


async def test_refused_and_unresolvable_origins(client):
    with contextlib.closing(__import__("socket").socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(UpstreamConnectError, match="cannot connect"):
            await client.send(Origin.of(f"http://127.0.0.1:{port}"), POST, b"/", [], b"", 5)
    with pytest.raises(UpstreamConnectError):
        await client.send(Origin.of("http://no-such-host.invalid"), POST, b"/", [], b"", 5)
    assert client.open_connections == 0


async def test_a_full_pool_waits_then_times_out():
    client = UpstreamClient(max_connections=2)
    release = asyncio.Event()

    async def slow(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await read_request(r)
            await release.wait()
            w.write(answer(b"ok"))
            await w.drain()

    async with Scripted(slow) as srv:
        origin = srv.origin()

        async def call() -> bytes:
            resp = await client.send(origin, POST, b"/v1/x", JSON, b"{}", 5)
            try:
                return await resp.read()
            finally:
                resp.release()

        calls = [asyncio.create_task(call()) for _ in range(5)]
        await asyncio.sleep(0.3)
        with pytest.raises(UpstreamConnectTimeout):  # a sixth call waits no longer than this
            await client.send(origin, POST, b"/v1/x", JSON, b"{}", 0.2)
        release.set()
        assert await asyncio.gather(*calls) == [b"ok"] * 5
    assert srv.max_active == 2
    await client.close()


async def test_a_reader_that_stops_early_closes_the_connection(client):
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n" + b"x" * 1000)
            await w.drain()

    async with Scripted(handler) as srv:
        for _ in range(2):
            resp = await client.send(srv.origin(), POST, b"/v1/x", JSON, b"{}", 5)
            async for _chunk in resp.chunks():
                break
            resp.release()
    assert srv.connections == 2 and client.open_connections == 0


async def test_a_slow_reader_pushes_back_on_the_upstream(client):
    total = 8 * 1024 * 1024

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        for _ in range(total // 65536):
            w.write(b"x" * 65536)
            await w.drain()  # waits while the client does not read

    async with Scripted(handler) as srv:
        resp = await client.send(srv.origin(), POST, b"/v1/x", JSON, b"{}", 5)
        got = 0
        peak = 0
        async for chunk in resp.chunks():
            got += len(chunk)
            peak = max(peak, len(chunk))
            if got < total // 2:
                await asyncio.sleep(0.05)  # a slow client: without pushing back, the
                # whole body would pile up in the gateway while it sleeps
        resp.release()
    # What waited in the gateway at any time: about HIGH_WATER, plus one socket read.
    assert got == total and peak <= HIGH_WATER + 512 * 1024


async def test_tls_with_the_origins_certificate_and_a_stranger(client):
    ca = trustme.CA()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)

    async with Scripted(keep_alive_echo, tls=server_ctx) as srv:
        resp = await client.send(srv.origin("https", trusting), POST, b"/v1/x", JSON, b"ab", 5)
        assert await resp.read() == b'{"echo": 2, "host": "127.0.0.1:%d"}' % srv.port
        resp.release()
        # The default trust (certifi) does not know this CA: no call goes out.
        stranger = UpstreamClient()
        with pytest.raises(UpstreamConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await stranger.send(srv.origin("https"), POST, b"/v1/x", JSON, b"ab", 5)
        assert stranger.open_connections == 0


async def test_an_idle_connection_is_trusted_for_keepalive_s_only():
    client = UpstreamClient(keepalive_s=0.2)
    async with Scripted(keep_alive_echo) as srv:
        for pause in (0.0, 0.5):
            await asyncio.sleep(pause)
            resp = await client.send(srv.origin(), POST, b"/v1/x", JSON, b"{}", 5)
            await resp.read()
            resp.release()
    assert srv.connections == 2
    await client.close()


def test_origins_parse_once():
    o = Origin.of("https://api.example.com/v1/")
    assert (o.host, o.port, o.prefix) == ("api.example.com", 443, "/v1")
    assert o.host_header == b"api.example.com"
    assert o.tls is not None
    o = Origin.of("http://[::1]:8000")
    assert (o.host, o.port, o.prefix, o.host_header) == ("::1", 8000, "", b"[::1]:8000")
    for bad in ("ftp://x", "http://", "http://u:p@x/", "http://x/?q=1"):
        with pytest.raises(ValueError):
            Origin.of(bad)


def test_the_same_under_uvloop():
    """The gateway runs on uvloop, whose transports are its own classes: the keep-alive,
    streaming and protocol-error paths again, on a uvloop loop of their own."""
    import threading

    import uvloop

    async def scenario() -> None:
        for run, *args in [
            (test_one_connection_serves_many_calls_and_sends_what_it_was_given,),
            (test_a_chunked_stream_arrives_piece_by_piece,),
            (test_an_answer_that_is_not_http_is_a_protocol_error, b"SMTP ready\r\n\r\n"),
            (test_a_slow_reader_pushes_back_on_the_upstream,),
        ]:
            client = UpstreamClient()
            try:
                await run(client, *args)
            finally:
                await client.close()

    errors: list[BaseException] = []

    def run() -> None:
        try:
            uvloop.run(scenario())
        except BaseException as e:  # re-raised in the test's thread
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    assert not t.is_alive() and not errors, errors
