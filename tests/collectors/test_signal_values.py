"""What a signal's value counts as, end to end: every known signal, sent with true, false, 1,
0 and no value at all, through the HTTP API, the Python client and the browser collector
(a real headless Chromium), to one real gateway on its embedded store; then each case's row
of `llm_call_feedback` and `llm_sessions`, and its figures in an experiment's metrics
(collectors/experiments/moments.py), against what the README's signal table says.

Each case is a call of its own (its own session, its own unit of the experiment), so each is
checked alone. The expectations below are written out by hand, not derived from the
registry: a registry that miscounts fails here.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from llm_gateway_feedback import FeedbackClient, FeedbackError

from collectors.experiments.moments import Arms, read_moments
from collectors.signals import SIGNALS
from tests.collectors.intake.browser import CDP, PUB_KEY, PageServer, Tab, chromium
from tests.conftest import GatewayProcess, gateway_config

__all__ = ["chromium"]  # the fixture

APP = "signal-matrix"
SERVER_KEY = "sk_fb_matrix_0123456789"
MISSING = "missing"
VALUES: dict[str, Any] = {"true": True, "false": False, "1": 1, "0": 0, MISSING: None}
CHANNELS = ("http", "python", "browser")
NAMES = [s.name for s in SIGNALS]
TEXT = {"correction": "It is 42.", "defect": "hallucination"}  # their string_value


def says_yes(v: Any) -> int:
    """A boolean signal: true and 1 say yes, false and 0 say no, no value says yes (the
    README: "boolean (default true)")."""
    return 1 if v is None else int(bool(v))


def figure(v: Any) -> float | None:
    """A numeric signal's value (a boolean is 1 or 0); None: refused, a value is needed."""
    return None if v is None else float(v)


@dataclass
class Case:
    channel: str
    name: str
    label: str  # a key of VALUES
    rid: str = ""
    session: str = field(default_factory=lambda: f"sm-{uuid.uuid4().hex[:16]}")

    @property
    def value(self) -> Any:
        return VALUES[self.label]

    @property
    def id(self) -> str:
        return f"{self.channel}-{self.name}-{self.label}"

    @property
    def refused(self) -> bool:
        """Numeric signals need a value: without one the event is refused (422, `value`)."""
        return self.name in ("rating", "dwell", "suggestion_retained") and self.value is None

    def event(self) -> dict[str, Any]:
        ev: dict[str, Any] = {"name": self.name, "request_id": self.rid,
                              "session_id": self.session}  # fmt: skip
        if self.value is not None:
            ev["value"] = self.value
        if self.name in TEXT:
            ev["string_value"] = TEXT[self.name]
        return ev

    # -- what the case must show -------------------------------------------------------
    def call_row(self) -> dict[str, Any]:
        """The case's columns in llm_call_feedback."""
        row: dict[str, Any] = {
            "events": 0 if self.refused else 1, "shown": 0, "accepted": 0, "rejected": 0,
            "rating": None, "ratings": 0, "thumbs": None, "copies": 0, "shares": 0,
            "regenerations": 0, "corrections": 0, "dwell_ms": 0.0, "retained": None,
            "defects": [],
        }  # fmt: skip
        if self.refused:
            return row
        v, yes = self.value, says_yes(self.value)
        match self.name:
            case "suggestion_shown":
                row["shown"] = yes
            case "suggestion_accepted":  # false: shown, and not accepted
                row |= {"shown": 1, "accepted": yes}
            case "suggestion_rejected":  # false: shown, and not dismissed
                row |= {"shown": 1, "rejected": yes}
            case "rating":
                row |= {"rating": figure(v), "ratings": 1}
            case "thumbs":
                row["thumbs"] = float(yes)  # the share of thumbs up
            case "copy":
                row["copies"] = yes
            case "share":
                row["shares"] = yes
            case "regenerate":
                row["regenerations"] = yes
            case "correction":
                row["corrections"] = 1
            case "dwell":
                row["dwell_ms"] = figure(v)
            case "suggestion_retained":
                row["retained"] = figure(v)
            case "defect":
                row["defects"] = [TEXT["defect"]]
            case "session_end":
                pass  # a session's signal
            case _:
                raise AssertionError(f"no expectation written for {self.name}")
        return row

    def session_row(self) -> dict[str, Any]:
        """The case's session in llm_sessions (one call, fresh: not abandoned)."""
        c = self.call_row()
        ended = self.name == "session_end" and says_yes(self.value)
        return {
            "calls": 1, "events": c["events"], "accepted": c["accepted"],
            "rating": c["rating"], "regenerations": c["regenerations"], "ended": int(ended),
            "abandoned": 0,
        }  # fmt: skip

    def metrics(self) -> dict[str, tuple[float, float]]:
        """(numerator, denominator) of the experiment's metrics for the case's one unit,
        read two hours later (its session idle by then: abandoned unless it ended)."""
        c, s = self.call_row(), self.session_row()
        return {
            "acceptance_rate": (c["accepted"], c["shown"]),
            "thumbs_up_rate": (c["thumbs"] or 0.0, int(c["thumbs"] is not None)),
            "mean_rating": (c["rating"] or 0.0, c["ratings"]),
            "copy_rate": (min(c["copies"], 1), 1),
            "share_rate": (min(c["shares"], 1), 1),
            "regenerate_rate": (min(c["regenerations"], 1), 1),
            "abandonment_rate": (1 - s["ended"], 1),
        }


