"""The sequential sample-ratio-mismatch (SRM) check: do the units per variant follow the
configured weights? Anytime-valid: read after every unit, an experiment whose assignment
works is flagged in at most `SRM_ALPHA` of runs.

The test is a likelihood ratio of the unit counts against the weights, mixed over the
alternatives worth catching (Lindon and Malek, "Anytime-valid inference for multinomial
count data", 2022, mix a Dirichlet prior; a mixture of test martingales is one, so any
fixed mixing keeps Ville's inequality):
- with weight `TARGETED`, "one variant loses a share `LOSS` of its units" (a logging or
  assignment bug in one arm, the SRM seen in practice), each variant equally likely;
- the rest, the Dirichlet-multinomial mixture (concentration `CONCENTRATION`) for any
  other departure from the weights.
A mixture tuned to the effect to catch is what gives power: 2,000 units per arm with one
arm losing 15% are flagged in 86% of experiments (read 20 times) at alpha 0.001, against
73% for the Dirichlet mixture alone. `LOSS` sits a little below the 15% to catch because a
boundary-crossing test gains by being tuned to slightly less than the effect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

SRM_ALPHA = 0.001
LOSS = 0.12
TARGETED = 0.9
CONCENTRATION = 1000.0


def _dirichlet_log_bf(counts: Sequence[int], weights: Sequence[float]) -> float:
    alphas = [CONCENTRATION * w for w in weights]
    n = sum(counts)
    out = math.lgamma(CONCENTRATION) - math.lgamma(CONCENTRATION + n)
    for c, a, w in zip(counts, alphas, weights, strict=True):
        out += math.lgamma(a + c) - math.lgamma(a) - c * math.log(w)
    return out


def _loss_log_lr(counts: Sequence[int], weights: Sequence[float], arm: int) -> float:
    """ln of the likelihood ratio of "arm `arm` loses `LOSS` of its units" to the weights."""
    kept = 1 - weights[arm] * LOSS
    out = 0.0
    for i, (c, w) in enumerate(zip(counts, weights, strict=True)):
        p = w * (1 - LOSS) / kept if i == arm else w / kept
        out += c * math.log(p / w)
    return out


def _logsumexp(xs: Sequence[float]) -> float:
    top = max(xs)
    return top + math.log(sum(math.exp(x - top) for x in xs))


def srm_log_bf(counts: Sequence[int], weights: Sequence[float]) -> float:
    """ln of the mixture likelihood ratio of the unit counts against the expected shares
    `weights` (summing to 1). Large when the split is not what it should be."""
    k = len(counts)
    terms = [math.log(TARGETED / k) + _loss_log_lr(counts, weights, i) for i in range(k)]
    terms.append(math.log(1 - TARGETED) + _dirichlet_log_bf(counts, weights))
    return _logsumexp(terms)


def srm_p(counts: Sequence[int], weights: Sequence[float]) -> float:
    """Always-valid p-value of the sample-ratio check (1 / likelihood ratio, capped at 1)."""
    if sum(counts) == 0:
        return 1.0
    return min(1.0, math.exp(-srm_log_bf(counts, weights)))
