"""The fake upstreams' common part: the server in its own thread, the request log, the
routes (each answered by the module of its provider), how errors and SSE streams are written,
and `Behaviour`, what a test asks of the fake."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

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
    hold_after_end: float = 0.0
    """Streams: seconds to hold the connection open after the last event (``[DONE]``,
    ``message_stop``, ``response.completed``) before ending the body."""
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
    refusal: str | None = None
    """Chat: the model refuses, with this text (`message.refusal`, streamed as `delta.refusal`
    pieces), instead of answering."""
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


class Upstream:
    """A fake upstream on 127.0.0.1 in a thread; the provider modules add the routes."""

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

    def start(self) -> Self:
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
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
            # Requests still under way (a held stream) end here, quietly.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
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
            if b.hold_after_end:
                await asyncio.sleep(b.hold_after_end)
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
