"""One HTTP/1.1 connection to an upstream and the answer it is reading: an asyncio Protocol
with llhttp (httptools) parsing the response as it arrives.

A connection carries one request at a time. Whatever does not fit HTTP/1.1 breaks it for
good: a status line or header the parser refuses, bytes that arrive when no answer is
expected or past an answer's end (a second answer nobody asked for). The answer then
fails with `UpstreamProtocolError` (or completes, when the extra bytes came after it) and
the connection is closed, never reused.

The body is handed over as it arrives; when the reader falls behind by more than
`HIGH_WATER` bytes the socket stops being read (TCP pushes back on the upstream) until it
catches up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import cast

import httptools

from gateway.errors import UpstreamClosed, UpstreamProtocolError

Headers = list[tuple[bytes, bytes]]

HIGH_WATER = 256 * 1024  # body bytes buffered before the socket is paused
_LENGTH_HEADERS = (b"content-length", b"transfer-encoding")


class UpstreamResponse:
    """An upstream's answer: the status and headers once they arrived, then the body, read
    whole (`read`) or as it comes (`chunks`). `release` must be called when done: it gives
    a cleanly finished connection back to the pool and closes any other."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_error",
        "_waiter",
        "complete",
        "headers",
        "released",
        "seen_bytes",
        "status",
    )

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.status = 0
        self.headers: Headers = []  # names in lower case, in the order received
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self.complete = False  # the whole answer arrived
        self.seen_bytes = False  # any byte of it arrived
        self.released = False

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (`name` in lower case)."""
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def header_str(self, name: bytes, default: str = "") -> str:
        v = self.header(name)
        return default if v is None else v.decode("latin-1")

    # -- reading ----------------------------------------------------------------------------
    async def _wait(self) -> None:
        self._waiter = self._conn.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def read(self) -> bytes:
        """The whole body."""
        while not self.complete:
            if self._error is not None:
                raise self._error
            await self._wait()
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return data

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: each item is everything received since the last one."""
        chunks = self._chunks
        while True:
            if chunks:
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                self._conn.resume()
                yield data
            elif self.complete:
                return
            elif self._error is not None:
                raise self._error
            else:
                await self._wait()

    def release(self) -> None:
        """Done with the answer: a connection that finished it cleanly goes back to its
        pool; one in the middle of it (the reader stopped early) is closed."""
        if not self.released:
            self.released = True
            self._conn.finished(self)

    # -- fed by the connection --------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self.complete and self._error is None:
            self._error = error
            self._wake()


class Connection(asyncio.Protocol):
    """One keep-alive connection; `start` sends a request and returns its answer, whose
    head arrives in `head()`."""

    def __init__(self, pool: ConnectionOwner, origin_key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.origin_key = origin_key
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()  # looked up once: each lookup is a syscall
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self._head: asyncio.Future[UpstreamResponse] | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self._paused = False
        self._framed = False  # the answer says where its body ends (length or chunks)
        self._informational = False

    # -- asyncio.Protocol -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        r = self.response
        if r is None or r.complete:
            self._violation("bytes arrived when no answer was expected")
            return
        r.seen_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._violation(f"the answer is not valid HTTP/1.1 ({e})")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        r = self.response
        if r is None:  # idle in the pool: the upstream let it go
            self.pool.forget(self)
            return
        if r.complete:
            return
        if r.status and not self._framed and not self._informational:
            # An answer without a length ends when the connection does.
            self._done(r)
            return
        err = UpstreamClosed(
            "the upstream closed the connection "
            + ("before answering" if not r.seen_bytes else "in the middle of its answer")
            + (f": {exc}" if exc else "")
        )
        if self._head is not None and not self._head.done():
            self._head.set_exception(err)
        r._fail(err)

    def pause_writing(self) -> None:  # the request body waits in the transport's buffer
        pass

    def resume_writing(self) -> None:
        pass

    # -- llhttp callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        r = self.response
        if r is not None and r.status and not self._informational:
            raise _Overrun  # a second answer on one request: stop parsing here

    def on_header(self, name: bytes, value: bytes) -> None:
        r = self.response
        assert r is not None
        name = name.lower()
        if name in _LENGTH_HEADERS:
            self._framed = True
        r.headers.append((name, value))

    def on_headers_complete(self) -> None:
        r = self.response
        assert r is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # 100 Continue, 103 Early Hints: the answer is still to come
            self._informational = True
            r.headers = []
            self._framed = False
            return
        self._informational = False
        r.status = status
        if status == 204 or status == 304:
            self._framed = True
        head = self._head
        if head is not None and not head.done():
            head.set_result(r)

    def on_body(self, body: bytes) -> None:
        r = self.response
        assert r is not None
        r._feed(body)

    def on_message_complete(self) -> None:
        r = self.response
        assert r is not None
        if self._informational:
            return
        self.reusable = self.parser.should_keep_alive()
        self._done(r)

    # -- the request ------------------------------------------------------------------------
    def start(self, request: bytes) -> asyncio.Future[UpstreamResponse]:
        """Send a whole request; the future is the answer once its head arrived."""
        assert self.transport is not None and self.response is None
        self.response = UpstreamResponse(self)
        self._head = self.loop.create_future()
        self._framed = self._informational = False
        self.reusable = False
        self.transport.write(request)
        return self._head

    def finished(self, r: UpstreamResponse) -> None:
        """The reader released `r`: reuse the connection if it ended cleanly."""
        if r is not self.response:
            return
        self.response = None
        self._head = None
        if r.complete and self.reusable and not self.closed:
            self.resume()
            self.parser = httptools.HttpResponseParser(self)
            self.pool.give_back(self)
        else:
            self.close()

    def close(self) -> None:
        self.reusable = False
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        self.pool.forget(self)

    def pause(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    # -- endings ----------------------------------------------------------------------------
    def _done(self, r: UpstreamResponse) -> None:
        r.complete = True
        r._wake()

    def _violation(self, what: str) -> None:
        """The upstream broke HTTP/1.1: the answer fails unless it was already whole, and
        the connection is never used again."""
        r = self.response
        self.reusable = False
        if r is not None and not r.complete:
            err = UpstreamProtocolError(what)
            if self._head is not None and not self._head.done():
                self._head.set_exception(err)
            r._fail(err)
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
        if r is None:
            self.pool.forget(self)


class _Overrun(Exception):
    """Raised inside the parser to stop it at a second answer (see on_message_begin)."""


class ConnectionOwner:
    """What a connection tells its pool."""

    def give_back(self, conn: Connection) -> None:
        raise NotImplementedError

    def forget(self, conn: Connection) -> None:
        raise NotImplementedError
