"""The request path: read, parse once, route, forward (retrying and falling back), pass the
answer through, and hand one call record to the writer.

Written as a plain ASGI callable (mounted in the Litestar app) so that the hot path does
no per-request work beyond what forwarding needs, and so that a client disconnect can be
seen and turned into cancelling the upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx
import msgspec

from gateway import errors
from gateway.access.answers import AccessDenied
from gateway.access.gate import Gate, Ticket
from gateway.access.keys import GatewayKey, presented_secret
from gateway.config import Config
from gateway.errors import GatewayError
from gateway.ids import new_request_id, valid_client_id
from gateway.observe import (
    AnthropicObserver,
    ChatObserver,
    EmbeddingsObserver,
    Observer,
    ResponsesObserver,
)
from gateway.providers import MissingCredentials, Provider
from gateway.record import (
    CLIENT_DISCONNECTED,
    OK,
    REJECTED,
    TIMEOUT,
    UNREACHABLE,
    UPSTREAM_DISCONNECTED,
    UPSTREAM_ERROR,
    CallRecord,
)
from gateway.routing import Hop, Router
from gateway.sse import SSESplitter
from gateway.tokens import estimate_input, from_chars
from gateway.tracing import new_ids

log = logging.getLogger("gateway.proxy")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_decode = msgspec.json.decode
_encode = msgspec.json.encode
_now = time.perf_counter

# Headers that describe one hop of HTTP, not the message; and credentials, which are
# replaced per provider and never stored.
_HOP_BY_HOP = frozenset(
    {
        b"host",
        b"content-length",
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-connection",
        b"accept-encoding",
        b"expect",
    }
)
_SECRETS = frozenset(
    {b"authorization", b"api-key", b"x-api-key", b"cookie", b"proxy-authorization"}
)
_NOT_FORWARDED = _HOP_BY_HOP | _SECRETS | {b"x-request-id", b"anthropic-version"}
_RESPONSE_DROP = _HOP_BY_HOP | {b"x-request-id", b"content-encoding"}
_IDENTITY = (b"accept-encoding", b"identity")

_MAX_PROPERTIES = 32


class Endpoint:
    __slots__ = ("anthropic_only", "inject_usage", "needs_model", "observer", "operation")

    def __init__(
        self,
        operation: str,
        observer: type[Observer],
        needs_model: bool = True,
        inject_usage: bool = False,
        anthropic_only: bool = False,
    ) -> None:
        self.operation = operation
        self.observer = observer
        self.needs_model = needs_model
        self.inject_usage = inject_usage
        self.anthropic_only = anthropic_only


ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": Endpoint("chat", ChatObserver, inject_usage=True),
    "/v1/completions": Endpoint("text_completion", ChatObserver, inject_usage=True),
    "/v1/embeddings": Endpoint("embeddings", EmbeddingsObserver),
    "/v1/responses": Endpoint("responses", ResponsesObserver),
    "/v1/messages": Endpoint("chat", AnthropicObserver, anthropic_only=True),
}
_MODELS = Endpoint("models", Observer, needs_model=False)
_OTHER = Endpoint("other", Observer, needs_model=False)


class _Meta:
    """What the gateway reads from the client's request headers, in one pass."""

    __slots__ = (
        "anthropic_version",
        "api_key",
        "app",
        "authorization",
        "capture",
        "content_length",
        "forward",
        "host",
        "origin",
        "properties",
        "request_id",
        "session",
        "traceparent",
        "user",
        "user_agent",
        "x_api_key",
    )

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.request_id = self.app = self.user = self.session = self.capture = ""
        self.traceparent = self.user_agent = self.host = self.origin = ""
        self.authorization = self.api_key = self.x_api_key = self.anthropic_version = b""
        self.content_length = -1
        self.properties: dict[str, str] = {}
        forward: list[tuple[bytes, bytes]] = [_IDENTITY]
        for name, value in headers:
            if name.startswith(b"x-gateway-"):
                key = name[10:]
                if key == b"app":
                    self.app = value.decode("latin-1")[:128]
                elif key == b"user":
                    self.user = value.decode("latin-1")[:256]
                elif key == b"session":
                    self.session = value.decode("latin-1")[:256]
                elif key == b"capture":
                    self.capture = value.decode("latin-1").strip().lower()
                elif key.startswith(b"property-") and len(self.properties) < _MAX_PROPERTIES:
                    self.properties[key[9:].decode("latin-1")[:64]] = value.decode("latin-1")[:1024]
                continue
            if name in _NOT_FORWARDED:
                if name == b"authorization":
                    self.authorization = value
                elif name == b"x-api-key":
                    self.x_api_key = value
                elif name == b"api-key":
                    self.api_key = value
                elif name == b"x-request-id":
                    self.request_id = value.decode("latin-1")
                elif name == b"content-length":
                    self.content_length = int(value) if value.isdigit() else -1
                elif name == b"anthropic-version":
                    self.anthropic_version = value
                elif name == b"host":
                    self.host = value.decode("latin-1")
                continue
            if name == b"user-agent":
                self.user_agent = value.decode("latin-1")[:256]
            elif name == b"traceparent":
                self.traceparent = value.decode("latin-1")
            elif name == b"origin":
                self.origin = value.decode("latin-1")
            forward.append((name, value))
        self.forward = forward