CASES = [Case(ch, name, label) for ch in CHANNELS for name in NAMES for label in VALUES]


@dataclass
class Landed:
    gw: GatewayProcess
    calls: dict[str, dict[str, Any]]  # request id -> llm_call_feedback row
    sessions: dict[str, dict[str, Any]]  # session id -> llm_sessions row
    metrics: dict[str, dict[str, tuple[float, float]]]  # request id -> metric -> (y, x)
    answers: dict[str, int | str]  # case id -> HTTP status, or the refused field


def make_call(gw: GatewayProcess, case: Case, variant_hint: int) -> None:
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Suggest."}]},
        headers={
            "X-Gateway-App": APP,
            "X-Gateway-Session": case.session,
            "X-Gateway-User": f"u-{variant_hint}",
        },
        timeout=10,
    )
    assert r.status_code == 200, r.text
    case.rid = r.headers["x-request-id"]


def send_http(gw: GatewayProcess, cases: list[Case], answers: dict[str, int | str]) -> None:
    with httpx.Client(timeout=10) as http:
        for c in cases:
            r = http.post(gw.url + "/v1/feedback", json=c.event(),
                          headers={"authorization": f"Bearer {SERVER_KEY}"})  # fmt: skip
            answers[c.id] = r.json()["error"]["param"] if r.status_code == 422 else r.status_code


def send_python(gw: GatewayProcess, cases: list[Case], answers: dict[str, int | str]) -> None:
    # Signal methods never raise: a refusal reaches on_error with the refused events.
    refused: dict[str, FeedbackError] = {}

    def on_error(err: FeedbackError, events: list[dict[str, Any]]) -> None:
        for ev in events:
            refused[ev["event_id"]] = err

    with FeedbackClient(gw.url, key=SERVER_KEY, app=APP, sync_mode=True,
                        on_error=on_error) as fb:  # fmt: skip
        for c in cases:
            ev = c.event()
            fields = {k: v for k, v in ev.items() if k not in ("name", "request_id")}
            event_id = fb.track(c.name, c.rid, **fields)
            err = refused.get(event_id)
            answers[c.id] = 200 if err is None else (err.param or err.status)


async def send_browser(
    gw: GatewayProcess, page: PageServer, chromium_url: str, cases: list[Case]
) -> list[dict[str, Any]]:
    """The browser collector's track() for each case, flushed by fetch; the answers' reports."""
    async with CDP.connect(chromium_url) as cdp:
        tab = await Tab.open(cdp)
        await tab.goto(page.url("answer.html", rid="-", answer="-", key=PUB_KEY,
                                session="-", flush="600000"))  # fmt: skip
        events = json.dumps([c.event() for c in cases])
        await tab.eval(f"{events}.forEach(e => LLMFeedback.track(e.name, e))")
        reports = await tab.eval(
            "(async () => { const out = []; let r;"
            " while ((r = await LLMFeedback.flush()) !== null) out.push(r); return out; })()"
        )
        await cdp.send("Target.closeTarget", targetId=tab.target)
    return reports


def rows_by(gw: GatewayProcess, sql: str, key: str) -> dict[str, dict[str, Any]]:
    return {r[key]: r for r in gw.sql(sql)}


