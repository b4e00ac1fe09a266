"""Drift job benchmark: one `run_drift` over a million calls in chDB.

    uv run python bench/drift.py [--calls 1000000] [--feedback 0.2] [--keep]

Generates the calls inside ClickHouse (`INSERT ... SELECT FROM numbers()`, hash-seeded, so
a run is reproducible) spread evenly over the 8 days before now, across 3 apps and 3
requested models (9 groups of ~110,000 calls; ~580 in the current hour each), with
`--feedback` of them shown a suggestion (accepted 35%, shared 5%). The last hour has one
group drifting (longer answers, more `length` cut-offs) and one new system fingerprint, so
the report has something to say. Prints the time of the insert and of `run_drift` (the
number that matters), then the report.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collectors.drift import DriftConfig, format_report, rows_to_jsonl, run_drift  # noqa: E402
from gateway.recording.store import migrate  # noqa: E402
from gateway.recording.store.chdb_store import ChdbStore  # noqa: E402

APPS = ("support-bot", "code-assist", "search")
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-haiku-4-5")
SPAN = timedelta(days=8)


def _u(k: int) -> str:
    """A uniform draw in (0, 1), fixed by the row number and the draw index `k`."""
    return f"((cityHash64(number, {k}) + 0.5) / 18446744073709551616)"


def _normal(k: int) -> str:
    return f"(sqrt(-2 * ln({_u(k)})) * cos(2 * pi() * {_u(k + 1)}))"


def insert_calls(store: ChdbStore, n: int, now: datetime) -> None:
    start_ms = int((now - SPAN).timestamp() * 1000)
    span_ms = int(SPAN.total_seconds() * 1000)
    cur_ms = int((now - timedelta(hours=1)).timestamp() * 1000)
    # The drifting group in the current hour: support-bot / gpt-4o-mini.
    drifting = "(g = 0 AND t >= cur)"
    store.command(
        f"""
        INSERT INTO {store.database}.llm_calls
            (request_id, started_at, app, request_model, response_model, system_fingerprint,
             provider, provider_kind, operation, stream, status_code, outcome, error_type,
             finish_reason, input_tokens, output_tokens, cost_usd, latency_ms, ttft_ms)
        SELECT
            concat('bench-', toString(number)) AS request_id,
            fromUnixTimestamp64Milli(toInt64(t), 'UTC') AS started_at,
            [{", ".join(f"'{a}'" for a in APPS)}][g % 3 + 1] AS app,
            [{", ".join(f"'{m}'" for m in MODELS)}][intDiv(g, 3) + 1] AS request_model,
            concat(request_model, '-2024-08-06') AS response_model,
            multiIf(request_model = 'claude-haiku-4-5', '',
                    g = 4 AND t >= cur AND {_u(9)} < 0.5, 'fp_new',
                    {_u(9)} < 0.7, 'fp_a1', 'fp_b2') AS system_fingerprint,
            if(request_model LIKE 'claude%', 'anthropic', 'openai') AS provider,
            provider AS provider_kind,
            'chat' AS operation,
            {_u(10)} < 0.6 AS stream,
            if(err, 500, 200) AS status_code,
            if(err, 'upstream_error', 'ok') AS outcome,
            if(err, 'server_error', '') AS error_type,
            multiIf(err, '', fr < 0.03 OR ({drifting} AND fr >= 0.91), 'length',
                    fr < 0.035, 'content_filter', fr < 0.09, 'tool_calls', 'stop')
                AS finish_reason,
            toUInt64(round(exp(ln(800) + 1.1 * {_normal(1)}))) AS input_tokens,
            if(err, 0, toUInt64(round(exp(ln(if({drifting}, 600, 250)) + 0.9 * {_normal(3)}))))
                AS output_tokens,
            if(request_model = 'gpt-4o', 2.5e-6, 1.5e-7) * input_tokens
                + if(request_model = 'gpt-4o', 1e-5, 6e-7) * output_tokens AS cost_usd,
            200 + output_tokens * 12 * exp(0.3 * {_normal(5)}) AS latency_ms,
            if(stream, exp(ln(350) + 0.4 * {_normal(7)}), NULL) AS ttft_ms
        FROM
        (
            SELECT number,
                   {start_ms} + {_u(0)} * {span_ms} AS t,
                   {cur_ms} AS cur,
                   number % 9 AS g,
                   {_u(11)} < 0.01 AS err,
                   {_u(12)} AS fr
            FROM numbers({n})
        )
        """
    )


def insert_feedback(store: ChdbStore, share: float) -> None:
    """`share` of the calls were shown a suggestion; 35% of those accepted, 5% shared."""
    db = store.database
    store.command(
        f"""
        INSERT INTO {db}.llm_feedback (event_id, ts, request_id, app, name, value, source)
        SELECT concat(request_id, ':', ev) AS event_id, started_at + 5 AS ts, request_id, app,
               ev AS name, 1 AS value, 'user' AS source
        FROM
        (
            SELECT request_id, started_at, app,
                   arrayJoin(arrayConcat(['suggestion_shown'],
                                         if(u2 < 0.35, ['suggestion_accepted'], []),
                                         if(u3 < 0.05, ['share'], []))) AS ev
            FROM
            (
                SELECT request_id, started_at, app,
                       (cityHash64(request_id, 1) + 0.5) / 18446744073709551616 AS u1,
                       (cityHash64(request_id, 2) + 0.5) / 18446744073709551616 AS u2,
                       (cityHash64(request_id, 3) + 0.5) / 18446744073709551616 AS u3
                FROM {db}.llm_calls
            )
            WHERE u1 < {share}
        )
        """
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--feedback", type=float, default=0.2, help="share of calls with feedback")
    ap.add_argument("--keep", action="store_true", help="keep the chDB data directory")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="drift-bench-")
    store = ChdbStore(str(Path(tmp) / "db"), "llm_gateway")
    try:
        migrate(store)
        now = datetime.now(UTC).replace(microsecond=0)
        t0 = time.perf_counter()
        insert_calls(store, args.calls, now)
        if args.feedback > 0:
            insert_feedback(store, args.feedback)
        t1 = time.perf_counter()
        counts = store.query(
            "SELECT (SELECT count() FROM llm_calls) AS calls, "
            "(SELECT count() FROM llm_feedback) AS feedback_events"
        ).decode()
        print(f"generated in {t1 - t0:.2f} s: {counts.strip()}", file=sys.stderr)

        query = lambda sql: store.query(sql, "JSONEachRow")  # noqa: E731
        t2 = time.perf_counter()
        rows = run_drift(query, now=now, cfg=DriftConfig())
        t3 = time.perf_counter()
        store.insert("llm_drift", rows_to_jsonl(rows))
        t4 = time.perf_counter()
        print(format_report(rows))
        print(f"run_drift over {args.calls:,} calls: {t3 - t2:.2f} s ({len(rows)} rows)")
        print(f"insert into llm_drift: {t4 - t3:.3f} s")
    finally:
        store.close()
        if args.keep:
            print(f"data kept in {tmp}", file=sys.stderr)
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
