"""From per-arm sums to a verdict you may read at any time.

A verdict is one of
- `srm`: assignment broken: the units per variant do not match the weights (srm.py);
  nothing else is trusted until that is fixed;
- `guardrail`: a variant is worse than the control on a guardrail metric (every breach is
  named, with its figures);
- `winner`: a variant beats the control on the primary metric (effect and interval), or
  every variant loses to the control (the control wins);
- `no_difference`: every interval lies inside ±margin;
- `keep_running`: none of the above yet, with an estimate of how many more units it takes.
With several treatments each is compared with the control at alpha / (variants - 1), and
each guardrail at that divided by the number of guardrails. Every interval is always-valid
(stats.Mixture, tuned to `planned_units` when declared), in points and as a relative lift;
the primary metric is CUPED-adjusted when units have a pre-period (cuped.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from collectors.experiments.cuped import Primary, adjust
from collectors.experiments.moments import RATIOS, ArmMoments, Sums
from collectors.experiments.srm import SRM_ALPHA, srm_p
from collectors.experiments.stats import Mixture, fixed_p, more_units, ratio
from collectors.report.text import metric as metric_text
from gateway.experiments.spec import METRICS, Experiment

KINDS = ("keep_running", "winner", "no_difference", "guardrail", "srm")  # gauge codes


@dataclass(frozen=True, slots=True)
class Cuped:
    """What CUPED changed in a comparison: the plain figures, and how much it helped."""

    diff: float  # unadjusted
    low: float
    high: float
    variance: float
    theta: float
    reduction: float  # share of the variance removed: the share of units saved
    with_history: int  # units with a pre-period


@dataclass(frozen=True, slots=True)
class Comparison:
    metric: str
    variant: str
    control_value: float | None
    value: float | None
    diff: float | None  # variant - control, in the metric's units (CUPED-adjusted if any)
    low: float | None  # always-valid interval of diff
    high: float | None
    p_value: float  # always-valid
    fixed_p_value: float  # classical, for one pre-planned read only (shown for contrast)
    better: bool  # interval entirely on the metric's good side
    worse: bool
    units: int = 0  # of the two arms
    lift: float | None = None  # diff / control value
    lift_low: float | None = None  # always-valid interval of the lift
    lift_high: float | None = None
    variance: float = math.inf  # of diff
    cuped: Cuped | None = None


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
    units_to_decide: int | None = None  # all variants: the units read plus those still needed
    # CUPED: the units the same verdict takes without it (the variance it removed, put
    # back: units needed grow with the variance); None without CUPED
    units_without_cuped: int | None = None
    look: float = 0.0


def mixture(exp: Experiment, alpha: float, share: float) -> Mixture:
    """The experiment's always-valid test for two arms holding `share` of its traffic."""
    if exp.planned_units is None:
        return Mixture(alpha)
    return Mixture(alpha, (max(2.0, exp.planned_units * share),))


def _primary(a: ArmMoments, metric: str) -> Primary:
    s = a.metrics[metric]
    return Primary(a.units, s.sy, s.sx, s.syy, s.sxx, s.sxy)


