"""The rows of `llm_drift`: the row type, its insert form, and the plain-text report."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


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
    level: str  # ok | warn | alert | improved | skipped
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


def _dt(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    if math.isnan(x):
        return None
    return max(-1e300, min(1e300, x))


def _fields(r: DriftRow) -> dict[str, object]:
    """A row as `llm_drift` stores it: its column names and values."""
    return {
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
    }


def rows_to_jsonl(rows: Iterable[DriftRow]) -> bytes:
    """JSONEachRow for `store.insert("llm_drift", ...)`: the rows that say something. A
    `skipped` row (too few calls to compare) is for the report only: stored at every run it
    would fill the table with rows that say nothing."""
    out = [json.dumps(_fields(r), ensure_ascii=False) for r in rows if r.level != "skipped"]
    return ("\n".join(out) + "\n").encode() if out else b""


def rows_to_json(rows: Iterable[DriftRow]) -> str:
    """`llm-gateway drift --json`: every row of the run, the skipped ones too, with
    `llm_drift`'s column names."""
    return json.dumps([_fields(r) for r in rows], indent=2, ensure_ascii=False)


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
        f"{len(by_level['alert'])} alert(s), {len(by_level['warn'])} warning(s), "
        f"{len(by_level['improved'])} improvement(s).",
    ]

    def name(r: DriftRow) -> str:
        return f"{r.app or '(no app)'} / {r.request_model or '(no model)'}"

    for level, title in (("alert", "ALERTS"), ("warn", "WARNINGS"), ("improved", "IMPROVED")):
        if by_level[level]:
            note = ": changed for the better, reported, not alerted" if level == "improved" else ""
            out += ["", f"{title} ({len(by_level[level])}){note}"]
            for r in by_level[level]:
                out.append(f"  {name(r)}  {r.metric}: {_describe(r)}")
    flagged = {
        (r.app, r.request_model)
        for r in by_level["alert"] + by_level["warn"] + by_level["improved"]
    }
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
