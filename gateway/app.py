"""The composition point: builds the Litestar app from a `Config`.

Owns the lifecycle of the shared pieces — one upstream transport (connection pool), the
store, the batch writer — so that no request constructs any of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.handlers import asgi
from litestar.types import Receive, Scope, Send

from collectors.drift import drift_forever
from collectors.experiments.job import INTERVAL_S, evaluate, gauge_values
from collectors.intake import feedback_handlers
from collectors.views import views
from gateway.access import token_matches
from gateway.access.gate import Gate
from gateway.config import Config
from gateway.errors import StoreBusy, error_envelope
from gateway.experiments.spec import check_models
from gateway.observability.metrics import Metrics
from gateway.observability.tracing import Tracer, tracing_requested
from gateway.providers import provider_for
from gateway.recording.log import RecordLog
from gateway.recording.pricing import Pricer
from gateway.recording.record import CallRecord, RecordSink
from gateway.recording.store import Store, StoreError, open_store
from gateway.recording.writer import BatchWriter, LogQueue, MemoryQueue, Queue
from gateway.request.proxy import Proxy
from gateway.request.routing import Router, exact_names
from gateway.server.http import DateHeader, guarded

log = logging.getLogger("gateway.app")

_PHRASES = {s.value for s in HTTPStatus}
# What CLI jobs (`llm-gateway drift`, `llm-gateway keys`) may write through the gateway.
ADMIN_INSERT_TABLES = frozenset({"llm_drift", "llm_gateway_keys"})


@dataclass
class Gateway:
    """Everything the running gateway holds; one per process."""

    config: Config
    store: Store
    writer: BatchWriter
    proxy: Proxy
    transport: httpx.AsyncBaseTransport
    metrics: Metrics
    feedback_writer: BatchWriter
    tracer: Tracer | None = None
    gate: Gate | None = None
    admin_token: str = ""
    background: list[asyncio.Task[None]] = field(default_factory=list)

    def sample_metrics(self) -> None:
        w, c = self.writer, self.writer.counters
        self.metrics.sample(
            in_flight=self.proxy.in_flight,
            streams=self.proxy.streams_in_flight,
            depth=w.depth,
            log_bytes=w.queue.size_bytes(),
            store_up=c.store_ok,
            pipeline={"accepted": c.accepted, "written": c.written, "replayed": c.replayed,
                      "dropped": c.dropped, "retries": c.retries},
            upstream_failures=self.proxy.upstream_failures,
            log_budget=self.config.log.max_bytes if self.config.log.enabled else 0,
        )  # fmt: skip
        if self.gate is not None:
            self.metrics.access(self.gate.refusals, self.gate.limiter.failures)

    async def sample_forever(self, every: float = 1.0) -> None:
        while True:
            self.sample_metrics()
            await asyncio.sleep(every)


def build_gateway(
    config: Config,
    store: Store | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Gateway:
    store = store if store is not None else open_store(config.store)
    mc = config.metrics
    metrics = Metrics(mc, exact_names(config))
    providers = {name: provider_for(p) for name, p in config.providers.items()}
    router = Router(config, providers)
    check_models(config.experiments, lambda model: router.resolve(model) is not None)
    pricer = Pricer(config.prices)
    price_ids = {name: p.price_as or "" for name, p in config.providers.items()}
    writer = BatchWriter(
        store,
        open_queue(config),
        pricer,
        price_ids,
        batch_size=config.store.batch_size,
        flush_interval=config.store.flush_interval_ms / 1000.0,
        migrate=lambda: config.migrate(store, views),
        on_priced=lambda v, known: metrics.priced(
            v.provider, v.request_model, v.cost_usd, known, v.app
        ),
    )
    # Feedback events take the same durable path, into their own log and table.
    feedback_writer = BatchWriter(
        store,
        open_queue(config, "feedback"),
        None,
        {},
        batch_size=config.store.batch_size,
        flush_interval=config.store.flush_interval_ms / 1000.0,
        migrate=writer.prepare,
        table="llm_feedback",
    )
    transport = transport or AiohttpTransport(
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
        trust_env=False,
    )

    tracer = Tracer() if tracing_requested() else None
    consumers: list[Callable[[CallRecord], object]] = [writer.record]
    if mc.enabled:
        consumers.insert(0, metrics.observe)
    if tracer is not None:
        consumers.append(tracer.record)
    gate = Gate(config.auth)

    def price(rec: CallRecord) -> float | None:  # a key's spend, as its row will be priced
        return pricer.price_call(price_ids.get(rec.provider, ""), rec)[0]

    proxy = Proxy(config, router, transport, RecordSink(*consumers), bool(tracer), gate, price)
    return Gateway(
        config=config,
        store=store,
        writer=writer,
        proxy=proxy,
        transport=transport,
        metrics=metrics,
        tracer=tracer,
        feedback_writer=feedback_writer,
        gate=gate,
    )


def open_queue(config: Config, stream: str = "") -> Queue:
    """The durable log, in the first worker slot (`w0`, `w1`, ...) no live process holds;
    a restarted worker takes its predecessor's slot and replays what it left."""
    if not config.log.enabled:
        return MemoryQueue(config.store.queue_limit)
    lc = config.log
    for slot in range(1024):
        rlog = RecordLog(
            Path(lc.dir) / stream / f"w{slot}",
            segment_bytes=lc.segment_bytes,
            max_bytes=lc.max_bytes,
            fsync_interval=lc.fsync_interval_ms / 1000.0,
        )
        try:
            rlog.open()
        except StoreBusy:
            continue
        return LogQueue(rlog, lc.memory_bytes)
    raise StoreError(f"no free record log slot under {lc.dir}")


