"""OpenTelemetry traces: one CLIENT span per call, with the GenAI semantic-convention
attributes, continuing the client's W3C `traceparent`, exported over OTLP/HTTP.

Off unless the standard variables ask for it (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or `OTEL_TRACES_EXPORTER=otlp`; never with
`OTEL_SDK_DISABLED=true`). When off, nothing here is imported or called.

The span is built when the call's record is committed, with the call's own start and end
times. Its ids are chosen on the request path (`new_ids`) so that the traceparent sent
upstream names the gateway's span as the parent, and the row in `llm_calls` carries the
same `trace_id` and `span_id` for joining traces with SQL.
"""

from __future__ import annotations

import os
from typing import Any

from gateway.observability import genai
from gateway.providers import genai_provider_name
from gateway.recording.record import CallRecord, is_failed


def tracing_requested(env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ) if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "")
    if exporters:
        return "otlp" in exporters
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def new_ids(trace_id: str) -> tuple[str, str]:
    """(trace id, span id) for the gateway's span: the client's trace, or a new one."""
    return trace_id or os.urandom(16).hex(), os.urandom(8).hex()


class Tracer:
    def __init__(self) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
        from opentelemetry.trace import (
            NonRecordingSpan,
            SpanContext,
            SpanKind,
            TraceFlags,
            set_span_in_context,
        )

        class PresetIds(RandomIdGenerator):
            """Hands out the ids chosen on the request path for the next span."""

            next_span = 0
            next_trace = 0

            def generate_span_id(self) -> int:
                v, self.next_span = self.next_span, 0
                return v or super().generate_span_id()

            def generate_trace_id(self) -> int:
                v, self.next_trace = self.next_trace, 0
                return v or super().generate_trace_id()

        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME",
                                                                   "llm-gateway")}).merge(
            OTELResourceDetector().detect()
        )  # fmt: skip
        self._ids = PresetIds()
        self._provider = TracerProvider(resource=resource, id_generator=self._ids)
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._tracer = self._provider.get_tracer("llm-gateway")
        self._kind = SpanKind.CLIENT
        self._ctx: Any = (NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context)

    def record(self, rec: CallRecord) -> None:
        if not rec.span_id:
            return
        NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context = self._ctx
        parent = None
        if rec.parent_span_id:
            parent = set_span_in_context(
                NonRecordingSpan(
                    SpanContext(
                        trace_id=int(rec.trace_id, 16),
                        span_id=int(rec.parent_span_id, 16),
                        is_remote=True,
                        trace_flags=TraceFlags(TraceFlags.SAMPLED),
                    )
                )
            )
        else:
            self._ids.next_trace = int(rec.trace_id, 16)
        self._ids.next_span = int(rec.span_id, 16)
        start = int(rec.started_at * 1e9)
        span = self._tracer.start_span(
            f"{rec.operation} {rec.request_model}".strip(),
            context=parent,
            kind=self._kind,
            start_time=start,
            attributes=_attributes(rec),
        )
        if is_failed(rec):
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, rec.error_type or str(rec.outcome)))
        span.end(end_time=start + int(rec.latency_ms * 1e6))

    def shutdown(self) -> None:
        self._provider.shutdown()


def _attributes(rec: CallRecord) -> dict[str, Any]:
    a: dict[str, Any] = {
        genai.OPERATION_NAME: rec.operation,
        genai.PROVIDER_NAME: genai_provider_name(rec.provider_kind),
        genai.REQUEST_MODEL: rec.request_model,
        "http.response.status_code": rec.status_code,
        "gateway.request_id": rec.request_id,
        "gateway.provider": rec.provider,
        "gateway.outcome": str(rec.outcome),
        "gateway.stream": rec.stream,
    }
    if rec.response_model:
        a[genai.RESPONSE_MODEL] = rec.response_model
    if rec.response_id:
        a[genai.RESPONSE_ID] = rec.response_id
    if rec.finish_reason:
        a[genai.FINISH_REASONS] = [rec.finish_reason]
    if rec.input_tokens or rec.output_tokens:
        a[genai.INPUT_TOKENS] = rec.input_tokens
        a[genai.OUTPUT_TOKENS] = rec.output_tokens
    if rec.cache_read_tokens:
        a[genai.CACHE_READ_TOKENS] = rec.cache_read_tokens
    if rec.cache_write_tokens:
        a[genai.CACHE_CREATION_TOKENS] = rec.cache_write_tokens
    if rec.error_type and is_failed(rec):
        a[genai.ERROR_TYPE] = rec.error_type
    if rec.ttft_ms is not None:
        a[genai.TIME_TO_FIRST_CHUNK_ATTR] = rec.ttft_ms / 1000.0
    if rec.app:
        a["gateway.app"] = rec.app
    return a
