"""What a drift run measures (metrics, bins, the failed-call predicate) and its settings
(the `drift:` section)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, ClassVar

import msgspec
from msgspec import Meta

from gateway.observability.genai import DURATION_BUCKETS, TOKEN_BUCKETS
from gateway.recording.record import FAILED_SQL
from gateway.sections import Amount, FieldError, Positive, Section, reader


class Minutes(timedelta):
    """A duration written in the config as a number of minutes."""


class Days(timedelta):
    """A duration written in the config as a number of days."""


class DriftConfig(Section, frozen=True):
    """The drift job: a periodic task in the gateway when enabled, and `llm-gateway drift`
    for a CronJob either way."""

    enabled: bool = False
    interval_minutes: Annotated[float, Meta(ge=0.1)] = 60.0
    current_window: Minutes = msgspec.field(default=Minutes(hours=1), name="current_window_minutes")
    reference_window: Days = msgspec.field(default=Days(days=7), name="reference_window_days")
    min_calls: Positive = 200  # per window, for a group (and for each distribution's values)
    min_feedback_calls: Positive = 100  # per window, for acceptance_rate and share_rate
    psi_warn: Amount = 0.1
    psi_alert: Amount = 0.2
    psi_epsilon: ClassVar[float] = 1e-4  # floor of a bin's proportion (an empty bin), for PSI
    js_warn: Amount = 0.05
    js_alert: Amount = 0.1
    # Family-wise error rates per run, spread over the run's tests (Bonferroni): the chance
    # that traffic that did not change raises any alert (warning) in a run.
    alpha: Annotated[float, Meta(ge=1e-12)] = 0.001
    warn_alpha: Annotated[float, Meta(ge=1e-12)] = 0.05

    def __post_init__(self) -> None:
        if self.current_window <= timedelta(0) or self.reference_window <= timedelta(0):
            raise FieldError("", "drift windows must be positive durations")
        if not 0 < self.alpha <= self.warn_alpha < 1:
            raise FieldError("alpha", "needs alpha <= warn_alpha < 1")
        if self.psi_warn > self.psi_alert:
            raise FieldError("psi_warn", "must not exceed drift.psi_alert")


@reader(Minutes, Days)
def durations(tp: type, value: object) -> timedelta:
    """A number in the config as a `Minutes` or `Days` duration."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"must be a number, got {value!r}")
    unit = timedelta(minutes=1) if tp is Minutes else timedelta(days=1)
    least = 1 if tp is Minutes else 0.01
    if value < least:
        raise ValueError(f"must be >= {least}, got {value!r}")
    duration: timedelta = tp(seconds=(unit * value).total_seconds())
    return duration


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
    "RATES", "REFUSAL_ERROR_TYPES", "ROW_ORDER", "TOKEN_BUCKETS", "Days", "DriftConfig", "Minutes",
]  # fmt: skip
