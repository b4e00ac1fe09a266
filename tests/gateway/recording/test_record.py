"""The "failed call" predicate: one Python function and its SQL twin, run by chDB, agree."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.recording.record import FAILED_SQL, CallRecord, Outcome, encode_line, is_failed
from gateway.recording.store import migrate
from gateway.recording.store.chdb_store import ChdbStore


def test_failed_predicate_python_and_sql_agree(tmp_path: Path):
    cases = [(o.value, s) for o in Outcome for s in (0, 200, 399, 400, 429, 499, 500, 502)]
    expected = [is_failed(CallRecord(request_id="r", outcome=Outcome(o), status_code=s))
                for o, s in cases]  # fmt: skip
    assert any(expected) and not all(expected)
    store = ChdbStore(str(tmp_path / "db"), "rec")
    try:
        values = ", ".join(f"({i}, '{o}', {s})" for i, (o, s) in enumerate(cases))
        out = store.query(
            f"SELECT i, {FAILED_SQL} AS failed FROM values('i UInt32, outcome String, "
            f"status_code UInt16', {values}) ORDER BY i"
        )
    finally:
        store.close()
    got = [bool(json.loads(line)["failed"]) for line in out.splitlines() if line.strip()]
    assert got == expected


def test_usage_hourly_errors_follow_the_failed_predicate(tmp_path: Path):
    """The rollup's `errors` (migration 0003, rendered from FAILED_SQL) counts exactly the
    calls `is_failed` calls failed."""
    cases = [(o, s) for o in Outcome for s in (0, 200, 399, 400, 429, 500)]
    recs = [CallRecord(request_id=f"r{i}", started_at=1_763_996_400 + i, app=f"c{i}",
                       outcome=o, status_code=s) for i, (o, s) in enumerate(cases)]  # fmt: skip
    store = ChdbStore(str(tmp_path / "db"), "hourly")
    try:
        migrate(store)
        store.insert("llm_calls", b"".join(encode_line(r) for r in recs), "t")
        out = store.query("SELECT app, sum(errors) AS e FROM llm_usage_hourly GROUP BY app")
    finally:
        store.close()
    got = {row["app"]: int(row["e"]) for row in map(json.loads, out.splitlines())}
    assert got == {r.app: int(is_failed(r)) for r in recs}
    assert 0 < sum(got.values()) < len(recs)
