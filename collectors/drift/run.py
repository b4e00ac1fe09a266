"""The run: read the windows' figures, test them, and level each row (Bonferroni)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from collectors.drift.config import ROW_ORDER, WORSE_WHEN, DriftConfig
from collectors.drift.queries import (
    categories_sql,
    feedback_sql,
    groups_in,
    ks_sql,
    psi_sql,
    ts_sql,
)
from collectors.drift.report import DriftRow
from collectors.drift.stats import (
    TAIL_Z,
    chi2_homogeneity,
    direction,
    fisher_exact,
    js_distance,
    two_proportion_z,
    z_for,
)
from collectors.sql import Query, lit, select
from gateway.recording.money import usd

DEFAULT_CONFIG = DriftConfig()


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
    better: bool = False  # the change goes the good way: an improvement, not an alert


def _parse_time(s: str) -> datetime:
    return datetime.fromisoformat(s.replace(" ", "T")).replace(tzinfo=UTC)


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def run_drift(
    query: Query,
    now: datetime | None = None,
    cfg: DriftConfig = DEFAULT_CONFIG,
) -> list[DriftRow]:
    """Evaluate drift at `now` (default: the current time). `query(sql)` returns JSONEachRow
    bytes; unqualified table names must resolve to the gateway's database."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    cur_start = now - cfg.current_window
    ref_start = cur_start - cfg.reference_window
    rs, cs, ce = ts_sql(ref_start), ts_sql(cur_start), ts_sql(now)
    base: dict[str, Any] = {
        "computed_at": now,
        "window_start": cur_start,
        "window_end": now,
        "reference_start": ref_start,
    }

    groups: dict[tuple[str, str], _Group] = defaultdict(_Group)
    for r in select(query, categories_sql(rs, cs, ce)):
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
        head: dict[str, Any] = {**base, "app": key[0], "request_model": key[1]}
        ref_n, cur_n = g.calls
        if min(ref_n, cur_n) < cfg.min_calls:
            why = []
            if cur_n < cfg.min_calls:
                why.append(f"{cur_n} calls in the current window")
            if ref_n < cfg.min_calls:
                why.append(f"{ref_n} in the reference window")
            detail = f"{' and '.join(why)}: fewer than min_calls={cfg.min_calls}"
            rows.append(_skipped(head, "sample_size", "calls", ref_n, cur_n, cfg.min_calls, detail))
            continue
        ok_groups.append(key)
        tests += _rate_tests(head, g, rows)
        tests.append(_mix_test(head, g, cfg))
        rows += _version_rows(head, g)

    if ok_groups:
        where = groups_in(ok_groups)
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
        if level != "ok" and t.better:
            level = "improved"  # reported, not alerted
        rows.append(DriftRow(**t.row, threshold=alert_at, level=level))

    rows.sort(key=lambda r: (r.app, r.request_model, ROW_ORDER.get(r.metric, 99), r.statistic))
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
    better = z * WORSE_WHEN.get(metric, 0) < 0
    return _Test(row, abs(z), None, None, p, not degenerate, better)


def _rate_tests(head: dict[str, Any], g: _Group, rows: list[DriftRow]) -> list[_Test]:
    length = [g.finish.get("length", [0, 0])[w] for w in (0, 1)]
    cf = [g.finish.get("content_filter", [0, 0])[w] for w in (0, 1)]
    tests = [
        _rate_test(head, "error_rate", g.failed, g.calls, "failed calls"),
        _rate_test(head, "refusal_rate", g.refused, g.calls, "calls refused"),
    ]
    for metric, x, what in (
        ("length_rate", length, "answers cut at the length limit"),
        ("content_filter_rate", cf, "answers stopped by a filter"),
    ):
        if min(g.answers) == 0:  # every call of a window failed (an outage): no rate of answers
            rows.append(_no_answers(head, metric, g))
        else:
            tests.append(_rate_test(head, metric, x, g.answers, what))
    return tests


