"""Experiments simulation: synthetic users with known effects, through the real SQL and
verdict code on chDB.

    uv run python bench/experiments_sim.py [--seeds 200] [--keep]

Each scenario is many simulated experiments batched into one chDB table (one experiment
name per seed), read at 20 looks along the way by one query:
- `aa`: no effect (A/A): the share of experiments that *ever* declare a winner, or flag
  SRM, over the 20 looks; a naive t-test read the same way, for contrast;
- `lift`: a planted 3-point lift in acceptance: found, at which look, and the units the
  "keep running" verdicts asked for before that;
- `boolean`: the experiment of issue 19: 900 users, one call each, every suggestion
  shown and then `suggestion_accepted` true or false (25% accept the control's, 45% the
  challenger's): the challenger must win;
- `srm`: one variant loses 15% of its users to a logging bug, 2,000 users per arm: SRM
  flagged (power);
- `cuped`: users with history in the 14 days before the experiment and a 2-point lift:
  the units at which the winner is declared with CUPED and without;
- `confounded` (observational, no experiment): two models with the same acceptance in
  each plan, but model-b serves mostly "pro" users, who accept more: the pooled
  difference says model-b is better, the stratified one (`report models --by
  property:plan`) must recover the true zero.

Users are assigned by the gateway's own `Assigner`. Each user has a personal acceptance
propensity (Beta-distributed around the base rate, so calls within a user correlate) and
calls in one session, spread over a few hours after they first arrive; users arrive
uniformly over 14 days. Every call shows a suggestion; the user accepts it with their
propensity (plus the lift in the treatment). Calls ask for the alias `answer`; the
variant's model serves them (`upstream_model`).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.sim_rows import CALL_COLUMNS, DAYS, EVENT_COLUMNS, T0, Rows, insert_tsv, poisson  # noqa: E402
from collectors.experiments.cuped import PreSums  # noqa: E402
from collectors.experiments.moments import ArmMoments, experiment_arms, read_moments  # noqa: E402
from collectors.experiments.stats import fixed_p, ratio  # noqa: E402
from collectors.experiments.verdict import Verdict, decide  # noqa: E402
from gateway.experiments import Assigner, Experiment, Variant  # noqa: E402

LOOKS = 20


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    seeds: int
    users: int  # per simulated experiment
    base: float = 0.30  # acceptance rate of the control
    lift: float = 0.0  # added to the treatment's acceptance probability
    lost_share: float = 0.0  # treatment users whose calls never reach the table
    alpha: float = 0.05
    one_call: bool = False  # each user makes one call (else 1 + Poisson(1.5))
    say_no: bool = False  # a suggestion not accepted gets suggestion_accepted: false
    spread: float = 20.0  # Beta concentration of the users' propensities (lower: wider)
    history: float = 0.0  # mean calls per user in the 14 days before (0: none)


@dataclass(slots=True)
class Outcome:
    """One scenario's experiments, read at every look."""

    scenario: Scenario
    verdicts: dict[str, list[Verdict]] = field(default_factory=dict)  # per look, in order
    plain: dict[str, list[Verdict]] = field(default_factory=dict)  # the same, without CUPED
    naive_winner: dict[str, bool] = field(default_factory=dict)

    def share(self, pred: Callable[[list[Verdict]], bool], plain: bool = False) -> float:
        vs = self.plain if plain else self.verdicts
        return sum(pred(v) for v in vs.values()) / max(1, len(vs))

    def ever_winner(self) -> float:
        return self.share(lambda vs: any(v.kind == "winner" for v in vs))

    def naive_ever_winner(self) -> float:
        return sum(self.naive_winner.values()) / max(1, len(self.naive_winner))

    def ever_srm(self) -> float:
        return self.share(lambda vs: any(v.kind == "srm" for v in vs))

    def units_at_winner(self, plain: bool = False) -> dict[str, int]:
        """Per experiment that found its winner: the units (all variants) at that look."""
        out = {}
        for name, vs in (self.plain if plain else self.verdicts).items():
            first = next((v for v in vs if v.kind == "winner"), None)
            if first is not None:
                out[name] = sum(first.units.values())
        return out


