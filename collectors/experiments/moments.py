"""Per-unit metrics in ClickHouse, summed per arm: what the always-valid tests need.

Every metric is a ratio of per-unit sums, y/x (acceptance: accepted / shown suggestions;
turns per session: turns / sessions; ...). A chatty user is one unit: the query first
builds one row per unit (user, session or request, as the experiment assigns), then per
arm returns n (units) and the sums of y, x, y², x², xy for each metric, from which the
delta method gives the variance of the ratio (stats.py). One query reads any number of
experiments at any number of cut-off times ("looks"), so a simulation of hundreds of
experiments read 20 times each is one pass over the tables.

Units seen under two variants (possible only after a weight change) are left out and
counted under the arm ''.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from collectors.signals import says_yes
from collectors.sql import Query, lit, select
from gateway.experiments.assign import ROUTED_PROPERTY
from gateway.experiments.spec import METRICS, Experiment
from gateway.record import FAILED_SQL

# metric -> (numerator, denominator), both per-unit columns of the units stage below.
RATIOS: dict[str, tuple[str, str]] = {
    "acceptance_rate": ("accepted", "shown"),
    "thumbs_up_rate": ("thumbs_up", "thumbs"),
    "mean_rating": ("rating_sum", "rated"),
    "copy_rate": ("copied", "calls"),
    "share_rate": ("shared", "calls"),
    "regenerate_rate": ("regenerated", "calls"),
    "turns_per_session": ("turns", "sessions"),
    "abandonment_rate": ("abandoned", "sessions"),
    "error_rate": ("failed", "calls"),
    "p95_latency": ("slow", "calls"),
    "cost_per_call": ("cost", "priced"),
    "cost_per_session": ("session_cost", "sessions"),
}
assert set(RATIOS) == set(METRICS), "every declared metric needs its SQL"

# events that end a session (as llm_sessions.ended counts them)
_ENDED = says_yes("session", "ended")


def _map(d: Mapping[str, str]) -> str:
    if not d:
        return "map()::Map(String, String)"
    return "map(" + ", ".join(f"{lit(k)}, {lit(v)}" for k, v in d.items()) + ")"


@dataclass(frozen=True, slots=True)
class Arms:
    """What to compare: calls (rows of llm_call_feedback) grouped into (group, arm), with
    the unit of each. Experiments: group = experiment, arm = variant. Models of an app:
    group = app, arm = request_model."""

    group: str  # SQL over llm_call_feedback columns
    arm: str
    unit: str
    where: str
    baseline: str  # SQL: the arm whose p95 latency defines "slow" for the group ('' none)
    srm_since: str = "0"  # SQL: epoch seconds; the SRM check counts units first seen since


def experiment_arms(experiments: Sequence[Experiment]) -> Arms:
    units = {e.name: e.unit for e in experiments}
    controls = {e.name: e.control.name for e in experiments}
    since = {e.name: str(e.weights_since.timestamp()) for e in experiments if e.weights_since}
    names = ", ".join(lit(n) for n in units)
    unit = (
        f"multiIf({_map(units)}[experiment] = 'user' AND end_user != '', end_user, "
        f"{_map(units)}[experiment] = 'session' AND session_id != '', session_id, request_id)"
    )
    return Arms(
        "toString(experiment)",
        "toString(variant)",
        unit,
        f"experiment IN ({names}) AND properties[{lit(ROUTED_PROPERTY)}] = ''",
        f"{_map(controls)}[g]",
        f"toFloat64OrZero({_map(since)}[g])",
    )


def model_arms(app: str, since: float | None = None) -> Arms:
    """Every model an app used (calls since the epoch time `since`, if given), with its end
    users as units (calls without one: each its own unit). A user of several models is a
    unit of each."""
    window = "" if since is None else f" AND started_at >= toDateTime64({since:.3f}, 3, 'UTC')"
    return Arms(
        "toString(app)",
        "toString(request_model)",
        "concat(if(end_user != '', end_user, request_id), '/', request_model)",
        f"app = {lit(app)}{window}",
        "''",
    )


def moments_sql(arms: Arms, looks: Sequence[float], session_idle_minutes: int = 30) -> str:
    """Rows (look, g, arm, units, <metric>_sy, _sx, _syy, _sxx, _sxy ...) for each look:
    an epoch time; calls that started after it are not counted at that look."""
    look_list = ", ".join(f"toDateTime64({t:.3f}, 3, 'UTC')" for t in looks)
    moments = ",\n    ".join(
        f"sum({y}) AS {m}_sy, sum({x}) AS {m}_sx, sum({y} * {y}) AS {m}_syy, "
        f"sum({x} * {x}) AS {m}_sxx, sum({x} * {y}) AS {m}_sxy"
        for m, (y, x) in RATIOS.items()
    )
    # `slow`: slower than the baseline arm's p95 at that look (or the group's own p95).
    return f"""
