"""Reading usage, model, finish reason and errors out of upstream answers, per API shape.

One observer per call. It sees either the whole JSON body or the stream's events one by
one, and writes what it learns into the call record. Token counts follow the OpenTelemetry
GenAI convention: `input_tokens` includes cached input (Anthropic reports the cached parts
separately, so they are added back).
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.record import UPSTREAM_ERROR, CallRecord

_decode = msgspec.json.decode

# Finish reasons are normalised to OpenAI's vocabulary so that cross-provider queries work.
_ANTHROPIC_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "pause_turn",
    "refusal": "content_filter",
    "model_context_window_exceeded": "length",
}
_RESPONSES_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}


def _event_json(data: bytes) -> dict[str, Any] | None:
    """A stream event's JSON object; None for `[DONE]`, keep-alives and anything unparsable
    (a pass-through never fails on what it cannot read)."""
    if not data or data == b"[DONE]":
        return None
    try:
        obj = _decode(data)
    except msgspec.DecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


class Observer:
    """Base: records nothing but errors. Subclasses know one API's shapes."""

    __slots__ = ("content_seen", "drop_usage_chunk", "output_chars", "rec", "usage_seen")

    def __init__(self, rec: CallRecord, drop_usage_chunk: bool = False) -> None:
        self.rec = rec
        self.usage_seen = False
        self.output_chars = 0
        self.content_seen = False  # an event carried output: the first token has arrived
        self.drop_usage_chunk = drop_usage_chunk

    def body(self, obj: Any) -> None:
        """A complete JSON answer (non-streamed)."""

    def event(self, event: str, data: bytes) -> bool:
        """One stream event; returns True when the event must not reach the client."""
        return False

    def error_body(self, obj: Any) -> None:
        """An error answer, in OpenAI's or Anthropic's error shape."""
        err = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(err, dict):
            self.rec.error_type = _str(err.get("type")) or _str(err.get("code"))
            self.rec.error_message = _str(err.get("message"))[:1000]
        elif isinstance(err, str):
            self.rec.error_message = err[:1000]

    def _stream_error(self, obj: Any) -> None:
        self.rec.outcome = UPSTREAM_ERROR
        self.error_body(obj)
        if not self.rec.error_type:
            self.rec.error_type = "stream_error"


def _openai_usage(rec: CallRecord, u: dict[str, Any]) -> None:
    rec.input_tokens = _int(u.get("prompt_tokens"))
    rec.output_tokens = _int(u.get("completion_tokens"))
    details = u.get("prompt_tokens_details")
    if isinstance(details, dict):
        rec.cache_read_tokens = _int(details.get("cached_tokens"))
    details = u.get("completion_tokens_details")
    if isinstance(details, dict):
        rec.reasoning_tokens = _int(details.get("reasoning_tokens"))


