"""The call record: one row of `llm_calls`, built on the request path and written in batches.

Field names are the column names; `encode_line` turns a record into a JSONEachRow line, the one
wire format every store variant (chDB, ClickHouse over HTTP) accepts. `finish` completes a
record when its exchange ends; a `RecordSink` hands it to everything that consumes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any, ClassVar, Protocol

import msgspec

from gateway.recording.tokens import estimate_input, from_chars


class Outcome(StrEnum):
    """How the exchange ended, independently of the HTTP status (stored as these strings)."""

    OK = "ok"
    UPSTREAM_ERROR = "upstream_error"  # upstream answered with an error status or error event
    UPSTREAM_DISCONNECTED = "upstream_disconnected"  # upstream closed mid-response
    CLIENT_DISCONNECTED = "client_disconnected"  # client went away; upstream cancelled
    TIMEOUT = "timeout"
    UNREACHABLE = "upstream_unreachable"  # could not connect to any target
    REJECTED = "rejected"  # the gateway refused the request (bad input, no route, no credentials)
    # Refused by gateway keys and limits (gateway/access), one outcome per reason.
    REFUSED_KEY = "refused_key"  # no key where one is required, or an unknown/revoked key
    REFUSED_MODEL = "refused_model"  # the key may not use the model
    REFUSED_ORIGIN = "refused_origin"  # a browser origin not allowed
    REFUSED_HOST = "refused_host"  # a Host header that is not the gateway's
    REFUSED_RPM = "refused_rpm"
    REFUSED_TPM = "refused_tpm"
    REFUSED_USER_RPM = "refused_user_rpm"
    REFUSED_USER_TPM = "refused_user_tpm"
    REFUSED_CONCURRENCY = "refused_concurrency"
    REFUSED_BUDGET = "refused_budget"
    REFUSED_LIMITER = "refused_limiter"  # the shared limits store was unreachable (fail closed)


REFUSALS = frozenset(o for o in Outcome if o.value.startswith("refused_"))

# A call *failed* when its status is an error or its outcome is not a success one. The
# Python predicate and the SQL expression are both generated from these two facts.
SUCCESS_OUTCOMES = frozenset({Outcome.OK})
FAILED_STATUS = 400
FAILED_SQL = "(status_code >= {} OR outcome NOT IN ({}))".format(
    FAILED_STATUS, ", ".join(f"'{o.value}'" for o in sorted(SUCCESS_OUTCOMES))
)


class CallRecord(msgspec.Struct, kw_only=True):
    request_id: str  # names one call (see gateway/ids.py RequestIds)
    client_request_id: str = ""  # the client's X-Request-Id as sent, when it sent a valid one
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
    provider_kind: str = ""  # a registered provider kind: openai | azure | anthropic | ...
    endpoint: str = ""  # path as the client called it, e.g. /v1/chat/completions
    operation: str = ""  # chat | text_completion | embeddings | responses | models | other
    client_api: str = ""  # the dialect the client spoke: openai | anthropic
    upstream_api: str = ""  # the dialect sent upstream (differs when the call was translated)
    request_model: str = ""  # as the client asked
    upstream_model: str = ""  # as sent upstream after aliases and route rewrites
    response_model: str = ""
    response_id: str = ""
    upstream_request_id: str = ""
    system_fingerprint: str = ""
    stream: bool = False
    status_code: int = 0
    outcome: Outcome = Outcome.OK
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
    # What a response-cache hit saved: the price of the usage its answer carries (None
    # until priced, or when unknown); 0 for a call the cache did not answer.
    cost_saved_usd: float | None = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    upstream_ms: float = 0.0
    overhead_ms: float = 0.0
    attempts: int = 0
    attempt_errors: list[str] = []  # "provider: reason" of each failed attempt, in order
    fallback_used: bool = False
    cache_status: str = ""  # the response cache: hit | miss | bypass | refresh; "" not involved
    request_bytes: int = 0
    response_bytes: int = 0
    user_agent: str = ""
    properties: dict[str, str] = {}
    experiment: str = ""  # the experiment the call was assigned to (gateway/experiments)
    variant: str = ""
    request_body: str = ""
    response_body: str = ""


# Column -> most characters stored. Most of these strings come from the client (headers,
# body) or from an upstream's answer: a row never stores one whole.
STRING_CAPS: dict[str, int] = {
    "request_id": 128, "trace_id": 64, "span_id": 32, "parent_span_id": 32, "app": 128,
    "end_user": 256, "session_id": 256, "provider": 128, "provider_kind": 64,
    "endpoint": 512, "operation": 64, "request_model": 256, "upstream_model": 256,
    "response_model": 256, "response_id": 256, "upstream_request_id": 128,
    "system_fingerprint": 128, "error_type": 128, "error_message": 2000,
    "finish_reason": 64, "price_source": 64, "user_agent": 256,
}  # fmt: skip
PROPERTY_KEY_CAP = 64
PROPERTY_VALUE_CAP = 512
ATTEMPT_ERROR_CAP = 500


def cap_strings(rec: CallRecord) -> None:
    """Cut every stored string to its column's cap."""
    for name, cap in STRING_CAPS.items():
        value = getattr(rec, name)
        if len(value) > cap:
            setattr(rec, name, value[:cap])
    props = rec.properties
    if any(len(k) > PROPERTY_KEY_CAP or len(v) > PROPERTY_VALUE_CAP for k, v in props.items()):
        rec.properties = {k[:PROPERTY_KEY_CAP]: v[:PROPERTY_VALUE_CAP] for k, v in props.items()}
    if rec.attempt_errors:
        rec.attempt_errors = [e[:ATTEMPT_ERROR_CAP] for e in rec.attempt_errors]


