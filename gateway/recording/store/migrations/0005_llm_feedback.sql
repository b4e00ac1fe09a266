-- End-user signals, append-only. The client's event_id is the idempotency key: the same
-- event sent twice collapses to one row (ORDER BY ends with event_id; query with FINAL,
-- as the views do). A signal may arrive before its call's row: the views link them.
-- shard_by: cityHash64(event_id)
CREATE TABLE IF NOT EXISTS {db}.llm_feedback
(
    event_id String,
    ts DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC') DEFAULT now64(3),
    request_id String,
    session_id String,
    end_user String,
    app LowCardinality(String),
    name LowCardinality(String),
    value Nullable(Float64),
    string_value String,
    data_type LowCardinality(String),
    source LowCardinality(String),
    comment String,
    metadata Map(LowCardinality(String), String),
    INDEX idx_request_id request_id TYPE bloom_filter GRANULARITY 4,
    INDEX idx_session_id session_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (app, name, event_id)
SETTINGS non_replicated_deduplication_window = 10000