def compare(
    metric: str, control: ArmMoments, arm: ArmMoments, test: Mixture, cuped: bool = False
) -> Comparison:
    """Variant vs control on one metric; `cuped`: adjusted by the pre-period if there is
    one."""
    sc, st = control.metrics[metric], arm.metrics[metric]
    c = ratio(control.units, sc.sy, sc.sx, sc.syy, sc.sxx, sc.sxy)
    t = ratio(arm.units, st.sy, st.sx, st.syy, st.sxx, st.sxy)
    n = control.units + arm.units
    if c.value is None or t.value is None:
        return Comparison(metric, arm.arm, c.value, t.value, None, None, None, 1.0, 1.0,
                          False, False, n)  # fmt: skip
    diff, var = t.value - c.value, c.variance + t.variance
    if abs(diff) <= 1e-12 * max(abs(c.value), abs(t.value)):
        diff = 0.0  # the same figure, up to rounding (a constant cost per call in both)
    z = test.z_bound(n)
    adjusted = None
    if cuped:
        adj = adjust((_primary(control, metric), control.pre), (_primary(arm, metric), arm.pre))
        if adj is not None and adj.reduction > 0:
            h = z * math.sqrt(var)
            adjusted = Cuped(
                diff, diff - h, diff + h, var, adj.theta, adj.reduction, adj.with_history
            )
            diff, var = adj.diff, adj.variance
    h = z * math.sqrt(var)
    low, high = diff - h, diff + h
    lift = lift_low = lift_high = None
    if c.value != 0:
        # delta method on t/c - 1; CUPED narrows it as it narrows the difference
        lift_var = (t.variance + (t.value / c.value) ** 2 * c.variance) / c.value**2
        if adjusted is not None:
            lift_var *= 1 - adjusted.reduction
        lift = diff / c.value
        lift_h = z * math.sqrt(lift_var)
        lift_low, lift_high = lift - lift_h, lift + lift_h
    good_up = METRICS[metric].higher_is_better
    better = low > 0 if good_up else high < 0
    worse = high < 0 if good_up else low > 0
    return Comparison(
        metric, arm.arm, c.value, t.value, diff, low, high, test.p_value(diff, var, n),
        fixed_p(diff, var), better, worse, n, lift, lift_low, lift_high, var, adjusted,
    )  # fmt: skip


def describe(c: Comparison) -> str:
    """`+2.0 pt (+1.0 to +3.0 pt), +8.5% relative`: a comparison in one phrase."""
    if c.diff is None or c.low is None or c.high is None:
        return "no data"
    out = f"{metric_text(c.metric, c.diff, True)} ({metric_text(c.metric, c.low, True)} to "
    out += f"{metric_text(c.metric, c.high, True)})"
    if c.lift is not None:
        out += f", {c.lift * 100:+.1f}% relative"
    return out


def _needed(exp: Experiment, c: Comparison, test: Mixture) -> float | None:
    """Further units (the two arms) until this comparison's interval settles either way."""
    if c.diff is None or not math.isfinite(c.variance):
        return None
    return more_units(test, c.diff, c.variance, c.units, exp.margin)[0]


def _srm(exp: Experiment, v: Verdict, got: dict[str, ArmMoments]) -> bool:
    names = list(got)
    weights = exp.weights()
    counts = [got[n].srm_units if got[n].srm_units >= 0 else got[n].units for n in names]
    v.srm_p_value = srm_p(counts, [weights[n] for n in names])
    if v.srm_p_value >= SRM_ALPHA:
        return False
    shares = ", ".join(
        f"{n} {c / max(1, sum(counts)):.1%} (expected {weights[n]:.1%})"
        for n, c in zip(names, counts, strict=True)
    )
    v.kind, v.message = "srm", f"assignment broken: units per variant {shares}"
    return True


