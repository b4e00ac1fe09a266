"""The response cache across replicas: two gateway processes sharing one real `redis-server`,
and what a Redis outage does (the cache is off while it lasts; every call is answered)."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import GatewayProcess, gateway_config
from tests.fakes import FakeUpstream
from tests.redisproc import RedisServer

TTL_S = 120


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as r:
        yield r


@pytest.fixture(scope="module")
def fleet(
    fake: FakeUpstream, selfhosted: FakeUpstream, tmp_path_factory, redis_server: RedisServer
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    cfg = gateway_config(fake.url, selfhosted.url)
    cfg["cache"] = {"enabled": True, "ttl_s": TTL_S, "redis_url": redis_server.url}
    root = tmp_path_factory.mktemp("cache-fleet")
    gws = []
    for name in ("a", "b"):
        (root / name).mkdir()
        gws.append(GatewayProcess(cfg, root / name).start())
    try:
        yield gws[0], gws[1]
    finally:
        for g in gws:
            g.stop()


def redis(server: RedisServer, *args: str) -> bytes:
    """One command over RESP, its raw answer."""
    cmd = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in args)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(cmd)
        return s.recv(65536)


def ask() -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Say hello ({uuid.uuid4().hex[:12]})."}]


def post(gw: GatewayProcess, messages: list[dict[str, str]]) -> httpx.Response:
    body = {"model": "gpt-4o", "messages": messages, "temperature": 0}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10)


def status_of(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    return r.headers["x-gateway-cache"]


def wait_for(cond, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met")


def test_a_replica_serves_what_another_stored(fleet, fake: FakeUpstream, redis_server):
    a, b = fleet
    q = ask()
    assert status_of(post(a, q)) == "MISS"
    wait_for(lambda: b"lgw:cache:" in redis(redis_server, "KEYS", "lgw:cache:*"))
    n = len(fake.requests)
    r = post(b, q)
    assert status_of(r) == "HIT" and len(fake.requests) == n
    assert r.json()["choices"][0]["message"]["content"] == "Hello from the fake upstream!"
    # Stored with the configured lifetime, under a key that names no part of the request.
    keys = redis(redis_server, "KEYS", "lgw:cache:*").split(b"\r\n")
    key = next(k for k in keys if k.startswith(b"lgw:cache:")).decode()
    ttl = int(redis(redis_server, "TTL", key).strip()[1:])
    assert 0 < ttl <= TTL_S and b"Say hello" not in redis(redis_server, "KEYS", "*")


def test_a_redis_outage_during_hits_turns_the_cache_off_never_a_call(
    fleet, fake: FakeUpstream, redis_server: RedisServer
):
    a, b = fleet
    q = ask()
    assert [status_of(post(a, q)), status_of(post(b, q))] == ["MISS", "HIT"]
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def hits() -> None:  # calls keep coming while Redis goes away
        while not stop.is_set():
            r = post(b, q)
            seen.append((r.status_code, r.headers.get("x-gateway-cache", "")))

    t = threading.Thread(target=hits)
    t.start()
    try:
        wait_for(lambda: len(seen) >= 3)
        assert redis_server.proc is not None
        redis_server.proc.kill()  # as a crash: no goodbye to the clients
        redis_server.proc.wait()
        wait_for(lambda: any(s == "BYPASS" for _, s in seen[-3:]))
        n = len(fake.requests)
        # Off: neither replica serves its own copy, both go upstream and answer.
        assert [status_of(post(b, q)), status_of(post(a, q))] == ["BYPASS", "BYPASS"]
        assert len(fake.requests) >= n + 2
    finally:
        stop.set()
        t.join()
    assert {code for code, _ in seen} == {200}, seen
    assert {s for _, s in seen} <= {"HIT", "BYPASS"}
    redis_server.start()  # back, empty: the cache is on again within a moment
    wait_for(lambda: status_of(post(a, q)) == "HIT")  # its own copy, from before
    q = ask()
    assert [status_of(post(a, q)), status_of(post(b, q))] == ["MISS", "HIT"]
