"""What a drift run measures (metrics, bins, the failed-call predicate) and its settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

# Bucket boundaries (upper bounds, inclusive as in OTel/Prometheus histograms), the same as
# gateway.metrics' histograms (a test keeps them equal), so that a bucket here is a bucket on
# the Grafana heatmaps. n boundaries make n + 1 bins.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)  # fmt: skip
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)  # fmt: skip
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
# A call *failed* when this holds; the other calls are *answers*. The one copy in drift.
# lead: replace with gateway.record's constant at merge
FAILED_SQL = "(status_code >= 400 OR outcome != 'ok')"


@dataclass(frozen=True)
class DriftConfig:
    current_window: timedelta = timedelta(hours=1)
    reference_window: timedelta = timedelta(days=7)
    min_calls: int = 200  # per window, for a group (and for each distribution's values)
    min_feedback_calls: int = 100  # per window, for acceptance_rate and share_rate
    psi_warn: float = 0.1
    psi_alert: float = 0.2
    psi_epsilon: float = 1e-4  # floor of a bin's proportion (an empty bin), for PSI
    js_warn: float = 0.05
    js_alert: float = 0.1
    # Family-wise error rates per run, spread over the run's tests (Bonferroni): the chance
    # that traffic that did not change raises any alert (warning) in a run.
    alpha: float = 0.001
    warn_alpha: float = 0.05

    def __post_init__(self) -> None:
        if self.current_window <= timedelta(0) or self.reference_window <= timedelta(0):
            raise ValueError("drift windows must be positive durations")
        if not 0 < self.alpha <= self.warn_alpha < 1:
            raise ValueError("drift: need 0 < alpha <= warn_alpha < 1")
        if self.min_calls < 1 or self.min_feedback_calls < 1:
            raise ValueError("drift: min_calls and min_feedback_calls must be at least 1")
