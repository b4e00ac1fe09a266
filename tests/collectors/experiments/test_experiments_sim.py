"""The experiments simulation (bench/experiments_sim.py), reduced and seeded: synthetic
users with known effects, inserted into chDB, read 20 times each through the real SQL
(collectors/experiments/moments.py) and verdict code. One module-scoped run feeds every
test: hundreds of simulated experiments in one table, evaluated by one query; and the
confounded observational comparison, read as `report models --by property:plan` reads it.
(The SRM check's power and false alarms over thousands of runs: test_experiments_srm.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator

import msgspec.structs
import pytest

from bench.confounded_sim import Read, confounded
from bench.experiments_sim import LOOKS, Outcome, Scenario, experiment, looks, run
from collectors.experiments.job import evaluate
from collectors.experiments.report import command, experiment_report, list_experiments
from collectors.report.models_report import models_report
from collectors.views import views
from gateway.experiments import Assigner
from gateway.recording.store import migrate
from gateway.recording.store.chdb_store import ChdbStore

ALPHA = 0.05


CONFOUNDED_APPS = 10


@pytest.fixture(scope="module")
def simulated(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ChdbStore, dict[str, Outcome], list[Read]]]:
    store = ChdbStore(str(tmp_path_factory.mktemp("sim")), "llm_gateway")
    migrate(store, views=views)
    scenarios = [
        Scenario("aa", seeds=200, users=400, alpha=ALPHA),
        Scenario("lift", seeds=3, users=10_000, lift=0.03, alpha=ALPHA),
        Scenario("srm", seeds=3, users=4_000, lost_share=0.2, alpha=ALPHA),
        Scenario("boolean", seeds=5, users=900, base=0.25, lift=0.20, one_call=True,
                 say_no=True, alpha=ALPHA),
        Scenario("cuped", seeds=3, users=8_000, lift=0.03, spread=4.0, history=10.0,
                 alpha=ALPHA),
    ]  # fmt: skip
    out = run(store, scenarios)
    reads = confounded(store, CONFOUNDED_APPS)
    yield store, out, reads
    store.close()


@pytest.fixture(scope="module")
def sim(simulated: tuple[ChdbStore, dict[str, Outcome], list[Read]]) -> dict[str, Outcome]:
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


def test_the_reports_read_the_same_data(
    simulated: tuple[ChdbStore, dict[str, Outcome], list[Read]],
) -> None:
    store, out, _ = simulated
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

    # an experiment without data yet: JSON without Infinity or NaN (not JSON)
    empty = experiment_report(query, experiment("no-data-yet", ALPHA), as_json=True, at=end)
    strict = json.loads(empty, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert strict["kind"] == "keep_running" and strict["units"] == {"control": 0, "treatment": 0}

    srm = experiment("srm-0000", ALPHA)
    listing = list_experiments(query, [exp, srm], at=end)
    assert "WINNER: treatment" in listing and "ASSIGNMENT BROKEN (SRM)" in listing
    rows = json.loads(list_experiments(query, [exp, srm], as_json=True, at=end))
    assert [r["verdict"] for r in rows] == ["winner", "srm"]

    # the models that served the calls, not the alias `answer` the app asked for
    models = models_report(query, "sim", since="30d", at=end)
    assert "Observational" in models and "model-a" in models and "model-b" in models
    header = models.splitlines()[2].split()
    assert header[:3] == ["upstream_model", "provider", "request_models"]  # the JSON's names
    row = next(line.split() for line in models.splitlines() if line.strip().startswith("model-b"))
    assert row[1:3] == ["sim", "answer"]
    figures = json.loads(models_report(query, "sim", "30d", as_json=True, at=end))["models"]
    assert set(figures) == {"model-a", "model-b"}
    assert figures["model-b"]["request_models"] == ["answer"]
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
    simulated: tuple[ChdbStore, dict[str, Outcome], list[Read]],
) -> None:
    store, out, _ = simulated
    name = next(n for n, vs in out["lift"].verdicts.items() if vs[-1].kind == "winner")
    plain = experiment(name, ALPHA)
    allowed = msgspec.structs.replace(plain, auto_route_winner=True)
    for exp, routed in ((plain, {}), (allowed, {name: "treatment"})):
        assigner = Assigner([exp])
        verdicts = evaluate(store.query, [exp], assigner)
        assert verdicts[name].kind == "winner"
        assert assigner.winners() == routed


def test_the_issues_experiment_is_a_winner_for_the_challenger(sim: dict[str, Outcome]) -> None:
    """900 users, one call each, every suggestion shown then accepted true or false: 25% of
    the control's accepted, 45% of the challenger's."""
    for vs in sim["boolean"].verdicts.values():
        last = vs[-1]
        assert last.kind == "winner" and last.winner == "treatment", last.message
        (c,) = last.primary
        assert c.control_value is not None and c.value is not None
        assert 0.20 < c.control_value < 0.30 and 0.40 < c.value < 0.50  # false is a no
        assert c.lift is not None and c.lift_low is not None and c.lift_low > 0


def test_cuped_narrows_the_interval_and_needs_fewer_units(sim: dict[str, Outcome]) -> None:
    cuped = sim["cuped"]
    for name, vs in cuped.verdicts.items():
        plain = cuped.plain[name]
        for v, p in zip(vs, plain, strict=True):
            if not v.primary:
                continue  # too early
            (c,), (q,) = v.primary, p.primary
            assert c.cuped is not None and q.cuped is None
            assert c.cuped.with_history > 0.9 * sum(v.units.values())  # every user has some
            assert c.cuped.theta > 0 and c.cuped.reduction > 0.15
            assert c.variance < q.variance
            assert c.cuped.diff == pytest.approx(q.diff)  # the unadjusted figure, kept
            assert q.high is not None and q.low is not None and c.high is not None
            assert c.high - c.low < q.high - q.low
            assert v.units_to_decide and v.units_without_cuped
            assert v.units_without_cuped == round(v.units_to_decide / (1 - c.cuped.reduction))
    # per experiment the adjusted estimate moves too, so either may be first; over many
    # runs (bench/experiments_sim.py, README) CUPED finds winners earlier
    with_, without = cuped.units_at_winner(), cuped.units_at_winner(plain=True)
    assert len(with_) >= len(without)


def test_the_stratified_estimate_recovers_the_true_zero(
    simulated: tuple[ChdbStore, dict[str, Outcome], list[Read]],
) -> None:
    store, _, reads = simulated
    assert len(reads) == CONFOUNDED_APPS
    for r in reads:
        d = r.difference
        assert r.reference.startswith("model-a") and d.model.startswith("model-b")
        assert d.pooled is not None and d.stratified is not None
        assert d.pooled > d.pooled_ci95  # pooled: model-b looks clearly better
        assert d.coverage == pytest.approx(1.0)
        assert d.confounded or d.simpson
    covered = sum(abs(r.difference.stratified or 0) <= r.difference.stratified_ci95 for r in reads)
    assert covered >= CONFOUNDED_APPS - 1
    mean = sum(r.difference.stratified or 0 for r in reads) / len(reads)
    assert abs(mean) < 0.01  # the true difference is 0

    end = looks()[-1] + 86400
    text = models_report(store.query, "conf-0000", "30d", at=end, by="property:plan")
    assert "Acceptance rate (accepted / shown) by property:plan" in text
    assert "stratified over property:plan" in text
    assert "WARNING (confounding)" in text or "WARNING (Simpson's paradox)" in text
    data = json.loads(
        models_report(store.query, "conf-0000", "30d", as_json=True, at=end, by="property:plan")
    )
    assert set(data["segments"]) == {"pro", "free"}
    (diff,) = data["differences"]
    assert (
        diff["upstream_model"] == "model-b"
        and diff["pooled"] > 0.05
        and abs(diff["stratified"]) < 0.03
    )
    assert data["warnings"]
