"""Bedrock Converse and ConverseStream, as the fake upstream serves them
(`POST /model/{modelId}/converse` and `/converse-stream`).

Shapes follow the AWS documentation's examples: a Converse answer has `output.message`,
`stopReason`, `usage` (`inputTokens` excludes cached input, reported as
`cacheReadInputTokens` / `cacheWriteInputTokens`) and `metrics`; a ConverseStream answer
is `application/vnd.amazon.eventstream`: binary messages (prelude with total and header
lengths and its CRC32, string headers `:event-type`, `:content-type`, `:message-type`, a
JSON payload padded with a `p` field, the CRC32 of the whole message), in the order
messageStart, contentBlockStart/Delta/Stop, messageStop, metadata. Written here on its own
(not with the gateway's decoder) so that a framing mistake on either side shows.
"""

from __future__ import annotations

import asyncio
import json
import struct
import zlib
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from tests.fakes.anthropic import AnthropicRoutes
from tests.fakes.base import Behaviour


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    hb = b""
    for name, value in headers.items():
        v = value.encode()
        hb += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(v)) + v
    total = 4 + 4 + 4 + len(hb) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hb))
    message = prelude + struct.pack(">I", zlib.crc32(prelude) & 0xFFFFFFFF) + hb + payload
    return message + struct.pack(">I", zlib.crc32(message) & 0xFFFFFFFF)


def event(name: str, body: dict[str, Any]) -> bytes:
    payload = json.dumps({**body, "p": "abcdefghijklmnopqrstuvwxyzABCDEF"}).encode()
    headers = {":event-type": name, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, payload)


def exception(kind: str, message: str) -> bytes:
    headers = {":exception-type": kind, ":content-type": "application/json",
               ":message-type": "exception"}  # fmt: skip
    return frame(headers, json.dumps({"message": message}).encode())


def usage(prompt: int, completion: int, cache_read: int, cache_write: int) -> dict[str, int]:
    u = {"inputTokens": prompt, "outputTokens": completion, "totalTokens": prompt + completion}
    if cache_read or cache_write:
        u["cacheReadInputTokens"] = cache_read
        u["cacheWriteInputTokens"] = cache_write
    return u


def answer(chunks: list[str], tool: dict[str, Any] | None, u: dict[str, int]) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"text": "".join(chunks)}]
    if tool is not None:
        content.append(
            {"toolUse": {"toolUseId": tool["id"], "name": tool["name"], "input": tool["input"]}}
        )
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": "tool_use" if tool is not None else "end_turn",
        "usage": u,
        "metrics": {"latencyMs": 42},
    }


def events(chunks: list[str], tool: dict[str, Any] | None, u: dict[str, int]) -> Iterator[bytes]:
    yield event("messageStart", {"role": "assistant"})
    for piece in chunks:
        yield event("contentBlockDelta", {"delta": {"text": piece}, "contentBlockIndex": 0})
    yield event("contentBlockStop", {"contentBlockIndex": 0})
    if tool is not None:
        start = {"toolUse": {"toolUseId": tool["id"], "name": tool["name"]}}
        yield event("contentBlockStart", {"start": start, "contentBlockIndex": 1})
        args = json.dumps(tool["input"])
        for piece in (args[: len(args) // 2], args[len(args) // 2 :]):
            delta = {"toolUse": {"input": piece}}
            yield event("contentBlockDelta", {"delta": delta, "contentBlockIndex": 1})
        yield event("contentBlockStop", {"contentBlockIndex": 1})
    yield event("messageStop", {"stopReason": "tool_use" if tool is not None else "end_turn"})
    yield event("metadata", {"usage": u, "metrics": {"latencyMs": 42}})


async def stream(
    request: web.Request, frames: Iterator[bytes], error_after: int | None
) -> web.StreamResponse:
    resp = web.StreamResponse(
        status=200,
        headers={"Content-Type": "application/vnd.amazon.eventstream",
                 "x-amzn-RequestId": "a1b2c3d4-0000-1111-2222-333344445555"},
    )  # fmt: skip
    await resp.prepare(request)
    for i, data in enumerate(frames):
        if error_after is not None and i >= error_after:
            await resp.write(exception("throttlingException", "Too many requests"))
            break
        # Split each frame in two writes: the decoder must join partial messages.
        await resp.write(data[:7])
        await resp.write(data[7:])
    await resp.write_eof()
    return resp


def error(status: int, message: str) -> web.Response:
    kind = {400: "ValidationException", 403: "AccessDeniedException",
            429: "ThrottlingException"}.get(status, "InternalServerException")  # fmt: skip
    headers = {"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/"}
    return web.json_response({"message": message}, status=status, headers=headers)


class BedrockRoutes(AnthropicRoutes):
    async def _bedrock(
        self, request: web.Request, b: Behaviour, data: dict[str, Any], route: str
    ) -> web.StreamResponse:
        if b.first_byte_delay:
            await asyncio.sleep(b.first_byte_delay)
        if b.status != 200:
            return error(b.status, f"Fake Bedrock error (HTTP {b.status})")
        u = self._anthropic_usage(b, data)
        reported = usage(u.prompt, u.completion, b.cached_tokens, b.cache_write_tokens)
        tool = b.anthropic_tool_use
        if route.endswith("/converse-stream"):
            frames = events(u.chunks, tool, reported)
            return await stream(request, frames, b.stream_error_after_chunks)
        return self._json(b, answer(u.chunks, tool, reported))
