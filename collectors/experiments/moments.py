"""Per-unit metrics in ClickHouse, summed per arm: what the always-valid tests need.

Every metric is a ratio of per-unit sums, y/x (acceptance: accepted / shown suggestions;
turns per session: turns / sessions; ...). A chatty user is one unit: the query first
builds one row per unit (user, session or request, as the experiment assigns), then per
arm returns n (units) and the sums of y, x, y², x², xy for each metric, from which the
delta method gives the variance of the ratio (stats.py). One query reads any number of
experiments at any number of cut-off times ("looks"), so a simulation of hundreds of
experiments read 20 times each is one pass over the tables.

CUPED (cuped.py): for experiments by user, each unit's calls outside any experiment, in
the same app (and, if the experiment matches one, the same requested model), during
`pre_period_days` before the experiment started give the pre-period numerator y0 and
denominator x0 of its primary metric; per arm the query adds the sums of y0, x0 and their
products with each other and with the unit's primary y and x. A unit without history has
y0 = x0 = 0. The start is the declared `start`, else the experiment's first call.

Units seen under two variants (possible only after a weight change) are left out and
counted under the arm ''.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from collectors.experiments.cuped import PRE_SUMS, PreSums
from collectors.signals import says_yes
from collectors.sql import Query, lit, select
from gateway.experiments.assign import ROUTED_PROPERTY
from gateway.experiments.spec import METRICS, Experiment
from gateway.recording.record import FAILED_SQL

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

# The metrics made of calls alone (no sessions, no thresholds): CUPED takes these.
CALL_LEVEL = ("acceptance_rate", "thumbs_up_rate", "mean_rating", "copy_rate", "share_rate",
              "regenerate_rate", "error_rate", "cost_per_call")  # fmt: skip

# events that end a session (as llm_sessions.ended counts them)
_ENDED = says_yes("session", "ended")

# A call's figures, from a row of llm_call_feedback (experiment and pre-period calls alike).
_CALL_FIGURES = f"""toUInt8{FAILED_SQL} AS failed, latency_ms AS lat, cost_usd AS cost_,
           shown AS f_shown, accepted AS f_accepted,
           toUInt8(thumbs IS NOT NULL) AS f_thumbs, ifNull(thumbs, 0) AS f_thumbs_up,
           toUInt8(ratings > 0) AS f_rated, ifNull(rating, 0) AS f_rating,
           toUInt8(copies > 0) AS f_copied, toUInt8(shares > 0) AS f_shared,
           toUInt8(regenerations > 0) AS f_regenerated"""
# Their sums over a unit's (or a session's) calls: the call-level metrics' y and x.
_CALL_SUMS = """count() AS calls, sum(f_shown) AS shown, sum(f_accepted) AS accepted,
           sum(f_thumbs) AS thumbs, sum(f_thumbs_up) AS thumbs_up,
           sum(f_rated) AS rated, sum(f_rating) AS rating_sum,
           sum(f_copied) AS copied, sum(f_shared) AS shared, sum(f_regenerated) AS regenerated,
           sum(failed) AS failed, countIf(cost_ IS NOT NULL) AS priced,
           sum(ifNull(cost_, 0)) AS cost"""


def _map(d: Mapping[str, str]) -> str:
    if not d:
        return "map()::Map(String, String)"
    return "map(" + ", ".join(f"{lit(k)}, {lit(v)}" for k, v in d.items()) + ")"


def _pick(metric: str, part: int, metrics: Sequence[str]) -> str:
    """SQL: the numerator (part 0) or denominator (1) of the metric named by the SQL
    `metric`, among `metrics`; 0 for any other."""
    cases = ", ".join(f"{metric} = {lit(m)}, toFloat64({RATIOS[m][part]})" for m in metrics)
    return f"multiIf({cases}, 0.)"


@dataclass(frozen=True, slots=True)
class Arms:
    """What to compare: calls (rows of `source`, llm_call_feedback or a query over it)
    grouped into (group, arm), with the unit of each. Experiments: group = experiment,
    arm = variant. Models: group = segment, arm = the served model."""

    group: str  # SQL over the source's columns
    arm: str
    unit: str
    where: str
    baseline: str  # SQL: the arm whose p95 latency defines "slow" for the group ('' none)
    srm_since: str = "0"  # SQL: epoch seconds; the SRM check counts units first seen since
    source: str = "llm_call_feedback"
    calls: str = "llm_calls FINAL"  # the same calls without signals (group, arm... valid)
    # CUPED, each SQL over the group `g`: the primary metric, the pre-period's length in
    # seconds (0: none), the declared start (epoch seconds, 0: the first call), and the
    # requested model pre-period calls must have ('' any).
    primary: str = "''"
    pre_seconds: str = "0"
    start: str = "0"
    pre_model: str = "''"


def experiment_arms(experiments: Sequence[Experiment]) -> Arms:
    units = {e.name: e.unit for e in experiments}
    controls = {e.name: e.control.name for e in experiments}
    since = {e.name: str(e.weights_since.timestamp()) for e in experiments if e.weights_since}
    names = ", ".join(lit(n) for n in units)
    unit = (
        f"multiIf({_map(units)}[experiment] = 'user' AND end_user != '', end_user, "
        f"{_map(units)}[experiment] = 'session' AND session_id != '', session_id, request_id)"
    )
    cuped = [e for e in experiments if e.unit == "user" and e.pre_period_days > 0]
    pre_seconds = {e.name: str(e.pre_period_days * 86400) for e in cuped}
    starts = {e.name: str(e.start.timestamp()) for e in cuped if e.start}
    return Arms(
        "toString(experiment)",
        "toString(variant)",
        unit,
        f"experiment IN ({names}) AND properties[{lit(ROUTED_PROPERTY)}] = ''",
        f"{_map(controls)}[g]",
        f"toFloat64OrZero({_map(since)}[g])",
        primary=f"{_map({e.name: e.primary for e in cuped})}[g]",
        pre_seconds=f"toFloat64OrZero({_map(pre_seconds)}[g])",
        start=f"toFloat64OrZero({_map(starts)}[g])",
        pre_model=f"{_map({e.name: e.match.model for e in cuped if e.match.model})}[g]",
    )


def _pre_sql(arms: Arms) -> str:
    """CTEs `starts` (per group: start, pre-period, primary), `exp_units`, `pre_calls` (the
    calls of the groups' units before the start) and `pre` (per group and unit: y0 and x0
    of the primary metric), then `adjusted` (the units with their y0, x0 and primary
    y, x). Raw calls are read from llm_calls; the signals of the pre-period calls alone
    from the source."""
    if arms.pre_seconds == "0":
        return "adjusted AS (SELECT units.*, 0. AS py, 0. AS px, 0. AS y0, 0. AS x0 FROM units)"
    y0, x0 = (_pick("prim", i, CALL_LEVEL) for i in (0, 1))
    py, px = (_pick("prim", i, list(RATIOS)) for i in (0, 1))
    return f"""starts AS (
    SELECT g AS s_g, any(prim_) AS prim, any(pre_) AS pre_s, any(model_) AS pre_m,
           if(any(start_) > 0, any(start_), toFloat64(min(started_at))) AS start_s
    FROM
    (
        SELECT {arms.group} AS g, {arms.primary} AS prim_, {arms.pre_seconds} AS pre_,
               {arms.pre_model} AS model_, {arms.start} AS start_, started_at
        FROM {arms.calls} WHERE {arms.where}
    )
    GROUP BY g
),
exp_units AS (
    SELECT DISTINCT g AS u_g, unit AS u_unit, app_ AS u_app
    FROM
    (
        SELECT {arms.group} AS g, cityHash64({arms.unit}) AS unit, toString(app) AS app_
        FROM {arms.calls} WHERE {arms.where}
    )
    WHERE g IN (SELECT s_g FROM starts WHERE pre_s > 0)
),
pre_calls AS (
    SELECT u_g AS pg, u_unit AS pu, request_id AS prid
    FROM
    (
        SELECT request_id, cityHash64(end_user) AS cu, toString(app) AS ca,
               toString(request_model) AS cm, toFloat64(started_at) AS ct
        FROM {arms.calls}
        WHERE experiment = '' AND end_user != ''
          AND cityHash64(end_user) IN (SELECT u_unit FROM exp_units)
    ) AS c
    INNER JOIN exp_units ON exp_units.u_unit = c.cu AND exp_units.u_app = c.ca
    INNER JOIN starts ON starts.s_g = exp_units.u_g
    WHERE ct < start_s AND ct >= start_s - pre_s AND (pre_m = '' OR cm = pre_m)
),
pre AS (
    SELECT pg AS p_g, pu AS p_unit, {y0} AS y0, {x0} AS x0
    FROM
    (
        SELECT pg, pu, any(prim) AS prim, {_CALL_SUMS}
        FROM
        (
            SELECT request_id AS frid, {_CALL_FIGURES}
            FROM {arms.source} WHERE request_id IN (SELECT prid FROM pre_calls)
        ) AS f
        INNER JOIN pre_calls ON pre_calls.prid = f.frid
        INNER JOIN starts ON starts.s_g = pre_calls.pg
        GROUP BY pg, pu
    )
),
adjusted AS (
    SELECT units.*, {py} AS py, {px} AS px, pre.y0 AS y0, pre.x0 AS x0
    FROM units
    LEFT JOIN starts ON starts.s_g = units.g
    LEFT JOIN pre ON pre.p_g = units.g AND pre.p_unit = units.unit
)"""


def moments_sql(arms: Arms, looks: Sequence[float], session_idle_minutes: int = 30) -> str:
    """Rows (look, g, arm, units, <metric>_sy, _sx, _syy, _sxx, _sxy ..., the CUPED sums)
    for each look: an epoch time; calls that started after it are not counted at that
    look. ClickHouse runs a WITH subquery again wherever it is named: the source (a view
    joining calls with signals, the costly part) is read once, raw calls from llm_calls."""
    look_list = ", ".join(f"toDateTime64({t:.3f}, 3, 'UTC')" for t in looks)
    moments = ",\n    ".join(
        f"sum({y}) AS {m}_sy, sum({x}) AS {m}_sx, sum({y} * {y}) AS {m}_syy, "
        f"sum({x} * {x}) AS {m}_sxx, sum({x} * {y}) AS {m}_sxy"
        for m, (y, x) in RATIOS.items()
    )
    pre_sums = ", ".join(f"sum({expr}) AS pre_{name}" for name, expr in PRE_SUMS.items())
    # `slow`: slower than the baseline arm's p95 at that look (or the group's own p95).
    return f"""
