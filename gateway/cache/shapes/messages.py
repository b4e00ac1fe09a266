"""Anthropic Messages: a `message` body and its event stream (`message_start`, per content
block `content_block_start` / `_delta` / `_stop`, `message_delta` with the stop reason and
usage, `message_stop`)."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.cache.shapes.sse import Events, named
from gateway.providers.wire.base import as_int, as_str, event_json

_decode = msgspec.json.decode
_encode = msgspec.json.encode

# Delta type -> (block field it extends, delta field that carries the piece)
_APPENDS = {
    "text_delta": ("text", "text"),
    "thinking_delta": ("thinking", "thinking"),
}


class MessagesShape:
    def to_body(self, events: Events) -> dict[str, Any] | None:
        msg: dict[str, Any] | None = None
        blocks: dict[int, dict[str, Any]] = {}
        partial: dict[int, list[str]] = {}  # tool input JSON, in pieces
        for event, raw in events:
            obj = event_json(raw)
            if obj is None:
                continue
            kind = event or as_str(obj.get("type"))
            i = as_int(obj.get("index"))
            if kind == "message_start" and isinstance(obj.get("message"), dict):
                msg = dict(obj["message"])
                msg["usage"] = dict(msg.get("usage") or {})
            elif kind == "content_block_start" and isinstance(obj.get("content_block"), dict):
                blocks[i] = dict(obj["content_block"])
            elif kind == "content_block_delta" and i in blocks:
                self._delta(blocks[i], obj.get("delta"), partial.setdefault(i, []))
            elif kind == "content_block_stop" and partial.get(i):
                blocks[i]["input"] = _decode("".join(partial[i]))
            elif kind == "message_delta" and msg is not None:
                delta = obj.get("delta")
                if isinstance(delta, dict):
                    msg.update(
                        {k: v for k, v in delta.items() if k in ("stop_reason", "stop_sequence")}
                    )
                if isinstance(obj.get("usage"), dict):
                    msg["usage"].update(obj["usage"])
        if msg is None:
            return None
        msg["content"] = [blocks[i] for i in sorted(blocks)]
        return msg

    @staticmethod
    def _delta(block: dict[str, Any], delta: Any, partial: list[str]) -> None:
        if not isinstance(delta, dict):
            return
        kind = as_str(delta.get("type"))
        if kind in _APPENDS:
            field, piece = _APPENDS[kind]
            block[field] = as_str(block.get(field)) + as_str(delta.get(piece))
        elif kind == "input_json_delta":
            partial.append(as_str(delta.get("partial_json")))
        elif kind == "signature_delta":
            block["signature"] = as_str(delta.get("signature"))
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))

    def to_stream(self, body: dict[str, Any], include_usage: bool) -> bytes:
        u = body.get("usage")
        usage: dict[str, Any] = u if isinstance(u, dict) else {}
        start = {**body, "content": [], "stop_reason": None, "stop_sequence": None,
                 "usage": {**usage, "output_tokens": 0}}  # fmt: skip
        out = [named("message_start", {"type": "message_start", "message": start})]
        for i, block in enumerate(b for b in body.get("content") or () if isinstance(b, dict)):
            out += self._block(i, block)
        delta = {"stop_reason": body.get("stop_reason"), "stop_sequence": body.get("stop_sequence")}
        out.append(named("message_delta", {"type": "message_delta", "delta": delta,
                                           "usage": usage}))  # fmt: skip
        out.append(named("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    @staticmethod
    def _block(i: int, block: dict[str, Any]) -> list[bytes]:
        kind = block.get("type")
        deltas: list[dict[str, Any]] = []
        opened = block
        if kind == "text":
            opened = {**block, "text": ""}
            deltas.append({"type": "text_delta", "text": as_str(block.get("text"))})
        elif kind == "thinking":
            opened = {**block, "thinking": "", "signature": ""}
            deltas.append({"type": "thinking_delta", "thinking": as_str(block.get("thinking"))})
            if block.get("signature"):
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
        elif kind == "tool_use":
            opened = {**block, "input": {}}
            args = _encode(block.get("input") or {}).decode()
            deltas.append({"type": "input_json_delta", "partial_json": args})
        out = [
            named(
                "content_block_start",
                {"type": "content_block_start", "index": i, "content_block": opened},
            )
        ]
        out += [named("content_block_delta", {"type": "content_block_delta", "index": i,
                                              "delta": d}) for d in deltas]  # fmt: skip
        out.append(named("content_block_stop", {"type": "content_block_stop", "index": i}))
        return out


MESSAGES = MessagesShape()