@pytest.fixture(scope="module")
def landed(
    fake: Any, selfhosted: Any, chromium: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Landed]:
    page = PageServer()
    cfg = gateway_config(fake.url, selfhosted.url)
    cfg["feedback"] = {"keys": [
        {"key": SERVER_KEY, "kind": "server"},
        {"key": PUB_KEY, "kind": "publishable", "origins": [page.origin],
         "rate_per_minute": 6000},
    ]}  # fmt: skip
    cfg["experiments"] = {
        "signal-matrix": {"match": {"app": APP}, "unit": "request", "min_units": 10,
                          "variants": [{"name": "a"}, {"name": "b"}]},
    }  # fmt: skip
    gw = GatewayProcess(cfg, tmp_path_factory.mktemp("signal-matrix")).start()
    page.gateway_url = gw.url
    try:
        for i, c in enumerate(CASES):
            make_call(gw, c, i)
        gw.wait_rows(f"app = '{APP}'", len(CASES))
        answers: dict[str, int | str] = {}
        by_channel = {ch: [c for c in CASES if c.channel == ch] for ch in CHANNELS}
        send_http(gw, by_channel["http"], answers)
        send_python(gw, by_channel["python"], answers)
        reports = asyncio.run(send_browser(gw, page, chromium, by_channel["browser"]))
        assert reports and all(r == 200 for r in reports), reports
        want = sum(not c.refused for c in CASES)
        rids = ", ".join(f"'{c.rid}'" for c in CASES)
        deadline = time.monotonic() + 20
        while (n := gw.sql(f"SELECT count() AS n FROM llm_feedback FINAL "
                           f"WHERE request_id IN ({rids})")[0]["n"]) < want:  # fmt: skip
            assert time.monotonic() < deadline, f"{n} of {want} events landed"
            time.sleep(0.1)
        calls = rows_by(gw, f"SELECT * FROM llm_call_feedback WHERE app = '{APP}'", "request_id")
        sessions = rows_by(
            gw, "SELECT * FROM llm_sessions WHERE session_id LIKE 'sm-%'", "session_id"
        )
        per_call = Arms("toString(experiment)", "request_id", "request_id",
                        "experiment = 'signal-matrix'", "''")  # fmt: skip

        def query(sql: str) -> bytes:
            return "\n".join(json.dumps(r) for r in gw.sql(sql)).encode()

        metrics = {
            m.arm: {k: (s.sy, s.sx) for k, s in m.metrics.items()}
            for m in read_moments(query, per_call, [time.time() + 7200])
        }
        yield Landed(gw, calls, sessions, metrics, answers)
    finally:
        gw.stop()
        page.close()


CHECKED = ("shown", "accepted", "rejected", "rating", "ratings", "thumbs", "copies", "shares",
           "regenerations", "corrections", "dwell_ms", "retained", "defects", "events")  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_each_value_counts_as_the_signal_table_says(landed: Landed, case: Case) -> None:
    if case.channel != "browser":
        assert landed.answers[case.id] == ("value" if case.refused else 200)
    row = landed.calls[case.rid]
    assert row["experiment"] == "signal-matrix" and row["variant"] in ("a", "b")
    assert {k: row[k] for k in CHECKED} == case.call_row()
    session = landed.sessions[case.session]
    assert {k: session[k] for k in case.session_row()} == case.session_row()
    got = landed.metrics[case.rid]
    assert {k: got[k] for k in case.metrics()} == case.metrics()


def test_the_variants_view_adds_up_the_cases(landed: Landed) -> None:
    """llm_experiment_variants: per variant, the rates over the cases it served."""
    variants = {r["variant"]: r for r in landed.gw.sql(
        "SELECT * FROM llm_experiment_variants WHERE experiment = 'signal-matrix'")}  # fmt: skip
    assert set(variants) == {"a", "b"}
    for name, v in variants.items():
        rows = [c.call_row() for c in CASES if landed.calls[c.rid]["variant"] == name]
        shown = sum(r["shown"] for r in rows)
        thumbs = [r["thumbs"] for r in rows if r["thumbs"] is not None]
        assert v["calls"] == len(rows)
        assert v["shown_calls"] == shown
        assert v["accepted_calls"] == sum(r["accepted"] for r in rows)
        assert v["acceptance_rate"] == pytest.approx(v["accepted_calls"] / shown)
        assert v["thumbs_up_rate"] == pytest.approx(sum(thumbs) / len(thumbs))
        assert v["copy_rate"] == pytest.approx(sum(r["copies"] > 0 for r in rows) / len(rows))
        assert v["upstream_models"] == ["gpt-4o"]
