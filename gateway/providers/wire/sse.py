"""Incremental Server-Sent Events splitting, for watching a stream while passing it on."""

from __future__ import annotations

from collections.abc import Iterator


class SSEEvent:
    __slots__ = ("data", "event", "raw")

    def __init__(self, raw: bytes, event: str, data: bytes) -> None:
        self.raw = raw  # the event's bytes as received, terminator included
        self.event = event  # "" when the stream names no event type
        self.data = data  # data lines joined by "\n"


class SSESplitter:
    """Feeds on arbitrary chunks; yields each complete event once its blank line arrives."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> Iterator[SSEEvent]:
        buf = self._buf + chunk if self._buf else chunk
        carry = b""
        if b"\r" in buf:
            # CRLF and lone CR are both legal line ends; normalise once, here. A CR at the
            # very end may be half of a CRLF split across chunks: keep it for the next one.
            if buf[-1:] == b"\r":
                buf, carry = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            block = buf[start : end + 2]
            start = end + 2
            event = _parse(block)
            if event is not None:
                yield event
        self._buf = buf[start:] + carry

    def flush(self) -> SSEEvent | None:
        """An unterminated last event, if the stream ended without its blank line."""
        buf, self._buf = self._buf.replace(b"\r", b"\n"), b""
        return _parse(buf) if buf.strip() else None


def _parse(block: bytes) -> SSEEvent | None:
    if not block.strip():
        return None
    event = ""
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[0] == 58:  # blank or ":" comment
            continue
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace")
    # Comment-only blocks (keep-alives) are still events: a filtering pass-through must
    # forward their bytes.
    return SSEEvent(block, event, b"\n".join(data))