def _no_answers(head: dict[str, Any], metric: str, g: _Group) -> DriftRow:
    ref, cur = g.answers
    empty = " and ".join(
        w for w, n in (("the current window", cur), ("the reference window", ref)) if n == 0
    )
    return DriftRow(
        **head,
        metric=metric,
        statistic="answers",
        score=0.0,
        threshold=1.0,
        level="skipped",
        current_calls=cur,
        reference_calls=ref,
        detail=f"no answer in {empty}: every call failed ({g.failed[1]}/{g.calls[1]} "
        f"failed in the current window, {g.failed[0]}/{g.calls[0]} in the reference)",
    )


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
    common: dict[str, Any] = {
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


def _skipped(
    head: dict[str, Any],
    metric: str,
    statistic: str,
    ref_n: int,
    cur_n: int,
    minimum: int,
    detail: str,
) -> DriftRow:
    """A test not run: too few calls (or values) in a window."""
    return DriftRow(**head, metric=metric, statistic=statistic, score=float(min(ref_n, cur_n)),
                    threshold=float(minimum), level="skipped", current_calls=cur_n,
                    reference_calls=ref_n, detail=detail)  # fmt: skip


def _feedback_tests(
    query: Query,
    base: dict[str, Any],
    windows: tuple[str, str, str],
    where: str,
    calls: dict[tuple[str, str], list[int]],
    cfg: DriftConfig,
    rows: list[DriftRow],
) -> list[_Test]:
    # (app, model) -> [reference, current] of with_feedback, shown, accepted, shared
    fb: dict[tuple[str, str], dict[str, list[int]]] = {}
    for r in select(query, feedback_sql(*windows, where)):
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
                detail = (
                    f"{gate[1]} calls with feedback in the current window, {gate[0]} in the "
                    f"reference: fewer than min_feedback_calls={cfg.min_feedback_calls}"
                )
                rows.append(_skipped(head, metric, "calls", gate[0], gate[1],
                                     cfg.min_feedback_calls, detail))  # fmt: skip
                continue
            tests.append(_rate_test(head, metric, x, n, what))
    return tests


def _distribution_tests(
    query: Query,
    base: dict[str, Any],
    windows: tuple[str, str, str],
    where: str,
    cfg: DriftConfig,
    rows: list[DriftRow],
) -> list[_Test]:
    found = []
    for r in select(query, psi_sql(*windows, where, cfg.psi_epsilon)):
        n_cur, n_ref = int(r["n_cur"]), int(r["n_ref"])
        head = {**base, "app": r["app"], "request_model": r["request_model"]}
        if min(n_cur, n_ref) < cfg.min_calls:
            detail = (
                f"{n_cur} values in the current window, {n_ref} in the reference: "
                f"fewer than min_calls={cfg.min_calls}"
            )
            rows.append(_skipped(head, r["metric"], "values", n_ref, n_cur, cfg.min_calls, detail))
            continue
        found.append((head, r))
    if not found:
        return []
    pairs = ", ".join(
        f"({lit(r['app'])}, {lit(r['request_model'])}, {lit(r['metric'])})" for _, r in found
    )
    ks = {
        (r["app"], r["request_model"], r["metric"]): r["ks"]
        for r in select(query, ks_sql(*windows, where, pairs))
    }
    tests = []
    for head, r in found:
        cur = [int(c) for c in r["cur_counts"]]
        ref = [int(c) for c in r["ref_counts"]]
        _, df, p = chi2_homogeneity(cur, ref, ordered=True)
        ks_d, ks_p = _ks_pair(ks.get((r["app"], r["request_model"], r["metric"])))
        psi = float(r["psi"])
        fmt = usd if r["metric"] == "cost" else _num
        shift, up, down = direction(cur, ref)
        worse = WORSE_WHEN.get(r["metric"], 0)
        tail = up if worse > 0 else down  # how far the bad side grew, at most
        better = worse != 0 and shift * worse < 0 and tail <= TAIL_Z
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
            "detail": f"mean {fmt(r['mean_ref'])} -> {fmt(r['mean_cur'])}; "
            f"{len(cur)} of the reference's decile bins used, chi-square df {df}",
        }
        tests.append(_Test(row, psi, cfg.psi_warn, cfg.psi_alert, p, df > 0, better))
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
