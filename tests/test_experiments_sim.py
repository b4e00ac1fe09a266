"""The experiments simulation (bench/experiments_sim.py), reduced and seeded: synthetic
users with known effects, inserted into chDB, read 20 times each through the real SQL
(collectors/experiments/moments.py) and verdict code. One module-scoped run feeds every
test: hundreds of simulated experiments in one table, evaluated by one query."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest

from bench.experiments_sim import LOOKS, Outcome, Scenario, experiment, looks, run
from collectors.experiments.job import evaluate
from collectors.experiments.report import command, experiment_report, list_experiments
from collectors.report.models_report import models_report
from collectors.views import views
from gateway.experiments import Assigner
from gateway.store import migrate
from gateway.store.chdb_store import ChdbStore

ALPHA = 0.05


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ChdbStore, dict]]:
    store = ChdbStore(str(tmp_path_factory.mktemp("sim")), "llm_gateway")
    migrate(store, views=views)
    out = run(
        store,
        [
            Scenario("aa", seeds=200, users=400, alpha=ALPHA),
            Scenario("lift", seeds=3, users=10_000, lift=0.03, alpha=ALPHA),
            Scenario("srm", seeds=3, users=4_000, lost_share=0.2, alpha=ALPHA),
        ],
    )
    yield store, out
    store.close()


@pytest.fixture(scope="module")
def sim(simulated: tuple[ChdbStore, dict[str, Outcome]]) -> dict[str, Outcome]:
    return simulated[1]


def test_no_effect_rarely_declares_a_winner_however_often_read(sim: dict[str, Outcome]) -> None:
    aa = sim["aa"]
    assert len(aa.verdicts) == 200
    assert all(len(vs) == LOOKS for vs in aa.verdicts.values())
    assert aa.ever_winner() <= ALPHA
    # the same data read the same way with a fixed-horizon test: false winners galore
    assert aa.naive_ever_winner() > ALPHA
    assert aa.naive_ever_winner() > 2 * aa.ever_winner()
    assert aa.ever_srm() <= 0.01


def test_a_planted_three_point_lift_is_found(sim: dict[str, Outcome]) -> None:
    lift = sim["lift"]
    found = 0
    for vs in lift.verdicts.values():
        assert all(v.kind != "srm" for v in vs)
        winners = [v for v in vs if v.kind == "winner"]
        if not winners:
            continue
        found += 1
        first = winners[0]
        assert first.winner == "treatment"
        (c,) = first.primary
        assert c.low is not None and c.high is not None and c.low > 0
        assert c.low < 0.03 < c.high + 0.01  # the interval is about the planted effect
        # before the winner, "keep running" said how many more units it would take
        before = vs[: vs.index(first)]
        asked = [v.more_units_needed for v in before if v.kind == "keep_running"]
        assert asked and all(n is not None and n > 0 for n in asked)
    assert found >= 2


def test_a_planted_assignment_bug_is_flagged_as_srm(sim: dict[str, Outcome]) -> None:
    srm = sim["srm"]
    for vs in srm.verdicts.values():
        last = vs[-1]
        assert last.kind == "srm", last
        assert last.srm_p_value < 0.001
        assert last.units["treatment"] < last.units["control"]
        assert "assignment broken" in last.message


def test_the_reports_read_the_same_data(simulated: tuple[ChdbStore, dict[str, Outcome]]) -> None:
    store, out = simulated
    query = store.query
    end = looks()[-1]
    name = next(n for n, vs in out["lift"].verdicts.items() if vs[-1].kind == "winner")
    exp = experiment(name, ALPHA)
    text = experiment_report(query, exp, at=end)
    assert f"Experiment {name}: running, by user" in text
    assert "VERDICT: WINNER: treatment wins on acceptance rate" in text
    assert "treatment" in text and "model-b" in text and "Guardrails" in text
    data = json.loads(experiment_report(query, exp, as_json=True, at=end))
    assert data["kind"] == "winner" and data["winner"] == "treatment"
    assert data["units"] == out["lift"].verdicts[name][-1].units
    assert data["variants"]["treatment"]["calls"] > 0
    (primary,) = data["primary"]
    assert primary["low"] > 0 and primary["metric"] == "acceptance_rate"

    srm = experiment("srm-0000", ALPHA)
    listing = list_experiments(query, [exp, srm], at=end)
    assert "WINNER: treatment" in listing and "ASSIGNMENT BROKEN (SRM)" in listing
    rows = json.loads(list_experiments(query, [exp, srm], as_json=True, at=end))
    assert [r["verdict"] for r in rows] == ["winner", "srm"]

    models = models_report(query, "sim", since="30d", at=end)
    assert "Observational" in models and "model-a" in models and "model-b" in models
    figures = json.loads(models_report(query, "sim", "30d", as_json=True, at=end))["models"]
    a, b = figures["model-a"]["acceptance_rate"], figures["model-b"]["acceptance_rate"]
    assert 0.25 < a["value"] < 0.35 and a["ci95"] < 0.01  # ~100,000 users per model
    assert b["value"] > a["value"]  # the lift experiments' treatment is model-b
    recent = json.loads(models_report(query, "sim", "1d", as_json=True, at=end))["models"]
    assert 0 < recent["model-a"]["users"] < figures["model-a"]["users"] / 5

    code, text = command(query, [exp], "report", "nope")
    assert code == 2 and "no experiment named 'nope'" in text and name in text
    code, text = command(query, [exp], "report", name, as_json=True)
    assert code == 0 and json.loads(text)["winner"] == "treatment"


def test_the_periodic_evaluation_switches_to_a_winner_only_when_allowed(
    simulated: tuple[ChdbStore, dict[str, Outcome]],
) -> None:
    store, out = simulated
    name = next(n for n, vs in out["lift"].verdicts.items() if vs[-1].kind == "winner")
    plain = experiment(name, ALPHA)
    allowed = dataclasses.replace(plain, auto_route_winner=True)
    for exp, routed in ((plain, {}), (allowed, {name: "treatment"})):
        assigner = Assigner([exp])
        verdicts = evaluate(store.query, [exp], assigner)
        assert verdicts[name].kind == "winner"
        assert assigner.winners() == routed