def decide(exp: Experiment, arms: Iterable[ArmMoments]) -> Verdict:
    """The verdict of one experiment at one look, from its arms' sums."""
    by_name = {a.arm: a for a in arms}
    moved = by_name.pop("", None)
    look = next((a.look for a in by_name.values()), 0.0)
    names = [v.name for v in exp.variants]
    got = {
        n: by_name.get(n) or ArmMoments(look, exp.name, n, 0, {m: Sums() for m in RATIOS})
        for n in names
    }
    units = {n: a.units for n, a in got.items()}
    v = Verdict(exp.name, "keep_running", "", units=units, look=look)
    v.moved_units = moved.units if moved else 0
    if _srm(exp, v, got):
        return v
    weights = exp.weights()
    control = got[exp.control.name]
    treatments = [got[n] for n in names[1:]]
    alpha = exp.alpha / len(treatments)
    g_alpha = alpha / max(1, len(exp.guardrails))  # a false stop costs as much as a false win
    tests = {
        t.arm: (
            mixture(exp, alpha, weights[control.arm] + weights[t.arm]),
            mixture(exp, g_alpha, weights[control.arm] + weights[t.arm]),
        )
        for t in treatments
    }
    v.primary = [compare(exp.primary, control, t, tests[t.arm][0], cuped=True) for t in treatments]
    _units_to_decide(exp, v, tests)
    total = sum(units.values())
    short = sum(max(0, exp.min_units - units[n]) for n in names)
    if short:
        # the figures are not read yet, but the estimate already counts
        v.primary = []
        v.more_units_needed = max(short, (v.units_to_decide or 0) - total)
        v.message = f"too early: fewer than {exp.min_units} units in some variant"
        return v
    v.guardrails = [
        compare(g, control, t, tests[t.arm][1]) for t in treatments for g in exp.guardrails
    ]
    harmed = [c for c in v.guardrails if c.worse]
    losers = {c.variant for c in harmed}
    better = sorted(
        (c for c in v.primary if c.better and c.variant not in losers),
        key=lambda c: -abs(c.diff or 0.0),
    )
    label = METRICS[exp.primary].label
    if better:
        c = better[0]
        v.kind, v.winner = "winner", c.variant
        v.message = (
            f"{c.variant} wins on {label} against {exp.control.name}: {describe(c)} "
            f"(always-valid {1 - exp.alpha:.0%} interval)"
        )
    elif harmed:
        v.kind = "guardrail"
        parts = []
        for name in dict.fromkeys(c.variant for c in harmed):
            breaches = "; ".join(
                f"{METRICS[c.metric].label} {describe(c)}" for c in harmed if c.variant == name
            )
            parts.append(f"stop {name}: worse than {exp.control.name} on {breaches}")
        v.message = ". ".join(parts)
    elif all(c.worse for c in v.primary):
        v.kind, v.winner = "winner", exp.control.name
        worst = "; ".join(f"{c.variant} {describe(c)}" for c in v.primary)
        v.message = (
            f"{exp.control.name} (control) wins on {label}: every variant is worse ({worst})"
        )
    elif all(
        c.low is not None and c.high is not None and -exp.margin < c.low and c.high < exp.margin
        for c in v.primary
    ):
        v.kind = "no_difference"
        v.message = f"no meaningful difference on {label}: every interval within ±{exp.margin:g}"
    else:
        if v.units_to_decide is not None:
            v.more_units_needed = max(0, v.units_to_decide - total)
        v.message = (
            f"about {v.more_units_needed} more units if the effect holds"
            if v.more_units_needed is not None
            else "no estimate of the units needed yet"
        )
        return v
    _decided_without_cuped(v)
    return v


def _units_to_decide(
    exp: Experiment, v: Verdict, tests: dict[str, tuple[Mixture, Mixture]]
) -> None:
    """The units (all variants) the primary comparisons need to settle (the slowest one)."""
    total = sum(v.units.values())
    needs = []
    for c in v.primary:
        more = _needed(exp, c, tests[c.variant][0])
        if more is not None and c.units:
            # the pair's share of all variants' units
            needs.append((total + round(more * total / c.units), c))
    if not needs:
        return
    v.units_to_decide, slowest = max(needs, key=lambda x: x[0])
    if slowest.cuped is not None:
        v.units_without_cuped = round(v.units_to_decide / (1 - slowest.cuped.reduction))


def _decided_without_cuped(v: Verdict) -> None:
    """A settled verdict: the units it took, and what it would have taken without CUPED."""
    total = sum(v.units.values())
    v.units_to_decide = total
    reductions = [c.cuped.reduction for c in v.primary if c.cuped is not None]
    v.units_without_cuped = round(total / (1 - min(reductions))) if reductions else None


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
