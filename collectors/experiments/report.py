"""What `llm-gateway experiments list | report NAME` and `llm-gateway report models` print.

`query(sql) -> JSONEachRow bytes` is a store's `query`. Verdicts are computed at "now"
(or at `at`, epoch seconds) from every call recorded so far; reading them as often as you
like is what the always-valid intervals are for.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from collectors.experiments.moments import (
    ArmMoments,
    experiment_arms,
    model_arms,
    read_moments,
)
from collectors.experiments.stats import ratio
from collectors.experiments.verdict import Comparison, Verdict, decide
from collectors.report.feedback import parse_since
from collectors.report.text import dec, label, table
from collectors.sql import Query, lit, select
from gateway.experiments.spec import METRICS, Experiment

KIND_LABELS = {
    "winner": "WINNER",
    "no_difference": "NO MEANINGFUL DIFFERENCE",
    "keep_running": "KEEP RUNNING",
    "srm": "ASSIGNMENT BROKEN (SRM)",
    "guardrail": "GUARDRAIL BREACHED",
}


def verdicts(
    query: Query,
    experiments: Sequence[Experiment],
    at: float | None = None,
    session_idle_minutes: int = 30,
) -> dict[str, Verdict]:
    """The verdict of each experiment now (one query for all of them)."""
    if not experiments:
        return {}
    look = time.time() if at is None else at
    arms = experiment_arms(experiments)
    moments = read_moments(query, arms, [look], session_idle_minutes)
    out = {}
    for e in experiments:
        v = decide(e, [m for m in moments if m.group == e.name])
        v.look = look
        out[e.name] = v
    return out


def _status(e: Experiment, now: datetime) -> str:
    if e.start and now < e.start:
        return "scheduled"
    if e.stop and now >= e.stop:
        return "stopped"
    return "running"


def list_experiments(
    query: Query, experiments: Sequence[Experiment], as_json: bool = False, at: float | None = None
) -> str:
    vs = verdicts(query, experiments, at)
    now = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    if as_json:
        return json.dumps(
            [
                {
                    "name": e.name,
                    "status": _status(e, now),
                    "unit": e.unit,
                    "primary": e.primary,
                    "weights": e.weights(),
                    "units": vs[e.name].units,
                    "verdict": vs[e.name].kind,
                    "winner": vs[e.name].winner,
                    "message": vs[e.name].message,
                }
                for e in experiments
            ],
            indent=2,
        )
    if not experiments:
        return "No experiments are declared (the `experiments:` section of the config).\n"
    body = [
        [
            e.name,
            _status(e, now),
            e.unit,
            e.primary,
            " / ".join(f"{n} {w:.0%}" for n, w in e.weights().items()),
            str(sum(vs[e.name].units.values())),
            KIND_LABELS[vs[e.name].kind] + (f": {vs[e.name].winner}" if vs[e.name].winner else ""),
        ]
        for e in experiments
    ]
    headers = ["experiment", "status", "unit", "primary", "weights", "units", "verdict"]
    return "\n".join(table(headers, body, 5)) + "\n"


def _figures(query: Query, name: str) -> dict[str, dict[str, Any]]:
    rows = select(
        query,
        "SELECT toString(variant) AS variant, calls, users, sessions, p95_latency_ms, "
        f"total_cost_usd FROM llm_experiment_variants WHERE experiment = {lit(name)}",
    )
    return {r["variant"]: r for r in rows}


def _fmt(metric: str, v: float | None, signed: bool = False) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    sign = "+" if signed else ""
    if metric.endswith("_rate") or metric == "p95_latency":
        return f"{v * 100:{sign}.1f}" + ("pt" if signed else "%")
    if metric.startswith("cost"):
        return f"{v:{sign}.5f}"
    return f"{v:{sign}.3f}"


def _comparison_rows(cs: Iterable[Comparison]) -> list[list[str]]:
    return [
        [
            c.metric,
            c.variant,
            _fmt(c.metric, c.control_value),
            _fmt(c.metric, c.value),
            _fmt(c.metric, c.diff, signed=True),
            "-"
            if c.low is None
            else f"[{_fmt(c.metric, c.low, True)}, {_fmt(c.metric, c.high, True)}]",
            f"{c.p_value:.3g}",
            "better" if c.better else "worse" if c.worse else "-",
        ]
        for c in cs
    ]


def experiment_report(
    query: Query, exp: Experiment, as_json: bool = False, at: float | None = None
) -> str:
    v = verdicts(query, [exp], at)[exp.name]
    figures = _figures(query, exp.name)
    if as_json:
        return json.dumps({**asdict(v), "variants": figures}, indent=2, default=str)
    when = datetime.fromtimestamp(v.look, UTC)
    weights = exp.weights()
    lines = [
        f"Experiment {exp.name}: {_status(exp, when)}, by {exp.unit}, "
        f"as of {when:%Y-%m-%d %H:%M} UTC",
        f"Primary metric: {METRICS[exp.primary].label}; margin ±{exp.margin:g}; alpha {exp.alpha:g}"
        " (always-valid: read as often as you like)",
        "",
        f"VERDICT: {KIND_LABELS[v.kind]}: {v.message}",
        "",
    ]
    body = [
        [
            var.name + (" (control)" if var is exp.control and var.name != "control" else ""),
            var.model or "-",
            " ".join(f"{k}={val}" for k, val in var.properties.items()) or "-",
            f"{weights[var.name]:.0%}",
            str(v.units.get(var.name, 0)),
            label(str(int(figures[var.name]["calls"])) if var.name in figures else "0"),
            dec(figures.get(var.name, {}).get("p95_latency_ms"), 0),
        ]
        for var in exp.variants
    ]
    lines += table(
        ["variant", "model", "properties", "weight", "units", "calls", "p95 ms"], body, 3
    )
    srm = f"Sample ratio: p = {v.srm_p_value:.3g} (always-valid; flagged below 0.001)"
    if v.moved_units:
        srm += f"; {v.moved_units} units seen under two variants left out"
    lines += ["", srm, ""]
    headers = ["metric", "variant", "control", "variant", "diff", "interval", "p", ""]
    if v.primary:
        lines += ["Primary", *table(headers, _comparison_rows(v.primary), 2), ""]
    if v.guardrails:
        lines += ["Guardrails", *table(headers, _comparison_rows(v.guardrails), 2), ""]
    if v.more_units_needed is not None:
        lines.append(f"More units needed (estimate): {v.more_units_needed}")
    return "\n".join(lines).rstrip() + "\n"


# -- the observational comparison of models --------------------------------------------

_MODEL_METRICS = (
    "acceptance_rate",
    "thumbs_up_rate",
    "mean_rating",
    "turns_per_session",
    "cost_per_call",
)


def _interval(arm: ArmMoments, metric: str) -> tuple[float | None, float]:
    s = arm.metrics[metric]
    e = ratio(arm.units, s.sy, s.sx, s.syy, s.sxx, s.sxy)
    return e.value, 1.96 * math.sqrt(e.variance) if e.value is not None else math.inf


def models_report(
    query: Query, app: str, since: str = "7d", as_json: bool = False, at: float | None = None
) -> str:
    """Every model `app` used in the last `since` (`30m`, `24h`, `7d`...), side by side,
    with 95% intervals (users as clusters)."""
    look = time.time() if at is None else at
    start = look - parse_since(since)
    arms = [m for m in read_moments(query, model_arms(app, start), [look]) if m.arm != ""]
    lat = {
        r["model"]: r
        for r in select(
            query,
            "SELECT toString(request_model) AS model, count() AS calls, "
            "quantileDeterministic(0.95)(latency_ms, cityHash64(request_id)) AS p95_ms "
            f"FROM llm_calls FINAL WHERE app = {lit(app)} AND started_at <= "
            f"toDateTime64({look:.3f}, 3, 'UTC') AND started_at >= "
            f"toDateTime64({start:.3f}, 3, 'UTC') GROUP BY model",
        )
    }
    figures = {
        a.arm: {
            "users": a.units,
            "calls": int(lat.get(a.arm, {}).get("calls", 0)),
            "p95_latency_ms": lat.get(a.arm, {}).get("p95_ms"),
            **{
                m: dict(zip(("value", "ci95"), _interval(a, m), strict=True))
                for m in _MODEL_METRICS
            },
        }
        for a in arms
    }
    note = (
        "Observational: each model served whoever happened to use it, so differences may "
        "come from the users, prompts or times, not the model. Run an experiment to know."
    )
    if as_json:
        return json.dumps(
            {"app": app, "observational": True, "note": note, "models": figures},
            indent=2,
            default=str,
        )
    if not figures:
        return f"No calls from app {app!r} in the last {since}.\n"

    def cell(f: dict[str, Any], m: str) -> str:
        value, ci = f[m]["value"], f[m]["ci95"]
        if value is None:
            return "-"
        return f"{_fmt(m, value)} ±{_fmt(m, ci)}" if math.isfinite(ci) else _fmt(m, value)

    body = [
        [
            label(model),
            str(f["users"]),
            str(f["calls"]),
            *(cell(f, m) for m in _MODEL_METRICS),
            dec(f["p95_latency_ms"], 0),
        ]
        for model, f in sorted(figures.items())
    ]
    headers = [
        "model",
        "users",
        "calls",
        "acceptance",
        "thumbs up",
        "rating",
        "turns/session",
        "cost/call",
        "p95 ms",
    ]
    lines = [
        f"Models used by app {app} in the last {since} (95% intervals, users as clusters)",
        "",
        *table(headers, body, 1),
        "",
        note,
    ]
    return "\n".join(lines) + "\n"


def command(
    query: Query,
    experiments: Sequence[Experiment],
    action: str,
    name: str | None = None,
    as_json: bool = False,
) -> tuple[int, str]:
    """`llm-gateway experiments list | report NAME`: (exit code, text to print)."""
    if action == "list":
        return 0, list_experiments(query, experiments, as_json)
    known = {e.name: e for e in experiments}
    if name not in known:
        names = ", ".join(known) or "none are declared"
        return 2, f"llm-gateway: no experiment named {name!r} (known: {names})\n"
    return 0, experiment_report(query, known[name], as_json)
