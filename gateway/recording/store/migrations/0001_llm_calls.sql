-- One wide row per call. ReplacingMergeTree on the full sorting key: a replayed record
-- (same request_id, same started_at and app) collapses into one row.
-- shard_by: cityHash64(request_id)
CREATE TABLE IF NOT EXISTS {db}.llm_calls
(
    request_id String,
    trace_id String,
    started_at DateTime64(3, 'UTC'),
    app LowCardinality(String),
    end_user String,
    session_id String,
    turn_index UInt32,
    provider LowCardinality(String),
    provider_kind LowCardinality(String),
    endpoint LowCardinality(String),
    operation LowCardinality(String),
    request_model LowCardinality(String),
    upstream_model LowCardinality(String),
    response_model LowCardinality(String),
    response_id String,
    upstream_request_id String,
    system_fingerprint LowCardinality(String),
    stream Bool,
    status_code UInt16,
    outcome LowCardinality(String),
    error_type LowCardinality(String),
    error_message String,
    finish_reason LowCardinality(String),
    input_tokens UInt64,
    output_tokens UInt64,
    cache_read_tokens UInt64,
    cache_write_tokens UInt64,
    reasoning_tokens UInt64,
    usage_estimated Bool,
    cost_usd Nullable(Float64),
    price_source LowCardinality(String),
    latency_ms Float64,
    ttft_ms Nullable(Float64),
    upstream_ms Float64,
    overhead_ms Float64,
    attempts UInt8,
    fallback_used Bool,
    request_bytes UInt64,
    response_bytes UInt64,
    user_agent String,
    properties Map(LowCardinality(String), String),
    request_body String CODEC(ZSTD(3)) TTL toDateTime(started_at) + INTERVAL {body_ttl_days} DAY,
    response_body String CODEC(ZSTD(3)) TTL toDateTime(started_at) + INTERVAL {body_ttl_days} DAY,
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(started_at)
ORDER BY (app, started_at, request_id)
