"""The "failed call" predicate: one Python function and its SQL twin, run by chDB, agree."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.record import FAILED_SQL, CallRecord, Outcome, is_failed
from gateway.store.chdb_store import ChdbStore


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
