"""The HTTP server around the app: uvicorn's settings, written once, and the guards that keep
a hostile or broken client from holding a connection forever.

- Idle connections (before the first request and between requests) close after
  `server.idle_timeout_s`; a request head must arrive within `server.header_timeout_s` of
  its first byte and the whole body within `server.body_timeout_s` of the head, else the
  client gets a 408 in the OpenAI error shape and the connection closes (the app sees a
  client that left). Bytes that begin no request (httptools skips empty lines before a
  request line without a word) are neither activity nor a head: the idle deadline stands,
  and the head deadline runs from the first of them.
- Past `server.max_connections` open connections a new one gets a 503 and is closed.
- Forwarding headers (`X-Forwarded-For`, ...) count only from `server.trusted_proxies`.
- uvicorn's own `date`/`server` headers are off: a proxied answer carries the upstream's,
  the gateway's own answers get one `date`.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import urllib.parse
import weakref
from collections.abc import Callable
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import ApiError
from gateway.server import ON_DISCONNECT
from gateway.server.config import ServerConfig
from gateway.server.cycle import Cycle, http_date

# Set on uvicorn's Config so that the protocol, built by uvicorn (in each worker process too:
# the Config is pickled across), finds the gateway's limits.
_LIMITS_ATTR = "gateway_limits"


def _canned(err: ApiError) -> bytes:
    """A whole HTTP/1.1 answer, for when no request (and so no app) exists to send one."""
    body = err.body()
    phrase = {400: b"Bad Request", 408: b"Request Timeout",
              503: b"Service Unavailable"}.get(err.status, b"")  # fmt: skip
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


def request_timeout(what: str, seconds: float) -> ApiError:
    return ApiError(
        408,
        f"The request {what} did not arrive within {seconds:g}s.",
        "invalid_request_error",
        "request_timeout",
    )


def too_many_connections(limit: int) -> ApiError:
    return ApiError(
        503,
        f"The gateway holds its maximum of {limit} connections; retry shortly.",
        "server_error",
        "too_many_connections",
    )


_LATE_S = 0.1  # an idle deadline met this late waits for the sockets to be read once

_JOIN_MAX = 64 * 1024  # a body up to this size is joined to its held head


class _HeldHead:
    """The transport a request's cycle writes to: the head of an answer that carries a
    content-length (a whole answer, whose body follows at once) waits for the body's
    first bytes, so that both go out in one write (one syscall fewer per answer). Any
    other write, a close and the end of the answer let a held head go."""

    __slots__ = ("armed", "head", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.armed = False  # the next write is a cycle's first: maybe a head to hold
        self.head: bytes | None = None

    def write(self, data: bytes) -> None:
        if self.armed:
            self.armed = False
            if data.startswith(b"HTTP/1.1 ") and data.find(b"\r\ncontent-length: ") > 0:
                self.head = data
                return
        if self.head is not None:
            if len(data) <= _JOIN_MAX:
                data, self.head = self.head + data, None
            else:  # copying a large body costs more than the syscall saved
                self.flush()
        self.transport.write(data)

    def flush(self) -> None:
        self.armed = False
        if self.head is not None:
            head, self.head = self.head, None
            self.transport.write(head)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with an idle timeout from the first byte on (uvicorn
    arms it only after a response), deadlines for the request head and body, and a
    connection cap. A request that arrives whole in one read (the usual case) arms no timer."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        limits: ServerConfig = getattr(config, _LIMITS_ATTR)
        self._header_timeout = limits.header_timeout_s
        self._body_timeout = limits.body_timeout_s
        self._max_connections = limits.max_connections
        self._in_head = False
        self._begun = 0  # requests whose first byte the parser has seen
        self._idle_since = 0.0  # loop time the connection last had no request in flight
        self._idle_rechecked = False  # a late idle deadline let the sockets be read first
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        # Calls told when the client leaves before their answer is complete (see
        # ON_DISCONNECT): a callback here instead of a task per call awaiting receive().
        self._watched: tuple[Cycle, Callable[[], None]] | None = None
        self._held: _HeldHead | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._held = _HeldHead(transport)
        if len(self.connections) > self._max_connections:
            transport.write(_canned(too_many_connections(self._max_connections)))
            transport.close()
            return
        # uvicorn's keep-alive timer, armed before the first request too; data cancels it.
        self._idle_since = self.loop.time()
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        idle = not self._in_head and (cycle is None or cycle.response_complete)
        begun = self._begun
        super().data_received(data)
        if self.transport.is_closing():
            return
        if idle and self._begun == begun:
            self._stray_bytes()
        elif self._in_head:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self._header_timeout, self._head_expired)
        elif (
            self._body_timer is None
            and (cycle := self.cycle) is not None
            and cycle.more_body
            and not cycle.response_complete
        ):
            self._body_timer = self.loop.call_later(self._body_timeout, self._body_expired)

    def send_400_response(self, msg: str) -> None:
        # What the HTTP parser refuses (a malformed head) gets the OpenAI shape too.
        self.transport.write(_canned(ApiError(400, msg, "invalid_request_error",
                                                  "invalid_http_request")))  # fmt: skip
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._begun += 1
        self._idle_rechecked = False

    def timeout_keep_alive_handler(self) -> None:
        # A loop that stalled runs its due timers before it reads the sockets (libuv's
        # order): an idle deadline met late may find the client's next request already
        # waiting, unread. Closing then would cut a request the client sent in time; so a
        # late deadline waits for one read of the sockets (which cancels it if data came).
        late = self.loop.time() - (self._idle_since + self.timeout_keep_alive)
        if late > _LATE_S and not self._idle_rechecked:
            self._idle_rechecked = True
            self.timeout_keep_alive_task = self.loop.call_later(
                _LATE_S, self.timeout_keep_alive_handler
            )
            return
        super().timeout_keep_alive_handler()

    def on_response_complete(self) -> None:
        self._idle_since = self.loop.time()
        # A call whose answer is complete needs no telling; and what its callback holds
        # (the call's exchange: body, payload, answer) is not kept by an idle connection.
        self._watched = None
        if self._held is not None:
            self._held.flush()  # an answer with no body to carry its head (HEAD, 304)
        super().on_response_complete()

    def _stray_bytes(self) -> None:
        """Bytes on an idle connection that began no request (blank lines): uvicorn took
        them for activity and dropped its keep-alive timer; it is set again at the deadline
        it had, and the head's deadline starts now unless it already runs."""
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_at(
                self._idle_since + self.timeout_keep_alive, self.timeout_keep_alive_handler
            )
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self._header_timeout, self._head_expired)

    def on_headers_complete(self) -> None:
        # uvicorn's, less what this server never uses (a concurrency limit, the access
        # log), with the gateway's cycle, the disconnect hook and the held head.
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer = _cancel(self._head_timer)
        parser, scope = self.parser, self.scope
        http_version = parser.get_http_version()
        scope["method"] = parser.get_method().decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        if parser.should_upgrade() and self._should_upgrade():
            return
        url = self.url
        if url[:1] == b"/" and b"#" not in url:  # the origin form (the usual): split, no parse
            raw_path, _, query = url.partition(b"?")
        else:
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path, parsed.query or b""
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        root = self.root_path
        scope["path"] = root + path
        scope["raw_path"] = root.encode("ascii") + raw_path if root else raw_path
        scope["query_string"] = query
        running = self.cycle
        cycle = self.cycle = Cycle(
            scope=scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=False,
            default_headers=[],
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=http_version != "1.0" and parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        # The cycle weakly: it holds the scope, which holds this hook; a strong reference
        # would make every request a reference cycle, freed only by the garbage collector
        # (measured: 13 objects a request, 6% of the event loop's time in collections).
        hook = functools.partial(self._watch, weakref.ref(cycle))
        scope["extensions"] = {ON_DISCONNECT: hook}  # type: ignore[dict-item]
        if running is None or running.response_complete:
            held = self._held
            # A pipelined request's cycle writes when its turn comes: not through `held`.
            if held is not None and not self.pipeline and held.head is None:
                held.armed = True
                cycle.transport = held  # type: ignore[assignment]
            self._start_asgi_task(cycle, self.app)
        else:  # pipelined: its turn comes when the answer before it is complete
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.app))

    def _watch(self, ref: weakref.ref[Cycle], cb: Callable[[], None]) -> None:
        # One cycle at a time runs its app on a connection (pipelined ones wait their
        # turn), and one that completed its answer needs no telling: one slot.
        cycle = ref()
        if cycle is not None:
            self._watched = (cycle, cb)

    def on_message_complete(self) -> None:
        self._body_timer = _cancel(self._body_timer)
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_timer = _cancel(self._head_timer)
        self._body_timer = _cancel(self._body_timer)
        super().connection_lost(exc)
        watched, self._watched = self._watched, None
        if watched is not None and not watched[0].response_complete:
            watched[1]()

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # else: mid-answer, just close
            self.transport.write(_canned(request_timeout("headers", self._header_timeout)))
        self.transport.close()

    def _body_expired(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or self.transport.is_closing():
            return
        if not cycle.response_started:
            self.transport.write(_canned(request_timeout("body", self._body_timeout)))
        # The app's receive() now answers http.disconnect (it stops and records what it
        # had) and whatever it sends goes nowhere.
        cycle.disconnected = True
        cycle.message_event.set()
        self.transport.close()


def _cancel(timer: asyncio.TimerHandle | None) -> asyncio.TimerHandle | None:
    """Cancel a timer; None, for the slot that held it."""
    if timer is not None:
        timer.cancel()
    return None


class Front:
    """The ASGI app the server runs: the proxy's paths go straight to the proxy (a plain ASGI
    callable; the framework's routing and scope copying measured 40 µs of CPU per call),
    everything else to the framework app."""

    def __init__(self, app: Any, proxy: Any = None, own: tuple[str, ...] = ()) -> None:
        self.app, self.proxy = app, proxy
        # Framework routes under a proxied prefix (e.g. /v1/feedback) and what is below them.
        self._own = frozenset(own)
        self._own_below = tuple(o + "/" for o in own)

    def proxied(self, path: str) -> bool:
        if not path.startswith(_PROXIED):
            return False
        return path not in self._own and not path.startswith(self._own_below)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.proxy is not None and scope["type"] == "http" and self.proxied(scope["path"]):
            await self.proxy(scope, receive, send)
        else:
            await self.app(scope, receive, send)


# What the proxy serves: the OpenAI paths and the Azure OpenAI SDK's
# (/openai/deployments/{deployment}/..., /openai/v1/...).
_PROXIED = ("/v1/", "/openai/")


def uvicorn_config(
    s: ServerConfig, app: Any, host: str, port: int, factory: bool = False
) -> uvicorn.Config:
    """The one place uvicorn is configured, for one process or several workers."""
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


def run(config: uvicorn.Config) -> bool:
    """Serve until stopped; False when the server never started."""
    if config.workers > 1:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return True
    server = uvicorn.Server(config)
    server.run()
    return server.started
