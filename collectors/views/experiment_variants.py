"""`llm_experiment_variants`: per-variant figures of every experiment, as plain aggregates
over `llm_call_feedback` (the verdicts, with per-unit statistics, come from
`llm-gateway experiments`). Rates are over calls; acceptance over shown suggestions;
failed calls as `gateway.recording.record.is_failed` says."""

from __future__ import annotations

from gateway.recording.record import FAILED_SQL


def experiment_variants_sql(db: str) -> str:
    return f"""SELECT
    experiment,
    variant,
    arraySort(groupUniqArrayIf(upstream_model, upstream_model != '')) AS upstream_models,
    count() AS calls,
    uniqExactIf(end_user, end_user != '') AS users,
    uniqExactIf(session_id, session_id != '') AS sessions,
    min(started_at) AS first_at,
    max(started_at) AS last_at,
    countIf(shown > 0) AS shown_calls,
    countIf(accepted > 0) AS accepted_calls,
    accepted_calls / nullIf(shown_calls, 0) AS acceptance_rate,
    avgOrNull(thumbs) AS thumbs_up_rate,
    avgOrNull(rating) AS mean_rating,
    countIf(copies > 0) / count() AS copy_rate,
    countIf(shares > 0) / count() AS share_rate,
    countIf(regenerations > 0) / count() AS regenerate_rate,
    countIf{FAILED_SQL} / count() AS error_rate,
    quantileDeterministic(0.5)(latency_ms, cityHash64(request_id)) AS p50_latency_ms,
    quantileDeterministic(0.95)(latency_ms, cityHash64(request_id)) AS p95_latency_ms,
    sum(cost_usd) AS total_cost_usd,
    avgOrNull(cost_usd) AS cost_per_call_usd
FROM {db}.llm_call_feedback
WHERE experiment != ''
GROUP BY experiment, variant"""
