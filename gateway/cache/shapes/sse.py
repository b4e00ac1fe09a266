"""SSE lines as the APIs write them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

_encode = msgspec.json.encode
DONE = b"data: [DONE]\n\n"
Events = Iterable[tuple[str, bytes]]  # (event name, data), as split from a stream


def data(obj: Any) -> bytes:
    """An unnamed event (OpenAI chat and completions)."""
    return b"data: " + _encode(obj) + b"\n\n"


def named(kind: str, obj: Any) -> bytes:
    """A named event (Anthropic Messages, OpenAI Responses)."""
    return b"event: " + kind.encode() + b"\ndata: " + _encode(obj) + b"\n\n"
