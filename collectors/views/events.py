"""End-user signals as the views read them: one row per `event_id`."""

from __future__ import annotations


def events_sql(db: str) -> str:
    """One row per `event_id`, its latest received copy. The table's own deduplication
    (ReplacingMergeTree on `(app, name, event_id)`) misses a copy sent under another app or
    name, or in another month's partition; this does not. Columns are renamed so that
    aggregates over them cannot shadow them: eid, t (ts), rid (request_id), sid
    (session_id), u (end_user), a (app), n (name), v (value), sv (string_value)."""
    pick = ", ".join(
        f"argMax({col}, received_at) AS {alias}"
        for col, alias in (
            ("ts", "t"), ("request_id", "rid"), ("session_id", "sid"), ("end_user", "u"),
            ("toString(app)", "a"), ("toString(name)", "n"), ("value", "v"),
            ("string_value", "sv"),
        )
    )  # fmt: skip
    return f"SELECT event_id AS eid, {pick} FROM {db}.llm_feedback GROUP BY event_id"
