"""The fake Anthropic upstream: Messages, streamed or not, with usage as Anthropic reports
it (cached input apart)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from tests.fakes.base import Behaviour, Upstream, _count_items, _new_id, _Usage, split_reply


class AnthropicRoutes(Upstream):
    def _anthropic_usage(self, b: Behaviour, data: dict[str, Any]) -> _Usage:
        chunks = split_reply(b.reply_text, b.n_chunks)
        items = _count_items(data.get("messages")) + (1 if data.get("system") else 0)
        prompt = b.prompt_tokens if b.prompt_tokens is not None else 10 * items
        completion = b.completion_tokens if b.completion_tokens is not None else len(chunks)
        return _Usage(prompt, completion, chunks)

    async def _messages(
        self, request: web.Request, b: Behaviour, data: dict[str, Any]
    ) -> web.StreamResponse:
        u = self._anthropic_usage(b, data)
        model = self._model(b, data)
        mid = _new_id("msg_")
        text = "".join(u.chunks)
        cache = {
            "cache_creation_input_tokens": b.cache_write_tokens,
            "cache_read_input_tokens": b.cached_tokens,
        }

        def message(content: list[dict[str, Any]], done: bool, out_tokens: int) -> dict[str, Any]:
            return {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": b.stop_reason if done else None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": u.prompt,
                    **cache,
                    "output_tokens": out_tokens,
                    "service_tier": "standard",
                },
            }

        tool = b.anthropic_tool_use
        if tool is not None:
            b = dataclasses.replace(b, stop_reason="tool_use")
        if not data.get("stream"):
            content = [{"type": "text", "text": text}] if text else []
            if tool is not None:
                content.append({"type": "tool_use", **tool})
            return self._json(b, message(content, True, u.completion))

        def events() -> Iterator[tuple[str | None, Any]]:
            yield "message_start", {"type": "message_start", "message": message([], False, 1)}
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            yield "ping", {"type": "ping"}
            for piece in u.chunks:
                yield (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
            yield "content_block_stop", {"type": "content_block_stop", "index": 0}
            if tool is not None:
                block = {"type": "tool_use", "id": tool["id"], "name": tool["name"], "input": {}}
                yield (
                    "content_block_start",
                    {"type": "content_block_start", "index": 1, "content_block": block},
                )
                args = json.dumps(tool["input"])
                for piece in ("", *split_reply(args, 3)):
                    yield (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": 1,
                            "delta": {"type": "input_json_delta", "partial_json": piece},
                        },
                    )
                yield "content_block_stop", {"type": "content_block_stop", "index": 1}
            usage: dict[str, Any] = {"output_tokens": u.completion}
            if b.anthropic_delta_full_usage:
                usage = {"input_tokens": u.prompt, **cache, "output_tokens": u.completion}
            yield (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": b.stop_reason, "stop_sequence": None},
                    "usage": usage,
                },
            )
            yield "message_stop", {"type": "message_stop"}

        error_event: tuple[str | None, Any] = (
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        )
        return await self._stream(request, b, events(), done_marker=False, error_event=error_event)
