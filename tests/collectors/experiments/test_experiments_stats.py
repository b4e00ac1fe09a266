"""The analysis of experiments: per-unit sums in ClickHouse (on chDB, through the real
migrations) against hand-made calls and signals, and the statistics on top."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime

import msgspec
import pytest

from collectors.experiments.moments import (
    RATIOS,
    ArmMoments,
    Sums,
    experiment_arms,
    model_arms,
    read_moments,
)
from collectors.experiments.stats import (
    always_valid_p,
    cs_halfwidth,
    ratio,
    srm_p,
    units_needed,
)
from collectors.experiments.verdict import decide
from collectors.views import views
from gateway.experiments import Experiment, Variant
from gateway.recording.record import CallRecord
from gateway.recording.store import migrate
from gateway.recording.store.chdb_store import ChdbStore

T = 1_760_000_000.0


def test_ratio_delta_method_matches_the_per_unit_formula() -> None:
    ys, xs = [1, 0, 3, 2, 0], [2, 1, 4, 2, 1]
    n = len(ys)
    est = ratio(
        n,
        sum(ys),
        sum(xs),
        sum(y * y for y in ys),
        sum(x * x for x in xs),
        sum(x * y for x, y in zip(xs, ys, strict=True)),
    )
    r = sum(ys) / sum(xs)
    # the textbook form: linearise each unit, z_i = (y_i - r x_i) / mean(x)
    mx = sum(xs) / n
    z = [(y - r * x) / mx for x, y in zip(xs, ys, strict=True)]
    mz = sum(z) / n
    expected = sum((v - mz) ** 2 for v in z) / (n - 1) / n
    assert est.value == pytest.approx(r)
    assert est.variance == pytest.approx(expected)
    assert ratio(1, 1, 1, 1, 1, 1).value is None
    assert ratio(5, 0, 0, 0, 0, 0).value is None


def test_the_confidence_sequence_and_the_always_valid_p_agree() -> None:
    var, tau2, alpha = 4e-4, 4e-4, 0.05
    h = cs_halfwidth(var, tau2, alpha)
    # the interval's edge is exactly where the mixture likelihood ratio reaches 1/alpha
    assert always_valid_p(h, var, tau2) == pytest.approx(alpha)
    assert always_valid_p(h * 1.01, var, tau2) < alpha < always_valid_p(h * 0.99, var, tau2)
    # wider than the fixed-horizon interval: the price of reading at any time
    assert h > 1.96 * math.sqrt(var)
    n = units_needed(1000, var, tau2, alpha, h / 3)
    assert n is not None and n > 1000
    assert cs_halfwidth(var * 1000 / n, tau2, alpha) <= h / 3
    assert cs_halfwidth(var * 1000 / (n * 0.99), tau2, alpha) > h / 3
    assert units_needed(1000, var, tau2, alpha, 0) is None


def test_srm_check() -> None:
    assert srm_p([5000, 5000], [0.5, 0.5]) == 1.0
    assert srm_p([5000, 4400], [0.5, 0.5]) < 0.001  # z = 6: flagged
    assert srm_p([5000, 4900], [0.5, 0.5]) > 0.05  # z = 1: not
    assert srm_p([7000, 3000], [0.7, 0.3]) == 1.0
    assert srm_p([5000, 5000], [0.7, 0.3]) < 1e-9
    # under the right weights, rarely flagged even when read after every unit
    rng = random.Random(7)
    flagged = 0
    for _ in range(50):
        a = b = 0
        for _ in range(2000):
            a, b = (a + 1, b) if rng.random() < 0.5 else (a, b + 1)
            if (a + b) % 100 == 0 and srm_p([a, b], [0.5, 0.5]) < 0.001:
                flagged += 1
                break
    assert flagged == 0


# -- the SQL against hand-made rows ----------------------------------------------------


def call(
    rid: str,
    user: str,
    variant: str,
    t: float,
    session: str = "",
    turn: int = 0,
    status: int = 200,
    latency: float = 100.0,
    cost: float | None = 0.01,
    experiment: str = "exp",
) -> bytes:
    rec = CallRecord(
        request_id=rid,
        started_at=T + t,
        app="app",
        end_user=user,
        session_id=session,
        turn_index=turn,
        status_code=status,
        outcome="ok" if status < 400 else "upstream_error",
        latency_ms=latency,
        cost_usd=cost,
        request_model="m-" + variant,
    )
    row = {**msgspec.to_builtins(rec), "experiment": experiment, "variant": variant}
    return msgspec.json.encode(row) + b"\n"


def event(eid: str, rid: str, name: str, value: float = 1.0, session: str = "") -> bytes:
    return (
        f'{{"event_id":"{eid}","ts":{T + 10},"request_id":"{rid}","session_id":"{session}",'
        f'"app":"app","name":"{name}","value":{value}}}\n'
    ).encode()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    s = ChdbStore(str(tmp_path_factory.mktemp("exp")), "llm_gateway")
    migrate(s, views=views)
    calls = [
        # u1 (control): two calls in one session, both shown, one accepted, one rated 4
        call("c1", "u1", "control", 0, "s1", 1),
        call("c2", "u1", "control", 60, "s1", 2),
        # u2 (control): one call, shown, not accepted, failed, slow; session ended
        call("c3", "u2", "control", 0, "s2", 1, status=500, latency=900.0),
        # u3 (treatment): three calls, all shown and accepted; thumbs up and down
        call("c4", "u3", "treatment", 0, "s3", 1),
        call("c5", "u3", "treatment", 30, "s3", 2),
        call("c6", "u3", "treatment", 4000, "s3", 3, cost=None),
        # u4 seen under both variants (weights changed): left out
        call("c7", "u4", "control", 0),
        call("c8", "u4", "treatment", 10),
        # another experiment, and a call in none
        call("c9", "u1", "control", 0, experiment="other"),
        call("c10", "u1", "", 0, experiment=""),
    ]
    events = [
        event("e1", "c1", "suggestion_shown"),
        event("e2", "c1", "suggestion_accepted"),
        event("e2b", "c1", "suggestion_accepted"),
        event("e3", "c2", "suggestion_rejected"),
        event("e4", "c2", "rating", 4),
        event("e5", "c3", "suggestion_shown"),
        event("e6", "", "session_end", session="s2"),
        event("e7", "c4", "suggestion_accepted"),
        event("e8", "c5", "suggestion_accepted"),
        event("e9", "c6", "suggestion_accepted"),
        event("e10", "c4", "thumbs", 1),
        event("e11", "c5", "thumbs", 0),
        event("e12", "c6", "copy"),
        event("e13", "c6", "share"),
        event("e14", "c5", "regenerate"),
    ]
    s.insert("llm_calls", b"".join(calls))
    s.insert("llm_feedback", b"".join(events))
    yield s
    s.close()


USER_EXP = Experiment(name="exp", variants=(Variant("control", 1), Variant("treatment", 1)))


def test_per_unit_sums(store: ChdbStore) -> None:
    arms = experiment_arms([USER_EXP])
    got = read_moments(lambda q: store.query(q), arms, [T + 1200, T + 86400])
    by = {(m.look, m.arm): m for m in got}
    assert {a for _, a in by} == {"control", "treatment", ""}
    early, late = T + 1200, T + 86400
    assert by[late, ""].units == 1  # u4, moved between variants
    c, t = by[late, "control"], by[late, "treatment"]
    assert (c.units, t.units) == (2, 1)
    acc = c.metrics["acceptance_rate"]
    # u1: y=1 (accepted once, counted once), x=2 shown; u2: y=0, x=1
    assert (acc.sy, acc.sx, acc.syy, acc.sxx, acc.sxy) == (1, 3, 1, 5, 2)
    assert t.metrics["acceptance_rate"].sy == 3 and t.metrics["acceptance_rate"].sx == 3
    assert (c.metrics["mean_rating"].sy, c.metrics["mean_rating"].sx) == (4, 1)
    assert (t.metrics["thumbs_up_rate"].sy, t.metrics["thumbs_up_rate"].sx) == (1, 2)
    assert (t.metrics["copy_rate"].sy, t.metrics["share_rate"].sy) == (1, 1)
    assert t.metrics["regenerate_rate"].sy == 1 and t.metrics["regenerate_rate"].sx == 3
    assert (c.metrics["error_rate"].sy, c.metrics["error_rate"].sx) == (1, 3)
    cost = t.metrics["cost_per_call"]
    assert (cost.sy, cost.sx) == pytest.approx((0.02, 2))
    assert (c.metrics["turns_per_session"].sy, c.metrics["turns_per_session"].sx) == (3, 2)
    # s1 idle for a day and not ended: abandoned; s2 ended
    assert c.metrics["abandonment_rate"].sy == 1
    assert c.metrics["cost_per_session"].sy == pytest.approx(0.03)
    # the slow-call share: slower than the control's p95 (u2's 900 ms call is the p95)
    assert c.metrics["p95_latency"].sx == 3
    # the early look does not see c6 (4000 s in) and nothing is abandoned yet
    te = by[early, "treatment"]
    assert te.metrics["acceptance_rate"].sx == 2
    assert by[early, "control"].metrics["abandonment_rate"].sy == 0


def test_model_arms_group_an_apps_calls_by_model(store: ChdbStore) -> None:
    got = read_moments(lambda q: store.query(q), model_arms("app"), [T + 86400])
    by = {m.arm: m for m in got}
    assert set(by) == {"m-control", "m-treatment", "m-"}  # a user of two models is in both
    assert (by["m-control"].units, by["m-treatment"].units, by["m-"].units) == (3, 2, 1)
    assert by["m-control"].metrics["error_rate"].sx == 5  # c1, c2, c3, c7, c9


def test_decide_needs_enough_units(store: ChdbStore) -> None:
    arms = experiment_arms([USER_EXP])
    got = read_moments(lambda q: store.query(q), arms, [T + 86400])
    v = decide(USER_EXP, got)
    assert v.kind == "keep_running" and v.more_units_needed == 197
    assert v.units == {"control": 2, "treatment": 1} and v.moved_units == 1


# -- verdicts from per-arm sums --------------------------------------------------------


def arm(name: str, units: int, accept: float, error: float = 0.0, seed: int = 1) -> ArmMoments:
    """`units` users with 4 shown suggestions each, accepted with probability `accept`,
    and 4 calls each failing with probability `error`."""
    rng = random.Random(f"{name}{seed}")
    a = ArmMoments(0.0, "exp", name, units)
    for m in RATIOS:
        a.metrics[m] = Sums()
    for _ in range(units):
        for metric, p in (("acceptance_rate", accept), ("error_rate", error)):
            y = sum(rng.random() < p for _ in range(4))
            s = a.metrics[metric]
            s.sy, s.sx, s.syy, s.sxx, s.sxy = (
                s.sy + y,
                s.sx + 4,
                s.syy + y * y,
                s.sxx + 16,
                s.sxy + 4 * y,
            )
    return a


EXP = Experiment(
    name="exp",
    variants=(Variant("control", 1), Variant("treatment", 1)),
    guardrails=("error_rate",),
)


def test_verdict_kinds() -> None:
    win = decide(EXP, [arm("control", 5000, 0.30), arm("treatment", 5000, 0.34)])
    assert win.kind == "winner" and win.winner == "treatment", win.message
    (c,) = win.primary
    assert c.low is not None and c.high is not None and c.low < 0.04 < c.high
    lose = decide(EXP, [arm("control", 5000, 0.34), arm("treatment", 5000, 0.30)])
    assert lose.kind == "winner" and lose.winner == "control"
    same = decide(EXP, [arm("control", 60_000, 0.30), arm("treatment", 60_000, 0.30, seed=2)])
    assert same.kind == "no_difference", same.message
    early = decide(EXP, [arm("control", 300, 0.30), arm("treatment", 300, 0.31)])
    assert early.kind == "keep_running" and early.more_units_needed
    assert "more units" in early.message
    # better on the primary metric, but it fails three times as often: stop it
    harm = decide(EXP, [arm("control", 5000, 0.30, 0.01), arm("treatment", 5000, 0.34, 0.03)])
    assert harm.kind == "guardrail" and "error rate" in harm.message
    (g,) = harm.guardrails
    assert g.worse and g.metric == "error_rate" and g.variant == "treatment"
    # an error rate of 0 in the control is no reason to miss a variant's errors
    zero = decide(EXP, [arm("control", 5000, 0.30, 0.0), arm("treatment", 5000, 0.30, 0.02)])
    assert zero.kind == "guardrail"
    srm = decide(EXP, [arm("control", 5000, 0.30), arm("treatment", 4400, 0.30)])
    assert srm.kind == "srm" and "expected 50.0%" in srm.message


def test_srm_counts_units_first_seen_since_the_weights_changed(store: ChdbStore) -> None:
    def srm_units(since: float) -> dict[str, int]:
        exp = msgspec.structs.replace(USER_EXP, weights_since=datetime.fromtimestamp(since, UTC))
        got = read_moments(lambda q: store.query(q), experiment_arms([exp]), [T + 86400])
        return {m.arm: m.srm_units for m in got}

    assert srm_units(T - 1) == {"control": 2, "treatment": 1, "": 1}
    assert srm_units(T + 1) == {"control": 0, "treatment": 0, "": 0}
    # 50/50 for a week, then 90/10: the later units alone follow the weights
    ninety = msgspec.structs.replace(
        EXP, variants=(Variant("control", 90), Variant("treatment", 10))
    )
    c, t = arm("control", 5000 + 9000, 0.3), arm("treatment", 5000 + 1000, 0.3)
    assert decide(ninety, [c, t]).kind == "srm"
    c.srm_units, t.srm_units = 9000, 1000
    assert decide(ninety, [c, t]).kind != "srm"