def experiment(name: str, alpha: float) -> Experiment:
    return Experiment(
        name=name,
        variants=(Variant("control", 50.0, "model-a"), Variant("treatment", 50.0, "model-b")),
        primary="acceptance_rate",
        guardrails=("error_rate",),
        margin=0.01,
        alpha=alpha,
    )


def generate(sc: Scenario, seed: int, exp: Experiment, rows: Rows) -> None:
    """One simulated experiment's calls and signals."""
    rng = random.Random(f"{sc.name}:{seed}")
    assigner = Assigner([exp])
    for u in range(sc.users):
        user = f"{exp.name}-u{u}"
        a = assigner.assign(
            app="sim", model="answer", properties={}, user=user, session="", request_id=""
        )
        assert a is not None
        treated = a.variant.name == "treatment"
        if treated and rng.random() < sc.lost_share:
            continue
        own = rng.betavariate(sc.base * sc.spread, (1 - sc.base) * sc.spread)
        for k in range(poisson(rng, sc.history) if sc.history else 0):  # before the start
            t = T0 - rng.random() * DAYS * 86400
            rows.call(rng, own, sc.say_no, rid=f"{user}-h{k}", t=t, app="sim", user=user,
                      session=f"{user}-h{k}", turn=1, model="model-a")  # fmt: skip
        p = own + (sc.lift if treated else 0.0)
        arrive = T0 + rng.random() * DAYS * 86400
        turns = 1 if sc.one_call else 1 + poisson(rng, 1.5)
        for turn in range(1, turns + 1):
            t = arrive + (turn - 1) * rng.expovariate(1 / 600)
            rows.call(rng, p, sc.say_no, rid=f"{user}-r{turn}", t=t, app="sim", user=user,
                      session=f"{user}-s", turn=turn, exp=exp.name, variant=a.variant.name,
                      model=a.variant.model)  # fmt: skip


def looks() -> list[float]:
    return [T0 + DAYS * 86400 * (i + 1) / LOOKS + 6 * 3600 * (i + 1 == LOOKS) for i in range(LOOKS)]


def naive_significant(arms: list[ArmMoments], alpha: float) -> bool:
    """A classical two-sided z-test on the same delta-method variance, as if read once."""
    by = {a.arm: a for a in arms}
    if "control" not in by or "treatment" not in by:
        return False
    est = []
    for name in ("control", "treatment"):
        s = by[name].metrics["acceptance_rate"]
        est.append(ratio(by[name].units, s.sy, s.sx, s.syy, s.sxx, s.sxy))
    if est[0].value is None or est[1].value is None:
        return False
    return fixed_p(est[1].value - est[0].value, est[0].variance + est[1].variance) < alpha


