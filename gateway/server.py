"""The HTTP server around the app: uvicorn's settings, written once, and the guards that keep
a hostile or broken client from holding a connection forever.

- Idle connections (before the first request and between requests) close after
  `server.idle_timeout_s`; a request head must arrive within `server.header_timeout_s` of
  its first byte and the whole body within `server.body_timeout_s` of the head, else the
  client gets a 408 in the OpenAI error shape and the connection closes.
- Past `server.max_connections` open connections a new one gets a 503 and is closed.
- Forwarding headers (`X-Forwarded-For`, ...) count only from `server.trusted_proxies`.
- uvicorn's own `date`/`server` headers are off: a proxied answer carries the upstream's,
  the gateway's own answers get one `date`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from email.utils import formatdate
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.config import Config, ServerConfig
from gateway.errors import GatewayError

# Set on uvicorn's Config so that the protocol, built by uvicorn (in each worker process too:
# the Config is pickled across), finds the gateway's limits.
_LIMITS_ATTR = "gateway_limits"


def _canned(err: GatewayError) -> bytes:
    """A whole HTTP/1.1 answer, for when no request (and so no app) exists to send one."""
    body = err.body()
    phrase = {408: b"Request Timeout", 503: b"Service Unavailable"}.get(err.status, b"")
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (err.status, phrase),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n",
            b"date: " + http_date() + b"\r\n\r\n",
            body,
        ]
    )


def request_timeout(what: str, seconds: float) -> GatewayError:
    return GatewayError(
        408,
        f"The request {what} did not arrive within {seconds:g}s.",
        "invalid_request_error",
        "request_timeout",
    )


def too_many_connections(limit: int) -> GatewayError:
    return GatewayError(
        503,
        f"The gateway holds its maximum of {limit} connections; retry shortly.",
        "server_error",
        "too_many_connections",
    )


_date_cache: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode())
    return _date_cache[1]


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with an idle timeout from the first byte on (uvicorn
    arms it only after a response), a deadline for the request head, and a connection cap."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        limits: ServerConfig = getattr(config, _LIMITS_ATTR)
        self._header_timeout = limits.header_timeout_s
        self._max_connections = limits.max_connections
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            transport.write(_canned(too_many_connections(self._max_connections)))
            transport.close()
            return
        # uvicorn's keep-alive timer, armed before the first request too; data cancels it.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_timer = self.loop.call_later(self._header_timeout, self._head_expired)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # else: mid-answer, just close
            self.transport.write(_canned(request_timeout("headers", self._header_timeout)))
        self.transport.close()


class ServerGuard:
    """ASGI wrapper: a deadline for the request body, and one `date` header per answer."""

    def __init__(self, app: Any, body_timeout: float) -> None:
        self.app = app
        self.body_timeout = body_timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        body_done = False
        timed_out = False
        started = False

        async def guarded_receive() -> dict[str, Any]:
            nonlocal body_done, timed_out
            if body_done:  # later receives wait for the disconnect: no deadline on that
                return await receive()
            if timed_out:
                return {"type": "http.disconnect"}
            try:
                async with asyncio.timeout_at(deadline):
                    msg = await receive()
            except TimeoutError:
                timed_out = True
                if not started:
                    err = request_timeout("body", self.body_timeout)
                    body = err.body()
                    await send_start(err.status, [(b"content-type", b"application/json"),
                                                  (b"content-length", b"%d" % len(body)),
                                                  (b"connection", b"close")])  # fmt: skip
                    await send({"type": "http.response.body", "body": body})
                # The app sees a client that left: it stops and records what it had.
                return {"type": "http.disconnect"}
            if msg["type"] != "http.request" or not msg.get("more_body"):
                body_done = True
            return msg

        async def send_start(status: int, headers: list[tuple[bytes, bytes]]) -> None:
            await send({"type": "http.response.start", "status": status,
                        "headers": [*headers, (b"date", http_date())]})  # fmt: skip

        async def guarded_send(msg: dict[str, Any]) -> None:
            nonlocal started
            if timed_out:  # the 408 went out instead
                return
            if msg["type"] == "http.response.start":
                started = True
                headers = msg.get("headers", ())
                if not any(name.lower() == b"date" for name, _ in headers):
                    await send_start(msg["status"], list(headers))
                    return
            await send(msg)

        await self.app(scope, guarded_receive, guarded_send)


def uvicorn_config(
    cfg: Config, app: Any, host: str, port: int, factory: bool = False
) -> uvicorn.Config:
    """The one place uvicorn is configured, for one process or several workers."""
    s = cfg.server
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        factory=factory,
        workers=s.workers if factory else None,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http=GuardedHttpToolsProtocol,
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        date_header=False,
        proxy_headers=bool(s.trusted_proxies),
        forwarded_allow_ips=list(s.trusted_proxies) or None,
        timeout_keep_alive=s.idle_timeout_s,  # type: ignore[arg-type]
        timeout_graceful_shutdown=int(s.shutdown_grace_s),
    )
    setattr(config, _LIMITS_ATTR, s)
    return config


def guarded(app: Any, cfg: Config) -> ServerGuard:
    return ServerGuard(app, cfg.server.body_timeout_s)


def run(config: uvicorn.Config) -> bool:
    """Serve until stopped; False when the server never started."""
    server = uvicorn.Server(config)
    if config.workers > 1:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return True
    server.run()
    return server.started
