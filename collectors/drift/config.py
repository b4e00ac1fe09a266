"""What a drift run measures (metrics, bins, the failed-call predicate) and its settings."""

from __future__ import annotations

from gateway.config import DriftConfig
from gateway.observability.genai import DURATION_BUCKETS, TOKEN_BUCKETS
from gateway.recording.record import FAILED_SQL

# Token and duration bins are the GenAI histograms' own, so that a bin here is a bucket on
# the Grafana heatmaps. n boundaries make n + 1 bins.

# USD per call, log-spaced at half decades (1, 3, 10, 30, ...) from a millionth of a dollar
# (a tiny embedding call) to $10 (a very long reasoning call); a free call (0) is bin 0.
COST_BUCKETS = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0,
                10.0)  # fmt: skip

# (metric, SQL value over llm_calls, boundaries). Distributions read answers only.
DISTRIBUTIONS: tuple[tuple[str, str, tuple[float, ...]], ...] = (
    ("input_tokens", "toNullable(toFloat64(input_tokens))", TOKEN_BUCKETS),
    ("output_tokens", "toNullable(toFloat64(output_tokens))", TOKEN_BUCKETS),
    ("latency", "toNullable(latency_ms / 1000)", DURATION_BUCKETS),
    ("ttft", "ttft_ms / 1000", DURATION_BUCKETS),
    ("cost", "cost_usd", COST_BUCKETS),
)
RATES = (
    "error_rate",
    "length_rate",
    "content_filter_rate",
    "refusal_rate",
    "acceptance_rate",
    "share_rate",
)
# error_type values (case-insensitive regular expression) that mean "declined on policy".
REFUSAL_ERROR_TYPES = r"(?i)refus|content.?filter|content.?policy|safety|moderation"

LEVELS = ("alert", "warn", "ok", "skipped")
METRICS = (*(d[0] for d in DISTRIBUTIONS), "finish_reason_mix", *RATES, "version_change")
ROW_ORDER = {name: i for i, name in enumerate(("sample_size", *METRICS))}  # rows of a group

__all__ = [
    "COST_BUCKETS", "DISTRIBUTIONS", "DURATION_BUCKETS", "FAILED_SQL", "LEVELS", "METRICS",
    "RATES", "REFUSAL_ERROR_TYPES", "ROW_ORDER", "TOKEN_BUCKETS", "DriftConfig",
]  # fmt: skip
