"""The gateway's own endpoints beside the proxied ones: probes (`/healthz`, `/readyz`),
`/metrics`, and the admin endpoints through which the CLI reaches the store the gateway
holds (`/_gateway/sql`, `/_gateway/insert`, behind the admin token). Every error the
framework answers on them is in OpenAI's error shape, like the proxy's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import Any

from litestar import MediaType, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler

from gateway.access import token_matches
from gateway.errors import StoreError, error_envelope
from gateway.jobs import Job
from gateway.recording.store import Store
from gateway.recording.writer import BatchWriter

log = logging.getLogger("gateway.app")

_PHRASES = {s.value for s in HTTPStatus}
# What CLI jobs (`llm-gateway drift`, `llm-gateway keys`) may write through the gateway.
ADMIN_INSERT_TABLES = frozenset({"llm_drift", "llm_gateway_keys"})
_STATUS_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                 429: "rate_limit_error"}  # fmt: skip


def own_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Every error the framework answers for the gateway's own routes (unknown route, wrong
    method, body too large, a bug) in OpenAI's error shape, like the ones the proxy sends."""
    if isinstance(exc, HTTPException):
        status, message = exc.status_code, str(exc.detail)
        headers = exc.headers or {}
    else:
        log.error("unhandled error", exc_info=exc, extra={"path": request.url.path[:256]})
        status, message, headers = 500, "The gateway failed internally.", {}
    type_ = _STATUS_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    code = HTTPStatus(status).phrase.lower().replace(" ", "_") if status in _PHRASES else None
    return Response(error_envelope(message, code, type_=type_), status_code=status,
                    headers=headers, media_type=MediaType.JSON)  # fmt: skip


def _answer(status: int, message: str, code: str, type_: str) -> Response[dict[str, Any]]:
    return Response(error_envelope(message, code, type_=type_), status_code=status,
                    media_type=MediaType.JSON)  # fmt: skip


def endpoints(
    store: Store,
    writers: Sequence[BatchWriter],
    metrics: Callable[[], Awaitable[bytes]],
    jobs: Callable[[], Sequence[Job]],
    admin_token: Callable[[], str],
) -> list[HTTPRouteHandler]:
    """`writers`: the calls' writer first, then the feedback events'; `metrics`: renders
    /metrics (sampling first); `admin_token`: the token the CLI must present ("" none)."""
    calls = writers[0]

    def admin(request: Request[Any, Any, Any]) -> bool:
        # Only a caller that can read the token file in the data directory gets in.
        return token_matches(request.headers.get("x-gateway-admin-token", ""), admin_token())

    def forbidden() -> Response[dict[str, Any]]:
        msg = "A valid x-gateway-admin-token header is required."
        return _answer(403, msg, "forbidden", "permission_error")

    @get("/metrics", media_type="text/plain; version=0.0.4; charset=utf-8")
    async def prometheus() -> bytes:
        return await metrics()

    @get("/healthz", media_type=MediaType.JSON, sync_to_thread=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", media_type=MediaType.JSON, sync_to_thread=False)
    def readyz() -> Response[dict[str, object]]:
        # Cached state only, never a call to the store: a busy or hung store must not hold
        # the probe (the `store_ping` job and every insert keep `store_ok` current).
        status, reason = "ready", ""
        log_trouble = next((t for w in writers if (t := w.queue.trouble())), "")
        if log_trouble:
            status, reason = "record_log_unwritable", log_trouble
        elif not calls.migrated:
            status, reason = "store_not_migrated", "the store's tables are not ready yet"
        elif not calls.store_ok:
            status, reason = "store_unavailable", "the store does not answer"
        body = {
            "status": status,
            "reason": reason,
            "store": store.kind,
            "queued_records": calls.depth,
            "last_error": calls.counters.last_error if status != "ready" else "",
            # Detail only: what the background jobs last did (readiness is the above).
            "jobs": {job.name: job.health().to_json() for job in jobs()},
        }
        return Response(body, status_code=200 if status == "ready" else 503)

    @post("/_gateway/sql", media_type=MediaType.TEXT)
    async def admin_sql(request: Request[Any, Any, Any]) -> Response[Any]:
        # Lets `llm-gateway sql` reach the embedded store while the gateway holds it.
        if not admin(request):
            return forbidden()
        sql = (await request.body()).decode("utf-8", "replace")
        fmt = request.query_params.get("default_format", "PrettyCompact")
        try:
            out = await asyncio.to_thread(store.query, sql, fmt)
        except StoreError as e:
            return _answer(400, str(e), "store_error", "invalid_request_error")
        return Response(out, status_code=200)

    @post("/_gateway/insert", media_type=MediaType.TEXT)
    async def admin_insert(request: Request[Any, Any, Any]) -> Response[Any]:
        # Lets CLI jobs (`llm-gateway drift`) write their rows into the store the gateway holds.
        if not admin(request):
            return forbidden()
        table = request.query_params.get("table", "")
        if table not in ADMIN_INSERT_TABLES:
            msg = f"table {table[:64]!r} not allowed"
            return _answer(400, msg, "table_not_allowed", "invalid_request_error")
        try:
            await asyncio.to_thread(store.insert, table, await request.body())
        except StoreError as e:
            return _answer(400, str(e), "store_error", "invalid_request_error")
        return Response(b"ok\n", status_code=200)

    return [prometheus, healthz, readyz, admin_sql, admin_insert]
