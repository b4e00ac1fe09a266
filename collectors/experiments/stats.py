"""The arithmetic left after ClickHouse: delta-method variances, always-valid confidence
sequences, the sequential sample-ratio-mismatch test. Standard library only.

- Ratio metric y/x over units (Deng et al., "Applying the delta method in metric
  analytics", 2018): R = Σy/Σx, Var(R) ≈ (s_yy - 2R s_xy + R² s_xx) / (n x̄²), with s the
  per-unit (co)variances. Units are independent; the calls within one are not.
- Difference of two arms, D = R_t - R_c with variance V = Var_t + Var_c, tested with the
  normal-mixture sequential probability ratio test (mSPRT; Robbins 1970, Johari et al.
  "Always valid inference", 2017/2022; the two-sided normal-mixture boundary of Howard et
  al. 2021). With a N(0, τ²) mixture over the effect and r = τ² / V,
      Λ = (1 + r)^(-1/2) · exp(r z² / (2 (1 + r))),   z = D / sqrt(V),
  and by Ville's inequality P(Λ ever ≥ 1/alpha | no effect) <= alpha however often it is
  read. τ² is a fixed multiple of the per-unit variance σ² (V = σ²/n), tuned so that the
  interval is the narrowest possible at a horizon of N units: r = r*·n/N, where r* minimises
  the half-width (about 8 at alpha 0.05). Then the boundary, in standard errors, depends on
  the units read so far and nothing else (`Mixture.z_bound(n)`). Without a planned horizon
  the mixture is over several horizons (50 to 819,200 units, equal weights): a mixture of
  test martingales is one, so it stays valid, and its interval is within 10-14% of the one
  tuned to the units actually read, from 100 units to a million; a planned horizon gives
  within 8% over a 16x range around it. σ² is estimated (plug-in), so the guarantee is asymptotic
  (Waudby-Smith et al., "Time-uniform central limit theory and asymptotic confidence
  sequences", 2023); a minimum number of units per arm before any verdict keeps the early
  reads honest.
- SRM (stats_srm.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

_NORMAL = NormalDist()
DEFAULT_HORIZONS = tuple(50.0 * 4**k for k in range(8))  # units: 50 .. 819,200


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


def _halfwidth_sq(r: float, alpha: float) -> float:
    """(half-width / standard error)² of a single normal mixture with ratio r = τ²/V."""
    return (1 + 1 / r) * (math.log1p(r) + 2 * math.log(1 / alpha))


@lru_cache(maxsize=64)
def best_ratio(alpha: float) -> float:
    """r* = τ²/V at which a normal mixture's interval is narrowest (golden section)."""
    lo, hi = 0.05, 500.0
    g = (math.sqrt(5) - 1) / 2
    for _ in range(80):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if _halfwidth_sq(a, alpha) < _halfwidth_sq(b, alpha):
            hi = b
        else:
            lo = a
    return (lo + hi) / 2


