"""The drift job (collectors/drift/) on chDB through the real migrations.

Synthetic traffic of known shape is generated inside ClickHouse (`INSERT ... SELECT FROM
numbers()`, every draw a hash of a seed and the row number, so it is reproducible), plus a
few rows built as CallRecords. One `run_drift` over groups that each shift one thing must
flag that thing and nothing it does not depend on; 150 runs over traffic that did not change
must (almost) never alert.

chDB hosts one engine per process: one store for the module, closed at the end.
"""

from __future__ import annotations

import json
import math
import subprocess
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from collectors import drift
from collectors.drift import (
    DriftConfig,
    DriftRow,
    format_report,
    queries,
    rows_to_jsonl,
    run_drift,
)
from gateway.recording.money import usd
from gateway.recording.record import CallRecord, encode_line
from gateway.recording.store import migrate
from gateway.recording.store.chdb_store import ChdbStore
from tests.conftest import ROOT
from tests.prereqs import program

DASHBOARD = ROOT / "dashboards" / "grafana" / "drift.json"
RULES = ROOT / "dashboards" / "prometheus" / "drift-alerts.yml"
RUNBOOKS = "https://github.com/llm-gateway/llm-gateway/blob/main/docs/runbooks.md"

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)  # the shift scenarios' evaluation time
HOUR, WEEK = timedelta(hours=1), timedelta(days=7)
NULL_BASE = datetime(2019, 1, 7, 12, 0, tzinfo=UTC)  # unchanged traffic, one seed every 9 days
NULL_PERIOD = timedelta(days=9)
NULL_SEEDS = 150


# ------------------------------------------------------------------------------ traffic
@dataclass(frozen=True)
class Shape:
    """How calls are drawn. Latency and time to first token do not depend on the tokens, so
    that a shift of one is not a shift of the others; cost does (price x tokens)."""

    in_median: float = 800
    in_sigma: float = 1.1
    out_median: float = 250
    out_sigma: float = 0.9
    latency_s: float = 3.0
    latency_sigma: float = 0.8
    ttft_ms: float = 350
    ttft_sigma: float = 0.4
    stream: float = 0.6  # share of calls streamed (they have a ttft)
    error: float = 0.01  # 500 server_error
    refusal_error: float = 0.002  # 400 content_policy_violation
    length: float = 0.03  # finish reasons of the answers
    content_filter: float = 0.005
    tool_calls: float = 0.05
    fingerprints: tuple[tuple[str, float], ...] = (("fp_a1", 0.7), ("fp_b2", 0.3))
    price_in: float | None = 1.5e-7  # None: an unpriced model (cost NULL)
    price_out: float = 6e-7
    feedback: float = 0.0  # share of calls shown a suggestion
    accept: float = 0.35  # of those, accepted
    share: float = 0.05  # of those, shared
    say_no: bool = False  # a suggestion not accepted gets `suggestion_accepted: false`


def _u(k: int) -> str:
    """A uniform draw in (0, 1) from the row's seed and number; `k` names the draw."""
    return f"((cityHash64(seed, number, {k}) + 0.5) / 18446744073709551616)"


def _normal(k: int) -> str:
    return f"(sqrt(-2 * ln({_u(k)})) * cos(2 * pi() * {_u(k + 1)}))"


