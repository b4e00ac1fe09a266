"""Attempts: send the call upstream along its route's hops, within the connect and
first-byte deadlines and the call's total deadline, retrying the next hop on connection
errors, answers that are not HTTP (an invalid status line), timeouts and 5xx (429 when
configured).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from typing import Any

import msgspec

from gateway import errors
from gateway.deadline import Deadline
from gateway.errors import (
    ApiError,
    MissingCredentials,
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamProtocolError,
)
from gateway.providers import Provider
from gateway.providers.translate import translation_for
from gateway.providers.wire import Observer, WireAPI
from gateway.recording.record import CallRecord, Outcome
from gateway.request.exchange import Exchange
from gateway.request.routing import Hop
from gateway.sections import Amount, Positive, Section
from gateway.upstream import UpstreamClient, UpstreamResponse

log = logging.getLogger("gateway.proxy")

_encode = msgspec.json.encode
_now = time.perf_counter


class RetryConfig(Section, frozen=True):
    """The `retries:` section."""

    max_attempts: Positive = 3  # attempts across all targets of a route, the first included
    # first wait before the same provider is tried again; doubled per retry, jittered
    backoff_ms: Amount = 50.0
    # an upstream 429 is retried only when this is on (the client's SDK retries by itself),
    # and then only when its Retry-After fits in the call's deadline
    on_429: bool = False


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
    if hop.model != payload.get("model"):
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
    """Forwards calls upstream through the shared client; counts failed attempts.

    One deadline (the first provider's `timeouts.total`, from when the call arrived) bounds
    every attempt and every wait between them. A retry of the same provider waits a
    jittered exponential backoff, or the upstream's `Retry-After` when it says longer; a
    wait that would not fit in the deadline is not taken, and the last answer goes back.
    """

    def __init__(self, retries: RetryConfig, client: UpstreamClient) -> None:
        self.client = client
        self.max_attempts = retries.max_attempts
        self.backoff = retries.backoff_ms / 1000.0
        self.on_429 = retries.on_429
        # (provider, reason) -> failed attempts; read by the metrics sampler.
        self.failures: dict[tuple[str, str], int] = {}

    async def forward(self, ex: Exchange) -> UpstreamResponse:
        """The first usable answer to the exchange's call along its hops, within its
        deadline; the hop that gave it and when it was sent go to `ex.hop` and `ex.t_up`."""
        loop = ex.loop
        method, path, query, headers, wire = ex.method, ex.path, ex.query, ex.headers, ex.wire
        body, payload, hops, rec, deadline = ex.body, ex.payload, ex.hops, ex.rec, ex.deadline
        observer = ex.observer
        assert observer is not None
        last_error: ApiError | None = None
        wait = 0.0
        attempt = 0
        while attempt < self.max_attempts:
            hop = hops[attempt % len(hops)]
            attempt += 1
            if attempt > len(hops):
                wait = max(wait, self._backoff(attempt - len(hops)))
            if wait:
                await asyncio.sleep(min(wait, max(0.0, deadline - loop.time())))
            wait = 0.0
            provider: Provider = hop.provider
            _note_hop(rec, hop, attempt, hops)
            try:
                creds = provider.credentials(
                    headers.authorization, headers.api_key, headers.x_api_key
                )
            except MissingCredentials as e:
                raise errors.no_credentials(str(e)) from None
            translation = translation_for(wire, provider)
            if translation is None or payload is None:
                content, up_path = upstream_body(body, payload, hop, wire, rec, observer), path
            else:
                content = translation.request(payload, hop.model, provider.cfg)
                up_path = translation.path(rec.stream)
            t = provider.cfg.timeouts
            version = provider.version_header(headers.anthropic_version)
            target = provider.target(up_path, query, hop.model)
            signed = provider.sign(method, provider.origin.root + target, content) if (
                provider.signs) else []  # fmt: skip
            t_up = _now()
            first_byte_by = loop.time() + t.first_byte
            try:
                async with Deadline(loop, min(first_byte_by, deadline)):
                    resp = await self.client.send(
                        provider.origin,
                        method.encode(),
                        target.encode("latin-1"),
                        headers.forward + creds + version + signed,
                        content if method != "GET" else None,
                        t.connect,
                    )
            except (TimeoutError, UpstreamConnectTimeout) as e:
                if loop.time() >= deadline - 0.001:
                    last_error = self._out_of_time(rec, hop, deadline)
                    break
                connect = isinstance(e, UpstreamConnectTimeout)
                what, secs = ("connect", t.connect) if connect else ("first byte", t.first_byte)
                last_error = errors.upstream_timeout(f"{what} timeout, {secs:g}s")
                self._failed(rec, hop, Outcome.TIMEOUT, what.replace(" ", "_") + "_timeout")
                continue
            except UpstreamProtocolError as e:  # an answer that is not HTTP's
                last_error = errors.upstream_protocol_error(provider.name)
                rec.error_message = f"{provider.name}: {e}"[:1000]
                self._failed(rec, hop, Outcome.UPSTREAM_ERROR, errors.PROTOCOL_ERROR)
                continue
            except (UpstreamConnectError, UpstreamClosed) as e:
                last_error = errors.upstream_unreachable(provider.name)
                rec.error_message = f"{provider.name}: {e}"
                self._failed(rec, hop, Outcome.UNREACHABLE, "connection_error")
                continue
            status = resp.status
            if ((status == 429 and self.on_429) or status >= 500) and attempt < self.max_attempts:
                after = retry_after(resp.header_str(b"retry-after"))
                nxt = hops[attempt % len(hops)]
                same = nxt.provider is provider
                if after is None or not same or loop.time() + after < deadline:
                    resp.release()
                    self._failed(rec, hop, rec.outcome, f"http_{status}")
                    wait = after if same and after else 0.0
                    continue
            rec.outcome, rec.error_type = Outcome.OK, ""
            ex.hop, ex.t_up = hop, t_up
            return resp
        assert last_error is not None
        raise last_error

    def _backoff(self, retry: int) -> float:
        """Jittered exponential backoff before the `retry`-th try of the same provider."""
        return float(self.backoff * 2 ** (retry - 1) * (0.5 + random.random() / 2))

    def _out_of_time(self, rec: CallRecord, hop: Hop, deadline: float) -> ApiError:
        total = hop.provider.cfg.timeouts.total
        self._failed(rec, hop, Outcome.TIMEOUT, "deadline")
        n = rec.attempts
        return errors.upstream_timeout(
            f"the call's total deadline of {total:g}s, {n} attempt{'s' if n > 1 else ''}"
        )

    def _failed(self, rec: CallRecord, hop: Hop, outcome: Outcome, reason: str) -> None:
        rec.outcome = outcome
        rec.error_type = "timeout" if outcome is Outcome.TIMEOUT else reason
        if outcome is Outcome.UNREACHABLE:
            rec.error_type = "connection_error"
        rec.attempt_errors.append(f"{hop.provider.name}: {reason}")
        key = (hop.provider.name, reason)
        self.failures[key] = self.failures.get(key, 0) + 1
        log.warning(
            "upstream attempt failed",
            extra={
                "request_id": rec.request_id,
                "provider": hop.provider.name,
                "attempt": rec.attempts,
                "reason": reason,
                "error": rec.error_message[:500],
            },
        )


def retry_after(value: str | None) -> float | None:
    """Seconds an upstream asks to wait: `Retry-After` as seconds or as an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _note_hop(rec: CallRecord, hop: Hop, attempt: int, hops: tuple[Hop, ...]) -> None:
    rec.attempts = attempt
    rec.provider = hop.provider.name
    rec.provider_kind = hop.provider.kind
    rec.upstream_model = hop.model
    rec.upstream_api = hop.provider.dialect
    rec.fallback_used = hop is not hops[0]
