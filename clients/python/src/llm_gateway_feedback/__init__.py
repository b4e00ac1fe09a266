"""Send end-user feedback to the gateway from a server-side app.

    from llm_gateway_feedback import FeedbackClient

    fb = FeedbackClient("http://127.0.0.1:8080", key="sk_fb_...", app="support-bot")
    resp = openai_client.chat.completions.with_raw_response.create(...)
    request_id = resp.headers["x-request-id"]         # the call the feedback is about
    fb.accepted(request_id)
    fb.rating(request_id, 4, comment="good", end_user="u-1")
    fb.session_end(session_id="conv-9")

Each signal method builds one event with a fresh `event_id` and returns that id at once:
the event goes on a bounded queue, and a thread of the client's own sends the queue in
batches, retrying network errors, 429 and 5xx (events are idempotent by `event_id`, so a
retry never counts twice). A slow or absent gateway never slows the app, and the signal
methods never raise: a refused or undeliverable event goes to `on_error(error, events)`
and the `llm_gateway_feedback` logger. What is queued is sent at `flush()`, `close()`, and
interpreter exit. `sync_mode=True` sends each event before returning (still without
raising). `send(events)` posts a batch now and returns the gateway's answer, raising
`FeedbackError` naming the offending field. `AsyncFeedbackClient` has the same methods,
awaitable, each sending its event before it returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import httpx

from llm_gateway_feedback._background import BackgroundSender
from llm_gateway_feedback._events import FeedbackError, event, new_event_id

__all__ = ["AsyncFeedbackClient", "FeedbackClient", "FeedbackError", "event", "new_event_id"]

_RETRY_STATUSES = (429, 500, 502, 503, 504)
R = TypeVar("R")  # what a signal method returns: str, or Awaitable[str] (async)
ErrorHandler = Callable[[FeedbackError, list[dict[str, Any]]], None]
log = logging.getLogger("llm_gateway_feedback")


class _Base(Generic[R]):
    """Event building, the request's shape and error reporting, shared by both clients."""

    def __init__(self, base_url: str, key: str | None, app: str | None, timeout: float,
                 retries: int, on_error: ErrorHandler | None) -> None:  # fmt: skip
        base = base_url.rstrip("/")
        self.url = base if base.endswith("/v1/feedback") else base + "/v1/feedback"
        self.headers = {"content-type": "application/json"}
        if key:
            self.headers["authorization"] = f"Bearer {key}"
        if app:
            self.headers["x-gateway-app"] = app
        self.timeout = timeout
        self.retries = retries
        self.on_error = on_error

    @staticmethod
    def _result(r: httpx.Response) -> dict[str, Any]:
        if r.status_code != 200:
            raise FeedbackError.from_response(r)
        answer: dict[str, Any] = r.json()
        return answer

    @staticmethod
    def _backoff(attempt: int, r: httpx.Response | None) -> float:
        after = r.headers.get("retry-after", "") if r is not None else ""
        return min(float(after), 5.0) if after.isdigit() else 0.2 * 2**attempt

    def _report(self, error: FeedbackError, events: list[dict[str, Any]]) -> None:
        """A failure, to on_error and the log; never raised. The log names the events by
        id only: their fields may hold what users wrote."""
        ids = ", ".join(str(e.get("event_id")) for e in events[:5])
        more = f" and {len(events) - 5} more" if len(events) > 5 else ""
        log.warning("feedback not delivered (%s%s): %s", ids, more, error)
        if self.on_error is not None:
            try:
                self.on_error(error, events)
            except Exception:
                log.exception("feedback: on_error raised")

    def _report_rejected(self, answer: dict[str, Any], events: list[dict[str, Any]]) -> None:
        """Events refused within a batch the gateway took (it keeps the valid ones)."""
        for res in answer.get("results", []):
            if res.get("status") != "accepted" and isinstance(res.get("index"), int):
                self._report(FeedbackError.rejected(res), [events[res["index"]]])

    # The signals, as in feedback.js: each sends one event and returns its event_id (the
    # async client: an awaitable of it). `extra`: session_id, end_user, comment, metadata,
    # source, ts, event_id (to resend an event idempotently).
    def track(self, name: str, request_id: str | None = None, **fields: Any) -> R:
        raise NotImplementedError

    def shown(self, request_id: str, **extra: Any) -> R:
        return self.track("suggestion_shown", request_id, **extra)

    def accepted(self, request_id: str, **extra: Any) -> R:
        return self.track("suggestion_accepted", request_id, **extra)

    def rejected(self, request_id: str, **extra: Any) -> R:
        return self.track("suggestion_rejected", request_id, **extra)

    def copy(self, request_id: str, **extra: Any) -> R:
        return self.track("copy", request_id, **extra)

    def share(self, request_id: str, **extra: Any) -> R:
        return self.track("share", request_id, **extra)

    def regenerate(self, request_id: str, **extra: Any) -> R:
        return self.track("regenerate", request_id, **extra)

    def rating(self, request_id: str, value: float, **extra: Any) -> R:
        return self.track("rating", request_id, value=value, **extra)

    def thumbs(self, request_id: str, up: bool, **extra: Any) -> R:
        return self.track("thumbs", request_id, value=bool(up), **extra)

    def correction(self, request_id: str, text: str, **extra: Any) -> R:
        return self.track("correction", request_id, string_value=text, **extra)

    def defect(self, request_id: str, category: str, **extra: Any) -> R:
        return self.track("defect", request_id, string_value=category, **extra)

    def dwell(self, request_id: str, ms: float, **extra: Any) -> R:
        """Milliseconds the answer was seen (source `implicit` unless given)."""
        return self.track("dwell", request_id, value=ms, **{"source": "implicit", **extra})

    def session_end(self, session_id: str, **extra: Any) -> R:
        return self.track("session_end", None, session_id=session_id, **extra)


