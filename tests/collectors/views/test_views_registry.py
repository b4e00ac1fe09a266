"""The views rendered from the signal registry, on chDB through the real migrations: a signal
added to the registry is a column after the next migrate, migrate run again changes
nothing, and each feedback event counts once whatever clients send (a reused request id, an
event re-sent under another app)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collectors import signals
from collectors.signals import COUNT, Signal
from collectors.views import views
from gateway.recording.record import CallRecord, encode_line
from gateway.recording.store import migrate
from gateway.recording.store.chdb_store import ChdbStore
from gateway.recording.store.migrate import view_statements

NOW = float(int(time.time()))


class Recording:
    """The module's store under another database, recording the statements it runs."""

    kind = "chdb"

    def __init__(self, store: ChdbStore, database: str) -> None:
        self.store, self.database, self.commands = store, database, []

    def command(self, sql: str) -> None:
        self.commands.append(sql)
        self.store.command(sql)

    def query(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        return self.store.query(sql, fmt)

    def insert(self, table: str, rows: bytes, token: str | None = None) -> None:
        sql = f"INSERT INTO {self.database}.{table} FORMAT JSONEachRow\n"
        self.store.command(sql + rows.decode())

    def rows(self, sql: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.query(sql).splitlines() if x.strip()]


@pytest.fixture(scope="module")
def chdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    # chDB hosts one engine per process: one store for the module, closed at the end.
    store = ChdbStore(str(tmp_path_factory.mktemp("views") / "db"), "views")
    try:
        yield store
    finally:
        store.close()


def event(eid: str, name: str, rid: str, app: str = "web", received: float = NOW,
          value: float = 1.0, session: str = "") -> bytes:  # fmt: skip
    return json.dumps({
        "event_id": eid, "ts": NOW - 10, "received_at": received, "request_id": rid,
        "app": app, "name": name, "value": value, "source": "user", "session_id": session,
    }).encode() + b"\n"  # fmt: skip


def call(rid: str, ago: float, app: str = "web") -> bytes:
    rec = CallRecord(request_id=rid, started_at=NOW - ago, app=app, request_model="m",
                     status_code=200, session_id="s-1", turn_index=1)  # fmt: skip
    return encode_line(rec)


def test_a_new_signal_is_a_column_after_migrate(chdb: ChdbStore, monkeypatch: pytest.MonkeyPatch):
    db = Recording(chdb, "reg")
    assert migrate(db, views=views)  # a fresh database: every numbered migration
    assert any("CREATE OR REPLACE VIEW reg.llm_call_feedback" in c for c in db.commands)
    db.insert("llm_calls", call("r-1", 60))
    db.insert("llm_feedback", event("e-1", "bookmark", "r-1") + event("e-2", "copy", "r-1"))
    before = db.rows("SELECT * FROM reg.llm_call_feedback")
    assert "bookmarks" not in before[0] and before[0]["events"] == 2

    bookmark = Signal("bookmark", "boolean", "the answer was bookmarked", {"bookmarks": COUNT},
                      {"bookmarks": COUNT})  # fmt: skip
    monkeypatch.setattr(signals, "SIGNALS", (*signals.SIGNALS, bookmark))
    db.commands.clear()
    assert migrate(db, views=views) == []  # no numbered migration: the views alone are replaced
    assert sum("CREATE OR REPLACE VIEW" in c for c in db.commands) == 2
    row = db.rows("SELECT bookmarks, copies, events FROM reg.llm_call_feedback")
    assert row == [{"bookmarks": 1, "copies": 1, "events": 2}]
    assert db.rows("SELECT bookmarks FROM reg.llm_sessions") == [{"bookmarks": 1}]

    db.commands.clear()
    assert migrate(db, views=views) == []  # idempotent: nothing changed, nothing replaced
    assert not [c for c in db.commands if "VIEW" in c]
    assert db.rows("SELECT bookmarks FROM reg.llm_call_feedback") == [{"bookmarks": 1}]


def test_each_feedback_event_counts_once(chdb: ChdbStore):
    db = Recording(chdb, "once")
    migrate(db, views=views)
    # a client reused X-Request-Id `r-dup`: two call rows; and `r-one`, a call of its own
    db.insert("llm_calls", call("r-dup", 300) + call("r-dup", 120) + call("r-one", 200))
    db.insert(
        "llm_feedback",
        event("e-share", "share", "r-dup")
        + event("e-acc", "suggestion_accepted", "r-dup")
        + event("e-copy", "copy", "r-one"),
    )
    # the same events again: replayed, and re-sent under another app (another sorting key,
    # so the table's own deduplication cannot see it)
    db.insert("llm_feedback", event("e-share", "share", "r-dup", received=NOW + 1))
    db.insert("llm_feedback", event("e-acc", "suggestion_accepted", "r-dup", app="other"))
    assert db.rows("SELECT count() AS n FROM once.llm_feedback FINAL") == [{"n": 4}]

    rows = db.rows(
        "SELECT request_id, toUnixTimestamp64Milli(started_at) AS t, events, shares, accepted "
        "FROM once.llm_call_feedback ORDER BY t"
    )
    assert [(r["request_id"], r["events"], r["shares"], r["accepted"]) for r in rows] == [
        ("r-dup", 0, 0, 0),  # the earlier call with the reused id
        ("r-one", 1, 0, 0),
        ("r-dup", 2, 1, 1),  # the latest call with that id owns its signals
    ]
    totals = db.rows(
        "SELECT count() AS calls, sum(events) AS events, sum(shares) AS shares, "
        "sum(accepted) AS accepted FROM once.llm_call_feedback"
    )
    assert totals == [{"calls": 3, "events": 3, "shares": 1, "accepted": 1}]
    session = db.rows("SELECT calls, events, accepted FROM once.llm_sessions")
    assert session == [{"calls": 3, "events": 3, "accepted": 1}]


def test_view_ddl_on_a_cluster_parses(chdb: ChdbStore):
    stmts = view_statements(views, "llm_gateway", "prod", session_idle_minutes=10)
    assert [name for name, _, _ in stmts] == [
        "llm_call_feedback",
        "llm_sessions",
        "llm_experiment_variants",
    ]
    for _, digest, sql in stmts:
        assert sql.startswith("CREATE OR REPLACE VIEW llm_gateway.") and "ON CLUSTER 'prod'" in sql
        assert sql.endswith(f"COMMENT '{digest}'")
        chdb.query("EXPLAIN AST " + sql, "TSV")  # the real parser accepts it


def test_registry_columns_agree():
    cols = {c.name: c for c in signals.columns("call")}
    assert cols["shown"].signals == (
        "suggestion_shown", "suggestion_accepted", "suggestion_rejected",
    )  # fmt: skip
    assert signals.feeding("session", "ended") == ("session_end",)
    clash = Signal("x", "numeric", "", {"shown": signals.AVG})
    with pytest.MonkeyPatch.context() as m:
        m.setattr(signals, "SIGNALS", (*signals.SIGNALS, clash))
        with pytest.raises(ValueError, match="column shown"):
            signals.columns("call")


# The views as release 0.1 created them (their SELECTs, `{db}` for the database): counting
# every event of a signal whatever its value.
VIEWS_0_1 = Path(__file__).with_name("data") / "views_0.1.json"


def test_an_existing_store_gets_the_corrected_counts_at_the_next_migrate(chdb: ChdbStore):
    db = Recording(chdb, "old")
    migrate(db)  # the tables, then the views as the earlier release made them
    for name, select in json.loads(VIEWS_0_1.read_text()).items():
        select = select.replace("{db}", "old")
        digest = hashlib.sha256(select.encode()).hexdigest()[:16]
        db.command(f"CREATE OR REPLACE VIEW old.{name} AS\n{select}\nCOMMENT '{digest}'")
    db.insert("llm_calls", call("r-no", 60) + call("r-yes", 50))
    db.insert(
        "llm_feedback",
        event("e-1", "suggestion_accepted", "r-no", value=0.0)
        + event("e-2", "copy", "r-no", value=0.0)
        + event("e-3", "suggestion_accepted", "r-yes")
        + event("e-4", "session_end", "", value=0.0, session="s-1"),
    )
    count = (
        "SELECT request_id, shown, accepted, copies FROM old.llm_call_feedback ORDER BY request_id"
    )
    before = db.rows(count)
    assert [(r["shown"], r["accepted"], r["copies"]) for r in before] == [(1, 1, 1), (1, 1, 0)]
    assert db.rows("SELECT accepted, ended FROM old.llm_sessions") == [{"accepted": 2, "ended": 1}]

    db.commands.clear()
    assert migrate(db, views=views) == []  # no table changes: the views alone
    replaced = [c for c in db.commands if "CREATE OR REPLACE VIEW" in c]
    assert len(replaced) == 3
    after = db.rows(count)
    assert [(r["request_id"], r["shown"], r["accepted"], r["copies"]) for r in after] == [
        ("r-no", 1, 0, 0),  # shown, not accepted, not copied
        ("r-yes", 1, 1, 0),
    ]
    assert db.rows("SELECT accepted, ended FROM old.llm_sessions") == [{"accepted": 1, "ended": 0}]
