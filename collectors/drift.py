"""Drift: tell SREs and product teams when models, traffic or user verdicts shift.

`run_drift(query, now, cfg)` compares a current window (default: the last hour) with a
reference window (default: the 7 days before it) for every (app, requested model) seen in
either, reading `llm_calls FINAL` and `llm_feedback` through `query(sql) -> JSONEachRow
bytes` (a store's `query`): four queries, whose statistics (PSI, Kolmogorov-Smirnov, the
counts behind the rest) are computed in ClickHouse; 1.2 s for a million calls on chDB
(`bench/drift.py`). It returns `DriftRow`s; `rows_to_jsonl` makes them an insert into
`llm_drift` (migration 0007) and `format_report` a plain-text report.

A group with fewer than `min_calls` calls in either window is not evaluated: it gets one
row, metric `sample_size`, level `skipped`. A metric with fewer than `min_calls` values in
either window (say `ttft` when few calls are streamed) is skipped the same way.

Rows: one per (group, metric), except `version_change` (one per new version).

- `input_tokens`, `output_tokens` (OTel token buckets), `latency`, `ttft` (seconds, OTel
  duration buckets), `cost` (USD per call, `COST_BUCKETS`): statistic `psi`, score the
  population stability index, p_value a chi-square test on the same bins.
- `finish_reason_mix`: statistic `js_distance`, score the Jensen-Shannon distance (log base
  2, so 0..1), p_value a chi-square test on the finish-reason counts.
- `error_rate`, `length_rate`, `content_filter_rate`, `refusal_rate`, `acceptance_rate`,
  `share_rate`: statistic `z`, score the pooled two-proportion z (current minus reference,
  so positive when the rate rose), p_value Fisher's exact test.
- `version_change`: statistic `new_response_model` or `new_system_fingerprint` (one row per
  new version; score: the share of the current window's calls it served), or
  `new_versions` with score 0 when there is none. p_value NULL.
- `sample_size` (statistic `calls`), or a metric with statistic `calls` / `values`: level
  `skipped`, score the smaller window's count, threshold the minimum. p_value NULL.

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
  take a day). `acceptance_rate`: calls with a `suggestion_accepted` / calls with a
  `suggestion_shown`, `suggestion_accepted` or `suggestion_rejected` (as
  `llm_call_feedback.shown`), compared when at least `min_feedback_calls` calls in each
  window had a suggestion. `share_rate`: calls with a `share` event / calls (as
  `llm-gateway report`), compared when at least `min_feedback_calls` calls in each window
  had any feedback event. No feedback of the kind in either window: no row. Feedback on
  the latest calls may still be on its way; keep `min_feedback_calls` meaningful.
- version changes: a non-empty `response_model` or `system_fingerprint` seen in the current
  window and never in the reference window, with `first_seen` (its first call).

Levels (`ok`, `warn`, `alert`, `skipped`). An effect size alone is not enough: PSI and the
JS distance of two samples of 200 calls from the same traffic exceed 0.2 and 0.1 in a few
percent of runs. So every statistic comes with a hypothesis test (its `p_value`) and a row
alerts when the effect passes its threshold AND the test rejects "no change" at a
Bonferroni-corrected level: p < alpha / m, where m is the number of tests of the run (rows
with a p-value that could be small; a rate with no event in either window cannot). The
family-wise chance that unchanged traffic raises any alert in a run is then at most
`alpha` (default 0.001), whatever the number of groups and metrics.
- `psi` (fixed bins, so that windows compare bin for bin, computed in ClickHouse SQL as
  sum((p - q) * ln(p / q)) with empty-bin proportions floored at `psi_epsilon` = 1e-4,
  i.e. 0.01%): alert when PSI >= `psi_alert` (0.2) and the chi-square test of homogeneity
  on the same bins rejects; warn when PSI >= `psi_warn` (0.1) and the test rejects at
  `warn_alpha`. The chi-square test merges adjacent sparse bins until each merged bin
  expects at least 5 calls in each window (the classic validity rule).
- `js_distance`: the same with `js_alert` (0.1) / `js_warn` (0.05); rare finish reasons
  are pooled for the chi-square test.
- `z`: pooled two-proportion z; `threshold` is the |z| matching alpha / m
  (Phi^-1(1 - alpha / 2m)). Alert when |z| >= threshold and Fisher's exact test (two-sided,
  the doubled smaller tail) agrees: the normal approximation overstates rare events (five
  content-filter stops in a window that expects one is z = 4, normal p 6e-5, but happens
  in 0.4% of windows).
- `version_change`: always an alert (no test: a version that was never seen is a fact).
`threshold` holds the alert threshold of the row's statistic (0 for version changes, the
minimum count for skipped rows).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from statistics import NormalDist
from typing import Any

from gateway.config import DriftConfig

# Bucket boundaries (upper bounds, inclusive as in OTel/Prometheus histograms), the same as
# gateway.metrics' histograms (a test keeps them equal), so that a bucket here is a bucket on
# the Grafana heatmaps. n boundaries make n + 1 bins.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)  # fmt: skip
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)  # fmt: skip
# USD per call, log-spaced at half decades (1, 3, 10, 30, ...) from a millionth of a dollar
# (a tiny embedding call) to $10 (a very long reasoning call); a free call (0) is bin 0.
COST_BUCKETS = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0,
                10.0)  # fmt: skip

# (metric, SQL value over llm_calls, boundaries). Distributions read answers only.
DISTRIBUTIONS: tuple[tuple[str, str, tuple[float, ...]], ...] = (
    ("input_tokens", "toNullable(toFloat64(input_tokens))", TOKEN_BUCKETS),
    ("output_tokens", "toNullable(toFloat64(output_tokens))", TOKEN_BUCKETS),
    ("latency", "toNullable(latency_ms / 1000)", DURATION_BUCKETS),
    ("ttft", "ttft_ms / 1000", DURATION_BUCKETS),
    ("cost", "cost_usd", COST_BUCKETS),
)
RATES = (
    "error_rate",
    "length_rate",
    "content_filter_rate",
    "refusal_rate",
    "acceptance_rate",
    "share_rate",
)
# error_type values (case-insensitive regular expression) that mean "declined on policy".
REFUSAL_ERROR_TYPES = r"(?i)refus|content.?filter|content.?policy|safety|moderation"
SUGGESTION_SIGNALS = ("suggestion_shown", "suggestion_accepted", "suggestion_rejected")

LEVELS = ("alert", "warn", "ok", "skipped")
METRICS = (*(d[0] for d in DISTRIBUTIONS), "finish_reason_mix", *RATES, "version_change")
_ORDER = {name: i for i, name in enumerate(("sample_size", *METRICS))}  # rows of a group
_FAILED = "(status_code >= 400 OR outcome != 'ok')"
_NORMAL = NormalDist()


@dataclass(frozen=True, slots=True)
class DriftRow:
    """One row of `llm_drift`."""

    computed_at: datetime
    window_start: datetime  # the current window: [window_start, window_end)
    window_end: datetime
    reference_start: datetime  # the reference window: [reference_start, window_start)
    app: str
    request_model: str
    metric: str
    statistic: str
    score: float
    threshold: float
    level: str  # ok | warn | alert | skipped
    p_value: float | None = None
    current_calls: int = 0  # calls (or values, or feedback calls) the row is computed from
    reference_calls: int = 0
    current_value: float | None = None
    reference_value: float | None = None
    ks_statistic: float | None = None
    ks_p_value: float | None = None
    first_seen: datetime | None = None
    detail: str = ""

    @property
    def alert(self) -> bool:
        return self.level == "alert"


# -- statistics ----------------------------------------------------------------------------


def _gamma_q(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) (series / continued fraction)."""
    if x <= 0:
        return 1.0
    log_pre = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:  # series for P, Q = 1 - P
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_pre))
    tiny = 1e-300  # Lentz's continued fraction for Q
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_pre) * h)


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X ~ chi-square with `df` degrees of freedom."""
    return 1.0 if df <= 0 else _gamma_q(df / 2, x / 2)


def _merge(bins: list[tuple[int, int]], need: float, ordered: bool) -> list[tuple[int, int]]:
    """Bins merged until each holds at least `need` calls (both windows together): adjacent
    ones when `ordered`, else the sparse ones pooled into one."""
    if ordered:
        out: list[tuple[int, int]] = []
        acc = (0, 0)
        for c, r in bins:
            acc = (acc[0] + c, acc[1] + r)
            if sum(acc) >= need:
                out.append(acc)
                acc = (0, 0)
        if sum(acc):
            if out:
                out[-1] = (out[-1][0] + acc[0], out[-1][1] + acc[1])
            else:
                out.append(acc)
        return out
    big = [b for b in bins if sum(b) >= need]
    small = [b for b in bins if sum(b) < need]
    pooled = (sum(c for c, _ in small), sum(r for _, r in small))
    if sum(pooled):
        if sum(pooled) >= need or not big:
            big.append(pooled)
        else:  # still sparse: into the smallest of the others
            i = min(range(len(big)), key=lambda j: sum(big[j]))
            big[i] = (big[i][0] + pooled[0], big[i][1] + pooled[1])
    return big


def chi2_homogeneity(
    cur: Sequence[int], ref: Sequence[int], ordered: bool
) -> tuple[float, int, float]:
    """Pearson's chi-square test that two count vectors come from one distribution, after
    merging bins to an expected count of at least 5 per window. (statistic, df, p)."""
    n, m = sum(cur), sum(ref)
    if n == 0 or m == 0:
        return 0.0, 0, 1.0
    total = n + m
    bins = _merge(
        [(c, r) for c, r in zip(cur, ref, strict=True) if c + r], 5 * total / min(n, m), ordered
    )
    stat = 0.0
    for c, r in bins:
        t = c + r
        ec, er = n * t / total, m * t / total
        stat += (c - ec) ** 2 / ec + (r - er) ** 2 / er
    df = len(bins) - 1
    return stat, df, chi2_sf(stat, df)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of Fisher's exact test on [[x1, n1 - x1], [x2, n2 - x2]]: twice the
    smaller tail of the hypergeometric law of x1 given the margins (capped at 1)."""
    k, total = x1 + x2, n1 + n2
    if n1 == 0 or n2 == 0 or k == 0 or k == total:
        return 1.0
    lo, hi = max(0, k - n2), min(k, n1)

    def log_pmf(x: int) -> float:
        return _log_comb(k, x) + _log_comb(total - k, n1 - x) - _log_comb(total, n1)

    # Walk outwards from x1 along the smaller tail; terms shrink, so stop when negligible.
    up = x1 >= n1 * k / total
    s, term, x = 1.0, 1.0, x1
    while (x < hi) if up else (x > lo):
        if up:
            term *= (k - x) * (n1 - x) / ((x + 1) * (total - k - n1 + x + 1))
            x += 1
        else:
            term *= x * (total - k - n1 + x) / ((k - x + 1) * (n1 - x + 1))
            x -= 1
        s += term
        if term < s * 1e-17:
            break
    log_tail = log_pmf(x1) + math.log(s)
    return min(1.0, 2 * math.exp(log_tail)) if log_tail < 0 else 1.0


