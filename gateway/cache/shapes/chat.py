"""OpenAI chat completions and legacy completions: `chat.completion` / `text_completion`
bodies and their chunk streams (`data: {...}` lines, the usage chunk with `choices: []`,
then `data: [DONE]`)."""

from __future__ import annotations

from typing import Any

from gateway.cache.shapes.sse import DONE, Events, data
from gateway.providers.wire.base import as_int, as_str, event_json

# Top-level fields a chunk shares with the body it adds up to.
_SHARED = ("id", "created", "model", "system_fingerprint", "service_tier")


def _head(obj: dict[str, Any], out: dict[str, Any]) -> None:
    for k in _SHARED:
        if obj.get(k) is not None and not out.get(k):
            out[k] = obj[k]


def _choices(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in obj.get("choices") or () if isinstance(c, dict)]


class _Choice:
    __slots__ = ("content", "finish", "index", "logprobs", "refusal", "tools")

    def __init__(self, index: int) -> None:
        self.index = index
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.tools: dict[int, dict[str, Any]] = {}
        self.logprobs: dict[str, list[Any]] = {}  # each list field, concatenated
        self.finish: Any = None

    def add(self, choice: dict[str, Any], text_key: str | None) -> None:
        if choice.get("finish_reason"):
            self.finish = choice["finish_reason"]
        lp = choice.get("logprobs")
        if isinstance(lp, dict):
            for k, v in lp.items():
                if isinstance(v, list):
                    self.logprobs.setdefault(k, []).extend(v)
        if text_key is not None:  # legacy completions: the text is on the choice
            self.content.append(as_str(choice.get(text_key)))
            return
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        if isinstance(delta.get("content"), str):
            self.content.append(delta["content"])
        if isinstance(delta.get("refusal"), str):
            self.refusal.append(delta["refusal"])
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict):
                continue
            t = self.tools.setdefault(
                as_int(call.get("index")),
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if call.get("id"):
                t["id"] = call["id"]
            fn = call.get("function")
            if isinstance(fn, dict):
                t["function"]["name"] += as_str(fn.get("name"))
                t["function"]["arguments"] += as_str(fn.get("arguments"))

    def message(self) -> dict[str, Any]:
        text = "".join(self.content)
        msg: dict[str, Any] = {
            "role": "assistant",
            "content": None if not text and self.tools else text,
            "refusal": "".join(self.refusal) or None,
        }
        if self.tools:
            msg["tool_calls"] = [self.tools[i] for i in sorted(self.tools)]
        return msg


class ChatShape:
    """`text_key`: None for chat (deltas), "text" for legacy completions."""

    def __init__(self, obj: str, chunk_obj: str, text_key: str | None) -> None:
        self.obj, self.chunk_obj, self.text_key = obj, chunk_obj, text_key

    def to_body(self, events: Events) -> dict[str, Any] | None:
        out: dict[str, Any] = {"id": "", "object": self.obj, "created": 0, "model": ""}
        choices: dict[int, _Choice] = {}
        usage = None
        for _, raw in events:
            obj = event_json(raw)
            if obj is None:
                continue
            _head(obj, out)
            if isinstance(obj.get("usage"), dict):
                usage = obj["usage"]
            for ch in _choices(obj):
                i = as_int(ch.get("index"))
                choices.setdefault(i, _Choice(i)).add(ch, self.text_key)
        if not choices:
            return None
        out["choices"] = [self._choice(choices[i]) for i in sorted(choices)]
        if usage is not None:
            out["usage"] = usage
        return out

    def _choice(self, c: _Choice) -> dict[str, Any]:
        lp = dict(c.logprobs) or None
        if self.text_key is not None:
            return {"index": c.index, "text": "".join(c.content), "logprobs": lp,
                    "finish_reason": c.finish}  # fmt: skip
        return {"index": c.index, "message": c.message(), "logprobs": lp,
                "finish_reason": c.finish}  # fmt: skip

    def to_stream(self, body: dict[str, Any], include_usage: bool) -> bytes:
        head = {k: body[k] for k in _SHARED if k in body}
        head["object"] = self.chunk_obj

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            return data({**head, "choices": choices, **extra})

        out = []
        for ch in _choices(body):
            i, lp = as_int(ch.get("index")), ch.get("logprobs")
            if self.text_key is not None:
                first = {"index": i, "text": as_str(ch.get("text")), "logprobs": lp,
                         "finish_reason": None}  # fmt: skip
                out.append(chunk([first]))
                last = {"index": i, "text": "", "logprobs": None,
                        "finish_reason": ch.get("finish_reason")}  # fmt: skip
                out.append(chunk([last]))
                continue
            m = ch.get("message")
            msg: dict[str, Any] = m if isinstance(m, dict) else {}
            delta: dict[str, Any] = {"role": "assistant", "content": msg.get("content") or ""}
            if msg.get("refusal"):
                delta["refusal"] = msg["refusal"]
            out.append(chunk([{"index": i, "delta": delta, "logprobs": lp,
                               "finish_reason": None}]))  # fmt: skip
            calls = [c for c in msg.get("tool_calls") or () if isinstance(c, dict)]
            if calls:
                delta = {"tool_calls": [{"index": j, **c} for j, c in enumerate(calls)]}
                out.append(chunk([{"index": i, "delta": delta, "logprobs": None,
                                   "finish_reason": None}]))  # fmt: skip
            out.append(chunk([{"index": i, "delta": {}, "logprobs": None,
                               "finish_reason": ch.get("finish_reason")}]))  # fmt: skip
        if include_usage and isinstance(body.get("usage"), dict):
            out.append(chunk([], usage=body["usage"]))
        out.append(DONE)
        return b"".join(out)


CHAT = ChatShape("chat.completion", "chat.completion.chunk", None)
COMPLETIONS = ChatShape("text_completion", "text_completion", "text")