def _traceparent(value: str) -> tuple[str, str]:
    """(trace id, parent span id) of a W3C traceparent; empty strings when malformed."""
    parts = value.strip().split("-")
    if len(parts) >= 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
        trace, span = parts[1].lower(), parts[2].lower()
        try:
            int(trace, 16), int(span, 16)
        except ValueError:
            return "", ""
        if trace != "0" * 32 and span != "0" * 16:
            return trace, span
    return "", ""


def _turn_index(payload: dict[str, Any]) -> int:
    items = payload.get("messages")
    if items is None:
        items = payload.get("input")
        if isinstance(items, str):
            return 1
    if not isinstance(items, list):
        return 0
    return sum(1 for m in items if isinstance(m, dict) and m.get("role") == "user")


def _end_user(payload: dict[str, Any]) -> str:
    user = payload.get("user") or payload.get("safety_identifier")
    if isinstance(user, str):
        return user[:256]
    md = payload.get("metadata")
    if isinstance(md, dict) and isinstance(md.get("user_id"), str):
        return md["user_id"][:256]  # Anthropic
    return ""


def _stream_error_event(endpoint: Endpoint, message: str, type_: str) -> bytes:
    """A last SSE event telling the client its stream broke, in the stream's own dialect."""
    if endpoint.observer is AnthropicObserver:
        body = _encode({"type": "error", "error": {"type": type_, "message": message}})
        return b"event: error\ndata: " + body + b"\n\n"
    if endpoint.observer is ResponsesObserver:
        body = _encode({"type": "error", "code": type_, "message": message, "param": None})
        return b"event: error\ndata: " + body + b"\n\n"
    body = _encode({"error": {"message": message, "type": type_, "param": None, "code": type_}})
    return b"data: " + body + b"\n\n"


def _refused(e: BaseException) -> bool:
    """httpx-aiohttp maps a refused connection to ConnectTimeout; tell the two apart."""
    cause = e.__cause__
    return isinstance(cause, aiohttp.ClientConnectorError) and not isinstance(
        cause, aiohttp.ServerTimeoutError | asyncio.TimeoutError
    )


class _Exchange:
    """One call's state on the request path."""

    __slots__ = ("client_gone", "done", "key", "observer", "payload", "rec", "recorded", "t0",
                 "ticket", "watcher")  # fmt: skip

    def __init__(self, rec: CallRecord, t0: float) -> None:
        self.rec = rec
        self.t0 = t0
        self.client_gone = False  # set by the disconnect watcher (not a shutdown)
        self.done = False
        self.recorded = False
        self.observer: Observer | None = None
        self.payload: dict[str, Any] | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.key: GatewayKey | None = None
        self.ticket: Ticket | None = None


async def _watch_disconnect(receive: Receive, ex: _Exchange, task: asyncio.Task[Any]) -> None:
    # After the response completes the server answers receive() with a disconnect too; the
    # `done` flag tells the two apart.
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            if not ex.done:
                ex.client_gone = True
                task.cancel()
            return


