"""End-user signals: the event type, the known signal names, and validation.

An event names a signal (`rating`, `suggestion_accepted`, `dwell`, ...) and links it to a
call (`request_id`, the call's `X-Request-Id`) and/or a conversation (`session_id`).
Validation names the offending field, so a client can fix what it sends; in a batch each
event is judged on its own.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any

import msgspec

from gateway.ids import CLIENT_ID, new_request_id


class FeedbackEvent(msgspec.Struct, kw_only=True, omit_defaults=False):
    """One row of `llm_feedback`."""

    event_id: str
    ts: float  # epoch seconds
    request_id: str = ""
    session_id: str = ""
    end_user: str = ""
    app: str = ""
    name: str
    value: float | None = None
    string_value: str = ""
    data_type: str = "numeric"  # numeric | boolean | categorical | text
    source: str = "user"
    comment: str = ""
    metadata: dict[str, str] = {}


# name -> (data type, what the value means). Values of boolean signals are 1/0.
KNOWN_SIGNALS: dict[str, tuple[str, str]] = {
    "rating": ("numeric", "a score, e.g. 1 to 5"),
    "thumbs": ("boolean", "true (1) for up, false (0) for down"),
    "suggestion_shown": ("boolean", "the suggestion was shown; value defaults to 1"),
    "suggestion_accepted": ("boolean", "the suggestion was accepted; value defaults to 1"),
    "suggestion_rejected": ("boolean", "the suggestion was dismissed; value defaults to 1"),
    "suggestion_retained": ("numeric", "share of the accepted text still there later, 0..1"),
    "copy": ("boolean", "the answer was copied; value defaults to 1"),
    "share": ("boolean", "the answer was shared; value defaults to 1"),
    "regenerate": ("boolean", "the user asked for another answer; value defaults to 1"),
    "correction": ("text", "the user's corrected text, in string_value"),
    "dwell": ("numeric", "milliseconds the answer was visible"),
    "defect": ("categorical", "a category in string_value, e.g. hallucination"),
    "session_end": ("boolean", "the conversation ended; value defaults to 1"),
}
SOURCES = ("user", "app", "api", "evaluator", "implicit")
DATA_TYPES = ("numeric", "boolean", "categorical", "text")

_NAME = re.compile(r"[a-z][a-z0-9_.:-]{0,63}")
_ID = CLIENT_ID
MAX_TEXT = 4000
MAX_META = 32
_FIELDS = frozenset(
    {"event_id", "ts", "request_id", "session_id", "name", "value", "string_value",
     "data_type", "source", "comment", "metadata", "end_user"}
)  # fmt: skip


class Invalid(Exception):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


@dataclass(frozen=True, slots=True)
class Context:
    """What comes from the request rather than the event: headers and key."""

    app: str = ""
    end_user: str = ""
    session_id: str = ""
    forced_source: str | None = None  # browser keys can only say "user" or "implicit"


def _text(obj: dict[str, Any], key: str, limit: int, pattern: re.Pattern[str] | None = None) -> str:
    v = obj.get(key, "")
    if v is None:
        return ""
    if not isinstance(v, str):
        raise Invalid(key, f"`{key}` must be a string")
    if len(v) > limit:
        raise Invalid(key, f"`{key}` is longer than {limit} characters")
    if pattern is not None and v and not pattern.fullmatch(v):
        raise Invalid(key, f"`{key}` has characters outside {pattern.pattern}")
    return v


def validate(obj: Any, ctx: Context, now: float | None = None) -> FeedbackEvent:
    """One event from its JSON form, or Invalid naming the field."""
    if not isinstance(obj, dict):
        raise Invalid("", "each event must be a JSON object")
    unknown = sorted(set(obj) - _FIELDS - {"app"})
    if unknown:
        raise Invalid(unknown[0], f"unknown field `{unknown[0]}`")
    now = time.time() if now is None else now
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise Invalid("name", "`name` is required (e.g. rating, suggestion_accepted, dwell)")
    if not _NAME.fullmatch(name):
        raise Invalid("name", "`name` must be 1-64 of a-z, 0-9 and _.:- starting with a letter")
    request_id = _text(obj, "request_id", 128, _ID)
    session_id = _text(obj, "session_id", 256) or ctx.session_id
    if not request_id and not session_id:
        raise Invalid("request_id", "link the event to a call (`request_id`) or a `session_id`")
    event_id = _text(obj, "event_id", 128, _ID) or new_request_id()
    string_value = _text(obj, "string_value", MAX_TEXT)
    comment = _text(obj, "comment", MAX_TEXT)

    known = KNOWN_SIGNALS.get(name)
    data_type = known[0] if known else ""
    raw = obj.get("value")
    value: float | None
    if isinstance(raw, bool):
        value = 1.0 if raw else 0.0
        data_type = data_type or "boolean"
    elif isinstance(raw, int | float):
        value = float(raw)
        if not math.isfinite(value):
            raise Invalid("value", "`value` must be a finite number")
        data_type = data_type or "numeric"
    elif raw is None:
        value = None
    else:
        raise Invalid("value", "`value` must be a number or a boolean")
    if known:
        if data_type == "boolean":
            if value is None:
                value = 1.0
            elif value not in (0.0, 1.0):
                raise Invalid("value", f"`{name}` takes true/false (or 1/0)")
        elif data_type == "numeric":
            if value is None:
                raise Invalid("value", f"`{name}` needs a numeric `value`: {known[1]}")
            if name == "dwell" and value < 0:
                raise Invalid("value", "`dwell` is milliseconds, >= 0")
            if name == "suggestion_retained" and not 0.0 <= value <= 1.0:
                raise Invalid("value", "`suggestion_retained` is a ratio between 0 and 1")
        elif data_type in ("categorical", "text") and not string_value:
            raise Invalid("string_value", f"`{name}` needs `string_value`: {known[1]}")
    else:
        declared = obj.get("data_type")
        if declared is not None:
            if declared not in DATA_TYPES:
                raise Invalid("data_type", f"`data_type` must be one of {', '.join(DATA_TYPES)}")
            data_type = declared
        data_type = data_type or ("text" if string_value else "boolean")
        if value is None and not string_value and data_type == "boolean":
            value = 1.0

    source = obj.get("source", "user")
    if source not in SOURCES:
        raise Invalid("source", f"`source` must be one of {', '.join(SOURCES)}")
    if ctx.forced_source is not None and source not in ("user", "implicit"):
        raise Invalid("source", "a publishable (browser) key can only send user or implicit events")

    ts = obj.get("ts", now)
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise Invalid("ts", "`ts` must be epoch seconds (a number)")
    if ts > 1e11:
        ts = ts / 1000.0  # epoch milliseconds, as browsers count
    if not now - 30 * 86400 <= ts <= now + 3600:
        raise Invalid("ts", "`ts` must be within the last 30 days (and not in the future)")

    md = obj.get("metadata") or {}
    if not isinstance(md, dict):
        raise Invalid("metadata", "`metadata` must be an object of strings")
    if len(md) > MAX_META:
        raise Invalid("metadata", f"`metadata` has more than {MAX_META} keys")
    metadata: dict[str, str] = {}
    for k, v in md.items():
        if not isinstance(v, str | int | float) or isinstance(v, bool) or len(str(v)) > 1024:
            raise Invalid(f"metadata.{k}", "metadata values must be strings up to 1024 characters")
        if len(k) > 64:
            raise Invalid("metadata", "metadata keys must be up to 64 characters")
        metadata[k] = str(v)

    end_user = ctx.end_user or _text(obj, "end_user", 256)
    app = ctx.app or _text(obj, "app", 128)
    return FeedbackEvent(
        event_id=event_id,
        ts=float(ts),
        request_id=request_id,
        session_id=session_id,
        end_user=end_user,
        app=app,
        name=name,
        value=value,
        string_value=string_value,
        data_type=data_type,
        source=source,
        comment=comment,
        metadata=metadata,
    )


def openapi(server_url: str = "/") -> dict[str, Any]:
    """The OpenAPI description of the feedback endpoint (schemathesis tests against it)."""
    event = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "anyOf": [{"required": ["request_id"]}, {"required": ["session_id"]}],
        "properties": {
            "event_id": {"type": "string", "pattern": f"^{_ID.pattern}$", "maxLength": 128},
            "ts": {"type": "number", "description": "epoch seconds (or milliseconds)"},
            "request_id": {"type": "string", "pattern": f"^{_ID.pattern}$", "maxLength": 128},
            "session_id": {"type": "string", "minLength": 1, "maxLength": 256},
            "name": {"type": "string", "pattern": f"^{_NAME.pattern}$",
                     "description": "a known signal or a custom name: "
                     + ", ".join(KNOWN_SIGNALS)},
            "value": {"type": ["number", "boolean", "null"]},
            "string_value": {"type": "string", "maxLength": MAX_TEXT},
            "data_type": {"type": "string", "enum": list(DATA_TYPES)},
            "source": {"type": "string", "enum": list(SOURCES)},
            "comment": {"type": "string", "maxLength": MAX_TEXT},
            "end_user": {"type": "string", "maxLength": 256},
            "metadata": {"type": "object", "maxProperties": MAX_META,
                         "additionalProperties": {"type": "string", "maxLength": 1024}},
        },
    }  # fmt: skip
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    }
    result = {
        "type": "object",
        "required": ["accepted", "rejected", "results"],
        "properties": {
            "accepted": {"type": "integer"},
            "rejected": {"type": "integer"},
            "results": {"type": "array", "items": {
                        "type": "object", "required": ["index", "status"],
                        "properties": {"index": {"type": "integer"},
                                       "status": {"enum": ["accepted", "rejected"]},
                                       "event_id": {"type": "string"},
                                       "error": error["properties"]["error"]}}},
        },
    }  # fmt: skip

    def resp(schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"description": description,
                "content": {"application/json": {"schema": schema}}}  # fmt: skip

    return {
        "openapi": "3.1.0",
        "info": {"title": "llm-gateway feedback API", "version": "1"},
        "servers": [{"url": server_url}],
        "paths": {
            "/v1/feedback": {
                "post": {
                    "summary": "Record end-user signals (one event or an array)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        event,
                                        {
                                            "type": "array",
                                            "items": event,
                                            "minItems": 1,
                                            "maxItems": 500,
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": resp(result, "all or some events accepted"),
                        "400": resp(error, "the body is not JSON"),
                        "401": resp(error, "a key is required and was missing or wrong"),
                        "403": resp(error, "origin not allowed for this key"),
                        "413": resp(error, "body too large"),
                        "422": resp({"oneOf": [error, result]}, "no event was valid"),
                        "429": resp(error, "rate limited; see Retry-After"),
                    },
                }
            }
        },
    }