WITH per_call AS (
    -- one row per call with its signals (the view counts each event once, on one call);
    -- units and sessions as hashes: grouping on them is what the query spends time on
    SELECT {arms.group} AS g, {arms.arm} AS arm, cityHash64({arms.unit}) AS unit,
           request_id AS rid, started_at AS t, cityHash64(session_id) AS sid,
           session_id != '' AS in_session, turn_index AS turn,
           {_CALL_FIGURES},
           in_session AND (session_id IN (
               SELECT session_id FROM llm_feedback WHERE {_ENDED} AND session_id != '')
               OR request_id IN (
               SELECT request_id FROM llm_feedback WHERE {_ENDED} AND request_id != ''))
               AS s_ended
    FROM {arms.source}
    WHERE {arms.where}
),
thresholds AS (
    SELECT look AS th_look, g AS th_g,
           quantileDeterministicIf(0.95)(lat, cityHash64(rid), {arms.baseline} IN ('', arm))
               AS p95
    FROM
    (
        SELECT {arms.group} AS g, {arms.arm} AS arm, request_id AS rid, latency_ms AS lat,
               started_at AS t, arrayJoin([{look_list}]) AS look
        FROM {arms.calls} WHERE {arms.where}
    )
    WHERE t <= look
    GROUP BY look, g
),
sessions AS (
    SELECT look, g, unit, sid, any(in_session) AS has_session, any(arm) AS arm,
           uniqExact(arm) AS arms, {_CALL_SUMS},
           sum(toUInt8(lat > th.p95)) AS slow,
           max(turn) AS max_turn, min(t) AS first_t, max(t) AS last_t,
           max(s_ended) AS ended
    FROM (SELECT *, arrayJoin([{look_list}]) AS look FROM per_call WHERE t <= look) AS looked
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
),
{_pre_sql(arms)}
SELECT toFloat64(look) AS look, g, arm, count() AS units,
    countIf(toFloat64(first_seen) >= {arms.srm_since}) AS srm_units,
    {moments},
    {pre_sums}
FROM adjusted
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
    pre: PreSums = field(default_factory=PreSums)  # CUPED: the primary metric's pre-period


def read_moments(
    query: Query, arms: Arms, looks: Sequence[float], session_idle_minutes: int = 30
) -> list[ArmMoments]:
    out = []
    for r in select(query, moments_sql(arms, looks, session_idle_minutes)):
        am = ArmMoments(float(r["look"]), str(r["g"]), str(r["arm"]), int(r["units"]))
        am.srm_units = int(r["srm_units"])
        for m in RATIOS:
            am.metrics[m] = Sums(*(float(r[f"{m}_{k}"]) for k in ("sy", "sx", "syy", "sxx", "sxy")))
        am.pre = PreSums(**{k: float(r[f"pre_{k}"]) for k in PRE_SUMS})
        out.append(am)
    return out
