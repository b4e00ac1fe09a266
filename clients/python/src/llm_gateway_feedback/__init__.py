"""Send end-user feedback to the gateway from a server-side app.

    from llm_gateway_feedback import FeedbackClient

    fb = FeedbackClient("http://127.0.0.1:8080", key="sk_fb_...", app="support-bot")
    resp = openai_client.chat.completions.with_raw_response.create(...)
    request_id = resp.headers["x-request-id"]         # the call the feedback is about
    fb.accepted(request_id)
    fb.rating(request_id, 4, comment="good", end_user="u-1")
    fb.session_end(session_id="conv-9")

Each convenience method builds one event with a fresh `event_id`, sends it, and returns the
`event_id`. `send()` posts a batch and returns the gateway's answer (`accepted`,
`rejected`, per-event `results`). Events are idempotent by `event_id`, so a request that
failed on the network or with a 5xx/429 is retried as is. A refusal raises `FeedbackError`
naming the offending field. `AsyncFeedbackClient` has the same methods, awaitable.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable
from typing import Any, Generic, TypeVar

import httpx

__all__ = ["AsyncFeedbackClient", "FeedbackClient", "FeedbackError"]

_RETRY_STATUSES = (429, 500, 502, 503, 504)
R = TypeVar("R")  # what a signal method returns: str, or Awaitable[str] (async)


class FeedbackError(Exception):
    """The gateway refused the events (or could not be reached).

    `status` is the HTTP status (0: no answer), `code` the gateway's error code (e.g.
    `invalid_feedback`, `missing_api_key`), `param` the offending field (e.g. `value`,
    `metadata.k`) and `body` the parsed answer."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 param: str | None = None, body: Any = None) -> None:  # fmt: skip
        self.status, self.code, self.param, self.body = status, code, param, body
        self.message = message
        where = f" (field `{param}`)" if param else ""
        super().__init__(f"feedback refused: {status} {code or 'error'}: {message}{where}")

    @classmethod
    def from_response(cls, r: httpx.Response) -> FeedbackError:
        try:
            body = r.json()
        except ValueError:
            return cls(r.status_code, r.text[:200] or r.reason_phrase)
        err = body.get("error") if isinstance(body, dict) else None
        if err is None and isinstance(body, dict):  # a batch with nothing valid
            errors = [x.get("error") or {} for x in body.get("results", [])]
            err = next((e for e in errors if e), {})
        err = err or {}
        return cls(r.status_code, err.get("message", r.reason_phrase), err.get("code"),
                   err.get("param"), body)  # fmt: skip


def new_event_id() -> str:
    return str(uuid.uuid4())


def event(name: str, request_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """One event in the API's JSON form, with a fresh event_id and ts unless given.
    `fields`: value, string_value, session_id, end_user, source, comment, metadata, ts,
    event_id, data_type. Fields set to None are left out."""
    ev: dict[str, Any] = {"event_id": new_event_id(), "ts": time.time(), "name": name}
    if request_id is not None:
        ev["request_id"] = request_id
    ev.update({k: v for k, v in fields.items() if v is not None})
    return ev


class _Base(Generic[R]):
    """Event building and the request's shape, shared by the sync and async clients."""

    def __init__(self, base_url: str, key: str | None = None, app: str | None = None,
                 timeout: float = 5.0, retries: int = 2) -> None:  # fmt: skip
        base = base_url.rstrip("/")
        self.url = base if base.endswith("/v1/feedback") else base + "/v1/feedback"
        self.headers = {"content-type": "application/json"}
        if key:
            self.headers["authorization"] = f"Bearer {key}"
        if app:
            self.headers["x-gateway-app"] = app
        self.timeout = timeout
        self.retries = retries

    @staticmethod
    def _result(r: httpx.Response) -> dict[str, Any]:
        if r.status_code != 200:
            raise FeedbackError.from_response(r)
        return r.json()

    @staticmethod
    def _backoff(attempt: int, r: httpx.Response | None) -> float:
        after = r.headers.get("retry-after", "") if r is not None else ""
        return min(float(after), 5.0) if after.isdigit() else 0.2 * 2**attempt

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
    """Blocking client. Use as a context manager, or call close()."""

    def __init__(self, base_url: str, key: str | None = None, app: str | None = None,
                 timeout: float = 5.0, retries: int = 2,
                 http: httpx.Client | None = None) -> None:  # fmt: skip
        super().__init__(base_url, key, app, timeout, retries)
        self._own = http is None
        self.http = http or httpx.Client(timeout=timeout)

    def send(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Post events (one request); the gateway's answer. Raises FeedbackError when the
        gateway refuses the request or accepts none of the events."""
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

    def track(self, name: str, request_id: str | None = None, **fields: Any) -> str:
        """Any signal, known or custom; returns its event_id."""
        ev = event(name, request_id, **fields)
        self.send([ev])
        return ev["event_id"]

    def close(self) -> None:
        if self._own:
            self.http.close()

    def __enter__(self) -> FeedbackClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncFeedbackClient(_Base[Awaitable[str]]):
    """The same, for asyncio: `await fb.rating(rid, 5)`. Use `async with`, or aclose()."""

    def __init__(self, base_url: str, key: str | None = None, app: str | None = None,
                 timeout: float = 5.0, retries: int = 2,
                 http: httpx.AsyncClient | None = None) -> None:  # fmt: skip
        super().__init__(base_url, key, app, timeout, retries)
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
            await self.send([ev])
            return ev["event_id"]

        return go()

    async def aclose(self) -> None:
        if self._own:
            await self.http.aclose()

    async def __aenter__(self) -> AsyncFeedbackClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
