"""Anthropic Messages → OpenAI chat completions (any OpenAI-kind provider), and the answer
back, so that Anthropic-SDK clients can use any OpenAI-compatible model.

Carried: `system` (a string or text blocks), multi-turn messages, images (base64 sources
as data URLs, url sources as URLs), tools, `tool_use` and `tool_result` blocks (results
become `tool` messages right after the assistant's calls), `tool_choice` (with
`disable_parallel_tool_use`), `stop_sequences`, `temperature`, `top_p`, `max_tokens`,
`metadata.user_id` (as `user`). Thinking blocks in earlier turns are left out (chat has
no place for them). Anything else (`top_k`, `thinking`, documents, server tools, ...) is
a 400 naming the parameter, unless the provider's `drop_params` lists it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.errors import ApiError
from gateway.providers.base import ProviderConfig
from gateway.providers.translate.chat_to_messages import unsupported
from gateway.providers.wire.base import Observer, as_int, as_str, event_json
from gateway.providers.wire.chat import ChatObserver
from gateway.providers.wire.messages import anthropic_error
from gateway.providers.wire.sse import SSESplitter
from gateway.recording.record import UsageSource, usage_estimate
from gateway.recording.tokens import estimate_input

_encode = msgspec.json.encode
_decode = msgspec.json.decode

_CARRIED = frozenset(
    {
        "model", "messages", "max_tokens", "system", "temperature", "top_p",
        "stop_sequences", "stream", "tools", "tool_choice", "metadata",
    }
)  # fmt: skip
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_API = "OpenAI chat completions API"


def _invalid(param: str, message: str) -> ApiError:
    return ApiError(400, message, "invalid_request_error", "invalid_value", param)


def _text(content: Any, param: str) -> str:
    """A string, or text blocks joined (system prompts, tool results)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _invalid(param, f"`{param}` must be a string or a list of blocks")
    parts = []
    for j, b in enumerate(content):
        if not isinstance(b, dict) or b.get("type") != "text":
            kind = b.get("type") if isinstance(b, dict) else None
            raise unsupported(f"{param}[{j}].type", f"block {kind!r} here", _API)
        parts.append(as_str(b.get("text")))
    return "\n".join(parts)


def _image(source: Any, param: str) -> dict[str, Any]:
    if not isinstance(source, dict):
        raise _invalid(f"{param}.source", f"`{param}.source` must be an object")
    kind = source.get("type")
    if kind == "base64":
        media, data = as_str(source.get("media_type")), as_str(source.get("data"))
        url = f"data:{media};base64,{data}"
    elif kind == "url":
        url = as_str(source.get("url"))
    else:
        raise unsupported(f"{param}.source.type", f"image source {kind!r}", _API)
    return {"type": "image_url", "image_url": {"url": url}}


