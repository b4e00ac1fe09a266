"""A canned OpenAI upstream: raw asyncio Protocol on uvloop, HTTP/1.1 keep-alive.

Any ``POST /v1/chat/completions`` gets a fixed ``chat.completion`` (with usage); with
``"stream": true`` a short SSE stream (a usage chunk when ``stream_options.include_usage``
is true, then ``data: [DONE]``). ``GET /_stats`` returns ``{"requests": N}``. Requests are
parsed with httptools (Content-Length and chunked bodies, pipelining, keep-alive).
``--stream-tail-ms N`` holds each stream's body open N ms after ``[DONE]`` (bench/kill9.py:
a gateway that recorded a stream only at its upstream's end of body would show it).

    python bench/upstream.py --port 9001
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import cast

import httptools
import msgspec
import uvloop

MODEL = "gpt-4o-mini-2024-07-18"
REPLY = "Hello! The capital of France is Paris. Is there anything else I can help you with?"
PROMPT_TOKENS, COMPLETION_TOKENS = 24, 19
CREATED = int(time.time())

_USAGE = {
    "prompt_tokens": PROMPT_TOKENS,
    "completion_tokens": COMPLETION_TOKENS,
    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}


def _completion(rid: str) -> bytes:
    return json.dumps(
        {
            "id": rid,
            "object": "chat.completion",
            "created": CREATED,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": REPLY, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _USAGE,
            "service_tier": "default",
            "system_fingerprint": "fp_0ba0d124f1",
        },
        separators=(",", ":"),
    ).encode()


def _stream(rid: str, include_usage: bool) -> bytes:
    """The whole SSE body as HTTP/1.1 chunks (one chunk per event)."""

    def chunk(delta: dict[str, object], finish: str | None, usage: bool = False) -> bytes:
        obj: dict[str, object] = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": MODEL,
            "service_tier": "default",
            "system_fingerprint": "fp_0ba0d124f1",
            "choices": []
            if usage
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            obj["usage"] = _USAGE if usage else None
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    words = REPLY.split(" ")
    parts = [" ".join(words[i : i + 4]) for i in range(0, len(words), 4)]
    events = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
    events += [chunk({"content": (" " if i else "") + p}, None) for i, p in enumerate(parts)]
    events.append(chunk({}, "stop"))
    if include_usage:
        events.append(chunk({}, None, usage=True))
    events.append(b"data: [DONE]\n\n")
    return b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"


class Stats:
    requests = 0
    stream_tail_s = 0.0  # between a stream's [DONE] and its body's end


class UpstreamProtocol(asyncio.Protocol):
    __slots__ = ("body", "parser", "transport", "url")

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.body: list[bytes] = []
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(b"400 Bad Request", b"text/plain", b"bad request\n", close=True)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.body.clear()
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        keep = self.parser.should_keep_alive()
        method = self.parser.get_method()
        if method == b"GET" and self.url == b"/_stats":
            out = b'{"requests":%d}' % Stats.requests
            return self._send(b"200 OK", b"application/json", out, close=not keep)
        if method != b"POST" or not self.url.startswith(b"/v1/chat/completions"):
            return self._send(b"404 Not Found", b"application/json", b'{"error":{}}', not keep)
        Stats.requests += 1
        rid = f"chatcmpl-bench{Stats.requests:012d}"
        try:
            req = msgspec.json.decode(b"".join(self.body))
        except msgspec.DecodeError:
            req = {}
        if isinstance(req, dict) and req.get("stream") is True:
            opts = req.get("stream_options")
            usage = isinstance(opts, dict) and opts.get("include_usage") is True
            assert self.transport is not None
            body, end = _stream(rid, usage), b""
            if Stats.stream_tail_s:
                body, end = body[:-5], body[-5:]  # the last chunk (0\r\n\r\n), held
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                b"transfer-encoding: chunked\r\nx-request-id: req_%s\r\n"
                b"openai-processing-ms: 120\r\n%s\r\n"
                % (rid.encode(), b"" if keep else b"connection: close\r\n")
                + body
            )
            if end:
                loop = asyncio.get_running_loop()
                loop.call_later(Stats.stream_tail_s, self._end, end, keep)
            elif not keep:
                self.transport.close()
            return None
        return self._send(b"200 OK", b"application/json", _completion(rid), not keep, rid)

    def _end(self, end: bytes, keep: bool) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(end)
            if not keep:
                self.transport.close()

    def _send(self, status: bytes, ctype: bytes, body: bytes, close: bool, rid: str = "x") -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
            b"x-request-id: req_%s\r\nopenai-processing-ms: 120\r\n%s\r\n%s"
            % (
                status,
                ctype,
                len(body),
                rid.encode(),
                b"connection: close\r\n" if close else b"",
                body,
            )
        )
        if close:
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9001)
    p.add_argument("--stream-tail-ms", type=float, default=0.0)
    a = p.parse_args()
    Stats.stream_tail_s = a.stream_tail_ms / 1000.0
    uvloop.run(serve(a.host, a.port))


if __name__ == "__main__":
    main()
