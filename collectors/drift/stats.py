"""The statistics of drift, in plain Python: chi-square, Fisher's exact test, the pooled
two-proportion z, the Jensen-Shannon distance."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

_NORMAL = NormalDist()


def _gamma_q(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) (series / continued fraction)."""
    if x <= 0:
        return 1.0
    log_pre = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:  # series for P, Q = 1 - P
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_pre))
    tiny = 1e-300  # Lentz's continued fraction for Q
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_pre) * h)


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X ~ chi-square with `df` degrees of freedom."""
    return 1.0 if df <= 0 else _gamma_q(df / 2, x / 2)


def _merge(bins: list[tuple[int, int]], need: float, ordered: bool) -> list[tuple[int, int]]:
    """Bins merged until each holds at least `need` calls (both windows together): adjacent
    ones when `ordered`, else the sparse ones pooled into one."""
    if ordered:
        out: list[tuple[int, int]] = []
        acc = (0, 0)
        for c, r in bins:
            acc = (acc[0] + c, acc[1] + r)
            if sum(acc) >= need:
                out.append(acc)
                acc = (0, 0)
        if sum(acc):
            if out:
                out[-1] = (out[-1][0] + acc[0], out[-1][1] + acc[1])
            else:
                out.append(acc)
        return out
    big = [b for b in bins if sum(b) >= need]
    small = [b for b in bins if sum(b) < need]
    pooled = (sum(c for c, _ in small), sum(r for _, r in small))
    if sum(pooled):
        if sum(pooled) >= need or not big:
            big.append(pooled)
        else:  # still sparse: into the smallest of the others
            i = min(range(len(big)), key=lambda j: sum(big[j]))
            big[i] = (big[i][0] + pooled[0], big[i][1] + pooled[1])
    return big


def chi2_homogeneity(
    cur: Sequence[int], ref: Sequence[int], ordered: bool
) -> tuple[float, int, float]:
    """Pearson's chi-square test that two count vectors come from one distribution, after
    merging bins to an expected count of at least 5 per window. (statistic, df, p)."""
    n, m = sum(cur), sum(ref)
    if n == 0 or m == 0:
        return 0.0, 0, 1.0
    total = n + m
    bins = _merge(
        [(c, r) for c, r in zip(cur, ref, strict=True) if c + r], 5 * total / min(n, m), ordered
    )
    stat = 0.0
    for c, r in bins:
        t = c + r
        ec, er = n * t / total, m * t / total
        stat += (c - ec) ** 2 / ec + (r - er) ** 2 / er
    df = len(bins) - 1
    return stat, df, chi2_sf(stat, df)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of Fisher's exact test on [[x1, n1 - x1], [x2, n2 - x2]]: the sum of
    the probabilities of the tables (given the margins: x1 is hypergeometric) no more likely
    than the observed one, with a relative tolerance of 1e-7 so that ties computed with
    rounding errors count as ties (as scipy and R do)."""
    k, total = x1 + x2, n1 + n2
    if n1 == 0 or n2 == 0 or k == 0 or k == total:
        return 1.0
    lo, hi = max(0, k - n2), min(k, n1)

    def log_ratio(x: int) -> float:  # log(pmf(x) / pmf(x - 1))
        return math.log((k - x + 1) * (n1 - x + 1) / (x * (total - k - n1 + x)))

    # Walk both ways from x1 in log space, relative to pmf(x1): no term can overflow, and
    # the tables nearest x1 (where ties are) get the smallest rounding errors.
    limit = math.log1p(1e-7)
    s, lp = 1.0, 0.0
    for x in range(x1 + 1, hi + 1):
        lp += log_ratio(x)
        if lp <= limit:
            s += math.exp(lp)
    lp = 0.0
    for x in range(x1, lo, -1):
        lp -= log_ratio(x)
        if lp <= limit:
            s += math.exp(lp)
    log_at = _log_comb(k, x1) + _log_comb(total - k, n1 - x1) - _log_comb(total, n1)
    return min(1.0, math.exp(log_at) * s)


def two_proportion_z(x1: int, n1: int, x2: int, n2: int) -> float:
    """Pooled z of p1 - p2 (0 when both are 0 or both 1)."""
    if n1 == 0 or n2 == 0:
        return 0.0
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return (x1 / n1 - x2 / n2) / se if se > 0 else 0.0


def js_distance(cur: Sequence[int], ref: Sequence[int]) -> float:
    """Jensen-Shannon distance (square root of the divergence, log base 2: 0..1)."""
    n, m = sum(cur), sum(ref)
    if n == 0 or m == 0:
        return 0.0
    div = 0.0
    for c, r in zip(cur, ref, strict=True):
        p, q = c / n, r / m
        mid = (p + q) / 2
        if p:
            div += p * math.log2(p / mid) / 2
        if q:
            div += q * math.log2(q / mid) / 2
    return math.sqrt(max(0.0, div))


def z_for(alpha: float) -> float:
    """The two-sided |z| threshold of level `alpha`."""
    return -_NORMAL.inv_cdf(alpha / 2)


TAIL_Z = 3.0  # a bad tail that grew by more standard errors than this is no improvement


def direction(cur: Sequence[int], ref: Sequence[int]) -> tuple[float, float, float]:
    """Where the current window's values went, from the counts of ordered bins:
    (P(current > reference) - P(current < reference) for a value of each, drawn at
    random, as binned; the largest rise of the current share above any bin boundary, and
    below any, in standard errors of a difference of two proportions). A distribution that
    moved down has a negative first figure and no upper tail that rose beyond noise."""
    n, m = sum(cur), sum(ref)
    if n == 0 or m == 0:
        return 0.0, 0.0, 0.0
    p = [c / n for c in cur]
    q = [r / m for r in ref]
    below_q = 0.0  # reference share in the bins below the current one
    shift = 0.0
    for pi, qi in zip(p, q, strict=True):
        above_q = 1.0 - below_q - qi
        shift += pi * (below_q - above_q)
        below_q += qi
    up = down = 0.0
    cp = cq = 0.0
    for pi, qi in zip(p[:-1], q[:-1], strict=True):
        cp, cq = cp + pi, cq + qi
        pooled = (cp * n + cq * m) / (n + m)
        se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n + 1 / m))
        up = max(up, (cq - cp) / se)  # more of the current above this boundary
        down = max(down, (cp - cq) / se)
    return shift, up, down
