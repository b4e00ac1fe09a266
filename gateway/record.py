"""The call record: one row of `llm_calls`, built on the request path and written in batches.

Field names are the column names; `encode_line` turns a record into a JSONEachRow line, the one
wire format every store variant (chDB, ClickHouse over HTTP) accepts.
"""

from __future__ import annotations

import msgspec

# Outcomes say how the exchange ended, independently of the HTTP status.
OK = "ok"
UPSTREAM_ERROR = "upstream_error"  # upstream answered with an error status or error event
UPSTREAM_DISCONNECTED = "upstream_disconnected"  # upstream closed mid-response
CLIENT_DISCONNECTED = "client_disconnected"  # client went away; upstream cancelled
TIMEOUT = "timeout"
UNREACHABLE = "upstream_unreachable"  # could not connect to any target
REJECTED = "rejected"  # the gateway refused the request (bad input, no route, no credentials)


class CallRecord(msgspec.Struct, kw_only=True):
    request_id: str
    trace_id: str = ""  # W3C trace id: the client's traceparent, or the gateway's own trace
    span_id: str = ""  # the gateway's span for this call (when tracing is on)
    parent_span_id: str = ""  # the client's span, from its traceparent
    started_at: float = 0.0  # epoch seconds; stored as DateTime64(3, 'UTC')
    app: str = ""
    key_id: str = ""  # the gateway key that made the call ("" none)
    key_name: str = ""
    end_user: str = ""
    session_id: str = ""
    turn_index: int = 0
    provider: str = ""  # configured provider name that served the call
    provider_kind: str = ""  # openai | azure | anthropic
    endpoint: str = ""  # path as the client called it, e.g. /v1/chat/completions
    operation: str = ""  # chat | text_completion | embeddings | responses | models | other
    request_model: str = ""  # as the client asked
    upstream_model: str = ""  # as sent upstream after aliases and route rewrites
    response_model: str = ""
    response_id: str = ""
    upstream_request_id: str = ""
    system_fingerprint: str = ""
    stream: bool = False
    status_code: int = 0
    outcome: str = OK
    error_type: str = ""
    error_message: str = ""
    finish_reason: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    usage_estimated: bool = False
    cost_usd: float | None = None
    price_source: str = ""
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    upstream_ms: float = 0.0
    overhead_ms: float = 0.0
    attempts: int = 0
    fallback_used: bool = False
    request_bytes: int = 0
    response_bytes: int = 0
    user_agent: str = ""
    properties: dict[str, str] = {}
    request_body: str = ""
    response_body: str = ""


_encode = msgspec.json.Encoder().encode


def encode_line(rec: msgspec.Struct) -> bytes:
    """One JSONEachRow line: the form a record takes in the log, the queue and the store."""
    return _encode(rec) + b"\n"
