"""CUPED: the primary metric adjusted by each unit's value before the experiment (Deng et
al., "Improving the sensitivity of online controlled experiments by utilizing
pre-experiment data", 2013), for ratio metrics through the delta method.

Each arm's ratio R = Σy/Σx and pre-period ratio R0 = Σy0/Σx0 are linearised per unit,
φ = (y - R x) / x̄ and ψ = (y0 - R0 x0) / x̄0; their variances and covariance over units
give Var(R), Var(R0), Cov(R, R0). With θ = ΣCov / ΣVar(R0) estimated from both arms
together, the adjusted difference is
    D' = (R_t - R_c) - θ (R0_t - R0_c),   Var(D') = V - (ΣCov)² / ΣVar(R0),
smaller than V by the share of the outcome's variance the pre-period explains. Units are
randomised, so R0_t - R0_c is noise around 0: the adjustment removes noise, not effect.
A unit without history has y0 = x0 = 0 (ψ = 0) and is simply not helped.

The adjusted difference goes through the same always-valid mixture as the plain one: an
asymptotic confidence sequence on the adjusted per-unit values (Waudby-Smith et al. 2023;
Lindon et al., "Anytime-valid linear models and regression adjusted causal inference in
randomized experiments", 2022), θ being a plug-in like the variance.
"""

from __future__ import annotations

from dataclasses import dataclass

# Per arm, the sums the query returns (name: SQL over the unit's primary y, x as py, px
# and its pre-period y0, x0); `history` counts the units that had some.
PRE_SUMS: dict[str, str] = {
    "y0": "y0", "x0": "x0", "y0y0": "y0 * y0", "x0x0": "x0 * x0", "x0y0": "x0 * y0",
    "yy0": "py * y0", "yx0": "py * x0", "xy0": "px * y0", "xx0": "px * x0",
    "history": "toUInt8(x0 > 0)",
}  # fmt: skip


@dataclass(slots=True)
class PreSums:
    """One arm's pre-period sums (see PRE_SUMS)."""

    y0: float = 0.0
    x0: float = 0.0
    y0y0: float = 0.0
    x0x0: float = 0.0
    x0y0: float = 0.0
    yy0: float = 0.0
    yx0: float = 0.0
    xy0: float = 0.0
    xx0: float = 0.0
    history: float = 0.0


@dataclass(frozen=True, slots=True)
class Primary:
    """One arm's primary metric: units and the sums of y, x, y², x², xy."""

    n: int
    sy: float
    sx: float
    syy: float
    sxx: float
    sxy: float


@dataclass(frozen=True, slots=True)
class Adjusted:
    diff: float  # D'
    variance: float  # Var(D')
    theta: float
    reduction: float  # 1 - Var(D') / V: the share of units CUPED saves
    with_history: int  # units (both arms) with a pre-period


def _linearised(p: Primary, q: PreSums) -> tuple[float, float, float, float, float] | None:
    """(R, R0, Var(R), Var(R0), Cov(R, R0)) of one arm; None without a pre-period."""
    n = p.n
    if n < 2 or p.sx <= 0 or q.x0 <= 0:
        return None
    mx, my, mx0, my0 = p.sx / n, p.sy / n, q.x0 / n, q.y0 / n
    r, r0 = p.sy / p.sx, q.y0 / q.x0

    def c(sab: float, ma: float, mb: float) -> float:  # population covariance
        return sab / n - ma * mb

    var_phi = (c(p.syy, my, my) - 2 * r * c(p.sxy, mx, my) + r * r * c(p.sxx, mx, mx)) / mx**2
    var_psi = (
        c(q.y0y0, my0, my0) - 2 * r0 * c(q.x0y0, mx0, my0) + r0 * r0 * c(q.x0x0, mx0, mx0)
    ) / mx0**2
    cov = (
        c(q.yy0, my, my0) - r0 * c(q.yx0, my, mx0) - r * c(q.xy0, mx, my0)
        + r * r0 * c(q.xx0, mx, mx0)
    ) / (mx * mx0)  # fmt: skip
    unbiased = 1 / (n - 1)  # per-unit variance / n, with n - 1 in the denominator
    return r, r0, max(var_phi, 0.0) * unbiased, max(var_psi, 0.0) * unbiased, cov * unbiased


def adjust(control: tuple[Primary, PreSums], treatment: tuple[Primary, PreSums]) -> Adjusted | None:
    """The CUPED-adjusted treatment - control difference; None when an arm has no
    pre-period data (or it varies not at all)."""
    a, b = _linearised(*control), _linearised(*treatment)
    if a is None or b is None:
        return None
    var0 = a[3] + b[3]
    if var0 <= 0:
        return None
    cov = a[4] + b[4]
    theta = cov / var0
    v = a[2] + b[2]
    adjusted_v = max(v - cov * cov / var0, 0.0)
    diff = (b[0] - a[0]) - theta * (b[1] - a[1])
    history = int(control[1].history + treatment[1].history)
    return Adjusted(diff, adjusted_v, theta, 1 - adjusted_v / v if v > 0 else 0.0, history)
