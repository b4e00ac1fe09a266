"""The rollups' cache and served-model migrations (0014-0016) on a store that had rows
before them (the engine is chDB, ClickHouse's own), and their cluster form."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator

import pytest

from gateway.recording.record import CallRecord, encode_line
from gateway.recording.store import migrate
from gateway.recording.store.chdb_store import ChdbStore
from gateway.recording.store.migrate import migrations, render

# The module (the package's `migrate` is its function of that name).
migrate_module = importlib.import_module("gateway.recording.store.migrate")

H0 = 1_763_996_400  # an hour boundary
OLD, NEW = H0, H0 + 3600  # the hour before the upgrade, and one after


def call(rid: str, at: float, **kw: object) -> CallRecord:
    base = {"app": "shop", "provider": "openai", "request_model": "fast",
            "upstream_model": "gpt-4o-mini", "status_code": 200, "input_tokens": 10,
            "output_tokens": 5, "cost_usd": 0.25, "key_id": "k1", "key_name": "ci"}  # fmt: skip
    return CallRecord(request_id=rid, started_at=at, **{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    s = ChdbStore(str(tmp_path_factory.mktemp("upgrade")), "llm_gateway")
    yield s
    s.close()


def rows(store: ChdbStore, sql: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in store.query(sql).splitlines()]


def test_an_existing_store_gains_the_served_model_for_new_rows(
    store: ChdbStore, monkeypatch: pytest.MonkeyPatch
):
    # The store as a gateway before the cache left it: migrations up to 0013, and calls.
    before = [m for m in migrations() if m.version <= 13]
    with monkeypatch.context() as patch:
        patch.setattr(migrate_module, "migrations", lambda: before)
        assert migrate(store)[-1] == 13
    old = [call("o1", OLD + 1), call("o2", OLD + 2, upstream_model="gpt-4o")]
    store.insert("llm_calls", b"".join(encode_line(r) for r in old), "old")
    assert migrate(store) == [14, 15, 16]

    new = [
        call("n1", NEW + 1),
        call("n2", NEW + 2, cache_status="hit", cost_usd=0.0, cost_saved_usd=0.25),
        call("n3", NEW + 3, upstream_model="gpt-4o", cost_usd=1.0),
    ]
    store.insert("llm_calls", b"".join(encode_line(r) for r in new), "new")
    got = rows(store, "SELECT toUnixTimestamp(hour) AS h, upstream_model AS m, sum(requests) AS n, "
                      "sum(cache_hits) AS hits, sum(cost_usd) AS c, sum(cost_saved_usd) AS s "
                      "FROM llm_usage_hourly GROUP BY h, m ORDER BY h, m")  # fmt: skip
    assert got == [
        # summed before the upgrade: no served model, no cache figures; still counted
        {"h": OLD, "m": "", "n": 2, "hits": 0, "c": 0.5, "s": 0},
        {"h": NEW, "m": "gpt-4o", "n": 1, "hits": 0, "c": 1.0, "s": 0},
        {"h": NEW, "m": "gpt-4o-mini", "n": 2, "hits": 1, "c": 0.25, "s": 0.25},
    ]
    keys = rows(
        store,
        "SELECT toUnixTimestamp(hour) AS h, sum(requests) AS n, sum(cache_hits) AS hits, "
        "sum(cost_usd) AS c, sum(cost_saved_usd) AS s FROM llm_key_usage_hourly "
        "WHERE key_id = 'k1' GROUP BY h ORDER BY h",
    )
    assert keys == [{"h": OLD, "n": 2, "hits": 0, "c": 0.5, "s": 0},
                    {"h": NEW, "n": 3, "hits": 1, "c": 1.25, "s": 0.25}]  # fmt: skip
    # The served model is part of the rollup's key: rows of two served models stay apart.
    sorting = rows(store, "SELECT sorting_key FROM system.tables WHERE database = "
                          "'llm_gateway' AND name = 'llm_usage_hourly'")  # fmt: skip
    assert sorting == [{"sorting_key": "hour, app, provider, request_model, upstream_model"}]
    calls = rows(store, "SELECT request_id, cache_status, cost_saved_usd FROM llm_calls "
                        "ORDER BY request_id")  # fmt: skip
    assert [(c["request_id"], c["cost_saved_usd"]) for c in calls][:3] == [
        ("n1", 0), ("n2", 0.25), ("n3", 0)]  # fmt: skip
    assert migrate(store) == []  # a second start applies nothing


def test_cluster_form_of_the_rollup_migrations():
    stmts = {m.version: render(m, "db", 30, "prod") for m in migrations() if m.version >= 15}
    local, dist, view = stmts[15]
    assert "ALTER TABLE db.llm_usage_hourly_local ON CLUSTER 'prod'" in local
    assert "MODIFY ORDER BY (hour, app, provider, request_model, upstream_model)" in local
    # A Distributed table takes the new columns, and has no sorting key to change.
    assert "ALTER TABLE db.llm_usage_hourly ON CLUSTER 'prod'" in dist
    assert "ADD COLUMN IF NOT EXISTS upstream_model" in dist and "MODIFY ORDER BY (" not in dist
    # Each node's view reads its local calls into its local rollup.
    assert view.startswith("ALTER TABLE db.llm_usage_hourly_mv ON CLUSTER 'prod' MODIFY QUERY")
    assert "FROM db.llm_calls_local" in view and "llm_calls\n" not in view
    k_local, k_dist, k_view = stmts[16]
    assert "llm_key_usage_hourly_local ON CLUSTER" in k_local and "MODIFY ORDER BY (" not in k_dist
    assert "llm_key_usage_hourly_mv ON CLUSTER 'prod' MODIFY QUERY" in k_view
    assert "FROM db.llm_calls_local" in k_view
