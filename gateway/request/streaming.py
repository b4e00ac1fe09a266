"""Passing the answer through: a whole body, or a stream chunk by chunk as it comes (the
observer reads each event; the usage chunk the gateway asked for on the client's behalf
is filtered out), with the capture of bodies under the capture policy.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import msgspec

from gateway import errors
from gateway.deadline import Deadline
from gateway.errors import MalformedStream, UpstreamError
from gateway.providers.translate import Translation
from gateway.providers.wire import Observer
from gateway.providers.wire.sse import SSESplitter
from gateway.recording.record import Outcome
from gateway.request.exchange import Exchange
from gateway.request.headers import Headers, response_headers
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
    rec, hop, deadline = ex.rec, ex.hop, ex.deadline
    assert hop is not None
    try:
        if resp.complete:  # the usual case: it came whole with its head, nothing to wait for
            data = await resp.read()
        else:
            async with Deadline(ex.loop, deadline):
                data = await resp.read()
    except TimeoutError:
        rec.outcome, rec.error_type = Outcome.TIMEOUT, "timeout"
        raise errors.upstream_timeout(deadline_message(hop)) from None
    except UpstreamError as e:
        rec.outcome = Outcome.UPSTREAM_DISCONNECTED
        rec.error_message = f"the upstream closed the connection: {e or type(e).__name__}"
        raise errors.upstream_unreachable(hop.provider.name, "closed the connection") from None
    rec.upstream_ms = (_now() - ex.t_up) * 1000.0
    rec.response_bytes = len(data)
    if ex.fill is not None:  # the response cache keeps the upstream's own answer
        ex.fill.keep(data)
    await answer_whole(ex, resp.status, response_headers(resp, rec, ex.answer_headers), data)


async def answer_whole(
    ex: Exchange, status: int, headers: Headers, data: bytes, observe: bool = True
) -> None:
    """Send a whole answer (the upstream's, or one from the response cache), translated
    into the client's dialect when the call is; the observer reads it (unless `observe`
    is off: it has read it already), and the record is committed before the last bytes."""
    rec, observer, send, translation = ex.rec, ex.observer, ex.send, ex.translation
    assert observer is not None
    rec.status_code = status
    obj = None
    if data[:1] in (b"{", b"["):
        with contextlib.suppress(*errors.JSON_ERRORS):
            obj = _decode(data)
    if status < 400 and obj is not None and observe:
        observer.body(obj)  # before translating: the client is told what is recorded
    if translation is not None and (obj is not None or status >= 400):
        if status >= 400:
            answer = translation.error(obj, status)
        else:
            assert obj is not None  # a success is translated only when it was JSON
            answer = translation.response(obj, ex.payload or {}, observer)
        data = _encode(answer)
    headers.append((b"content-length", str(len(data)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if ex.capture:
        rec.response_body = data[: ex.capture].decode("utf-8", "replace")
    if status >= 400:
        rec.outcome = Outcome.UPSTREAM_ERROR
        observer.error_body(obj)
        rec.error_type = rec.error_type or f"http_{status}"
    ex.commit()
    await ex.settle()
    await send({"type": "http.response.body", "body": data})


class StreamPass:
    """A stream on its way to the client: split into events, each read by the observer,
    the usage chunk the gateway asked for on the client's behalf filtered out, the events
    translated into the client's dialect when the call is; and its first bytes kept when
    bodies are captured. Used for the upstream's streams and the response cache's."""

    __slots__ = ("capture", "captured", "convert", "filtering", "observer", "size", "splitter")

    def __init__(
        self,
        observer: Observer,
        translation: Translation | None,
        payload: dict[str, Any],
        capture: int,
    ) -> None:
        self.observer = observer
        self.splitter = translation.splitter() if translation is not None else SSESplitter()
        self.convert = translation.stream(payload, observer) if translation is not None else None
        # Filtered or converted, a stream goes on event by event; else chunk by chunk as it
        # comes, the observer reading it afterwards.
        self.filtering = observer.drop_usage_chunk or self.convert is not None
        self.capture = capture
        self.captured: list[bytes] = []
        self.size = 0

    def passed(self, chunk: bytes) -> bytes:
        """What the client gets of a chunk (when `filtering`)."""
        convert, observer = self.convert, self.observer
        return b"".join(
            convert.event(ev.event, ev.data) if convert else ev.raw
            for ev in self.splitter.feed(chunk)
            if not observer.event(ev.event, ev.data)
        )

    def watch(self, chunk: bytes) -> None:
        """The observer reads a chunk the client got as it is (when not `filtering`)."""
        for ev in self.splitter.feed(chunk):
            self.observer.event(ev.event, ev.data)

    def tail(self) -> bytes:
        """An unterminated last event, for the client (when `filtering`)."""
        tail = self.splitter.flush()
        if tail is None or self.observer.event(tail.event, tail.data) or not self.filtering:
            return b""
        return self.convert.event(tail.event, tail.data) if self.convert else tail.raw

    def keep(self, chunk: bytes) -> None:
        if self.size < self.capture:
            self.captured.append(chunk)
            self.size += len(chunk)

    def body(self) -> str:
        """The captured start of the stream, for the record."""
        return b"".join(self.captured)[: self.capture].decode("utf-8", "replace")


async def relay_stream(ex: Exchange, resp: UpstreamResponse) -> None:
    """A streamed answer, passed through chunk by chunk (event by event into the client's
    dialect when the call is translated); a stream that breaks ends with an error event in
    the client's dialect."""
    rec, observer, t0, hop, send = ex.rec, ex.observer, ex.t0, ex.hop, ex.send
    assert observer is not None and hop is not None
    wire, translation, t_up, deadline, fill = ex.wire, ex.translation, ex.t_up, ex.deadline, ex.fill
    rec.status_code = 200
    headers = response_headers(resp, rec, ex.answer_headers)
    if translation is not None:  # the client reads SSE, whatever the upstream's framing
        headers = [h for h in headers if h[0] != b"content-type"]
        headers.append((b"content-type", b"text/event-stream; charset=utf-8"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    sp = StreamPass(observer, translation, ex.payload or {}, ex.capture)
    filtering = sp.filtering
    first_chunk: float | None = None
    n_bytes = 0
    t_last = t_up
    gateway_time = 0.0

    def figures(t_end: float) -> None:
        # What the record says of the stream as relayed so far; set once, at its commit.
        rec.response_bytes = n_bytes
        rec.upstream_ms = (t_end - t_up) * 1000.0
        if rec.ttft_ms is None and first_chunk is not None and n_bytes:
            rec.ttft_ms = (first_chunk - t0) * 1000.0
        if sp.captured:
            rec.response_body = sp.body()
        rec.overhead_ms = gateway_time * 1000.0

    try:
        async with Deadline(ex.loop, deadline):
            async for chunk in resp.chunks():
                t_in = _now()
                if first_chunk is None:
                    first_chunk = t_in
                n_bytes += len(chunk)
                sp.keep(chunk)
                if fill is not None:  # the response cache keeps the upstream's own chunks
                    fill.keep(chunk)
                if filtering:
                    out = sp.passed(chunk)
                else:
                    out = chunk
                    sp.watch(chunk)  # read before it goes out: it may be the terminal event
                if rec.ttft_ms is None and observer.content_seen:
                    rec.ttft_ms = (t_in - t0) * 1000.0
                if observer.ended and not ex.recorded:
                    # This chunk carries the terminal event (`[DONE]`, `message_stop`,
                    # `response.completed`; the usage came before it): a client may stop
                    # reading there and count the call answered, so its record is
                    # appended to the log, and the key settled, before the event goes
                    # out. What the upstream sends after it is not in the record.
                    gateway_time += _now() - t_in
                    figures(t_in)
                    ex.commit()
                    if ex.store_answer is not None:  # whole: the client may ask it again now
                        ex.store_answer()
                    await ex.settle()
                    t_in = _now()
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                t_last = _now()
                gateway_time += t_last - t_in
        if out := sp.tail():
            await send({"type": "http.response.body", "body": out, "more_body": True})
    except TimeoutError:
        if not ex.recorded:  # past the terminal event the client has its whole answer
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
        if not ex.recorded:
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
        if not ex.recorded:
            figures(t_last)
    # A stream without a terminal event (cut, timed out, or an API without one) is
    # committed here, before the response's end (the chunked terminator) goes out.
    ex.commit()
    await ex.settle()
    await send({"type": "http.response.body", "body": b"", "more_body": False})
