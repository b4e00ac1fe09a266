"""The text and JSON of `llm-gateway report models [--by app|property:NAME|cohort]` (the
figures: models.py)."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from collectors.experiments.moments import ArmMoments
from collectors.report.feedback import parse_since
from collectors.report.models import (
    MODEL_METRICS,
    SERVED,
    Difference,
    Figure,
    label,
    parse_by,
    read,
    stratify,
)
from collectors.report.text import dec, finite, metric, table
from collectors.sql import Query, lit, select
from gateway.experiments.spec import METRICS

NOTE = (
    "Observational: each model served whoever happened to use it, so differences may come "
    "from the users, prompts or times, not the model. Run an experiment to know."
)


def _calls(query: Query, app: str | None, start: float, end: float) -> dict[str, Any]:
    """Per served model: calls, the response cache's hits and what they saved, p95 latency,
    the names clients asked for where they differ; and under '' the calls that reached no
    model."""
    where = (
        f"started_at >= toDateTime64({start:.3f}, 3, 'UTC') AND "
        f"started_at <= toDateTime64({end:.3f}, 3, 'UTC')"
        + ("" if app is None else f" AND app = {lit(app)}")
    )
    rows = select(
        query,
        f"SELECT if(upstream_model = '', '', {SERVED}) AS arm, count() AS calls, "
        "countIf(cache_status = 'hit') AS cache_hits, "
        "sum(ifNull(cost_saved_usd, 0)) AS saved_usd, "
        "quantileDeterministic(0.95)(latency_ms, cityHash64(request_id)) AS p95_ms, "
        "arraySort(groupUniqArrayIf(toString(request_model), "
        "request_model != upstream_model AND request_model != '')) AS requested "
        f"FROM llm_calls FINAL WHERE {where} GROUP BY arm",
    )
    return {r["arm"]: r for r in rows}


def _cell(f: Figure, m: str, with_n: bool = False) -> str:
    if f.value is None:
        return "-"
    out = metric(m, f.value)
    if math.isfinite(f.ci95):
        out += f" ±{metric(m, f.ci95, True).lstrip('+')}"
    return out + (f" n={f.units}" if with_n else "")


def _name(arm: str) -> str:
    model, provider = label(arm)
    return f"{model} ({provider})" if provider else model


def _segment_table(
    m: str, by: str, reference: str, segments: dict[str, dict[str, ArmMoments]],
    models: list[str], diffs: list[Difference],
) -> list[str]:  # fmt: skip
    totals = {s: sum(a.metrics[m].sx for a in arms.values()) for s, arms in segments.items()}
    everything = sum(totals.values()) or 1.0
    headers = [by, "share"] + [_name(x) for x in models]
    headers += [f"{_name(d.model)} - {_name(reference)}" for d in diffs]
    body = []
    for seg in sorted(segments):
        arms = segments[seg]
        row = [seg or "(none)", f"{totals[seg] / everything:.0%}"]
        row += [_cell(Figure.of(arms[x], m), m, True) if x in arms else "-" for x in models]
        row += [metric(m, d.segments.get(seg), True) for d in diffs]
        body.append(row)
    name = METRICS[m].label
    title = f"{name[:1].upper()}{name[1:]} by {by} (share: of the metric's denominator)"
    return [title, *table(headers, body, 1)]


def _differences(m: str, by: str, reference: str, diffs: list[Difference]) -> list[str]:
    headers = ["upstream_model", "pooled", "stratified", "coverage"]  # as in the JSON
    body = [
        [
            _name(d.model),
            f"{metric(m, d.pooled, True)} ±{metric(m, d.pooled_ci95, True).lstrip('+')}",
            f"{metric(m, d.stratified, True)} ±{metric(m, d.stratified_ci95, True).lstrip('+')}",
            f"{d.coverage:.0%}",
        ]
        for d in diffs
    ]
    title = (
        f"Difference from {_name(reference)}, the most used model, in {METRICS[m].label} "
        f"(pooled; stratified over {by}; the share of traffic the segments cover)"
    )
    return [title, *table(headers, body, 1)]


def warnings(m: str, by: str, reference: str, diffs: list[Difference]) -> list[str]:
    out = []
    for d in diffs:
        name, ref = _name(d.model), _name(reference)
        pooled, strat = metric(m, d.pooled, True), metric(m, d.stratified, True)
        if d.simpson:
            out.append(
                f"WARNING (Simpson's paradox): pooled, {name} differs from {ref} by {pooled}, "
                f"but within the {by} segments the difference goes the other way "
                f"(stratified {strat}). The pooled figure reflects which users each model "
                "served, not the model."
            )
        elif d.confounded:
            out.append(
                f"WARNING (confounding): pooled, {name} differs from {ref} by {pooled}, but "
                f"within the {by} segments there is no clear difference (stratified {strat}). "
                "The models served different users; compare them within segments."
            )
    return out


def models_report(
    query: Query,
    app: str | None,
    since: str = "7d",
    as_json: bool = False,
    at: float | None = None,
    by: str | None = None,
    metric_name: str = "acceptance_rate",
) -> str:
    """Every model that served `app` (every app: None) in the last `since`, side by side,
    with 95% intervals (users as clusters); `by` a segment, also each segment's figures of
    `metric_name` and the stratified differences."""
    end = time.time() if at is None else at
    start = end - parse_since(since)
    by = parse_by(by)
    if metric_name not in MODEL_METRICS:
        raise ValueError(f"--metric takes one of {', '.join(MODEL_METRICS)}; got {metric_name!r}")
    pooled, segments = read(query, app, start, end, by)
    calls = _calls(query, app, start, end)
    unserved = int(calls.get("", {}).get("calls", 0))
    models = sorted(pooled, key=lambda a: (-pooled[a].units, a))
    reference = models[0] if models else ""
    diffs = stratify(metric_name, pooled, segments, reference) if by and models else []
    where = f"app {app}" if app is not None else "every app"
    figures = {
        a: {
            "upstream_model": label(a)[0],
            "provider": label(a)[1],
            "request_models": calls.get(a, {}).get("requested", []),
            "users": pooled[a].units,
            "calls": int(calls.get(a, {}).get("calls", 0)),
            "cache_hits": int(calls.get(a, {}).get("cache_hits", 0)),
            "saved_usd": float(calls.get(a, {}).get("saved_usd", 0.0)),
            **{m: _fig_json(Figure.of(pooled[a], m)) for m in MODEL_METRICS},
            "p95_latency_ms": calls.get(a, {}).get("p95_ms"),
        }
        for a in models
    }
    if as_json:
        out: dict[str, Any] = {
            "app": app, "observational": True, "note": NOTE, "unserved_calls": unserved,
            "models": {f["upstream_model"] if _unique(figures) else _name(a): f
                       for a, f in figures.items()},
        }  # fmt: skip
        if by:
            out |= {
                "by": by, "metric": metric_name, "reference": label(reference)[0],
                "segments": {s: {_name(a): _fig_json(Figure.of(x, metric_name))
                                 for a, x in arms.items()} for s, arms in segments.items()},
                "differences": [_diff_json(d) for d in diffs],
                "warnings": warnings(metric_name, by, reference, diffs),
            }  # fmt: skip
        return json.dumps(finite(out), indent=2, default=str, allow_nan=False)
    if not models:
        return f"No calls from {where} reached a model in the last {since}.\n"
    body = [
        [label(a)[0], label(a)[1] or "-", ", ".join(f["request_models"]) or "-", str(f["users"]),
         str(f["calls"]), str(f["cache_hits"]), dec(f["saved_usd"], 4),
         *(_cell(Figure.of(pooled[a], m), m) for m in MODEL_METRICS),
         dec(f["p95_latency_ms"], 0)]
        for a, f in figures.items()
    ]  # fmt: skip
    # the JSON's field names (a model's figures)
    headers = ["upstream_model", "provider", "request_models", "users", "calls", "cache_hits",
               "saved_usd"]  # fmt: skip
    headers += [*MODEL_METRICS, "p95_latency_ms"]
    lines = [
        f"Models that served {where} in the last {since} (95% intervals, users as clusters)",
        "",
        *table(headers, body, 3),
    ]
    if unserved:
        lines.append(f"  ({unserved} calls reached no model: refused or failed at the gateway)")
    if by:
        lines += ["", *_segment_table(metric_name, by, reference, segments, models, diffs)]
        if diffs:
            lines += ["", *_differences(metric_name, by, reference, diffs)]
        lines += ["", *warnings(metric_name, by, reference, diffs)]
    lines += ["", NOTE]
    return "\n".join(lines).rstrip() + "\n"


def _unique(figures: dict[str, dict[str, Any]]) -> bool:
    """Each served model name is served by one provider only (then it is the key)."""
    names = [f["upstream_model"] for f in figures.values()]
    return len(names) == len(set(names))


def _fig_json(f: Figure) -> dict[str, Any]:
    return {"value": f.value, "ci95": f.ci95, "users": f.units}


def _diff_json(d: Difference) -> dict[str, Any]:
    return {
        "upstream_model": label(d.model)[0], "pooled": d.pooled, "pooled_ci95": d.pooled_ci95,
        "stratified": d.stratified, "stratified_ci95": d.stratified_ci95,
        "coverage": d.coverage, "segments": d.segments, "simpson": d.simpson,
        "confounded": d.confounded,
    }  # fmt: skip