def _turn(m: Any, p: str) -> list[dict[str, Any]]:
    """One Anthropic message as chat messages (tool results are messages of their own)."""
    if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
        raise _invalid(f"{p}.role", f"`{p}.role` must be user or assistant")
    role, content = m["role"], m.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise _invalid(f"{p}.content", f"`{p}.content` must be a string or a list of blocks")
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for j, b in enumerate(content):
        q = f"{p}.content[{j}]"
        if not isinstance(b, dict):
            raise _invalid(q, f"`{q}` must be a content block")
        kind = b.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": as_str(b.get("text"))})
        elif kind == "image" and role == "user":
            parts.append(_image(b.get("source"), q))
        elif kind == "tool_result" and role == "user":
            result = b.get("content")
            text = _text(result, f"{q}.content") if result is not None else ""
            if b.get("is_error"):
                text = f"Error: {text}"
            out.append({"role": "tool", "tool_call_id": as_str(b.get("tool_use_id")),
                        "content": text})  # fmt: skip
        elif kind == "tool_use" and role == "assistant":
            calls.append({
                "id": as_str(b.get("id")),
                "type": "function",
                "function": {"name": as_str(b.get("name")),
                             "arguments": _encode(b.get("input") or {}).decode()},
            })  # fmt: skip
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            continue
        else:
            raise unsupported(f"{q}.type", f"block {kind!r}", _API)
    if role == "assistant":
        text = "".join(pt["text"] for pt in parts)
        msg: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            msg["tool_calls"] = calls
        if text or calls:
            out.append(msg)
    elif parts:
        plain = all(pt["type"] == "text" for pt in parts)
        out.append({"role": "user", "content": "".join(pt["text"] for pt in parts) if plain
                    and len(parts) == 1 else parts})  # fmt: skip
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _invalid("tools", "`tools` must be a list")
    out = []
    for i, t in enumerate(tools):
        if (
            not isinstance(t, dict)
            or t.get("type", "custom") != "custom"
            or "input_schema" not in t
        ):
            kind = t.get("type") if isinstance(t, dict) else None
            raise unsupported(f"tools[{i}].type", f"tool {kind!r}", _API)
        fn: dict[str, Any] = {"name": as_str(t.get("name")), "parameters": t["input_schema"]}
        if t.get("description"):
            fn["description"] = t["description"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(tc: Any, body: dict[str, Any]) -> None:
    if not isinstance(tc, dict):
        raise _invalid("tool_choice", "`tool_choice` must be an object")
    kind = tc.get("type")
    if kind in ("auto", "none"):
        body["tool_choice"] = kind
    elif kind == "any":
        body["tool_choice"] = "required"
    elif kind == "tool":
        body["tool_choice"] = {"type": "function", "function": {"name": as_str(tc.get("name"))}}
    else:
        raise _invalid("tool_choice", "`tool_choice.type` must be auto, any, tool or none")
    if tc.get("disable_parallel_tool_use") is True and kind != "none":
        body["parallel_tool_calls"] = False


def _usage(u: Any) -> dict[str, int]:
    """OpenAI usage in Anthropic's terms: cached input is reported apart from input."""
    if not isinstance(u, dict):
        return {"input_tokens": 0, "output_tokens": 0}
    details = u.get("prompt_tokens_details")
    cached = as_int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return {
        "input_tokens": max(as_int(u.get("prompt_tokens")) - cached, 0),
        "output_tokens": as_int(u.get("completion_tokens")),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def _estimated(observed: UsageSource | None, payload: dict[str, Any]) -> dict[str, int]:
    """An answer without usage, as the gateway records it: its estimate (zeros when the
    upstream's API is one the gateway does not estimate)."""
    if observed is None or not observed.estimates_usage or observed.usage_seen:
        return {"input_tokens": 0, "output_tokens": 0}
    tokens_in, tokens_out = usage_estimate(observed, payload)
    return {"input_tokens": tokens_in, "output_tokens": tokens_out}


def _sse(kind: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + _encode(obj) + b"\n\n"


class MessagesToChat:
    client_api = "anthropic"
    upstream_api = "openai"
    observer: type[Observer] = ChatObserver

    def path(self, stream: bool) -> str:
        return "/v1/chat/completions"

    def splitter(self) -> SSESplitter:
        return SSESplitter()

    def request(self, payload: dict[str, Any], model: str, cfg: ProviderConfig) -> bytes:
        drop = cfg.drop_params
        for key, value in payload.items():
            if key not in _CARRIED and key not in drop and value is not None:
                raise unsupported(key, "", _API)
        messages: list[dict[str, Any]] = []
        if payload.get("system"):
            messages.append({"role": "system", "content": _text(payload["system"], "system")})
        turns = payload.get("messages")
        if not isinstance(turns, list) or not turns:
            raise _invalid("messages", "`messages` must be a non-empty list")
        for i, m in enumerate(turns):
            messages.extend(_turn(m, f"messages[{i}]"))
        body: dict[str, Any] = {"model": model, "messages": messages}
        if payload.get("max_tokens") is not None:
            body["max_tokens"] = payload["max_tokens"]
        for key in ("temperature", "top_p"):
            if payload.get(key) is not None:
                body[key] = payload[key]
        if payload.get("stop_sequences"):
            body["stop"] = payload["stop_sequences"]
        if payload.get("tools"):
            body["tools"] = _tools(payload["tools"])
        if payload.get("tool_choice") is not None:
            _tool_choice(payload["tool_choice"], body)
        md = payload.get("metadata")
        if isinstance(md, dict) and isinstance(md.get("user_id"), str):
            body["user"] = md["user_id"]
        if payload.get("stream") is True:
            body["stream"] = True
            if cfg.inject_stream_usage:
                body["stream_options"] = {"include_usage": True}
        return _encode(body)

    def response(
        self, obj: dict[str, Any], payload: dict[str, Any], usage: UsageSource | None = None
    ) -> dict[str, Any]:
        choices = obj.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else {}
        msg = choice.get("message") if isinstance(choice, dict) else None
        msg = msg if isinstance(msg, dict) else {}
        content: list[dict[str, Any]] = []
        if msg.get("content"):
            content.append({"type": "text", "text": as_str(msg["content"])})
        for call in msg.get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                content.append(_tool_use(as_str(call.get("id")), as_str(fn.get("name")),
                                         _arguments(fn.get("arguments"))))  # fmt: skip
        return {
            "id": as_str(obj.get("id")),
            "type": "message",
            "role": "assistant",
            "model": as_str(obj.get("model")),
            "content": content,
            "stop_reason": STOP_REASONS.get(as_str(choice.get("finish_reason")), "end_turn"),
            "stop_sequence": None,
            "usage": _usage(u)
            if isinstance(u := obj.get("usage"), dict)
            else _estimated(usage, payload),
        }

    def error(self, obj: Any, status: int) -> dict[str, Any]:
        err = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(err, dict):
            return anthropic_error(as_str(err.get("message")), status, as_str(err.get("type")))
        return anthropic_error(f"the upstream answered HTTP {status}", status)

    def stream(self, payload: dict[str, Any], usage: UsageSource | None = None) -> EventStream:
        return EventStream(payload, usage)


def _arguments(args: Any) -> Any:
    try:
        value = _decode(args) if isinstance(args, str) and args else {}
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _tool_use(id_: str, name: str, input_: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": id_, "name": name, "input": input_}


class EventStream:
    """OpenAI chat chunks as Anthropic stream events: `message_start` on the first chunk,
    a content block per text run and per tool call, and at `[DONE]` (the usage chunk has
    come by then) `message_delta` with the stop reason and usage, then `message_stop`.

    An upstream that sends no usage (a server that ignores `stream_options`) leaves the
    gateway to estimate it: the client is told the same estimate the call is recorded
    with (input in `message_start`, both in `message_delta`), not zeros."""

    __slots__ = ("block", "blocks", "finish", "observed", "open", "payload", "started",
                 "tools", "usage")  # fmt: skip

    def __init__(self, payload: dict[str, Any], observed: UsageSource | None = None) -> None:
        self.payload = payload
        self.observed = observed  # the observer of the upstream's stream
        self.started = False
        self.blocks = 0  # content blocks opened so far
        self.open: str | None = None  # the open block: "text" or a tool call's key
        self.tools: dict[int, int] = {}  # OpenAI tool call index -> block index
        self.block = -1
        self.finish = ""
        self.usage: dict[str, int] = {}

    def _open(self, key: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.block, self.open = self.blocks, key
        self.blocks += 1
        start = {"type": "content_block_start", "index": self.block, "content_block": block}
        return out + _sse("content_block_start", start)

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        self.open = None
        return _sse("content_block_stop", {"type": "content_block_stop", "index": self.block})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        ev = {"type": "content_block_delta", "index": self.block, "delta": delta}
        return _sse("content_block_delta", ev)

    def event(self, event: str, data: bytes) -> bytes:
        if data == b"[DONE]":
            return self._end()
        obj = event_json(data)
        if obj is None:
            return b""
        if "error" in obj and "choices" not in obj:
            err = obj["error"] if isinstance(obj["error"], dict) else {}
            ev = anthropic_error(as_str(err.get("message")), 0, as_str(err.get("type")))
            return _sse("error", ev)
        out = b""
        if not self.started:
            self.started = True
            message: dict[str, Any] = {
                "id": as_str(obj.get("id")), "type": "message", "role": "assistant",
                "model": as_str(obj.get("model")), "content": [], "stop_reason": None,
                "stop_sequence": None, "usage": {"input_tokens": self._input(), "output_tokens": 0},
            }  # fmt: skip
            out = _sse("message_start", {"type": "message_start", "message": message})
        if isinstance(obj.get("usage"), dict):
            self.usage = _usage(obj["usage"])
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                out += self._choice_delta(delta)
            if choice.get("finish_reason"):
                self.finish = STOP_REASONS.get(as_str(choice["finish_reason"]), "end_turn")
        return out

    def _choice_delta(self, delta: dict[str, Any]) -> bytes:
        out = b""
        text = as_str(delta.get("content"))
        if text:
            if self.open != "text":
                out += self._open("text", {"type": "text", "text": ""})
            out += self._delta({"type": "text_delta", "text": text})
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict):
                continue
            index = as_int(call.get("index"))
            f = call.get("function")
            fn: dict[str, Any] = f if isinstance(f, dict) else {}
            key = f"tool{index}"
            if index not in self.tools:
                self.tools[index] = self.blocks
                block = _tool_use(as_str(call.get("id")), as_str(fn.get("name")), {})
                out += self._open(key, block)
            args = as_str(fn.get("arguments"))
            if args and self.open == key:
                out += self._delta({"type": "input_json_delta", "partial_json": args})
        return out

    def _input(self) -> int:
        """Input tokens known when the stream starts: the estimate (the upstream's figure,
        when it comes, replaces it in `message_delta`)."""
        return estimate_input(self.payload) if self.observed is not None else 0

    def _end(self) -> bytes:
        if not self.started:
            return b""
        usage = self.usage or _estimated(self.observed, self.payload)
        delta = {"stop_reason": self.finish or "end_turn", "stop_sequence": None}
        return (
            self._close()
            + _sse("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
            + _sse("message_stop", {"type": "message_stop"})
        )


MESSAGES_TO_CHAT = MessagesToChat()
