"""Limits across replicas: two gateway processes sharing one real `redis-server` and one
ClickHouse (the HTTP fixture); keys created straight in ClickHouse with `llm-gateway keys`."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import httpx
import pytest

from gateway.access.keys import new_secret
from tests.chhttp import ChHttpServer
from tests.conftest import GatewayProcess, gateway_config
from tests.gateway.access.test_keys_e2e import wait_for
from tests.gateway.test_cli import cli
from tests.redisproc import RedisServer

DB = "fleet"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as r:
        yield r


@pytest.fixture(scope="module")
def fleet(fake, selfhosted, tmp_path_factory, redis_server: RedisServer):
    root = tmp_path_factory.mktemp("fleet")
    with ChHttpServer(str(root / "ch")) as ch:
        cfg = gateway_config(fake.url, selfhosted.url)
        cfg["store"] = {"kind": "clickhouse", "url": ch.url, "database": DB,
                        "flush_interval_ms": 50}  # fmt: skip
        cfg["auth"] = {"require_key": True, "refresh_seconds": 0.3, "redis_url": redis_server.url}
        cfg["routes"].insert(0, {"match": "budget-*", "provider": "openai"})
        cfg["prices"]["budget-model"] = {"input": 50_000, "output": 50_000}  # 0.75 USD a call
        gws = []
        for name in ("a", "b"):
            (root / name).mkdir()
            gws.append(GatewayProcess(cfg, root / name).start())
        try:
            yield ch, gws
        finally:
            for g in gws:
                g.stop()


def create_key(gw: GatewayProcess, *flags: str) -> dict:
    p = cli("keys", "create", "--name", f"fleet-{time.monotonic_ns()}", "--json", *flags,
            "--config", str(gw.config_path), cwd=gw.workdir)  # fmt: skip
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def wait_until_known(key: str, *gws: GatewayProcess) -> None:
    # A model with no route is answered 404 before any limit is charged; 401 until known.
    wait_for(lambda: all(post(g, key, "no-such-model").status_code == 404 for g in gws))


def post(gw: GatewayProcess, key: str, model: str = "gpt-4o-mini") -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
    )


def test_rpm_holds_across_two_replicas(fleet):
    _, (a, b) = fleet
    n = 5
    key = create_key(a, "--rpm", str(n))["key"]
    wait_until_known(key, a, b)
    t0 = time.monotonic()
    codes = [post(g, key).status_code for _ in range(10) for g in (a, b)]
    elapsed = time.monotonic() - t0
    # A token bucket refills n per minute: during the run it may add n * elapsed / 60.
    slack = int(n * elapsed / 60) + 1
    assert codes.count(200) <= n + slack and codes.count(200) >= n - 1
    assert set(codes) == {200, 429}
    # Both replicas refused once the shared bucket was empty.
    assert 429 in codes[0::2] and 429 in codes[1::2]


def test_a_busy_key_is_leased_by_each_replica_and_given_back(fleet, redis_server: RedisServer):
    """A key with large limits: each replica takes a share of them from Redis and admits
    its calls from it (the answers' headers count from the share); once the key is quiet,
    what was not used goes back to the shared buckets and set."""
    _, (a, b) = fleet
    created = create_key(a, "--rpm", "1600", "--concurrency", "64")  # shares: 100 calls, 4 slots
    key, kid = created["key"], created["key_id"]
    wait_until_known(key, a, b)  # 404s: refused before any limit is charged

    def redis(*args: str) -> bytes:
        with socket.create_connection(("127.0.0.1", redis_server.port)) as s:
            s.sendall((f"*{len(args)}\r\n" + "".join(
                f"${len(x)}\r\n{x}\r\n" for x in args)).encode())  # fmt: skip
            return s.recv(4096)

    answers = [post(g, key) for _ in range(5) for g in (a, b)]
    assert [r.status_code for r in answers] == [200] * 10
    assert answers[-1].headers["x-ratelimit-limit-requests"] == "1600"
    assert 1400 <= int(answers[-1].headers["x-ratelimit-remaining-requests"]) <= 1600
    # Both replicas hold a share: 200 calls and 8 slots taken (1,590 if called one by one),
    # plus the bucket's refill between the two takes (27 a second). A slow machine may take
    # over a lease's second for the ten calls: the next take gives back what is left of a
    # share and takes a new one, so the calls already made off it stay charged (at most 10).
    level = float(redis("HGET", f"lgw:{{{kid}}}:rpm", "l").split(b"\r\n")[1])
    assert 1400 - 10 <= level <= 1450
    assert redis("ZCARD", f"lgw:{{{kid}}}:slots") == b":8\r\n"
    # Quiet: the unused calls and every slot come back within a few seconds.
    wait_for(lambda: redis("ZCARD", f"lgw:{{{kid}}}:slots") == b":0\r\n")
    level = float(redis("HGET", f"lgw:{{{kid}}}:rpm", "l").split(b"\r\n")[1])
    assert level >= 1600 - 10 - 1


def test_budget_stops_both_and_survives_a_redis_wipe(fleet, redis_server: RedisServer):
    ch, (a, b) = fleet
    created = create_key(a, "--budget-usd", "2", "--budget-period", "month")
    key = created["key"]
    wait_until_known(key, a, b)
    codes = [post(g, key, "budget-model").status_code for _ in range(3) for g in (a, b)]
    # 0.75 USD a call, 0.5 reserved (10 tokens): admitted while spend + 0.5 fits in 2 USD,
    # 3 calls, whichever replica.
    assert codes == [200, 200, 200, 429, 429, 429]
    assert post(a, key, "budget-model").json()["error"]["code"] == "insufficient_quota"

    # Redis loses everything; a replica restarted now seeds the spend from llm_calls.
    client = clickhouse_connect.get_client(host="127.0.0.1", port=ch.port, database=DB)
    wait_for(lambda: client.query(
        f"SELECT sum(cost_usd) FROM llm_calls FINAL WHERE key_id = '{created['key_id']}'"
    ).result_rows[0][0] >= 2.25)  # fmt: skip
    with socket.create_connection(("127.0.0.1", redis_server.port)) as s:
        s.sendall(b"FLUSHALL\r\n")
        assert s.recv(16).startswith(b"+OK")
    a.stop()
    a.start()
    # Until it has read the keys (and seeded their spend) it answers 503 keys_loading.
    wait_for(lambda: post(a, key, "budget-model").status_code != 503)
    assert post(a, key, "budget-model").status_code == 429
    assert post(b, key, "budget-model").status_code == 429


def test_keys_cli_talks_straight_to_clickhouse(fleet):
    ch, (a, _) = fleet
    created = create_key(a, "--models", "gpt-4o*")
    client = clickhouse_connect.get_client(host="127.0.0.1", port=ch.port, database=DB)
    rows = client.query(
        f"SELECT key_hash, hint FROM llm_gateway_keys WHERE key_id = '{created['key_id']}'"
    ).result_rows
    assert len(rows) == 1 and rows[0][0].startswith("sha256:")
    assert created["key"] not in json.dumps(rows)
    assert not list(Path(a.workdir).glob("llm-gateway-data"))  # nothing embedded was opened


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_unreachable_redis_follows_the_failure_mode(fake, selfhosted, tmp_path: Path, mode: str):
    dead = RedisServer()  # never started: nothing listens on its port
    secret = new_secret()
    cfg = gateway_config(fake.url, selfhosted.url)
    cfg["auth"] = {"require_key": True, "redis_url": dead.url, "redis_failure": mode,
                   "keys": [{"name": "k", "key": secret, "rpm": 100}]}  # fmt: skip
    gw = GatewayProcess(cfg, tmp_path).start()
    try:
        r = post(gw, secret)
        if mode == "open":
            assert r.status_code == 200  # admitted; the limits do not hold meanwhile
        else:
            assert r.status_code == 503 and r.json()["error"]["code"] == "limiter_unavailable"
            assert gw.call_row(r.headers["x-request-id"])["outcome"] == "refused_limiter"
        metrics = httpx.get(gw.url + "/metrics").text
        failures = [ln for ln in metrics.splitlines()
                    if ln.startswith("gateway_limiter_failures_total ")]  # fmt: skip
        assert failures and float(failures[0].split()[1]) >= 1
        assert "redis unreachable" in gw.log()
    finally:
        gw.stop()
