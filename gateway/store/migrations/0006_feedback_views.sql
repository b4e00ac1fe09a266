-- Views that link calls with their end-user signals, joined when queried: a signal that
-- arrived before its call's row is linked as soon as the row exists. Both tables are read
-- with FINAL, so a replayed call or a re-sent event (same event_id) counts once.
-- Each side is read in its own subquery and the join is done on the results: on a cluster
-- each subquery reads its Distributed table, with no double-distributed JOIN.

-- One row per call with its signals aggregated (calls without feedback: zeros and NULLs).
-- `shown` is 1 when a suggestion_shown, suggestion_accepted or suggestion_rejected event was
-- received (an accepted or rejected suggestion was shown), so accepted <= shown.
CREATE VIEW IF NOT EXISTS {db}.llm_call_feedback AS
SELECT
    c.request_id AS request_id,
    c.started_at AS started_at,
    c.app AS app,
    c.end_user AS end_user,
    c.session_id AS session_id,
    c.turn_index AS turn_index,
    c.provider AS provider,
    c.operation AS operation,
    c.request_model AS request_model,
    c.response_model AS response_model,
    c.status_code AS status_code,
    c.outcome AS outcome,
    c.finish_reason AS finish_reason,
    c.input_tokens AS input_tokens,
    c.output_tokens AS output_tokens,
    c.cost_usd AS cost_usd,
    c.latency_ms AS latency_ms,
    c.ttft_ms AS ttft_ms,
    c.properties AS properties,
    toUInt64(ifNull(f.n_events, 0)) AS events,
    toUInt8(ifNull(f.n_shown, 0) > 0) AS shown,
    toUInt8(ifNull(f.n_accepted, 0) > 0) AS accepted,
    toUInt8(ifNull(f.n_rejected, 0) > 0) AS rejected,
    f.avg_rating AS rating,
    toUInt64(ifNull(f.n_ratings, 0)) AS ratings,
    f.avg_thumbs AS thumbs,
    toUInt64(ifNull(f.n_copies, 0)) AS copies,
    toUInt64(ifNull(f.n_shares, 0)) AS shares,
    toUInt64(ifNull(f.n_regenerations, 0)) AS regenerations,
    toUInt64(ifNull(f.n_corrections, 0)) AS corrections,
    toFloat64(ifNull(f.sum_dwell_ms, 0)) AS dwell_ms,
    f.avg_retained AS retained,
    f.defect_list AS defects,
    f.last_ts AS last_feedback_at
FROM
(
    SELECT request_id, started_at, app, end_user, session_id, turn_index, provider, operation,
           request_model, response_model, status_code, outcome, finish_reason, input_tokens,
           output_tokens, cost_usd, latency_ms, ttft_ms, properties
    FROM {db}.llm_calls FINAL
) AS c
LEFT JOIN
(
    -- renamed: aggregates named like the view's columns would shadow the ones they read
    SELECT
        request_id AS rid,
        count() AS n_events,
        countIf(name IN ('suggestion_shown', 'suggestion_accepted', 'suggestion_rejected')) AS n_shown,
        countIf(name = 'suggestion_accepted') AS n_accepted,
        countIf(name = 'suggestion_rejected') AS n_rejected,
        avgIfOrNull(value, name = 'rating') AS avg_rating,
        countIf(name = 'rating' AND value IS NOT NULL) AS n_ratings,
        avgIfOrNull(value, name = 'thumbs') AS avg_thumbs,
        countIf(name = 'copy') AS n_copies,
        countIf(name = 'share') AS n_shares,
        countIf(name = 'regenerate') AS n_regenerations,
        countIf(name = 'correction') AS n_corrections,
        sumIf(ifNull(value, 0), name = 'dwell') AS sum_dwell_ms,
        avgIfOrNull(value, name = 'suggestion_retained') AS avg_retained,
        arraySort(groupUniqArrayIf(toString(string_value), name = 'defect' AND string_value != '')) AS defect_list,
        toNullable(max(ts)) AS last_ts
    FROM {db}.llm_feedback FINAL
    WHERE request_id != ''
    GROUP BY request_id
) AS f ON f.rid = c.request_id;

-- One row per conversation (non-empty session_id), from its calls and its signals. A signal
-- belongs to a session through its own session_id or, when that is empty, through its call.
-- first_at/last_at span calls and signals; abandoned: not ended and idle for
-- {session_idle_minutes} minutes. turns: the highest turn_index sent; regenerated_turns:
-- calls that re-sent a turn already sent (regenerations seen on the wire).
CREATE VIEW IF NOT EXISTS {db}.llm_sessions AS
SELECT
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
    countIf(n = 'regenerate') AS regenerations,
    countIf(n = 'suggestion_accepted') AS accepted,
    countIf(is_call = 0) AS events,
    avgIfOrNull(v, n = 'rating') AS rating,
    toUInt8(countIf(n = 'session_end') > 0) AS ended,
    toUInt8(countIf(n = 'session_end') = 0
            AND max(t) < now64(3) - INTERVAL {session_idle_minutes} MINUTE) AS abandoned,
    sumIf(i, is_call = 1) AS input_tokens,
    sumIf(o, is_call = 1) AS output_tokens,
    sumIf(c, is_call = 1) AS cost_usd
FROM
(
    SELECT session_id AS s, toString(app) AS a, end_user AS u, started_at AS t,
           turn_index AS ti, toUInt8(1) AS is_call, cost_usd AS c, input_tokens AS i,
           output_tokens AS o, '' AS n, CAST(NULL, 'Nullable(Float64)') AS v
    FROM {db}.llm_calls FINAL
    WHERE session_id != ''
    UNION ALL
    SELECT if(f.session_id != '', f.session_id, ifNull(k.sid, '')) AS s, toString(f.app) AS a,
           f.end_user AS u, f.ts AS t, toUInt32(0) AS ti, toUInt8(0) AS is_call,
           CAST(NULL, 'Nullable(Float64)') AS c, toUInt64(0) AS i, toUInt64(0) AS o,
           toString(f.name) AS n, f.value AS v
    FROM
    (
        SELECT session_id, request_id, app, end_user, ts, name, value
        FROM {db}.llm_feedback FINAL
    ) AS f
    LEFT JOIN
    (
        SELECT request_id AS rid, any(session_id) AS sid
        FROM {db}.llm_calls FINAL
        WHERE session_id != ''
        GROUP BY request_id
    ) AS k ON k.rid = f.request_id
    WHERE s != ''
)
GROUP BY s
