-- Which gateway key made a call (empty: none), and spend per key by the hour.
ALTER TABLE {db}.llm_calls
    ADD COLUMN IF NOT EXISTS key_id LowCardinality(String) AFTER app,
    ADD COLUMN IF NOT EXISTS key_name LowCardinality(String) AFTER key_id;

-- Rows of one key are summed at merge time: always query with sum() ... GROUP BY.
-- `refused` counts calls the gateway refused for the key (limits, budget, model).
-- shard_by: cityHash64(key_id)
CREATE TABLE IF NOT EXISTS {db}.llm_key_usage_hourly
(
    hour DateTime('UTC'),
    key_id LowCardinality(String),
    key_name LowCardinality(String),
    app LowCardinality(String),
    request_model LowCardinality(String),
    requests UInt64,
    refused UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    cost_usd Float64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, key_id, key_name, app, request_model)
-- a replayed batch must not be summed twice (see 0002)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.llm_key_usage_hourly_mv TO {db}.llm_key_usage_hourly AS
SELECT
    toStartOfHour(t) AS hour,
    k AS key_id,
    kn AS key_name,
    a AS app,
    m AS request_model,
    count() AS requests,
    countIf(refused) AS refused,
    sum(i) AS input_tokens,
    sum(o) AS output_tokens,
    sum(ifNull(c, 0)) AS cost_usd
FROM
(
    -- renamed first: the sums' aliases would otherwise shadow the columns they read
    SELECT started_at AS t, key_id AS k, key_name AS kn, app AS a, request_model AS m,
           startsWith(outcome, 'refused_') AS refused, input_tokens AS i,
           output_tokens AS o, cost_usd AS c
    FROM {db}.llm_calls
    WHERE key_id != ''
)
GROUP BY hour, key_id, key_name, app, request_model
