"""OpenAI chat completions → Anthropic Messages, and the answer back.

Carried: system and developer messages (joined into `system`, in order), multi-turn
messages, images (data URLs as base64 sources, http(s) URLs as url sources), tools, tool
calls and tool results, `tool_choice` and `parallel_tool_calls`, `stop`, `temperature`
(0..1, Anthropic's range), `top_p`, `user` (as `metadata.user_id`), `max_tokens` or
`max_completion_tokens` (else the provider's `max_tokens`: Anthropic requires one).
JSON mode (`response_format: json_object`) becomes an instruction appended to the system
prompt (Anthropic has no such switch; the answer is not validated); `json_schema` is a
400. Anything else that would change the answer's meaning (`n` > 1, `logprobs`, penalties,
`seed`, `logit_bias`, audio, ...) is a 400 naming the parameter, unless the provider's
`drop_params` lists it.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from gateway.errors import ApiError, error_envelope
from gateway.providers.base import ProviderConfig
from gateway.providers.wire.base import Observer, as_int, as_str, event_json
from gateway.providers.wire.messages import FINISH_REASONS, AnthropicObserver
from gateway.providers.wire.sse import SSESplitter
from gateway.recording.record import UsageSource

_encode = msgspec.json.encode
_decode = msgspec.json.decode

JSON_MODE_INSTRUCTION = "Respond with a single valid JSON object and nothing else."

# Keys read by the translation, and keys that do not touch the answer (OpenAI's stored
# completions) and are left behind.
_CARRIED = frozenset(
    {
        "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
        "stop", "stream", "stream_options", "tools", "tool_choice", "parallel_tool_calls",
        "response_format", "user", "store", "metadata",
    }
)  # fmt: skip
# Accepted at their no-op value only.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "logprobs": (False,),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
}
_OPENAI_FINISH = frozenset({"stop", "length", "tool_calls", "content_filter"})


def unsupported(param: str, why: str = "", api: str = "Anthropic Messages API") -> ApiError:
    return ApiError(
        400,
        f"`{param}` cannot be carried to the {api} that serves this model"
        + (f" ({why})" if why else "")
        + "; remove it, or list it in the provider's drop_params to have it dropped.",
        "invalid_request_error",
        "unsupported_parameter",
        param,
    )


def _invalid(param: str, message: str) -> ApiError:
    return ApiError(400, message, "invalid_request_error", "invalid_value", param)


def finish_reason(stop_reason: Any) -> str | None:
    """An Anthropic stop_reason in OpenAI's vocabulary (None while the answer goes on)."""
    if not isinstance(stop_reason, str) or not stop_reason:
        return None
    mapped = FINISH_REASONS.get(stop_reason, "stop")
    return mapped if mapped in _OPENAI_FINISH else "stop"


def _image(url: Any, param: str) -> dict[str, Any]:
    if not isinstance(url, str):
        raise _invalid(param, f"`{param}` must be a string URL")
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64":
            raise _invalid(param, f"`{param}`: a data URL must be base64-encoded")
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _invalid(param, f"`{param}` must be an http(s) or data URL")


