"""A small Redis client for the limiter: one connection, commands pipelined on it.

The limiter sends two short script calls per request. A general client (redis-py) spends
about 150 µs of the event loop's time per command on its connection pool, argument
encoding and reply objects, which would cost the gateway a large share of its throughput;
this one writes the RESP2 bytes itself and matches replies to waiting futures in order,
for a few µs per command. It speaks what the limiter needs: commands with string/number
arguments, replies of any RESP2 type, `AUTH` and `SELECT` from the URL (redis://,
rediss:// for TLS, unix://), and scripts by SHA with a fallback to EVAL when Redis has
forgotten one (after a restart or SCRIPT FLUSH).

A connection problem closes the connection and fails every command waiting on it with
`RedisUnavailable`; the next command reconnects. A command not answered in time fails
alone with `RedisUnavailable`; its reply, if it comes, is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections import deque
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

Reply = bytes | int | list["Reply"] | None


class RedisUnavailable(Exception):
    """Redis could not be reached, or did not answer in time."""


class RedisReplyError(Exception):
    """Redis answered with an error (`-ERR ...`)."""


def _pack(args: tuple[bytes | str | int | float, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else (a if isinstance(a, str) else repr(a)).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


_MAX_WAITING = 10_000


class _Incomplete(Exception):
    pass


def _parse(buf: bytearray, pos: int) -> tuple[Reply | RedisReplyError, int]:
    """One reply at `pos`; raises _Incomplete when it has not fully arrived."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind, line = buf[pos : pos + 1], bytes(buf[pos + 1 : end])
    pos = end + 2
    if kind == b"+":
        return line, pos
    if kind == b"-":
        return RedisReplyError(line.decode(errors="replace")), pos
    if kind == b":":
        return int(line), pos
    if kind == b"$":
        n = int(line)
        if n < 0:
            return None, pos
        if len(buf) < pos + n + 2:
            raise _Incomplete
        return bytes(buf[pos : pos + n]), pos + n + 2
    if kind == b"*":
        n = int(line)
        if n < 0:
            return None, pos
        items: list[Reply] = []
        for _ in range(n):
            item, pos = _parse(buf, pos)
            if isinstance(item, RedisReplyError):  # an error inside an array: keep as text
                item = str(item).encode()
            items.append(item)
        return items, pos
    raise RedisUnavailable(f"unexpected reply from Redis: {bytes(buf[pos - 2 : pos + 20])!r}")


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiting: deque[asyncio.Future[Reply]] = deque()
        self.closed = False
        self._out: list[bytes] = []  # commands of this loop iteration, written together

    def write(self, data: bytes) -> None:
        # One write (one system call) for all the commands issued in one loop iteration:
        # under load, many requests' limit checks share it.
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(data)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.transport is not None and not self.closed:
            self.transport.write(b"".join(out))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        pos = 0
        try:
            while pos < len(self.buf) and self.waiting:
                reply, pos = _parse(self.buf, pos)
                fut = self.waiting.popleft()
                if not fut.done():
                    if isinstance(reply, RedisReplyError):
                        fut.set_exception(reply)
                    else:
                        fut.set_result(reply)
        except _Incomplete:
            pass
        except RedisUnavailable as e:
            self.fail(e)
            return
        del self.buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisUnavailable(f"connection lost: {exc or 'closed by Redis'}"))

    def fail(self, e: Exception) -> None:
        self.closed = True
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(e)
        if self.transport is not None:
            self.transport.close()


class Redis:
    def __init__(self, url: str, timeout_s: float = 0.25) -> None:
        u = urlsplit(url)
        self.scheme = u.scheme
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 6379
        self.path = u.path if u.scheme == "unix" else ""
        db = u.path.strip("/") if u.scheme != "unix" else ""
        self.db = int(db) if db.isdigit() else 0
        self.username = unquote(u.username) if u.username else ""
        self.password = unquote(u.password) if u.password else ""
        self.timeout = timeout_s
        self._proto: _Protocol | None = None
        self._connecting = asyncio.Lock()
        self._scripts: dict[str, bytes] = {}  # sha -> body

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self.scheme == "unix":
            _, proto = await loop.create_unix_connection(_Protocol, self.path)
        else:
            tls = ssl.create_default_context() if self.scheme == "rediss" else None
            _, proto = await loop.create_connection(_Protocol, self.host, self.port, ssl=tls)
        hello: list[tuple[bytes | str | int | float, ...]] = []
        if self.password:
            hello.append(("AUTH", self.username, self.password) if self.username
                         else ("AUTH", self.password))  # fmt: skip
        if self.db:
            hello.append(("SELECT", self.db))
        for args in hello:
            await self._send(proto, args)
        return proto

    async def _conn(self) -> _Protocol:
        proto = self._proto
        if proto is not None and not proto.closed:
            return proto
        async with self._connecting:
            if self._proto is None or self._proto.closed:
                try:
                    async with asyncio.timeout(self.timeout):
                        self._proto = await self._connect()
                except (OSError, TimeoutError, RedisReplyError) as e:
                    raise RedisUnavailable(f"cannot connect: {type(e).__name__}: {e}") from None
            return self._proto

    async def _send(self, proto: _Protocol, args: tuple[bytes | str | int | float, ...]) -> Reply:
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        proto.waiting.append(fut)
        proto.write(_pack(args))
        try:
            async with asyncio.timeout(self.timeout):
                return await fut
        except TimeoutError:
            # The cancelled future keeps its place in line: its late reply is read and
            # dropped, so the replies after it still meet their commands. (A pause of this
            # process, e.g. the GIL held by the store, looks like a slow Redis: tearing the
            # connection down would fail every command in flight for nothing.)
            if len(proto.waiting) > _MAX_WAITING:  # Redis stopped answering at all
                proto.fail(RedisUnavailable("too many commands unanswered"))
            raise RedisUnavailable(f"no answer within {self.timeout:g}s") from None

    async def call(self, *args: bytes | str | int | float) -> Reply:
        return await self._send(await self._conn(), args)

    def script(self, body: str) -> str:
        sha = hashlib.sha1(body.encode()).hexdigest()
        self._scripts[sha] = body.encode()
        return sha

    async def run(
        self, sha: str, keys: list[str], args: Sequence[bytes | str | int | float]
    ) -> Reply:
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except RedisReplyError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
            # EVAL runs it and caches it under the same SHA for the next calls.
            return await self.call("EVAL", self._scripts[sha], len(keys), *keys, *args)

    async def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            with contextlib.suppress(Exception):
                self._proto.transport.close()
        self._proto = None