def is_failed(rec: CallRecord) -> bool:
    """The one "failed call" predicate (SQL twin: `FAILED_SQL`)."""
    return rec.status_code >= FAILED_STATUS or rec.outcome not in SUCCESS_OUTCOMES


class UsageSource(Protocol):
    """What finishing a record needs to know of the observer that read the answer."""

    usage_seen: bool
    output_chars: int
    estimates_usage: ClassVar[bool]


def finish(
    rec: CallRecord,
    t0: float,
    observer: UsageSource | None,
    payload: dict[str, Any] | None,
    input_estimate: int | None = None,  # of `payload`, when already made (off the loop)
) -> None:
    """Complete a record when its exchange ends: estimated usage, latency, overhead, and
    strings within their caps."""
    cap_strings(rec)
    if observer is not None:
        _estimate_usage(rec, observer, payload, input_estimate)
    rec.latency_ms = (time.perf_counter() - t0) * 1000.0
    # Outside the upstream window everything is the gateway's; inside a stream's
    # window, the time spent handling chunks (already in overhead_ms) is too.
    rec.overhead_ms += max(rec.latency_ms - rec.upstream_ms, 0.0)


def usage_estimate(
    observer: UsageSource, payload: dict[str, Any], input_est: int | None = None
) -> tuple[int, int]:
    """(input, output) tokens of a call whose upstream reported none, as it is recorded
    (and told to a client that reads usage in a translated stream); `input_est`: the
    input's estimate when it was made already (off the loop, for a large body)."""
    return (
        input_est if input_est is not None else estimate_input(payload),
        from_chars(observer.output_chars),
    )


def _estimate_usage(
    rec: CallRecord, observer: UsageSource, payload: dict[str, Any] | None, input_est: int | None
) -> None:
    """Estimate tokens when the upstream reported none for an answer it did give."""
    if observer.usage_seen or not observer.estimates_usage or payload is None:
        return
    if rec.outcome == Outcome.UPSTREAM_ERROR or (
        rec.status_code >= 400 and not observer.output_chars
    ):
        return
    rec.input_tokens, rec.output_tokens = usage_estimate(observer, payload, input_est)
    rec.usage_estimated = True


class RecordSink:
    """The one hand-off of finished records. The durable consumers (the writer: the record's
    line in the log) run when the record is committed, before the answer's last bytes; the
    others (metrics, the tracer) once the answer is out (`after`), so that the client is not
    kept waiting for them. Both run in the loop turn that sends those bytes, before anything
    else can look. Consumers must not block: they run on the request path."""

    __slots__ = ("_after", "_durable")

    def __init__(
        self,
        durable: Sequence[Callable[[CallRecord], object]],
        after: Sequence[Callable[[CallRecord], object]] = (),
    ) -> None:
        self._durable = tuple(durable)
        self._after = tuple(after)

    def __call__(self, rec: CallRecord) -> None:
        for consume in self._durable:
            consume(rec)

    def after(self, rec: CallRecord) -> None:
        for consume in self._after:
            consume(rec)


_encode = msgspec.json.Encoder().encode


def encode_line(rec: msgspec.Struct) -> bytes:
    """One JSONEachRow line: the form a record takes in the log, the queue and the store."""
    return _encode(rec) + b"\n"
