"""What a drift run measures (metrics, bins, directions, the failed-call predicate) and
its settings (the `drift:` section)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, ClassVar

import msgspec
from msgspec import Meta

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
    "REFUSAL_ERROR_TYPES", "ROW_ORDER", "WORSE_WHEN", "Days", "DriftConfig", "Minutes",
]  # fmt: skip
