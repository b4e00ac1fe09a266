"""Leased limits (`gateway/access/lease.py`) against a real `redis-server`: replicas that
admit a busy key's calls from shares of its limits still hold the limits together, ask
Redis about once per share instead of once per call, go back to per-call scripts near the
limit, give back what a quiet lease holds, and the slots of a replica that died expire."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from gateway.access import lease as lease_mod
from gateway.access.keys import GatewayKey, Limits
from gateway.access.lease import leasable
from gateway.access.redis_limiter import RedisLimiter
from tests.gateway.access.test_access import key
from tests.redisproc import RedisServer


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as r:
        yield r


async def scripts_run(lim: RedisLimiter) -> int:
    """Script calls Redis has run since its stats were last reset."""
    info = await lim._client.call("INFO", "commandstats")  # parsed by redis-py
    return sum(int(info.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


async def level(lim: RedisLimiter, k: GatewayKey, what: str) -> float:
    """A bucket's level as Redis last wrote it (its refill since not counted)."""
    got = await lim._client.call("HGET", f"lgw:{{{k.key_id}}}:{what}", "l")
    return float(got) if got is not None else float("nan")


def test_which_keys_are_leased():
    assert leasable(Limits(rpm=6000, tpm=1_000_000, concurrency=64))
    assert leasable(Limits(concurrency=32))
    assert not leasable(Limits(rpm=100))  # a share of 6 calls: not worth holding
    assert not leasable(Limits(rpm=6000, concurrency=8))  # every limit must be large
    assert not leasable(Limits(rpm=6000, budget_usd=10.0))  # spend must be exact per call
    assert not leasable(Limits(rpm=6000, user_rpm=600))  # per end user: too many to lease
    assert not leasable(Limits())


async def test_replicas_hold_a_leased_limit_together_with_few_round_trips(
    redis_server: RedisServer,
):
    a, b = RedisLimiter(redis_server.url, "closed"), RedisLimiter(redis_server.url, "closed")
    k = key(rpm=1600)  # a share: 100 calls
    try:
        await a._client.call("CONFIG", "RESETSTAT")
        t0 = time.monotonic()
        # Far from the limit: 1,400 calls, in turns of 20 per replica, from leases.
        for _ in range(35):
            got = await asyncio.gather(*(lim.admit(k, "", 0) for lim in (a, b) for _ in range(20)))
            assert all(adm.ok and adm.lease is not None for adm in got)
        assert await scripts_run(a) <= 1400 // 100 + 2
        # On to the limit and past it: near it the takes are refused and calls go per call.
        later = [await lim.admit(k, "", 0) for _ in range(300) for lim in (a, b)]
        admitted = 1400 + sum(adm.ok for adm in later)
        slack = int(1600 * (time.monotonic() - t0) / 60) + 1  # the bucket's refill meanwhile
        assert 1600 - 1 <= admitted <= 1600 + slack
        refused = [adm for adm in later if not adm.ok]
        assert refused[-1].refusal == "rpm" and refused[-1].retry_after > 0
        assert any(not adm.ok for adm in later[0::2]) and any(not adm.ok for adm in later[1::2])
    finally:
        await a.close()
        await b.close()


async def test_near_the_limit_every_call_is_decided_by_redis(redis_server: RedisServer):
    lim = RedisLimiter(redis_server.url, "closed")
    k = key(rpm=600)  # a share: 37 calls, lent only while the bucket holds 74
    try:
        (now_s, now_us) = await lim._client.call("TIME")
        now = int(now_s) + int(now_us) / 1e6
        await lim._client.call("HSET", f"lgw:{{{k.key_id}}}:rpm", "l", "10", "t", repr(now))
        got = [await lim.admit(k, "", 0) for _ in range(12)]
        assert [adm.ok for adm in got[:10]] == [True] * 10
        assert all(adm.lease is None for adm in got)  # the take was refused: per call
        assert got[-1].refusal == "rpm" and got[-1].quota.requests[1] < 1
    finally:
        await lim.close()


async def test_a_quiet_lease_gives_back_what_it_holds_and_settles_its_debt(
    redis_server: RedisServer,
):
    lim = RedisLimiter(redis_server.url, "closed")
    k = key(rpm=1600, tpm=160_000, concurrency=64)  # shares: 100 calls, 10,000 tokens, 4 slots
    slots = f"lgw:{{{k.key_id}}}:slots"
    try:
        adm = await lim.admit(k, "", 100)
        assert adm.ok and adm.lease is not None
        assert await level(lim, k, "rpm") == pytest.approx(1500, abs=1)
        assert await level(lim, k, "tpm") == pytest.approx(150_000, abs=1)
        assert await lim._client.call("ZCARD", slots) == 4  # seen by every replica
        limit, remaining, _ = adm.quota.requests
        assert limit == 1600 and remaining == pytest.approx(1599, abs=1)
        # A call bigger than a share of the tokens is decided per call.
        big = await lim.admit(k, "", 20_000)
        assert big.ok and big.lease is None and big.slot not in ("", lease_mod.SLOTS)
        await lim.settle(big, 20_000, 0.0)
        await lim.settle(adm, 300, 0.0)  # used 200 more than reserved: the lease is in debt
        assert lim.leases.leased()[k.key_id] == (99.0, 10_000 - 300, 4, 0)
        await lim.leases.tick(time.monotonic() + 5)  # past the lease's life
        # Given back: 99 calls, the tokens left minus the debt, and every slot.
        assert await level(lim, k, "rpm") == pytest.approx(1600 - 2, abs=1)
        assert await level(lim, k, "tpm") == pytest.approx(160_000 - 20_000 - 300, abs=50)
        assert await lim._client.call("ZCARD", slots) == 0
        assert lim.leases.leased()[k.key_id] == (0.0, 0.0, 0, 0)
        await lim.leases.tick(time.monotonic() + 5)
        assert k.key_id not in lim.leases.leased()  # holding nothing: forgotten
    finally:
        await lim.close()


