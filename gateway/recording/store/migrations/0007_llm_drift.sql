-- Drift reports (collectors/drift.py, `llm-gateway drift`): one row per evaluation, group
-- (app, requested model) and metric, appended at every run. The current window is
-- [window_start, window_end), the reference window [reference_start, window_start).
-- metric: input_tokens, output_tokens, latency, ttft, cost (statistic psi),
-- finish_reason_mix (js_distance), error_rate, length_rate, content_filter_rate,
-- refusal_rate, acceptance_rate, share_rate (z), version_change (new_response_model,
-- new_system_fingerprint, new_versions).
-- score is compared with threshold; p_value is the row's hypothesis test (chi-square for
-- psi and js_distance, Fisher's exact test for z), ks_* the Kolmogorov-Smirnov second
-- opinion on distributions. level: ok | warn | alert; alert = (level = 'alert'). What a run
-- skipped (too few calls) is in its report, not stored.
-- shard_by: cityHash64(app, request_model)
CREATE TABLE IF NOT EXISTS {db}.llm_drift
(
    computed_at DateTime64(3, 'UTC'),
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    reference_start DateTime64(3, 'UTC'),
    app LowCardinality(String),
    request_model LowCardinality(String),
    metric LowCardinality(String),
    statistic LowCardinality(String),
    score Float64,
    threshold Float64,
    alert UInt8,
    level LowCardinality(String),
    p_value Nullable(Float64),
    current_calls UInt64,
    reference_calls UInt64,
    current_value Nullable(Float64),
    reference_value Nullable(Float64),
    ks_statistic Nullable(Float64),
    ks_p_value Nullable(Float64),
    first_seen Nullable(DateTime64(3, 'UTC')),
    detail String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(computed_at)
ORDER BY (app, request_model, metric, computed_at)
