"""The feedback report: what end users did with the answers, as plain text.

`feedback_report(query, since)` reads the views `llm_call_feedback` and `llm_sessions`
(migration 0006) through `query(sql) -> JSONEachRow bytes` (a store's `query`) and returns
four sections: acceptance rate by model per day, turns per session by app, share and copy
rate by model, and the average rating by the `prompt` property. Calls are in the window
when they started in it; sessions when their last activity is in it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

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


# -- formatting --------------------------------------------------------------------------


def _num(v: Any) -> float | None:
    # 64-bit integers may come quoted (output_format_json_quote_64bit_integers)
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _int(v: Any) -> str:
    n = _num(v)
    return "-" if n is None else str(round(n))


def _pct(v: Any) -> str:
    n = _num(v)
    return "-" if n is None else f"{n * 100:.1f}%"


def _dec(v: Any, places: int = 2) -> str:
    n = _num(v)
    if n is None:
        return "-"
    return str(round(n)) if n == round(n) else f"{n:.{places}f}"


def _label(v: Any) -> str:
    s = "" if v is None else str(v)
    return s if s else "(none)"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int) -> list[str]:
    """Columns left-aligned up to `numeric_from`, right-aligned from there on."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if i < numeric_from else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return ("  " + "  ".join(parts)).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


# -- the sections ------------------------------------------------------------------------


def _acceptance(query: Query, secs: int, since: str) -> list[str]:
    rows = select(
        query,
        "SELECT toString(toDate(started_at)) AS day, toString(request_model) AS model, "
        "sum(shown) AS shown_calls, sum(accepted) AS accepted_calls, "
        "accepted_calls / shown_calls AS acceptance_rate "
        "FROM llm_call_feedback "
        f"WHERE started_at >= now64(3) - INTERVAL {secs} SECOND "
        "GROUP BY day, model HAVING shown_calls > 0 ORDER BY day, model",
    )
    out = ["Acceptance rate by model per day (accepted / shown suggestions)"]
    if not rows:
        return [*out, f"  no data: no suggestion was shown in the last {since}"]
    body = [
        [
            r["day"],
            _label(r["model"]),
            _int(r["shown_calls"]),
            _int(r["accepted_calls"]),
            _pct(r["acceptance_rate"]),
        ]
        for r in rows
    ]
    return out + _table(["day", "model", "shown", "accepted", "rate"], body, 2)


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
            _label(r["app"]),
            _int(r["sessions"]),
            _dec(r["avg_turns"]),
            _dec(r["p50_turns"], 1),
            _dec(r["p90_turns"], 1),
            _pct(r["abandoned_share"]),
        ]
        for r in rows
    ]
    return out + _table(["app", "sessions", "avg turns", "p50", "p90", "abandoned"], body, 1)


def _share_copy(query: Query, secs: int, since: str) -> list[str]:
    rows = select(
        query,
        "SELECT toString(request_model) AS model, count() AS calls, "
        "countIf(shares > 0) AS shared_calls, countIf(copies > 0) AS copied_calls, "
        "shared_calls / calls AS share_rate, copied_calls / calls AS copy_rate "
        "FROM llm_call_feedback "
        f"WHERE started_at >= now64(3) - INTERVAL {secs} SECOND "
        "GROUP BY model ORDER BY model",
    )
    out = ["Share and copy rate by model (calls shared or copied at least once / calls)"]
    if not rows:
        return [*out, f"  no data: no calls in the last {since}"]
    body = [
        [
            _label(r["model"]),
            _int(r["calls"]),
            _int(r["shared_calls"]),
            _pct(r["share_rate"]),
            _int(r["copied_calls"]),
            _pct(r["copy_rate"]),
        ]
        for r in rows
    ]
    headers = ["model", "calls", "shared", "share rate", "copied", "copy rate"]
    return out + _table(headers, body, 1)


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
            _label(r["prompt"]),
            _int(r["rated_calls"]),
            _int(r["rating_events"]),
            _dec(r["avg_rating"]),
        ]
        for r in rows
    ]
    return out + _table(["prompt", "rated calls", "ratings", "avg rating"], body, 1)


def feedback_report(query: Query, since: str = "7d") -> str:
    """The feedback report over the last `since` (`30m`, `24h`, `7d`...), as plain text.
    `query(sql)` runs SQL on the gateway's store and returns JSONEachRow bytes."""
    secs = parse_since(since)
    start = datetime.now(UTC) - timedelta(seconds=secs)
    lines = [f"Feedback report: last {since} (since {start:%Y-%m-%d %H:%M} UTC)", ""]
    for section in (_acceptance, _turns, _share_copy, _ratings):
        lines += [*section(query, secs, since), ""]
    return "\n".join(lines).rstrip() + "\n"
