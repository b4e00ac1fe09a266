"""The feedback report: what end users did with the answers, as plain text.

`feedback_report(query, since)` reads the views `llm_call_feedback` and `llm_sessions`
through `query(sql) -> JSONEachRow bytes` (a store's `query`) and returns four sections:
acceptance rate by model per day, turns per session by app, share and copy rate by model,
and the average rating by the `prompt` property. Calls are in the window when they started
in it; sessions when their last activity is in it. A model is the one that served the call
(`upstream_model`, with its provider); the names clients asked for, where they differ, are
a column of their own.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from collectors.report.text import dec, label, pct, table, whole
from collectors.sql import Query, select

_SINCE = re.compile(r"\s*(\d{1,6})\s*([mhdw])\s*")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(since: str) -> int:
    """`30m`, `24h`, `7d` or `2w` as seconds; ValueError naming the expected form otherwise."""
    m = _SINCE.fullmatch(since) if isinstance(since, str) else None
    if not m or int(m.group(1)) == 0:
        raise ValueError(
            f"since must be a positive duration: a number followed by m (minutes), "
            f"h (hours), d (days) or w (weeks), e.g. 30m, 24h or 7d; got {since!r}"
        )
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


# -- the sections ------------------------------------------------------------------------

# The served model, its provider and the names asked for, as selected columns and keys.
_SERVED = (
    "toString(upstream_model) AS model, toString(provider) AS provider, "
    "arrayStringConcat(arraySort(groupUniqArrayIf(toString(request_model), "
    "request_model != upstream_model AND request_model != '')), ', ') AS requested"
)
_SERVED_HEADERS = ["served model", "provider", "requested as"]


def _served(r: dict[str, object]) -> list[str]:
    model = label(r["model"]) if r["model"] else "(not served)"
    return [model, label(r["provider"]) if r["provider"] else "-", str(r["requested"] or "-")]


def _acceptance(query: Query, secs: int, since: str) -> list[str]:
    rows = select(
        query,
        f"SELECT toString(toDate(started_at)) AS day, {_SERVED}, "
        "sum(shown) AS shown_calls, sum(accepted) AS accepted_calls, "
        "accepted_calls / shown_calls AS acceptance_rate "
        "FROM llm_call_feedback "
        f"WHERE started_at >= now64(3) - INTERVAL {secs} SECOND "
        "GROUP BY day, model, provider HAVING shown_calls > 0 ORDER BY day, model, provider",
    )
    out = ["Acceptance rate by model per day (accepted / shown suggestions)"]
    if not rows:
        return [*out, f"  no data: no suggestion was shown in the last {since}"]
    body = [
        [
            r["day"],
            *_served(r),
            whole(r["shown_calls"]),
            whole(r["accepted_calls"]),
            pct(r["acceptance_rate"]),
        ]
        for r in rows
    ]
    return out + table(["day", *_SERVED_HEADERS, "shown", "accepted", "rate"], body, 4)


def _turns(query: Query, secs: int, since: str) -> list[str]:
    rows = select(
        query,
        "SELECT app, count() AS sessions, avg(turns) AS avg_turns, "
        "quantile(0.5)(turns) AS p50_turns, quantile(0.9)(turns) AS p90_turns, "
        "countIf(abandoned = 1) AS abandoned_sessions, "
        "abandoned_sessions / sessions AS abandoned_share "
        "FROM llm_sessions "
        f"WHERE calls > 0 AND last_at >= now64(3) - INTERVAL {secs} SECOND "
        "GROUP BY app ORDER BY app",
    )
    out = ["Turns per session by app"]
    if not rows:
        return [*out, f"  no data: no session was active in the last {since}"]
    body = [
        [
            label(r["app"]),
            whole(r["sessions"]),
            dec(r["avg_turns"]),
            dec(r["p50_turns"], 1),
            dec(r["p90_turns"], 1),
            pct(r["abandoned_share"]),
        ]
        for r in rows
    ]
    return out + table(["app", "sessions", "avg turns", "p50", "p90", "abandoned"], body, 1)


def _share_copy(query: Query, secs: int, since: str) -> list[str]:
    rows = select(
        query,
        f"SELECT {_SERVED}, count() AS calls, "
        "countIf(shares > 0) AS shared_calls, countIf(copies > 0) AS copied_calls, "
        "shared_calls / calls AS share_rate, copied_calls / calls AS copy_rate "
        "FROM llm_call_feedback "
        f"WHERE started_at >= now64(3) - INTERVAL {secs} SECOND "
        "GROUP BY model, provider ORDER BY model, provider",
    )
    out = ["Share and copy rate by model (calls shared or copied at least once / calls)"]
    if not rows:
        return [*out, f"  no data: no calls in the last {since}"]
    body = [
        [
            *_served(r),
            whole(r["calls"]),
            whole(r["shared_calls"]),
            pct(r["share_rate"]),
            whole(r["copied_calls"]),
            pct(r["copy_rate"]),
        ]
        for r in rows
    ]
    headers = [*_SERVED_HEADERS, "calls", "shared", "share rate", "copied", "copy rate"]
    return out + table(headers, body, 3)


def _ratings(query: Query, secs: int, since: str) -> list[str]:
    rows = select(
        query,
        "SELECT properties['prompt'] AS prompt, count() AS rated_calls, "
        "sum(ratings) AS rating_events, avg(rating) AS avg_rating "
        "FROM llm_call_feedback "
        f"WHERE rating IS NOT NULL AND started_at >= now64(3) - INTERVAL {secs} SECOND "
        "GROUP BY prompt ORDER BY prompt",
    )
    out = ["Average rating by prompt (properties['prompt']; a call rated twice counts once)"]
    if not rows:
        return [*out, f"  no data: no rated calls in the last {since}"]
    body = [
        [
            label(r["prompt"]),
            whole(r["rated_calls"]),
            whole(r["rating_events"]),
            dec(r["avg_rating"]),
        ]
        for r in rows
    ]
    return out + table(["prompt", "rated calls", "ratings", "avg rating"], body, 1)


def feedback_report(query: Query, since: str = "7d") -> str:
    """The feedback report over the last `since` (`30m`, `24h`, `7d`...), as plain text.
    `query(sql)` runs SQL on the gateway's store and returns JSONEachRow bytes."""
    secs = parse_since(since)
    start = datetime.now(UTC) - timedelta(seconds=secs)
    lines = [f"Feedback report: last {since} (since {start:%Y-%m-%d %H:%M} UTC)", ""]
    for section in (_acceptance, _turns, _share_copy, _ratings):
        lines += [*section(query, secs, since), ""]
    return "\n".join(lines).rstrip() + "\n"
