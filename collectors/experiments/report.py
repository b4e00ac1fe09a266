"""What `llm-gateway experiments list | report NAME` prints.

`query(sql) -> JSONEachRow bytes` is a store's `query`. Verdicts are computed at "now"
(or at `at`, epoch seconds) from every call recorded so far; reading them as often as you
like is what the always-valid intervals are for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from collectors.experiments.moments import experiment_arms, read_moments
from collectors.experiments.srm import SRM_ALPHA
from collectors.experiments.verdict import Comparison, Verdict, decide
from collectors.report.text import dec, finite, table
from collectors.report.text import metric as metric_text
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
                    "experiment": e.name,
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


def _interval(m: str, low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "-"
    return f"{metric_text(m, low, True)} to {metric_text(m, high, True)}"


def _lift(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:+.1f}%"


def _reading(c: Comparison) -> str:
    if c.better or c.worse:
        return "better" if c.better else "worse"
    return "the same" if c.low == c.high == 0 else "not yet clear"


def _comparison_rows(cs: Iterable[Comparison]) -> list[list[str]]:
    return [
        [
            c.metric + (" (CUPED)" if c.cuped is not None else ""),
            c.variant,
            metric_text(c.metric, c.control_value),
            metric_text(c.metric, c.value),
            metric_text(c.metric, c.diff, signed=True),
            metric_text(c.metric, c.low, signed=True),
            metric_text(c.metric, c.high, signed=True),
            _lift(c.lift),
            _lift(c.lift_low),
            _lift(c.lift_high),
            f"{c.p_value:.3g}",
            _reading(c),
        ]
        for c in cs
    ]


# The JSON's field names of a comparison (low, high: the always-valid interval of diff;
# p_value: always-valid).
COMPARISON_HEADERS = [
    "metric", "variant", "control_value", "value", "diff", "low", "high", "lift",
    "lift_low", "lift_high", "p_value", "reading",
]  # fmt: skip
VARIANT_HEADERS = ["variant", "model", "properties", "weight", "units", "calls",
                   "p95_latency_ms"]  # fmt: skip


def _comparison_json(c: Comparison) -> dict[str, Any]:
    return {**asdict(c), "reading": _reading(c)}


def _variants(
    exp: Experiment, v: Verdict, figures: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each variant's row: its declaration, units, and its figures in llm_experiment_variants."""
    weights = exp.weights()
    return [
        {
            "variant": var.name,
            "control": var is exp.control,
            "model": var.model,
            "properties": dict(var.properties),
            "weight": weights[var.name],
            "units": v.units.get(var.name, 0),
            "calls": int(figures.get(var.name, {}).get("calls") or 0),
            "users": int(figures.get(var.name, {}).get("users") or 0),
            "sessions": int(figures.get(var.name, {}).get("sessions") or 0),
            "p95_latency_ms": figures.get(var.name, {}).get("p95_latency_ms"),
            "total_cost_usd": figures.get(var.name, {}).get("total_cost_usd"),
        }
        for var in exp.variants
    ]


def _cuped_lines(v: Verdict) -> list[str]:
    out = []
    for c in v.primary:
        if c.cuped is None:
            continue
        out.append(
            f"CUPED ({c.variant}): {c.cuped.with_history} units had a pre-period; variance "
            f"-{c.cuped.reduction:.0%}; unadjusted difference "
            f"{metric_text(c.metric, c.cuped.diff, True)} "
            f"({_interval(c.metric, c.cuped.low, c.cuped.high)})"
        )
    if out and v.units_to_decide and v.units_without_cuped:
        saved = v.units_without_cuped - v.units_to_decide
        settled = "took" if v.kind != "keep_running" else "takes about"
        out.append(
            f"This verdict {settled} {v.units_to_decide} units with CUPED; without it, "
            f"about {v.units_without_cuped} ({saved} more)"
        )
    return out


def experiment_report(
    query: Query, exp: Experiment, as_json: bool = False, at: float | None = None
) -> str:
    v = verdicts(query, [exp], at)[exp.name]
    variants = _variants(exp, v, _figures(query, exp.name))
    if as_json:
        out = {**asdict(v), "variants": {r["variant"]: r for r in variants}}
        out["primary"] = [_comparison_json(c) for c in v.primary]
        out["guardrails"] = [_comparison_json(c) for c in v.guardrails]
        return json.dumps(finite(out), indent=2, default=str, allow_nan=False)
    when = datetime.fromtimestamp(v.look, UTC)
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
            r["variant"] + (" (control)" if r["control"] and r["variant"] != "control" else ""),
            r["model"] or "-",
            " ".join(f"{k}={val}" for k, val in r["properties"].items()) or "-",
            f"{r['weight']:.0%}",
            str(r["units"]),
            str(r["calls"]),
            dec(r["p95_latency_ms"], 0),
        ]
        for r in variants
    ]
    lines += table(VARIANT_HEADERS, body, 3)
    srm = f"Sample ratio: p = {v.srm_p_value:.3g} (always-valid; flagged below {SRM_ALPHA:g})"
    if v.moved_units:
        srm += f"; {v.moved_units} units seen under two variants left out"
    lines += ["", srm, ""]
    headers = COMPARISON_HEADERS
    if v.primary:
        lines += ["Primary", *table(headers, _comparison_rows(v.primary), 2), ""]
        lines += [*_cuped_lines(v), ""]
    if v.guardrails:
        lines += ["Guardrails", *table(headers, _comparison_rows(v.guardrails), 2), ""]
    if v.more_units_needed is not None:
        lines.append(f"More units needed (estimate): {v.more_units_needed}")
    return "\n".join(lines).rstrip() + "\n"


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
