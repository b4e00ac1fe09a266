"""AWS Bedrock Converse: usage in the body's `usage` (`inputTokens` without the cached
input, `cacheReadInputTokens`, `cacheWriteInputTokens`) and, in ConverseStream, in the
last `metadata` event; the stop reason in `stopReason` / the `messageStop` event. Served
only through translation (clients speak OpenAI chat), so it has no client path.

ConverseStream comes in the AWS event-stream framing, decoded by botocore's
`EventStreamBuffer` (both checksums verified); each message is handed on as an `SSEEvent`
(the event type from `:event-type`, or `exception:<type>` for an exception; the payload
as data), so that the request path reads both framings the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gateway.errors import MalformedStream
from gateway.providers.wire.base import Observer, as_int, as_str, event_json
from gateway.providers.wire.messages import FINISH_REASONS as MESSAGES_FINISH_REASONS
from gateway.providers.wire.sse import SSEEvent

# Converse names its stop reasons as the Messages API does, plus its own filters.
FINISH_REASONS = {
    **{k: v for k, v in MESSAGES_FINISH_REASONS.items() if k not in ("pause_turn", "refusal")},
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}


class ConverseObserver(Observer):
    __slots__ = ()
    finish_reasons = FINISH_REASONS

    def _usage(self, u: Any) -> None:
        if not isinstance(u, dict):
            return
        self.usage_seen = True
        rec = self.rec
        rec.cache_read_tokens = as_int(u.get("cacheReadInputTokens"))
        rec.cache_write_tokens = as_int(u.get("cacheWriteInputTokens"))
        rec.input_tokens = (
            as_int(u.get("inputTokens")) + rec.cache_read_tokens + rec.cache_write_tokens
        )
        rec.output_tokens = as_int(u.get("outputTokens"))

    def body(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        self._stop(obj.get("stopReason"))
        self._usage(obj.get("usage"))
        output = obj.get("output")
        msg = output.get("message") if isinstance(output, dict) else None
        for block in (msg.get("content") or ()) if isinstance(msg, dict) else ():
            if isinstance(block, dict):
                self.output_chars += len(as_str(block.get("text")))

    def error_body(self, obj: Any) -> None:
        if isinstance(obj, dict) and "error" not in obj:  # Bedrock: {"message": ...}
            self.rec.error_message = as_str(obj.get("message"))[:1000]
            return
        super().error_body(obj)

    def event(self, event: str, data: bytes) -> bool:
        obj = event_json(data)
        if obj is None:
            return False
        if event == "contentBlockDelta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                tool = delta.get("toolUse")
                n = len(as_str(delta.get("text"))) + (
                    len(as_str(tool.get("input"))) if isinstance(tool, dict) else 0
                )
                if n:
                    self.output_chars += n
                    self.content_seen = True
        elif event == "messageStop":
            self._stop(obj.get("stopReason"))
        elif event == "metadata":  # the last event, after messageStop
            self._usage(obj.get("usage"))
            self.ended = True
        elif event.startswith("exception:"):
            self._stream_error({"error": {"type": event[10:], "message": obj.get("message")}})
        return False


class EventStreamSplitter:
    """Feeds on arbitrary chunks; yields each complete, checksum-verified message once."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        # botocore is imported by the first Bedrock stream, not by every gateway.
        from botocore.eventstream import EventStreamBuffer

        self._buffer = EventStreamBuffer()

    def feed(self, chunk: bytes) -> Iterator[SSEEvent]:
        from botocore.eventstream import ParserError

        self._buffer.add_data(chunk)
        try:
            for message in self._buffer:
                headers = message.headers
                event = headers.get(":event-type", "")
                if headers.get(":message-type") == "exception":
                    event = "exception:" + headers.get(":exception-type", "")
                # The frame's bytes are not kept: a Converse stream is always translated.
                yield SSEEvent(b"", event, message.payload)
        except ParserError as e:
            raise MalformedStream(f"the upstream's event stream cannot be read: {e}") from None

    def flush(self) -> SSEEvent | None:
        return None  # an unfinished message has no checksum to trust
