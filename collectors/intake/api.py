"""`POST /v1/feedback`: where end-user signals land.

One event or a JSON array of events. Each is validated on its own: a batch keeps the valid
ones and reports per event; when nothing is valid the answer is 422, naming the field.
Accepted events take the same durable path as call records (appended to a local log
before the response, written in batches, replayed after a crash).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from litestar import MediaType, Request, Response, get, route
from litestar.handlers import HTTPRouteHandler

from collectors.intake.access import Denied, KeyRing, RateLimiter
from collectors.intake.config import FeedbackConfig
from collectors.intake.events import Context, FeedbackEvent, Invalid, validate
from collectors.intake.openapi import openapi
from gateway.errors import ApiError, parse_json
from gateway.errors import error_envelope as _error

COLLECTOR_JS = Path(__file__).parent.parent / "static" / "feedback.js"
_CORS_HEADERS = (
    "content-type, authorization, x-gateway-key, x-gateway-app, x-gateway-user, x-gateway-session"
)


FEEDBACK_PATH = "/v1/feedback"  # under the proxy's /v1: the server's front routes it here


def feedback_handlers(
    cfg: FeedbackConfig,
    record: Callable[[FeedbackEvent], bool],
    counted: Callable[[FeedbackEvent], None] | None = None,
) -> list[HTTPRouteHandler]:
    """Route handlers for the app's composition point. `record` keeps an event durably
    (False when it could not be kept); `counted` feeds metrics."""
    ring = KeyRing(cfg.keys)
    limiter = RateLimiter()
    js = COLLECTOR_JS.read_bytes() if COLLECTOR_JS.exists() else b""

    def cors(origin: str, key: Any) -> dict[str, str]:
        if origin and ring.origin_allowed(origin, key):
            return {
                "access-control-allow-origin": origin,
                "access-control-expose-headers": "retry-after",
                "vary": "Origin",
            }
        return {}

    def reply(status: int, body: dict[str, Any], headers: dict[str, str]) -> Response[Any]:
        return Response(body, status_code=status, headers=headers, media_type=MediaType.JSON)

    # One handler for both methods: the framework would otherwise add its own OPTIONS.
    @route(FEEDBACK_PATH, http_method=["POST", "OPTIONS"], status_code=200)
    async def receive(request: Request[Any, Any, Any]) -> Response[Any]:
        if request.method == "OPTIONS":
            return preflight(request)
        h = request.headers
        origin = h.get("origin", "")
        auth = h.get("authorization", "")
        presented = (
            auth[7:].strip()
            if auth[:7].lower() == "bearer "
            else h.get("x-gateway-key", "") or request.query_params.get("key", "")
        )
        key = ring.check(presented, origin)
        if isinstance(key, Denied):
            type_ = "authentication_error" if key.status == 401 else "permission_error"
            return reply(key.status, _error(key.message, key.code, type_=type_), {})
        headers = cors(origin, key)
        length = h.get("content-length")
        if length and length.isdigit() and int(length) > cfg.max_body_bytes:
            msg = f"Body exceeds {cfg.max_body_bytes} bytes."
            return reply(413, _error(msg, "request_too_large"), headers)
        body = await request.body()
        if len(body) > cfg.max_body_bytes:
            msg = f"Body exceeds {cfg.max_body_bytes} bytes."
            return reply(413, _error(msg, "request_too_large"), headers)
        try:
            payload = parse_json(body)  # sendBeacon sends text/plain: the body is JSON all the same
        except ApiError as e:
            return reply(e.status, _error(e.message, e.code), headers)
        batch = isinstance(payload, list)
        items = payload if batch else [payload]
        if batch and not items:
            return reply(422, _error("The batch is empty.", "invalid_feedback"), headers)
        if len(items) > cfg.max_batch:
            msg = f"At most {cfg.max_batch} events per request."
            return reply(413, _error(msg, "batch_too_large"), headers)
        if key is not None and key.kind == "publishable":
            client = request.client.host if request.client else ""
            wait = limiter.take(key.key, client, key.rate_per_minute, len(items))
            if wait:
                return reply(429, _error("Too many feedback events; slow down.",
                                         "rate_limit_exceeded", type_="rate_limit_error"),
                             {**headers, "retry-after": str(wait)})  # fmt: skip
        ctx = Context(
            app=(key.app if key is not None and key.app else h.get("x-gateway-app", ""))[:128],
            end_user=h.get("x-gateway-user", "")[:256],
            session_id=h.get("x-gateway-session", "")[:256],
            forced_source="user" if key is not None and key.kind == "publishable" else None,
        )
        results: list[dict[str, Any]] = []
        accepted = 0
        first_error: Invalid | None = None
        for i, item in enumerate(items):
            try:
                event = validate(item, ctx)
            except Invalid as e:
                first_error = first_error or e
                err = _error(e.message, "invalid_feedback", e.param or None)["error"]
                results.append({"index": i, "status": "rejected", "error": err})
                continue
            if not record(event):
                err = _error("The event could not be kept; retry later.", "not_kept",
                             type_="server_error")["error"]  # fmt: skip
                results.append({"index": i, "status": "rejected", "error": err})
                continue
            if counted is not None:
                counted(event)
            accepted += 1
            results.append({"index": i, "status": "accepted", "event_id": event.event_id})
        if not accepted:
            if not batch and first_error is not None:
                return reply(422, _error(first_error.message, "invalid_feedback",
                                         first_error.param or None), headers)  # fmt: skip
            # An error answer like any other (the first event's error), with the report.
            status = 422 if first_error is not None else 503
            first = results[0]["error"]
            return reply(status, {"error": first, "accepted": 0, "rejected": len(items),
                                  "results": results}, headers)  # fmt: skip
        body_out = {"accepted": accepted, "rejected": len(items) - accepted, "results": results}
        return reply(200, body_out, headers)

    def preflight(request: Request[Any, Any, Any]) -> Response[Any]:
        origin = request.headers.get("origin", "")
        presented = request.query_params.get("key", "")
        key = ring.find(presented) if presented else None
        if not origin or not ring.origin_allowed(origin, key):
            msg = f"Origin {origin or '(none)'} may not send feedback here."
            return reply(403, _error(msg, "origin_not_allowed", type_="permission_error"), {})
        return Response(
            None,
            status_code=204,
            headers={
                **cors(origin, key),
                "access-control-allow-methods": "POST, OPTIONS",
                "access-control-allow-headers": _CORS_HEADERS,
                "access-control-max-age": "600",
            },
        )

    @get(f"{FEEDBACK_PATH}/openapi.json", media_type=MediaType.JSON, sync_to_thread=False)
    def schema(request: Request[Any, Any, Any]) -> dict[str, Any]:
        return openapi(str(request.base_url).rstrip("/") or "/")

    @get("/feedback.js", media_type="text/javascript", sync_to_thread=False)
    def collector_js() -> Response[bytes]:
        # The browser collector, served by the gateway so apps include one <script> tag.
        return Response(
            js,
            media_type="text/javascript",
            headers={"cache-control": "public, max-age=300", "access-control-allow-origin": "*"},
        )

    return [receive, schema, collector_js]
