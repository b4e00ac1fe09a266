"""A stored answer in the other shape the client asked for: a stream's events gathered into
the whole body the API would have answered, or a whole body told as the stream the API
would have sent. One module per client dialect; both directions work on the client's
dialect (a translated answer is translated first).

    shape = SHAPES.get(wire_path)
    body = shape.to_body(events)                 # [(event name, data bytes)] -> dict
    sse = shape.to_stream(body, include_usage)   # dict -> SSE bytes
"""

from __future__ import annotations

from typing import Any, Protocol

from gateway.cache.shapes.chat import CHAT, COMPLETIONS
from gateway.cache.shapes.messages import MESSAGES
from gateway.cache.shapes.responses import RESPONSES
from gateway.cache.shapes.sse import Events


class Shape(Protocol):
    def to_body(self, events: Events) -> dict[str, Any] | None:
        """The whole answer a stream's events add up to (None: they do not make one)."""
        ...

    def to_stream(self, body: dict[str, Any], include_usage: bool) -> bytes:
        """The stream that tells a whole answer, as SSE bytes, its end included."""
        ...


SHAPES: dict[str, Shape] = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": COMPLETIONS,
    "/v1/messages": MESSAGES,
    "/v1/responses": RESPONSES,
}

__all__ = ["SHAPES", "Events", "Shape"]
