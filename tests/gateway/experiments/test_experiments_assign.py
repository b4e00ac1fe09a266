"""Experiment declarations and sticky variant assignment (gateway/experiments)."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import yaml

from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.experiments import Assigner, Experiment, Match, Variant, parse_experiments
from gateway.recording.record import CallRecord

BASE = {
    "variants": [
        {"name": "control", "model": "gpt-4o", "weight": 50},
        {"name": "mini", "model": "gpt-4o-mini", "properties": {"prompt": "v2"}, "weight": 50},
    ]
}


def exp(weights: tuple[float, ...], unit: str = "user", **kw) -> Experiment:
    names = ["a", "b", "c", "d"]
    variants = tuple(Variant(names[i], w) for i, w in enumerate(weights))
    return Experiment(name="e1", variants=variants, unit=unit, **kw)


def assign_all(e: Experiment, n: int = 20_000) -> dict[str, str]:
    a = Assigner([e])
    out = {}
    for i in range(n):
        got = a.assign(
            app="", model="m", properties={}, user=f"user-{i}", session="", request_id=""
        )
        assert got is not None
        out[f"user-{i}"] = got.variant.name
    return out


def test_parse_a_full_declaration() -> None:
    (e,) = parse_experiments(
        {
            "summarizer": {
                **BASE,
                "match": {"app": "sum", "model": "summarize", "properties": {"feature": "x"}},
                "unit": "session",
                "missing_unit": "per-request",
                "primary": "thumbs_up_rate",
                "guardrails": ["error_rate", "cost_per_session"],
                "margin": 0.02,
                "start": "2026-12-01T00:00:00Z",
                "stop": datetime(2026, 12, 31),
                "weights_since": date(2026, 12, 8),
                "auto_route_winner": True,
                "planned_units": 20_000,
                "pre_period_days": 28,
            }
        }
    )
    assert e.name == "summarizer" and e.control.name == "control"
    assert e.variants[1].model == "gpt-4o-mini" and e.variants[1].properties == {"prompt": "v2"}
    assert e.match.app == "sum" and e.match.properties == {"feature": "x"}
    assert (e.unit, e.missing_unit, e.primary, e.margin) == (
        "session",
        "per-request",
        "thumbs_up_rate",
        0.02,
    )
    assert e.start == datetime(2026, 12, 1, tzinfo=UTC)
    assert e.stop == datetime(2026, 12, 31, tzinfo=UTC)  # naive times are UTC
    assert e.weights_since == datetime(2026, 12, 8, tzinfo=UTC)  # YAML dates too
    assert e.weights() == {"control": 0.5, "mini": 0.5}
    assert (e.planned_units, e.pre_period_days) == (20_000, 28)
    (default,) = parse_experiments({"d": BASE})
    assert (default.planned_units, default.pre_period_days) == (None, 14)
    assert parse_experiments(None) == ()


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        ({"variants": [{"name": "a"}]}, "experiments.x.variants", "two variants"),
        ({"variants": [{"name": "a"}, {"name": "a"}]}, "experiments.x.variants[1].name", "unique"),
        (
            {"variants": [{"name": "a"}, {"name": "b", "weight": 0}]},
            "experiments.x.variants[1].weight",
            "> 0",
        ),
        (
            {"variants": [{"name": "a"}, {"name": "b", "weight": "lots"}]},
            "experiments.x.variants[1].weight",
            "float",
        ),
        (
            {"variants": [{"name": "a"}, {"model": "m"}]},
            "experiments.x.variants[1].name",
            "required",
        ),
        ({"unit": "tenant"}, "experiments.x.unit", "user, session, request"),
        ({"missing_unit": "drop"}, "experiments.x.missing_unit", "exclude"),
        ({"primary": "happiness"}, "experiments.x.primary", "unknown metric"),
        ({"guardrails": ["error_rate", "vibes"]}, "experiments.x.guardrails[1]", "unknown metric"),
        ({"margin": -1}, "experiments.x.margin", "> 0"),
        ({"alpha": 0.9}, "experiments.x.alpha", "between"),
        ({"start": "2026-12-02", "stop": "2026-12-01"}, "experiments.x.stop", "after start"),
        ({"weights_since": "last tuesday"}, "experiments.x.weights_since", "ISO 8601"),
        ({"planned_units": 150}, "experiments.x.planned_units", "twice min_units (200)"),
        ({"pre_period_days": -1}, "experiments.x.pre_period_days", "must be >= 0"),
        ({"pre_period_days": "two weeks"}, "experiments.x.pre_period_days", "int"),
        ({"colour": "red"}, "experiments.x.colour", "unknown key"),
        ({"match": {"user": "u"}}, "experiments.x.match.user", "unknown key"),
    ],
)
def test_bad_declarations_name_the_key(change: dict, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_experiments({"x": {**BASE, **change}})
    assert e.value.key == key
    assert words in str(e.value)


def test_bad_name_and_shape() -> None:
    with pytest.raises(ConfigError, match=r"^experiments\.bad name: "):
        parse_experiments({"bad name": BASE})
    with pytest.raises(ConfigError, match=r"^experiments: must be a mapping"):
        parse_experiments([BASE])


def test_assignment_is_sticky_and_follows_the_weights() -> None:
    e = exp((70, 30))
    first = assign_all(e)
    assert assign_all(e) == first  # same answer every time
    shares = Counter(first.values())
    assert abs(shares["a"] / len(first) - 0.7) < 0.015
    assert abs(shares["b"] / len(first) - 0.3) < 0.015


def test_assignment_is_the_same_in_another_process() -> None:
    """BLAKE2b, not Python's salted hash(): replicas and restarts agree, whatever the seed."""
    code = (
        "from gateway.experiments import Assigner, Experiment, Variant\n"
        "a = Assigner([Experiment(name='e1', variants=(Variant('a', 1.0), Variant('b', 1.0)))])\n"
        "print(''.join(a.assign(app='', model='m', properties={}, user=f'user-{i}', "
        "session='', request_id='').variant.name for i in range(200)))\n"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1
    here = assign_all(exp((1, 1)), 200)
    assert outs.pop().strip() == "".join(here[f"user-{i}"] for i in range(200))


def test_assignment_is_the_same_in_every_version() -> None:
    """A unit's variant depends on nothing but (experiment, variant, unit, weights): an
    upgrade in the middle of an experiment moves nobody. Pinned as the code first gave
    it; a change to the hashing shows here before it reshuffles running experiments."""
    e = exp((1, 2, 1))
    got = "".join(assign_all(e, 64)[f"user-{i}"] for i in range(64))
    assert got == "baacbbcaabaacbbbacabbaaccaaabbbaababacabbbbbabbbbcbbbaacbcccccbb"


@pytest.mark.parametrize(
    ("weights", "pinned"),
    [
        ((1, 1), "baaabbbaabaaabbbaaabbaaaaaaabbbaababaaabbbbbabbbbabbbaaabbaaabba"),
        ((1, 1, 1), "baacbbcaabaacbbcacabcaaccaaabbbaacabacabbbbbabbbbcbbcaacbcccccba"),
        ((50, 50, 50, 50), "baadbdcaadaadbbdacabcaacdaaabbbaadabdcddbbdbddddbcdbcaacbcddccdd"),
    ],
)
def test_equal_weights_assign_as_the_scores_do(weights: tuple[float, ...], pinned: str) -> None:
    """Equal weights take a shortcut (the largest hash wins, no logarithm): every unit gets
    the variant the weighted scores give it. Pinned as the scores gave them before the
    shortcut, and checked against the scores themselves (the same experiment with one weight
    a hair off takes the general path) over many units."""
    e = exp(weights)
    got = assign_all(e, 64)
    assert "".join(got[f"user-{i}"] for i in range(64)) == pinned
    nudged = exp((*weights[:-1], weights[-1] * (1 + 1e-12)))
    fast, scored = Assigner([e]), Assigner([nudged])
    for i in range(20_000):
        unit = f"u{i}"
        a, b = (
            x.assign(app="", model="m", properties={}, user=unit, session="", request_id="")
            for x in (fast, scored)
        )
        assert a is not None and b is not None and a.variant.name == b.variant.name, unit


def _by_the_scores(e: Experiment, unit: str) -> str:
    """The variant the documented scores give: the first highest `weight / -ln(h)`."""
    best, top = "", -1.0
    for v in e.variants:
        d = hashlib.blake2b(f"{e.name}\x00{v.name}\x00{unit}".encode(), digest_size=8).digest()
        s = v.weight / -math.log((int.from_bytes(d, "big") + 0.5) / 2.0**64)
        if s > top:
            best, top = v.name, s
    return best


@pytest.mark.parametrize(
    "weights", [(1, 1), (0.3, 0.3, 0.3), (1e300, 1e300), (math.inf, math.inf), (5e-324,) * 3]
)
def test_equal_weights_at_any_scale_give_the_scores_variant(weights: tuple[float, ...]) -> None:
    """Weights so large or small that the scores overflow or underflow into ties (the first
    variant wins those) take the scores' path, not the largest hash."""
    e = exp(weights)
    got = assign_all(e, 3000)
    assert all(got[u] == _by_the_scores(e, u) for u in got)


def _moves(before: dict[str, str], after: dict[str, str]) -> Counter[tuple[str, str]]:
    return Counter((before[u], after[u]) for u in before if before[u] != after[u])


def test_weight_changes_move_the_fewest_units_and_only_towards_the_change() -> None:
    n = 20_000
    # two variants, 50/50 -> 60/40: exactly the 10% that must move, all from b to a
    moves = _moves(assign_all(exp((50, 50))), assign_all(exp((60, 40))))
    assert set(moves) == {("b", "a")}
    assert abs(moves["b", "a"] / n - 0.10) < 0.01
    before = assign_all(exp((50, 30, 20)))
    # one weight raised: units only move into it, as many as its share grew (50% -> 58.3%)
    moves = _moves(before, assign_all(exp((70, 30, 20))))
    assert {to for _, to in moves} == {"a"}
    assert abs(sum(moves.values()) / n - (70 / 120 - 0.5)) < 0.01
    # one weight lowered: units only move out of it (30% -> 17.6%), to the others
    moves = _moves(before, assign_all(exp((50, 15, 20))))
    assert {frm for frm, _ in moves} == {"b"}
    assert abs(sum(moves.values()) / n - (0.3 - 15 / 85)) < 0.01
    # a new variant takes its share from the others; nobody moves between the old ones
    moves = _moves(before, assign_all(exp((50, 30, 20, 25))))
    assert {to for _, to in moves} == {"d"}


def test_units_missing_and_match_rules() -> None:
    e = exp((1, 1), unit="session")
    a = Assigner([e])
    kw = {"app": "", "model": "m", "properties": {}, "user": "u", "request_id": "r1"}
    assert a.assign(**kw, session="") is None  # missing_unit: exclude
    per_request = Assigner([exp((1, 1), unit="session", missing_unit="per-request")])
    got = per_request.assign(**kw, session="")
    assert got is not None
    req = Assigner([exp((1, 1), unit="request")])
    ids = {req.assign(**{**kw, "request_id": f"r{i}"}, session="s").variant.name for i in range(50)}
    assert ids == {"a", "b"}  # by request: the same session gets both

    (m,) = parse_experiments(
        {
            "x": {
                **BASE,
                "match": {"app": "sum", "model": "fast", "properties": {"f": "1"}},
                "start": "2020-01-01",
                "stop": "2030-01-01",
            }
        }
    )
    a = Assigner([m])
    ok = {
        "app": "sum",
        "model": "fast",
        "properties": {"f": "1", "g": "2"},
        "user": "u",
        "session": "",
        "request_id": "r",
    }
    assert a.assign(**ok) is not None
    assert a.assign(**{**ok, "app": "other"}) is None
    assert a.assign(**{**ok, "model": "gpt-4o"}) is None
    assert a.assign(**{**ok, "properties": {"f": "2"}}) is None
    assert a.assign(**ok, now=datetime(2031, 1, 1, tzinfo=UTC).timestamp()) is None
    assert a.assign(**ok, now=datetime(2019, 1, 1, tzinfo=UTC).timestamp()) is None


def test_route_to_winner_only_when_allowed() -> None:
    plain = Assigner([exp((1, 1))])
    assert not plain.route_to_winner("e1", "b")
    a = Assigner([exp((1, 1), auto_route_winner=True)])
    assert not a.route_to_winner("e1", "zz")
    assert a.route_to_winner("e1", "b")
    kw = {"app": "", "model": "m", "properties": {}, "session": "", "request_id": ""}
    got = [a.assign(**kw, user=f"u{i}") for i in range(20)]
    assert {(g.variant.name, g.routed) for g in got if g} == {("b", True)}
    assert a.winners() == {"e1": "b"}


def test_the_config_file_declares_experiments(tmp_path: Path) -> None:
    cfg = parse_config({"experiments": {"x": BASE}}, env={})
    (e,) = cfg.experiments
    assert e.name == "x" and [v.model for v in e.variants] == ["gpt-4o", "gpt-4o-mini"]
    assert parse_config({}, env={}).experiments == ()
    with pytest.raises(ConfigError, match=r"^experiments\.x\.unit: "):
        parse_config({"experiments": {"x": {**BASE, "unit": "team"}}}, env={})
    # a variant's model must have a route: checked when the gateway starts
    bad = {
        "store": {"kind": "disabled"},
        "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "routes": [{"match": "gpt-*", "provider": "p"}],
        "experiments": {"x": {"variants": [{"name": "a"}, {"name": "b", "model": "llama"}]}},
    }
    (tmp_path / "gw.yaml").write_text(yaml.safe_dump(bad))
    r = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", "gw.yaml", "--port", "9"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert "experiments.x.variants[1].model: no route matches model 'llama'" in r.stderr


def test_which_experiment_takes_a_call() -> None:
    """An app's own experiments come before those of any app, each group in declared order;
    an experiment outside its window passes the call on to the next one."""
    v = (Variant("a", 1.0), Variant("b", 1.0))
    over = Experiment(name="over", variants=v, unit="request",
                      stop=datetime(2020, 1, 1, tzinfo=UTC))  # fmt: skip
    anyone = Experiment(name="anyone", variants=v, unit="request")
    mine = Experiment(name="mine", variants=v, unit="request", match=Match(app="sum"))
    mine_fast = Experiment(name="mine_fast", variants=v, unit="request",
                           match=Match(app="sum", model="fast"))  # fmt: skip
    a = Assigner([over, anyone, mine_fast, mine])
    kw = {"properties": {}, "user": "", "session": "", "request_id": "r1"}

    def taken(app: str, model: str) -> str | None:
        got = a.assign(app=app, model=model, **kw)
        return got.experiment if got else None

    assert taken("sum", "fast") == "mine_fast"
    assert taken("sum", "slow") == "mine"
    assert taken("other", "fast") == "anyone"  # "over" has ended
    assert taken("", "fast") == "anyone"
    rec = CallRecord(request_id="r1", app="sum")
    assert a.apply(rec, "fast") == "fast" and rec.experiment == "mine_fast"
    # A unit-less call of a per-request experiment with no request id either: left out.
    per_request = Assigner([exp((1, 1), unit="session", missing_unit="per-request")])
    none = {"app": "", "model": "m", "properties": {}, "user": "", "session": ""}
    assert per_request.assign(**none, request_id="") is None
    assert per_request.assign(**none, request_id="r2") is not None
