"""`report models` by segment (collectors/report/models.py, models_report.py) on chDB through
the real migrations, against hand-made calls and signals whose figures are known: a
Simpson's paradox by plan, cohorts of new and returning users, and apps side by side."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from collectors.report.models import parse_by
from collectors.report.models_report import models_report
from collectors.views import views
from gateway.recording.record import CallRecord
from gateway.recording.store import migrate
from gateway.recording.store.chdb_store import ChdbStore

NOW = float(int(time.time()))
DAY = 86400.0


class Data:
    def __init__(self) -> None:
        self.calls: list[bytes] = []
        self.events: list[bytes] = []
        self.n = 0

    def user(self, app: str, user: str, model: str, accepted: bool, ago: float,
             plan: str = "") -> None:  # fmt: skip
        """One call of `user`, served by `model` (asked for as `answer`), its suggestion
        shown and accepted or not (false: a no)."""
        self.n += 1
        rid = f"{app}-{self.n}"
        rec = CallRecord(
            request_id=rid, started_at=NOW - ago, app=app, end_user=user,
            request_model="answer", upstream_model=model, provider="openai",
            status_code=200, latency_ms=100.0, properties={"plan": plan} if plan else {},
        )  # fmt: skip
        self.calls.append(msgspec.json.encode(rec) + b"\n")
        for name, value in (("suggestion_shown", 1), ("suggestion_accepted", int(accepted))):
            self.events.append(json.dumps({
                "event_id": f"{rid}-{name}", "ts": NOW - ago + 1, "request_id": rid,
                "app": app, "name": name, "value": value,
            }).encode() + b"\n")  # fmt: skip

    def group(self, app: str, model: str, users: int, rate: float, plan: str = "",
              ago: float = DAY, prefix: str = "") -> None:  # fmt: skip
        """`users` users of `model`, one call each: the first `rate` share accept."""
        for i in range(users):
            who = f"{prefix or app + '-' + model + '-' + plan}-{i}"
            self.user(app, who, model, i < round(rate * users), ago, plan)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    s = ChdbStore(str(tmp_path_factory.mktemp("models")), "llm_gateway")
    migrate(s, views=views)
    d = Data()
    # Simpson: within each plan model-b accepts 5 points less, but it served mostly the pro
    # users, who accept far more: pooled, model-b looks 19 points better
    d.group("simpson", "model-a", 100, 0.60, "pro")
    d.group("simpson", "model-b", 400, 0.55, "pro")
    d.group("simpson", "model-a", 400, 0.20, "free")
    d.group("simpson", "model-b", 100, 0.15, "free")
    # cohorts: returning users came 10 days ago first (outside a 7-day window) and accept
    # more; model-b serves mostly them
    for i in range(300):
        model = "model-b" if i < 240 else "model-a"
        d.user("cohort", f"old-{i}", model, False, 10 * DAY)
        d.user("cohort", f"old-{i}", model, i % 2 == 0, DAY)
    for i in range(300):
        model = "model-a" if i < 240 else "model-b"
        d.user("cohort", f"new-{i}", model, i % 5 == 0, 2 * DAY)
    # apps: the same model in two apps, and a call that never reached a model
    d.group("app-one", "model-a", 50, 0.4)
    d.group("app-two", "model-a", 50, 0.2)
    d.group("app-two", "model-c", 50, 0.2)
    unserved = CallRecord(request_id="refused", started_at=NOW - 60, app="app-two",
                          request_model="nope", status_code=404)  # fmt: skip
    s.insert("llm_calls", b"".join(d.calls) + msgspec.json.encode(unserved) + b"\n")
    s.insert("llm_feedback", b"".join(d.events))
    yield s
    s.close()


def report(store: ChdbStore, app: str | None, by: str | None, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(
        models_report(store.query, app, "7d", as_json=True, at=NOW, by=by, **kw)
    )
    return out


def test_simpsons_paradox_is_said_plainly(store: ChdbStore) -> None:
    data = report(store, "simpson", "property:plan")
    assert data["reference"] == "model-a"  # 500 users each: the first by name
    seg = data["segments"]
    assert seg["pro"]["model-a (openai)"]["value"] == pytest.approx(0.60)
    assert seg["pro"]["model-b (openai)"]["value"] == pytest.approx(0.55)
    assert seg["free"]["model-b (openai)"]["value"] == pytest.approx(0.15)
    (d,) = data["differences"]
    assert d["upstream_model"] == "model-b"
    assert d["pooled"] == pytest.approx(235 / 500 - 140 / 500)  # +19 points
    assert d["segments"] == {"pro": pytest.approx(-0.05), "free": pytest.approx(-0.05)}
    assert d["stratified"] == pytest.approx(-0.05)  # the same in both plans, whatever weights
    assert d["simpson"] and d["coverage"] == pytest.approx(1.0)
    (warning,) = data["warnings"]
    assert warning.startswith("WARNING (Simpson's paradox): pooled, model-b (openai) differs")

    text = models_report(store.query, "simpson", "7d", at=NOW, by="property:plan")
    assert "WARNING (Simpson's paradox)" in text
    lines = text.splitlines()
    seg_header = next(i for i, x in enumerate(lines) if "by property:plan (share" in x)
    assert lines[seg_header + 1].split()[:2] == ["property:plan", "share"]
    pro = next(x for x in lines[seg_header:] if x.strip().startswith("pro "))
    assert "60.0%" in pro and "55.0%" in pro and "-5.0 pt" in pro
    assert "+19.0 pt" in text and "-5.0 pt" in text


def test_cohorts_are_first_week_and_returning_users(store: ChdbStore) -> None:
    data = report(store, "cohort", "cohort")
    seg = data["segments"]
    assert set(seg) == {"first week", "returning"}
    # the returning users' first call, 10 days ago, is outside the window but sets the
    # cohort of their call of yesterday
    assert seg["returning"]["model-b (openai)"]["users"] == 240
    assert seg["returning"]["model-b (openai)"]["value"] == pytest.approx(0.5)
    assert seg["first week"]["model-a (openai)"]["users"] == 240
    assert seg["first week"]["model-a (openai)"]["value"] == pytest.approx(0.2)
    (d,) = data["differences"]
    assert d["pooled"] > 0.1  # model-b served the returning users, who accept more
    assert abs(d["stratified"]) < 0.05 and d["confounded"]


def test_apps_side_by_side_and_calls_that_reached_no_model(store: ChdbStore) -> None:
    data = report(store, None, "app", metric_name="acceptance_rate")
    assert {"app-one", "app-two", "simpson", "cohort"} <= set(data["segments"])
    assert data["segments"]["app-one"]["model-a (openai)"]["value"] == pytest.approx(0.4)
    assert "model-c (openai)" in data["segments"]["app-two"]
    assert "app-one" not in next(
        d["segments"] for d in data["differences"] if d["upstream_model"] == "model-c"
    )
    two = report(store, "app-two", None)
    assert set(two["models"]) == {"model-a", "model-c"} and two["unserved_calls"] == 1
    assert two["models"]["model-a"]["request_models"] == ["answer"]
    text = models_report(store.query, "app-two", "7d", at=NOW)
    assert "1 calls reached no model" in text
    # the table's columns are the JSON's fields of a model, named alike
    headers = text.splitlines()[2].split()
    assert headers == list(two["models"]["model-a"])
    assert headers[:3] == ["upstream_model", "provider", "request_models"]


def test_bad_arguments_name_the_forms() -> None:
    for bad in ("plan", "property:", "cohorts", "property:" + "x" * 65):
        with pytest.raises(ValueError, match="--by takes app, property:NAME or cohort"):
            parse_by(bad)
    assert parse_by("property:plan") == "property:plan"
    with pytest.raises(ValueError, match="--metric takes one of"):
        models_report(lambda sql: b"", "x", "7d", metric_name="p95_latency")


def test_saved_spend_of_the_response_cache(store: ChdbStore) -> None:
    """A model's calls the cache answered: counted, and what they saved summed."""
    calls = [
        CallRecord(
            request_id=f"cached-{i}",
            started_at=NOW - 60 - i,
            app="cached",
            end_user=f"u{i}",
            request_model="answer",
            upstream_model="model-a",
            provider="openai",
            status_code=200,
            cache_status=status,
            cost_usd=cost,
            cost_saved_usd=saved,
        )
        for i, (status, cost, saved) in enumerate(
            [("miss", 0.5, 0.0), ("hit", 0.0, 0.5), ("hit", 0.0, 0.5), ("", 0.25, 0.0)]
        )
    ]
    store.insert("llm_calls", b"".join(msgspec.json.encode(c) + b"\n" for c in calls))
    data = report(store, "cached", None)
    assert {k: data["models"]["model-a"][k] for k in ("calls", "cache_hits", "saved_usd")} == {
        "calls": 4, "cache_hits": 2, "saved_usd": 1.0}  # fmt: skip
    text = models_report(store.query, "cached", "7d", at=NOW)
    head, _, row = text.splitlines()[2:5]
    # the columns are named as the JSON's fields
    assert head.split()[:7] == ["upstream_model", "provider", "request_models", "users", "calls",
                                "cache_hits", "saved_usd"]  # fmt: skip
    assert row.split()[:7] == ["model-a", "openai", "answer", "4", "4", "2", "1"]
