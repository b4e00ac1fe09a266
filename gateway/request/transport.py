"""The upstream connection pool: one aiohttp session behind httpx's transport interface,
shared by every call (built once, at start).

aiohttp keeps reading an idle pooled connection, and parses whatever arrives there as the
answer to the next request sent on it: an upstream that writes bytes past the end of an
answer (a desynchronised proxy, a hostile server) would answer a later call with them. The
protocol here closes a connection that receives bytes while no request is waiting for an
answer, so such a connection is never reused. (Bytes that arrive with the answer itself are
already left out by aiohttp: it does not pool a connection with anything queued.)
"""

from __future__ import annotations

import functools
from typing import Any

import aiohttp
import httpx
from aiohttp.client_proto import ResponseHandler
from httpx_aiohttp import AiohttpTransport

MAX_CONNECTIONS = 1000
KEEPALIVE_S = 5.0


class _AnsweringOnly(ResponseHandler):
    """aiohttp's client protocol, which closes its connection on bytes nobody asked for."""

    _waiting = False  # a request was sent and its answer's head has not been read yet

    def set_response_params(self, *args: Any, **kwargs: Any) -> None:
        self._waiting = True  # called for every request, before it is written
        super().set_response_params(*args, **kwargs)

    def data_received(self, data: bytes) -> None:
        payload = self._payload
        if data and not self._waiting and (payload is None or payload.is_eof()):
            # Idle: no answer is due and the last one is whole.
            self.force_close()
            if self.transport is not None:
                self.transport.close()
            return
        queued = len(self._buffer)
        super().data_received(data)
        if len(self._buffer) > queued:  # an answer's head was read
            self._waiting = False


def _session(ssl: Any) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_S, ssl=ssl)
    # The protocol factory is not a public option of TCPConnector; the upstream-protocol
    # tests (tests/gateway/request/test_upstream_protocol.py) fail if this stops working.
    connector._factory = functools.partial(_AnsweringOnly, loop=connector._loop)  # type: ignore[assignment]
    return aiohttp.ClientSession(connector=connector)


def upstream_transport() -> httpx.AsyncBaseTransport:
    """The transport every upstream call goes through."""
    t = AiohttpTransport(
        limits=httpx.Limits(max_connections=MAX_CONNECTIONS, keepalive_expiry=KEEPALIVE_S),
        trust_env=False,
    )
    t.client = lambda: _session(t.ssl_context)  # built on first use, on the running loop
    return t
