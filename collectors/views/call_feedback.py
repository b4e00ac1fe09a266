"""`llm_call_feedback`: one row per call with its signals aggregated (a call without
feedback: zeros, NULLs and empty arrays).

A request id's signals count on one call only: the latest with that id. A client that sends
the same `X-Request-Id` twice gets two call rows, and a signal for that id must not count
twice (sums over the view would). `shown` is 1 when a suggestion_shown, suggestion_accepted
or suggestion_rejected event was received (an accepted or rejected suggestion was shown),
so accepted <= shown.
"""

from __future__ import annotations

from collectors.signals import aggregate, columns, finish
from collectors.views.events import events_sql

# The calls' columns the view passes through, in order.
CALL_COLUMNS = (
    "request_id", "started_at", "app", "end_user", "session_id", "turn_index", "provider",
    "operation", "request_model", "upstream_model", "response_model", "status_code",
    "outcome", "finish_reason", "input_tokens", "output_tokens", "cost_usd", "latency_ms",
    "ttft_ms", "properties", "experiment", "variant",
)  # fmt: skip


def call_feedback_sql(db: str) -> str:
    cols = columns("call")
    per_call = ",\n            ".join(f"{aggregate(c)} AS f_{c.name}" for c in cols)
    out = ",\n    ".join(
        [f"c.{name} AS {name}" for name in CALL_COLUMNS]
        + ["toUInt64(ifNull(f.f_events, 0)) AS events"]
        + [f"{finish(c, 'f.f_' + c.name, outer_join=True)} AS {c.name}" for c in cols]
        + ["f.f_last_at AS last_feedback_at"]
    )
    return f"""SELECT
    {out}
FROM
(
    SELECT {", ".join(CALL_COLUMNS)}, toString(app) AS app_key
    FROM {db}.llm_calls FINAL
) AS c
LEFT JOIN
(
    SELECT e.*, tupleElement(o.owner, 1) AS owner_at, tupleElement(o.owner, 2) AS owner_app
    FROM
    (
        SELECT
            rid,
            count() AS f_events,
            {per_call},
            toNullable(max(t)) AS f_last_at
        FROM ({events_sql(db)})
        WHERE rid != ''
        GROUP BY rid
    ) AS e
    INNER JOIN
    (
        -- the call that owns a request id's signals: the latest with that id
        SELECT request_id AS orid, max(tuple(started_at, toString(app))) AS owner
        FROM {db}.llm_calls FINAL
        WHERE request_id GLOBAL IN (SELECT request_id FROM {db}.llm_feedback WHERE request_id != '')
        GROUP BY request_id
    ) AS o ON o.orid = e.rid
) AS f ON f.rid = c.request_id AND f.owner_at = c.started_at AND f.owner_app = c.app_key"""