def _blocks(content: Any, param: str) -> list[dict[str, Any]]:
    """OpenAI message content (a string or parts) as Anthropic content blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _invalid(param, f"`{param}` must be a string or a list of content parts")
    out: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            out.append({"type": "text", "text": as_str(part.get("text"))})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            out.append(_image(url, f"{p}.image_url.url"))
        else:
            raise unsupported(f"{p}.type", f"content part {kind!r}")
    return out


def _tool_use(call: Any, param: str) -> dict[str, Any]:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or call.get("type", "function") != "function":
        raise unsupported(f"{param}.type", "only function tool calls")
    try:
        args = _decode(fn.get("arguments") or "{}")
    except msgspec.DecodeError:
        args = None
    if not isinstance(args, dict):
        raise _invalid(f"{param}.function.arguments", "tool call arguments must be a JSON object")
    return {"type": "tool_use", "id": as_str(call.get("id")), "name": as_str(fn.get("name")),
            "input": args}  # fmt: skip


def _messages(messages: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, Anthropic messages); same-role neighbours merged, as the API wants
    user and assistant turns to alternate (tool results are user content)."""
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "`messages` must be a non-empty list")
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        p = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _invalid(p, f"`{p}` must be an object")
        role = m.get("role")
        if role in ("system", "developer"):
            system.extend(b["text"] for b in _blocks(m.get("content"), f"{p}.content"))
            continue
        if role == "user":
            blocks = _blocks(m.get("content"), f"{p}.content")
        elif role == "assistant":
            blocks = _blocks(m.get("content"), f"{p}.content")
            calls = m.get("tool_calls") or ()
            blocks += [_tool_use(c, f"{p}.tool_calls[{k}]") for k, c in enumerate(calls)]
            if not blocks:
                continue
        elif role == "tool":
            role = "user"
            content = m.get("content")
            result = as_str(content) if not isinstance(content, list) else _blocks(content, p)
            blocks = [{"type": "tool_result", "tool_use_id": as_str(m.get("tool_call_id")),
                       "content": result}]  # fmt: skip
        else:
            raise unsupported(f"{p}.role", f"role {role!r}")
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return system, out


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _invalid("tools", "`tools` must be a list")
    out = []
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
        if not isinstance(fn, dict):
            raise unsupported(f"tools[{i}].type", "only function tools")
        tool: dict[str, Any] = {
            "name": as_str(fn.get("name")),
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            tool["description"] = fn["description"]
        out.append(tool)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None:
        tc: dict[str, Any] | None = {"type": "auto"} if parallel is False else None
    elif choice in ("auto", "none"):
        tc = {"type": choice}
    elif choice == "required":
        tc = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        tc = {"type": "tool", "name": as_str(choice["function"].get("name"))}
    else:
        raise _invalid("tool_choice", "`tool_choice` must be auto, none, required or a function")
    if parallel is False and tc is not None and tc["type"] != "none":
        tc["disable_parallel_tool_use"] = True
    return tc


def _usage(u: dict[str, int]) -> dict[str, Any]:
    read = u.get("cache_read_input_tokens", 0)
    write = u.get("cache_creation_input_tokens", 0)
    prompt = u.get("input_tokens", 0) + read + write  # OpenAI counts cached input in prompt
    out = u.get("output_tokens", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": out,
        "total_tokens": prompt + out,
        "prompt_tokens_details": {"cached_tokens": read, "cache_write_tokens": write},
    }


def _int_usage(u: Any) -> dict[str, int]:
    return {k: as_int(v) for k, v in u.items()} if isinstance(u, dict) else {}


class ChatToMessages:
    client_api = "openai"
    upstream_api = "anthropic"
    observer: type[Observer] = AnthropicObserver

    def path(self, stream: bool) -> str:
        return "/v1/messages"

    def splitter(self) -> SSESplitter:
        return SSESplitter()

    def request(self, payload: dict[str, Any], model: str, cfg: ProviderConfig) -> bytes:
        return _encode(self.body(payload, model, cfg))

    def body(self, payload: dict[str, Any], model: str, cfg: ProviderConfig) -> dict[str, Any]:
        """The Anthropic request (a dict), checked for what cannot be carried."""
        drop = cfg.drop_params
        for key, value in payload.items():
            if key in _CARRIED or key in drop or value is None:
                continue
            if key in _NEUTRAL and value in _NEUTRAL[key]:
                continue
            raise unsupported(key)
        system, messages = _messages(payload.get("messages"))
        max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens")
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": max_tokens or cfg.max_tokens,
            "messages": messages,
        }
        fmt = payload.get("response_format")
        fmt_type = fmt.get("type") if isinstance(fmt, dict) else None
        if fmt_type == "json_object":
            system.append(JSON_MODE_INSTRUCTION)
        elif fmt is not None and fmt_type != "text" and "response_format" not in drop:
            raise unsupported("response_format", f"type {fmt_type!r}; json_object is carried")
        if system:
            body["system"] = "\n\n".join(system)
        temperature = payload.get("temperature")
        if temperature is not None:
            if not isinstance(temperature, int | float) or not 0 <= temperature <= 1:
                raise unsupported("temperature", "Anthropic takes 0 to 1")
            body["temperature"] = temperature
        if payload.get("top_p") is not None:
            body["top_p"] = payload["top_p"]
        stop = payload.get("stop")
        if stop:
            body["stop_sequences"] = [stop] if isinstance(stop, str) else stop
        if payload.get("tools"):
            body["tools"] = _tools(payload["tools"])
        tc = _tool_choice(payload.get("tool_choice"), payload.get("parallel_tool_calls"))
        if tc is not None:
            body["tool_choice"] = tc
        if isinstance(payload.get("user"), str):
            body["metadata"] = {"user_id": payload["user"]}
        if payload.get("stream") is True:
            body["stream"] = True
        return body

    def response(
        self, obj: dict[str, Any], payload: dict[str, Any], usage: UsageSource | None = None
    ) -> dict[str, Any]:
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for b in obj.get("content") or ():
            if not isinstance(b, dict):
                continue
            if b.get("type") == "text":
                texts.append(as_str(b.get("text")))
            elif b.get("type") == "tool_use":
                calls.append(_tool_call(b, len(calls))[1])
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(texts) if texts else None,
            "refusal": None,
        }
        if calls:
            message["tool_calls"] = calls
        return {
            "id": as_str(obj.get("id")),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": as_str(obj.get("model")),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason(obj.get("stop_reason")) or "stop",
                }
            ],
            "usage": _usage(_int_usage(obj.get("usage"))),
        }

    def error(self, obj: Any, status: int) -> dict[str, Any]:
        err = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(err, dict):
            type_ = as_str(err.get("type")) or "api_error"
            return error_envelope(as_str(err.get("message")), type_, None, type_)
        return error_envelope(f"the upstream answered HTTP {status}", None, None, "api_error")

    def stream(self, payload: dict[str, Any], usage: UsageSource | None = None) -> ChunkStream:
        opts = payload.get("stream_options")
        return ChunkStream(isinstance(opts, dict) and opts.get("include_usage") is True)


