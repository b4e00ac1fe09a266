"""The fake OpenAI upstream (and Azure OpenAI's deployment routes): chat completions,
completions, embeddings, models, responses, streamed or not, with usage as OpenAI reports it."""

from __future__ import annotations

import base64
import dataclasses
import struct
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from tests.fakes.base import Behaviour, Upstream, _count_items, _new_id, _Usage, split_reply


class OpenAIRoutes(Upstream):
    def _openai_usage(self, b: Behaviour, items: int) -> _Usage:
        chunks = split_reply(b.reply_text, b.n_chunks)
        prompt = (
            b.prompt_tokens
            if b.prompt_tokens is not None
            else 10 * items + b.cached_tokens + b.cache_write_tokens
        )
        completion = (
            b.completion_tokens
            if b.completion_tokens is not None
            else len(chunks) + b.reasoning_tokens
        )
        return _Usage(prompt, completion, chunks)

    @staticmethod
    def _chat_usage_dict(b: Behaviour, u: _Usage) -> dict[str, Any]:
        details: dict[str, int] = {"cached_tokens": b.cached_tokens, "audio_tokens": 0}
        if b.cache_write_tokens:
            details["cache_write_tokens"] = b.cache_write_tokens
        return {
            "prompt_tokens": u.prompt,
            "completion_tokens": u.completion,
            "total_tokens": u.prompt + u.completion,
            "prompt_tokens_details": details,
            "completion_tokens_details": {
                "reasoning_tokens": b.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    @staticmethod
    def _openai_stream_error() -> tuple[str | None, Any]:
        return None, {
            "error": {
                "message": "The server had an error while processing your request.",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }

    async def _chat(
        self, request: web.Request, b: Behaviour, data: dict[str, Any], azure: str | None
    ) -> web.StreamResponse:
        u = self._openai_usage(b, _count_items(data.get("messages")))
        model = self._model(b, data, azure)
        cid, created = _new_id("chatcmpl-"), int(time.time())
        text = "".join(u.chunks)
        filt = {
            sev: {"filtered": False, "severity": "safe"}
            for sev in ("hate", "self_harm", "sexual", "violence")
        }
        tool = b.openai_tool_call
        if tool is not None:
            b = dataclasses.replace(b, finish_reason="tool_calls")
        if not data.get("stream"):
            choice: dict[str, Any] = {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None if b.refusal else text,
                    "refusal": b.refusal,
                },
                "finish_reason": b.finish_reason,
                "logprobs": None,
            }
            if tool is not None:
                choice["message"]["tool_calls"] = [
                    {
                        "id": tool["id"],
                        "type": "function",
                        "function": {"name": tool["name"], "arguments": tool["arguments"]},
                    }
                ]
            out: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": b.system_fingerprint,
                "choices": [choice],
            }
            if azure is not None:
                choice["content_filter_results"] = filt
                out["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": filt}]
            if not b.no_usage:
                out["usage"] = self._chat_usage_dict(b, u)
            return self._json(b, out)

        so = data.get("stream_options")
        with_usage = not b.no_usage and (
            b.include_usage_always or (isinstance(so, dict) and bool(so.get("include_usage")))
        )

        def chunk(choices: list[dict[str, Any]], usage: Any = None) -> dict[str, Any]:
            c: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": b.system_fingerprint,
                "choices": choices,
            }
            if with_usage:
                c["usage"] = usage
            return c

        def delta(d: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
            ch: dict[str, Any] = {
                "index": 0,
                "delta": d,
                "logprobs": None,
                "finish_reason": finish,
            }
            if azure is not None and (finish or d.get("content")):
                ch["content_filter_results"] = {} if finish else filt
            return [ch]

        def events() -> Iterator[tuple[str | None, Any]]:
            if azure is not None:
                yield (
                    None,
                    {
                        "choices": [],
                        "created": 0,
                        "id": "",
                        "model": "",
                        "object": "",
                        "prompt_filter_results": [
                            {"prompt_index": 0, "content_filter_results": filt}
                        ],
                    },
                )
            yield None, chunk(delta({"role": "assistant", "content": "", "refusal": None}))
            if b.refusal:
                for piece in split_reply(b.refusal, 2):
                    yield None, chunk(delta({"refusal": piece}))
            for piece in () if b.refusal else u.chunks:
                yield None, chunk(delta({"content": piece}))
            if tool is not None:
                first = {"id": tool["id"], "type": "function",
                         "function": {"name": tool["name"], "arguments": ""}}  # fmt: skip
                yield None, chunk(delta({"tool_calls": [{"index": 0, **first}]}))
                for piece in split_reply(tool["arguments"], 3):
                    call = {"index": 0, "function": {"arguments": piece}}
                    yield None, chunk(delta({"tool_calls": [call]}))
            yield None, chunk(delta({}, b.finish_reason))
            if with_usage:
                yield None, chunk([], self._chat_usage_dict(b, u))

        return await self._stream(
            request, b, events(), done_marker=True, error_event=self._openai_stream_error()
        )

    async def _completions(
        self, request: web.Request, b: Behaviour, data: dict[str, Any], deployment: str | None
    ) -> web.StreamResponse:
        u = self._openai_usage(b, _count_items(data.get("prompt")))
        model = self._model(b, data, deployment)
        cid, created = _new_id("cmpl-"), int(time.time())
        usage = {
            "prompt_tokens": u.prompt,
            "completion_tokens": u.completion,
            "total_tokens": u.prompt + u.completion,
        }
        if not data.get("stream"):
            out: dict[str, Any] = {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "system_fingerprint": b.system_fingerprint,
                "choices": [
                    {
                        "index": 0,
                        "text": "".join(u.chunks),
                        "logprobs": None,
                        "finish_reason": b.finish_reason,
                    }
                ],
            }
            if not b.no_usage:
                out["usage"] = usage
            return self._json(b, out)

        so = data.get("stream_options")
        with_usage = not b.no_usage and (
            b.include_usage_always or (isinstance(so, dict) and bool(so.get("include_usage")))
        )

        def chunk(choices: list[dict[str, Any]], usage_val: Any = None) -> dict[str, Any]:
            c: dict[str, Any] = {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "system_fingerprint": b.system_fingerprint,
                "choices": choices,
            }
            if with_usage:
                c["usage"] = usage_val
            return c

        def events() -> Iterator[tuple[str | None, Any]]:
            for piece in u.chunks:
                yield (
                    None,
                    chunk([{"index": 0, "text": piece, "logprobs": None, "finish_reason": None}]),
                )
            yield (
                None,
                chunk(
                    [{"index": 0, "text": "", "logprobs": None, "finish_reason": b.finish_reason}]
                ),
            )
            if with_usage:
                yield None, chunk([], usage)

        return await self._stream(
            request, b, events(), done_marker=True, error_event=self._openai_stream_error()
        )

    def _embeddings(
        self, b: Behaviour, data: dict[str, Any], deployment: str | None
    ) -> web.Response:
        inputs = data.get("input")
        n = _count_items(inputs)
        dim = int(data.get("dimensions") or b.embedding_dim)
        as_b64 = data.get("encoding_format") == "base64"
        items = []
        for i in range(n):
            vec = [round(((i + 1) * (j + 1) % 17) / 17.0 - 0.5, 4) for j in range(dim)]
            emb: Any = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode() if as_b64 else vec
            items.append({"object": "embedding", "index": i, "embedding": emb})
        out: dict[str, Any] = {
            "object": "list",
            "data": items,
            "model": self._model(b, data, deployment),
        }
        if not b.no_usage:
            tokens = b.prompt_tokens if b.prompt_tokens is not None else 10 * n
            out["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return self._json(b, out)

    def _models(self, b: Behaviour) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"}
                for m in b.models
            ],
        }

    async def _responses(
        self, request: web.Request, b: Behaviour, data: dict[str, Any]
    ) -> web.StreamResponse:
        items = _count_items(data.get("input")) + (1 if data.get("instructions") else 0)
        u = self._openai_usage(b, items)
        model = self._model(b, data)
        rid, mid, created = _new_id("resp_"), _new_id("msg_"), int(time.time())
        text = "".join(u.chunks)
        incomplete = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(
            b.finish_reason
        )
        final_status = "incomplete" if incomplete else "completed"

        def message(status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
            return {
                "type": "message",
                "id": mid,
                "role": "assistant",
                "status": status,
                "content": content,
            }

        def part(t: str) -> dict[str, Any]:
            return {"type": "output_text", "text": t, "annotations": [], "logprobs": []}

        def response(status: str, output: list[dict[str, Any]], done: bool) -> dict[str, Any]:
            usage = None
            if done and not b.no_usage:
                usage = {
                    "input_tokens": u.prompt,
                    "input_tokens_details": {
                        "cached_tokens": b.cached_tokens,
                        "cache_write_tokens": b.cache_write_tokens,
                    },
                    "output_tokens": u.completion,
                    "output_tokens_details": {"reasoning_tokens": b.reasoning_tokens},
                    "total_tokens": u.prompt + u.completion,
                }
            return {
                "id": rid,
                "object": "response",
                "created_at": created,
                "status": status,
                "background": False,
                "completed_at": int(time.time()) if done else None,
                "error": None,
                "incomplete_details": {"reason": incomplete} if done and incomplete else None,
                "instructions": data.get("instructions"),
                "max_output_tokens": data.get("max_output_tokens"),
                "metadata": data.get("metadata") or {},
                "model": model,
                "output": output,
                "parallel_tool_calls": True,
                "previous_response_id": data.get("previous_response_id"),
                "reasoning": {"effort": None, "summary": None},
                "service_tier": "default",
                "store": data.get("store", True),
                "temperature": data.get("temperature", 1.0),
                "text": {"format": {"type": "text"}, "verbosity": "medium"},
                "tool_choice": data.get("tool_choice", "auto"),
                "tools": data.get("tools") or [],
                "top_p": data.get("top_p", 1.0),
                "truncation": "disabled",
                "usage": usage,
                "user": data.get("user"),
            }

        final = response(final_status, [message(final_status, [part(text)])], True)
        if not data.get("stream"):
            return self._json(b, final)

        seq = iter(range(1_000_000))

        def ev(name: str, **kw: Any) -> tuple[str | None, Any]:
            return name, {"type": name, "sequence_number": next(seq), **kw}

        loc = {"item_id": mid, "output_index": 0, "content_index": 0}

        def events() -> Iterator[tuple[str | None, Any]]:
            yield ev("response.created", response=response("in_progress", [], False))
            yield ev("response.in_progress", response=response("in_progress", [], False))
            yield ev("response.output_item.added", output_index=0, item=message("in_progress", []))
            yield ev("response.content_part.added", **loc, part=part(""))
            for piece in u.chunks:
                yield ev("response.output_text.delta", **loc, delta=piece, logprobs=[])
            yield ev("response.output_text.done", **loc, text=text, logprobs=[])
            yield ev("response.content_part.done", **loc, part=part(text))
            yield ev(
                "response.output_item.done",
                output_index=0,
                item=message(final_status, [part(text)]),
            )
            done_name = "response.incomplete" if incomplete else "response.completed"
            yield ev(done_name, response=response(final_status, final["output"], True))

        error_event: tuple[str | None, Any] = (
            "error",
            {
                "type": "error",
                "code": "server_error",
                "message": "The server had an error while processing your request.",
                "param": None,
                "sequence_number": 999_999,
            },
        )
        return await self._stream(request, b, events(), done_marker=False, error_event=error_event)
