"""OpenAI Responses API: usage arrives in `response.completed` when streamed."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.providers.wire.base import (
    RESPONSES_USAGE,
    Observer,
    WireAPI,
    as_str,
    event_json,
    read_usage,
)
from gateway.recording.record import Outcome

_encode = msgspec.json.encode
_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}


class ResponsesObserver(Observer):
    __slots__ = ()

    def body(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        rec = self.rec
        rec.response_model = as_str(obj.get("model")) or rec.response_model
        rec.response_id = as_str(obj.get("id")) or rec.response_id
        status = obj.get("status")
        if status == "completed":
            rec.finish_reason = "stop"
        elif status == "incomplete":
            details = obj.get("incomplete_details")
            reason = as_str(details.get("reason")) if isinstance(details, dict) else ""
            rec.finish_reason = _INCOMPLETE.get(reason, reason or "incomplete")
        elif status == "failed":
            rec.finish_reason = "error"
            if isinstance(obj.get("error"), dict):
                self.error_body(obj)
        elif isinstance(status, str):
            rec.finish_reason = status
        u = obj.get("usage")
        if isinstance(u, dict):
            self.usage_seen = True
            read_usage(rec, u, RESPONSES_USAGE)
        if not self.output_chars:
            for item in obj.get("output") or ():
                if isinstance(item, dict):
                    for part in item.get("content") or ():
                        if isinstance(part, dict):
                            self.output_chars += len(as_str(part.get("text")))

    def event(self, event: str, data: bytes) -> bool:
        obj = event_json(data)
        if obj is None:
            return False
        kind = event or as_str(obj.get("type"))
        if kind.endswith(".delta"):
            delta = obj.get("delta")
            if isinstance(delta, str) and delta:
                self.output_chars += len(delta)
                self.content_seen = True
        elif kind in ("response.created", "response.in_progress"):
            resp = obj.get("response")
            if isinstance(resp, dict):
                self.rec.response_model = as_str(resp.get("model"))
                self.rec.response_id = as_str(resp.get("id"))
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            resp = obj.get("response")
            if isinstance(resp, dict):
                self.body(resp)
            if kind == "response.failed":
                self.rec.outcome = Outcome.UPSTREAM_ERROR
            self.ended = True  # the usage is in this event
        elif kind == "error":
            self._stream_error({"error": obj.get("error", obj)})
        return False


class Responses(WireAPI):
    __slots__ = ()

    def stream_error(self, message: str, type_: str) -> bytes:
        body = _encode({"type": "error", "code": type_, "message": message, "param": None})
        return b"event: error\ndata: " + body + b"\n\n"


RESPONSES = Responses("/v1/responses", "responses", ResponsesObserver)
