"""OpenAI chat completions and legacy completions (also Azure and every OpenAI-compatible
server): usage in the last chunk when `stream_options.include_usage` is set."""

from __future__ import annotations

from typing import Any

from gateway.providers.wire.base import (
    CHAT_USAGE,
    Observer,
    WireAPI,
    as_str,
    event_json,
    read_usage,
)


class ChatObserver(Observer):
    __slots__ = ()

    def _meta(self, obj: dict[str, Any]) -> None:
        rec = self.rec
        if not rec.response_model:
            rec.response_model = as_str(obj.get("model"))
            rec.response_id = as_str(obj.get("id"))
        fp = obj.get("system_fingerprint")
        if fp:
            rec.system_fingerprint = as_str(fp)

    def _usage(self, u: Any) -> None:
        if isinstance(u, dict):
            self.usage_seen = True
            read_usage(self.rec, u, CHAT_USAGE)

    def body(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        self._meta(obj)
        self._usage(obj.get("usage"))
        for choice in obj.get("choices") or ():
            if isinstance(choice, dict):
                fr = choice.get("finish_reason")
                if fr:
                    self.rec.finish_reason = as_str(fr)
                self.output_chars += self._choice_chars(choice)

    def _choice_chars(self, choice: dict[str, Any]) -> int:
        msg = choice.get("message")
        if isinstance(msg, dict):
            n = len(as_str(msg.get("content")))
            for call in msg.get("tool_calls") or ():
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    n += len(as_str(call["function"].get("arguments")))
            return n
        return len(as_str(choice.get("text")))

    def event(self, event: str, data: bytes) -> bool:
        obj = event_json(data)
        if obj is None:
            # The usage chunk (asked for with stream_options) came before this one.
            self.ended = self.ended or data == b"[DONE]"
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
                n = len(as_str(delta.get("content"))) + len(as_str(delta.get("refusal")))
                for call in delta.get("tool_calls") or ():
                    if isinstance(call, dict) and isinstance(call.get("function"), dict):
                        n += len(as_str(call["function"].get("arguments"))) or 1
            else:
                n = len(as_str(choice.get("text")))
            if n:
                self.output_chars += n
                self.content_seen = True
            fr = choice.get("finish_reason")
            if fr:
                self.rec.finish_reason = as_str(fr)
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self._usage(usage)
            # The gateway asked for this chunk on the client's behalf: hide it.
            return self.drop_usage_chunk and not choices
        return False


CHAT = WireAPI("/v1/chat/completions", "chat", ChatObserver, inject_usage=True)
COMPLETIONS = WireAPI("/v1/completions", "text_completion", ChatObserver, inject_usage=True)
