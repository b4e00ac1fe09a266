"""The sequential sample-ratio check (collectors/experiments/srm.py) by simulation, many
runs: units arrive one by one, each assigned by a fair coin (or the weights), and the check
is read every few dozen units, as a dashboard refreshing all day would. It must flag one
arm losing 15% of its units at 2,000 units per arm in at least 80% of experiments, and an
experiment whose assignment works in at most alpha of them however often it is read.
(bench/experiments_sim.py runs the same through the real SQL.)"""

from __future__ import annotations

import math
import random

from collectors.experiments import srm
from collectors.experiments.srm import SRM_ALPHA, srm_log_bf, srm_p


def flagged(runs: int, users: int, loss: float, every: int, seed: int, level: float) -> float:
    """Share of runs whose check ever crosses 1/level: `users` assigned 50/50, the second
    arm losing a share `loss` of its units, read after every `every` assigned units."""
    rng = random.Random(seed)
    threshold = math.log(1 / level)
    hits = 0
    for _ in range(runs):
        counts = [0, 0]
        for i in range(1, users + 1):
            arm = rng.random() < 0.5
            if not (arm and rng.random() < loss):
                counts[arm] += 1
            if i % every == 0 and srm_log_bf(counts, [0.5, 0.5]) >= threshold:
                hits += 1
                break
    return hits / runs


def test_one_arm_losing_15_percent_is_flagged_in_80_percent_of_experiments() -> None:
    # 4,000 users: about 2,000 in the control, 1,700 left in the other arm at the end
    power = flagged(runs=1500, users=4000, loss=0.15, every=200, seed=1, level=SRM_ALPHA)
    assert power >= 0.80, power


def test_the_dirichlet_mixture_alone_had_less_power(monkeypatch) -> None:
    """The released check (Dirichlet-multinomial mixture only): about 70%."""
    monkeypatch.setattr(srm, "TARGETED", 1e-12)
    power = flagged(runs=1500, users=4000, loss=0.15, every=200, seed=1, level=SRM_ALPHA)
    assert power < 0.78, power


def test_no_loss_rarely_flags_however_often_read() -> None:
    # at the real level (0.001) a false alarm is too rare to count in a few thousand runs;
    # at 0.05 the same test martingale's crossings are countable: both stay below alpha
    assert flagged(runs=2000, users=4000, loss=0.0, every=50, seed=2, level=SRM_ALPHA) <= 0.002
    assert flagged(runs=2000, users=4000, loss=0.0, every=50, seed=3, level=0.05) <= 0.05


def test_weights_and_several_arms() -> None:
    assert srm_p([5000, 5000], [0.5, 0.5]) == 1.0
    assert srm_p([5000, 4400], [0.5, 0.5]) < 0.001  # 12% fewer: flagged
    assert srm_p([5000, 4900], [0.5, 0.5]) > 0.05  # 2% fewer: not
    assert srm_p([7000, 3000], [0.7, 0.3]) == 1.0
    assert srm_p([5000, 5000], [0.7, 0.3]) < 1e-9
    assert srm_p([4000, 4000, 4000], [1 / 3] * 3) == 1.0
    assert srm_p([4000, 4000, 3400], [1 / 3] * 3) < SRM_ALPHA  # the third lost 15%
    assert srm_p([0, 0], [0.5, 0.5]) == 1.0
