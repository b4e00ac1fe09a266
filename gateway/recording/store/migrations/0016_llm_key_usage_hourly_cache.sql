-- llm_key_usage_hourly with the response cache's hits and the spend they saved per key
-- (a hit counts as a request of the key, at no cost). Hours summed before this migration
-- have 0 of both.
ALTER TABLE {db}.llm_key_usage_hourly
    ADD COLUMN IF NOT EXISTS cache_hits UInt64 AFTER refused,
    ADD COLUMN IF NOT EXISTS cost_saved_usd Float64 AFTER cost_usd;

ALTER TABLE {db}.llm_key_usage_hourly_mv MODIFY QUERY
SELECT
    toStartOfHour(t) AS hour,
    k AS key_id,
    kn AS key_name,
    a AS app,
    m AS request_model,
    count() AS requests,
    countIf(refused) AS refused,
    countIf(hit) AS cache_hits,
    sum(i) AS input_tokens,
    sum(o) AS output_tokens,
    sum(ifNull(c, 0)) AS cost_usd,
    sum(ifNull(s, 0)) AS cost_saved_usd
FROM
(
    -- renamed first: the sums' aliases would otherwise shadow the columns they read
    SELECT started_at AS t, key_id AS k, key_name AS kn, app AS a, request_model AS m,
           startsWith(outcome, 'refused_') AS refused, cache_status = 'hit' AS hit,
           input_tokens AS i, output_tokens AS o, cost_usd AS c, cost_saved_usd AS s
    FROM {db}.llm_calls
    WHERE key_id != ''
)
GROUP BY hour, key_id, key_name, app, request_model
