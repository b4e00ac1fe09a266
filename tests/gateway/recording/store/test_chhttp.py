"""clickhouse-connect, over real HTTP, against chDB served by tests/chhttp.py."""

from __future__ import annotations

import gzip
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import clickhouse_connect
import lz4.frame
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from tests.chhttp import ChHttpServer

TABLE_DDL = """
CREATE TABLE IF NOT EXISTS {db}.calls (
    ts DateTime64(3, 'UTC'),
    id String,
    model LowCardinality(String),
    cost Nullable(Float64),
    tags Map(String, String),
    version UInt32
) ENGINE = ReplacingMergeTree(version) ORDER BY id
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChHttpServer]:
    # chDB hosts one engine per process: one server (one data directory) for the whole module.
    with ChHttpServer(str(tmp_path_factory.mktemp("chhttp"))) as srv:
        yield srv


@pytest.fixture
def client(server: ChHttpServer) -> Iterator[Client]:
    server.delay = 0.0
    if not server.running:
        server.start()
    c = clickhouse_connect.get_client(host="127.0.0.1", port=server.port)
    yield c
    c.close()


@pytest.fixture
def db(client: Client) -> str:
    name = f"t_{uuid.uuid4().hex[:8]}"
    client.command(f"CREATE DATABASE {name}")
    client.command(TABLE_DDL.format(db=name))
    return name


def _http(server: ChHttpServer, path: str, body: bytes | None = None) -> Any:
    return urllib.request.urlopen(urllib.request.Request(server.url + path, data=body), timeout=5)


def test_connects_and_pings(server: ChHttpServer, client: Client) -> None:
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert client.server_version == server.version
    before = server.requests
    assert client.ping()
    assert server.requests == before + 1
    assert _http(server, "/ping").read() == b"Ok.\n"
    assert client.command("SELECT 1 + 1") == 2
    assert client.command("SELECT 'a', 'b'") == ["a", "b"]


def test_ddl_inserts_and_typed_reads(client: Client, db: str) -> None:
    lines = [
        {"ts": "2025-01-02 03:04:05.678", "id": "a", "model": "gpt", "cost": 0.25,
         "tags": {"team": "x"}, "version": 1},
        {"ts": "2025-01-02 03:04:06.000", "id": "b", "model": "claude", "cost": None,
         "tags": {}, "version": 1},
    ]  # fmt: skip
    block = "".join(json.dumps(line) + "\n" for line in lines).encode()
    summary = client.raw_insert(f"{db}.calls", None, insert_block=block, fmt="JSONEachRow")
    assert summary.written_rows == 2
    # insert() sends Native, lz4-compressed by default; version 2 replaces row "a"
    ts = datetime(2025, 1, 3, 0, 0, 0, 123000, tzinfo=UTC)
    row = [ts, "a", "gpt", 1.5, {"team": "y", "k": "v"}, 2]
    names = ["ts", "id", "model", "cost", "tags", "version"]
    assert client.insert(f"{db}.calls", [row], column_names=names).written_rows == 1

    result = client.query(f"SELECT {', '.join(names)} FROM {db}.calls FINAL ORDER BY id")
    assert result.column_names == tuple(names)
    assert result.result_rows == [
        (ts.replace(tzinfo=None), "a", "gpt", 1.5, {"team": "y", "k": "v"}, 2),
        (datetime(2025, 1, 2, 3, 4, 6), "b", "claude", None, {}, 1),
    ]
    assert client.query(f"SELECT count() FROM {db}.calls").result_rows == [(3,)]
    raw = client.raw_query(f"SELECT id, cost FROM {db}.calls FINAL ORDER BY id", fmt="JSONEachRow")
    assert [json.loads(x) for x in raw.splitlines()] == [
        {"id": "a", "cost": 1.5},
        {"id": "b", "cost": None},
    ]
    assert client.query(f"SELECT id FROM {db}.calls WHERE id = 'zz'").result_rows == []
    assert client.command(f"SELECT id FROM {db}.calls WHERE id = 'zz'") == ""
    typed = client.query("SELECT toDecimal64(1.25, 2) AS d, [1, 2] AS a, toUUID(%(u)s) AS u",
                         parameters={"u": "00000000-0000-0000-0000-000000000001"})  # fmt: skip
    assert typed.result_rows == [(Decimal("1.25"), [1, 2], uuid.UUID(int=1))]


def test_large_native_insert(client: Client, db: str) -> None:
    rows = [
        [datetime(2025, 1, 1), f"id{i}", f"m{i % 5}", i / 2, {"i": str(i)}, 1]
        for i in range(50_000)
    ]
    client.insert(
        f"{db}.calls", rows, column_names=["ts", "id", "model", "cost", "tags", "version"]
    )
    got = client.query(f"SELECT count(), uniqExact(model), sum(cost) FROM {db}.calls")
    assert got.result_rows == [(50_000, 5, sum(i / 2 for i in range(50_000)))]


@pytest.mark.parametrize("encoding", ["gzip", "lz4", "zstd"])
def test_compressed_raw_insert(client: Client, db: str, encoding: str) -> None:
    data = b'{"id": "c1", "model": "m"}\n{"id": "c2", "model": "m"}\n'
    if encoding == "gzip":
        data = gzip.compress(data)
    elif encoding == "lz4":
        data = lz4.frame.compress(data)
    else:
        from backports import zstd  # type: ignore[import-not-found]

        data = zstd.compress(data)
    client.raw_insert(f"{db}.calls", ["id", "model"], data, fmt="JSONEachRow", compression=encoding)
    assert client.command(f"SELECT groupArray(id) FROM {db}.calls") == "['c1','c2']"


def test_errors_are_database_errors(server: ChHttpServer, client: Client, db: str) -> None:
    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE") as info:
        client.query(f"SELECT * FROM {db}.nope")
    assert "Code: 60" in str(info.value)
    with pytest.raises(DatabaseError, match="SYNTAX_ERROR"):
        client.command("SELEC 1")
    with pytest.raises(DatabaseError, match="UNKNOWN_SETTING"):
        client.query("SELECT 1", settings={"no_such_setting": 1})
    with pytest.raises(urllib.error.HTTPError) as http_error:
        _http(server, "/?query=SELECT%20nope")
    assert http_error.value.code == 500
    assert http_error.value.headers["X-ClickHouse-Exception-Code"] == "47"
    assert http_error.value.read().startswith(b"Code: 47. DB::Exception:")
    assert client.command("SELECT 1") == 1  # the server is fine afterwards


def test_response_headers(server: ChHttpServer) -> None:
    resp = _http(
        server, "/?query_id=q1&default_format=JSONEachRow", b"SELECT number FROM numbers(3)"
    )
    assert resp.read() == b'{"number":0}\n{"number":1}\n{"number":2}\n'
    assert resp.headers["X-ClickHouse-Query-Id"] == "q1"
    assert resp.headers["X-ClickHouse-Format"] == "JSONEachRow"
    assert resp.headers["X-ClickHouse-Timezone"] == server.timezone
    assert resp.headers["X-ClickHouse-Server-Display-Name"] == "chhttp"
    assert json.loads(resp.headers["X-ClickHouse-Summary"])["read_rows"] == "3"
    resp = _http(server, "/?query=SELECT%201%20FORMAT%20CSV")
    assert (resp.read(), resp.headers["X-ClickHouse-Format"]) == (b"1\n", "CSV")
    resp = _http(server, "/", b"CREATE TEMPORARY TABLE tmp_x (a UInt8)")
    assert resp.read() == b"" and "X-ClickHouse-Format" not in resp.headers


def test_database_option(server: ChHttpServer, client: Client, db: str) -> None:
    scoped = clickhouse_connect.get_client(host="127.0.0.1", port=server.port, database=db)
    scoped.raw_insert("calls", ["id", "model"], b'{"id":"d1","model":"m"}\n', fmt="JSONEachRow")
    scoped.insert("calls", [["d2", "m"]], column_names=["id", "model"])
    assert scoped.query("SELECT id FROM calls ORDER BY id").result_rows == [("d1",), ("d2",)]
    assert scoped.command("SELECT currentDatabase()") == db
    assert client.command("SELECT currentDatabase()") == "default"  # no leak between clients
    with pytest.raises(DatabaseError, match="UNKNOWN_DATABASE"):
        clickhouse_connect.get_client(host="127.0.0.1", port=server.port, database="no_db").command(
            "SELECT 1"
        )


def test_settings_and_bound_parameters(server: ChHttpServer, client: Client) -> None:
    default = client.command("SELECT getSetting('max_threads')")
    got = client.query("SELECT getSetting('max_threads')", settings={"max_threads": 3})
    assert got.result_rows == [(3,)]
    assert client.command("SELECT getSetting('max_threads')") == default  # reset afterwards
    got = client.query("SELECT {n:UInt32} + 1, {s:String}", parameters={"n": 41, "s": "it's"})
    assert got.result_rows == [(42, "it's")]
    form = clickhouse_connect.get_client(
        host="127.0.0.1", port=server.port, form_encode_query_params=True
    )
    assert form.query("SELECT {n:UInt32} * 2", parameters={"n": 21}).result_rows == [(42,)]


def test_stop_and_restart_keep_data(server: ChHttpServer, client: Client, db: str) -> None:
    client.raw_insert(
        f"{db}.calls", ["id", "model"], b'{"id":"s1","model":"m"}\n', fmt="JSONEachRow"
    )
    port = server.port
    server.stop()
    assert not server.running
    with pytest.raises(OperationalError):
        client.command("SELECT 1")
    assert not client.ping()
    server.start()
    assert server.port == port
    assert client.ping()
    assert client.command(f"SELECT id FROM {db}.calls") == "s1"


def test_delay_slows_every_request(server: ChHttpServer, client: Client) -> None:
    impatient = clickhouse_connect.get_client(
        host="127.0.0.1", port=server.port, send_receive_timeout=1
    )
    server.delay = 0.3
    started = time.monotonic()
    assert client.command("SELECT 1") == 1
    assert time.monotonic() - started >= 0.3
    server.delay = 1.3
    with pytest.raises(OperationalError, match="timed out"):
        impatient.command("SELECT 1")
    server.delay = 0.0
