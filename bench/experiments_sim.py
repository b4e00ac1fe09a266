"""Experiments simulation: synthetic users with known effects, through the real SQL and
verdict code on chDB.

    uv run python bench/experiments_sim.py [--seeds 200] [--users 1000] [--keep]

Three scenarios, each many simulated experiments batched into one chDB table (one
experiment name per seed) and read at 20 looks along the way by one query:
1. no effect (A/A): the share of experiments that *ever* declare a winner over the 20
   looks, for the always-valid test and, for contrast, a naive t-test read the same way;
2. a planted 3-point lift in acceptance: found, at which look, and the units the
   "keep running" verdicts asked for before that;
3. a planted assignment bug (the variant's logging loses a share of its users): SRM.

Users are assigned by the gateway's own `Assigner`. Each user has a personal acceptance
propensity (Beta-distributed around the base rate, so calls within a user correlate) and
1 + Poisson(1.5) calls in one session, spread over a few hours after they first arrive;
users arrive uniformly over 14 days. Every call shows a suggestion; the user accepts it
with their propensity (plus the lift in the treatment).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from collectors.experiments.moments import ArmMoments, experiment_arms, read_moments  # noqa: E402
from collectors.experiments.stats import fixed_p, ratio  # noqa: E402
from collectors.experiments.verdict import Verdict, decide_all  # noqa: E402
from gateway.experiments import Assigner, Experiment, Variant  # noqa: E402

T0 = 1_760_000_000.0  # a fixed start: runs are reproducible
DAYS = 14
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


@dataclass(slots=True)
class Outcome:
    """One scenario's experiments, read at every look."""

    scenario: Scenario
    verdicts: dict[str, list[Verdict]] = field(default_factory=dict)  # per look, in order
    naive_winner: dict[str, bool] = field(default_factory=dict)

    def share(self, pred: Callable[[list[Verdict]], bool]) -> float:
        return sum(pred(vs) for vs in self.verdicts.values()) / max(1, len(self.verdicts))

    def ever_winner(self) -> float:
        return self.share(lambda vs: any(v.kind == "winner" for v in vs))

    def naive_ever_winner(self) -> float:
        return sum(self.naive_winner.values()) / max(1, len(self.naive_winner))

    def ever_srm(self) -> float:
        return self.share(lambda vs: any(v.kind == "srm" for v in vs))


def experiment(name: str, alpha: float) -> Experiment:
    return Experiment(
        name=name,
        variants=(Variant("control", 50.0, "model-a"), Variant("treatment", 50.0, "model-b")),
        primary="acceptance_rate",
        guardrails=("error_rate",),
        margin=0.01,
        alpha=alpha,
    )


CALL_COLUMNS = (
    "request_id",
    "started_at",
    "app",
    "end_user",
    "session_id",
    "turn_index",
    "status_code",
    "outcome",
    "latency_ms",
    "cost_usd",
    "experiment",
    "variant",
    "request_model",
)
EVENT_COLUMNS = ("event_id", "ts", "request_id", "session_id", "app", "name", "value", "source")


def generate(sc: Scenario, seed: int, exp: Experiment) -> tuple[list[str], list[str]]:
    """TabSeparated lines of llm_calls and llm_feedback (CALL_COLUMNS, EVENT_COLUMNS) for
    one simulated experiment."""
    rng = random.Random(f"{sc.name}:{seed}")
    assigner = Assigner([exp])
    k = 20.0  # Beta concentration: users differ, calls of one user correlate
    calls: list[str] = []
    events: list[str] = []
    for u in range(sc.users):
        user = f"{exp.name}-u{u}"
        a = assigner.assign(
            app="sim", model="m", properties={}, user=user, session="", request_id=""
        )
        assert a is not None
        treated = a.variant.name == "treatment"
        if treated and rng.random() < sc.lost_share:
            continue
        p = rng.betavariate(sc.base * k, (1 - sc.base) * k) + (sc.lift if treated else 0.0)
        arrive = T0 + rng.random() * DAYS * 86400
        session = f"{user}-s"
        for turn in range(1, 2 + _poisson(rng, 1.5)):
            rid = f"{user}-r{turn}"
            t = arrive + (turn - 1) * rng.expovariate(1 / 600)
            latency = rng.lognormvariate(6, 0.5)
            calls.append(
                f"{rid}\t{t:.3f}\tsim\t{user}\t{session}\t{turn}\t200\tok\t{latency:.1f}\t"
                f"0.001\t{exp.name}\t{a.variant.name}\t{a.variant.model}\n"
            )
            events.append(
                f"{rid}-shown\t{t + 1:.3f}\t{rid}\t{session}\tsim\tsuggestion_shown\t1\tuser\n"
            )
            if rng.random() < p:
                events.append(
                    f"{rid}-accepted\t{t + 5:.3f}\t{rid}\t{session}\tsim\t"
                    "suggestion_accepted\t1\tuser\n"
                )
    return calls, events


