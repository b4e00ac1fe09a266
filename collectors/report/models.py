"""`llm-gateway report models`: the models that served an app's calls, side by side, and,
`--by` a segment, each segment's figures with a stratified comparison.

Observational: each model served whoever happened to use it. When one model serves mostly
users with a higher base rate (returning users, one app, one plan), its pooled figures look
better whatever the model does. Segments show that: per segment, each model's figure; then
each model's difference from the most used model, pooled and post-stratified (the segment
differences averaged with the segments' shares of all traffic as weights, over the
segments both models served), and a plain warning when the pooled difference and the
segments' differences disagree in sign (Simpson's paradox), or when the pooled difference
is not there within the segments at all.

Calls are grouped by the model that served them (`upstream_model`, with its provider);
the names clients asked for are a column of their own where they differ. Calls that never
reached a model (refused at the gateway) are counted apart. Units are end users (a call
without one is its own unit); intervals are 95%, for one read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from collectors.experiments.moments import ArmMoments, Arms, read_moments
from collectors.experiments.stats import ratio
from collectors.sql import Query, lit

# the metrics the report shows (keys of moments.RATIOS)
MODEL_METRICS = ("acceptance_rate", "thumbs_up_rate", "mean_rating", "turns_per_session",
                 "cost_per_call")  # fmt: skip
SERVED = "concat(upstream_model, '\\t', provider)"  # an arm: model and provider
COHORT_DAYS = 7
Z95 = 1.959963984540054


def parse_by(by: str | None) -> str | None:
    """`app`, `property:NAME` or `cohort` as given; ValueError naming the forms."""
    if by is None or by in ("app", "cohort"):
        return by
    if by.startswith("property:") and by[9:] and len(by) <= 9 + 64:
        return by
    raise ValueError(f"--by takes app, property:NAME or cohort; got {by!r}")


def segment_sql(by: str | None) -> str:
    """SQL over the source's columns: the segment of a call."""
    if by is None:
        return "''"
    if by == "app":
        return "toString(app)"
    if by == "cohort":
        return (
            "multiIf(end_user = '', 'no user id', "
            f"started_at < first_seen + INTERVAL {COHORT_DAYS} DAY, 'first week', 'returning')"
        )
    return f"properties[{lit(by.removeprefix('property:'))}]"


def _with_first_seen(relation: str) -> str:
    """`relation` (aliased f) with each call's user's first call in the app, over all
    history: their first week is their cohort."""
    return f"""(
    SELECT f.*, fs.first_seen AS first_seen
    FROM {relation}
    LEFT JOIN
    (
        SELECT toString(app) AS fs_app, end_user AS fs_user, min(started_at) AS first_seen
        FROM llm_calls FINAL WHERE end_user != '' GROUP BY app, end_user
    ) AS fs ON fs.fs_app = toString(f.app) AND fs.fs_user = f.end_user
)"""


def model_arms(app: str | None, start: float, end: float, by: str | None = None) -> Arms:
    """The calls of `app` (all apps: None) in [start, end] that reached a model, grouped by
    segment and served model, with end users as units: a user of two models (or two
    segments) is a unit of each."""
    where = [
        "upstream_model != ''",
        f"started_at >= toDateTime64({start:.3f}, 3, 'UTC')",
        f"started_at <= toDateTime64({end:.3f}, 3, 'UTC')",
    ]
    if app is not None:
        where.append(f"app = {lit(app)}")
    cohort = by == "cohort"
    return Arms(
        segment_sql(by),
        SERVED,
        f"concat(if(end_user != '', end_user, request_id), '/', {SERVED})",
        " AND ".join(where),
        "''",
        source=_with_first_seen("llm_call_feedback AS f") if cohort else "llm_call_feedback",
        calls=_with_first_seen("llm_calls AS f FINAL") if cohort else "llm_calls FINAL",
    )


@dataclass(frozen=True, slots=True)
class Figure:
    value: float | None
    ci95: float  # half-width
    units: int
    weight: float  # the metric's denominator: its share of traffic

    @classmethod
    def of(cls, arm: ArmMoments, metric: str) -> Figure:
        s = arm.metrics[metric]
        e = ratio(arm.units, s.sy, s.sx, s.syy, s.sxx, s.sxy)
        ci = Z95 * math.sqrt(e.variance) if e.value is not None else math.inf
        return cls(e.value, ci, arm.units, s.sx)


@dataclass(frozen=True, slots=True)
class Difference:
    """A model's difference from the reference model, pooled and stratified."""

    model: str
    pooled: float | None
    pooled_ci95: float
    stratified: float | None
    stratified_ci95: float
    coverage: float  # share of the traffic in segments both models served
    segments: dict[str, float]  # per segment where both have data
    simpson: bool  # the pooled difference disagrees in sign with the segments
    confounded: bool  # pooled clearly non-zero, stratified not


def stratify(
    metric: str,
    pooled: dict[str, ArmMoments],
    by_segment: dict[str, dict[str, ArmMoments]],
    reference: str,
) -> list[Difference]:
    """Each model's difference from `reference` on `metric`."""
    totals = {s: sum(a.metrics[metric].sx for a in arms.values()) for s, arms in by_segment.items()}
    everything = sum(totals.values())
    ref = Figure.of(pooled[reference], metric)
    out = []
    for model in sorted(pooled):
        if model == reference:
            continue
        me = Figure.of(pooled[model], metric)
        pd = None if me.value is None or ref.value is None else me.value - ref.value
        pci = math.hypot(me.ci95, ref.ci95)
        diffs: dict[str, float] = {}
        num = var = wsum = 0.0
        for seg, arms in sorted(by_segment.items()):
            if model not in arms or reference not in arms:
                continue
            a, b = Figure.of(arms[model], metric), Figure.of(arms[reference], metric)
            if a.value is None or b.value is None or not math.isfinite(a.ci95 + b.ci95):
                continue
            w = totals[seg]
            diffs[seg] = a.value - b.value
            num += w * diffs[seg]
            var += w * w * ((a.ci95 / Z95) ** 2 + (b.ci95 / Z95) ** 2)
            wsum += w
        sd = num / wsum if wsum else None
        sci = Z95 * math.sqrt(var) / wsum if wsum else math.inf
        simpson = bool(
            pd
            and sd is not None
            and (pd * sd < 0 or (len(diffs) >= 2 and all(d * pd < 0 for d in diffs.values())))
        )
        confounded = bool(pd is not None and sd is not None and abs(pd) > pci and abs(sd) <= sci)
        coverage = wsum / everything if everything else 0.0
        out.append(Difference(model, pd, pci, sd, sci, coverage, diffs, simpson, confounded))
    return out


def read(
    query: Query, app: str | None, start: float, end: float, by: str | None
) -> tuple[dict[str, ArmMoments], dict[str, dict[str, ArmMoments]]]:
    """(pooled arms by model, {segment: arms by model}); the segments empty without `by`."""
    pooled = {m.arm: m for m in read_moments(query, model_arms(app, start, end), [end])}
    pooled.pop("", None)
    segments: dict[str, dict[str, ArmMoments]] = {}
    if by is not None:
        for m in read_moments(query, model_arms(app, start, end, by), [end]):
            if m.arm:
                segments.setdefault(m.group, {})[m.arm] = m
    return pooled, segments


def label(arm: str) -> tuple[str, str]:
    """(model, provider) of an arm key."""
    model, _, provider = arm.partition("\t")
    return model, provider
