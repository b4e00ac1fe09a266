"""The feedback views (collectors/views, rendered from the signal registry), the feedback
report and the documented queries, on chDB through the real migrations, against hand-made
calls and signals with hand-computed numbers."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from collectors.report import feedback_report, parse_since
from collectors.views import views
from gateway.recording.record import CallRecord, encode_line
from gateway.recording.store import migrate
from gateway.recording.store.chdb_store import ChdbStore
from gateway.recording.store.migrate import view_statements
from tests.conftest import ROOT

README = ROOT / "README.md"
NOW = float(int(time.time()))  # whole seconds: durations come out exact
DAY = 86400.0
REQUESTED = {"gpt-4o": "smart", "gpt-4o-mini": "gpt-4o-mini"}


def call(rid: str, app: str, session: str, turn: int, model: str, ago: float,
         cost: float | None, prompt: str = "") -> CallRecord:  # fmt: skip
    return CallRecord(
        request_id=rid,
        started_at=NOW - ago,
        app=app,
        end_user="u-" + app,
        session_id=session,
        turn_index=turn,
        provider="openai",
        operation="chat",
        request_model=REQUESTED[model],  # the app asks for an alias of gpt-4o
        upstream_model=model,  # the model that served the call
        response_model=model + "-2024",
        status_code=200,
        input_tokens=10,
        output_tokens=5,
        cost_usd=cost,
        latency_ms=100.0,
        properties={"prompt": prompt} if prompt else {},
    )


CALLS = [
    # s-ended: turn 2 asked twice (a regeneration), then a session_end event, then a late
    # rating of its first call (the session's last activity)
    call("r-e1", "chat", "s-ended", 1, "gpt-4o", 3600, 0.01, "p-a"),
    call("r-e2", "chat", "s-ended", 2, "gpt-4o", 3500, 0.02, "p-a"),
    call("r-e3", "chat", "s-ended", 2, "gpt-4o", 3400, 0.03, "p-b"),
    # s-aband: last activity almost two hours ago, never ended
    call("r-a1", "chat", "s-aband", 1, "gpt-4o-mini", 7200, 0.001, "p-b"),
    call("r-a2", "chat", "s-aband", 2, "gpt-4o-mini", 7100, 0.001, "p-b"),
    call("r-a3", "chat", "s-aband", 3, "gpt-4o-mini", 7000, 0.001),
    call("r-a4", "chat", "s-aband", 4, "gpt-4o-mini", 6900, None),
    # s-live: active a minute ago (r-late, its second call, is inserted after its signals)
    call("r-l1", "code", "s-live", 1, "gpt-4o", 120, 0.05, "p-a"),
    # calls without a session and without feedback
    call("r-n1", "code", "", 0, "gpt-4o", 600, None),
    call("r-n2", "code", "", 0, "gpt-4o-mini", 300, 0.002),
    # outside every 7-day window
    call("r-old", "chat", "", 0, "gpt-4o", 10 * DAY, 0.01, "p-a"),
]
LATE_CALL = call("r-late", "code", "s-live", 2, "gpt-4o", 90, 0.05, "p-b")


def event(eid: str, name: str, ago: float, rid: str = "", session: str = "",
          value: float | None = 1.0, text: str = "", app: str = "") -> dict[str, Any]:  # fmt: skip
    return {
        "event_id": eid,
        "ts": NOW - ago,
        "request_id": rid,
        "session_id": session,
        "end_user": "",
        "app": app,
        "name": name,
        "value": value,
        "string_value": text,
        "data_type": "text" if text else "numeric",
        "source": "user",
        "comment": "",
        "metadata": {"edit_distance": "3"} if name == "suggestion_retained" else {},
    }


DUPLICATE = event("f-dup", "rating", 3000, rid="r-e1", value=4.0, app="chat")
BATCH_A = [
    DUPLICATE,
    event("f-regen", "regenerate", 3450, rid="r-e2"),  # linked to s-ended through its call
    event("f-e3-shown", "suggestion_shown", 3390, rid="r-e3"),
    event("f-e3-acc", "suggestion_accepted", 3380, rid="r-e3"),
    event("f-end", "session_end", 3300, session="s-ended"),
    # signals for r-late, whose call row does not exist yet
    event("f-late-rating", "rating", 80, rid="r-late", value=1.0),
    event("f-late-share", "share", 70, rid="r-late"),
    event("f-old-share", "share", 10 * DAY - 60, rid="r-old"),
]
BATCH_B = [
    DUPLICATE,  # the same event again, in another insert
    event("f-a1-shown", "suggestion_shown", 7190, rid="r-a1"),
    event("f-a1-rej", "suggestion_rejected", 7180, rid="r-a1"),
    event("f-a2-share", "share", 7090, rid="r-a2"),
    event("f-a2-copy1", "copy", 7080, rid="r-a2"),
    event("f-a2-copy2", "copy", 7070, rid="r-a2"),
    # a no is a no: shown and not accepted, not copied, a thumbs down
    event("f-a2-acc-no", "suggestion_accepted", 7060, rid="r-a2", value=0.0),
    event("f-a2-copy-no", "copy", 7050, rid="r-a2", value=0.0),
    event("f-n2-down", "thumbs", 290, rid="r-n2", value=0.0),
    event("f-l1-shown", "suggestion_shown", 110, rid="r-l1"),
    event("f-l1-acc", "suggestion_accepted", 105, rid="r-l1"),
    event("f-l1-r5", "rating", 100, rid="r-l1", value=5.0),
    event("f-l1-r2", "rating", 99, rid="r-l1", value=2.0),
    event("f-l1-thumbs", "thumbs", 98, rid="r-l1", value=1.0),
    event("f-l1-ret1", "suggestion_retained", 97, rid="r-l1", value=0.8),
    event("f-l1-ret2", "suggestion_retained", 96, rid="r-l1", value=0.6),
    event("f-l1-dwell1", "dwell", 95, rid="r-l1", value=1500.0),
    event("f-l1-dwell2", "dwell", 94, rid="r-l1", value=500.0),
    event("f-l1-def1", "defect", 93, rid="r-l1", value=None, text="hallucination"),
    event("f-l1-def2", "defect", 92, rid="r-l1", value=None, text="format"),
    event("f-l1-def3", "defect", 91, rid="r-l1", value=None, text="hallucination"),
    event("f-l1-corr", "correction", 90, rid="r-l1", value=None, text="better text"),
    event("f-l1-copy", "copy", 89, rid="r-l1"),
    event("f-live-nps", "custom_nps", 60, session="s-live", value=9.0),  # a custom signal
]


def lines(rows: list[Any]) -> bytes:
    return b"".join(
        encode_line(r) if isinstance(r, CallRecord) else json.dumps(r).encode() + b"\n"
        for r in rows
    )


@dataclass
class Fixture:
    store: ChdbStore
    early_call: list[dict[str, Any]]  # r-late in llm_call_feedback before its call arrived
    early_session: dict[str, Any]  # s-live before r-late arrived
    raw_duplicates: int  # rows of the duplicated event before FINAL

    def rows(self, sql: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.store.query(sql).splitlines() if x.strip()]


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    # chDB hosts one engine per process: one store for the whole module, closed at the end.
    store = ChdbStore(str(tmp_path_factory.mktemp("fv") / "db"), "fv")
    try:
        migrate(store, views=views)
        # keep the duplicate unmerged, so that only FINAL can collapse it
        store.command("SYSTEM STOP MERGES fv.llm_feedback")
        store.insert("llm_calls", lines(CALLS))
        store.insert("llm_feedback", lines(BATCH_A))
        store.insert("llm_feedback", lines(BATCH_B))
        fx = Fixture(store, [], {}, 0)
        fx.early_call = fx.rows("SELECT * FROM llm_call_feedback WHERE request_id = 'r-late'")
        fx.early_session = fx.rows("SELECT * FROM llm_sessions WHERE session_id = 's-live'")[0]
        fx.raw_duplicates = fx.rows(
            "SELECT count() AS n FROM llm_feedback WHERE event_id = 'f-dup'"
        )[0]["n"]
        store.insert("llm_calls", lines([LATE_CALL]))
        yield fx
    finally:
        store.close()


def by_key(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {r[key]: r for r in rows}


def ts(ago: float) -> str:
    return datetime.fromtimestamp(NOW - ago, UTC).strftime("%Y-%m-%d %H:%M:%S.000")


# -- the views -------------------------------------------------------------------------------

ZERO = {
    "events": 0, "shown": 0, "accepted": 0, "rejected": 0, "rating": None, "ratings": 0,
    "thumbs": None, "copies": 0, "shares": 0, "regenerations": 0, "corrections": 0,
    "dwell_ms": 0, "retained": None, "defects": [], "last_feedback_at": None,
}  # fmt: skip


def expected_calls() -> dict[str, dict[str, Any]]:
    exp = {c.request_id: dict(ZERO) for c in [*CALLS, LATE_CALL]}
    exp["r-e1"] |= {"events": 1, "rating": 4.0, "ratings": 1, "last_feedback_at": ts(3000)}
    exp["r-e2"] |= {"events": 1, "regenerations": 1, "last_feedback_at": ts(3450)}
    exp["r-e3"] |= {"events": 2, "shown": 1, "accepted": 1, "last_feedback_at": ts(3380)}
    exp["r-a1"] |= {"events": 2, "shown": 1, "rejected": 1, "last_feedback_at": ts(7180)}
    exp["r-a2"] |= {"events": 5, "shown": 1, "accepted": 0, "shares": 1, "copies": 2,
                     "last_feedback_at": ts(7050)}  # fmt: skip
    exp["r-n2"] |= {"events": 1, "thumbs": 0.0, "last_feedback_at": ts(290)}
    exp["r-l1"] |= {
        "events": 14, "shown": 1, "accepted": 1, "rating": 3.5, "ratings": 2, "thumbs": 1.0,
        "copies": 1, "corrections": 1, "dwell_ms": 2000, "retained": 0.7,
        "defects": ["format", "hallucination"], "last_feedback_at": ts(89),
    }  # fmt: skip
    exp["r-late"] |= {"events": 2, "rating": 1.0, "ratings": 1, "shares": 1,
                      "last_feedback_at": ts(70)}  # fmt: skip
    exp["r-old"] |= {"events": 1, "shares": 1, "last_feedback_at": ts(10 * DAY - 60)}
    return exp


def test_call_feedback_has_one_row_per_call_with_its_signals(fx: Fixture):
    rows = fx.rows("SELECT * FROM llm_call_feedback")
    assert len(rows) == len(CALLS) + 1  # every call once, with or without feedback
    got = by_key(rows, "request_id")
    for rid, exp in expected_calls().items():
        row = got[rid]
        actual = {k: row[k] for k in exp}
        if actual["retained"] is not None:
            actual["retained"] = round(actual["retained"], 9)
        assert actual == exp, rid
    late = got["r-late"]
    assert (late["app"], late["session_id"], late["request_model"], late["provider"]) == (
        "code", "s-live", "smart", "openai",
    )  # fmt: skip
    assert late["upstream_model"] == "gpt-4o"
    assert got["r-e1"]["started_at"] == ts(3600)
    assert got["r-e1"]["properties"] == {"prompt": "p-a"}
    assert got["r-e1"]["response_model"] == "gpt-4o-2024"


def test_call_feedback_column_types(fx: Fixture):
    sql = "SELECT name, type FROM system.columns WHERE database = 'fv' AND table = '{}'"
    types = {r["name"]: r["type"] for r in fx.rows(sql.format("llm_call_feedback"))}
    assert types["events"] == "UInt64"
    assert {types[c] for c in ("shown", "accepted", "rejected")} == {"UInt8"}
    assert {types[c] for c in ("rating", "thumbs", "retained")} == {"Nullable(Float64)"}
    assert {types[c] for c in ("copies", "shares", "regenerations", "corrections")} == {"UInt64"}
    assert types["defects"] == "Array(String)"
    assert types["last_feedback_at"] == "Nullable(DateTime64(3, 'UTC'))"


def test_a_duplicated_event_counts_once(fx: Fixture):
    assert fx.raw_duplicates == 2  # both copies are stored, not yet merged
    row = fx.rows("SELECT events, rating, ratings FROM llm_call_feedback WHERE request_id = 'r-e1'")
    assert row == [{"events": 1, "rating": 4.0, "ratings": 1}]


def test_a_signal_sent_before_its_call_is_linked_when_the_call_arrives(fx: Fixture):
    assert fx.early_call == []  # no call row yet: nothing to link to
    assert (fx.early_session["calls"], fx.early_session["turns"]) == (1, 1)
    assert fx.early_session["events"] == 15  # r-late's two signals could not be placed yet
    row = fx.rows("SELECT * FROM llm_call_feedback WHERE request_id = 'r-late'")
    assert [(r["events"], r["rating"], r["shares"]) for r in row] == [(2, 1.0, 1)]


def test_sessions(fx: Fixture):
    got = by_key(fx.rows("SELECT * FROM llm_sessions"), "session_id")
    assert set(got) == {"s-ended", "s-aband", "s-live"}  # no row for calls without a session
    expected = {
        "s-ended": {
            "app": "chat", "end_user": "u-chat", "turns": 2, "calls": 3, "first_at": ts(3600),
            "last_at": ts(3000), "duration_s": 600, "regenerations": 1, "regenerated_turns": 1,
            "accepted": 1, "events": 5, "rating": 4.0, "ended": 1, "abandoned": 0,
            "cost_usd": 0.06,
        },
        "s-aband": {
            "app": "chat", "end_user": "u-chat", "turns": 4, "calls": 4, "first_at": ts(7200),
            "last_at": ts(6900), "duration_s": 300, "regenerations": 0, "regenerated_turns": 0,
            "accepted": 0, "events": 7, "rating": None, "ended": 0, "abandoned": 1,
            "cost_usd": 0.003,  # r-a4 has no known price: not counted as 0, just left out
        },
        "s-live": {
            "app": "code", "end_user": "u-code", "turns": 2, "calls": 2, "first_at": ts(120),
            "last_at": ts(60), "duration_s": 60, "regenerations": 0, "regenerated_turns": 0,
            "accepted": 1, "events": 17, "rating": round(8 / 3, 9), "ended": 0, "abandoned": 0,
            "cost_usd": 0.1,
        },
    }  # fmt: skip
    for sid, exp in expected.items():
        row = got[sid]
        actual = {k: row[k] for k in exp}
        for k in ("cost_usd", "rating"):
            if actual[k] is not None:
                actual[k] = round(actual[k], 9)
        assert actual == exp, sid


def test_idle_minutes_is_a_migration_parameter():
    sql = "\n".join(s for _, _, s in view_statements(views, "db", None, session_idle_minutes=5))
    assert "INTERVAL 5 MINUTE" in sql and "{" not in sql
    assert sql.count("CREATE OR REPLACE VIEW db.") == 3  # with llm_experiment_variants


# -- the report ------------------------------------------------------------------------------


def day(ago: float) -> str:
    return datetime.fromtimestamp(NOW - ago, UTC).strftime("%Y-%m-%d")


def expected_acceptance() -> list[list[str]]:
    """Rows of the acceptance section, computed from the fixtures (days depend on the clock)."""
    shown = {"r-e3": 1, "r-a1": 0, "r-a2": 0, "r-l1": 1}  # shown calls -> accepted
    acc: dict[tuple[str, str], list[int]] = {}
    for c in CALLS:
        if c.request_id in shown:
            k = (day(NOW - c.started_at), c.upstream_model)
            acc.setdefault(k, [0, 0])
            acc[k][0] += 1
            acc[k][1] += shown[c.request_id]
    return [
        [d, m, "openai", REQUESTED[m] if REQUESTED[m] != m else "-", str(s), str(a),
         f"{a / s * 100:.1f}%"]
        for (d, m), (s, a) in sorted(acc.items())
    ]  # fmt: skip


def sections(report: str) -> dict[str, list[list[str]]]:
    """Section title -> its table rows (cells split on blanks), headers and rules left out."""
    out: dict[str, list[list[str]]] = {}
    for block in report.strip().split("\n\n")[1:]:
        title, *body = block.splitlines()
        out[title.split(" (")[0]] = [b.split() for b in body[2:]] if len(body) > 1 else [body]
    return out


def test_report_figures(fx: Fixture):
    report = feedback_report(fx.store.query, "7d")
    assert report.startswith("Feedback report: last 7d (since ")
    got = sections(report)
    assert got["Acceptance rate by model per day"] == expected_acceptance()
    assert got["Turns per session by app"] == [
        ["chat", "2", "3", "3", "3.8", "50.0%"],
        ["code", "1", "2", "2", "2", "0.0%"],
    ]
    assert got["Share and copy rate by model"] == [
        ["gpt-4o", "openai", "smart", "6", "1", "16.7%", "1", "16.7%"],  # r-old: outside
        ["gpt-4o-mini", "openai", "-", "5", "1", "20.0%", "1", "20.0%"],
    ]
    assert got["Average rating by prompt"] == [
        ["p-a", "2", "3", "3.75"],  # r-e1 (4) and r-l1 (5 and 2: 3.5)
        ["p-b", "1", "1", "1"],
    ]


def test_report_window(fx: Fixture):
    got = sections(feedback_report(fx.store.query, "30m"))
    assert got["Turns per session by app"] == [["code", "1", "2", "2", "2", "0.0%"]]
    assert got["Share and copy rate by model"] == [
        ["gpt-4o", "openai", "smart", "3", "1", "33.3%", "1", "33.3%"],  # r-l1, r-late, r-n1
        ["gpt-4o-mini", "openai", "-", "1", "0", "0.0%", "0", "0.0%"],  # r-n2
    ]


def test_report_says_no_data():
    report = feedback_report(lambda sql: b"", "24h")
    assert report.count("no data") == 4
    assert "no suggestion was shown in the last 24h" in report


@pytest.mark.parametrize("bad", ["forever", "7", "0d", "-1d", "7 days", "1y", ""])
def test_report_rejects_a_bad_window(bad: str):
    with pytest.raises(ValueError, match="since must be a positive duration"):
        feedback_report(lambda sql: b"", bad)


def test_since_units():
    assert [parse_since(s) for s in ("30m", "24h", "7d", "2w")] == [1800, 86400, 604800, 1209600]


# -- the documented queries ------------------------------------------------------------------


def doc_queries() -> list[str]:
    text = README.read_text()
    section = text.split("### Queries for product teams", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, re.S)


def test_documented_queries_run_and_answer(fx: Fixture):
    queries = doc_queries()
    assert len(queries) == 4
    acceptance, turns, share, ratings = (fx.rows(q) for q in queries)
    assert [
        [str(r["day"]), r["upstream_model"], r["provider"], r["requested"] or "-",
         str(r["shown_calls"]), str(r["accepted_calls"]), f"{r['acceptance_rate'] * 100:.1f}%"]
        for r in acceptance
    ] == expected_acceptance()  # fmt: skip
    assert turns == [
        {"app": "chat", "sessions": 2, "avg_turns": 3, "p50_turns": 3, "p90_turns": 3.8,
         "abandoned_share": 0.5},
        {"app": "code", "sessions": 1, "avg_turns": 2, "p50_turns": 2, "p90_turns": 2,
         "abandoned_share": 0},
    ]  # fmt: skip
    assert share == [
        {"upstream_model": "gpt-4o", "provider": "openai", "calls": 6, "share_rate": 0.167,
         "copy_rate": 0.167},
        {"upstream_model": "gpt-4o-mini", "provider": "openai", "calls": 5, "share_rate": 0.2,
         "copy_rate": 0.2},
    ]  # fmt: skip
    assert ratings == [
        {"prompt": "p-a", "rated_calls": 2, "avg_rating": 3.75},
        {"prompt": "p-b", "rated_calls": 1, "avg_rating": 1},
    ]
