"""What a drift run measures (metrics, bins, directions, the failed-call predicate) and
its settings."""

from __future__ import annotations

from gateway.config import DriftConfig
from gateway.record import FAILED_SQL

# Distributions are binned at the reference window's own quantiles (deciles of the stored
# values, not histogram buckets): each bin holds a tenth of the reference, so no bin is
# nearly empty by construction and an unchanged distribution gives a PSI near 0 whatever
# its shape or scale. BINS bins, BINS - 1 boundaries (fewer where values tie).
BINS = 10
QUANTILES = tuple(i / BINS for i in range(1, BINS))

# (metric, SQL value over llm_calls). Distributions read answers only.
DISTRIBUTIONS: tuple[tuple[str, str], ...] = (
    ("input_tokens", "toNullable(toFloat64(input_tokens))"),
    ("output_tokens", "toNullable(toFloat64(output_tokens))"),
    ("latency", "toNullable(latency_ms / 1000)"),
    ("ttft", "ttft_ms / 1000"),
    ("cost", "cost_usd"),
)
RATES = (
    "error_rate",
    "length_rate",
    "content_filter_rate",
    "refusal_rate",
    "acceptance_rate",
    "share_rate",
)
# Which way a metric gets worse: +1 when it rises, -1 when it falls; a metric not listed
# (token counts, the finish-reason mix) can drift either way. A change the other way is an
# improvement: reported (level `improved`), not alerted.
WORSE_WHEN: dict[str, int] = {
    "latency": 1, "ttft": 1, "cost": 1, "error_rate": 1, "length_rate": 1,
    "content_filter_rate": 1, "refusal_rate": 1, "acceptance_rate": -1, "share_rate": -1,
}  # fmt: skip
# error_type values (case-insensitive regular expression) that mean "declined on policy".
REFUSAL_ERROR_TYPES = r"(?i)refus|content.?filter|content.?policy|safety|moderation"

LEVELS = ("alert", "warn", "improved", "ok", "skipped")
METRICS = (*(d[0] for d in DISTRIBUTIONS), "finish_reason_mix", *RATES, "version_change")
ROW_ORDER = {name: i for i, name in enumerate(("sample_size", *METRICS))}  # rows of a group

__all__ = [
    "BINS", "DISTRIBUTIONS", "FAILED_SQL", "LEVELS", "METRICS", "QUANTILES", "RATES",
    "REFUSAL_ERROR_TYPES", "ROW_ORDER", "WORSE_WHEN", "DriftConfig",
]  # fmt: skip
