"""The feedback report: what end users did with the answers, as plain text or JSON.

`feedback_report(query, since)` reads the views `llm_call_feedback` and `llm_sessions`
through `query(sql) -> JSONEachRow bytes` (a store's `query`) and returns four sections:
acceptance rate by model per day, turns per session by app, share and copy rate by model,
and the average rating by the `prompt` property. Calls are in the window when they started
in it; sessions when their last activity is in it. A model is the one that served the call
(`upstream_model`, with its provider); the names clients asked for, where they differ, are
a column of their own (`request_models`). Each section's columns are its JSON fields.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from collectors.report.text import Column, dec, label, pct, rows_json, rows_table, whole
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

# The served model, its provider and the names asked for, as selected columns.
_SERVED_SQL = (
    "upstream_model, provider, arraySort(groupUniqArrayIf(toString(request_model), "
    "request_model != upstream_model AND request_model != '')) AS request_models"
)
_SERVED = (
    Column("upstream_model", lambda v: label(v) if v else "(not served)"),
    Column("provider", lambda v: label(v) if v else "-"),
    Column("request_models", lambda v: ", ".join(v) or "-"),
)


def _count(name: str) -> Column:
    return Column(name, whole, numeric=True)


def _rate(name: str) -> Column:
    return Column(name, pct, numeric=True)


def _decimal(name: str, places: int = 2) -> Column:
    return Column(name, lambda v: dec(v, places), numeric=True)


@dataclass(frozen=True, slots=True)
class _Section:
    key: str  # its JSON field
    title: str
    empty: str  # what no rows mean, for "no data: ... in the last {since}"
    columns: tuple[Column, ...]
    numeric_from: int
    sql: Callable[[int], str]  # the window in seconds -> the query


_WINDOW = "started_at >= now64(3) - INTERVAL {} SECOND"

SECTIONS = (
    _Section(
        "acceptance",
        "Acceptance rate by model per day (accepted / shown suggestions)",
        "no suggestion was shown",
        (Column("day"), *_SERVED, _count("shown_calls"), _count("accepted_calls"),
         _rate("acceptance_rate")),
        4,
        lambda secs: (
            f"SELECT toString(toDate(started_at)) AS day, {_SERVED_SQL}, "
            "sum(shown) AS shown_calls, sum(accepted) AS accepted_calls, "
            "accepted_calls / shown_calls AS acceptance_rate FROM llm_call_feedback "
            f"WHERE {_WINDOW.format(secs)} GROUP BY day, upstream_model, provider "
            "HAVING shown_calls > 0 ORDER BY day, upstream_model, provider"
        ),
    ),
    _Section(
        "turns",
        "Turns per session by app",
        "no session was active",
        (Column("app", label), _count("sessions"), _decimal("avg_turns"),
         _decimal("p50_turns", 1), _decimal("p90_turns", 1), _rate("abandoned_share")),
        1,
        lambda secs: (
            "SELECT app, count() AS sessions, avg(turns) AS avg_turns, "
            "quantile(0.5)(turns) AS p50_turns, quantile(0.9)(turns) AS p90_turns, "
            "countIf(abandoned = 1) / sessions AS abandoned_share FROM llm_sessions "
            f"WHERE calls > 0 AND last_at >= now64(3) - INTERVAL {secs} SECOND "
            "GROUP BY app ORDER BY app"
        ),
    ),
    _Section(
        "share_copy",
        "Share and copy rate by model (calls shared or copied at least once / calls)",
        "no calls",
        (*_SERVED, _count("calls"), _count("shared_calls"), _rate("share_rate"),
         _count("copied_calls"), _rate("copy_rate")),
        3,
        lambda secs: (
            f"SELECT {_SERVED_SQL}, count() AS calls, "
            "countIf(shares > 0) AS shared_calls, countIf(copies > 0) AS copied_calls, "
            "shared_calls / calls AS share_rate, copied_calls / calls AS copy_rate "
            f"FROM llm_call_feedback WHERE {_WINDOW.format(secs)} "
            "GROUP BY upstream_model, provider ORDER BY upstream_model, provider"
        ),
    ),
    _Section(
        "ratings",
        "Average rating by prompt (properties['prompt']; a call rated twice counts once)",
        "no rated calls",
        (Column("prompt", label), _count("rated_calls"), _count("rating_events"),
         _decimal("avg_rating")),
        1,
        lambda secs: (
            "SELECT properties['prompt'] AS prompt, count() AS rated_calls, "
            "sum(ratings) AS rating_events, avg(rating) AS avg_rating FROM llm_call_feedback "
            f"WHERE rating IS NOT NULL AND {_WINDOW.format(secs)} "
            "GROUP BY prompt ORDER BY prompt"
        ),
    ),
)  # fmt: skip


def feedback_report(query: Query, since: str = "7d", as_json: bool = False) -> str:
    """The feedback report over the last `since` (`30m`, `24h`, `7d`...), as plain text
    (or JSON: each section's rows under its key). `query(sql)` runs SQL on the gateway's
    store and returns JSONEachRow bytes."""
    secs = parse_since(since)
    start = datetime.now(UTC) - timedelta(seconds=secs)
    found = {s.key: select(query, s.sql(secs)) for s in SECTIONS}
    if as_json:
        out: dict[str, Any] = {"since": since, "window_start": start.isoformat()}
        out |= {s.key: rows_json(s.columns, found[s.key]) for s in SECTIONS}
        return json.dumps(out, indent=2, allow_nan=False) + "\n"
    lines = [f"Feedback report: last {since} (since {start:%Y-%m-%d %H:%M} UTC)", ""]
    for s in SECTIONS:
        rows = found[s.key]
        lines.append(s.title)
        if rows:
            lines += rows_table(s.columns, rows, s.numeric_from)
        else:
            lines.append(f"  no data: {s.empty} in the last {since}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
