"""Passing the answer through: a whole body, or a stream chunk by chunk as it comes (the
observer reads each event; the usage chunk the gateway asked for on the client's behalf
is filtered out), with the capture of bodies under the capture policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import msgspec

from gateway import errors
from gateway.errors import MalformedStream, UpstreamError
from gateway.providers.wire.sse import SSESplitter
from gateway.recording.record import Outcome
from gateway.request.exchange import Exchange
from gateway.request.headers import response_headers
from gateway.request.routing import Hop
from gateway.upstream import UpstreamResponse

_decode = msgspec.json.decode
_encode = msgspec.json.encode
_now = time.perf_counter


def deadline_message(hop: Hop) -> str:
    return f"the call's total deadline of {hop.provider.cfg.timeouts.total:g}s"


async def relay_whole(ex: Exchange, resp: UpstreamResponse) -> None:
    """A non-streamed answer: read whole (within the call's deadline, a loop time), then
    sent on (in the client's dialect when the call is translated)."""
    rec, observer, hop, send, translation = ex.rec, ex.observer, ex.hop, ex.send, ex.translation
    assert observer is not None and hop is not None
    capture, t_up, deadline = ex.capture, ex.t_up, ex.deadline
    try:
        async with asyncio.timeout_at(deadline):
            data = await resp.read()
    except TimeoutError:
        rec.outcome, rec.error_type = Outcome.TIMEOUT, "timeout"
        raise errors.upstream_timeout(deadline_message(hop)) from None
    except UpstreamError as e:
        rec.outcome = Outcome.UPSTREAM_DISCONNECTED
        rec.error_message = f"the upstream closed the connection: {e or type(e).__name__}"
        raise errors.upstream_unreachable(hop.provider.name, "closed the connection") from None
    rec.upstream_ms = (_now() - t_up) * 1000.0
    status = resp.status
    rec.status_code = status
    rec.response_bytes = len(data)
    obj = None
    if data[:1] in (b"{", b"["):
        with contextlib.suppress(*errors.JSON_ERRORS):
            obj = _decode(data)
    if translation is not None and (obj is not None or status >= 400):
        if status >= 400:
            answer = translation.error(obj, status)
        else:
            assert obj is not None  # a success is translated only when it was JSON
            answer = translation.response(obj, ex.payload or {})
        data = _encode(answer)
    headers = response_headers(resp, rec, ex.answer_headers)
    headers.append((b"content-length", str(len(data)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if capture:
        rec.response_body = data[:capture].decode("utf-8", "replace")
    if status >= 400:
        rec.outcome = Outcome.UPSTREAM_ERROR
        observer.error_body(obj)
        rec.error_type = rec.error_type or f"http_{status}"
    elif obj is not None:
        observer.body(obj)
    ex.commit()
    await ex.settle()
    await send({"type": "http.response.body", "body": data})


async def relay_stream(ex: Exchange, resp: UpstreamResponse) -> None:
    """A streamed answer, passed through chunk by chunk (event by event into the client's
    dialect when the call is translated); a stream that breaks ends with an error event in
    the client's dialect."""
    rec, observer, t0, hop, send = ex.rec, ex.observer, ex.t0, ex.hop, ex.send
    assert observer is not None and hop is not None
    wire, translation, capture, t_up, deadline = (
        ex.wire,
        ex.translation,
        ex.capture,
        ex.t_up,
        ex.deadline,
    )
    rec.status_code = 200
    headers = response_headers(resp, rec, ex.answer_headers)
    if translation is not None:  # the client reads SSE, whatever the upstream's framing
        headers = [h for h in headers if h[0] != b"content-type"]
        headers.append((b"content-type", b"text/event-stream; charset=utf-8"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    splitter = translation.splitter() if translation is not None else SSESplitter()
    convert = translation.stream(ex.payload or {}) if translation is not None else None
    filtering = observer.drop_usage_chunk or convert is not None
    captured: list[bytes] = []
    captured_size = 0
    first_chunk: float | None = None
    n_bytes = 0
    t_last = t_up
    gateway_time = 0.0
    try:
        async with asyncio.timeout_at(deadline):
            async for chunk in resp.chunks():
                t_in = _now()
                if first_chunk is None:
                    first_chunk = t_in
                n_bytes += len(chunk)
                if filtering:
                    out = b"".join(
                        convert.event(ev.event, ev.data) if convert else ev.raw
                        for ev in splitter.feed(chunk)
                        if not observer.event(ev.event, ev.data)
                    )
                    if out:
                        await send({"type": "http.response.body", "body": out, "more_body": True})
                else:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    for ev in splitter.feed(chunk):
                        observer.event(ev.event, ev.data)
                if rec.ttft_ms is None and observer.content_seen:
                    rec.ttft_ms = (t_in - t0) * 1000.0
                if captured_size < capture:
                    captured.append(chunk)
                    captured_size += len(chunk)
                t_last = _now()
                gateway_time += t_last - t_in
        tail = splitter.flush()
        if tail is not None and not observer.event(tail.event, tail.data) and filtering:
            out = convert.event(tail.event, tail.data) if convert else tail.raw
            await send({"type": "http.response.body", "body": out, "more_body": True})
    except TimeoutError:
        rec.outcome, rec.status_code, rec.error_type = Outcome.TIMEOUT, 504, "timeout"
        rec.error_message = f"the stream exceeded {deadline_message(hop)}"
        await send(
            {
                "type": "http.response.body",
                "body": wire.stream_error(rec.error_message, "timeout_error"),
                "more_body": True,
            }
        )
    except UpstreamError as e:  # closed, not HTTP, or a framing that cannot be read
        broken = isinstance(e, MalformedStream)
        rec.outcome, rec.status_code = Outcome.UPSTREAM_DISCONNECTED, 502
        rec.error_type = "malformed_stream" if broken else "upstream_disconnected"
        rec.error_message = (
            str(e) if broken else f"the upstream closed the stream: {e or type(e).__name__}"
        )
        what = "sent a stream that cannot be read" if broken else "closed the stream"
        message = f"The provider `{hop.provider.name}` {what}."
        await send(
            {
                "type": "http.response.body",
                "body": wire.stream_error(message, "upstream_error"),
                "more_body": True,
            }
        )
    finally:
        rec.response_bytes = n_bytes
        rec.upstream_ms = (t_last - t_up) * 1000.0
        if rec.ttft_ms is None and first_chunk is not None and n_bytes:
            rec.ttft_ms = (first_chunk - t0) * 1000.0
        if captured:
            rec.response_body = b"".join(captured)[:capture].decode("utf-8", "replace")
        rec.overhead_ms = gateway_time * 1000.0
    ex.commit()
    await ex.settle()
    await send({"type": "http.response.body", "body": b"", "more_body": False})