WITH per_call AS (
    -- one row per call with its signals (the view counts each event once, on one call);
    -- units and sessions as hashes: grouping on them is what the query spends time on
    SELECT {arms.group} AS g, {arms.arm} AS arm, cityHash64({arms.unit}) AS unit,
           request_id AS rid, started_at AS t, cityHash64(session_id) AS sid,
           session_id != '' AS in_session, turn_index AS turn,
           toUInt8{FAILED_SQL} AS failed, latency_ms AS lat, cost_usd AS cost_,
           shown AS f_shown, accepted AS f_accepted,
           toUInt8(thumbs IS NOT NULL) AS f_thumbs, ifNull(thumbs, 0) AS f_thumbs_up,
           toUInt8(ratings > 0) AS f_rated, ifNull(rating, 0) AS f_rating,
           toUInt8(copies > 0) AS f_copied, toUInt8(shares > 0) AS f_shared,
           toUInt8(regenerations > 0) AS f_regenerated,
           in_session AND (session_id IN (
               SELECT session_id FROM llm_feedback WHERE {_ENDED} AND session_id != '')
               OR request_id IN (
               SELECT request_id FROM llm_feedback WHERE {_ENDED} AND request_id != ''))
               AS s_ended
    FROM llm_call_feedback
    WHERE {arms.where}
),
looked AS (
    SELECT *, arrayJoin([{look_list}]) AS look FROM per_call WHERE t <= look
),
thresholds AS (
    SELECT look AS th_look, g AS th_g,
           quantileDeterministicIf(0.95)(lat, cityHash64(rid), {arms.baseline} IN ('', arm))
               AS p95
    FROM looked GROUP BY look, g
),
sessions AS (
    SELECT look, g, unit, sid, any(in_session) AS has_session, any(arm) AS arm,
           uniqExact(arm) AS arms,
           count() AS calls, sum(f_shown) AS shown, sum(f_accepted) AS accepted,
           sum(f_thumbs) AS thumbs, sum(f_thumbs_up) AS thumbs_up,
           sum(f_rated) AS rated, sum(f_rating) AS rating_sum,
           sum(f_copied) AS copied, sum(f_shared) AS shared, sum(f_regenerated) AS regenerated,
           sum(failed) AS failed, sum(toUInt8(lat > th.p95)) AS slow,
           countIf(cost_ IS NOT NULL) AS priced, sum(ifNull(cost_, 0)) AS cost,
           max(turn) AS max_turn, min(t) AS first_t, max(t) AS last_t,
           max(s_ended) AS ended
    FROM looked
    LEFT JOIN thresholds AS th ON th.th_look = looked.look AND th.th_g = looked.g
    GROUP BY look, g, unit, sid
),
units AS (
    SELECT look, g, unit, if(uniqExact(arm) > 1 OR max(arms) > 1, '', any(arm)) AS arm,
           sum(calls) AS calls, sum(shown) AS shown, sum(accepted) AS accepted,
           sum(thumbs) AS thumbs, sum(thumbs_up) AS thumbs_up, sum(rated) AS rated,
           sum(rating_sum) AS rating_sum, sum(copied) AS copied, sum(shared) AS shared,
           sum(regenerated) AS regenerated, sum(failed) AS failed, sum(slow) AS slow,
           sum(priced) AS priced, sum(cost) AS cost,
           countIf(has_session) AS sessions, sumIf(max_turn, has_session) AS turns,
           sumIf(cost, has_session) AS session_cost, min(first_t) AS first_seen,
           countIf(has_session AND NOT ended
                   AND last_t < look - INTERVAL {int(session_idle_minutes)} MINUTE) AS abandoned
    FROM sessions
    GROUP BY look, g, unit
)
SELECT toFloat64(look) AS look, g, arm, count() AS units,
    countIf(toFloat64(first_seen) >= {arms.srm_since}) AS srm_units,
    {moments}
FROM units
GROUP BY look, g, arm
ORDER BY look, g, arm
SETTINGS prefer_column_name_to_alias = 1
"""


@dataclass(slots=True)
class Sums:
    """One metric's per-unit sums in one arm."""

    sy: float = 0.0
    sx: float = 0.0
    syy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0


@dataclass(slots=True)
class ArmMoments:
    look: float
    group: str
    arm: str
    units: int
    metrics: dict[str, Sums] = field(default_factory=dict)
    srm_units: int = -1  # units first seen since the last weight change (-1: all)


def read_moments(
    query: Query, arms: Arms, looks: Sequence[float], session_idle_minutes: int = 30
) -> list[ArmMoments]:
    out = []
    for r in select(query, moments_sql(arms, looks, session_idle_minutes)):
        am = ArmMoments(float(r["look"]), str(r["g"]), str(r["arm"]), int(r["units"]))
        am.srm_units = int(r["srm_units"])
        for m in RATIOS:
            am.metrics[m] = Sums(*(float(r[f"{m}_{k}"]) for k in ("sy", "sx", "syy", "sxx", "sxy")))
        out.append(am)
    return out