def run(store: Any, scenarios: list[Scenario], log: Callable[[str], None] = lambda _: None):
    """Insert every scenario's experiments, read them all at every look, decide."""
    specs: dict[str, tuple[Scenario, Experiment]] = {}
    t = time.perf_counter()
    rows = Rows()
    for sc in scenarios:
        for seed in range(sc.seeds):
            exp = experiment(f"{sc.name}-{seed:04d}", sc.alpha)
            specs[exp.name] = (sc, exp)
            generate(sc, seed, exp, rows)
    insert_tsv(store, "llm_calls", CALL_COLUMNS, rows.calls)
    insert_tsv(store, "llm_feedback", EVENT_COLUMNS, rows.events)
    log(f"generated and inserted in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    arms = experiment_arms([e for _, e in specs.values()])
    moments = read_moments(lambda sql: store.query(sql, "JSONEachRow"), arms, looks())
    log(f"one query, {len(specs)} experiments x {LOOKS} looks: {time.perf_counter() - t:.1f} s")
    grouped: dict[tuple[float, str], list[ArmMoments]] = {}
    for m in moments:
        grouped.setdefault((m.look, m.group), []).append(m)
    out = {sc.name: Outcome(sc) for sc in scenarios}
    for (_look, name), arms_ in sorted(grouped.items()):
        sc, exp = specs[name]
        o = out[sc.name]
        o.verdicts.setdefault(name, []).append(decide(exp, arms_))
        if sc.history:
            plain = [dataclasses.replace(a, pre=PreSums()) for a in arms_]
            o.plain.setdefault(name, []).append(decide(exp, plain))
        o.naive_winner[name] = o.naive_winner.get(name, False) or naive_significant(arms_, sc.alpha)
    return out


def _median(xs: list[int]) -> int:
    return sorted(xs)[len(xs) // 2] if xs else 0


def report(out: dict[str, Outcome]) -> str:
    lines = []
    for o in out.values():
        sc = o.scenario
        lines.append(
            f"{sc.name}: {len(o.verdicts)} experiments x {LOOKS} looks, {sc.users} users each, "
            f"lift {sc.lift:+.2f}, lost share {sc.lost_share:.0%}"
        )
        lines.append(f"  ever declared a winner (always-valid): {o.ever_winner():.3f}")
        lines.append(f"  ever significant (naive t-test):       {o.naive_ever_winner():.3f}")
        lines.append(f"  ever flagged SRM:                      {o.ever_srm():.3f}")
        firsts = [
            next((i + 1 for i, v in enumerate(vs) if v.kind == "winner"), None)
            for vs in o.verdicts.values()
        ]
        found = [f for f in firsts if f is not None]
        if sc.lift and found:
            lines.append(f"  winner found at look (median): {_median(found)}")
        if sc.history:
            with_, without = o.units_at_winner(), o.units_at_winner(plain=True)
            both = [n for n in with_ if n in without]
            lines.append(
                f"  winner found in {len(with_)} with CUPED, {len(without)} without; where "
                f"both found it: a median {_median([with_[n] for n in both])} units with, "
                f"{_median([without[n] for n in both])} without"
            )
            reductions = [
                c.cuped.reduction for vs in o.verdicts.values() for v in vs for c in v.primary
                if c.cuped is not None
            ]  # fmt: skip
            if reductions:
                lines.append(f"  CUPED variance reduction (median): {_median(reductions):.0%}")
        asks = [
            v.more_units_needed
            for vs in o.verdicts.values()
            for v in vs
            if v.kind == "keep_running" and v.more_units_needed
        ]
        if asks:
            lines.append(f"  'keep running' asked for a median {_median(asks)} more units")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench.confounded_sim import confounded, summary
    from collectors.views import views
    from gateway.recording.store import migrate
    from gateway.recording.store.chdb_store import ChdbStore

    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=200, help="experiments per scenario")
    p.add_argument("--keep", action="store_true", help="keep the chDB directory")
    args = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="experiments-sim-")
    store = ChdbStore(tmp, "llm_gateway")
    migrate(store, views=views)
    s = args.seeds
    scenarios = [
        Scenario("aa", s, 1000),
        Scenario("lift", max(10, s // 10), 8000, lift=0.03),
        Scenario("boolean", max(10, s // 4), 900, base=0.25, lift=0.20, one_call=True,
                 say_no=True),
        Scenario("srm", s, 4000, one_call=True, lost_share=0.15),
        Scenario("cuped", max(10, s // 10), 8000, lift=0.03, spread=4.0, history=10.0),
    ]  # fmt: skip
    out = run(store, scenarios, lambda m: print(m, file=sys.stderr))
    print(report(out))
    print(summary(confounded(store, s)))
    store.close()
    if args.keep:
        print(f"chDB data kept in {tmp}", file=sys.stderr)
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
