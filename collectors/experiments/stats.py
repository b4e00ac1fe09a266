"""The arithmetic left after ClickHouse: delta-method variances, always-valid confidence
sequences, the sequential sample-ratio-mismatch test. Standard library only.

- Ratio metric y/x over units (Deng et al., "Applying the delta method in metric
  analytics", 2018): R = Σy/Σx, Var(R) ≈ (s_yy - 2R s_xy + R² s_xx) / (n x̄²), with s the
  per-unit (co)variances. Units are independent; the calls within one are not.
- Difference of two arms, D = R_t - R_c with variance V = Var_t + Var_c, tested with the
  normal-mixture sequential probability ratio test (mSPRT; Robbins 1970, Johari et al.
  "Always valid inference", 2017/2022; the two-sided normal-mixture boundary of Howard et
  al. 2021): with a N(0, τ²) mixture over the effect,
      Λ = sqrt(V / (V + τ²)) · exp(τ² D² / (2 V (V + τ²))),
  and by Ville's inequality P(Λ ever ≥ 1/alpha | no effect) <= alpha however often it is read.
  The matching confidence sequence is D ± sqrt(V (V + τ²) / τ² · ln((V + τ²) / (V alpha²))).
  V is estimated (plug-in), so the guarantee is asymptotic; a minimum number of units per
  arm before any verdict keeps the early reads honest.
- SRM: Dirichlet-multinomial mixture Bayes factor against the configured weights (Lindon
  and Malek, "Anytime-valid inference for multinomial count data", 2022); also valid under
  continuous monitoring.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Estimate:
    value: float | None  # None: no denominator (no data for this metric)
    variance: float
    units: int


def ratio(n: int, sy: float, sx: float, syy: float, sxx: float, sxy: float) -> Estimate:
    """The ratio Σy/Σx over `n` units and its delta-method variance."""
    if n < 2 or sx <= 0:
        return Estimate(None, math.inf, n)
    r = sy / sx
    mx = sx / n
    vy = syy / n - (sy / n) ** 2
    vx = sxx / n - mx**2
    cxy = sxy / n - (sy / n) * mx
    var = (vy - 2 * r * cxy + r * r * vx) / (n * mx * mx)
    # (n / (n - 1)): the unbiased per-unit variances
    return Estimate(r, max(var, 0.0) * n / (n - 1), n)


def mixture_log_lr(diff: float, var: float, tau2: float) -> float:
    """ln Λ of the normal-mixture SPRT for an observed difference with variance `var`."""
    return 0.5 * math.log(var / (var + tau2)) + tau2 * diff * diff / (2 * var * (var + tau2))


def cs_halfwidth(var: float, tau2: float, alpha: float) -> float:
    """Half-width of the always-valid (1 - alpha) confidence sequence at variance `var`."""
    if not math.isfinite(var):
        return math.inf
    if var <= 0:
        return 0.0
    return math.sqrt(var * (var + tau2) / tau2 * math.log((var + tau2) / (var * alpha * alpha)))


def always_valid_p(diff: float, var: float, tau2: float) -> float:
    if not math.isfinite(var) or var <= 0:
        return 1.0
    return min(1.0, math.exp(-mixture_log_lr(diff, var, tau2)))


def normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def fixed_p(diff: float, var: float) -> float:
    """The classical two-sided z-test p-value: valid for one pre-planned read only."""
    if not math.isfinite(var) or var <= 0:
        return 1.0
    return 2 * normal_sf(abs(diff) / math.sqrt(var))


def units_needed(units: int, var: float, tau2: float, alpha: float, target: float) -> int | None:
    """Total units at which the sequence's half-width falls to `target`, assuming the
    variance shrinks as 1/units; None when it never would (target <= 0)."""
    if target <= 0 or not math.isfinite(var) or units <= 0:
        return None
    if cs_halfwidth(var, tau2, alpha) <= target:
        return units
    lo, hi = units, units * 2
    while cs_halfwidth(var * units / hi, tau2, alpha) > target:
        lo, hi = hi, hi * 2
        if hi > units * 10**7:
            return None
    while hi - lo > max(1, lo // 200):
        mid = (lo + hi) // 2
        if cs_halfwidth(var * units / mid, tau2, alpha) > target:
            lo = mid
        else:
            hi = mid
    return hi


def srm_log_bf(
    counts: Sequence[int], weights: Sequence[float], concentration: float = 1000.0
) -> float:
    """ln of the Dirichlet-multinomial Bayes factor of the unit counts against the expected
    shares `weights` (summing to 1). Large when the split is not what it should be."""
    alphas = [concentration * w for w in weights]
    n = sum(counts)
    out = math.lgamma(concentration) - math.lgamma(concentration + n)
    for c, a, w in zip(counts, alphas, weights, strict=True):
        out += math.lgamma(a + c) - math.lgamma(a) - c * math.log(w)
    return out


def srm_p(counts: Sequence[int], weights: Sequence[float]) -> float:
    """Always-valid p-value of the sample-ratio check (1 / Bayes factor, capped at 1)."""
    if sum(counts) == 0:
        return 1.0
    return min(1.0, math.exp(-srm_log_bf(counts, weights)))
