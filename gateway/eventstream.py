"""Incremental decoding of the AWS event-stream framing (Bedrock's ConverseStream): each
message is a prelude (total length, headers length, CRC32 of the two), headers, a payload
and a CRC32 of the whole message; both checksums are verified.

Decoded messages come out as `SSEEvent`s (the event type from the `:event-type` header, or
`:exception-type` for errors; the payload as data), so that the request path reads both
framings the same way.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from gateway.providers.wire.sse import SSEEvent

_PRELUDE = struct.Struct(">III")
# Header value sizes by type (7, string, and 6, bytes, carry a 2-byte length).
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


class EventStreamError(ValueError):
    pass


def _headers(buf: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 0
    while i < len(buf):
        n = buf[i]
        name = buf[i + 1 : i + 1 + n].decode("utf-8", "replace")
        i += 1 + n
        kind = buf[i]
        i += 1
        if kind in (6, 7):
            (size,) = struct.unpack_from(">H", buf, i)
            value = buf[i + 2 : i + 2 + size]
            i += 2 + size
            if kind == 7:
                out[name] = value.decode("utf-8", "replace")
        elif kind in _FIXED:
            i += _FIXED[kind]
        else:
            raise EventStreamError(f"unknown header value type {kind}")
    return out


class EventStreamSplitter:
    """Feeds on arbitrary chunks; yields each complete, checksum-verified message once."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> Iterator[SSEEvent]:
        buf = self._buf + chunk if self._buf else chunk
        start = 0
        while len(buf) - start >= 12:
            total, header_len, prelude_crc = _PRELUDE.unpack_from(buf, start)
            if zlib.crc32(buf[start : start + 8]) != prelude_crc:
                raise EventStreamError("event-stream prelude checksum mismatch")
            if len(buf) - start < total:
                break
            frame = buf[start : start + total]
            start += total
            (message_crc,) = struct.unpack_from(">I", frame, total - 4)
            if zlib.crc32(frame[:-4]) != message_crc:
                raise EventStreamError("event-stream message checksum mismatch")
            headers = _headers(frame[12 : 12 + header_len])
            event = headers.get(":event-type") or headers.get(":exception-type", "")
            if headers.get(":message-type") == "exception" and ":exception-type" in headers:
                event = "exception:" + headers[":exception-type"]
            yield SSEEvent(frame, event, frame[12 + header_len : -4])
        self._buf = buf[start:]

    def flush(self) -> SSEEvent | None:
        self._buf = b""
        return None
