"""Storage: migrations and idempotent rows on chDB; the clickhouse-connect path over real HTTP,
with the real gateway writing through it, including an outage of the ClickHouse endpoint."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import httpx
import openai
import pytest

from gateway.recording.record import CallRecord, encode_line
from gateway.recording.store import migrate
from gateway.recording.store.chdb_store import ChdbStore
from gateway.recording.store.clickhouse_store import ClickHouseStore
from gateway.recording.store.migrate import migrations
from tests.chhttp import ChHttpServer
from tests.conftest import GatewayProcess, gateway_config

# Columns DESIGN.md promises to users' queries, dashboards and docs.
STABLE_COLUMNS = {
    "request_id", "started_at", "app", "end_user", "session_id", "turn_index", "provider",
    "operation", "request_model", "response_model", "system_fingerprint", "stream",
    "status_code", "error_type", "finish_reason", "input_tokens", "output_tokens",
    "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "usage_estimated", "cost_usd",
    "latency_ms", "ttft_ms", "overhead_ms", "properties",
}  # fmt: skip


@pytest.fixture(scope="module")
def chhttp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChHttpServer]:
    # One chDB engine per process: this module's in-process store and the HTTP server share it.
    with ChHttpServer(str(tmp_path_factory.mktemp("chhttp"))) as srv:
        yield srv


def test_migrations_create_tables_once_and_are_numbered(chhttp: ChHttpServer):
    versions = [m.version for m in migrations()]
    assert versions == sorted(versions) and versions[0] == 1 and len(set(versions)) == len(versions)
    store = ClickHouseStore(chhttp.url, "default", "", f"m_{uuid.uuid4().hex[:8]}")
    assert migrate(store) == versions
    assert migrate(store) == []  # a second start applies nothing
    cols = {
        json.loads(line)["name"]
        for line in store.query(
            f"SELECT name FROM system.columns WHERE database = '{store.database}' "
            "AND table = 'llm_calls'"
        ).splitlines()
    }
    assert cols >= STABLE_COLUMNS
    ctype = store.query(
        f"SELECT type FROM system.columns WHERE database = '{store.database}' "
        "AND table = 'llm_calls' AND name IN ('started_at', 'cost_usd', 'ttft_ms') ORDER BY name",
        "TSVRaw",
    ).split(b"\n")
    assert ctype[:3] == [b"Nullable(Float64)", b"DateTime64(3, 'UTC')", b"Nullable(Float64)"]


def test_replayed_rows_collapse_to_one(chhttp: ChHttpServer):
    store = ClickHouseStore(chhttp.url, "default", "", f"d_{uuid.uuid4().hex[:8]}")
    migrate(store)
    rec = CallRecord(request_id="r-1", started_at=time.time(), app="a", input_tokens=3)
    rows = encode_line(rec)
    store.insert("llm_calls", rows)
    store.insert("llm_calls", rows)  # a retry after a timeout, or a replay
    out = store.query("SELECT count() AS n FROM llm_calls FINAL", "JSONEachRow")
    assert json.loads(out)["n"] == 1


def test_chdb_store_runs_the_same_sql(chhttp: ChHttpServer):
    # Same engine directory as the HTTP server (one engine per process), own database.
    store = ChdbStore(chhttp.data_dir, f"c_{uuid.uuid4().hex[:8]}")
    migrate(store)
    store.insert("llm_calls", encode_line(CallRecord(request_id="x", cost_usd=None)))
    # Unqualified names mean the gateway's database; a query's own FORMAT wins.
    out = store.query("SELECT request_id, cost_usd FROM llm_calls FORMAT JSONEachRow", "CSV")
    assert json.loads(out) == {"request_id": "x", "cost_usd": None}


def _readyz(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_gateway_writes_through_clickhouse_connect_and_survives_outage(
    chhttp: ChHttpServer, fake, selfhosted, tmp_path: Path
):
    db = f"gw_{uuid.uuid4().hex[:8]}"
    cfg = gateway_config(fake.url, selfhosted.url)
    cfg["store"] = {"kind": "clickhouse", "url": chhttp.url, "database": db,
                    "flush_interval_ms": 50}  # fmt: skip
    gw = GatewayProcess(cfg, tmp_path).start()
    _wait(lambda: _readyz(gw.url) == 200)  # migrated (in the background: it listens at once)
    client = clickhouse_connect.get_client(host="127.0.0.1", port=chhttp.port, database=db)
    try:
        oa = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        app = "ch-" + uuid.uuid4().hex[:6]
        hdrs = {"X-Gateway-App": app}
        for _ in range(3):
            oa.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}],
                                       extra_headers=hdrs)  # fmt: skip

        def count() -> int:
            q = f"SELECT count() FROM llm_calls WHERE app = '{app}'"
            return client.query(q).result_rows[0][0]

        _wait(lambda: count() == 3)
        row = client.query(
            f"SELECT input_tokens, output_tokens, cost_usd FROM llm_calls WHERE app = '{app}'"
        ).result_rows[0]
        assert row[0] == 10 and row[1] == 5 and row[2] > 0
        assert _readyz(gw.url) == 200

        chhttp.stop()  # ClickHouse unreachable
        t = time.monotonic()
        for _ in range(5):
            oa.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}],
                                       extra_headers=hdrs)  # fmt: skip
        assert time.monotonic() - t < 5  # traffic is not held up by the store
        _wait(lambda: _readyz(gw.url) == 503)
        with urllib.request.urlopen(gw.url + "/healthz") as r:
            assert r.status == 200  # liveness unaffected
        chhttp.start()
        _wait(lambda: count() == 8, timeout=40)
        assert _readyz(gw.url) == 200
        dup = client.query(
            f"SELECT count() - uniqExact(request_id) FROM llm_calls WHERE app = '{app}'"
        ).result_rows[0][0]
        assert dup == 0
    finally:
        if not chhttp.running:
            chhttp.start()
        assert gw.stop() == 0


def _wait(cond, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_several_workers_each_with_own_log(chhttp: ChHttpServer, fake, selfhosted, tmp_path: Path):
    db = f"mw_{uuid.uuid4().hex[:8]}"
    cfg = gateway_config(fake.url, selfhosted.url)
    cfg["server"]["workers"] = 2
    cfg["store"] = {"kind": "clickhouse", "url": chhttp.url, "database": db,
                    "flush_interval_ms": 50}  # fmt: skip
    cfg["log"] = {"dir": "log"}
    gw = GatewayProcess(cfg, tmp_path).start()
    _wait(lambda: _readyz(gw.url) == 200)
    try:
        app = "mw-" + uuid.uuid4().hex[:6]

        async def load() -> None:
            async with openai.AsyncOpenAI(
                base_url=gw.url + "/v1", api_key="k", max_retries=0,
                default_headers={"X-Gateway-App": app},
                http_client=httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0)),
            ) as c:  # fmt: skip
                await asyncio.gather(*(
                    c.chat.completions.create(model="gpt-4o", messages=[{"role": "user",
                                              "content": "x"}]) for _ in range(40)))  # fmt: skip

        # Which worker accepts a connection is the kernel's choice: on a busy machine one
        # may take a whole wave, so send waves until each has answered some.
        waves = 0
        while waves < 10 and {p.name for p in (tmp_path / "log").iterdir()} != {
            "feedback", "w0", "w1"}:  # fmt: skip
            asyncio.run(load())
            waves += 1
        client = clickhouse_connect.get_client(host="127.0.0.1", port=chhttp.port, database=db)
        q = f"SELECT count() FROM llm_calls WHERE app = '{app}'"
        _wait(lambda: client.query(q).result_rows[0][0] == 40 * waves)
        # Two processes, each holding its own log slot.
        assert sorted(p.name for p in (tmp_path / "log").iterdir()) == ["feedback", "w0", "w1"]
        assert sorted(p.name for p in (tmp_path / "log" / "feedback").iterdir()) == ["w0", "w1"]
        dup = client.query(
            f"SELECT count() - uniqExact(request_id) FROM llm_calls WHERE app = '{app}'"
        ).result_rows[0][0]
        assert dup == 0
    finally:
        assert gw.stop() == 0


def test_cluster_ddl_is_replicated_plus_distributed_and_parses(chhttp: ChHttpServer):
    from gateway.recording.store.migrate import render

    stmts = [s for m in migrations() for s in render(m, "llm_gateway", 30, "prod")]
    creates = [s for s in stmts if s.lstrip("-").strip() and "CREATE TABLE" in s]
    local = next(s for s in creates if "llm_calls_local ON CLUSTER 'prod'" in s)
    assert (
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/llm_gateway/llm_calls_local'"
        in local
    )
    dist = next(s for s in creates if "ENGINE = Distributed" in s)
    assert dist.startswith("CREATE TABLE IF NOT EXISTS llm_gateway.llm_calls ON CLUSTER 'prod'")
    assert "cityHash64(request_id)" in dist  # replays land on the same shard
    assert all("ON CLUSTER 'prod'" in s for s in stmts if "ALTER TABLE" in s)
    # A column added later reaches the Distributed table too (inserts name it).
    added = [s.split(" ON CLUSTER")[0].splitlines()[-1] for s in stmts
             if "ADD COLUMN IF NOT EXISTS client_r" in s]  # fmt: skip
    assert added == ["ALTER TABLE llm_gateway.llm_calls_local", "ALTER TABLE llm_gateway.llm_calls"]
    for s in stmts:  # the real ClickHouse parser accepts every statement
        chhttp.query("EXPLAIN AST " + s)


def test_async_insert_option_writes_rows(chhttp: ChHttpServer):
    store = ClickHouseStore(chhttp.url, "default", "", f"a_{uuid.uuid4().hex[:8]}",
                            async_insert=True)  # fmt: skip
    migrate(store)
    store.insert("llm_calls", encode_line(CallRecord(request_id="ai")), "tok-ai")
    store.insert("llm_calls", encode_line(CallRecord(request_id="ai")), "tok-ai")
    assert json.loads(store.query("SELECT count() AS n FROM llm_calls")) == {"n": 1}


def test_usage_hourly_rollup_matches_hand_computed(chhttp: ChHttpServer):
    store = ClickHouseStore(chhttp.url, "default", "", f"u_{uuid.uuid4().hex[:8]}")
    migrate(store)
    h0 = 1_763_996_400  # an hour boundary
    recs = [
        CallRecord(request_id="a", started_at=h0 + 10, app="x", provider="p", request_model="m",
                   status_code=200, input_tokens=10, output_tokens=5, cost_usd=0.5),
        CallRecord(request_id="b", started_at=h0 + 20, app="x", provider="p", request_model="m",
                   status_code=500, outcome="upstream_error", cost_usd=0.0),
        CallRecord(request_id="c", started_at=h0 + 30, app="x", provider="p", request_model="m",
                   status_code=200, input_tokens=7, output_tokens=3, cost_usd=None),
        CallRecord(request_id="d", started_at=h0 + 3600, app="x", provider="p",
                   request_model="m", status_code=200, input_tokens=1, output_tokens=1,
                   cost_usd=0.25),
    ]  # fmt: skip
    rows = b"".join(encode_line(r) for r in recs)
    store.insert("llm_calls", rows, "tok-1")
    store.insert("llm_calls", rows, "tok-1")  # a replay: neither table double counts
    out = [
        json.loads(line)
        for line in store.query(
            "SELECT toUnixTimestamp(hour) AS h, sum(requests) AS n, sum(errors) AS e, "
            "sum(input_tokens) AS i, sum(output_tokens) AS o, sum(cost_usd) AS c, "
            "sum(unpriced) AS u FROM llm_usage_hourly GROUP BY hour ORDER BY hour"
        ).splitlines()
    ]
    assert out == [
        {"h": h0, "n": 3, "e": 1, "i": 17, "o": 8, "c": 0.5, "u": 1},
        {"h": h0 + 3600, "n": 1, "e": 0, "i": 1, "o": 1, "c": 0.25, "u": 0},
    ]