async def experiments_forever(gw: Gateway) -> None:
    """Evaluate the declared experiments at start and every INTERVAL_S: gauges into
    /metrics, and the switch to a declared winner where allowed. A failed run is logged
    and tried again at the next interval."""
    while not gw.writer.migrated:  # the columns and views come first (prepare_store)
        await asyncio.sleep(0.5)
    while True:
        try:
            verdicts = await asyncio.to_thread(
                evaluate,
                lambda sql: gw.store.query(sql, "JSONEachRow"),
                gw.config.experiments,
                gw.proxy.assigner,
                gw.config.feedback.session_idle_minutes,
            )
            for v in verdicts.values():
                gw.metrics.experiment(v.experiment, *gauge_values(v))
            log.info(
                "experiments evaluated",
                extra={"verdicts": {k: v.kind for k, v in verdicts.items()}},
            )
        except Exception as e:
            log.error("experiments evaluation failed", extra={"error": str(e)[:500]})
        await asyncio.sleep(INTERVAL_S)


async def prepare_store(gw: Gateway) -> None:
    """Migrate the store, retrying with a backoff until it answers."""
    backoff = 0.5
    while True:
        try:
            await asyncio.to_thread(gw.writer.prepare)
            return
        except StoreError as e:
            log.error("store not migrated; will retry", extra={"error": str(e)[:500],
                                                               "retry_in_s": backoff})  # fmt: skip
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 30.0)


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


def forbidden() -> Response[dict[str, Any]]:
    msg = "A valid x-gateway-admin-token header is required."
    return Response(error_envelope(msg, "forbidden", type_="permission_error"), status_code=403,
                    media_type=MediaType.JSON)  # fmt: skip


def bad_request(message: str, code: str) -> Response[dict[str, Any]]:
    return Response(error_envelope(message, code), status_code=400, media_type=MediaType.JSON)