def two_proportion_z(x1: int, n1: int, x2: int, n2: int) -> float:
    """Pooled z of p1 - p2 (0 when both are 0 or both 1)."""
    if n1 == 0 or n2 == 0:
        return 0.0
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return (x1 / n1 - x2 / n2) / se if se > 0 else 0.0


def js_distance(cur: Sequence[int], ref: Sequence[int]) -> float:
    """Jensen-Shannon distance (square root of the divergence, log base 2: 0..1)."""
    n, m = sum(cur), sum(ref)
    if n == 0 or m == 0:
        return 0.0
    div = 0.0
    for c, r in zip(cur, ref, strict=True):
        p, q = c / n, r / m
        mid = (p + q) / 2
        if p:
            div += p * math.log2(p / mid) / 2
        if q:
            div += q * math.log2(q / mid) / 2
    return math.sqrt(max(0.0, div))


def z_for(alpha: float) -> float:
    """The two-sided |z| threshold of level `alpha`."""
    return -_NORMAL.inv_cdf(alpha / 2)


# -- SQL -----------------------------------------------------------------------------------


def _lit(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ts(t: datetime) -> str:
    return f"toDateTime64('{t.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]}', 3, 'UTC')"


def _floats(xs: Iterable[float]) -> str:
    return "[" + ", ".join(repr(float(x)) for x in xs) + "]"


def _groups_in(groups: Iterable[tuple[str, str]]) -> str:
    return "(app, request_model) IN (" + ", ".join(
        f"({_lit(a)}, {_lit(m)})" for a, m in groups
    ) + ")"  # fmt: skip


def _rows(query: Callable[[str], bytes], sql: str) -> list[dict[str, Any]]:
    out = query(sql)
    text = out.decode() if isinstance(out, bytes | bytearray) else str(out)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _categories_sql(rs: str, cs: str, ce: str) -> str:
    """Per group and window: calls by (finish reason, failed, refused), by response model and
    by system fingerprint, each with its first call (grouping sets: one scan)."""
    return f"""
SELECT toString(app) AS app, toString(request_model) AS request_model, cur,
       grouping(response_model, system_fingerprint) AS kind,
       toString(finish_reason) AS finish_reason, failed, refused,
       toString(response_model) AS response_model,
       toString(system_fingerprint) AS system_fingerprint,
       count() AS calls, toString(min(started_at)) AS first_seen
FROM
(
    SELECT app, request_model, started_at >= {cs} AS cur, started_at, finish_reason,
           toUInt8({_FAILED}) AS failed,
           toUInt8(finish_reason IN ('refusal', 'content_filter')
                   OR match(error_type, {_lit(REFUSAL_ERROR_TYPES)})) AS refused,
           response_model, system_fingerprint
    FROM llm_calls FINAL
    WHERE started_at >= {rs} AND started_at < {ce}
)
GROUP BY GROUPING SETS (
    (app, request_model, cur, finish_reason, failed, refused),
    (app, request_model, cur, response_model),
    (app, request_model, cur, system_fingerprint)
)
SETTINGS force_grouping_standard_compatibility = 1"""


def _feedback_sql(rs: str, cs: str, ce: str, groups: str) -> str:
    """Per group and window: calls with any feedback, with a suggestion, accepted, shared.
    llm_feedback is read without FINAL: each count is of calls that have at least one such
    event, which a duplicate event cannot change, and FINAL would read every partition (ts is
    not in its sorting key, so the time filter cannot be applied before the merge)."""
    signals = ", ".join(_lit(s) for s in SUGGESTION_SIGNALS)
    return f"""
SELECT toString(c.app) AS app, toString(c.request_model) AS request_model, c.cur AS cur,
       count() AS with_feedback, countIf(f.shown > 0) AS shown,
       countIf(f.accepted > 0) AS accepted, countIf(f.shared > 0) AS shared
FROM
(
    SELECT request_id, app, request_model, started_at >= {cs} AS cur
    FROM llm_calls FINAL
    WHERE started_at >= {rs} AND started_at < {ce} AND {groups}
) AS c
INNER JOIN
(
    SELECT request_id AS rid, countIf(name IN ({signals})) AS shown,
           countIf(name = 'suggestion_accepted') AS accepted, countIf(name = 'share') AS shared
    FROM llm_feedback
    WHERE request_id != '' AND ts >= {rs} - INTERVAL 1 DAY AND ts < {ce} + INTERVAL 1 DAY
    GROUP BY request_id
) AS f ON f.rid = c.request_id
GROUP BY app, request_model, cur"""


def _values_sql(rs: str, cs: str, ce: str, groups: str) -> str:
    """(app, request_model, metric, cur, value) for every answer and distribution metric."""
    tuples = ", ".join(
        f"({_lit(name)}, {expr}, {i + 1})" for i, (name, expr, _) in enumerate(DISTRIBUTIONS)
    )
    return f"""
    SELECT app, request_model, started_at >= {cs} AS cur,
           arrayJoin(arrayFilter(t -> isNotNull(t.2), [{tuples}])) AS mv,
           mv.1 AS metric, assumeNotNull(mv.2) AS value, mv.3 AS metric_index
    FROM llm_calls FINAL
    WHERE started_at >= {rs} AND started_at < {ce} AND NOT {_FAILED} AND {groups}"""


def _psi_sql(rs: str, cs: str, ce: str, groups: str, eps: float) -> str:
    """PSI per group and metric on fixed bins, in SQL: each value's bin is the number of
    boundaries below it; sumMap aligns the two windows' counts on the bins either has."""
    bounds = "[" + ", ".join(_floats(b) for _, _, b in DISTRIBUTIONS) + "]"
    p = f"greatest(c / n_cur, {eps!r})"
    q = f"greatest(r / n_ref, {eps!r})"
    return f"""
SELECT toString(app) AS app, toString(request_model) AS request_model, metric, n_cur, n_ref,
       if(n_cur = 0 OR n_ref = 0, 0, arraySum((c, r) -> ({p} - {q}) * ln({p} / {q}), h.2, h.3))
           AS psi,
       h.1 AS bins, h.2 AS cur_counts, h.3 AS ref_counts, mean_cur, mean_ref
FROM
(
    SELECT app, request_model, metric, countIf(cur) AS n_cur, countIf(NOT cur) AS n_ref,
           sumMap([toUInt8(arraySum(arrayMap(b -> value > b, {bounds}[metric_index])))],
                  [toUInt64(cur)], [toUInt64(NOT cur)]) AS h,
           avgIf(value, cur) AS mean_cur, avgIf(value, NOT cur) AS mean_ref
    FROM ({_values_sql(rs, cs, ce, groups)})
    GROUP BY app, request_model, metric
)"""


def _ks_sql(rs: str, cs: str, ce: str, groups: str, pairs: str) -> str:
    # Only (group, metric) pairs with values in both windows: the function refuses an
    # empty sample. Sample 0 is the reference, 1 the current window.
    return f"""
SELECT toString(app) AS app, toString(request_model) AS request_model, metric,
       kolmogorovSmirnovTest('two-sided')(value, toUInt8(cur)) AS ks
FROM ({_values_sql(rs, cs, ce, groups)})
WHERE (app, request_model, metric) IN ({pairs})
GROUP BY app, request_model, metric"""


# -- the run -------------------------------------------------------------------------------


@dataclass
class _Group:
    calls: list[int] = field(default_factory=lambda: [0, 0])  # [reference, current]
    answers: list[int] = field(default_factory=lambda: [0, 0])
    failed: list[int] = field(default_factory=lambda: [0, 0])
    refused: list[int] = field(default_factory=lambda: [0, 0])
    finish: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    # (column, value) -> [reference calls, current calls, first seen in the current window]
    versions: dict[tuple[str, str], list[Any]] = field(default_factory=dict)


@dataclass
class _Test:
    """A row in the making: its level waits for the run's number of tests (Bonferroni)."""

    row: dict[str, Any]
    effect: float  # compared with warn / alert (|z| for z rows)
    warn: float | None  # None: a z row, thresholds from alpha
    alert: float | None
    p: float
    counted: bool  # could reject: part of the Bonferroni family


def _parse_time(s: str) -> datetime:
    return datetime.fromisoformat(s.replace(" ", "T")).replace(tzinfo=UTC)


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def run_drift(
    query: Callable[[str], bytes],
    now: datetime | None = None,
    cfg: DriftConfig = DriftConfig(),
) -> list[DriftRow]:
    """Evaluate drift at `now` (default: the current time). `query(sql)` returns JSONEachRow
    bytes; unqualified table names must resolve to the gateway's database."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    cur_start = now - cfg.current_window
    ref_start = cur_start - cfg.reference_window
    rs, cs, ce = _ts(ref_start), _ts(cur_start), _ts(now)
    base = {
        "computed_at": now,
        "window_start": cur_start,
        "window_end": now,
        "reference_start": ref_start,
    }

    groups: dict[tuple[str, str], _Group] = defaultdict(_Group)
    for r in _rows(query, _categories_sql(rs, cs, ce)):
        g = groups[(r["app"], r["request_model"])]
        w, n = int(r["cur"]), int(r["calls"])
        kind = int(r["kind"])
        if kind == 3:  # the (finish_reason, failed, refused) set
            g.calls[w] += n
            g.refused[w] += n * int(r["refused"])
            if int(r["failed"]):
                g.failed[w] += n
            else:
                g.answers[w] += n
                g.finish[r["finish_reason"] or "(none)"][w] += n
        else:
            col = "response_model" if kind == 1 else "system_fingerprint"
            if r[col]:
                v = g.versions.setdefault((col, r[col]), [0, 0, None])
                v[w] += n
                if w:
                    v[2] = _parse_time(r["first_seen"])

    rows: list[DriftRow] = []
    tests: list[_Test] = []
    ok_groups = []
    for key in sorted(groups):
        g = groups[key]
        head = {**base, "app": key[0], "request_model": key[1]}
        ref_n, cur_n = g.calls
        if min(ref_n, cur_n) < cfg.min_calls:
            why = []
            if cur_n < cfg.min_calls:
                why.append(f"{cur_n} calls in the current window")
            if ref_n < cfg.min_calls:
                why.append(f"{ref_n} in the reference window")
            rows.append(
                DriftRow(
                    **head,
                    metric="sample_size",
                    statistic="calls",
                    score=float(min(ref_n, cur_n)),
                    threshold=float(cfg.min_calls),
                    level="skipped",
                    current_calls=cur_n,
                    reference_calls=ref_n,
                    detail=f"{' and '.join(why)}: fewer than min_calls={cfg.min_calls}",
                )
            )
            continue
        ok_groups.append(key)
        tests += _rate_tests(head, g)
        tests.append(_mix_test(head, g, cfg))
        rows += _version_rows(head, g)

    if ok_groups:
        where = _groups_in(ok_groups)
        calls = {k: groups[k].calls for k in ok_groups}
        tests += _feedback_tests(query, base, (rs, cs, ce), where, calls, cfg, rows)
        tests += _distribution_tests(query, base, (rs, cs, ce), where, cfg, rows)

    m = max(1, sum(t.counted for t in tests))
    a_alert, a_warn = cfg.alpha / m, cfg.warn_alpha / m
    z_alert, z_warn = z_for(a_alert), z_for(a_warn)
    for t in tests:
        alert_at = z_alert if t.alert is None else t.alert
        warn_at = z_warn if t.warn is None else t.warn
        level = "ok"
        if t.effect >= alert_at and t.p < a_alert:
            level = "alert"
        elif t.effect >= warn_at and t.p < a_warn:
            level = "warn"
        rows.append(DriftRow(**t.row, threshold=alert_at, level=level))

    rows.sort(key=lambda r: (r.app, r.request_model, _ORDER.get(r.metric, 99), r.statistic))
    return rows


def _rate_test(
    head: dict[str, Any], metric: str, x: Sequence[int], n: Sequence[int], what: str
) -> _Test:
    """x, n: [reference, current] events and trials."""
    (x_ref, x_cur), (n_ref, n_cur) = x, n
    z = two_proportion_z(x_cur, n_cur, x_ref, n_ref)
    p = fisher_exact(x_cur, n_cur, x_ref, n_ref)
    r_cur, r_ref = x_cur / n_cur, x_ref / n_ref
    row = {
        **head,
        "metric": metric,
        "statistic": "z",
        "score": z,
        "p_value": p,
        "current_calls": n_cur,
        "reference_calls": n_ref,
        "current_value": r_cur,
        "reference_value": r_ref,
        "detail": f"{what}: {x_cur}/{n_cur} = {_pct(r_cur)} "
        f"(reference {x_ref}/{n_ref} = {_pct(r_ref)})",
    }
    degenerate = x_cur + x_ref in (0, n_cur + n_ref)
    return _Test(row, abs(z), None, None, p, not degenerate)


def _rate_tests(head: dict[str, Any], g: _Group) -> list[_Test]:
    length = [g.finish.get("length", [0, 0])[w] for w in (0, 1)]
    cf = [g.finish.get("content_filter", [0, 0])[w] for w in (0, 1)]
    return [
        _rate_test(head, "error_rate", g.failed, g.calls, "failed calls"),
        _rate_test(head, "length_rate", length, g.answers, "answers cut at the length limit"),
        _rate_test(head, "content_filter_rate", cf, g.answers, "answers stopped by a filter"),
        _rate_test(head, "refusal_rate", g.refused, g.calls, "calls refused"),
    ]


def _mix_test(head: dict[str, Any], g: _Group, cfg: DriftConfig) -> _Test:
    names = sorted(g.finish, key=lambda k: -sum(g.finish[k]))
    ref = [g.finish[k][0] for k in names]
    cur = [g.finish[k][1] for k in names]
    d = js_distance(cur, ref)
    _, df, p = chi2_homogeneity(cur, ref, ordered=False)
    n, m = sum(cur), sum(ref)
    shifts = sorted(
        names, key=lambda k: -abs(g.finish[k][1] / max(n, 1) - g.finish[k][0] / max(m, 1))
    )
    detail = ", ".join(
        f"{k} {_pct(g.finish[k][0] / max(m, 1))} -> {_pct(g.finish[k][1] / max(n, 1))}"
        for k in shifts[:4]
    )
    row = {
        **head,
        "metric": "finish_reason_mix",
        "statistic": "js_distance",
        "score": d,
        "p_value": p,
        "current_calls": n,
        "reference_calls": m,
        "detail": detail,
    }
    return _Test(row, d, cfg.js_warn, cfg.js_alert, p, df > 0)


def _version_rows(head: dict[str, Any], g: _Group) -> list[DriftRow]:
    ref_n, cur_n = g.calls
    new = sorted(
        ((col, val, v) for (col, val), v in g.versions.items() if v[1] and not v[0]),
        key=lambda t: t[2][2],
    )
    common = {
        "metric": "version_change",
        "threshold": 0.0,
        "current_calls": cur_n,
        "reference_calls": ref_n,
    }
    if not new:
        seen = sorted({f"{col}={val}" for (col, val), v in g.versions.items() if v[1]})
        return [
            DriftRow(
                **head,
                **common,
                statistic="new_versions",
                score=0.0,
                level="ok",
                detail="no new version; current: " + (", ".join(seen) or "(none reported)"),
            )
        ]
    out = []
    for col, val, (_, calls, first) in new:
        before = sorted(v for (c, v), cnt in g.versions.items() if c == col and cnt[0])
        out.append(
            DriftRow(
                **head,
                **common,
                statistic=f"new_{col}",
                score=calls / cur_n,
                level="alert",
                current_value=float(calls),
                first_seen=first,
                detail=f"new {col} {val}: first seen {first:%Y-%m-%d %H:%M:%S} UTC, "
                f"{calls} calls ({_pct(calls / cur_n)} of the window); reference had "
                + (", ".join(before) or "none"),
            )
        )
    return out


def _feedback_tests(
    query: Callable[[str], bytes],
    base: dict[str, Any],
    windows: tuple[str, str, str],
    where: str,
    calls: dict[tuple[str, str], list[int]],
    cfg: DriftConfig,
    rows: list[DriftRow],
) -> list[_Test]:
    # (app, model) -> [reference, current] of with_feedback, shown, accepted, shared
    fb: dict[tuple[str, str], dict[str, list[int]]] = {}
    for r in _rows(query, _feedback_sql(*windows, where)):
        d = fb.setdefault((r["app"], r["request_model"]), defaultdict(lambda: [0, 0]))
        for k in ("with_feedback", "shown", "accepted", "shared"):
            d[k][int(r["cur"])] = int(r[k])
    tests = []
    for key, d in sorted(fb.items()):
        head = {**base, "app": key[0], "request_model": key[1]}
        for metric, x, n, gate, what in (
            ("acceptance_rate", d["accepted"], d["shown"], d["shown"],
             "suggestions accepted"),
            ("share_rate", d["shared"], calls[key], d["with_feedback"],
             "calls shared"),
        ):  # fmt: skip
            if max(gate) == 0:
                continue  # no feedback of this kind: nothing to compare
            if min(gate) < cfg.min_feedback_calls:
                rows.append(
                    DriftRow(
                        **head,
                        metric=metric,
                        statistic="calls",
                        score=float(min(gate)),
                        threshold=float(cfg.min_feedback_calls),
                        level="skipped",
                        current_calls=gate[1],
                        reference_calls=gate[0],
                        detail=f"{gate[1]} calls with feedback in the current window, "
                        f"{gate[0]} in the reference: fewer than "
                        f"min_feedback_calls={cfg.min_feedback_calls}",
                    )
                )
                continue
            tests.append(_rate_test(head, metric, x, n, what))
    return tests


def _distribution_tests(
    query: Callable[[str], bytes],
    base: dict[str, Any],
    windows: tuple[str, str, str],
    where: str,
    cfg: DriftConfig,
    rows: list[DriftRow],
) -> list[_Test]:
    found = []
    for r in _rows(query, _psi_sql(*windows, where, cfg.psi_epsilon)):
        n_cur, n_ref = int(r["n_cur"]), int(r["n_ref"])
        head = {**base, "app": r["app"], "request_model": r["request_model"]}
        if min(n_cur, n_ref) < cfg.min_calls:
            rows.append(
                DriftRow(
                    **head,
                    metric=r["metric"],
                    statistic="values",
                    score=float(min(n_cur, n_ref)),
                    threshold=float(cfg.min_calls),
                    level="skipped",
                    current_calls=n_cur,
                    reference_calls=n_ref,
                    detail=f"{n_cur} values in the current window, {n_ref} in the reference: "
                    f"fewer than min_calls={cfg.min_calls}",
                )
            )
            continue
        found.append((head, r))
    if not found:
        return []
    pairs = ", ".join(
        f"({_lit(r['app'])}, {_lit(r['request_model'])}, {_lit(r['metric'])})" for _, r in found
    )
    ks = {
        (r["app"], r["request_model"], r["metric"]): r["ks"]
        for r in _rows(query, _ks_sql(*windows, where, pairs))
    }
    tests = []
    for head, r in found:
        cur = [int(c) for c in r["cur_counts"]]
        ref = [int(c) for c in r["ref_counts"]]
        _, df, p = chi2_homogeneity(cur, ref, ordered=True)
        ks_d, ks_p = _ks_pair(ks.get((r["app"], r["request_model"], r["metric"])))
        psi = float(r["psi"])
        row = {
            **head,
            "metric": r["metric"],
            "statistic": "psi",
            "score": psi,
            "p_value": p,
            "current_calls": int(r["n_cur"]),
            "reference_calls": int(r["n_ref"]),
            "current_value": float(r["mean_cur"]),
            "reference_value": float(r["mean_ref"]),
            "ks_statistic": ks_d,
            "ks_p_value": ks_p,
            "detail": f"mean {_num(r['mean_ref'])} -> {_num(r['mean_cur'])}; "
            f"{len(cur)} bins used, chi-square df {df}",
        }
        tests.append(_Test(row, psi, cfg.psi_warn, cfg.psi_alert, p, df > 0))
    return tests


def _ks_pair(v: Any) -> tuple[float | None, float | None]:
    """(D, p) from the function's named tuple: an object, or a list when the server has
    output_format_json_named_tuples_as_objects off. D = 0 comes back as the smallest double."""
    if isinstance(v, dict):
        d, p = v.get("d_statistic"), v.get("p_value")
    elif isinstance(v, list | tuple) and len(v) == 2:
        d, p = v
    else:
        return None, None
    d = None if d is None else float(d)
    return (0.0 if d is not None and d < 1e-300 else d), (None if p is None else float(p))


def _num(v: Any) -> str:
    x = float(v)
    return f"{x:.4g}"


# -- output --------------------------------------------------------------------------------


def _dt(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    if math.isnan(x):
        return None
    return max(-1e300, min(1e300, x))


def rows_to_jsonl(rows: Iterable[DriftRow]) -> bytes:
    """JSONEachRow for `store.insert("llm_drift", ...)`."""
    out = []
    for r in rows:
        out.append(
            json.dumps(
                {
                    "computed_at": _dt(r.computed_at),
                    "window_start": _dt(r.window_start),
                    "window_end": _dt(r.window_end),
                    "reference_start": _dt(r.reference_start),
                    "app": r.app,
                    "request_model": r.request_model,
                    "metric": r.metric,
                    "statistic": r.statistic,
                    "score": _finite(r.score) or 0.0,
                    "threshold": _finite(r.threshold) or 0.0,
                    "alert": int(r.alert),
                    "level": r.level,
                    "p_value": _finite(r.p_value),
                    "current_calls": r.current_calls,
                    "reference_calls": r.reference_calls,
                    "current_value": _finite(r.current_value),
                    "reference_value": _finite(r.reference_value),
                    "ks_statistic": _finite(r.ks_statistic),
                    "ks_p_value": _finite(r.ks_p_value),
                    "first_seen": _dt(r.first_seen),
                    "detail": r.detail,
                },
                ensure_ascii=False,
            )
        )
    return ("\n".join(out) + "\n").encode() if out else b""


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.2g}" if p >= 1e-300 else "<1e-300"


def _window(d: timedelta) -> str:
    s = int(d.total_seconds())
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % n == 0:
            return f"{s // n}{unit}"
    return f"{s}s"


def _describe(r: DriftRow) -> str:
    if r.metric == "version_change":
        return r.detail
    if r.statistic == "psi":
        ks = (
            f"; KS D {r.ks_statistic:.3f} p {_p(r.ks_p_value)}"
            if r.ks_statistic is not None
            else ""
        )
        return (
            f"PSI {r.score:.3f} (alert at {r.threshold:g}; chi-square p {_p(r.p_value)}{ks}); "
            + r.detail
        )
    if r.statistic == "js_distance":
        return (
            f"JS distance {r.score:.3f} (alert at {r.threshold:g}; chi-square p "
            f"{_p(r.p_value)}); {r.detail}"
        )
    return f"z {r.score:+.2f} (alert at |z| {r.threshold:.2f}; exact p {_p(r.p_value)}); {r.detail}"


def format_report(rows: Sequence[DriftRow]) -> str:
    """Plain text: alerts, then warnings, then a compact summary of the groups that are OK,
    then what was skipped and why."""
    if not rows:
        return "Drift: no calls in either window, nothing to compare."
    r0 = rows[0]
    head = (
        f"Drift at {r0.window_end:%Y-%m-%d %H:%M:%S} UTC: current window "
        f"{r0.window_start:%Y-%m-%d %H:%M} - {r0.window_end:%Y-%m-%d %H:%M} "
        f"({_window(r0.window_end - r0.window_start)}) against "
        f"{r0.reference_start:%Y-%m-%d %H:%M} - {r0.window_start:%Y-%m-%d %H:%M} "
        f"({_window(r0.window_start - r0.reference_start)})"
    )
    by_level: dict[str, list[DriftRow]] = defaultdict(list)
    for r in rows:
        by_level[r.level].append(r)
    groups = sorted({(r.app, r.request_model) for r in rows})
    skipped_groups = {
        (r.app, r.request_model) for r in by_level["skipped"] if r.metric == "sample_size"
    }
    evaluated = [g for g in groups if g not in skipped_groups]
    out = [
        head,
        f"{len(evaluated)} group(s) evaluated, {len(skipped_groups)} skipped; "
        f"{len(by_level['alert'])} alert(s), {len(by_level['warn'])} warning(s).",
    ]

    def name(r: DriftRow) -> str:
        return f"{r.app or '(no app)'} / {r.request_model or '(no model)'}"

    for level, title in (("alert", "ALERTS"), ("warn", "WARNINGS")):
        if by_level[level]:
            out += ["", f"{title} ({len(by_level[level])})"]
            for r in by_level[level]:
                out.append(f"  {name(r)}  {r.metric}: {_describe(r)}")
    flagged = {(r.app, r.request_model) for r in by_level["alert"] + by_level["warn"]}
    if evaluated:
        out += ["", "OK"]
        for g in evaluated:
            mine = [r for r in by_level["ok"] if (r.app, r.request_model) == g]
            if not mine:
                continue
            psi = max((r.score for r in mine if r.statistic == "psi"), default=None)
            js = max((r.score for r in mine if r.statistic == "js_distance"), default=None)
            z = max((abs(r.score) for r in mine if r.statistic == "z"), default=None)
            calls = next((r for r in mine if r.metric == "version_change"), None)
            parts = [f"{len(mine)} metric(s) ok"]
            if psi is not None:
                parts.append(f"max PSI {psi:.3f}")
            if js is not None:
                parts.append(f"JS {js:.3f}")
            if z is not None:
                parts.append(f"max |z| {z:.2f}")
            if calls is not None:
                parts.append(f"{calls.current_calls} calls vs {calls.reference_calls}")
            more = " (plus the flags above)" if g in flagged else ""
            out.append(f"  {g[0] or '(no app)'} / {g[1] or '(no model)'}: {', '.join(parts)}{more}")
    if by_level["skipped"]:
        out += ["", f"SKIPPED ({len(by_level['skipped'])})"]
        for r in by_level["skipped"]:
            what = "group" if r.metric == "sample_size" else r.metric
            out.append(f"  {name(r)}  {what}: {r.detail}")
    return "\n".join(out)
