"""From per-arm sums to a verdict you may read at any time.

A verdict is one of
- `srm`: assignment broken: the units per variant do not match the weights (sequential
  test, alpha 0.001); nothing else is trusted until that is fixed;
- `guardrail`: a variant is worse than the control on a guardrail metric;
- `winner`: a variant beats the control on the primary metric (effect and interval), or
  every variant loses to the control (the control wins);
- `no_difference`: every interval lies inside ±margin;
- `keep_running`: none of the above yet, with an estimate of how many more units it takes.
With several treatments each is compared with the control at alpha / (variants - 1), and
each guardrail at that divided by the number of guardrails.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from collectors.experiments.moments import ArmMoments
from collectors.experiments.stats import (
    always_valid_p,
    cs_halfwidth,
    fixed_p,
    ratio,
    srm_p,
    units_needed,
)
from gateway.experiments.spec import METRICS, Experiment

SRM_ALPHA = 0.001
KINDS = ("keep_running", "winner", "no_difference", "guardrail", "srm")  # gauge codes
GUARDRAIL_RELATIVE_SCALE = 0.1  # guardrail mixtures are tuned to 10% changes


@dataclass(frozen=True, slots=True)
class Comparison:
    metric: str
    variant: str
    control_value: float | None
    value: float | None
    diff: float | None  # variant - control
    low: float | None  # always-valid interval of diff
    high: float | None
    p_value: float  # always-valid
    fixed_p_value: float  # classical, for one pre-planned read only (shown for contrast)
    better: bool  # interval entirely on the metric's good side
    worse: bool


@dataclass(slots=True)
class Verdict:
    experiment: str
    kind: str  # srm | guardrail | winner | no_difference | keep_running
    message: str
    winner: str | None = None
    units: dict[str, int] = field(default_factory=dict)
    moved_units: int = 0  # seen under two variants (weights changed): left out
    srm_p_value: float = 1.0
    primary: list[Comparison] = field(default_factory=list)
    guardrails: list[Comparison] = field(default_factory=list)
    more_units_needed: int | None = None
    look: float = 0.0


def compare(
    metric: str, control: ArmMoments, arm: ArmMoments, alpha: float, tau: float | None
) -> Comparison:
    """Variant vs control on one metric. `tau`: the mixture's scale (None: 10% of the
    control's value)."""
    sc, st = control.metrics[metric], arm.metrics[metric]
    c = ratio(control.units, sc.sy, sc.sx, sc.syy, sc.sxx, sc.sxy)
    t = ratio(arm.units, st.sy, st.sx, st.syy, st.sxx, st.sxy)
    if c.value is None or t.value is None:
        none = (None, None, None, 1.0, 1.0, False, False)
        return Comparison(metric, arm.arm, c.value, t.value, *none)
    diff, var = t.value - c.value, c.variance + t.variance
    # guardrails: tuned to 10% changes, or to the metric's natural step when that is
    # larger (an error rate of 0 in the control must not make the mixture degenerate)
    scale = (
        tau
        if tau is not None
        else max(abs(c.value) * GUARDRAIL_RELATIVE_SCALE, METRICS[metric].scale)
    )
    tau2 = scale**2
    h = cs_halfwidth(var, tau2, alpha)
    low, high = diff - h, diff + h
    good_up = METRICS[metric].higher_is_better
    better = low > 0 if good_up else high < 0
    worse = high < 0 if good_up else low > 0
    return Comparison(
        metric,
        arm.arm,
        c.value,
        t.value,
        diff,
        low,
        high,
        always_valid_p(diff, var, tau2),
        fixed_p(diff, var),
        better,
        worse,
    )


def primary_tau(exp: Experiment) -> float:
    """The primary metric's mixture is tuned to effects of about twice the margin."""
    return 2 * exp.margin


def _needed(exp: Experiment, control: ArmMoments, arm: ArmMoments, alpha: float) -> int | None:
    """Total units (both arms) at which the interval would settle either way, if the effect
    is what it looks like now."""
    sc, st = control.metrics[exp.primary], arm.metrics[exp.primary]
    c = ratio(control.units, sc.sy, sc.sx, sc.syy, sc.sxx, sc.sxy)
    t = ratio(arm.units, st.sy, st.sx, st.syy, st.sxx, st.sxy)
    if c.value is None or t.value is None:
        return None
    n, var, d = control.units + arm.units, c.variance + t.variance, abs(t.value - c.value)
    tau2 = primary_tau(exp) ** 2
    options = [
        units_needed(n, var, tau2, alpha, d),  # to call a winner
        units_needed(n, var, tau2, alpha, exp.margin - d),  # to call no difference
    ]
    found = [o for o in options if o is not None]
    return min(found) if found else None


