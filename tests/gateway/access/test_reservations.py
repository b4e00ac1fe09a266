"""Budgets and TPM under concurrency: two gateway processes sharing one real `redis-server`,
a slow upstream (1 s), 400 calls at once. Each call reserves its estimated cost and tokens
before it is admitted, so the spend ends within one call's estimation error of the budget
(here the estimate is exact: 10 input tokens estimated and reported, `max_tokens` 5 and 5
answered), where without reservations every call in flight was admitted."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator

import httpx
import pytest

from gateway.access.keys import GatewayKey, Limits, new_secret
from gateway.access.redis_limiter import RedisLimiter
from tests.conftest import GatewayProcess, gateway_config
from tests.fakes import Behaviour
from tests.redisproc import RedisServer

BUDGET_KEY, BIG_KEY, TPM_KEY = new_secret(), new_secret(), new_secret()
BUDGET, TPM = 0.05, 150
# 24 characters: 6 tokens of text and 4 of framing estimated, the fake's 10 reported.
MSGS = [{"role": "user", "content": "x" * 24}]
CALL_TOKENS = 15  # 10 in, 5 out
CALL_USD = CALL_TOKENS * 400 / 1_000_000  # 0.006 at 400 USD per million tokens either way


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as r:
        yield r


@pytest.fixture(scope="module")
def pair(fake, selfhosted, redis_server, tmp_path_factory) -> Iterator[list[GatewayProcess]]:
    cfg = gateway_config(fake.url, selfhosted.url)
    cfg["routes"].insert(0, {"match": "budget-*", "provider": "openai"})
    cfg["prices"]["budget-model"] = {"input": 400, "output": 400}
    # The calls here wait 1 s for their first byte, 400 at once on two gateways: on a busy
    # machine the shared config's 1.5 s first-byte timeout would retry some, sending a
    # call upstream twice. These tests count calls, not timeouts.
    cfg["providers"]["openai"]["timeouts"] = {"connect": 2, "first_byte": 20, "total": 30}
    cfg["auth"] = {"redis_url": redis_server.url, "keys": [
        {"name": "budget", "key": BUDGET_KEY, "budget_usd": BUDGET, "budget_period": "day"},
        {"name": "big", "key": BIG_KEY, "budget_usd": BUDGET, "budget_period": "day"},
        {"name": "tpm", "key": TPM_KEY, "tpm": TPM},
    ]}  # fmt: skip
    root = tmp_path_factory.mktemp("reservations")
    gws = []
    for name in ("a", "b"):
        (root / name).mkdir()
        gws.append(GatewayProcess(cfg, root / name).start())
    try:
        yield gws
    finally:
        for g in gws:
            g.stop()


def burst(gws: list[GatewayProcess], key: str, n: int = 400) -> list[httpx.Response]:
    """`n` calls at once, alternately to each gateway."""

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=n)
        async with httpx.AsyncClient(timeout=60, limits=limits) as c:
            return list(await asyncio.gather(*(
                c.post(gws[i % 2].url + "/v1/chat/completions",
                       headers={"authorization": f"Bearer {key}"},
                       json={"model": "budget-model", "messages": MSGS, "max_tokens": 5})
                for i in range(n)
            )))  # fmt: skip

    return asyncio.run(run())


def call(gw: GatewayProcess, key: str, max_tokens: int) -> httpx.Response:
    body = {"model": "budget-model", "messages": MSGS, "max_tokens": max_tokens}
    return httpx.post(gw.url + "/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {key}"})  # fmt: skip


def shared(name: str, limits: Limits) -> GatewayKey:
    return GatewayKey(key_id=f"cfg_{name}", name=name, key_hash="", limits=limits)


async def _spent_and_held(url: str, key: GatewayKey) -> tuple[float, float]:
    lim = RedisLimiter(url)
    try:
        return await lim.spent(key), await lim.held(key)
    finally:
        await lim.close()


def test_a_budget_holds_under_400_concurrent_calls(pair, fake, redis_server):
    fake.behaviour = Behaviour(first_byte_delay=1.0)
    n0 = len(fake.requests)
    answers = burst(pair, BUDGET_KEY)
    ok = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code != 200]
    assert all(r.status_code == 429 for r in refused)
    assert {r.json()["error"]["code"] for r in refused} == {"insufficient_quota"}
    assert len(fake.requests) - n0 == len(ok)  # a refused call never went upstream
    key = shared("budget", Limits(budget_usd=BUDGET, budget_period="day"))
    spent, held = asyncio.run(_spent_and_held(redis_server.url, key))
    assert held == pytest.approx(0.0, abs=1e-9)  # every reservation settled
    assert spent == pytest.approx(len(ok) * CALL_USD)
    # Within one call's estimation error (0 here) above the budget, and no room below it
    # for one more call.
    assert BUDGET - CALL_USD < spent <= BUDGET + 1e-9
    # Both replicas refused calls: they count against one shared budget.
    assert {r.url.port for r in refused} == {g.port for g in pair}


def test_a_reservation_larger_than_what_is_left_gets_insufficient_quota(pair, fake, redis_server):
    fake.behaviour = Behaviour()
    n0 = len(fake.requests)
    big = call(pair[0], BIG_KEY, 200_000)
    assert big.status_code == 429, big.text
    assert big.json()["error"]["code"] == "insufficient_quota"
    assert big.headers["x-should-retry"] == "false"  # it will never fit this day
    assert len(fake.requests) == n0
    small = call(pair[1], BIG_KEY, 5)
    assert small.status_code == 200
    key = shared("big", Limits(budget_usd=BUDGET, budget_period="day"))
    spent, _ = asyncio.run(_spent_and_held(redis_server.url, key))
    assert spent == pytest.approx(CALL_USD)


def test_tpm_holds_under_400_concurrent_calls(pair, fake):
    fake.behaviour = Behaviour(first_byte_delay=1.0)
    t0 = time.monotonic()
    answers = burst(pair, TPM_KEY)
    elapsed = time.monotonic() - t0
    ok = sum(r.status_code == 200 for r in answers)
    assert {r.status_code for r in answers} == {200, 429}
    # A full bucket holds 10 calls' reservations; it refills TPM/60 tokens a second.
    refill = math.ceil(TPM / 60 * elapsed / CALL_TOKENS)
    assert TPM // CALL_TOKENS <= ok <= TPM // CALL_TOKENS + refill
