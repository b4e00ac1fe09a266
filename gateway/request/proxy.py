"""The ASGI entry of the request path, in reading order: headers → exchange (body, record)
→ route → attempts → streaming. Feedback and the gateway's own endpoints are routed
elsewhere.

A plain ASGI callable (mounted in the Litestar app) so that the hot path does no
per-request work beyond what forwarding needs, and so that a client disconnect can be
seen and turned into cancelling the upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway import errors
from gateway.access.answers import AccessDenied
from gateway.access.gate import Gate, Ticket
from gateway.access.limiter import HOLD_MARGIN_S
from gateway.cache import MISS, ResponseCache
from gateway.cache.replay import replay
from gateway.errors import ApiError
from gateway.experiments import Assigner
from gateway.observability.tracing import new_ids
from gateway.providers.translate import translation_for
from gateway.providers.wire import wire_api_for
from gateway.recording.capture import CaptureConfig
from gateway.recording.ids import RequestIds, valid_client_id
from gateway.recording.record import CallRecord, Outcome, RecordSink
from gateway.request.attempts import Attempts
from gateway.request.exchange import Exchange, Receive, Send, read_body
from gateway.request.headers import RequestHeaders
from gateway.request.paths import ClientPath, checked_path, client_path, without_api_version
from gateway.request.routing import Router
from gateway.request.streaming import relay_stream, relay_whole

log = logging.getLogger("gateway.proxy")

Scope = dict[str, Any]
_now = time.perf_counter
# SSE, and the AWS event-stream framing of Bedrock's ConverseStream (translated to SSE).
_STREAM_TYPES = (b"text/event-stream", b"application/vnd.amazon.eventstream")


class Proxy:
    """ASGI app for `/v1/*`."""

    def __init__(
        self,
        router: Router,
        attempts: Attempts,
        sink: RecordSink,
        capture: CaptureConfig,
        max_body: int,
        assigner: Assigner | None = None,  # None without experiments: not even looked at
        tracing: bool = False,
        gate: Gate | None = None,
        price: Callable[[CallRecord], float | None] | None = None,
        cache: ResponseCache | None = None,
        estimate: Callable[[str, str, int, int], float | None] | None = None,
    ) -> None:
        # The steps in reading order: route, assign, attempt, record.
        self.router, self.assigner, self.attempts, self.sink = router, assigner, attempts, sink
        self.capture, self.max_body, self.tracing = capture, max_body, tracing
        self.gate = gate  # gateway keys and limits (gateway/access)
        self.price = price  # a call's cost, for the spend of a key with a budget
        self.cache = cache  # the response cache (gateway/cache)
        # (provider, model, input tokens, output tokens) -> cost, for a budget's reservation
        self.estimate = estimate
        self._settling: set[asyncio.Task[None]] = set()
        self.request_ids = RequestIds()
        self.in_flight = self.streams_in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def upstream_failures(self) -> dict[tuple[str, str], int]:
        """(provider, reason) -> failed attempts; read by the metrics sampler."""
        return self.attempts.failures

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = _now()
        wall0 = time.time()
        # Under the /v1 mount the framework rewrites `path`; the raw path is what the client sent.
        raw = scope.get("raw_path")
        endpoint: str = raw.decode("latin-1") if raw else scope["root_path"] + scope["path"]
        client = client_path(endpoint)
        path = client.path
        headers = RequestHeaders(scope["headers"])
        client_rid = headers.request_id if valid_client_id(headers.request_id) else ""
        rid = self.request_ids.assign(client_rid)
        wire = wire_api_for(scope["method"], path)
        trace_id, parent_span = headers.parent_trace()
        rec = CallRecord(
            request_id=rid,
            client_request_id=client_rid,
            trace_id=trace_id,
            parent_span_id=parent_span,
            started_at=wall0,
            app=headers.app,
            end_user=headers.user,
            session_id=headers.session,
            endpoint=endpoint,
            operation=wire.operation,
            client_api=wire.dialect or "openai",
            user_agent=headers.user_agent,
            properties=headers.properties,
        )
        if self.tracing:
            rec.trace_id, rec.span_id = new_ids(trace_id)
            headers.continue_trace(rec.trace_id, rec.span_id)
        self.in_flight += 1
        loop = self._loop
        if loop is None or not loop.is_running():  # a lookup is a syscall (getpid) on 3.11
            loop = self._loop = asyncio.get_running_loop()
        ex = Exchange(rec, t0, self.sink, send, scope["method"], headers, wire, loop)
        ex.capture = capture = self.capture.limit(headers.capture)
        try:
            checked_path(endpoint)  # the path as sent, Azure deployment included
            body = await read_body(receive, headers.content_length, self.max_body)
            if body is None:  # client left while sending its request
                rec.outcome, rec.status_code = Outcome.CLIENT_DISCONNECTED, 499
                return
            ex.body, rec.request_bytes = body, len(body)
            if self.gate is not None:  # after the body: a slow or short body is a 408 first
                self._identify(headers, ex)
            if capture:
                rec.request_body = body[:capture].decode("utf-8", "replace")
            ex.watch_disconnect(receive, scope)
            await self._handle(ex, client, scope.get("query_string", b"").decode("latin-1"))
        except AccessDenied as e:
            rec.outcome = Outcome(e.outcome)
            if not rec.request_model:  # refused before the body was parsed
                ex.name_model(client.deployment)
            await ex.reject(e)
        except ApiError as e:
            rec.outcome = Outcome.REJECTED if e.status < 500 else rec.outcome
            await ex.reject(e)
        except asyncio.CancelledError:
            if not ex.client_gone:
                ex.commit()  # a shutdown: keep the record of what happened so far
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            if rec.outcome is Outcome.OK:  # else the call had failed before the client left
                rec.outcome, rec.status_code = Outcome.CLIENT_DISCONNECTED, 499
        except Exception as e:  # a bug of ours: answer 500 in the OpenAI shape, keep the row
            log.exception("unhandled error on the request path", extra={"request_id": rid})
            rec.outcome, rec.error_type = Outcome.UPSTREAM_ERROR, "gateway_error"
            rec.error_message = str(e)[:1000]
            with contextlib.suppress(Exception):
                await ex.reject(ApiError(500, "The gateway failed internally.", "server_error"))
        finally:
            ex.done = True
            self.in_flight -= 1
            ex.commit()
            self.sink.after(rec)  # metrics, spans: the answer is out, the turn not over
            if ex.ticket is not None and ex.ticket.adm is not None:  # the answer broke off
                task = ex.loop.create_task(ex.settle())
                self._settling.add(task)
                task.add_done_callback(self._settling.discard)

    def _identify(self, headers: RequestHeaders, ex: Exchange) -> None:
        """Who calls (raises AccessDenied). A gateway key is consumed: never sent upstream."""
        assert self.gate is not None
        key = self.gate.identify(
            headers.host, headers.origin, headers.authorization, headers.x_api_key,
            headers.api_key,
        )  # fmt: skip
        if key is None:
            return
        headers.consume_gateway_key()
        ex.key, ex.settler = key, self._settle
        rec = ex.rec
        rec.key_id, rec.key_name = key.key_id, key.name
        if key.app:
            rec.app = key.app  # the key says which app it is; a header cannot claim another

    def _settle(self, ticket: Ticket, rec: CallRecord) -> Awaitable[None] | None:
        """`Gate.settle` of what the call used."""
        assert self.gate is not None
        if rec.cache_status == "hit":  # counted in the key's rpm; no tokens, no spend
            return self.gate.settle(ticket, 0, None)
        budget = ticket.adm is not None and ticket.adm.period
        cost = self.price(rec) if self.price is not None and budget else None
        return self.gate.settle(ticket, rec.input_tokens + rec.output_tokens, cost)

    async def _handle(self, ex: Exchange, client: ClientPath, query: str) -> None:
        rec, wire = ex.rec, ex.wire
        model = await ex.parse(wire, client.deployment)
        if self.assigner is not None and model:
            model = self.assigner.apply(rec, model)
        resolved = self.router.resolve(model) if model else self.router.default
        if resolved is None:
            raise errors.model_not_found(model)
        hops = resolved.hops
        if wire.dialect is not None:
            hops = tuple(
                h
                for h in hops
                if h.provider.dialect == wire.dialect or translation_for(wire, h.provider)
            )
            if not hops:
                raise errors.wrong_dialect(model)
        if ex.key is not None:
            assert self.gate is not None
            first, estimate = hops[0], self.estimate

            def price(tokens_in: int, tokens_out: int) -> float | None:  # at the first hop's
                if estimate is None:
                    return None
                return estimate(first.provider.name, first.model, tokens_in, tokens_out)

            # The allowlist applies to the model after aliases: the one actually called.
            ticket = self.gate.admit(
                ex.key, resolved.model if model else "", rec.end_user, ex.payload,
                rec.operation, price, first.provider.cfg.timeouts.total + HOLD_MARGIN_S,
                ex.estimated_input,
            )  # fmt: skip
            ex.ticket = ticket if isinstance(ticket, Ticket) else await ticket
            ex.answer_headers = ex.ticket.headers
        ex.observer = wire.observer(rec)
        # One deadline for the whole call: every attempt, every wait, and the answer's body.
        ex.deadline = ex.loop.time() + hops[0].provider.cfg.timeouts.total
        ex.hops, ex.path = hops, client.path
        ex.query = without_api_version(query) if client.azure else query
        if self.cache is not None and await self._cached(ex, resolved.route):
            return
        resp = await self.attempts.forward(ex)
        assert ex.hop is not None
        ex.translation = translation = translation_for(wire, ex.hop.provider)
        if translation is not None:  # the answer is read in the upstream's dialect
            ex.observer = translation.observer(rec)
        try:
            ctype = resp.header(b"content-type") or b""
            streamed = rec.stream and resp.status == 200 and ctype.startswith(_STREAM_TYPES)
            if ex.fill is not None:
                ex.fill.stream, ex.fill.content_type = streamed, ctype.decode("latin-1")
            if streamed:
                self.streams_in_flight += 1
                try:
                    await relay_stream(ex, resp)
                finally:
                    self.streams_in_flight -= 1
            else:
                rec.stream = False
                await relay_whole(ex, resp)
        finally:
            resp.release()
        if ex.fill is not None:
            assert self.cache is not None
            self.cache.finish(ex)

    async def _cached(self, ex: Exchange, route: str) -> bool:
        """True when the response cache answered the call; else the call goes upstream
        (`ex.fill` set when its answer is to be stored)."""
        assert self.cache is not None
        plan = self.cache.plan(ex, route)
        if plan is None:
            return False
        entry = await self.cache.lookup(plan)
        base = ex.answer_headers
        if entry is not None:
            ex.answer_headers, ex.rec.cache_status = [*base, plan.header], "hit"
            if await replay(ex, entry):
                return True
            plan.status = MISS  # stored in a shape this call cannot take: asked again
        ex.answer_headers, ex.rec.cache_status = [*base, plan.header], plan.status.lower()
        if plan.store:
            ex.fill, ex.store_answer = plan, functools.partial(self.cache.finish, ex)
        return False
