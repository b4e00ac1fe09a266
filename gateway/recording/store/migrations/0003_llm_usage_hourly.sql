-- Hourly usage by app, provider and model, kept by a materialized view as calls arrive.
-- Rows of one key are summed at merge time: always query with sum() ... GROUP BY.
-- shard_by: cityHash64(app, request_model)
CREATE TABLE IF NOT EXISTS {db}.llm_usage_hourly
(
    hour DateTime('UTC'),
    app LowCardinality(String),
    provider LowCardinality(String),
    request_model LowCardinality(String),
    requests UInt64,
    errors UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    cache_read_tokens UInt64,
    cost_usd Float64,
    unpriced UInt64,
    latency_ms_sum Float64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, app, provider, request_model)
-- a replayed batch must not be summed twice (see 0002)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.llm_usage_hourly_mv TO {db}.llm_usage_hourly AS
SELECT
    toStartOfHour(t) AS hour,
    a AS app,
    p AS provider,
    m AS request_model,
    count() AS requests,
    countIf(failed) AS errors,
    sum(i) AS input_tokens,
    sum(o) AS output_tokens,
    sum(cr) AS cache_read_tokens,
    sum(ifNull(c, 0)) AS cost_usd,
    countIf(c IS NULL AND i + o > 0) AS unpriced,
    sum(l) AS latency_ms_sum
FROM
(
    -- renamed first: the sums' aliases would otherwise shadow the columns they read
    SELECT started_at AS t, app AS a, provider AS p, request_model AS m,
           {failed} AS failed, input_tokens AS i,
           output_tokens AS o, cache_read_tokens AS cr, cost_usd AS c, latency_ms AS l
    FROM {db}.llm_calls
)
GROUP BY hour, app, provider, request_model