def decide(exp: Experiment, arms: Iterable[ArmMoments]) -> Verdict:
    """The verdict of one experiment at one look, from its arms' sums."""
    by_name = {a.arm: a for a in arms}
    moved = by_name.pop("", None)
    look = next((a.look for a in by_name.values()), 0.0)
    names = [v.name for v in exp.variants]
    got = {n: by_name.get(n, ArmMoments(look, exp.name, n, 0)) for n in names}
    units = {n: a.units for n, a in got.items()}
    v = Verdict(exp.name, "keep_running", "", units=units, look=look)
    v.moved_units = moved.units if moved else 0
    weights = exp.weights()
    srm_counts = [got[n].srm_units if got[n].srm_units >= 0 else units[n] for n in names]
    v.srm_p_value = srm_p(srm_counts, [weights[n] for n in names])
    if v.srm_p_value < SRM_ALPHA:
        shares = ", ".join(
            f"{n} {c / max(1, sum(srm_counts)):.1%} (expected {weights[n]:.1%})"
            for n, c in zip(names, srm_counts, strict=True)
        )
        v.kind, v.message = "srm", f"assignment broken: units per variant {shares}"
        return v
    short = sum(max(0, exp.min_units - units[n]) for n in names)
    if short:
        v.more_units_needed = short
        v.message = f"too early: fewer than {exp.min_units} units in some variant"
        return v
    control = got[exp.control.name]
    treatments = [got[n] for n in names[1:]]
    alpha = exp.alpha / len(treatments)
    tau = primary_tau(exp)
    v.primary = [compare(exp.primary, control, t, alpha, tau) for t in treatments]
    # Bonferroni over the guardrails too: a false stop is as costly as a false winner
    g_alpha = alpha / max(1, len(exp.guardrails))
    v.guardrails = [
        compare(g, control, t, g_alpha, None) for t in treatments for g in exp.guardrails
    ]
    harmed = {c.variant: c.metric for c in v.guardrails if c.worse}
    better = sorted(
        (c for c in v.primary if c.better and c.variant not in harmed),
        key=lambda c: -abs(c.diff or 0.0),
    )
    label = METRICS[exp.primary].label
    if better:
        c = better[0]
        v.kind, v.winner = "winner", c.variant
        v.message = (
            f"{c.variant} wins on {label}: {c.diff:+.4g} vs {exp.control.name} "
            f"(always-valid {1 - exp.alpha:.0%} interval {c.low:+.4g} to {c.high:+.4g})"
        )
    elif harmed:
        name, metric = next(iter(harmed.items()))
        v.kind = "guardrail"
        v.message = f"stop {name}: worse than {exp.control.name} on {METRICS[metric].label}"
    elif all(c.worse for c in v.primary):
        v.kind, v.winner = "winner", exp.control.name
        v.message = f"{exp.control.name} (control) wins on {label}: every variant is worse"
    elif all(
        c.low is not None and c.high is not None and -exp.margin < c.low and c.high < exp.margin
        for c in v.primary
    ):
        v.kind = "no_difference"
        v.message = f"no meaningful difference on {label}: every interval within ±{exp.margin:g}"
    else:
        needs = [_needed(exp, control, t, alpha) for t in treatments]
        known = [n for n in needs if n is not None]
        total = sum(units.values())
        v.more_units_needed = max(0, max(known) - total) if known else None
        v.message = "keep running" + (
            f": about {v.more_units_needed} more units if the effect holds"
            if v.more_units_needed is not None
            else ""
        )
    return v


def decide_all(
    experiments: Iterable[Experiment], moments: Iterable[ArmMoments]
) -> dict[tuple[float, str], Verdict]:
    """Verdicts per (look, experiment) for every look present in `moments`."""
    specs = {e.name: e for e in experiments}
    grouped: dict[tuple[float, str], list[ArmMoments]] = {}
    for m in moments:
        if m.group in specs:
            grouped.setdefault((m.look, m.group), []).append(m)
    return {key: decide(specs[key[1]], arms) for key, arms in grouped.items()}