class ChatObserver(Observer):
    """OpenAI chat completions (also Azure, and every OpenAI-compatible server)."""

    __slots__ = ()
    text_key = "content"

    def _meta(self, obj: dict[str, Any]) -> None:
        rec = self.rec
        if not rec.response_model:
            rec.response_model = _str(obj.get("model"))
            rec.response_id = _str(obj.get("id"))
        fp = obj.get("system_fingerprint")
        if fp:
            rec.system_fingerprint = _str(fp)

    def _usage(self, u: Any) -> None:
        if isinstance(u, dict):
            self.usage_seen = True
            _openai_usage(self.rec, u)

    def body(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        self._meta(obj)
        self._usage(obj.get("usage"))
        for choice in obj.get("choices") or ():
            if isinstance(choice, dict):
                fr = choice.get("finish_reason")
                if fr:
                    self.rec.finish_reason = _str(fr)
                self.output_chars += self._choice_chars(choice)

    def _choice_chars(self, choice: dict[str, Any]) -> int:
        msg = choice.get("message")
        if isinstance(msg, dict):
            n = len(_str(msg.get("content")))
            for call in msg.get("tool_calls") or ():
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    n += len(_str(call["function"].get("arguments")))
            return n
        return len(_str(choice.get("text")))

    def event(self, event: str, data: bytes) -> bool:
        obj = _event_json(data)
        if obj is None:
            return False
        if "error" in obj and "choices" not in obj:
            self._stream_error(obj)
            return False
        self._meta(obj)
        choices = obj.get("choices")
        for choice in choices or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                n = len(_str(delta.get("content"))) + len(_str(delta.get("refusal")))
                for call in delta.get("tool_calls") or ():
                    if isinstance(call, dict) and isinstance(call.get("function"), dict):
                        n += len(_str(call["function"].get("arguments"))) or 1
            else:
                n = len(_str(choice.get("text")))
            if n:
                self.output_chars += n
                self.content_seen = True
            fr = choice.get("finish_reason")
            if fr:
                self.rec.finish_reason = _str(fr)
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self._usage(usage)
            # The gateway asked for this chunk on the client's behalf: hide it.
            return self.drop_usage_chunk and not choices
        return False


class EmbeddingsObserver(Observer):
    __slots__ = ()

    def body(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        self.rec.response_model = _str(obj.get("model"))
        u = obj.get("usage")
        if isinstance(u, dict):
            self.usage_seen = True
            self.rec.input_tokens = _int(u.get("prompt_tokens"))


class ResponsesObserver(Observer):
    """OpenAI Responses API: usage arrives in `response.completed` when streamed."""

    __slots__ = ()

    def body(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        rec = self.rec
        rec.response_model = _str(obj.get("model")) or rec.response_model
        rec.response_id = _str(obj.get("id")) or rec.response_id
        status = obj.get("status")
        if status == "completed":
            rec.finish_reason = "stop"
        elif status == "incomplete":
            details = obj.get("incomplete_details")
            reason = _str(details.get("reason")) if isinstance(details, dict) else ""
            rec.finish_reason = _RESPONSES_INCOMPLETE.get(reason, reason or "incomplete")
        elif status == "failed":
            rec.finish_reason = "error"
            if isinstance(obj.get("error"), dict):
                self.error_body(obj)
        elif isinstance(status, str):
            rec.finish_reason = status
        u = obj.get("usage")
        if isinstance(u, dict):
            self.usage_seen = True
            rec.input_tokens = _int(u.get("input_tokens"))
            rec.output_tokens = _int(u.get("output_tokens"))
            d = u.get("input_tokens_details")
            if isinstance(d, dict):
                rec.cache_read_tokens = _int(d.get("cached_tokens"))
            d = u.get("output_tokens_details")
            if isinstance(d, dict):
                rec.reasoning_tokens = _int(d.get("reasoning_tokens"))
        if not self.output_chars:
            for item in obj.get("output") or ():
                if isinstance(item, dict):
                    for part in item.get("content") or ():
                        if isinstance(part, dict):
                            self.output_chars += len(_str(part.get("text")))

    def event(self, event: str, data: bytes) -> bool:
        obj = _event_json(data)
        if obj is None:
            return False
        kind = event or _str(obj.get("type"))
        if kind.endswith(".delta"):
            delta = obj.get("delta")
            if isinstance(delta, str) and delta:
                self.output_chars += len(delta)
                self.content_seen = True
        elif kind in ("response.created", "response.in_progress"):
            resp = obj.get("response")
            if isinstance(resp, dict):
                self.rec.response_model = _str(resp.get("model"))
                self.rec.response_id = _str(resp.get("id"))
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            resp = obj.get("response")
            if isinstance(resp, dict):
                self.body(resp)
            if kind == "response.failed":
                self.rec.outcome = UPSTREAM_ERROR
        elif kind == "error":
            self._stream_error({"error": obj.get("error", obj)})
        return False


class AnthropicObserver(Observer):
    """Anthropic Messages, native: `message_start` has input usage, `message_delta` output."""

    __slots__ = ()

    def _usage(self, u: Any) -> None:
        if not isinstance(u, dict):
            return
        rec = self.rec
        if "input_tokens" in u or "cache_read_input_tokens" in u:
            self.usage_seen = True
            cache_read = _int(u.get("cache_read_input_tokens"))
            cache_write = _int(u.get("cache_creation_input_tokens"))
            if "input_tokens" in u:
                rec.input_tokens = _int(u.get("input_tokens")) + cache_read + cache_write
            rec.cache_read_tokens = cache_read or rec.cache_read_tokens
            rec.cache_write_tokens = cache_write or rec.cache_write_tokens
        if "output_tokens" in u:
            self.usage_seen = True
            rec.output_tokens = _int(u.get("output_tokens"))  # cumulative in streams

    def _stop(self, reason: Any) -> None:
        if isinstance(reason, str) and reason:
            self.rec.finish_reason = _ANTHROPIC_STOP.get(reason, reason)

    def body(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        self.rec.response_model = _str(obj.get("model"))
        self.rec.response_id = _str(obj.get("id"))
        self._stop(obj.get("stop_reason"))
        self._usage(obj.get("usage"))
        for block in obj.get("content") or ():
            if isinstance(block, dict):
                self.output_chars += len(_str(block.get("text"))) + len(_str(block.get("thinking")))

    def event(self, event: str, data: bytes) -> bool:
        obj = _event_json(data)
        if obj is None:
            return False
        kind = event or _str(obj.get("type"))
        if kind == "content_block_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                n = (
                    len(_str(delta.get("text")))
                    + len(_str(delta.get("partial_json")))
                    + len(_str(delta.get("thinking")))
                )
                if n:
                    self.output_chars += n
                    self.content_seen = True
        elif kind == "message_start":
            msg = obj.get("message")
            if isinstance(msg, dict):
                self.rec.response_model = _str(msg.get("model"))
                self.rec.response_id = _str(msg.get("id"))
                self._usage(msg.get("usage"))
        elif kind == "message_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                self._stop(delta.get("stop_reason"))
            self._usage(obj.get("usage"))
        elif kind == "error":
            self._stream_error(obj)
        return False
