"""Events in the feedback API's JSON form, and the error a refusal becomes."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx


class FeedbackError(Exception):
    """The gateway refused events (or could not be reached).

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

    @classmethod
    def rejected(cls, result: dict[str, Any]) -> FeedbackError:
        """One event the gateway refused within an accepted batch (a `results` entry)."""
        err = result.get("error") or {}
        return cls(422, err.get("message", "rejected"), err.get("code"), err.get("param"), result)


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
