"""The wire-API interface: what a call's request says, how its answer is read (the
observer), and how a broken stream is told to the client in the stream's own dialect.

Observers see either the whole JSON body or the stream's events one by one, and write
what they learn into the call record. Token counts follow the OpenTelemetry GenAI
convention: `input_tokens` includes cached input.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from gateway.errors import JSON_ERRORS, ApiError, error_envelope
from gateway.recording.record import CallRecord, Outcome

_decode = msgspec.json.decode
_encode = msgspec.json.encode


def event_json(data: bytes) -> dict[str, Any] | None:
    """A stream event's JSON object; None for `[DONE]`, keep-alives and anything unparsable
    (a pass-through never fails on what it cannot read)."""
    if not data or data == b"[DONE]":
        return None
    try:
        obj = _decode(data)
    except JSON_ERRORS:
        return None
    return obj if isinstance(obj, dict) else None


def as_int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def as_str(v: Any) -> str:
    return v if isinstance(v, str) else ""


# Usage field names: (input, output, input details, output details), by API family.
CHAT_USAGE = ("prompt_tokens", "completion_tokens", "prompt_tokens_details",
              "completion_tokens_details")  # fmt: skip
RESPONSES_USAGE = ("input_tokens", "output_tokens", "input_tokens_details",
                   "output_tokens_details")  # fmt: skip


def read_usage(rec: CallRecord, u: dict[str, Any], names: tuple[str, str, str, str]) -> None:
    """OpenAI-style usage: tokens in and out, cached input and reasoning in the details."""
    rec.input_tokens = as_int(u.get(names[0]))
    rec.output_tokens = as_int(u.get(names[1]))
    details = u.get(names[2])
    if isinstance(details, dict):
        rec.cache_read_tokens = as_int(details.get("cached_tokens"))
    details = u.get(names[3])
    if isinstance(details, dict):
        rec.reasoning_tokens = as_int(details.get("reasoning_tokens"))


class Observer:
    """Base: records nothing but errors. Subclasses know one API's shapes."""

    estimates_usage: ClassVar[bool] = True  # estimate tokens when the upstream reports none
    # The API's own finish (stop) reasons, in OpenAI's vocabulary so that cross-provider
    # queries work; a reason not listed is kept as it is.
    finish_reasons: ClassVar[dict[str, str]] = {}

    __slots__ = ("content_seen", "drop_usage_chunk", "ended", "output_chars", "rec", "usage_seen")

    def __init__(self, rec: CallRecord, drop_usage_chunk: bool = False) -> None:
        self.rec = rec
        self.usage_seen = False
        self.output_chars = 0
        self.content_seen = False  # an event carried output: the first token has arrived
        self.drop_usage_chunk = drop_usage_chunk
        # The stream's terminal event has been seen (`[DONE]`, `message_stop`, ...): the
        # record is complete, and is committed before that event goes on to the client.
        self.ended = False

    def body(self, obj: Any) -> None:
        """A complete JSON answer (non-streamed)."""

    def event(self, event: str, data: bytes) -> bool:
        """One stream event; returns True when the event must not reach the client."""
        return False

    def error_body(self, obj: Any) -> None:
        """An error answer, in OpenAI's or Anthropic's error shape."""
        err = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(err, dict):
            self.rec.error_type = as_str(err.get("type")) or as_str(err.get("code"))
            self.rec.error_message = as_str(err.get("message"))[:1000]
        elif isinstance(err, str):
            self.rec.error_message = err[:1000]

    def _stop(self, reason: Any) -> None:
        if isinstance(reason, str) and reason:
            self.rec.finish_reason = self.finish_reasons.get(reason, reason)

    def _stream_error(self, obj: Any) -> None:
        self.rec.outcome = Outcome.UPSTREAM_ERROR
        self.error_body(obj)
        if not self.rec.error_type:
            self.rec.error_type = "stream_error"


class PassObserver(Observer):
    """For calls whose answer has no usage to read (models, unknown endpoints)."""

    estimates_usage = False
    __slots__ = ()


def _turn_index(payload: dict[str, Any]) -> int:
    items = payload.get("messages")
    if items is None:
        items = payload.get("input")
        if isinstance(items, str):
            return 1
    if not isinstance(items, list):
        return 0
    return sum(1 for m in items if isinstance(m, dict) and m.get("role") == "user")


def _end_user(payload: dict[str, Any]) -> str:
    user = payload.get("user") or payload.get("safety_identifier")
    if isinstance(user, str):
        return user[:256]
    md = payload.get("metadata")
    uid = md.get("user_id") if isinstance(md, dict) else None
    if isinstance(uid, str):
        return uid[:256]  # Anthropic
    return ""


class WireAPI:
    """One API shape served under one path (`/v1/chat/completions`, `/v1/messages`, ...)."""

    __slots__ = ("dialect", "inject_usage", "needs_model", "observer", "operation", "path")

    def __init__(
        self,
        path: str,
        operation: str,
        observer: type[Observer],
        needs_model: bool = True,
        inject_usage: bool = False,
        dialect: str | None = None,
    ) -> None:
        self.path = path
        self.operation = operation
        self.observer = observer
        self.needs_model = needs_model
        # Ask for usage in streams (`stream_options.include_usage`) when the provider allows.
        self.inject_usage = inject_usage
        # Only providers speaking this wire family serve it (None: any provider).
        self.dialect = dialect

    def read_request(self, payload: dict[str, Any], rec: CallRecord) -> None:
        """What the record takes from a parsed request body (its model is already read)."""
        rec.stream = payload.get("stream") is True
        rec.turn_index = _turn_index(payload)
        if not rec.end_user:
            rec.end_user = _end_user(payload)

    def error_answer(self, e: ApiError, request_id: str) -> bytes:
        """The body of the gateway's own error answer, in the client's dialect (OpenAI's
        error shape here)."""
        return e.body()

    def stream_error(self, message: str, type_: str) -> bytes:
        """A last SSE event telling the client its stream broke (OpenAI's chat form)."""
        body = _encode(error_envelope(message, type_, None, type_))
        return b"data: " + body + b"\n\n"
