"""Anthropic Messages, native: `message_start` has input usage, `message_delta` the
cumulative output; Anthropic reports cached input apart, so it is added back."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.errors import ApiError
from gateway.providers.wire.base import Observer, WireAPI, as_int, as_str, event_json

_encode = msgspec.json.encode

# Anthropic's error type for each HTTP status: its SDK picks its exception class by status,
# and clients read the type.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error(message: str, status: int, type_: str = "") -> dict[str, Any]:
    """Anthropic's error shape; the type by HTTP status (OpenAI's types differ, e.g. a bad
    key is its invalid_request_error), else by the type given (stream errors)."""
    known = type_ if type_ in ERROR_TYPES.values() else "api_error"
    t = ERROR_TYPES.get(status, known)
    return {"type": "error", "error": {"type": t, "message": message}}


# The Messages API's stop reasons in OpenAI's words.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "pause_turn",
    "refusal": "content_filter",
    "model_context_window_exceeded": "length",
}


class AnthropicObserver(Observer):
    __slots__ = ()
    finish_reasons = FINISH_REASONS

    def _usage(self, u: Any) -> None:
        if not isinstance(u, dict):
            return
        rec = self.rec
        if "input_tokens" in u or "cache_read_input_tokens" in u:
            self.usage_seen = True
            cache_read = as_int(u.get("cache_read_input_tokens"))
            cache_write = as_int(u.get("cache_creation_input_tokens"))
            if "input_tokens" in u:
                rec.input_tokens = as_int(u.get("input_tokens")) + cache_read + cache_write
            rec.cache_read_tokens = cache_read or rec.cache_read_tokens
            rec.cache_write_tokens = cache_write or rec.cache_write_tokens
        if "output_tokens" in u:
            self.usage_seen = True
            rec.output_tokens = as_int(u.get("output_tokens"))  # cumulative in streams

    def body(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        self.rec.response_model = as_str(obj.get("model"))
        self.rec.response_id = as_str(obj.get("id"))
        self._stop(obj.get("stop_reason"))
        self._usage(obj.get("usage"))
        for block in obj.get("content") or ():
            if isinstance(block, dict):
                self.output_chars += len(as_str(block.get("text"))) + len(
                    as_str(block.get("thinking"))
                )

    def event(self, event: str, data: bytes) -> bool:
        obj = event_json(data)
        if obj is None:
            return False
        kind = event or as_str(obj.get("type"))
        if kind == "content_block_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                n = (
                    len(as_str(delta.get("text")))
                    + len(as_str(delta.get("partial_json")))
                    + len(as_str(delta.get("thinking")))
                )
                if n:
                    self.output_chars += n
                    self.content_seen = True
        elif kind == "message_start":
            msg = obj.get("message")
            if isinstance(msg, dict):
                self.rec.response_model = as_str(msg.get("model"))
                self.rec.response_id = as_str(msg.get("id"))
                self._usage(msg.get("usage"))
        elif kind == "message_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                self._stop(delta.get("stop_reason"))
            self._usage(obj.get("usage"))
        elif kind == "message_stop":  # the usage came with message_delta
            self.ended = True
        elif kind == "error":
            self._stream_error(obj)
        return False


class Messages(WireAPI):
    __slots__ = ()

    def stream_error(self, message: str, type_: str) -> bytes:
        body = _encode(anthropic_error(message, 0, type_))
        return b"event: error\ndata: " + body + b"\n\n"

    def error_answer(self, e: ApiError, request_id: str) -> bytes:
        return _encode({**anthropic_error(e.message, e.status), "request_id": request_id})


MESSAGES = Messages("/v1/messages", "chat", AnthropicObserver, dialect="anthropic")