def _lit(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def insert_calls(
    store: ChdbStore,
    app: str,
    model: str,
    start: datetime,
    end: datetime,
    n: int,
    shape: Shape = Shape(),
    seeds: int = 1,
    period: timedelta = timedelta(0),
) -> str:
    """`n` calls spread evenly over [start, end), `seeds` times: copy s shifted by s x
    `period` with its own draws. Returns the request_id prefix of the rows."""
    tag = f"{app}/{model}/{_ms(start)}/{n}/{seeds}"
    seed = zlib.crc32(tag.encode())
    fps = shape.fingerprints
    cum, acc = [], 0.0
    for name, p in fps:
        acc += p
        cum.append(f"{_u(9)} < {acc!r}, {_lit(name)}")
    fingerprint = f"multiIf({', '.join(cum)}, '')" if fps else "''"
    price = (
        f"{shape.price_in!r} * input_tokens + {shape.price_out!r} * output_tokens"
        if shape.price_in is not None
        else "NULL"
    )
    fr_length = shape.length
    fr_cf = fr_length + shape.content_filter
    fr_tool = fr_cf + shape.tool_calls
    store.command(
        f"""
        INSERT INTO {store.database}.llm_calls
            (request_id, started_at, app, request_model, response_model, system_fingerprint,
             provider, provider_kind, operation, stream, status_code, outcome, error_type,
             finish_reason, input_tokens, output_tokens, cost_usd, latency_ms, ttft_ms)
        SELECT
            concat({_lit(tag)}, '#', toString(number)) AS request_id,
            fromUnixTimestamp64Milli(toInt64(
                {_ms(start)} + s * {int(period.total_seconds() * 1000)}
                + {_u(0)} * {_ms(end) - _ms(start)}), 'UTC') AS started_at,
            {_lit(app)} AS app,
            {_lit(model)} AS request_model,
            concat(request_model, '-2024-08-06') AS response_model,
            {fingerprint} AS system_fingerprint,
            'openai' AS provider,
            'openai' AS provider_kind,
            'chat' AS operation,
            {_u(10)} < {shape.stream!r} AS stream,
            multiIf(e < {shape.error!r}, 500, e < {shape.error + shape.refusal_error!r}, 400, 200)
                AS status_code,
            if(status_code >= 400, 'upstream_error', 'ok') AS outcome,
            multiIf(status_code = 500, 'server_error',
                    status_code = 400, 'content_policy_violation', '') AS error_type,
            multiIf(status_code >= 400, '', fr < {fr_length!r}, 'length',
                    fr < {fr_cf!r}, 'content_filter', fr < {fr_tool!r}, 'tool_calls', 'stop')
                AS finish_reason,
            toUInt64(round(exp(ln({shape.in_median!r}) + {shape.in_sigma!r} * {_normal(1)})))
                AS input_tokens,
            if(status_code >= 400, 0, toUInt64(round(
                exp(ln({shape.out_median!r}) + {shape.out_sigma!r} * {_normal(3)}))))
                AS output_tokens,
            {price} AS cost_usd,
            1000 * exp(ln({shape.latency_s!r}) + {shape.latency_sigma!r} * {_normal(5)})
                AS latency_ms,
            if(stream, exp(ln({shape.ttft_ms!r}) + {shape.ttft_sigma!r} * {_normal(7)}), NULL)
                AS ttft_ms
        FROM
        (
            SELECT number, intDiv(number, {n}) AS s, {seed} AS seed,
                   {_u(11)} AS e, {_u(12)} AS fr
            FROM numbers({n * seeds})
        )
        """
    )
    if shape.feedback > 0:
        insert_feedback(store, tag, seed, shape)
    return tag


def insert_feedback(store: ChdbStore, tag: str, seed: int, shape: Shape) -> None:
    """A `suggestion_shown` for a `shape.feedback` share of the calls tagged `tag`, then a
    `suggestion_accepted` and a `share` with their probabilities, seconds after the call
    (`say_no`: a `suggestion_accepted` with value 0 for each suggestion not accepted)."""
    db = store.database

    def u(k: int) -> str:
        return f"((cityHash64({seed}, request_id, {k}) + 0.5) / 18446744073709551616)"

    store.command(
        f"""
        INSERT INTO {db}.llm_feedback (event_id, ts, request_id, app, name, value, source)
        SELECT concat(request_id, ':', ev.1) AS event_id, started_at + 5 AS ts, request_id,
               app, ev.1 AS name, ev.2 AS value, 'user' AS source
        FROM
        (
            SELECT request_id, started_at, app,
                   arrayJoin(arrayConcat([('suggestion_shown', 1)],
                                         multiIf({u(2)} < {shape.accept!r},
                                                 [('suggestion_accepted', 1)],
                                                 {int(shape.say_no)} = 1,
                                                 [('suggestion_accepted', 0)], []),
                                         if({u(3)} < {shape.share!r}, [('share', 1)], []))) AS ev
            FROM {db}.llm_calls
            WHERE startsWith(request_id, {_lit(tag + "#")}) AND {u(1)} < {shape.feedback!r}
        )
        """
    )


def steady(
    store: ChdbStore,
    app: str,
    model: str,
    now: datetime,
    n_ref: int,
    n_cur: int,
    ref: Shape = Shape(),
    cur: Shape | None = None,
    seeds: int = 1,
    period: timedelta = timedelta(0),
) -> None:
    """A group's reference week and current hour (at `now`), each with its shape."""
    insert_calls(store, app, model, now - HOUR - WEEK, now - HOUR, n_ref, ref, seeds, period)
    insert_calls(store, app, model, now - HOUR, now, n_cur, cur or ref, seeds, period)


# ------------------------------------------------------------------------------ fixture
@dataclass
class Run:
    store: ChdbStore
    rows: list[DriftRow]

    def group(self, app: str, model: str = "gpt-4o") -> list[DriftRow]:
        return [r for r in self.rows if (r.app, r.request_model) == (app, model)]

    def flagged(self, app: str, model: str = "gpt-4o") -> dict[str, str]:
        return {r.metric: r.level for r in self.group(app, model) if r.level in ("warn", "alert")}

    def row(self, app: str, metric: str, model: str = "gpt-4o") -> DriftRow:
        found = [r for r in self.group(app, model) if r.metric == metric]
        assert len(found) == 1, (app, metric, found)
        return found[0]

    def sql(self, sql: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.store.query(sql).splitlines() if x.strip()]


FEEDBACK = Shape(feedback=0.7, accept=0.4, share=0.05)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    s = ChdbStore(str(tmp_path_factory.mktemp("drift") / "db"), "drift")
    try:
        migrate(s)
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def run(store: ChdbStore) -> Run:
    """One drift run at NOW over groups that each shift one thing, and groups that don't."""
    steady(store, "shift-tokens", "gpt-4o", NOW, 3000, 400, cur=Shape(out_median=750))
    steady(store, "shift-latency", "gpt-4o", NOW, 3000, 400, cur=Shape(latency_s=7.5))
    steady(
        store, "shift-version", "gpt-4o", NOW, 3000, 400,
        cur=Shape(fingerprints=(("fp_a1", 0.35), ("fp_b2", 0.15), ("fp_new", 0.5))),
    )  # fmt: skip
    steady(store, "shift-length", "gpt-4o", NOW, 3000, 400, cur=Shape(length=0.15))
    steady(
        store, "shift-accept", "gpt-4o", NOW, 3000, 500, ref=FEEDBACK,
        cur=replace(FEEDBACK, accept=0.15),
    )  # fmt: skip
    steady(store, "steady", "gpt-4o", NOW, 3000, 400, ref=FEEDBACK)
    # changes for the better: reported, not alerted
    steady(store, "faster", "gpt-4o", NOW, 3000, 400, cur=Shape(latency_s=1.2))
    steady(store, "cheaper", "gpt-4o", NOW, 3000, 400,
           cur=Shape(price_in=0.5e-7, price_out=2e-7))  # fmt: skip
    steady(store, "fewer-errors", "gpt-4o", NOW, 3000, 600, ref=Shape(error=0.08),
           cur=Shape(error=0.005))  # fmt: skip
    steady(store, "accept-rises", "gpt-4o", NOW, 3000, 500, ref=replace(FEEDBACK, accept=0.15),
           cur=FEEDBACK)  # fmt: skip
    # faster for most calls, but the slowest got much slower: not an improvement
    steady(store, "fast-but-tail", "gpt-4o", NOW, 3000, 400,
           cur=Shape(latency_s=1.5, latency_sigma=1.8))  # fmt: skip
    # every suggestion not accepted is said so (`suggestion_accepted: false`): a no
    steady(store, "say-no", "gpt-4o", NOW, 3000, 500, ref=replace(FEEDBACK, say_no=True),
           cur=replace(FEEDBACK, accept=0.15, say_no=True))  # fmt: skip
    # too small: 50 calls this hour; and a model with no reference week at all
    steady(store, "small", "gpt-4o", NOW, 3000, 50)
    insert_calls(store, "small", "o3-new", NOW - HOUR, NOW, 400)
    # feedback on too few calls for the rates to be compared
    steady(store, "few-feedback", "gpt-4o", NOW, 3000, 400, ref=replace(FEEDBACK, feedback=0.1))
    # calls built the way the gateway builds them: refusals seen as errors, no fingerprint
    recs = []
    for i in range(600):
        cur = i % 2 == 0
        t = (NOW - timedelta(minutes=30) if cur else NOW - timedelta(days=3)).timestamp()
        refused = cur and i % 20 == 0  # 10% of the current calls, none before
        recs.append(
            CallRecord(
                request_id=f"rec-{i}",
                started_at=t + i / 1000,
                app="records",
                request_model="claude-haiku-4-5",
                response_model="claude-haiku-4-5-20251001",
                provider="anthropic",
                operation="chat",
                status_code=400 if refused else 200,
                outcome="upstream_error" if refused else "ok",
                error_type="content_filter" if refused else "",
                finish_reason="" if refused else "stop",
                input_tokens=100 + i % 7,
                output_tokens=0 if refused else 50 + i % 11,
                latency_ms=800.0 + i % 13,
            )
        )
    store.insert("llm_calls", b"".join(encode_line(r) for r in recs))
    rows = run_drift(lambda sql: store.query(sql, "JSONEachRow"), now=NOW)
    store.insert("llm_drift", rows_to_jsonl(rows))
    return Run(store, rows)


# ------------------------------------------------------------------------------ shifts
def test_cost_means_print_as_money(run: Run):
    row = run.row("shift-tokens", "cost")
    means = row.detail.split(";")[0]
    assert means == f"mean {usd(row.reference_value)} -> {usd(row.current_value)}", means
    assert "e-" not in means and means.startswith("mean 0.000")


def test_longer_answers_flag_output_tokens(run: Run):
    flagged = run.flagged("shift-tokens")
    assert flagged.get("output_tokens") == "alert", flagged
    # cost follows the tokens; nothing else depends on them
    assert set(flagged) <= {"output_tokens", "cost"}, flagged
    row = run.row("shift-tokens", "output_tokens")
    assert row.statistic == "psi" and row.score >= 0.2 and row.threshold == 0.2
    assert row.p_value is not None and row.p_value < 1e-6
    assert row.ks_p_value is not None and row.ks_p_value < 1e-6 and row.ks_statistic > 0.2
    assert row.current_value > 2 * row.reference_value  # means
    assert run.row("shift-tokens", "input_tokens").level == "ok"


def test_slower_latency_is_flagged_and_ttft_is_not(run: Run):
    flagged = run.flagged("shift-latency")
    assert flagged == {"latency": "alert"}, flagged
    assert run.row("shift-latency", "ttft").level == "ok"
    assert run.row("shift-latency", "latency").current_value > 2  # seconds


def test_changes_for_the_better_are_reported_not_alerted(run: Run):
    for app, metric in (
        ("faster", "latency"),
        ("cheaper", "cost"),
        ("fewer-errors", "error_rate"),
        ("accept-rises", "acceptance_rate"),
    ):
        flagged = run.flagged(app)
        assert "alert" not in flagged.values() and "warn" not in flagged.values(), flagged
        row = run.row(app, metric)
        assert row.level == "improved" and not row.alert, row
        assert abs(row.score) >= row.threshold and row.p_value is not None and row.p_value < 1e-6
    assert run.row("faster", "latency").current_value < 2  # seconds, from 3
    # faster for most calls, slower in the tail: still an alert
    assert run.row("fast-but-tail", "latency").level == "alert"
    (medians,) = run.sql(
        "SELECT quantileExactIf(0.5)(latency_ms, started_at >= toDateTime64('2024-03-01 "
        "11:00:00', 3, 'UTC')) AS now, quantileExactIf(0.5)(latency_ms, started_at < "
        "toDateTime64('2024-03-01 11:00:00', 3, 'UTC')) AS before FROM llm_calls FINAL "
        "WHERE app = 'fast-but-tail' AND status_code = 200"
    )
    assert medians["now"] < medians["before"] / 1.5  # most calls did get faster
    text = format_report(run.rows)
    improved = text.split("IMPROVED (")[1].split("\n\n")[0]
    assert "faster / gpt-4o  latency: PSI" in improved and "reported, not alerted" in improved
    assert "fast-but-tail" not in improved
    stored = run.sql("SELECT level, alert FROM llm_drift WHERE app = 'faster' AND "
                     "metric = 'latency'")  # fmt: skip
    assert stored and all(r == {"level": "improved", "alert": 0} for r in stored)


def test_a_suggestion_declined_with_false_is_not_an_acceptance(run: Run):
    """Every suggestion gets `suggestion_accepted`, true or false: the rate is the trues."""
    row = run.row("say-no", "acceptance_rate")
    assert row.current_value == pytest.approx(0.15, abs=0.05)
    assert row.reference_value == pytest.approx(0.4, abs=0.03)
    assert row.level == "alert" and row.score < 0


def test_new_system_fingerprint_is_a_version_change(run: Run):
    flagged = run.flagged("shift-version")
    assert flagged == {"version_change": "alert"}, flagged
    row = run.row("shift-version", "version_change")
    assert row.statistic == "new_system_fingerprint" and "fp_new" in row.detail
    first = run.sql(
        "SELECT toString(min(started_at)) AS t, count() AS n FROM llm_calls FINAL "
        "WHERE app = 'shift-version' AND system_fingerprint = 'fp_new'"
    )[0]
    assert row.first_seen == datetime.fromisoformat(first["t"]).replace(tzinfo=UTC)
    assert row.first_seen >= NOW - HOUR
    assert row.score == pytest.approx(int(first["n"]) / row.current_calls)
    # the other groups keep their versions: one `new_versions` row, score 0, ok
    ok = run.row("steady", "version_change")
    assert (ok.statistic, ok.score, ok.level) == ("new_versions", 0.0, "ok")


def test_more_length_cutoffs(run: Run):
    flagged = run.flagged("shift-length")
    assert flagged.get("length_rate") == "alert", flagged
    assert set(flagged) <= {"length_rate", "finish_reason_mix"}, flagged
    row = run.row("shift-length", "length_rate")
    assert row.statistic == "z" and row.score > row.threshold and row.p_value < 1e-6
    assert row.current_value > 0.1 > 0.05 > row.reference_value
    mix = run.row("shift-length", "finish_reason_mix")
    assert mix.statistic == "js_distance" and "length" in mix.detail


def test_falling_acceptance(run: Run):
    flagged = run.flagged("shift-accept")
    assert flagged == {"acceptance_rate": "alert"}, flagged
    row = run.row("shift-accept", "acceptance_rate")
    assert row.score < -row.threshold  # z is current minus reference: it fell
    assert row.current_value == pytest.approx(0.15, abs=0.05)
    assert row.reference_value == pytest.approx(0.4, abs=0.03)
    assert run.row("shift-accept", "share_rate").level == "ok"


def test_refusals_recorded_as_errors(run: Run):
    flagged = run.flagged("records", "claude-haiku-4-5")
    assert flagged.get("refusal_rate") == "alert", flagged
    assert flagged.get("error_rate") == "alert", flagged  # a refused call failed, too
    row = run.row("records", "refusal_rate", "claude-haiku-4-5")
    assert (row.current_value, row.reference_value) == (0.1, 0.0)
    # never streamed, never priced, no feedback: no ttft, cost or feedback rows at all
    metrics_seen = {r.metric for r in run.group("records", "claude-haiku-4-5")}
    assert not metrics_seen & {"ttft", "cost", "acceptance_rate", "share_rate"}
    assert "input_tokens" in metrics_seen


def test_unchanged_group_is_all_ok(run: Run):
    rows = run.group("steady")
    assert {r.level for r in rows} == {"ok"}, [(r.metric, r.level) for r in rows]
    assert {r.metric for r in rows} == {
        "input_tokens", "output_tokens", "latency", "ttft", "cost", "finish_reason_mix",
        "error_rate", "length_rate", "content_filter_rate", "refusal_rate",
        "acceptance_rate", "share_rate", "version_change",
    }  # fmt: skip


def test_small_groups_are_skipped(run: Run):
    small = run.group("small")
    assert [(r.metric, r.level) for r in small] == [("sample_size", "skipped")]
    assert small[0].current_calls == 50 and small[0].reference_calls == 3000
    assert "50 calls in the current window" in small[0].detail
    new = run.group("small", "o3-new")
    assert [(r.metric, r.level) for r in new] == [("sample_size", "skipped")]
    assert "0 in the reference window" in new[0].detail
    few = {r.metric: r for r in run.group("few-feedback")}
    assert few["acceptance_rate"].level == "skipped"
    assert "min_feedback_calls=100" in few["acceptance_rate"].detail
    assert few["share_rate"].level == "skipped"
    assert few["output_tokens"].level == "ok"


def test_min_calls_is_configurable(run: Run):
    cfg = DriftConfig(min_calls=40)
    rows = run_drift(lambda sql: run.store.query(sql), now=NOW, cfg=cfg)
    small = [r for r in rows if (r.app, r.request_model) == ("small", "gpt-4o")]
    assert "output_tokens" in {r.metric for r in small}
    assert all(r.level != "skipped" or r.metric == "ttft" for r in small)


def reference_bins(run: Run, app: str, metric: str) -> list[float]:
    """The bin boundaries a run used for a group's metric (the reference's deciles)."""
    cur, end = "toDateTime64('2024-03-01 11:00:00', 3, 'UTC')", queries.ts_sql(NOW)
    start = "toDateTime64('2024-02-23 11:00:00', 3, 'UTC')"
    sql = queries.psi_sql(start, cur, end, f"app = '{app}'", DriftConfig().psi_epsilon)
    (row,) = [r for r in run.sql(sql) if r["metric"] == metric]
    return [float(b) for b in row["bounds"]]


def test_psi_matches_a_computation_from_the_raw_values(run: Run):
    values = run.sql(
        "SELECT started_at >= toDateTime64('2024-03-01 11:00:00', 3, 'UTC') AS cur, "
        "output_tokens AS v FROM llm_calls FINAL WHERE app = 'shift-tokens' "
        "AND started_at >= toDateTime64('2024-02-23 11:00:00', 3, 'UTC') "
        "AND status_code < 400 AND outcome = 'ok'"
    )
    bounds = reference_bins(run, "shift-tokens", "output_tokens")
    ref = sorted(int(r["v"]) for r in values if not int(r["cur"]))
    # the boundaries are the reference's deciles (from the stored values, not buckets)
    for i, b in enumerate(bounds):
        share = sum(v <= b for v in ref) / len(ref)
        assert abs(share - (i + 1) / drift.BINS) < 0.02, (b, share)
    k = len(bounds) + 1
    hist = {0: [0] * k, 1: [0] * k}
    for r in values:
        hist[int(r["cur"])][sum(int(r["v"]) > b for b in bounds)] += 1
    n, m = sum(hist[1]), sum(hist[0])
    eps = DriftConfig().psi_epsilon
    psi = 0.0
    for c, r in zip(hist[1], hist[0], strict=True):
        if c or r:
            p, q = max(c / n, eps), max(r / m, eps)
            psi += (p - q) * math.log(p / q)
    row = run.row("shift-tokens", "output_tokens")
    assert row.score == pytest.approx(psi, rel=1e-9)
    assert (row.current_calls, row.reference_calls) == (n, m)


# ------------------------------------------------------------------------------ output
def test_rows_are_written_to_llm_drift_and_readable(run: Run):
    stored = run.sql(
        "SELECT * FROM llm_drift WHERE computed_at = toDateTime64('2024-03-01 12:00:00', 3, 'UTC')"
    )
    # the rows that say something; `skipped` ones (too few calls) are for the report only
    assert len(stored) == len([r for r in run.rows if r.level != "skipped"])
    assert any(r.level == "skipped" for r in run.rows)
    by_key = {(r["app"], r["request_model"], r["metric"], r["statistic"]): r for r in stored}
    version = by_key[("shift-version", "gpt-4o", "version_change", "new_system_fingerprint")]
    assert version["alert"] == 1 and version["level"] == "alert"
    row = run.row("shift-version", "version_change")
    assert version["first_seen"] == row.first_seen.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    assert version["window_start"] == "2024-03-01 11:00:00.000"
    assert version["reference_start"] == "2024-02-23 11:00:00.000"
    tokens = by_key[("shift-tokens", "gpt-4o", "output_tokens", "psi")]
    assert tokens["score"] == pytest.approx(run.row("shift-tokens", "output_tokens").score)
    assert tokens["p_value"] is not None and tokens["ks_p_value"] is not None
    assert ("small", "gpt-4o", "sample_size", "calls") not in by_key
    assert not [r for r in stored if r["level"] == "skipped"]
    alerts = run.sql(
        "SELECT app, metric FROM llm_drift WHERE alert = 1 AND app LIKE 'shift-%' "
        "ORDER BY app, metric"
    )
    assert {(r["app"], r["metric"]) for r in alerts} >= {
        ("shift-tokens", "output_tokens"), ("shift-latency", "latency"),
        ("shift-version", "version_change"), ("shift-length", "length_rate"),
        ("shift-accept", "acceptance_rate"),
    }  # fmt: skip


def test_report_lists_alerts_then_warnings_then_ok_then_skipped(run: Run):
    text = format_report(run.rows)
    assert text.startswith("Drift at 2024-03-01 12:00:00 UTC")
    sections = [text.index(s) for s in ("\nALERTS (", "\nOK\n", "\nSKIPPED (")]
    assert sections == sorted(sections)
    alerts = text[sections[0] : sections[1]]
    for needle in ("shift-tokens / gpt-4o  output_tokens: PSI", "fp_new",
                   "shift-length / gpt-4o  length_rate: z +", "acceptance_rate: z -"):  # fmt: skip
        assert needle in alerts, needle
    assert "steady / gpt-4o: 13 metric(s) ok" in text
    assert "small / gpt-4o  group: 50 calls in the current window" in text
    assert "few-feedback / gpt-4o  acceptance_rate:" in text
    assert format_report([]).startswith("Drift: no calls")
    warn = replace(run.row("steady", "latency"), level="warn")
    text = format_report([*run.rows, warn])
    assert text.index("\nALERTS (") < text.index("\nWARNINGS (1)") < text.index("\nOK\n")


def test_empty_store_and_default_now(store: ChdbStore):
    assert run_drift(lambda sql: store.query(sql), now=datetime(2001, 1, 1, tzinfo=UTC)) == []
    rows = run_drift(lambda sql: store.query(sql))  # now: the current time, nothing there
    assert rows == []


# ------------------------------------------------------------------------------ false alarms
def test_unchanged_traffic_rarely_alerts(store: ChdbStore):
    """150 runs, each over 4 groups of traffic that did not change (small and large, narrow
    and wide distributions, rare events, feedback): runs with any alert stay below 1%."""
    common = {"seeds": NULL_SEEDS, "period": NULL_PERIOD}
    now0 = NULL_BASE
    steady(store, "null-chat", "gpt-4o-mini", now0, 1500, 220,
           ref=Shape(latency_sigma=1.8, feedback=0.8), **common)  # fmt: skip
    steady(store, "null-chat", "gpt-4o", now0, 3000, 600, ref=FEEDBACK, **common)
    steady(store, "null-batch", "claude-haiku-4-5", now0, 6000, 1000,
           ref=Shape(stream=0, fingerprints=(), price_in=None), **common)  # fmt: skip
    steady(store, "null-batch", "llama-local", now0, 700, 300,
           ref=Shape(error=0.05, content_filter=0.003, refusal_error=0.005,
                     fingerprints=(("fp_a1", 0.98), ("fp_rare", 0.02))), **common)  # fmt: skip

    alert_runs, warn_runs, tests_per_run, latency_psi = [], 0, Counter(), []
    for s in range(NULL_SEEDS):
        rows = run_drift(lambda sql: store.query(sql), now=now0 + s * NULL_PERIOD)
        assert len({(r.app, r.request_model) for r in rows}) == 4, s
        assert not [r for r in rows if r.level == "skipped" and r.metric == "sample_size"]
        tests_per_run[sum(r.p_value is not None for r in rows)] += 1
        latency_psi += [r.score for r in rows if r.metric == "latency"]
        alerts = [(r.app, r.request_model, r.metric, r.score, r.p_value) for r in rows if r.alert]
        if alerts:
            alert_runs.append((s, alerts))
        warn_runs += any(r.level == "warn" for r in rows)
    print(f"runs with an alert: {len(alert_runs)}/{NULL_SEEDS}, with a warning: {warn_runs}, "
          f"tests per run: {dict(tests_per_run)}")  # fmt: skip
    assert len(alert_runs) / NULL_SEEDS < 0.01, alert_runs
    assert warn_runs / NULL_SEEDS < 0.10  # warn_alpha = 0.05 family-wise, approximately
    assert min(tests_per_run) >= 40  # the 4 groups were really tested
    # the same distribution in both windows: the reference's decile bins keep PSI small
    # (about 9 x (1/n + 1/m): 0.05 for 220 calls against 1,500), far from the alert at 0.2
    assert len(latency_psi) == 4 * NULL_SEEDS and max(latency_psi) < 0.2
    assert sorted(latency_psi)[len(latency_psi) // 2] < 0.06


# ------------------------------------------------------------------------------ statistics
def test_statistics_against_known_values():
    assert drift.chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-6)
    assert drift.chi2_sf(18.307038053275146, 10) == pytest.approx(0.05, rel=1e-6)
    assert drift.chi2_sf(0.0, 3) == 1.0 and drift.chi2_sf(1e4, 3) < 1e-300
    assert drift.chi2_sf(2.0, 0) == 1.0
    # Fisher's lady tasting tea: [[3, 1], [1, 3]], two-sided 0.4857
    assert drift.fisher_exact(3, 4, 1, 4) == pytest.approx(0.4857142857, rel=1e-6)
    assert drift.fisher_exact(0, 100, 0, 1000) == 1.0
    assert drift.fisher_exact(30, 100, 30, 1000) < 1e-10 < drift.fisher_exact(12, 100, 100, 1000)
    # 5 rare events where 1 was expected: z = 3.8 (normal p 1.3e-4), exact p 0.4%
    assert drift.two_proportion_z(5, 200, 50, 10000) == pytest.approx(3.824, abs=1e-3)
    assert drift.fisher_exact(5, 200, 50, 10000) == pytest.approx(0.00433, rel=1e-2)
    assert drift.z_for(0.05) == pytest.approx(1.959964, rel=1e-6)
    assert drift.js_distance([10, 0], [0, 10]) == pytest.approx(1.0)
    assert drift.js_distance([5, 5], [50, 50]) == 0.0
    stat, df, p = drift.chi2_homogeneity([50, 50], [500, 500], ordered=True)
    assert (stat, df, p) == (0.0, 1, 1.0)
    # sparse bins are merged to >= 5 expected calls per window before the test
    _, df, _ = drift.chi2_homogeneity([10, 0, 0, 80, 0, 10], [100, 1, 1, 800, 5, 93], True)
    assert df == 2  # (10, 100) | (0, 1) + (0, 1) + (80, 800) | (0, 5) + (10, 93)
    _, df, p = drift.chi2_homogeneity([1, 0, 0, 99, 0, 1], [10, 1, 1, 980, 5, 3], True)
    assert (df, p) == (0, 1.0)  # all merged into one bin: nothing to test


# Two-sided p-values computed once by scipy 1.18.1,
# `scipy.stats.fisher_exact([[x1, n1 - x1], [x2, n2 - x2]]).pvalue`: the sum of the
# probabilities of the tables no more likely than the observed one (not twice a tail).
FISHER_SCIPY = [
    ((3, 4, 1, 4), 0.48571428571428565),
    ((5, 200, 50, 10000), 0.004332344775887313),
    ((12, 100, 100, 1000), 0.4904712263947797),
    ((2, 7, 8, 9), 0.03496503496503497),
    ((1, 10, 6, 12), 0.07430340557275542),
    ((0, 50, 7, 60), 0.01527542079262647),
    ((40, 400, 60, 3000), 1.9463214377414152e-13),
    ((7, 1000, 3, 1000), 0.342516446750414),
    ((30, 100, 30, 1000), 1.0791465650168774e-17),
    ((5, 10, 5, 10), 1.0),
    ((3, 9, 2, 6), 1.0),
    ((11, 25, 0, 3), 0.25793650793650796),
    ((150, 500, 1200, 5000), 0.003820198354772467),
]


@pytest.mark.parametrize(("table", "p"), FISHER_SCIPY)
def test_fisher_exact_is_the_standard_two_sided_test(table: tuple[int, int, int, int], p: float):
    assert drift.fisher_exact(*table) == pytest.approx(p, rel=1e-9)
    x1, n1, x2, n2 = table
    assert drift.fisher_exact(x2, n2, x1, n1) == pytest.approx(p, rel=1e-9)  # symmetric


def test_direction_from_binned_counts():
    shift, up, down = drift.direction([0, 0, 100], [100, 0, 0])  # all moved up
    assert shift == 1.0 and up > 10 and down == 0.0
    shift, up, down = drift.direction([100, 0, 0], [0, 0, 100])  # all moved down
    assert shift == -1.0 and up == 0.0 and down > 10
    assert drift.direction([50, 50], [50, 50]) == (0.0, 0.0, 0.0)
    # the middle moved down, the top grew (10% -> 20% of 1,000 each): lower on the whole,
    # but a tail worse by 0.1 / sqrt(0.15 * 0.85 * 2 / 1000) = 6.3 standard errors
    shift, up, _ = drift.direction([400, 300, 100, 200], [200, 300, 400, 100])
    assert shift < 0 and up == pytest.approx(0.1 / math.sqrt(0.15 * 0.85 * 0.002))


def test_config_is_validated():
    with pytest.raises(ValueError, match="positive"):
        DriftConfig(current_window=timedelta(0))
    with pytest.raises(ValueError, match="alpha"):
        DriftConfig(alpha=0.1, warn_alpha=0.05)
    assert DriftConfig(reference_window=timedelta(days=28)).reference_window.days == 28


# ------------------------------------------------------------------------------ dashboards
def test_dashboard_sql_runs_on_llm_drift(run: Run):
    """Every ClickHouse query of the drift dashboard (panels and the annotation), with the
    plugin's macros expanded as tests/dashboards/test_dashboards.py does, on the rows
    written above."""
    from tests.dashboards.test_dashboards import SPECIFIC, all_panels, datasource_uid, expand_sql

    dashboard = json.loads(DASHBOARD.read_text())
    t0, t1 = int((NOW - timedelta(days=1)).timestamp()), int(NOW.timestamp()) + 60
    results: dict[str, list[dict[str, Any]]] = {}
    queries = [
        (p["title"], t["rawSql"])
        for p in all_panels(dashboard)
        for t in p.get("targets", [])
        if datasource_uid(p, t) == "clickhouse"
    ]
    queries += [
        ("annotation: " + a["name"], a["target"]["rawSql"])
        for a in dashboard["annotations"]["list"]
        if datasource_uid(a, {}) == "clickhouse"
    ]
    assert len(queries) >= 7
    for title, sql in queries:
        for values in ({}, {**SPECIFIC, "app": "shift-version", "model": "gpt-4o"}):
            rows = run.sql(expand_sql(sql, dashboard, values, t0, t1))
            results.setdefault(title, rows)
            assert rows, (title, values)
    latest = results["Latest evaluation per app and model"]
    assert latest[0]["level"] == "alert"
    assert {r["level"] for r in latest} == {"alert", "improved", "ok"}
    psi = results["PSI by metric (tokens, latency, time to first token, cost)"]
    assert {"time", "series", "psi"} == set(psi[0])
    changes = results["Model version changes"]
    assert [r["app"] for r in changes] == ["shift-version"]
    annotation = results["annotation: Model version changes"]  # agrees with the table
    assert annotation[0]["time"] == changes[0]["first_seen_at"]
    assert "fp_new" in annotation[0]["text"]


def test_alert_rule_checks_and_fires(tmp_path: Path):
    promtool = program("promtool")
    r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    series = 'gateway_drift_{}{{instance="{}", app="web", model="gpt-4o", metric="{}"}}'
    unit = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": series.format("alert", "a:8080", "output_tokens"),
                        "values": "0 0 1 1 0",
                    },
                    {
                        "series": series.format("alert", "b:8080", "output_tokens"),
                        "values": "0 0 1 1 0",
                    },
                    {
                        "series": series.format("score", "a:8080", "output_tokens"),
                        "values": "0.01 0.01 0.4123 0.4123 0.02",
                    },
                    {"series": series.format("alert", "a:8080", "latency"), "values": "0 0 0 0 0"},
                ],
                "alert_rule_test": [
                    {"eval_time": "1m", "alertname": "LLMGatewayDrift", "exp_alerts": []},
                    {"eval_time": "4m", "alertname": "LLMGatewayDrift", "exp_alerts": []},
                    {
                        "eval_time": "2m",
                        "alertname": "LLMGatewayDrift",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "app": "web",
                                    "model": "gpt-4o",
                                    "metric": "output_tokens",
                                },
                                "exp_annotations": {
                                    "summary": "LLM drift: output_tokens of web / gpt-4o shifted",
                                    "description": (
                                        "The latest drift run flags output_tokens for app web "
                                        "and requested model gpt-4o: current window (default "
                                        "the last hour) against the reference window (default "
                                        "the 7 days before), score 0.412. Run `llm-gateway "
                                        "drift` or query llm_drift for the details (means, "
                                        "rates, the new model version and when it first "
                                        "appeared)."
                                    ),
                                    "dashboard": "/d/llm-gateway-drift",
                                    "runbook_url": RUNBOOKS + "#llmgatewaydrift",
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "drift_test.yml").write_text(json.dumps(unit))  # JSON is YAML
    r = subprocess.run(
        [promtool, "test", "rules", str(tmp_path / "drift_test.yml")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
