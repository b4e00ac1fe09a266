"""Serving a stored answer: the upstream's answer as it was recorded, read by the same
observer as a live one (so the row has its usage, finish reason and ids), in the client's
dialect and shape, without touching the upstream client.

- a stream for a streamed call: chunk for chunk as recorded, through the same pass as a
  live stream (the usage chunk filtered out unless the client asked for it, events
  translated when the call is);
- a whole body for a whole call, translated when the call is;
- a stream for a whole call: its events gathered into the body the API would have sent;
- a whole body for a streamed call: told as the stream the API would have sent.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import msgspec

from gateway import errors
from gateway.cache.entry import Entry
from gateway.cache.shapes import SHAPES, Shape
from gateway.providers.translate import Translation, translation_for
from gateway.providers.wire.sse import SSESplitter
from gateway.recording.record import CallRecord, Outcome
from gateway.request.exchange import Exchange
from gateway.request.headers import Headers, own_headers
from gateway.request.streaming import StreamPass, answer_whole

log = logging.getLogger("gateway.cache")

_decode = msgspec.json.decode
_encode = msgspec.json.encode
_now = time.perf_counter
_JSON = b"application/json"
_SSE = b"text/event-stream; charset=utf-8"


def _asked_usage(payload: dict[str, Any]) -> bool:
    opts = payload.get("stream_options")
    return isinstance(opts, dict) and opts.get("include_usage") is True


async def replay(ex: Exchange, entry: Entry) -> bool:
    """Answer the call with `entry` (stored for the route's first target); False when the
    entry cannot take the shape the call asks for (the call then goes upstream)."""
    rec, wire, payload = ex.rec, ex.wire, ex.payload or {}
    hop = ex.hops[0]
    provider = hop.provider
    translation = translation_for(wire, provider)
    shape = SHAPES.get(wire.path)
    converted = None
    if shape is not None and rec.stream != entry.stream:
        try:
            converted = _converted(ex, entry, shape, translation)
        except (*errors.JSON_ERRORS, ValueError, TypeError, KeyError, AttributeError) as e:
            log.warning("stored answer not replayed", extra={"request_id": rec.request_id,
                                                            "error": str(e)[:300]})  # fmt: skip
        if converted is None:
            return False
    ex.hop, ex.translation = hop, translation
    rec.provider, rec.provider_kind = provider.name, provider.kind
    rec.upstream_model, rec.upstream_api, rec.attempts = hop.model, provider.dialect, 0
    rec.outcome, rec.status_code = Outcome.OK, 200
    rec.cost_saved_usd = None  # the writer prices it: what the call would have cost
    observer = ex.observer = (translation.observer if translation else wire.observer)(rec)
    age = (b"age", str(max(0, math.floor(time.time() - entry.stored_at))).encode())
    extra = [*ex.answer_headers, age]
    if converted is None:  # the shape it was stored in
        rec.stream = entry.stream
        if entry.stream:
            observer.drop_usage_chunk = (
                translation is None and wire.inject_usage and not (_asked_usage(payload))
            )
            ctype = entry.content_type.encode() if translation is None else _SSE
            await _replay_stream(ex, entry, own_headers(rec, [(b"content-type", ctype), *extra]))
        else:
            ctype = entry.content_type.encode() or _JSON
            headers = own_headers(rec, [(b"content-type", ctype), *extra])
            await answer_whole(ex, 200, headers, entry.chunks[0])
        return True
    _observe(ex, entry)
    if entry.stream:  # gathered into a whole body, already in the client's dialect
        ex.translation = None
        headers = own_headers(rec, [(b"content-type", _JSON), *extra])
        await answer_whole(ex, 200, headers, converted, observe=False)
    else:
        await _told(ex, converted, own_headers(rec, [(b"content-type", _SSE), *extra]))
    return True


def _converted(
    ex: Exchange, entry: Entry, shape: Shape, translation: Translation | None
) -> bytes | None:
    """The entry in the client's dialect and the other shape: a stream's events gathered
    into a body (read by a scratch observer: the record's reads the upstream's answer),
    or a body told as a stream."""
    payload = ex.payload or {}
    if entry.stream:
        scratch = (translation.observer if translation else ex.wire.observer)(CallRecord(
            request_id=""))  # fmt: skip
        with_usage = {**payload, "stream_options": {"include_usage": True}}
        sp = StreamPass(scratch, translation, with_usage, 0)
        events = SSESplitter()
        gathered = [ev for chunk in entry.chunks for ev in events.feed(sp.passed(chunk))]
        gathered += events.feed(sp.tail() + b"\n\n")
        body = shape.to_body((ev.event, ev.data) for ev in gathered)
        return None if body is None else _encode(body)
    obj = _decode(entry.chunks[0])
    if not isinstance(obj, dict):
        return None
    answer = translation.response(obj, payload) if translation is not None else obj
    return shape.to_stream(answer, _asked_usage(payload))


def _observe(ex: Exchange, entry: Entry) -> None:
    """The record's observer reads the stored answer as the live one was read."""
    observer, translation = ex.observer, ex.translation
    assert observer is not None
    if not entry.stream:
        observer.body(_decode(entry.chunks[0]))
        return
    splitter = translation.splitter() if translation is not None else SSESplitter()
    for chunk in entry.chunks:
        for ev in splitter.feed(chunk):
            observer.event(ev.event, ev.data)
    tail = splitter.flush()
    if tail is not None:
        observer.event(tail.event, tail.data)


async def _replay_stream(ex: Exchange, entry: Entry, headers: Headers) -> None:
    observer, send = ex.observer, ex.send
    assert observer is not None
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    sp = StreamPass(observer, ex.translation, ex.payload or {}, ex.capture)
    outs = []
    for chunk in entry.chunks:
        if sp.filtering:
            out = sp.passed(chunk)
        else:
            out = chunk
            sp.watch(chunk)
        if out:
            outs.append(out)
            sp.keep(out)
    if out := sp.tail():
        outs.append(out)
    if sp.captured:
        ex.rec.response_body = sp.body()
    await _committed(ex, sum(len(o) for o in outs))
    for out in outs:  # chunk for chunk as recorded
        await send({"type": "http.response.body", "body": out, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _told(ex: Exchange, sse: bytes, headers: Headers) -> None:
    rec, send = ex.rec, ex.send
    rec.stream = True
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if ex.capture:
        rec.response_body = sse[: ex.capture].decode("utf-8", "replace")
    await _committed(ex, len(sse))
    await send({"type": "http.response.body", "body": sse, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _committed(ex: Exchange, n: int) -> None:
    """The record appended to the log (and the key settled) before any of the stream goes
    out: a client that stops reading at its terminal event has its row, kill -9 or not."""
    rec = ex.rec
    rec.response_bytes = n
    if rec.ttft_ms is None:
        rec.ttft_ms = (_now() - ex.t0) * 1000.0
    ex.commit()
    await ex.settle()
