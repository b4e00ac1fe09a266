"""End-user signals: the event type and its validation (the known signals are in
collectors/signals.py).

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

from collectors.signals import BOOLEAN_DEFAULT, BY_NAME
from gateway.recording.ids import CLIENT_ID, new_request_id


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


SOURCES = ("user", "app", "api", "evaluator", "implicit")
DATA_TYPES = ("numeric", "boolean", "categorical", "text")

NAME_RE = re.compile(r"[a-z][a-z0-9_.:-]{0,63}")
ID_RE = CLIENT_ID
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
    if not NAME_RE.fullmatch(name):
        raise Invalid("name", "`name` must be 1-64 of a-z, 0-9 and _.:- starting with a letter")
    request_id = _text(obj, "request_id", 128, ID_RE)
    session_id = _text(obj, "session_id", 256) or ctx.session_id
    if not request_id and not session_id:
        raise Invalid("request_id", "link the event to a call (`request_id`) or a `session_id`")
    event_id = _text(obj, "event_id", 128, ID_RE) or new_request_id()
    string_value = _text(obj, "string_value", MAX_TEXT)
    comment = _text(obj, "comment", MAX_TEXT)

    known = BY_NAME.get(name)
    data_type = known.data_type if known else ""
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
                value = known.default
            elif value not in (0.0, 1.0):
                raise Invalid("value", f"`{name}` takes true/false (or 1/0)")
        elif data_type == "numeric":
            if value is None:
                raise Invalid("value", f"`{name}` needs a numeric `value`: {known.meaning}")
            if known.bounds is not None and not known.bounds[0] <= value <= known.bounds[1]:
                lo, hi = known.bounds
                within = f">= {lo:g}" if hi == float("inf") else f"between {lo:g} and {hi:g}"
                raise Invalid("value", f"`{name}` must be {within}: {known.meaning}")
        elif data_type in ("categorical", "text") and not string_value:
            raise Invalid("string_value", f"`{name}` needs `string_value`: {known.meaning}")
    else:
        declared = obj.get("data_type")
        if declared is not None:
            if declared not in DATA_TYPES:
                raise Invalid("data_type", f"`data_type` must be one of {', '.join(DATA_TYPES)}")
            data_type = declared
        data_type = data_type or ("text" if string_value else "boolean")
        if value is None and not string_value and data_type == "boolean":
            value = BOOLEAN_DEFAULT

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
