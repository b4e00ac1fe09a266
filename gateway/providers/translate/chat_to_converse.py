"""OpenAI chat completions → AWS Bedrock Converse / ConverseStream, and the answer back.

The request is first checked and shaped as for Anthropic Messages (`chat_to_messages`:
same rules for what is carried and what is a 400), then put in Converse's terms: `system`
and `inferenceConfig`, content blocks (`text`, `image` with bytes, `toolUse`,
`toolResult`), `toolConfig`. Beyond the Anthropic rules, Converse takes images only as
bytes (a data URL; an http URL is a 400) and has no `tool_choice: none` and no switch for
parallel tool calls (400s). The stream arrives in the AWS event-stream framing and goes to
the client as chat chunks; Converse answers carry no id, so the gateway makes one.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from gateway.errors import error_envelope
from gateway.providers.base import ProviderConfig
from gateway.providers.translate.chat_to_messages import ChatToMessages, ChunkStream, unsupported
from gateway.providers.wire.base import Observer, as_int, as_str, event_json
from gateway.providers.wire.converse import ConverseObserver, EventStreamSplitter
from gateway.recording.record import UsageSource

_encode = msgspec.json.encode
_API = "Bedrock Converse API"
# Converse stop reasons that Anthropic's vocabulary (which the chat side maps) lacks.
_STOP = {"guardrail_intervened": "refusal", "content_filtered": "refusal"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def _block(b: dict[str, Any], param: str) -> dict[str, Any]:
    kind = b.get("type")
    if kind == "text":
        return {"text": b["text"]}
    if kind == "image":
        src = b["source"]
        if src.get("type") != "base64":
            raise unsupported(f"{param}.image_url", "images as data URLs only", _API)
        fmt = as_str(src.get("media_type")).rpartition("/")[2]
        return {"image": {"format": "jpeg" if fmt == "jpg" else fmt,
                          "source": {"bytes": src.get("data")}}}  # fmt: skip
    if kind == "tool_use":
        return {"toolUse": {"toolUseId": b["id"], "name": b["name"], "input": b["input"]}}
    # tool_result
    content = b.get("content")
    if isinstance(content, str):
        parts = [{"text": content}]
    else:
        parts = [_block(c, param) for c in content or ()]
    return {"toolResult": {"toolUseId": b["tool_use_id"], "content": parts}}


def _tool_config(body: dict[str, Any]) -> dict[str, Any]:
    tools = [
        {"toolSpec": {k: v for k, v in (("name", t["name"]), ("description", t.get("description")),
                                         ("inputSchema", {"json": t["input_schema"]})) if v}}
        for t in body["tools"]
    ]  # fmt: skip
    config: dict[str, Any] = {"tools": tools}
    tc = body.get("tool_choice")
    if tc is not None:
        if tc.get("disable_parallel_tool_use"):
            raise unsupported("parallel_tool_calls", "", _API)
        if tc["type"] == "none":
            raise unsupported("tool_choice", "no `none` choice", _API)
        config["toolChoice"] = {tc["type"]: {"name": tc["name"]} if tc["type"] == "tool" else {}}
    return config


class ChatToConverse(ChatToMessages):
    client_api = "openai"
    upstream_api = "bedrock"
    observer: type[Observer] = ConverseObserver

    def path(self, stream: bool) -> str:
        return "/converse-stream" if stream else "/converse"

    def splitter(self) -> EventStreamSplitter:  # type: ignore[override]
        return EventStreamSplitter()

    def request(self, payload: dict[str, Any], model: str, cfg: ProviderConfig) -> bytes:
        a = self.body(payload, model, cfg)
        out: dict[str, Any] = {
            "messages": [
                {"role": m["role"],
                 "content": [_block(b, f"messages[{i}].content") for b in m["content"]]}
                for i, m in enumerate(a["messages"])
            ]
        }  # fmt: skip
        if a.get("system"):
            out["system"] = [{"text": a["system"]}]
        inference = {"maxTokens": a["max_tokens"]}
        for src, dst in (("temperature", "temperature"), ("top_p", "topP"),
                         ("stop_sequences", "stopSequences")):  # fmt: skip
            if src in a:
                inference[dst] = a[src]
        out["inferenceConfig"] = inference
        if a.get("tools"):
            out["toolConfig"] = _tool_config(a)
        elif a.get("tool_choice"):
            raise unsupported("tool_choice", "without tools", _API)
        if "metadata" in a:
            out["requestMetadata"] = a["metadata"]
        return _encode(out)

    def response(
        self, obj: dict[str, Any], payload: dict[str, Any], usage: UsageSource | None = None
    ) -> dict[str, Any]:
        output = obj.get("output")
        msg = output.get("message") if isinstance(output, dict) else None
        content = []
        for b in (msg.get("content") or ()) if isinstance(msg, dict) else ():
            if isinstance(b, dict) and "text" in b:
                content.append({"type": "text", "text": as_str(b["text"])})
            elif isinstance(b, dict) and isinstance(b.get("toolUse"), dict):
                tu = b["toolUse"]
                use = {"type": "tool_use", "id": as_str(tu.get("toolUseId")),
                       "name": as_str(tu.get("name")), "input": tu.get("input")}  # fmt: skip
                content.append(use)
        stop = as_str(obj.get("stopReason"))
        anthropic = {
            "id": _new_id(),
            "model": as_str(payload.get("model")),
            "content": content,
            "stop_reason": _STOP.get(stop, stop),
            "usage": _usage(obj.get("usage")),
        }
        return super().response(anthropic, payload)

    def error(self, obj: Any, status: int) -> dict[str, Any]:
        message = as_str(obj.get("message")) if isinstance(obj, dict) else ""
        type_ = _ERROR_TYPES.get(status, "api_error")
        return error_envelope(message or f"the upstream answered HTTP {status}", None, None, type_)

    def stream(self, payload: dict[str, Any], usage: UsageSource | None = None) -> ConverseChunks:
        opts = payload.get("stream_options")
        include = isinstance(opts, dict) and opts.get("include_usage") is True
        return ConverseChunks(include, as_str(payload.get("model")))


def _new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def _usage(u: Any) -> dict[str, int]:
    u = u if isinstance(u, dict) else {}
    return {
        "input_tokens": as_int(u.get("inputTokens")),
        "output_tokens": as_int(u.get("outputTokens")),
        "cache_read_input_tokens": as_int(u.get("cacheReadInputTokens")),
        "cache_creation_input_tokens": as_int(u.get("cacheWriteInputTokens")),
    }


class ConverseChunks(ChunkStream):
    """ConverseStream events as chat chunks: `messageStop` carries the finish reason and
    `metadata` (the last event) the usage, after which the stream is done."""

    __slots__ = ()

    def __init__(self, include_usage: bool, model: str) -> None:
        super().__init__(include_usage)
        self.id, self.model = _new_id(), model

    def event(self, event: str, data: bytes) -> bytes:
        obj = event_json(data)
        if obj is None:
            return b""
        if event == "contentBlockDelta":
            delta = obj.get("delta")
            if not isinstance(delta, dict):
                return b""
            if "text" in delta:
                return self._delta({"content": as_str(delta["text"])})
            tool = delta.get("toolUse")
            index = self.tools.get(obj.get("contentBlockIndex"))
            if isinstance(tool, dict) and index is not None:
                call = {"index": index, "function": {"arguments": as_str(tool.get("input"))}}
                return self._delta({"tool_calls": [call]})
            return b""
        if event == "contentBlockStart":
            start = obj.get("start")
            tool = start.get("toolUse") if isinstance(start, dict) else None
            if not isinstance(tool, dict):
                return b""
            index = len(self.tools)
            self.tools[obj.get("contentBlockIndex")] = index
            call = {"index": index, "id": as_str(tool.get("toolUseId")), "type": "function",
                    "function": {"name": as_str(tool.get("name")), "arguments": ""}}  # fmt: skip
            return self._delta({"tool_calls": [call]})
        if event == "messageStart":
            return self._delta({"role": "assistant", "content": ""})
        if event == "messageStop":
            stop = as_str(obj.get("stopReason"))
            return self._message_delta(_STOP.get(stop, stop), None)
        if event == "metadata":
            self.usage.update(_usage(obj.get("usage")))
            return self._message_stop()
        if event.startswith("exception:"):
            err = error_envelope(as_str(obj.get("message")), event[10:], None, "api_error")
            return b"data: " + _encode(err) + b"\n\n"
        return b""


CHAT_TO_CONVERSE = ChatToConverse()