@dataclass(frozen=True, slots=True)
class Mixture:
    """An always-valid test of a difference: normal mixtures each tightest at one of
    `horizons` (units), with equal weights, at level `alpha`."""

    alpha: float
    horizons: tuple[float, ...] = DEFAULT_HORIZONS

    def log_lr(self, z: float, n: float) -> float:
        """ln Λ at a difference of `z` standard errors after `n` units."""
        k = len(self.horizons)
        rs = best_ratio(self.alpha / k)
        terms = []
        for h in self.horizons:
            r = rs * max(n, 1.0) / h
            terms.append(-math.log(k) - 0.5 * math.log1p(r) + r * z * z / (2 * (1 + r)))
        top = max(terms)
        return top + math.log(sum(math.exp(t - top) for t in terms))

    def z_bound(self, n: float) -> float:
        """The |z| at which Λ reaches 1/alpha: the interval's half-width in standard errors.
        Smooth in ln n: interpolated in a table of 40 points per decade."""
        table = _z_table(self.alpha, self.horizons)
        x = max(0.0, math.log10(max(n, 1.0))) * _PER_DECADE
        i = min(int(x), len(table) - 2)
        f = min(x - i, 1.0)
        return table[i] * (1 - f) + table[i + 1] * f

    def solve_z(self, n: float) -> float:
        """z_bound without the table (bisection on ln Λ = ln(1/alpha))."""
        goal = math.log(1 / self.alpha)
        lo, hi = 0.0, 4.0
        while self.log_lr(hi, n) < goal:
            lo, hi = hi, hi * 2
        for _ in range(60):
            mid = (lo + hi) / 2
            if self.log_lr(mid, n) < goal:
                lo = mid
            else:
                hi = mid
        return hi

    def halfwidth(self, var: float, n: float) -> float:
        if not math.isfinite(var):
            return math.inf
        return math.sqrt(max(var, 0.0)) * self.z_bound(n)

    def p_value(self, diff: float, var: float, n: float) -> float:
        """Always-valid p-value: 1/Λ (capped at 1)."""
        if not math.isfinite(var) or var <= 0:
            return 1.0
        return min(1.0, math.exp(-self.log_lr(diff / math.sqrt(var), n)))

    def units_at(self, var: float, n: float, target: float) -> float:
        """Total units at which the half-width would be `target`, the variance shrinking as
        1/units (the fixed point of n' = var·n·z(n')² / target²; z moves slowly)."""
        if target <= 0 or not math.isfinite(var):
            return math.inf
        k = var * n / (target * target)
        m = k * self.z_bound(n) ** 2
        for _ in range(2):
            m = k * self.z_bound(m) ** 2
        return m

    def units_for(self, var: float, n: int, target: float, cap: int) -> int:
        """Total units at which the half-width falls to `target`, the variance shrinking as
        1/units; `cap` when it would take more."""
        if target <= 0 or not math.isfinite(var):
            return cap
        if self.halfwidth(var, n) <= target:
            return n
        if self.halfwidth(var * n / cap, cap) > target:
            return cap
        lo, hi = n, cap
        while hi - lo > max(1, lo // 500):
            mid = (lo + hi) // 2
            if self.halfwidth(var * n / mid, mid) > target:
                lo = mid
            else:
                hi = mid
        return hi


_PER_DECADE = 40
_DECADES = 10  # units up to 10^10


@lru_cache(maxsize=64)
def _z_table(alpha: float, horizons: tuple[float, ...]) -> tuple[float, ...]:
    m = Mixture(alpha, horizons)
    return tuple(m.solve_z(10 ** (i / _PER_DECADE)) for i in range(_DECADES * _PER_DECADE + 1))


def normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def fixed_p(diff: float, var: float) -> float:
    """The classical two-sided z-test p-value: valid for one pre-planned read only."""
    if not math.isfinite(var) or var <= 0:
        return 1.0
    return 2 * normal_sf(abs(diff) / math.sqrt(var))


# The effects the data allow, as multiples of the standard error around the estimate, with
# the weights of a Student t with 3 degrees of freedom: 101 points over ±10 standard
# errors. Heavy tails on purpose: the units a decision takes are far larger for effects
# near the margin's middle than elsewhere, and under normal weights the share of such
# effects would change exponentially with the estimate, under these polynomially.
_GRID = tuple(i / 5 for i in range(-50, 51))
_WEIGHTS = tuple((1 + u * u / 3) ** -2 for u in _GRID)


def more_units(
    mixture: Mixture, diff: float, var: float, n: int, margin: float
) -> tuple[float, float]:
    """(expected, most) further units (beyond the `n` read) until the interval decides
    either way: a winner once the half-width falls below the effect, no difference once the
    effect plus the half-width falls below the margin; `most` at a half-width of margin/2,
    where one of the two must happen whatever the effect. The expectation is over the
    effects the data allow (around `diff`, with its standard error), not the point estimate
    alone, so that a read that moves the estimate a little moves it a little too."""
    if not math.isfinite(var) or var <= 0 or n <= 0:
        return 0.0, 0.0
    most = max(0.0, mixture.units_at(var, n, margin / 2) - n)
    sd, total, weight = math.sqrt(var), 0.0, 0.0
    for u, w in zip(_GRID, _WEIGHTS, strict=True):
        effect = abs(diff + u * sd)
        target = max(effect, margin - effect)
        total += w * min(most, max(0.0, mixture.units_at(var, n, target) - n))
        weight += w
    return total / weight, most