class Proxy:
    """ASGI app for `/v1/*` (feedback and the gateway's own endpoints are routed elsewhere)."""

    def __init__(
        self,
        config: Config,
        router: Router,
        transport: httpx.AsyncBaseTransport,
        record: Callable[[CallRecord], None],
        tracing: bool = False,
        gate: Gate | None = None,
        price: Callable[[CallRecord], float | None] | None = None,
    ) -> None:
        self.tracing = tracing
        self.gate = gate
        self.price = price  # the cost of a call, for the spend of a key with a budget
        self._settling: set[asyncio.Task[None]] = set()
        self.config = config
        self.router = router
        self.transport = transport
        self.record = record
        self.max_body = config.server.max_body_bytes
        self.capture_mode = config.capture.mode
        self.capture_override = config.capture.allow_header_override
        self.capture_limit = config.capture.max_body_bytes
        self.max_attempts = config.retries.max_attempts
        self.backoff = config.retries.backoff_ms / 1000.0
        self.in_flight = 0
        self.streams_in_flight = 0
        # (provider, reason) -> failed attempts; read by the metrics sampler.
        self.upstream_failures: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------------ entry point
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = _now()
        wall0 = time.time()
        # Under the /v1 mount the framework rewrites `path`; the raw path is what the client sent.
        raw = scope.get("raw_path")
        path: str = raw.decode("latin-1") if raw else scope["root_path"] + scope["path"]
        method: str = scope["method"]
        meta = _Meta(scope["headers"])
        rid = meta.request_id if valid_client_id(meta.request_id) else new_request_id()
        endpoint = ENDPOINTS.get(path) if method == "POST" else None
        if endpoint is None:
            endpoint = _MODELS if path.startswith("/v1/models") else _OTHER
        trace_id, parent_span = _traceparent(meta.traceparent) if meta.traceparent else ("", "")
        rec = CallRecord(
            request_id=rid,
            trace_id=trace_id,
            parent_span_id=parent_span,
            started_at=wall0,
            app=meta.app,
            end_user=meta.user,
            session_id=meta.session,
            endpoint=path if endpoint is not _OTHER else path[:128],
            operation=endpoint.operation,
            user_agent=meta.user_agent,
            properties=meta.properties,
        )
        if self.tracing:
            rec.trace_id, rec.span_id = new_ids(trace_id)
            # The upstream sees the gateway's span as its parent.
            meta.forward = [h for h in meta.forward if h[0] != b"traceparent"]
            meta.forward.append((b"traceparent", f"00-{rec.trace_id}-{rec.span_id}-01".encode()))
        capture = self.capture_mode
        if meta.capture and self.capture_override and meta.capture in ("full", "metadata"):
            capture = meta.capture
        self.in_flight += 1
        ex = _Exchange(rec, t0)
        try:
            if self.gate is not None:
                self._identify(meta, ex)
            body = await self._read_body(receive, meta)
            if body is None:  # client left while sending its request
                rec.outcome, rec.status_code = CLIENT_DISCONNECTED, 499
                return
            rec.request_bytes = len(body)
            if capture == "full":
                rec.request_body = body[: self.capture_limit].decode("utf-8", "replace")
            # Held by `ex`: the loop keeps only weak references to tasks.
            ex.watcher = asyncio.get_running_loop().create_task(
                _watch_disconnect(receive, ex, asyncio.current_task())  # type: ignore[arg-type]
            )
            await self._handle(scope, path, send, meta, endpoint, body, ex, capture == "full")
        except AccessDenied as e:
            rec.outcome = e.outcome
            await self._reject(send, ex, e)
        except GatewayError as e:
            rec.outcome = REJECTED if e.status < 500 else rec.outcome
            await self._reject(send, ex, e)
        except asyncio.CancelledError:
            if not ex.client_gone:
                self._commit(ex)  # a shutdown: keep the record of what happened so far
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            rec.outcome, rec.status_code = CLIENT_DISCONNECTED, 499
        except Exception as e:  # a bug of ours: answer 500 in the OpenAI shape, keep the row
            log.exception("unhandled error on the request path", extra={"request_id": rid})
            rec.outcome, rec.error_type = UPSTREAM_ERROR, "gateway_error"
            rec.error_message = str(e)[:1000]
            with contextlib.suppress(Exception):
                await self._reject(
                    send, ex, GatewayError(500, "The gateway failed internally.", "server_error")
                )
        finally:
            ex.done = True
            self.in_flight -= 1
            self._commit(ex)
            if ex.ticket is not None and ex.ticket.adm is not None:  # the answer broke off
                task = asyncio.get_running_loop().create_task(self._settle(ex))
                self._settling.add(task)
                task.add_done_callback(self._settling.discard)

    def _identify(self, meta: _Meta, ex: _Exchange) -> None:
        """Who calls (raises AccessDenied). A gateway key is consumed: never sent upstream."""
        assert self.gate is not None
        key = self.gate.identify(
            meta.host, meta.origin, meta.authorization, meta.x_api_key, meta.api_key
        )
        if key is None:
            return
        ex.key = key
        rec = ex.rec
        rec.key_id, rec.key_name = key.key_id, key.name
        if key.app:
            rec.app = key.app  # the key says which app it is; a header cannot claim another
        if presented_secret(meta.authorization, b"", b""):
            meta.authorization = b""
        if presented_secret(b"", meta.x_api_key, meta.api_key):
            meta.x_api_key = meta.api_key = b""

    async def _settle(self, ex: _Exchange) -> None:
        """Charge the key what the call used (tokens, cost) and give back its slot. Done
        before the answer's last bytes go out, so that the client's next call (here or on
        another replica) sees this one's spend."""
        ticket, rec = ex.ticket, ex.rec
        if self.gate is None or ticket is None or ticket.adm is None:
            return
        budget = ticket.adm.period
        cost = self.price(rec) if self.price is not None and budget else None
        await self.gate.settle(ticket, rec.input_tokens + rec.output_tokens, cost)

    def _commit(self, ex: _Exchange) -> None:
        """Hand the record to the writer, once. Called before the response's last bytes go
        out, so that a client that got a whole answer always has its row."""
        if ex.recorded:
            return
        ex.recorded = True
        rec = ex.rec
        if ex.observer is not None:
            _finish_usage(rec, ex.observer, ex.payload)
        rec.latency_ms = (_now() - ex.t0) * 1000.0
        # Outside the upstream window everything is the gateway's; inside a stream's
        # window, the time spent handling chunks (already in overhead_ms) is too.
        rec.overhead_ms += max(rec.latency_ms - rec.upstream_ms, 0.0)
        self.record(rec)

    async def _read_body(self, receive: Receive, meta: _Meta) -> bytes | None:
        if meta.content_length > self.max_body:
            raise errors.too_large(self.max_body)
        msg = await receive()
        if msg["type"] != "http.request":
            return None
        body: bytes = msg.get("body", b"")
        if not msg.get("more_body"):
            if len(body) > self.max_body:
                raise errors.too_large(self.max_body)
            return body
        parts = [body]
        size = len(body)
        while msg.get("more_body"):
            msg = await receive()
            if msg["type"] != "http.request":
                return None
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise errors.too_large(self.max_body)
            parts.append(chunk)
        return b"".join(parts)

    async def _reject(self, send: Send, ex: _Exchange, e: GatewayError) -> None:
        rec = ex.rec
        rec.status_code = e.status
        rec.error_type = rec.error_type or (e.code or e.type)
        rec.error_message = rec.error_message or e.message
        body = e.body()
        await send(
            {
                "type": "http.response.start",
                "status": e.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", rec.request_id.encode()),
                    *(e.headers if isinstance(e, AccessDenied) else ()),
                    *(ex.ticket.headers if ex.ticket is not None else ()),
                ],
            }
        )
        self._commit(ex)
        await self._settle(ex)
        await send({"type": "http.response.body", "body": body})

    # ------------------------------------------------------------------ forwarding
    async def _handle(
        self,
        scope: Scope,
        path: str,
        send: Send,
        meta: _Meta,
        endpoint: Endpoint,
        body: bytes,
        ex: _Exchange,
        capture: bool,
    ) -> None:
        rec = ex.rec
        payload: dict[str, Any] | None = None
        model = ""
        if endpoint.needs_model:
            try:
                payload = _decode(body)
            except msgspec.DecodeError as e:
                raise errors.bad_json(str(e)) from None
            if not isinstance(payload, dict):
                raise errors.bad_json("the body must be a JSON object")
            model = payload.get("model")  # type: ignore[assignment]
            if not model or not isinstance(model, str):
                raise errors.missing_model()
            rec.request_model = model
            rec.stream = payload.get("stream") is True
            rec.turn_index = _turn_index(payload)
            if not rec.end_user:
                rec.end_user = _end_user(payload)
        elif body and endpoint is _OTHER and body[:1] == b"{":
            with contextlib.suppress(msgspec.DecodeError):
                maybe = _decode(body)
                if isinstance(maybe, dict) and isinstance(maybe.get("model"), str):
                    payload, model = maybe, maybe["model"]
                    rec.request_model = model
                    rec.stream = maybe.get("stream") is True

        resolved = self.router.resolve(model) if model else self.router.default
        if resolved is None:
            raise errors.model_not_found(model)
        hops = resolved.hops
        if endpoint.anthropic_only:
            hops = tuple(h for h in hops if h.provider.kind == "anthropic")
            if not hops:
                raise GatewayError(
                    400,
                    f"The model `{model}` is not routed to an Anthropic provider; "
                    "/v1/messages needs one.",
                    "invalid_request_error",
                    "unsupported_endpoint",
                    "model",
                )

        if ex.key is not None:
            assert self.gate is not None
            # The allowlist applies to the model after aliases: the one actually called.
            ex.ticket = await self.gate.admit(
                ex.key, resolved.model if model else "", rec.end_user, payload
            )
        observer = ex.observer = endpoint.observer(rec)
        ex.payload = payload
        resp, hop, t_up = await self._forward(
            scope, path, meta, endpoint, body, payload, hops, rec, observer
        )
        try:
            ctype = resp.headers.get("content-type", "")
            if rec.stream and resp.status_code == 200 and ctype.startswith("text/event-stream"):
                self.streams_in_flight += 1
                try:
                    await self._stream(send, resp, endpoint, ex, capture, t_up, hop)
                finally:
                    self.streams_in_flight -= 1
            else:
                rec.stream = False
                await self._whole(send, resp, ex, capture, t_up, hop)
        finally:
            await resp.aclose()

    def _upstream_body(
        self,
        body: bytes,
        payload: dict[str, Any] | None,
        hop: Hop,
        endpoint: Endpoint,
        rec: CallRecord,
        observer: Observer,
    ) -> bytes:
        """The body sent upstream: the client's bytes, re-encoded only when something changes."""
        if payload is None:
            return body
        changed = False
        if hop.model != rec.request_model:
            payload = {**payload, "model": hop.model}
            changed = True
        observer.drop_usage_chunk = False
        if (
            rec.stream
            and endpoint.inject_usage
            and hop.provider.cfg.inject_stream_usage
            and hop.provider.kind != "anthropic"
        ):
            opts = payload.get("stream_options")
            if not (isinstance(opts, dict) and opts.get("include_usage") is True):
                opts = dict(opts) if isinstance(opts, dict) else {}
                opts["include_usage"] = True
                payload = {**payload, "stream_options": opts}
                observer.drop_usage_chunk = True  # the client did not ask to see it
                changed = True
        return _encode(payload) if changed else body

    async def _forward(
        self,
        scope: Scope,
        path: str,
        meta: _Meta,
        endpoint: Endpoint,
        body: bytes,
        payload: dict[str, Any] | None,
        hops: tuple[Hop, ...],
        rec: CallRecord,
        observer: Observer,
    ) -> tuple[httpx.Response, Hop, float]:
        """Send upstream, retrying the next target on connection errors, timeouts, 429, 5xx."""
        query = scope.get("query_string", b"").decode("latin-1")
        method = scope["method"]
        last_error: GatewayError | None = None
        attempt = 0
        while attempt < self.max_attempts:
            hop = hops[attempt % len(hops)]
            attempt += 1
            if attempt > len(hops) and self.backoff:
                await asyncio.sleep(self.backoff * (2 ** (attempt - len(hops) - 1)))
            provider: Provider = hop.provider
            try:
                creds = provider.credentials(meta.authorization, meta.api_key, meta.x_api_key)
            except MissingCredentials as e:
                self._note_hop(rec, hop, attempt, hops)
                raise errors.no_credentials(str(e)) from None
            self._note_hop(rec, hop, attempt, hops)
            headers = meta.forward + creds + provider.version_header(meta.anthropic_version)
            content = self._upstream_body(body, payload, hop, endpoint, rec, observer)
            t = provider.cfg.timeouts
            request = httpx.Request(
                method,
                provider.url(path, query, hop.model),
                headers=headers,
                content=content if method != "GET" else None,
                extensions={"timeout": {"connect": t.connect, "read": None, "pool": t.connect + 5}},
            )
            t_up = _now()
            try:
                async with asyncio.timeout(t.first_byte):
                    resp = await self.transport.handle_async_request(request)
            except (TimeoutError, httpx.TimeoutException) as e:
                if _refused(e):
                    last_error = errors.upstream_unreachable(f"{provider.name}: {e}")
                    rec.outcome, rec.error_type = UNREACHABLE, "connection_error"
                    self._log_retry(rec, hop, "connection_error")
                    continue
                what, secs = (
                    ("connect", t.connect)
                    if isinstance(e, httpx.ConnectTimeout)
                    else ("first byte", t.first_byte)
                )
                last_error = errors.upstream_timeout(what, secs)
                rec.outcome, rec.error_type = TIMEOUT, "timeout"
                self._log_retry(rec, hop, what.replace(" ", "_") + "_timeout")
                continue
            except httpx.TransportError as e:
                last_error = errors.upstream_unreachable(
                    f"{provider.name}: {e or type(e).__name__}"
                )
                rec.outcome, rec.error_type = UNREACHABLE, "connection_error"
                self._log_retry(rec, hop, "connection_error")
                continue
            status = resp.status_code
            if (status == 429 or status >= 500) and attempt < self.max_attempts:
                await resp.aclose()
                rec.error_type = f"http_{status}"
                self._log_retry(rec, hop, rec.error_type)
                continue
            rec.outcome, rec.error_type = OK, ""
            return resp, hop, t_up
        assert last_error is not None
        raise last_error

    @staticmethod
    def _note_hop(rec: CallRecord, hop: Hop, attempt: int, hops: tuple[Hop, ...]) -> None:
        rec.attempts = attempt
        rec.provider = hop.provider.name
        rec.provider_kind = hop.provider.kind
        rec.upstream_model = hop.model
        rec.fallback_used = hop is not hops[0]

    def _log_retry(self, rec: CallRecord, hop: Hop, reason: str) -> None:
        key = (hop.provider.name, reason)
        self.upstream_failures[key] = self.upstream_failures.get(key, 0) + 1
        log.warning(
            "upstream attempt failed",
            extra={
                "request_id": rec.request_id,
                "provider": hop.provider.name,
                "attempt": rec.attempts,
                "reason": reason,
            },
        )

    def _response_headers(self, resp: httpx.Response, ex: _Exchange) -> list[tuple[bytes, bytes]]:
        rec = ex.rec
        out = []
        for name, value in resp.headers.raw:
            lname = name.lower()
            if lname in _RESPONSE_DROP:
                if lname == b"x-request-id":
                    rec.upstream_request_id = value.decode("latin-1")[:128]
                    out.append((b"x-upstream-request-id", value))
                continue
            out.append((lname, value))
        out.append((b"x-request-id", rec.request_id.encode()))
        if ex.ticket is not None:
            out += ex.ticket.headers
        return out

    async def _whole(
        self,
        send: Send,
        resp: httpx.Response,
        ex: _Exchange,
        capture: bool,
        t_up: float,
        hop: Hop,
    ) -> None:
        rec, observer = ex.rec, ex.observer
        assert observer is not None
        total = hop.provider.cfg.timeouts.total
        try:
            async with asyncio.timeout(total):
                data = await resp.aread()
        except (TimeoutError, httpx.TimeoutException):
            rec.outcome = TIMEOUT
            raise errors.upstream_timeout("total", total) from None
        except httpx.TransportError as e:
            rec.outcome = UPSTREAM_DISCONNECTED
            raise errors.upstream_unreachable(f"the upstream closed the connection: {e}") from None
        t_up_end = _now()
        rec.upstream_ms = (t_up_end - t_up) * 1000.0
        status = resp.status_code
        rec.status_code = status
        rec.response_bytes = len(data)
        headers = self._response_headers(resp, ex)
        headers.append((b"content-length", str(len(data)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if capture:
            rec.response_body = data[: self.capture_limit].decode("utf-8", "replace")
        obj = None
        if data[:1] in (b"{", b"["):
            with contextlib.suppress(msgspec.DecodeError):
                obj = _decode(data)
        if status >= 400:
            rec.outcome = UPSTREAM_ERROR
            observer.error_body(obj)
            rec.error_type = rec.error_type or f"http_{status}"
        elif obj is not None:
            observer.body(obj)
        self._commit(ex)
        await self._settle(ex)
        await send({"type": "http.response.body", "body": data})

    async def _stream(
        self,
        send: Send,
        resp: httpx.Response,
        endpoint: Endpoint,
        ex: _Exchange,
        capture: bool,
        t_up: float,
        hop: Hop,
    ) -> None:
        rec, observer, t0 = ex.rec, ex.observer, ex.t0
        assert observer is not None
        rec.status_code = 200
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": self._response_headers(resp, ex),
            }
        )
        splitter = SSESplitter()
        filtering = observer.drop_usage_chunk
        captured: list[bytes] = []
        captured_size = 0
        limit = self.capture_limit
        total = hop.provider.cfg.timeouts.total
        first_chunk: float | None = None
        n_bytes = 0
        t_last = t_up
        gateway_time = 0.0
        try:
            async with asyncio.timeout(total):
                async for chunk in resp.aiter_raw():
                    t_in = _now()
                    if first_chunk is None:
                        first_chunk = t_in
                    n_bytes += len(chunk)
                    if filtering:
                        out = b"".join(
                            ev.raw
                            for ev in splitter.feed(chunk)
                            if not observer.event(ev.event, ev.data)
                        )
                        if out:
                            await send(
                                {"type": "http.response.body", "body": out, "more_body": True}
                            )
                    else:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                        for ev in splitter.feed(chunk):
                            observer.event(ev.event, ev.data)
                    if rec.ttft_ms is None and observer.content_seen:
                        rec.ttft_ms = (t_in - t0) * 1000.0
                    if capture and captured_size < limit:
                        captured.append(chunk)
                        captured_size += len(chunk)
                    t_last = _now()
                    gateway_time += t_last - t_in
            tail = splitter.flush()
            if tail is not None and not observer.event(tail.event, tail.data) and filtering:
                await send({"type": "http.response.body", "body": tail.raw, "more_body": True})
        except (TimeoutError, httpx.TimeoutException):
            rec.outcome, rec.status_code, rec.error_type = TIMEOUT, 504, "timeout"
            rec.error_message = f"stream exceeded the total timeout of {total:g}s"
            await send(
                {
                    "type": "http.response.body",
                    "body": _stream_error_event(endpoint, rec.error_message, "timeout_error"),
                    "more_body": True,
                }
            )
        except httpx.TransportError as e:
            rec.outcome, rec.status_code = UPSTREAM_DISCONNECTED, 502
            rec.error_type = "upstream_disconnected"
            rec.error_message = f"the upstream closed the stream: {e or type(e).__name__}"[:1000]
            await send(
                {
                    "type": "http.response.body",
                    "body": _stream_error_event(endpoint, rec.error_message, "upstream_error"),
                    "more_body": True,
                }
            )
        finally:
            rec.response_bytes = n_bytes
            rec.upstream_ms = (t_last - t_up) * 1000.0
            if rec.ttft_ms is None and first_chunk is not None and n_bytes:
                rec.ttft_ms = (first_chunk - t0) * 1000.0
            if captured:
                rec.response_body = b"".join(captured)[:limit].decode("utf-8", "replace")
            rec.overhead_ms = gateway_time * 1000.0
        self._commit(ex)
        await self._settle(ex)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _finish_usage(rec: CallRecord, observer: Observer, payload: dict[str, Any] | None) -> None:
    """Estimate tokens when the upstream reported none for an answer it did give."""
    if observer.usage_seen or type(observer) is Observer or payload is None:
        return
    if rec.outcome == UPSTREAM_ERROR or (rec.status_code >= 400 and not observer.output_chars):
        return
    rec.input_tokens = estimate_input(payload)
    rec.output_tokens = from_chars(observer.output_chars)
    rec.usage_estimated = True
