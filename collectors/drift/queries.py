"""The SQL of a drift run: four queries whose statistics (PSI, Kolmogorov-Smirnov, the
counts behind the rest) ClickHouse computes."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from collectors.drift.config import (
    DISTRIBUTIONS,
    FAILED_SQL,
    QUANTILES,
    REFUSAL_ERROR_TYPES,
)
from collectors.signals import says_yes
from collectors.sql import lit


def ts_sql(t: datetime) -> str:
    return f"toDateTime64('{t.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]}', 3, 'UTC')"


def groups_in(groups: Iterable[tuple[str, str]]) -> str:
    return "(app, request_model) IN (" + ", ".join(
        f"({lit(a)}, {lit(m)})" for a, m in groups
    ) + ")"  # fmt: skip


def categories_sql(rs: str, cs: str, ce: str) -> str:
    """Per group and window: calls by (finish reason, failed, refused), by response model and
    by system fingerprint, each with its first call (grouping sets: one scan)."""
    return f"""
SELECT toString(app) AS app, toString(request_model) AS request_model, cur,
       grouping(response_model, system_fingerprint) AS kind,
       toString(finish_reason) AS finish_reason, failed, refused,
       toString(response_model) AS response_model,
       toString(system_fingerprint) AS system_fingerprint,
       count() AS calls, toString(min(started_at)) AS first_seen
FROM
(
    SELECT app, request_model, started_at >= {cs} AS cur, started_at, finish_reason,
           toUInt8({FAILED_SQL}) AS failed,
           toUInt8(finish_reason IN ('refusal', 'content_filter')
                   OR match(error_type, {lit(REFUSAL_ERROR_TYPES)})) AS refused,
           response_model, system_fingerprint
    FROM llm_calls FINAL
    WHERE started_at >= {rs} AND started_at < {ce}
)
GROUP BY GROUPING SETS (
    (app, request_model, cur, finish_reason, failed, refused),
    (app, request_model, cur, response_model),
    (app, request_model, cur, system_fingerprint)
)
SETTINGS force_grouping_standard_compatibility = 1"""


def feedback_sql(rs: str, cs: str, ce: str, groups: str) -> str:
    """Per group and window: calls with any feedback, with a suggestion, accepted, shared.
    llm_feedback is read without FINAL: each count is of calls that have at least one such
    event, which a duplicate event cannot change, and FINAL would read every partition (ts is
    not in its sorting key, so the time filter cannot be applied before the merge)."""
    # counted as llm_call_feedback's `shown`, `accepted` and `shares` count them
    shown, accepted, shared = (says_yes("call", c) for c in ("shown", "accepted", "shares"))
    return f"""
SELECT toString(c.app) AS app, toString(c.request_model) AS request_model, c.cur AS cur,
       count() AS with_feedback, countIf(f.shown > 0) AS shown,
       countIf(f.accepted > 0) AS accepted, countIf(f.shared > 0) AS shared
FROM
(
    SELECT request_id, app, request_model, started_at >= {cs} AS cur
    FROM llm_calls FINAL
    WHERE started_at >= {rs} AND started_at < {ce} AND {groups}
) AS c
INNER JOIN
(
    SELECT request_id AS rid, countIf({shown}) AS shown,
           countIf({accepted}) AS accepted, countIf({shared}) AS shared
    FROM llm_feedback
    WHERE request_id != '' AND ts >= {rs} - INTERVAL 1 DAY AND ts < {ce} + INTERVAL 1 DAY
    GROUP BY request_id
) AS f ON f.rid = c.request_id
GROUP BY app, request_model, cur"""


def _values_sql(rs: str, cs: str, ce: str, groups: str) -> str:
    """(app, request_model, metric, cur, value, rid) for every answer and distribution
    metric."""
    tuples = ", ".join(f"({lit(name)}, {expr})" for name, expr in DISTRIBUTIONS)
    return f"""
    SELECT app, request_model, started_at >= {cs} AS cur,
           arrayJoin(arrayFilter(t -> isNotNull(t.2), [{tuples}])) AS mv,
           mv.1 AS metric, assumeNotNull(mv.2) AS value, request_id AS rid
    FROM llm_calls FINAL
    WHERE started_at >= {rs} AND started_at < {ce} AND NOT {FAILED_SQL} AND {groups}"""


def psi_sql(rs: str, cs: str, ce: str, groups: str, eps: float) -> str:
    """PSI per group and metric on the reference window's quantile bins, in SQL: the
    boundaries are the reference values' deciles (a deterministic sample of up to 8,192 of
    them per group: bins need not be exact deciles, only fixed); each value's bin is the
    number of boundaries below it; sumMap aligns the two windows' counts on the bins either
    has. An empty bin's proportion is floored at `eps`."""
    values = _values_sql(rs, cs, ce, groups)
    levels = ", ".join(repr(q) for q in QUANTILES)
    p = f"greatest(c / n_cur, {eps!r})"
    q = f"greatest(r / n_ref, {eps!r})"
    return f"""
SELECT toString(app) AS app, toString(request_model) AS request_model, metric, n_cur, n_ref,
       if(n_cur = 0 OR n_ref = 0, 0, arraySum((c, r) -> ({p} - {q}) * ln({p} / {q}), h.2, h.3))
           AS psi,
       h.1 AS bins, h.2 AS cur_counts, h.3 AS ref_counts, bounds, mean_cur, mean_ref
FROM
(
    SELECT v.app AS app, v.request_model AS request_model, v.metric AS metric,
           countIf(v.cur) AS n_cur, countIf(NOT v.cur) AS n_ref,
           sumMap([toUInt8(arraySum(arrayMap(b -> v.value > b, q.bounds)))],
                  [toUInt64(v.cur)], [toUInt64(NOT v.cur)]) AS h,
           avgIf(v.value, v.cur) AS mean_cur, avgIf(v.value, NOT v.cur) AS mean_ref,
           any(q.bounds) AS bounds
    FROM ({values}) AS v
    INNER JOIN
    (
        SELECT app, request_model, metric,
               arrayDistinct(arrayFilter(x -> NOT isNaN(x),
                   quantilesDeterministicIf({levels})(value, cityHash64(rid), NOT cur)))
                   AS bounds
        FROM ({values})
        GROUP BY app, request_model, metric
    ) AS q ON q.app = v.app AND q.request_model = v.request_model AND q.metric = v.metric
    GROUP BY v.app, v.request_model, v.metric
)"""


def ks_sql(rs: str, cs: str, ce: str, groups: str, pairs: str) -> str:
    # Only (group, metric) pairs with values in both windows: the function refuses an
    # empty sample. Sample 0 is the reference, 1 the current window.
    return f"""
SELECT toString(app) AS app, toString(request_model) AS request_model, metric,
       kolmogorovSmirnovTest('two-sided')(value, toUInt8(cur)) AS ks
FROM ({_values_sql(rs, cs, ce, groups)})
WHERE (app, request_model, metric) IN ({pairs})
GROUP BY app, request_model, metric"""
