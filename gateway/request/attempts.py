"""Attempts: send the call upstream along its route's hops, within the connect and
first-byte deadlines, retrying the next hop on connection errors, timeouts, 429 and 5xx.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import httpx
import msgspec

from gateway import errors
from gateway.config import RetryConfig
from gateway.errors import GatewayError
from gateway.providers import MissingCredentials, Provider
from gateway.providers.wire import Observer, WireAPI
from gateway.record import CallRecord, Outcome
from gateway.request.headers import RequestHeaders
from gateway.routing import Hop

log = logging.getLogger("gateway.proxy")

_encode = msgspec.json.encode
_now = time.perf_counter


def _refused(e: BaseException) -> bool:
    """httpx-aiohttp maps a refused connection to ConnectTimeout; tell the two apart."""
    cause = e.__cause__
    return isinstance(cause, aiohttp.ClientConnectorError) and not isinstance(
        cause, aiohttp.ServerTimeoutError | asyncio.TimeoutError
    )


def upstream_body(
    body: bytes,
    payload: dict[str, Any] | None,
    hop: Hop,
    wire: WireAPI,
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
    provider = hop.provider
    if (
        rec.stream
        and wire.inject_usage
        and provider.cfg.inject_stream_usage
        and provider.dialect == "openai"
    ):
        opts = payload.get("stream_options")
        if not (isinstance(opts, dict) and opts.get("include_usage") is True):
            opts = dict(opts) if isinstance(opts, dict) else {}
            opts["include_usage"] = True
            payload = {**payload, "stream_options": opts}
            observer.drop_usage_chunk = True  # the client did not ask to see it
            changed = True
    return _encode(payload) if changed else body


class Attempts:
    """Forwards calls upstream through the shared transport; counts failed attempts."""

    def __init__(self, retries: RetryConfig, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport
        self.max_attempts = retries.max_attempts
        self.backoff = retries.backoff_ms / 1000.0
        # (provider, reason) -> failed attempts; read by the metrics sampler.
        self.failures: dict[tuple[str, str], int] = {}

    async def forward(
        self,
        method: str,
        path: str,
        query: str,
        headers: RequestHeaders,
        wire: WireAPI,
        body: bytes,
        payload: dict[str, Any] | None,
        hops: tuple[Hop, ...],
        rec: CallRecord,
        observer: Observer,
    ) -> tuple[httpx.Response, Hop, float]:
        """The first usable answer: (response, the hop that gave it, when it was sent)."""
        last_error: GatewayError | None = None
        attempt = 0
        while attempt < self.max_attempts:
            hop = hops[attempt % len(hops)]
            attempt += 1
            if attempt > len(hops) and self.backoff:
                await asyncio.sleep(self.backoff * (2 ** (attempt - len(hops) - 1)))
            provider: Provider = hop.provider
            _note_hop(rec, hop, attempt, hops)
            try:
                creds = provider.credentials(
                    headers.authorization, headers.api_key, headers.x_api_key
                )
            except MissingCredentials as e:
                raise errors.no_credentials(str(e)) from None
            content = upstream_body(body, payload, hop, wire, rec, observer)
            t = provider.cfg.timeouts
            version = provider.version_header(headers.anthropic_version)
            request = httpx.Request(
                method,
                provider.url(path, query, hop.model),
                headers=headers.forward + creds + version,
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
                    rec.outcome, rec.error_type = Outcome.UNREACHABLE, "connection_error"
                    self._failed(rec, hop, "connection_error")
                    continue
                what, secs = (
                    ("connect", t.connect)
                    if isinstance(e, httpx.ConnectTimeout)
                    else ("first byte", t.first_byte)
                )
                last_error = errors.upstream_timeout(what, secs)
                rec.outcome, rec.error_type = Outcome.TIMEOUT, "timeout"
                self._failed(rec, hop, what.replace(" ", "_") + "_timeout")
                continue
            except httpx.TransportError as e:
                last_error = errors.upstream_unreachable(
                    f"{provider.name}: {e or type(e).__name__}"
                )
                rec.outcome, rec.error_type = Outcome.UNREACHABLE, "connection_error"
                self._failed(rec, hop, "connection_error")
                continue
            status = resp.status_code
            if (status == 429 or status >= 500) and attempt < self.max_attempts:
                await resp.aclose()
                rec.error_type = f"http_{status}"
                self._failed(rec, hop, rec.error_type)
                continue
            rec.outcome, rec.error_type = Outcome.OK, ""
            return resp, hop, t_up
        assert last_error is not None
        raise last_error

    def _failed(self, rec: CallRecord, hop: Hop, reason: str) -> None:
        key = (hop.provider.name, reason)
        self.failures[key] = self.failures.get(key, 0) + 1
        log.warning(
            "upstream attempt failed",
            extra={
                "request_id": rec.request_id,
                "provider": hop.provider.name,
                "attempt": rec.attempts,
                "reason": reason,
            },
        )


def _note_hop(rec: CallRecord, hop: Hop, attempt: int, hops: tuple[Hop, ...]) -> None:
    rec.attempts = attempt
    rec.provider = hop.provider.name
    rec.provider_kind = hop.provider.kind
    rec.upstream_model = hop.model
    rec.fallback_used = hop is not hops[0]
