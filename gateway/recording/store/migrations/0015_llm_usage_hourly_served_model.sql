-- llm_usage_hourly by the model that served the calls too (`upstream_model`, beside its
-- provider), with the response cache's hits and the spend they saved.
-- Rows summed before this migration keep upstream_model '' (they were summed without it,
-- and llm_calls still has each call's served model), and 0 hits and savings. New rows carry
-- them from the moment the view below changes. The sorting key can only grow at its end,
-- by a column added in the same statement: `MODIFY ORDER BY` comes last (on a cluster the
-- Distributed table takes the columns, without it).
ALTER TABLE {db}.llm_usage_hourly
    ADD COLUMN IF NOT EXISTS upstream_model LowCardinality(String) AFTER request_model,
    ADD COLUMN IF NOT EXISTS cache_hits UInt64 AFTER errors,
    ADD COLUMN IF NOT EXISTS cost_saved_usd Float64 AFTER cost_usd,
    MODIFY ORDER BY (hour, app, provider, request_model, upstream_model);

ALTER TABLE {db}.llm_usage_hourly_mv MODIFY QUERY
SELECT
    toStartOfHour(t) AS hour,
    a AS app,
    p AS provider,
    m AS request_model,
    um AS upstream_model,
    count() AS requests,
    countIf(failed) AS errors,
    countIf(hit) AS cache_hits,
    sum(i) AS input_tokens,
    sum(o) AS output_tokens,
    sum(cr) AS cache_read_tokens,
    sum(ifNull(c, 0)) AS cost_usd,
    sum(ifNull(s, 0)) AS cost_saved_usd,
    countIf(c IS NULL AND i + o > 0) AS unpriced,
    sum(l) AS latency_ms_sum
FROM
(
    -- renamed first: the sums' aliases would otherwise shadow the columns they read
    SELECT started_at AS t, app AS a, provider AS p, request_model AS m,
           upstream_model AS um, {failed} AS failed, cache_status = 'hit' AS hit,
           input_tokens AS i, output_tokens AS o, cache_read_tokens AS cr, cost_usd AS c,
           cost_saved_usd AS s, latency_ms AS l
    FROM {db}.llm_calls
)
GROUP BY hour, app, provider, request_model, upstream_model
