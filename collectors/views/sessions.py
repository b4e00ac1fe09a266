"""`llm_sessions`: one row per conversation (non-empty session_id), from its calls and its
signals.

A signal belongs to a session through its own session_id or, when that is empty, through
its call. first_at/last_at span calls and signals; abandoned: not ended and idle for
`session_idle_minutes`. turns: the highest turn_index sent; regenerated_turns: calls that
re-sent a turn already sent (regenerations seen on the wire).
"""

from __future__ import annotations

from collectors.signals import aggregate, columns, finish, says_yes
from collectors.views.events import events_sql


def sessions_sql(db: str, idle_minutes: int) -> str:
    signal_cols = "".join(
        f"    {finish(c, aggregate(c))} AS {c.name},\n" for c in columns("session")
    )
    ended = says_yes("session", "ended", name="n", value="v")
    return f"""SELECT
    s AS session_id,
    if(countIf(is_call = 1) > 0, argMinIf(a, t, is_call = 1), argMin(a, t)) AS app,
    if(countIf(is_call = 1 AND u != '') > 0, argMinIf(u, t, is_call = 1 AND u != ''),
       argMinIf(u, t, u != '')) AS end_user,
    max(ti) AS turns,
    countIf(is_call = 1) AS calls,
    min(t) AS first_at,
    max(t) AS last_at,
    (toUnixTimestamp64Milli(max(t)) - toUnixTimestamp64Milli(min(t))) / 1000 AS duration_s,
    toUInt64(countIf(is_call = 1) - uniqExactIf(ti, is_call = 1)) AS regenerated_turns,
    countIf(is_call = 0) AS events,
{signal_cols}    toUInt8(countIf({ended}) = 0
            AND max(t) < now64(3) - INTERVAL {int(idle_minutes)} MINUTE) AS abandoned,
    sumIf(i, is_call = 1) AS input_tokens,
    sumIf(o, is_call = 1) AS output_tokens,
    sumIf(c, is_call = 1) AS cost_usd
FROM
(
    SELECT session_id AS s, toString(app) AS a, end_user AS u, started_at AS t,
           turn_index AS ti, toUInt8(1) AS is_call, cost_usd AS c, input_tokens AS i,
           output_tokens AS o, '' AS n, CAST(NULL, 'Nullable(Float64)') AS v, '' AS sv
    FROM {db}.llm_calls FINAL
    WHERE session_id != ''
    UNION ALL
    SELECT if(f.sid != '', f.sid, ifNull(k.call_sid, '')) AS s, f.a AS a, f.u AS u, f.t AS t,
           toUInt32(0) AS ti, toUInt8(0) AS is_call, CAST(NULL, 'Nullable(Float64)') AS c,
           toUInt64(0) AS i, toUInt64(0) AS o, f.n AS n, f.v AS v, f.sv AS sv
    FROM ({events_sql(db)}) AS f
    LEFT JOIN
    (
        SELECT request_id AS call_rid, any(session_id) AS call_sid
        FROM {db}.llm_calls FINAL
        WHERE session_id != ''
        GROUP BY request_id
    ) AS k ON k.call_rid = f.rid
    WHERE s != ''
)
GROUP BY s"""