class FeedbackClient(_Base[str]):
    """Sends from a background queue (or inline with `sync_mode=True`). Use as a context
    manager, or call close(); events still queued at interpreter exit are sent then.

    `max_queue_size` bounds what waits (a full queue drops new events, reported to
    `on_error`); `flush_at` events at most go in one request, sent when that many are
    queued or `flush_interval` seconds after the first; `retries` retries per batch;
    `shutdown_timeout` bounds the flush at exit."""

    def __init__(self, base_url: str, key: str | None = None, app: str | None = None,
                 timeout: float = 5.0, retries: int = 3, http: httpx.Client | None = None,
                 *, sync_mode: bool = False, max_queue_size: int = 10_000, flush_at: int = 100,
                 flush_interval: float = 0.5, shutdown_timeout: float = 5.0,
                 on_error: ErrorHandler | None = None) -> None:  # fmt: skip
        super().__init__(base_url, key, app, timeout, retries, on_error)
        self._own = http is None
        self.http = http or httpx.Client(timeout=timeout)
        self.sync_mode = sync_mode
        self._sender = BackgroundSender(self._deliver, self._report, max_queue_size,
                                        flush_at, flush_interval)  # fmt: skip
        self._sender.shutdown_timeout = shutdown_timeout

    @property
    def dropped(self) -> int:
        """Events dropped because the queue was full."""
        return self._sender.dropped

    def send(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Post events now (one request, retried); the gateway's answer. Raises
        FeedbackError when the gateway refuses the request or accepts none of the events."""
        r: httpx.Response | None = None
        for attempt in range(self.retries + 1):
            try:
                r = self.http.post(self.url, json=events, headers=self.headers,
                                   timeout=self.timeout)  # fmt: skip
            except httpx.TransportError as e:
                if attempt == self.retries:
                    raise FeedbackError(0, f"gateway unreachable: {e!r}") from e
                r = None
            else:
                if r.status_code not in _RETRY_STATUSES or attempt == self.retries:
                    break
            time.sleep(self._backoff(attempt, r))
        assert r is not None
        return self._result(r)

    def _deliver(self, events: list[dict[str, Any]]) -> None:
        try:
            answer = self.send(events)
        except FeedbackError as e:
            self._report(e, events)
        else:
            self._report_rejected(answer, events)

    def track(self, name: str, request_id: str | None = None, **fields: Any) -> str:
        """Any signal, known or custom; returns its event_id."""
        ev = event(name, request_id, **fields)
        if self.sync_mode:
            self._deliver([ev])
        else:
            self._sender.put(ev)
        return str(ev["event_id"])

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued event was sent or reported; False on timeout."""
        return self._sender.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Send what is queued (waiting at most `timeout` seconds), then release the
        connections. False when events were still unsent at the timeout."""
        done = self._sender.close(timeout)
        if self._own:
            self.http.close()
        return done

    def __enter__(self) -> FeedbackClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncFeedbackClient(_Base[Awaitable[str]]):
    """The same, for asyncio: `await fb.rating(rid, 5)` sends the event before it returns
    (never raising: failures go to on_error). Use `async with`, or aclose()."""

    def __init__(self, base_url: str, key: str | None = None, app: str | None = None,
                 timeout: float = 5.0, retries: int = 3, http: httpx.AsyncClient | None = None,
                 *, on_error: ErrorHandler | None = None) -> None:  # fmt: skip
        super().__init__(base_url, key, app, timeout, retries, on_error)
        self._own = http is None
        self.http = http or httpx.AsyncClient(timeout=timeout)

    async def send(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        r: httpx.Response | None = None
        for attempt in range(self.retries + 1):
            try:
                r = await self.http.post(self.url, json=events, headers=self.headers,
                                         timeout=self.timeout)  # fmt: skip
            except httpx.TransportError as e:
                if attempt == self.retries:
                    raise FeedbackError(0, f"gateway unreachable: {e!r}") from e
                r = None
            else:
                if r.status_code not in _RETRY_STATUSES or attempt == self.retries:
                    break
            await asyncio.sleep(self._backoff(attempt, r))
        assert r is not None
        return self._result(r)

    def track(self, name: str, request_id: str | None = None, **fields: Any) -> Awaitable[str]:
        """Any signal, known or custom; an awaitable of its event_id."""
        ev = event(name, request_id, **fields)

        async def go() -> str:
            try:
                answer = await self.send([ev])
            except FeedbackError as e:
                self._report(e, [ev])
            else:
                self._report_rejected(answer, [ev])
            return str(ev["event_id"])

        return go()

    async def aclose(self) -> None:
        if self._own:
            await self.http.aclose()

    async def __aenter__(self) -> AsyncFeedbackClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
