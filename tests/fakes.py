"""Configurable fake LLM upstream HTTP servers for the gateway's tests.

``FakeUpstream`` runs a real aiohttp server on ``127.0.0.1`` (random port) in a background
thread with its own event loop, so both sync tests and tests running their own asyncio loop
can forward to it.  The wire formats follow the real APIs closely enough that the official
``openai`` and ``anthropic`` SDKs parse them when pointed at the fake directly::

    with FakeUpstream() as fake:
        fake.behaviour = Behaviour(chunk_delay=0.01, cached_tokens=4)
        client = openai.OpenAI(base_url=fake.url + "/v1", api_key="x")
        ...
        assert fake.requests[-1].json["model"] == "gpt-4o"

Routes
    POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses, GET /v1/models
    POST /openai/deployments/{deployment}/{chat/completions|completions|embeddings} (Azure)
    POST /v1/messages, /v1/messages/count_tokens (Anthropic)
    anything else: 200 ``{"echo": path}``

Deterministic token accounting (unless overridden by ``Behaviour.prompt_tokens`` /
``Behaviour.completion_tokens``):

* "items" = chat ``messages`` | completion prompts (a string counts 1, a list counts its
  length) | embedding inputs (same rule) | responses ``input`` (string = 1, list = length)
  plus 1 when ``instructions`` is set | anthropic ``messages`` plus 1 when ``system`` is set.
* OpenAI (chat, completions, responses):
  ``prompt_tokens = 10 * items + cached_tokens + cache_write_tokens`` (cached and
  cache-write tokens are *part* of the prompt, as OpenAI reports them), and
  ``completion_tokens = n_content_chunks + reasoning_tokens``;
  ``total_tokens = prompt_tokens + completion_tokens``.
* Embeddings: ``prompt_tokens = total_tokens = 10 * items``.
* Anthropic: ``input_tokens = 10 * items`` (uncached only, as Anthropic reports it),
  ``cache_read_input_tokens = cached_tokens``,
  ``cache_creation_input_tokens = cache_write_tokens``, ``output_tokens = n_content_chunks``.
* ``n_content_chunks`` = ``len(split_reply(reply_text, n_chunks))``: the reply split into
  ``n_chunks`` contiguous near-equal pieces (fewer if the text is shorter; 0 if empty).
  Non-stream answers use the same count.

Stream fault injection counts SSE events written (role chunk, ``ping`` etc. included;
``data: [DONE]`` not), see ``Behaviour.abort_after_chunks`` and
``Behaviour.stream_error_after_chunks``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import struct
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests import fake_bedrock

__all__ = [
    "Behaviour",
    "FakeUpstream",
    "RecordedRequest",
    "split_reply",
]

_OPENAI_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("rate_limit_exceeded", "rate_limit_exceeded"),
}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class Behaviour:
    """How the fake answers. Read once at the start of each request; swap it any time."""

    status: int = 200
    """Non-200: answer a JSON error (``error_body`` or a default shape for the route)."""
    error_body: dict[str, Any] | None = None
    fail_times: int = 0
    """The first ``fail_times`` requests (counted per server) fail with ``fail_status``."""
    fail_status: int = 503
    first_byte_delay: float = 0.0
    """Seconds to sleep before sending response headers (any response)."""
    chunk_delay: float = 0.0
    """Seconds to sleep between stream events."""
    abort_after_chunks: int | None = None
    """Streams: after N events close the TCP connection without finishing the body."""
    stream_error_after_chunks: int | None = None
    """Streams: after N events emit an in-stream error event and end (no ``[DONE]``)."""
    include_usage_always: bool = False
    """Chat/completions streams: send the usage chunk even without ``stream_options``."""
    reject_stream_options: bool = False
    """Answer 400 if the request body contains ``stream_options``."""
    no_usage: bool = False
    """OpenAI-shaped routes never report usage (key omitted / ``usage: null``)."""
    reply_text: str = "Hello from the fake upstream!"
    n_chunks: int = 5
    model_suffix: str = "-2024-08-06"
    """Response model = request model (or Azure deployment) + suffix."""
    system_fingerprint: str = "fp_fake1"
    finish_reason: str = "stop"
    """OpenAI finish_reason, e.g. "length" or "content_filter" (Responses: incomplete)."""
    stop_reason: str = "end_turn"
    """Anthropic stop_reason."""
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0
    """Anthropic ``cache_creation_input_tokens``; OpenAI ``*_tokens_details.cache_write_tokens``
    (chat: only when non-zero; responses: always)."""
    prompt_tokens: int | None = None
    """Override the prompt/input token formula."""
    completion_tokens: int | None = None
    """Override the completion/output token formula."""
    anthropic_delta_full_usage: bool = False
    anthropic_tool_use: dict[str, Any] | None = None
    """Anthropic: after the text, a ``tool_use`` block with this ``id``, ``name`` and ``input``
    (streamed as ``input_json_delta`` pieces, as in Anthropic's documented example), and
    ``stop_reason`` ``tool_use``. Bedrock Converse: the same as a ``toolUse`` block."""
    """Anthropic message_delta usage also carries input/cache tokens (newer API behaviour)."""
    openai_tool_call: dict[str, Any] | None = None
    """Chat: after the text, a tool call with this ``id``, ``name`` and ``arguments`` (a JSON
    string; streamed in pieces after a first delta carrying id and name, as OpenAI does), and
    ``finish_reason`` ``tool_calls``."""
    embedding_dim: int = 8
    models: list[str] = field(
        default_factory=lambda: ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]
    )
    headers: dict[str, str] = field(default_factory=dict)
    """Extra headers added to every response (e.g. ``retry-after``)."""
    canned: bool = False
    """Answer every request with one small 200 JSON, whatever it asked (for fuzzing: a
    5xx then can only be the gateway's)."""


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any
    deployment: str | None = None
    """Azure deployment name for ``/openai/deployments/{deployment}/...`` routes."""
    raw_path: str = ""
    """The path as sent, percent-encoding kept (what a SigV4 signature covers)."""


def split_reply(text: str, n: int) -> list[str]:
    """Split ``text`` into ``n`` contiguous near-equal non-empty pieces (fewer if short)."""
    n = max(1, min(n, len(text)))
    if not text:
        return []
    size, extra = divmod(len(text), n)
    out, pos = [], 0
    for i in range(n):
        step = size + (1 if i < extra else 0)
        out.append(text[pos : pos + step])
        pos += step
    return out


def _count_items(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return 1
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return 1  # a single pre-tokenised input
        return len(value)
    return 1


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


class _Abort(Exception):
    pass


@dataclass
class _Usage:
    prompt: int
    completion: int
    chunks: list[str]


class FakeUpstream:
    """A fake OpenAI / Azure OpenAI / Anthropic upstream on 127.0.0.1 in a thread."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour: Behaviour = behaviour or Behaviour()
        self.requests: list[RecordedRequest] = []
        self.port: int = 0
        self._failed = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def last_request(self) -> RecordedRequest:
        return self.requests[-1]

    def reset(self, behaviour: Behaviour | None = None) -> None:
        """Forget recorded requests and the fail counter; install a fresh behaviour."""
        self.requests.clear()
        self._failed = 0
        self.behaviour = behaviour or Behaviour()

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {n} requests, got {len(self.requests)}")
            time.sleep(0.005)
        return self.requests

    def start(self) -> FakeUpstream:
        if self._thread is not None:
            return self
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        if self._start_error is not None:
            raise RuntimeError("fake upstream failed to start") from self._start_error
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._runner is not None:
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop)
            with contextlib.suppress(Exception):
                fut.result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        self._thread = self._loop = self._runner = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeUpstream:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:  # pragma: no cover - surfaced through start()
            self._start_error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ dispatch
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        b = self.behaviour
        body = await request.read()
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        path = request.path
        deployment = None
        route = path
        if path.startswith("/openai/deployments/"):
            rest = path[len("/openai/deployments/") :]
            deployment, _, tail = rest.partition("/")
            route = "/azure/" + tail
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=path,
                query=dict(request.query),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
                json=parsed,
                deployment=deployment,
                raw_path=request.raw_path.partition("?")[0],
            )
        )
        anthropic = route.startswith("/v1/messages")
        data: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        if route.startswith("/model/"):
            return await self._bedrock(request, b, data, route)

        if b.canned:
            return self._json(b, {"id": "canned", "object": "canned", "model": "canned"})
        if b.first_byte_delay:
            await asyncio.sleep(b.first_byte_delay)
        if self._failed < b.fail_times:
            self._failed += 1
            return self._error(b, b.fail_status, anthropic)
        if b.status != 200:
            return self._error(b, b.status, anthropic)
        if b.reject_stream_options and "stream_options" in data:
            return self._error(
                b, 400, anthropic, "Unrecognized request argument supplied: stream_options"
            )

        post = request.method == "POST"
        if post and route in ("/v1/chat/completions", "/azure/chat/completions"):
            return await self._chat(request, b, data, azure=deployment)
        if post and route in ("/v1/completions", "/azure/completions"):
            return await self._completions(request, b, data, deployment)
        if post and route in ("/v1/embeddings", "/azure/embeddings"):
            return self._embeddings(b, data, deployment)
        if post and route == "/v1/responses":
            return await self._responses(request, b, data)
        if request.method == "GET" and route == "/v1/models":
            return self._json(b, self._models(b))
        if post and route == "/v1/messages":
            return await self._messages(request, b, data)
        if post and route == "/v1/messages/count_tokens":
            return self._json(b, {"input_tokens": self._anthropic_usage(b, data).prompt})
        return self._json(b, {"echo": path})

    async def _bedrock(
        self, request: web.Request, b: Behaviour, data: dict[str, Any], route: str
    ) -> web.StreamResponse:
        if b.first_byte_delay:
            await asyncio.sleep(b.first_byte_delay)
        if b.status != 200:
            return fake_bedrock.error(b.status, f"Fake Bedrock error (HTTP {b.status})")
        u = self._anthropic_usage(b, data)
        usage = fake_bedrock.usage(u.prompt, u.completion, b.cached_tokens, b.cache_write_tokens)
        tool = b.anthropic_tool_use
        if route.endswith("/converse-stream"):
            frames = fake_bedrock.events(u.chunks, tool, usage)
            return await fake_bedrock.stream(request, frames, b.stream_error_after_chunks)
        return self._json(b, fake_bedrock.answer(u.chunks, tool, usage))

    # ------------------------------------------------------------------ helpers
    def _json(self, b: Behaviour, payload: Any, status: int = 200) -> web.Response:
        headers = {"x-request-id": _new_id("req_"), "request-id": _new_id("req_"), **b.headers}
        return web.json_response(payload, status=status, headers=headers, dumps=_dumps)

    def _error(
        self, b: Behaviour, status: int, anthropic: bool, message: str | None = None
    ) -> web.Response:
        if b.error_body is not None and message is None:
            return self._json(b, b.error_body, status)
        message = message or f"Fake upstream error (HTTP {status})"
        if anthropic:
            etype = _ANTHROPIC_ERROR_TYPES.get(
                status, "overloaded_error" if status in (503, 529) else "api_error"
            )
            return self._json(
                b, {"type": "error", "error": {"type": etype, "message": message}}, status
            )
        etype, code = _OPENAI_ERROR_TYPES.get(status, ("server_error", None))
        err = {"message": message, "type": etype, "param": None, "code": code}
        return self._json(b, {"error": err}, status)

    def _model(self, b: Behaviour, data: dict[str, Any], deployment: str | None = None) -> str:
        return str(data.get("model") or deployment or "fake-model") + b.model_suffix

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

    def _anthropic_usage(self, b: Behaviour, data: dict[str, Any]) -> _Usage:
        chunks = split_reply(b.reply_text, b.n_chunks)
        items = _count_items(data.get("messages")) + (1 if data.get("system") else 0)
        prompt = b.prompt_tokens if b.prompt_tokens is not None else 10 * items
        completion = b.completion_tokens if b.completion_tokens is not None else len(chunks)
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

    async def _stream(
        self,
        request: web.Request,
        b: Behaviour,
        events: Iterable[tuple[str | None, Any]],
        *,
        done_marker: bool,
        error_event: tuple[str | None, Any],
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "x-request-id": _new_id("req_"),
                "request-id": _new_id("req_"),
                **b.headers,
            },
        )
        await resp.prepare(request)

        def encode(event: str | None, payload: Any) -> bytes:
            data = payload if isinstance(payload, str) else _dumps(payload)
            head = f"event: {event}\n" if event else ""
            return f"{head}data: {data}\n\n".encode()

        def fault(i: int) -> bool:
            if b.abort_after_chunks is not None and i >= b.abort_after_chunks:
                raise _Abort
            return b.stream_error_after_chunks is not None and i >= b.stream_error_after_chunks

        try:
            i = 0
            for event, payload in events:
                if fault(i):
                    await resp.write(encode(*error_event))
                    await resp.write_eof()
                    return resp
                if i and b.chunk_delay:
                    await asyncio.sleep(b.chunk_delay)
                await resp.write(encode(event, payload))
                i += 1
            if fault(i):
                await resp.write(encode(*error_event))
            elif done_marker:
                await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except _Abort:
            if b.chunk_delay:
                await asyncio.sleep(b.chunk_delay)
            transport = request.transport
            if transport is not None:
                transport.close()
            # Let aiohttp notice the closed transport instead of finishing the body.
            raise asyncio.CancelledError from None
        except (ConnectionError, RuntimeError):
            pass  # client went away
        return resp

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

    # ------------------------------------------------------------------ OpenAI chat
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
                "message": {"role": "assistant", "content": text, "refusal": None},
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
            for piece in u.chunks:
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

    # ------------------------------------------------------------------ OpenAI completions
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

    # ------------------------------------------------------------------ OpenAI embeddings
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

    # ------------------------------------------------------------------ OpenAI responses
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

    # ------------------------------------------------------------------ Anthropic
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