def create_app(gw: Gateway) -> Litestar:
    async def on_startup() -> None:
        # Listen at once: migrations run in the background (the store may be slow or down);
        # /readyz says 503 until they are done, and calls are kept in the log meanwhile.
        gw.background.append(asyncio.get_running_loop().create_task(prepare_store(gw)))
        if gw.gate is not None and gw.store.kind != "disabled":
            # Keys are read now (config keys hold meanwhile), then every auth.refresh_seconds.
            gw.background.append(
                asyncio.get_running_loop().create_task(gw.gate.refresh_forever(gw.store.query))
            )
        gw.writer.start()
        gw.feedback_writer.start()
        gw.background.append(asyncio.get_running_loop().create_task(gw.sample_forever()))
        if gw.config.drift.enabled:
            drift = drift_forever(
                lambda sql: gw.store.query(sql, "JSONEachRow"),
                gw.store.insert,
                gw.metrics.drift,
                gw.config.drift,
            )
            gw.background.append(asyncio.get_running_loop().create_task(drift))
        if gw.config.experiments:
            gw.background.append(asyncio.get_running_loop().create_task(experiments_forever(gw)))
        log.info(
            "gateway started",
            extra={"store": gw.store.kind, "providers": sorted(gw.config.providers)},
        )

    async def on_shutdown() -> None:
        for task in gw.background:
            task.cancel()
        await gw.writer.stop()
        await gw.feedback_writer.stop()
        if gw.tracer is not None:
            await asyncio.to_thread(gw.tracer.shutdown)  # exports what is batched
        if gw.gate is not None:
            await gw.gate.close()
        await gw.transport.aclose()
        gw.store.close()

    def admin(request: Request[Any, Any, Any]) -> bool:
        # Only a caller that can read the token file in the data directory gets in.
        return token_matches(request.headers.get("x-gateway-admin-token", ""), gw.admin_token)

    @asgi("/v1", is_mount=True, copy_scope=False)
    async def v1(scope: Scope, receive: Receive, send: Send) -> None:
        await gw.proxy(scope, receive, send)  # type: ignore[arg-type]  # plain ASGI dicts

    @asgi("/openai", is_mount=True, copy_scope=False)
    async def azure_paths(scope: Scope, receive: Receive, send: Send) -> None:
        # Azure OpenAI SDK paths (/openai/deployments/{deployment}/..., /openai/v1/...)
        await gw.proxy(scope, receive, send)  # type: ignore[arg-type]  # plain ASGI dicts

    @get("/metrics", media_type="text/plain; version=0.0.4; charset=utf-8", sync_to_thread=False)
    def prometheus() -> bytes:
        gw.sample_metrics()
        return gw.metrics.render()

    @get("/healthz", media_type=MediaType.JSON, sync_to_thread=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", media_type=MediaType.JSON)
    async def readyz() -> Response[dict[str, object]]:
        status, reason = "ready", ""
        log_trouble = gw.writer.queue.trouble() or gw.feedback_writer.queue.trouble()
        if log_trouble:
            status, reason = "record_log_unwritable", log_trouble
        elif not gw.writer.migrated:
            status, reason = "store_not_migrated", "the store's tables are not ready yet"
        elif not await asyncio.to_thread(gw.store.ping):
            status, reason = "store_unavailable", "the store does not answer"
        body = {
            "status": status,
            "reason": reason,
            "store": gw.store.kind,
            "queued_records": gw.writer.depth,
            "last_error": gw.writer.counters.last_error if status != "ready" else "",
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
            out = await asyncio.to_thread(gw.store.query, sql, fmt)
        except StoreError as e:
            return bad_request(str(e), "store_error")
        return Response(out, status_code=200)

    feedback = feedback_handlers(
        gw.config.feedback, gw.feedback_writer.record, gw.metrics.feedback_event
    )

    @post("/_gateway/insert", media_type=MediaType.TEXT)
    async def admin_insert(request: Request[Any, Any, Any]) -> Response[Any]:
        # Lets CLI jobs (`llm-gateway drift`) write their rows into the store the gateway holds.
        if not admin(request):
            return forbidden()
        table = request.query_params.get("table", "")
        if table not in ADMIN_INSERT_TABLES:
            return bad_request(f"table {table[:64]!r} not allowed", "table_not_allowed")
        try:
            await asyncio.to_thread(gw.store.insert, table, await request.body())
        except StoreError as e:
            return bad_request(str(e), "store_error")
        return Response(b"ok\n", status_code=200)

    return Litestar(
        route_handlers=[
            v1,
            azure_paths,
            prometheus,
            healthz,
            readyz,
            admin_sql,
            admin_insert,
            *feedback,
        ],
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        openapi_config=None,
        exception_handlers={HTTPException: own_error, Exception: own_error},
        logging_config=None,  # ours is JSON, set up by the CLI
        debug=False,
    )


def app_from_env() -> DateHeader:
    """App factory for worker processes (`server.workers` > 1): each worker builds its own
    gateway (own upstream pool, own record log slot) from `$LLM_GATEWAY_CONFIG`."""
    from gateway.config import load_config
    from gateway.observability.logs import setup_logging

    config = load_config()
    setup_logging(config.log_level)
    return guarded(create_app(build_gateway(config)))