async def test_leased_slots_hold_the_concurrency_and_a_dead_replicas_expire(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(lease_mod, "SLOT_TTL", 1.0)
    monkeypatch.setattr(lease_mod, "LEASE_S", 0.2)
    alive, dead = RedisLimiter(redis_server.url, "closed"), RedisLimiter(redis_server.url, "closed")
    k = key(concurrency=32)  # a share: 2 slots, lent while the set has room for 4 more
    slots = f"lgw:{{{k.key_id}}}:slots"
    try:
        held = [await alive.admit(k, "", 0) for _ in range(3)]
        assert all(adm.ok for adm in held)
        assert await alive._client.call("ZCARD", slots) == 4  # two shares taken
        taken = await dead.admit(k, "", 0)
        assert taken.ok and taken.lease is not None
        assert dead.leases._tick is not None
        dead.leases._tick.cancel()  # the replica dies: nothing renews its slots
        # Per call, the set full: the other replica's leased slots count as calls in flight.
        assert await alive._client.call("ZCARD", slots) == 6
        await asyncio.sleep(2.5)  # past the slots' time: only renewed ones are left
        # Alive's tick dropped the slot it held spare; dead's are not pruned (not at the limit).
        assert await alive._client.call("ZCARD", slots) == 5
        (now_s, now_us) = await alive._client.call("TIME")
        now = repr(int(now_s) + int(now_us) / 1e6)
        live = ("ZCOUNT", slots, f"({now}", "+inf")
        assert await alive._client.call(*live) == 3  # alive's calls in flight, renewed
        for adm in held:
            await alive.settle(adm, 0, 0.0)
        await asyncio.sleep(0.6)  # the tick gives back the slots no longer used
        assert await alive._client.call(*live) == 0
        assert await alive._client.call("ZCARD", slots) == 2  # the dead replica's, expired
    finally:
        await alive.close()
        dead.leases._tick = None
        await dead._client.close()


async def test_a_lease_past_its_life_is_renewed_by_the_next_call(redis_server: RedisServer):
    lim = RedisLimiter(redis_server.url, "closed")
    k = key(concurrency=64)  # slots only: a renewal that takes nothing new is still granted
    try:
        first = await lim.admit(k, "", 0)
        assert first.lease is not None
        first.lease.expires = 0.0  # its life is over; it still holds 3 spare slots
        second = await lim.admit(k, "", 0)
        assert second.ok and second.lease is first.lease
        assert lim.leases.leased()[k.key_id] == (0.0, 0.0, 4, 2)
    finally:
        await lim.close()


async def test_redis_gone_a_lease_lasts_its_life_then_the_failure_mode_decides(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(lease_mod, "LEASE_S", 0.3)
    r = RedisServer().start()
    lim = RedisLimiter(r.url, "closed", timeout_s=0.2)
    k = key(rpm=1600)
    try:
        assert (await lim.admit(k, "", 0)).lease is not None
        r.stop()
        assert (await lim.admit(k, "", 0)).ok  # what the lease holds is this replica's
        await asyncio.sleep(0.4)  # its life is over: the next take fails
        refused = await lim.admit(k, "", 0)
        assert refused.refusal == "limiter_unavailable" and lim.failures >= 1
        r.start()
        lim._down_until = 0.0  # skip the one-second pause after a failure
        for lease in lim.leases._leases.values():
            lease.refused_until = 0.0  # ... and the lease's
        back = await lim.admit(k, "", 0)
        assert back.ok and back.lease is not None
    finally:
        await lim.close()
        r.__exit__(None, None, None)


async def test_leases_off_every_call_is_checked_in_redis(redis_server: RedisServer):
    lim = RedisLimiter(redis_server.url, "closed", leases=False)  # auth.redis_leases: false
    k = key(rpm=1600)
    try:
        await lim._client.call("CONFIG", "RESETSTAT")
        got = [await lim.admit(k, "", 0) for _ in range(5)]
        assert all(a.ok and a.lease is None for a in got)
        assert await scripts_run(lim) == 5
        assert await level(lim, k, "rpm") == pytest.approx(1600 - 5, abs=1)
    finally:
        await lim.close()


async def test_no_slots_are_leased_near_the_concurrency_limit(redis_server: RedisServer):
    lim = RedisLimiter(redis_server.url, "closed")
    k = key(concurrency=32)  # a share: 2 slots, lent while the set has room for 4
    slots = f"lgw:{{{k.key_id}}}:slots"
    try:
        (now_s, _) = await lim._client.call("TIME")
        busy = [x for i in range(29) for x in (int(now_s) + 600, f"other{i}")]
        await lim._client.call("ZADD", slots, *busy)  # other replicas' calls in flight
        got = [await lim.admit(k, "", 0) for _ in range(4)]
        assert [a.ok for a in got] == [True, True, True, False]  # exactly to the limit
        assert all(a.lease is None for a in got) and got[-1].refusal == "concurrency"
        assert await lim._client.call("ZCARD", slots) == 32
    finally:
        await lim.close()