def insert_tsv(store, table: str, columns: tuple[str, ...], lines: list[str]) -> None:
    # TabSeparated with named columns parses several times faster than JSONEachRow
    for i in range(0, len(lines), 500_000):
        store.command(
            f"INSERT INTO {table} ({', '.join(columns)}) FORMAT TabSeparated\n"
            + "".join(lines[i : i + 500_000])
        )


def _poisson(rng: random.Random, lam: float) -> int:
    n, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return n
        n += 1


def looks() -> list[float]:
    return [T0 + DAYS * 86400 * (i + 1) / LOOKS + 6 * 3600 * (i + 1 == LOOKS) for i in range(LOOKS)]


def naive_significant(arms: list[ArmMoments], alpha: float) -> bool:
    """A classical two-sided z-test on the same delta-method variance, as if read once."""
    by = {a.arm: a for a in arms}
    if "control" not in by or "treatment" not in by:
        return False
    est = []
    for name in ("control", "treatment"):
        a = by[name]
        s = a.metrics["acceptance_rate"]
        est.append(ratio(a.units, s.sy, s.sx, s.syy, s.sxx, s.sxy))
    if est[0].value is None or est[1].value is None:
        return False
    return fixed_p(est[1].value - est[0].value, est[0].variance + est[1].variance) < alpha


def run(store, scenarios: list[Scenario], log: Callable[[str], None] = lambda _: None):
    """Insert every scenario's experiments, read them all at every look, decide."""
    specs: dict[str, tuple[Scenario, Experiment]] = {}
    t = time.perf_counter()
    calls: list[str] = []
    events: list[str] = []
    for sc in scenarios:
        for seed in range(sc.seeds):
            exp = experiment(f"{sc.name}-{seed:04d}", sc.alpha)
            specs[exp.name] = (sc, exp)
            c, e = generate(sc, seed, exp)
            calls += c
            events += e
    insert_tsv(store, "llm_calls", CALL_COLUMNS, calls)
    insert_tsv(store, "llm_feedback", EVENT_COLUMNS, events)
    log(f"generated and inserted in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    arms = experiment_arms([e for _, e in specs.values()])
    moments = read_moments(lambda sql: store.query(sql, "JSONEachRow"), arms, looks())
    log(f"one query, {len(specs)} experiments x {LOOKS} looks: {time.perf_counter() - t:.1f} s")
    verdicts = decide_all([e for _, e in specs.values()], moments)
    grouped: dict[str, list[ArmMoments]] = {}
    for m in moments:
        grouped.setdefault(f"{m.look}|{m.group}", []).append(m)
    out = {sc.name: Outcome(sc) for sc in scenarios}
    for (_look, name), v in sorted(verdicts.items()):
        sc, exp = specs[name]
        out[sc.name].verdicts.setdefault(name, []).append(v)
    for key, arms_ in grouped.items():
        name = key.split("|", 1)[1]
        sc, _ = specs[name]
        o = out[sc.name]
        o.naive_winner[name] = o.naive_winner.get(name, False) or naive_significant(arms_, sc.alpha)
    return out


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
            lines.append(f"  winner found at look (median): {sorted(found)[len(found) // 2]}")
        asks = [
            v.more_units_needed
            for vs in o.verdicts.values()
            for v in vs
            if v.kind == "keep_running" and v.more_units_needed
        ]
        if asks:
            lines.append(
                f"  'keep running' asked for a median {sorted(asks)[len(asks) // 2]} more units"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from collectors.views import views
    from gateway.recording.store import migrate
    from gateway.recording.store.chdb_store import ChdbStore

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=200, help="experiments per scenario")
    p.add_argument("--users", type=int, default=1000, help="users per A/A experiment")
    p.add_argument("--keep", action="store_true", help="keep the chDB directory")
    args = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="experiments-sim-")
    store = ChdbStore(tmp, "llm_gateway")
    migrate(store, views=views)
    scenarios = [
        Scenario("aa", args.seeds, args.users),
        Scenario("lift", max(10, args.seeds // 10), 8000, lift=0.03),
        Scenario("srm", max(10, args.seeds // 10), args.users * 4, lost_share=0.2),
    ]
    out = run(store, scenarios, lambda s: print(s, file=sys.stderr))
    print(report(out))
    store.close()
    if args.keep:
        print(f"chDB data kept in {tmp}", file=sys.stderr)
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
