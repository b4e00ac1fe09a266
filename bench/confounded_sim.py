"""The confounded observational comparison of bench/experiments_sim.py: per seed, an app
whose users are on a "pro" plan (30%, accepting 45% of suggestions) or a "free" one (20%),
whatever the model. model-b serves 80% of the pro users and 20% of the free ones, model-a
the rest. The true difference between the models is zero in every plan; pooled, model-b
looks better. Each seed is read as `llm-gateway report models --by property:plan` reads
it (collectors/report/models.py), all seeds in two queries."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from bench.sim_rows import CALL_COLUMNS, DAYS, EVENT_COLUMNS, T0, Rows, insert_tsv, poisson
from collectors.experiments.moments import ArmMoments, Arms, read_moments
from collectors.report.models import SERVED, Difference, stratify

USERS = 2000
PLANS = {"pro": (0.3, 0.45, 0.8), "free": (0.7, 0.20, 0.2)}  # share, acceptance, model-b


def generate(seed: int, rows: Rows) -> None:
    rng = random.Random(f"confounded:{seed}")
    app = f"conf-{seed:04d}"
    for u in range(USERS):
        plan = "pro" if rng.random() < PLANS["pro"][0] else "free"
        _, base, b_share = PLANS[plan]
        model = "model-b" if rng.random() < b_share else "model-a"
        p = rng.betavariate(base * 20, (1 - base) * 20)
        user = f"{app}-u{u}"
        arrive = T0 + rng.random() * DAYS * 86400
        for turn in range(1, 2 + poisson(rng, 1.5)):
            rows.call(rng, p, True, rid=f"{user}-r{turn}", t=arrive + turn * 60, app=app,
                      user=user, session=f"{user}-s", turn=turn, model=model,
                      props={"plan": plan})  # fmt: skip


@dataclass(frozen=True, slots=True)
class Read:
    reference: str  # the most used model
    difference: Difference  # model-b's from it


def confounded(store: Any, seeds: int) -> list[Read]:
    rows = Rows()
    for seed in range(seeds):
        generate(seed, rows)
    insert_tsv(store, "llm_calls", CALL_COLUMNS, rows.calls)
    insert_tsv(store, "llm_feedback", EVENT_COLUMNS, rows.events)

    def arms(group: str) -> Arms:
        return Arms(group, SERVED, f"concat(end_user, '/', {SERVED})",
                    "startsWith(app, 'conf-') AND upstream_model != ''", "''")  # fmt: skip

    def query(sql: str) -> bytes:
        out: bytes = store.query(sql, "JSONEachRow")
        return out

    end = [T0 + (DAYS + 1) * 86400]
    pooled: dict[str, dict[str, ArmMoments]] = {}
    for m in read_moments(query, arms("toString(app)"), end):
        pooled.setdefault(m.group, {})[m.arm] = m
    segments: dict[str, dict[str, dict[str, ArmMoments]]] = {}
    for m in read_moments(query, arms("concat(toString(app), '|', properties['plan'])"), end):
        app, plan = m.group.split("|")
        segments.setdefault(app, {}).setdefault(plan, {})[m.arm] = m
    out = []
    for app in sorted(pooled):
        models = pooled[app]
        reference = max(models, key=lambda a: models[a].units)
        (diff,) = stratify("acceptance_rate", models, segments[app], reference)
        out.append(Read(reference, diff))
    return out


def summary(reads: list[Read]) -> str:
    n = len(reads)
    diffs = [r.difference for r in reads]
    pooled_says = sum(abs(d.pooled or 0) > d.pooled_ci95 for d in diffs)
    covers = sum(abs(d.stratified or 0) <= d.stratified_ci95 for d in diffs)
    warned = sum(d.simpson or d.confounded for d in diffs)
    mean = math.fsum(d.pooled or 0 for d in diffs) / max(1, n)
    smean = math.fsum(d.stratified or 0 for d in diffs) / max(1, n)
    return "\n".join([
        f"confounded: {n} apps of {USERS} users, model-b serving 80% of pro and 20% of free users",
        f"  pooled model-b - model-a: mean {mean * 100:+.1f} pt, its 95% interval excludes 0 "
        f"in {pooled_says} of {n}",
        f"  stratified by plan: mean {smean * 100:+.2f} pt, its 95% interval covers 0 in "
        f"{covers} of {n}",
        f"  report warned (confounding or Simpson's paradox) in {warned} of {n}",
    ])  # fmt: skip
