-- Experiments (gateway/experiments, collectors/experiments): the experiment a call was
-- assigned to and its variant; empty for calls in no experiment.
ALTER TABLE {db}.llm_calls
    ADD COLUMN IF NOT EXISTS experiment LowCardinality(String) AFTER properties,
    ADD COLUMN IF NOT EXISTS variant LowCardinality(String) AFTER experiment;

-- Per-variant figures of every experiment, as plain aggregates over calls and their
-- signals (the verdicts, with per-unit statistics, come from `llm-gateway experiments`).
-- Rates are over calls (acceptance: over shown suggestions); failed: status >= 400 or an
-- outcome other than ok.
CREATE VIEW IF NOT EXISTS {db}.llm_experiment_variants AS
SELECT
    c.experiment AS experiment,
    c.variant AS variant,
    count() AS calls,
    uniqExactIf(c.end_user, c.end_user != '') AS users,
    uniqExactIf(c.session_id, c.session_id != '') AS sessions,
    min(c.started_at) AS first_at,
    max(c.started_at) AS last_at,
    countIf(ifNull(f.n_shown, 0) > 0) AS shown,
    countIf(ifNull(f.n_accepted, 0) > 0) AS accepted,
    accepted / nullIf(shown, 0) AS acceptance_rate,
    avgOrNull(f.avg_thumbs) AS thumbs_up_rate,
    avgOrNull(f.avg_rating) AS mean_rating,
    countIf(ifNull(f.n_copies, 0) > 0) / count() AS copy_rate,
    countIf(ifNull(f.n_shares, 0) > 0) / count() AS share_rate,
    countIf(ifNull(f.n_regenerations, 0) > 0) / count() AS regenerate_rate,
    countIf(c.status_code >= 400 OR c.outcome != 'ok') / count() AS error_rate,
    quantileDeterministic(0.5)(c.latency_ms, cityHash64(c.request_id)) AS p50_latency_ms,
    quantileDeterministic(0.95)(c.latency_ms, cityHash64(c.request_id)) AS p95_latency_ms,
    sum(c.cost_usd) AS cost_usd,
    avgOrNull(c.cost_usd) AS cost_per_call_usd
FROM
(
    SELECT request_id, experiment, variant, end_user, session_id, started_at, status_code,
           outcome, latency_ms, cost_usd
    FROM {db}.llm_calls FINAL
    WHERE experiment != ''
) AS c
LEFT JOIN
(
    SELECT
        request_id AS rid,
        countIf(name IN ('suggestion_shown', 'suggestion_accepted', 'suggestion_rejected')) AS n_shown,
        countIf(name = 'suggestion_accepted') AS n_accepted,
        avgIfOrNull(value, name = 'rating') AS avg_rating,
        avgIfOrNull(value, name = 'thumbs') AS avg_thumbs,
        countIf(name = 'copy') AS n_copies,
        countIf(name = 'share') AS n_shares,
        countIf(name = 'regenerate') AS n_regenerations
    FROM {db}.llm_feedback FINAL
    WHERE request_id != ''
    GROUP BY request_id
) AS f ON f.rid = c.request_id
GROUP BY experiment, variant
