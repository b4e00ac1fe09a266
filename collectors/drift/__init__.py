"""Drift: tell SREs and product teams when models, traffic or user verdicts shift.

`run_drift(query, now, cfg)` compares a current window (default: the last hour) with a
reference window (default: the 7 days before it) for every (app, requested model) seen in
either, reading `llm_calls FINAL` and `llm_feedback` through `query(sql) -> JSONEachRow
bytes` (a store's `query`): four queries, whose statistics (PSI, Kolmogorov-Smirnov, the
counts behind the rest) are computed in ClickHouse; 1.2 s for a million calls on chDB
(`bench/drift.py`). It returns `DriftRow`s; `rows_to_jsonl` makes them an insert into
`llm_drift` (migration 0007) and `format_report` a plain-text report.

Modules: config.py (metrics, bins, settings), stats.py (the tests), queries.py (the SQL),
run.py (`run_drift`), report.py (the row, its insert form, the text report).

A group with fewer than `min_calls` calls in either window is not evaluated: it gets one
row, metric `sample_size`, level `skipped`. A metric with fewer than `min_calls` values in
either window (say `ttft` when few calls are streamed) is skipped the same way, and so are
the rates of answers (`length_rate`, `content_filter_rate`) when every call of a window
failed. Skipped rows are for the report: `rows_to_jsonl` leaves them out of `llm_drift`.

Rows: one per (group, metric), except `version_change` (one per new version).

- `input_tokens`, `output_tokens`, `latency`, `ttft` (seconds), `cost` (USD per call):
  statistic `psi`, score the population stability index on bins at the reference window's
  own deciles (computed from the stored values, not histogram buckets), p_value a
  chi-square test on the same bins.
- `finish_reason_mix`: statistic `js_distance`, score the Jensen-Shannon distance (log base
  2, so 0..1), p_value a chi-square test on the finish-reason counts.
- `error_rate`, `length_rate`, `content_filter_rate`, `refusal_rate`, `acceptance_rate`,
  `share_rate`: statistic `z`, score the pooled two-proportion z (current minus reference,
  so positive when the rate rose), p_value Fisher's exact test.
- `version_change`: statistic `new_response_model` or `new_system_fingerprint` (one row per
  new version; score: the share of the current window's calls it served), or
  `new_versions` with score 0 when there is none. p_value NULL.
- `sample_size` (statistic `calls`), or a metric with statistic `calls` / `values` /
  `answers`: level `skipped`, score the smaller window's count, threshold the minimum.
  p_value NULL. In the report only.

The distribution rows also carry Kolmogorov-Smirnov as a second opinion on the raw,
unbucketed values (ClickHouse's `kolmogorovSmirnovTest('two-sided')`): `ks_statistic` (D)
and `ks_p_value`. It is reported, not used for the level. `current_value` and
`reference_value` hold the means (distributions) or the rates (z rows).

What is counted (a call *failed* when `status_code >= 400 OR outcome != 'ok'`; the other
calls are *answers*):
- distributions and the finish-reason mix: answers only (a failure has no tokens and an
  unrepresentative latency; `error_rate` covers failures). `ttft` over answers with a
  `ttft_ms`, `cost` over answers with a known `cost_usd`. An empty finish reason is
  `(none)` in the mix.
- `error_rate`: failed / calls. `length_rate`: answers with finish reason `length` /
  answers. `content_filter_rate`: answers with finish reason `content_filter` / answers.
- `refusal_rate`: calls the model or the provider's safety system declined / calls: finish
  reason `refusal` or `content_filter` (the gateway normalises Anthropic's `refusal` stop
  reason to `content_filter`), or an error whose `error_type` names a content policy
  (matches `REFUSAL_ERROR_TYPES`, e.g. Azure's `content_filter`, OpenAI's
  `content_policy_violation`).
- feedback, joined on `request_id`, from events whose `ts` is within a day of the two
  windows (clocks differ; a backfill at a past `now` sees what was known then, give or
  take a day), each counted as collectors/signals.py says (a `false` is a no).
  `acceptance_rate`: calls with an accepted suggestion / calls with a suggestion shown (as
  `llm_call_feedback.accepted` and `.shown`), compared when at least `min_feedback_calls`
  calls in each window had a suggestion. `share_rate`: calls shared / calls (as
  `llm-gateway report`), compared when at least `min_feedback_calls` calls in each window
  had any feedback event. No feedback of the kind in either window: no row. Feedback on
  the latest calls may still be on its way; keep `min_feedback_calls` meaningful.
- version changes: a non-empty `response_model` or `system_fingerprint` seen in the current
  window and never in the reference window, with `first_seen` (its first call).

Levels (`ok`, `warn`, `alert`, `improved`, `skipped`). An effect size alone is not enough:
PSI and the
JS distance of two samples of 200 calls from the same traffic exceed 0.2 and 0.1 in a few
percent of runs. So every statistic comes with a hypothesis test (its `p_value`) and a row
alerts when the effect passes its threshold AND the test rejects "no change" at a
Bonferroni-corrected level: p < alpha / m, where m is the number of tests of the run (rows
with a p-value that could be small; a rate with no event in either window cannot). The
family-wise chance that unchanged traffic raises any alert in a run is then at most
`alpha` (default 0.001), whatever the number of groups and metrics.
- `psi` (the reference's decile bins, so that windows compare bin for bin and an unchanged
  distribution scores near 0 whatever its shape, computed in ClickHouse SQL as
  sum((p - q) * ln(p / q)) with empty-bin proportions floored at `psi_epsilon` = 1e-4,
  i.e. 0.01%): alert when PSI >= `psi_alert` (0.2) and the chi-square test of homogeneity
  on the same bins rejects; warn when PSI >= `psi_warn` (0.1) and the test rejects at
  `warn_alpha`. The chi-square test merges adjacent sparse bins until each merged bin
  expects at least 5 calls in each window (the classic validity rule).
- `js_distance`: the same with `js_alert` (0.1) / `js_warn` (0.05); rare finish reasons
  are pooled for the chi-square test.
- `z`: pooled two-proportion z; `threshold` is the |z| matching alpha / m
  (Phi^-1(1 - alpha / 2m)). Alert when |z| >= threshold and Fisher's exact test (two-sided:
  the tables no more likely than the observed one, as scipy computes it) agrees: the normal
  approximation overstates rare events (five content-filter stops in a window that expects
  one is z = 4, normal p 6e-5, but happens in 0.4% of windows).
- `version_change`: always an alert (no test: a version that was never seen is a fact).
- direction (`WORSE_WHEN`): latency, time to first token, cost and the error, length,
  content-filter and refusal rates get worse when they rise; acceptance and share rates
  when they fall. A change that would warn or alert but goes the good way is level
  `improved`: reported, never alerted. A distribution went the good way when its values
  moved that way (P(current > reference) - P(current < reference) on the bins) and its
  bad tail did not grow beyond noise (3 standard errors) above any bin boundary: a
  distribution that got faster on average but slower in its tail is still an alert.
  Token counts and the finish-reason mix can drift either way.
`threshold` holds the alert threshold of the row's statistic (0 for version changes, the
minimum count for skipped rows).
"""

from __future__ import annotations

from collectors.drift.config import (
    BINS,
    DISTRIBUTIONS,
    FAILED_SQL,
    LEVELS,
    METRICS,
    QUANTILES,
    RATES,
    REFUSAL_ERROR_TYPES,
    WORSE_WHEN,
    DriftConfig,
)
from collectors.drift.report import DriftRow, format_report, rows_to_json, rows_to_jsonl
from collectors.drift.run import run_drift
from collectors.drift.stats import (
    chi2_homogeneity,
    chi2_sf,
    direction,
    fisher_exact,
    js_distance,
    two_proportion_z,
    z_for,
)
from collectors.drift.task import drift_job

__all__ = [
    "BINS",
    "DISTRIBUTIONS",
    "FAILED_SQL",
    "LEVELS",
    "METRICS",
    "QUANTILES",
    "RATES",
    "REFUSAL_ERROR_TYPES",
    "WORSE_WHEN",
    "DriftConfig",
    "DriftRow",
    "chi2_homogeneity",
    "chi2_sf",
    "direction",
    "drift_job",
    "fisher_exact",
    "format_report",
    "js_distance",
    "rows_to_json",
    "rows_to_jsonl",
    "run_drift",
    "two_proportion_z",
    "z_for",
]
