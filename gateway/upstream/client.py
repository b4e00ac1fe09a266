"""The gateway's HTTP/1.1 client for upstreams: keep-alive connections per origin, a cap on
open connections, and a request written in one piece from what the call already has.

Why not a general client: forwarding a call needs none of what general clients spend
their time on (URL parsing and normalisation, cookie jars, redirects, header
dictionaries, decompression: the gateway asks for `identity`), and on the request path the
difference is most of the proxy's own cost (bench/README.md, "Upstream client"). Parsing
is llhttp's, the same parser uvicorn and Node.js use; TLS is the standard library's.

Errors (all `UpstreamError`s, gateway/errors.py): `UpstreamConnectError` (refused,
unreachable, name not found, TLS failed), `UpstreamConnectTimeout`, `UpstreamClosed`
(closed before or during the answer), `UpstreamProtocolError` (not HTTP/1.1). A failed
request is never sent again here, not even on a kept-alive connection that the upstream
had just closed: an LLM call is not idempotent, and whether to try again is the
retry policy's decision (gateway/request/attempts.py). Idle connections are trusted for
`keepalive_s` only, shorter than the usual servers' idle timeouts, so that such a race is
rare; a connection the upstream closed while idle is dropped when the loop learns of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque

from gateway.errors import UpstreamConnectError, UpstreamConnectTimeout
from gateway.upstream.connection import Connection, ConnectionOwner, UpstreamResponse
from gateway.upstream.origin import Origin

Headers = list[tuple[bytes, bytes]]
_now = time.monotonic


class UpstreamClient(ConnectionOwner):
    """Connections to every upstream, shared by all calls of the process.

    `max_connections`: open at once, all origins together (a call waits up to its pool
    timeout for one); `max_idle`: kept open per origin between calls; `keepalive_s`: how
    long an idle connection is trusted (below the usual servers' idle timeouts, 5 s for
    uvicorn, so that the upstream rarely closes one under us)."""

    def __init__(self, max_connections: int = 1000, max_idle: int = 200,
                 keepalive_s: float = 4.0) -> None:  # fmt: skip
        self.max_connections = max_connections
        self.max_idle = max_idle
        self.keepalive_s = keepalive_s
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._open: set[Connection] = set()
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._swept = _now()
        self.connects = 0  # connections opened so far (tests, metrics)

    # -- the public call ----------------------------------------------------------------------
    async def send(
        self,
        origin: Origin,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes | None,
        connect_timeout: float,
    ) -> UpstreamResponse:
        """Send one request and return its answer once the status and headers arrived (the
        body follows through the answer). `target` is the path and query, already quoted.
        The caller bounds the wait for the answer and must `release()` it."""
        parts = [method, b" ", target, b" HTTP/1.1\r\nhost: ", origin.host_header, b"\r\n"]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if body is not None:
            parts += (b"content-length: ", b"%d" % len(body), b"\r\n\r\n", body)
        else:
            parts.append(b"\r\n")
        request = b"".join(parts)
        conn = await self._acquire(origin, connect_timeout)
        try:
            return await conn.start(request)
        except BaseException:  # refused, timed out or cancelled: the connection is done for
            self._drop(conn)
            raise

    async def close(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._idle.clear()
        while self._waiting:
            w = self._waiting.popleft()
            if not w.done():
                w.cancel()

    # -- the pool -------------------------------------------------------------------------------
    async def _acquire(self, origin: Origin, connect_timeout: float) -> Connection:
        """An idle connection to the origin, else a new one; at the cap, an idle connection
        to another origin makes room, or the call waits for one to be given back."""
        conn = self._take_idle(origin)  # the usual case: no wait, so no timer to arm
        if conn is not None:
            return conn
        try:
            async with asyncio.timeout(connect_timeout):
                while True:
                    conn = self._take_idle(origin)
                    if conn is not None:
                        return conn
                    if len(self._open) < self.max_connections or self._evict_one():
                        break
                    waiter = asyncio.get_running_loop().create_future()
                    self._waiting.append(waiter)
                    try:
                        await waiter
                    finally:
                        with contextlib.suppress(ValueError):
                            self._waiting.remove(waiter)
        except TimeoutError:
            raise UpstreamConnectTimeout(
                f"all {self.max_connections} upstream connections stayed busy for "
                f"{connect_timeout:g}s"
            ) from None
        return await self._connect(origin, connect_timeout)

    def _take_idle(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin.key)
        if idle:
            limit = _now() - self.keepalive_s
            while idle:
                conn = idle.pop()  # the most recent: the least likely to be closed upstream
                if not conn.closed and conn.idle_since >= limit:
                    return conn
                conn.close()
        return None

    def _evict_one(self) -> bool:
        """Close the oldest idle connection of any origin; False when none is idle."""
        oldest: Connection | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest.idle_since):
                oldest = idle[0]
        if oldest is None:
            return False
        oldest.close()
        return True

    async def _connect(self, origin: Origin, timeout: float) -> Connection:
        loop = asyncio.get_running_loop()
        conn = Connection(self, origin.key)
        self._open.add(conn)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: conn, origin.host, origin.port, ssl=origin.tls,
                    server_hostname=origin.host if origin.tls else None,
                )  # fmt: skip
        except TimeoutError:
            self._drop(conn)
            raise UpstreamConnectTimeout(
                f"no connection to {origin.url} within {timeout:g}s"
            ) from None
        except (OSError, ssl.SSLError) as e:  # refused, unreachable, DNS, TLS
            self._drop(conn)
            raise UpstreamConnectError(f"cannot connect to {origin.url}: {e}") from None
        except BaseException:
            self._drop(conn)
            raise
        self.connects += 1
        return conn

    def _drop(self, conn: Connection) -> None:
        if conn.response is not None:
            conn.response.released = True
            conn.response = None
        conn.close()

    # -- ConnectionOwner ----------------------------------------------------------------------
    def give_back(self, conn: Connection) -> None:
        now = _now()
        idle = self._idle.setdefault(conn.origin_key, [])
        if len(idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = now
        idle.append(conn)
        self._wake_one()
        if now - self._swept > self.keepalive_s:
            self._sweep(now)

    def forget(self, conn: Connection) -> None:
        if conn in self._open:
            self._open.discard(conn)
            idle = self._idle.get(conn.origin_key)
            if idle and conn in idle:
                idle.remove(conn)
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiting:
            w = self._waiting.popleft()
            if not w.done():
                w.set_result(None)
                return

    def _sweep(self, now: float) -> None:
        """Close the connections idle for longer than they are trusted, so that an origin
        no longer called does not hold sockets."""
        self._swept = now
        limit = now - self.keepalive_s
        for idle in self._idle.values():
            stale = [c for c in idle if c.idle_since < limit]
            for c in stale:
                c.close()

    @property
    def open_connections(self) -> int:
        return len(self._open)

    @property
    def idle_connections(self) -> int:
        return sum(len(v) for v in self._idle.values())