def _tool_call(block: dict[str, Any], index: int) -> tuple[int, dict[str, Any]]:
    args = block.get("input")
    return index, {
        "id": as_str(block.get("id")),
        "type": "function",
        "function": {
            "name": as_str(block.get("name")),
            "arguments": _encode(args).decode() if args else "",
        },
    }


class ChunkStream:
    """Anthropic stream events as OpenAI chat chunks: `message_start` opens with the
    assistant role, text and tool-input deltas follow, `message_delta` carries the finish
    reason, `message_stop` the usage chunk (when the client asked for it) and `[DONE]`."""

    __slots__ = ("created", "finish", "id", "include_usage", "model", "tools", "usage")

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.id = self.model = ""
        self.created = int(time.time())
        self.tools: dict[Any, int] = {}  # Anthropic block index -> OpenAI tool call index
        self.usage: dict[str, int] = {}
        self.finish: str | None = None

    def _chunk(self, choices: list[dict[str, Any]], usage: Any = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if usage is not None:
            chunk["usage"] = usage
        return b"data: " + _encode(chunk) + b"\n\n"

    def _delta(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._chunk(
            [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        )

    def _message_delta(self, stop_reason: Any, usage: Any) -> bytes:
        """The finish chunk (an Anthropic stop reason, mapped)."""
        self.finish = finish_reason(stop_reason)
        self.usage.update(_int_usage(usage))
        return self._delta({}, self.finish or "stop")

    def _message_stop(self) -> bytes:
        """The usage chunk when the client asked for it, then the end of the stream."""
        tail = self._chunk([], _usage(self.usage)) if self.include_usage else b""
        return tail + b"data: [DONE]\n\n"

    def event(self, event: str, data: bytes) -> bytes:
        obj = event_json(data)
        if obj is None:
            return b""
        kind = event or as_str(obj.get("type"))
        if kind == "content_block_delta":
            d = obj.get("delta")
            if not isinstance(d, dict):
                return b""
            dt = d.get("type")
            if dt == "text_delta":
                return self._delta({"content": as_str(d.get("text"))})
            index = self.tools.get(obj.get("index"))
            if dt == "input_json_delta" and index is not None:
                args = as_str(d.get("partial_json"))
                call = {"index": index, "function": {"arguments": args}}
                return self._delta({"tool_calls": [call]})
            return b""  # thinking and signature deltas have no chat equivalent
        if kind == "content_block_start":
            block = obj.get("content_block")
            if not isinstance(block, dict):
                return b""
            if block.get("type") == "tool_use":
                index, call = _tool_call(block, len(self.tools))
                self.tools[obj.get("index")] = index
                return self._delta({"tool_calls": [{"index": index, **call}]})
            if block.get("type") == "text" and block.get("text"):
                return self._delta({"content": as_str(block.get("text"))})
            return b""
        if kind == "message_start":
            msg = obj.get("message")
            if isinstance(msg, dict):
                self.id, self.model = as_str(msg.get("id")), as_str(msg.get("model"))
                self.usage.update(_int_usage(msg.get("usage")))
            return self._delta({"role": "assistant", "content": ""})
        if kind == "message_delta":
            d = obj.get("delta")
            return self._message_delta(
                d.get("stop_reason") if isinstance(d, dict) else None, obj.get("usage")
            )
        if kind == "message_stop":
            return self._message_stop()
        if kind == "error":
            err = obj.get("error")
            type_ = as_str(err.get("type")) if isinstance(err, dict) else "api_error"
            message = as_str(err.get("message")) if isinstance(err, dict) else ""
            return b"data: " + _encode(error_envelope(message, type_, None, type_)) + b"\n\n"
        return b""  # ping, content_block_stop


CHAT_TO_MESSAGES = ChatToMessages()
