"""One request's ASGI cycle on a connection: uvicorn's, with a `send` that builds an answer's
head in one pass over its headers (framing noted, all checked at once) and gives it the one
`date` header: a proxied answer keeps the upstream's, the gateway's own get the server's.
(uvicorn's own `date` and `server` headers are off; its access log is never on.)"""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import Any

from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    RequestResponseCycle,
)

_date_cache: tuple[int, bytes] = (0, b"")
# The headers that say how an answer is framed (lower case).
_FRAMING = frozenset((b"content-length", b"date", b"transfer-encoding", b"connection"))


def http_date() -> bytes:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode())
    return _date_cache[1]


class Cycle(RequestResponseCycle):
    async def send(self, message: Any) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', got '{kind}'.")
            self.response_started = True
            self.waiting_for_100_continue = False
            self.transport.write(self._head(message["status"], message.get("headers", ())))
        elif not self.response_complete:
            if kind != "http.response.body":
                raise RuntimeError(f"Expected ASGI message 'http.response.body', got '{kind}'.")
            self._body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(f"Unexpected ASGI message '{kind}' after the response completed.")

    def _head(self, status: int, headers: Any) -> bytes:
        content = [STATUS_LINE[status]]
        dated = closing = False
        for name, value in headers:
            name = name.lower()
            if name in _FRAMING:
                if name == b"content-length":
                    if self.chunked_encoding is None:
                        self.expected_content_length = int(value)
                        self.chunked_encoding = False
                elif name == b"date":
                    dated = True
                elif name == b"transfer-encoding":
                    if value.lower() == b"chunked":
                        self.expected_content_length = 0
                        self.chunked_encoding = True
                elif b"close" in [t.lower().strip() for t in value.split(b",")]:
                    self.keep_alive = False
                    closing = True
            content += (name, b": ", value, b"\r\n")
        # Checked all at once: a character not allowed in any name (value) is one in their
        # concatenation, and one search per answer costs less than two per header.
        if HEADER_RE.search(b"".join(content[1::4])) or HEADER_VALUE_RE.search(
            b"".join(content[3::4])
        ):
            raise RuntimeError("Invalid HTTP header.")
        if not dated:
            content += (b"date: ", http_date(), b"\r\n")
        if not self.keep_alive and not closing:
            content.append(b"connection: close\r\n")
        if (
            self.chunked_encoding is None
            and self.scope["method"] != "HEAD"
            and status not in (204, 304)
        ):  # neither a length nor chunks named: chunks
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        return b"".join(content)

    def _body(self, body: bytes, more_body: bool) -> None:
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
        elif self.chunked_encoding:
            if body:
                chunk = b"%x\r\n%b\r\n" % (len(body), body)
                self.transport.write(chunk + b"0\r\n\r\n" if not more_body else chunk)
            elif not more_body:
                self.transport.write(b"0\r\n\r\n")
        else:
            n = len(body)
            if n > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= n
            self.transport.write(body)
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()
