"""One exchange: the client's body, read and parsed once, and the call record's lifecycle
(begun when the request arrives, committed exactly once, before the answer's last bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import msgspec

from gateway import errors
from gateway.access.gate import Ticket
from gateway.access.keys import GatewayKey
from gateway.errors import ApiError
from gateway.providers.translate import Translation
from gateway.providers.wire import OTHER, Observer, WireAPI
from gateway.recording.record import CallRecord, finish
from gateway.recording.tokens import estimate_input
from gateway.request.headers import Headers, RequestHeaders
from gateway.request.routing import Hop
from gateway.server import ON_DISCONNECT

if TYPE_CHECKING:
    from gateway.cache.plan import Plan

log = logging.getLogger("gateway.access")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_decode = msgspec.json.decode

# A body past this size is parsed in a worker thread, not on the loop: megabytes of JSON
# take tens of milliseconds, and a run of them held every other call and /healthz behind
# them. One thread: the loop then shares the interpreter with at most one parser.
LARGE_BODY = 256 * 1024
_PARSER = ThreadPoolExecutor(1, thread_name_prefix="body-parser")


class Exchange:
    """One call's state on the request path: what each step needs of the call travels here,
    from the request as read to the answer as sent."""

    __slots__ = (
        "answer_headers",
        "body",
        "capture",
        "client_gone",
        "deadline",
        "done",
        "fill",
        "headers",
        "hop",
        "hops",
        "input_estimate",
        "key",
        "loop",
        "method",
        "observer",
        "path",
        "payload",
        "query",
        "rec",
        "recorded",
        "send",
        "settler",
        "sink",
        "store_answer",
        "t0",
        "t_up",
        "ticket",
        "translation",
        "watcher",
        "wire",
    )

    def __init__(
        self,
        rec: CallRecord,
        t0: float,
        sink: Callable[[CallRecord], None],
        send: Send,
        method: str,
        headers: RequestHeaders,
        wire: WireAPI,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.rec = rec
        self.t0 = t0
        self.sink = sink
        self.send = send  # the client's side of the connection (ASGI)
        self.method = method
        self.headers = headers
        self.wire = wire
        self.loop = loop or asyncio.get_running_loop()
        self.body = b""  # as the client sent it
        self.capture = 0  # bytes of each body to keep in the row (0: none)
        self.path = ""  # the wire API path called upstream (before translation)
        self.query = ""  # the query string sent upstream
        self.hops: tuple[Hop, ...] = ()  # where the call may go, in order
        self.deadline = 0.0  # the loop time by which the call must have its answer
        self.hop: Hop | None = None  # the hop that answered
        self.t_up = 0.0  # when the answering attempt was sent (perf_counter)
        self.translation: Translation | None = None  # client and upstream dialects differ
        self.client_gone = False  # set by the disconnect watcher (not a shutdown)
        self.done = False
        self.recorded = False
        self.observer: Observer | None = None
        self.payload: dict[str, Any] | None = None
        self.input_estimate: int | None = None  # of a large payload, made with its parse
        self.watcher: asyncio.Task[None] | None = None
        self.key: GatewayKey | None = None  # the caller's gateway key
        self.ticket: Ticket | None = None  # what its limits admitted, to settle
        self.answer_headers: Headers = []  # added to the answer (x-ratelimit-*)
        # Settles a ticket (None: done at once; else what is left to await).
        self.settler: Callable[[Ticket, CallRecord], Awaitable[None] | None] | None = None
        self.fill: Plan | None = None  # the response cache keeps the answer of this miss
        # Stores it (once) as soon as it is whole: a stream's at its terminal event.
        self.store_answer: Callable[[], None] | None = None

    async def settle(self) -> None:
        """Charge the key what the call used (tokens, cost) and give back its slot, once.
        Called after `commit` and before the answer's last bytes, so that the client's
        next call (here or on another replica) sees this one's spend. With Redis, the
        settlement is written before those bytes and its reply is not waited for: the
        client's next call reaches Redis a round trip later."""
        ticket = self.ticket
        if ticket is not None and ticket.adm is not None and self.settler is not None:
            try:
                pending = self.settler(ticket, self.rec)
                if pending is not None:
                    await pending
            except Exception:  # accounting must never break an answer already under way
                log.exception("key usage not settled", extra={"request_id": self.rec.request_id})

    def commit(self) -> None:
        """Finish the record and hand it on, once. Called before the response's last bytes
        go out, so that a client that got a whole answer always has its row."""
        if self.recorded:
            return
        self.recorded = True
        finish(self.rec, self.t0, self.observer, self.payload, self.input_estimate)
        self.sink(self.rec)

    def watch_disconnect(self, receive: Receive, scope: dict[str, Any]) -> None:
        """Have the call cancelled when its client leaves before the answer is complete."""
        task = asyncio.current_task(self.loop)
        assert task is not None
        hook = scope.get("extensions", {}).get(ON_DISCONNECT)
        if hook is not None:  # our server tells us: no task per call
            hook(lambda: self._gone(task))
            return
        # Held by the exchange: the loop keeps only weak references to tasks.
        self.watcher = self.loop.create_task(self._watch(receive, task))

    def _gone(self, task: asyncio.Task[Any]) -> None:
        if not self.done:
            self.client_gone = True
            task.cancel()

    async def _watch(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        # After the response completes the server answers receive() with a disconnect too;
        # the `done` flag tells the two apart.
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                self._gone(task)
                return

    async def parse(self, wire: WireAPI, deployment: str = "") -> str:
        """`read_request` of this exchange's body, off the loop when the body is large."""
        if len(self.body) <= LARGE_BODY:
            return self.read_request(self.body, wire, deployment)
        return await asyncio.get_running_loop().run_in_executor(_PARSER, self._parse_large,
                                                                wire, deployment)  # fmt: skip

    def _parse_large(self, wire: WireAPI, deployment: str) -> str:
        model = self.read_request(self.body, wire, deployment)
        if self.payload is not None:  # walking a large payload is no lighter than parsing it
            self.estimated_input()
        return model

    def estimated_input(self) -> int:
        """The payload's input tokens, estimated once: for a key's reservation and for the
        record of an answer without usage (a large payload's with its parse, off the loop)."""
        if self.input_estimate is None:
            self.input_estimate = estimate_input(self.payload) if self.payload is not None else 0
        return self.input_estimate

    def read_request(self, body: bytes, wire: WireAPI, deployment: str = "") -> str:
        """Parse the body once (when the wire API needs its model); returns the model (an
        Azure client path's deployment names it, whatever the body says)."""
        rec = self.rec
        if wire.needs_model:
            payload = errors.parse_json(body)
            if not isinstance(payload, dict):
                raise errors.bad_json("the body must be a JSON object")
            model = deployment or payload.get("model")
            if model is not None and not isinstance(model, str):
                raise errors.wrong_type("model", "a string")
            if not model:
                raise errors.missing_model()
            rec.request_model = model
            wire.read_request(payload, rec)
            self.payload = payload
            return model
        if body and wire is OTHER and body[:1] == b"{":
            with contextlib.suppress(*errors.JSON_ERRORS):
                maybe = _decode(body)
                if isinstance(maybe, dict) and isinstance(maybe.get("model"), str):
                    self.payload = maybe
                    rec.request_model = maybe["model"]
                    rec.stream = maybe.get("stream") is True
                    return rec.request_model
        return ""

    def name_model(self, deployment: str = "") -> None:
        """For a call refused before its body was parsed (a bad key, a foreign origin):
        the model the body names, so that the refusal is recorded under it. A body that
        names none, or cannot be read, leaves it empty."""
        with contextlib.suppress(ApiError):
            self.read_request(self.body, self.wire, deployment)

    async def reject(self, e: ApiError) -> None:
        """Answer with the gateway's own error, recorded."""
        rec = self.rec
        rec.status_code = e.status
        rec.error_type = rec.error_type or (e.code or e.type)
        rec.error_message = rec.error_message or e.message
        body = self.wire.error_answer(e, rec.request_id)
        await self.send(
            {
                "type": "http.response.start",
                "status": e.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", rec.request_id.encode()),
                    *e.headers,
                    *self.answer_headers,
                ],
            }
        )
        self.commit()
        await self.settle()
        await self.send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, content_length: int, max_body: int) -> bytes | None:
    """The whole request body, within `max_body`; None when the client left while sending."""
    if content_length > max_body:
        raise errors.too_large(max_body)
    msg = await receive()
    if msg["type"] != "http.request":
        return None
    body: bytes = msg.get("body", b"")
    if not msg.get("more_body"):
        if len(body) > max_body:
            raise errors.too_large(max_body)
        return body
    parts = [body]
    size = len(body)
    while msg.get("more_body"):
        msg = await receive()
        if msg["type"] != "http.request":
            return None
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > max_body:
            raise errors.too_large(max_body)
        parts.append(chunk)
    return b"".join(parts)
