"""Gateway keys and limits, part by part: the secret and its hash, the `auth:` section, the
model rule, the browser guard, the answers, the two limiters (in memory and through a real
`redis-server`, held to the same tests), and the key table on real chDB."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from gateway.access import admin
from gateway.access.answers import AccessDenied, duration, ratelimit_headers, refused
from gateway.access.config import parse_auth
from gateway.access.gate import Gate
from gateway.access.keys import (
    GatewayKey,
    Limits,
    hash_secret,
    new_secret,
    presented_secret,
)
from gateway.access.keystore import KeyStore
from gateway.access.limiter import Admission, MemoryLimiter, Quota
from gateway.access.origin import OriginGuard
from gateway.access.policy import ModelRule, period_id
from gateway.access.redis_limiter import RedisLimiter
from gateway.access.scripts import RedisScripts, Script
from gateway.errors import ConfigError, LimiterUnavailable
from gateway.recording.record import CallRecord, encode_line
from gateway.recording.store import migrate
from gateway.recording.store.chdb_store import ChdbStore
from tests.redisproc import RedisServer


def key(**limits: object) -> GatewayKey:
    secret = new_secret()
    return GatewayKey(
        key_id="key_" + secret[-8:], name="k", key_hash=hash_secret(secret),
        limits=Limits(**limits),  # type: ignore[arg-type]
    )  # fmt: skip


# -- the secret -----------------------------------------------------------------------------
def test_secrets_are_prefixed_random_and_stored_only_as_hash():
    a, b = new_secret(), new_secret()
    assert a.startswith("lgw_") and len(a) >= 40 and a != b
    h = hash_secret(a)
    assert h.startswith("sha256:") and len(h) == 7 + 64 and a[4:] not in h
    assert hash_secret(a) == h and hash_secret(b) != h


def test_the_key_is_read_where_each_sdk_sends_it():
    s = new_secret()
    assert presented_secret(f"Bearer {s}".encode(), b"", b"") == s  # OpenAI
    assert presented_secret(b"", s.encode(), b"") == s  # Anthropic
    assert presented_secret(b"", b"", s.encode()) == s  # Azure
    assert presented_secret(b"Bearer sk-provider-key", b"", b"") is None
    assert presented_secret(b"", b"sk-ant-xyz", b"") is None


# -- the auth: section ----------------------------------------------------------------------
def test_auth_section_parses_keys_by_secret_or_hash():
    secret = new_secret()
    cfg = parse_auth({
        "require_key": True,
        "redis_url": "redis://r:6379/0",
        "allowed_origins": ["https://app.example/"],
        "keys": [
            {"name": "ci", "key": secret, "models": ["gpt-4o*"], "rpm": 5, "budget_usd": 2,
             "budget_period": "day"},
            {"name": "ops", "hash": hash_secret(new_secret()), "app": "ops"},
        ],
    })  # fmt: skip
    assert cfg.require_key and cfg.redis_url == "redis://r:6379/0"
    assert cfg.allowed_origins == ("https://app.example",)
    ci, ops = cfg.keys
    assert ci.key_id == "cfg_ci" and ci.key_hash == hash_secret(secret)
    assert ci.limits == Limits(models=("gpt-4o*",), rpm=5, budget_usd=2.0, budget_period="day")
    assert ops.app == "ops" and ops.limits == Limits()
    assert secret not in repr(cfg)


@pytest.mark.parametrize(
    ("data", "bad_key"),
    [
        ({"require_key": "yes"}, "auth.require_key"),
        ({"redis_failure": "maybe"}, "auth.redis_failure"),
        ({"redis_leases": "sometimes"}, "auth.redis_leases"),
        ({"redis_url": "http://x"}, "auth.redis_url"),
        ({"allowed_origins": ["app.example"]}, "auth.allowed_origins[0]"),
        ({"keys": [{"name": "a", "key": "lgw_" + "x" * 40, "rmp": 5}]}, "auth.keys[0].rmp"),
        ({"keys": [{"name": "a", "key": "lgw_" + "x" * 40, "rpm": "5/min"}]}, "auth.keys[0].rpm"),
        ({"keys": [{"name": "a", "key": "lgw_" + "x" * 40, "rpm": -1}]}, "auth.keys[0].rpm"),
        ({"keys": [{"key": "lgw_" + "x" * 40}]}, "auth.keys[0].name"),
        ({"keys": [{"name": "a"}]}, "auth.keys[0]"),
        ({"keys": [{"name": "a", "hash": "md5:abc"}]}, "auth.keys[0].hash"),
        ({"keys": [{"name": "a", "key": "sk-not-a-gateway-key-0123456789abcdef"}]},
         "auth.keys[0].key"),
        ({"keys": [{"name": "a", "key": "lgw_" + "x" * 40, "budget_period": "week"}]},
         "auth.keys[0].budget_period"),
        ({"keys": [{"name": "a", "key": "lgw_" + "x" * 40},
                   {"name": "a", "key": "lgw_" + "y" * 40}]}, "auth.keys[1].id"),
    ],
)  # fmt: skip
def test_auth_section_errors_name_the_bad_key(data: dict, bad_key: str):
    with pytest.raises(ConfigError) as e:
        parse_auth(data)
    assert e.value.key == bad_key, str(e.value)
    assert "sk-not-a-gateway-key" not in str(e.value)  # a secret is never echoed


# -- models, Host and Origin ----------------------------------------------------------------
def test_model_rule_exact_and_globs():
    rule = ModelRule(("gpt-4o-mini", "claude-3-5-*"))
    assert rule.allows("gpt-4o-mini") and rule.allows("claude-3-5-haiku")
    assert not rule.allows("gpt-4o") and not rule.allows("claude-opus-4")
    assert ModelRule(()).allows("anything")


def test_origin_guard_refuses_foreign_pages_and_rebound_hosts():
    g = OriginGuard(("https://app.example",), ("llm.example.com", "*.corp.example"))
    ok = [
        ("127.0.0.1:8080", ""),
        ("localhost:8080", ""),
        ("[::1]:8080", ""),
        ("10.0.0.5", ""),
        ("llm-gateway:8080", ""),
        ("gw.ns.svc.cluster.local", ""),
        ("llm.example.com", ""),
        ("a.corp.example:443", ""),
        ("127.0.0.1:8080", "https://app.example"),
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
    ]
    for host, origin in ok:
        assert g.check(host, origin) is None, (host, origin)
    csrf = g.check("127.0.0.1:8080", "http://attacker.example")
    assert csrf is not None and csrf.status == 403 and csrf.outcome == "refused_origin"
    rebound = g.check("attacker.example:8080", "http://attacker.example:8080")
    assert rebound is not None and rebound.status == 403 and rebound.outcome == "refused_host"
    assert g.check("attacker.example", "") is not None
    assert g.check("127.0.0.1", "null") is not None
    assert OriginGuard(("*",), ("*",)).check("attacker.example", "http://x.example") is None


def test_durations_and_headers_read_like_openai():
    assert [duration(x) for x in (0.02, 1.5, 360)] == ["20ms", "1.5s", "6m0s"]
    k = key(rpm=10)
    adm = Admission(ok=False, key=k, refusal="rpm", retry_after=2.2,
                    quota=Quota(requests=(10, 0.3, 54.0)))  # fmt: skip
    e = refused(adm)
    h = dict(e.headers)
    assert e.status == 429 and json.loads(e.body())["error"]["code"] == "rate_limit_exceeded"
    assert h[b"retry-after"] == b"3" and h[b"retry-after-ms"] == b"2200"
    assert h[b"x-ratelimit-limit-requests"] == b"10"
    assert h[b"x-ratelimit-remaining-requests"] == b"0"
    assert h[b"x-ratelimit-reset-requests"] == b"54s"
    assert ratelimit_headers(Quota()) == []


# -- the limiters, held to the same tests ---------------------------------------------------
@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as r:
        yield r


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[MemoryLimiter | RedisLimiter]:
    if request.param == "memory":
        yield MemoryLimiter()
        return
    r: RedisServer = request.getfixturevalue("redis_server")
    lim = RedisLimiter(r.url, "closed")
    yield lim
    await lim.close()


async def test_rpm_admits_the_limit_then_refuses_with_a_wait(limiter):
    k = key(rpm=3)
    results = [await limiter.admit(k, "", 0) for _ in range(5)]
    assert [a.ok for a in results] == [True, True, True, False, False]
    last = results[-1]
    assert last.refusal == "rpm" and 0 < last.retry_after <= 20.0
    limit, remaining, reset = last.quota.requests
    assert limit == 3 and remaining < 1 and 0 < reset <= 60
    assert results[0].quota.requests[1] == pytest.approx(2, abs=0.01)


async def test_a_refusal_charges_nothing(limiter):
    k = key(rpm=2, tpm=100)
    big = await limiter.admit(k, "", 90)
    assert big.ok
    refused_tpm = await limiter.admit(k, "", 50)
    assert not refused_tpm.ok and refused_tpm.refusal == "tpm"
    # The refused call did not take a request: one is left.
    assert (await limiter.admit(k, "", 5)).ok
    assert (await limiter.admit(k, "", 1)).refusal == "rpm"


async def test_tpm_is_reconciled_with_reported_usage(limiter):
    k = key(tpm=1000)
    a = await limiter.admit(k, "", 100)
    assert a.ok and a.quota.tokens[1] == pytest.approx(900, abs=1)
    await limiter.settle(a, 1500, 0.0)  # the call used far more than estimated: in debt
    b = await limiter.admit(k, "", 10)
    assert not b.ok and b.refusal == "tpm" and b.retry_after > 10


async def test_concurrency_slots_are_given_back(limiter):
    k = key(concurrency=2)
    a, b = await limiter.admit(k, "", 0), await limiter.admit(k, "", 0)
    c = await limiter.admit(k, "", 0)
    assert a.ok and b.ok and not c.ok and c.refusal == "concurrency"
    await limiter.settle(a, 0, 0.0)
    assert (await limiter.admit(k, "", 0)).ok


async def test_budget_runs_out_after_spend_and_seeding_counts(limiter):
    k = key(budget_usd=1.0, budget_period="day")
    await limiter.seed_spend(k, 0.6)
    await limiter.seed_spend(k, 0.0)  # a later seed does not overwrite what is known
    a = await limiter.admit(k, "", 0)
    assert a.ok and a.period == period_id("day")
    await limiter.settle(a, 0, 0.5)
    assert await limiter.spent(k) == pytest.approx(1.1)
    b = await limiter.admit(k, "", 0)
    assert not b.ok and b.refusal == "budget"
    e = refused(b)
    assert e.status == 429 and json.loads(e.body())["error"]["code"] == "insufficient_quota"
    assert (b"x-should-retry", b"false") in e.headers


async def test_budget_reservations_hold_room_until_settled(limiter):
    k = key(budget_usd=1.0, budget_period="day")
    a = await limiter.admit(k, "", 10, 0.4)
    b = await limiter.admit(k, "", 10, 0.4)
    assert a.ok and b.ok
    # 0.8 reserved: a third 0.4 does not fit, though nothing is spent yet
    c = await limiter.admit(k, "", 10, 0.4)
    assert not c.ok and c.refusal == "budget" and c.held and c.retry_after == 1.0
    e = refused(c)
    assert e.status == 429 and json.loads(e.body())["error"]["code"] == "insufficient_quota"
    assert (b"x-should-retry", b"false") not in e.headers  # the room may come back
    assert (await limiter.admit(k, "", 10, 0.2)).ok  # what is left still fits a smaller one
    await limiter.settle(a, 10, 0.1)  # cost less than reserved: the rest comes back
    assert (await limiter.admit(k, "", 10, 0.3)).ok  # 0.1 spent + 0.6 held + 0.3
    assert await limiter.spent(k) == pytest.approx(0.1)


async def test_a_reservation_larger_than_what_is_left_is_insufficient_quota(limiter):
    k = key(budget_usd=1.0, budget_period="day")
    await limiter.seed_spend(k, 0.7)
    big = await limiter.admit(k, "", 10, 0.5)
    assert not big.ok and big.refusal == "budget" and not big.held
    assert (b"x-should-retry", b"false") in refused(big).headers
    assert (await limiter.admit(k, "", 10, 0.25)).ok


async def test_tpm_takes_the_whole_reservation(limiter):
    k = key(tpm=100)
    a = await limiter.admit(k, "", 60)  # input + output reserved
    assert a.ok and not (await limiter.admit(k, "", 60)).ok
    await limiter.settle(a, 20, 0.0)  # used a third: 40 tokens come back
    assert (await limiter.admit(k, "", 60)).ok


async def test_redis_reservation_of_a_dead_replica_expires(redis_server: RedisServer):
    dead, alive = RedisLimiter(redis_server.url), RedisLimiter(redis_server.url)
    k = key(budget_usd=1.0, budget_period="day")
    try:
        held = await dead.admit(k, "", 10, 0.9, hold_s=1.0)  # then the replica dies
        assert held.ok and await alive.held(k) == pytest.approx(0.9)
        assert not (await alive.admit(k, "", 10, 0.5)).ok
        await asyncio.sleep(1.2)  # past the reservation's deadline
        assert (await alive.admit(k, "", 10, 0.5)).ok
        assert await alive.held(k) == pytest.approx(0.5)
        await dead.settle(held, 10, 0.1)  # a late settle releases nothing twice
        assert await alive.held(k) == pytest.approx(0.5)
        assert await alive.spent(k) == pytest.approx(0.1)
    finally:
        await dead.close()
        await alive.close()


async def test_user_limits_are_per_end_user(limiter):
    k = key(user_rpm=1)
    assert (await limiter.admit(k, "alice", 0)).ok
    assert (await limiter.admit(k, "alice", 0)).refusal == "user_rpm"
    assert (await limiter.admit(k, "bob", 0)).ok


async def test_redis_counters_are_shared_by_replicas(redis_server: RedisServer):
    a, b = RedisLimiter(redis_server.url), RedisLimiter(redis_server.url)
    k = key(rpm=4, budget_usd=1.0)
    try:
        admitted = [await (a if i % 2 else b).admit(k, "", 0) for i in range(8)]
        assert sum(x.ok for x in admitted) == 4
        await a.settle(admitted[0], 0, 2.0)
        assert await b.spent(k) == pytest.approx(2.0)
    finally:
        await a.close()
        await b.close()


async def test_redis_settle_is_written_before_it_returns(redis_server: RedisServer, caplog):
    """A settle is not waited for (no round trip before the answer's last bytes), but it
    is on its way to Redis when `settle` returns: the client's next call, through another
    replica, finds the slot and the tokens given back. The scripts are flushed first, so
    the settle's first use of its script (a NOSCRIPT retry would reorder it) is covered.
    The next call comes a client's round trip later (5 ms here; within microseconds, the
    kernel may deliver two connections' bytes out of order)."""
    flush = RedisLimiter(redis_server.url)
    await flush._client.call("SCRIPT", "FLUSH")
    await flush.close()
    a, b = RedisLimiter(redis_server.url, "closed"), RedisLimiter(redis_server.url, "closed")
    k = key(concurrency=1, tpm=1000)
    try:
        for _ in range(20):
            adm = await a.admit(k, "", 500)
            assert adm.ok
            assert (await b.admit(k, "", 1)).refusal == "concurrency"
            await a.settle(adm, 0, 0.0)  # nothing used: the 500 tokens come back too
            line = a._client._line
            assert line is not None and not line._pending  # written, not just queued
            await asyncio.sleep(0.005)
            nxt = await b.admit(k, "", 400)
            assert nxt.ok, nxt.refusal
            await b.settle(nxt, 0, 0.0)
        assert a.failures == b.failures == 0
    finally:
        await a.close()  # with settles still unanswered: no failure to report
        await b.close()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_redis_slot_of_a_replica_that_died_mid_call_expires(redis_server: RedisServer):
    """A slot never given back (its replica died mid-call) holds the concurrency until
    its time is up, then no longer: the admission that finds the key at its limit drops
    the expired slots first."""
    lim = RedisLimiter(redis_server.url, "closed")
    k = key(concurrency=2)
    slots = f"lgw:{{{k.key_id}}}:slots"
    try:
        (now_s, now_us) = await lim._client.call("TIME")
        now = int(now_s) + int(now_us) / 1e6
        await lim._client.call("ZADD", slots, now + 600, "alive", now - 1, "dead")
        first = await lim.admit(k, "", 0)
        assert first.ok, first.refusal  # the dead replica's slot no longer counts
        assert (await lim.admit(k, "", 0)).refusal == "concurrency"  # the live one does
        members = await lim._client.call("ZRANGE", slots, 0, -1)
        assert sorted(members) == sorted([b"alive", first.slot.encode()])
    finally:
        await lim.close()


async def test_redis_admission_left_by_its_caller_gives_back_what_it_took(
    redis_server: RedisServer,
):
    """A client that leaves while its call waits for Redis's admission: the script runs
    anyway (it is on its way); what it took (the slot, the tokens) is given back, not held
    for the slot's 15 minutes. One that was refused gives back nothing of anyone else's."""
    lim = RedisLimiter(redis_server.url, "closed")
    k = key(concurrency=1, tpm=1000)
    slots = f"lgw:{{{k.key_id}}}:slots"
    try:
        for _ in range(3):
            waiting = asyncio.create_task(lim.admit(k, "", 600))
            await asyncio.sleep(0)  # queued for the turn's write, not yet answered
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            for _ in range(100):
                if not lim._undoing and await lim._client.call("ZCARD", slots) == 0:
                    break
                await asyncio.sleep(0.01)
            assert await lim._client.call("ZCARD", slots) == 0
        held = await lim.admit(k, "", 600)  # the slot and the 600 tokens are free again
        assert held.ok, held.refusal
        refused = asyncio.create_task(lim.admit(k, "", 1))
        await asyncio.sleep(0)
        refused.cancel()
        with pytest.raises(asyncio.CancelledError):
            await refused
        await asyncio.sleep(0.05)
        assert await lim._client.call("ZCARD", slots) == 1  # still the admitted call's
        again = await lim.admit(k, "", 100)
        assert again.refusal == "concurrency"
        await lim.settle(held, 600, 0.0)
        after = await lim.admit(k, "", 500)  # 1000 - 600 used: 400 left (+ refill)
        assert not after.ok and after.refusal == "tpm"
    finally:
        await lim.close()


async def test_redis_calls_of_one_turn_go_in_one_script_call(redis_server: RedisServer):
    """The admissions of one key made in one turn of the event loop go to Redis as one
    script call, and so do their settlements; each call is still checked and charged in
    order: the concurrency, the RPM and the TPM hold to the call."""
    lim = RedisLimiter(redis_server.url, "closed")
    k = key(concurrency=3, rpm=7, tpm=1000)
    slots = f"lgw:{{{k.key_id}}}:slots"
    try:
        await lim.settle(await lim.admit(k, "", 0), 0, 0.0)  # the line to Redis is open
        await lim._client.call("CONFIG", "RESETSTAT")
        first = await asyncio.gather(*(lim.admit(k, "", 300) for _ in range(5)))
        assert [a.refusal for a in first] == ["", "", "", "concurrency", "concurrency"]
        # each admitted call saw the ones before it: one request and 300 tokens fewer
        assert [a.quota.requests[1] for a in first[:3]] == pytest.approx([5, 4, 3], abs=0.01)
        assert [a.quota.tokens[1] for a in first[:3]] == pytest.approx([700, 400, 100], abs=1)
        stats = await lim._client.call("INFO", "commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 1
        await asyncio.gather(*(lim.settle(a, 100, 0.0) for a in first[:3]))  # 200 back each
        for _ in range(100):
            stats = await lim._client.call("INFO", "commandstats")
            if stats["cmdstat_evalsha"]["calls"] == 2:
                break
            await asyncio.sleep(0.01)
        assert stats["cmdstat_evalsha"]["calls"] == 2  # the three settlements: one more call
        assert await lim._client.call("ZCARD", slots) == 0
        second = await asyncio.gather(*(lim.admit(k, "", 300) for _ in range(3)))
        # 100 + 3 x 200 = 700 tokens left: two calls of 300, and the third is refused by
        # the TPM (not by the RPM: one request is left)
        assert [a.refusal for a in second] == ["", "", "tpm"]
        assert second[1].quota.requests[1] == pytest.approx(1, abs=0.01)
        assert second[2].quota.tokens[1] == pytest.approx(100, abs=1)
    finally:
        await lim.close()


async def test_redis_batch_with_a_caller_that_left_and_a_redis_that_went_away():
    """One caller of a turn's batch leaves: the others get their own answers, and what the
    one that left took is given back. Redis gone: every call of the batch fails, each one
    counted."""
    r = RedisServer().start()
    lim = RedisLimiter(r.url, "closed", timeout_s=0.5)
    k = key(concurrency=3)
    slots = f"lgw:{{{k.key_id}}}:slots"
    try:
        await lim.settle(await lim.admit(k, "", 0), 0, 0.0)  # the line to Redis is open
        calls = [asyncio.create_task(lim.admit(k, "", 0)) for _ in range(3)]
        await asyncio.sleep(0)  # all three in one batch, queued, not yet answered
        calls[1].cancel()
        first, third = await calls[0], await calls[2]
        assert first.ok and third.ok and first.slot != third.slot
        with pytest.raises(asyncio.CancelledError):
            await calls[1]
        for _ in range(100):
            if not lim._undoing and await lim._client.call("ZCARD", slots) == 2:
                break
            await asyncio.sleep(0.01)
        members = await lim._client.call("ZRANGE", slots, 0, -1)
        assert sorted(members) == sorted([first.slot.encode(), third.slot.encode()])
        r.stop()
        failed = await asyncio.gather(*(lim.admit(k, "", 0) for _ in range(4)))
        assert [a.refusal for a in failed] == ["limiter_unavailable"] * 4
        assert lim.failures == 4
    finally:
        await lim.close()
        r.__exit__(None, None, None)


async def test_redis_and_memory_limiters_decide_alike_on_calls_of_one_turn(
    redis_server: RedisServer,
):
    """Random turns of calls (tokens, costs, settlements) against both limiters: every
    admission gets the same answer. Tokens and costs are multiples of 10 and 0.25, so the
    buckets' refill over the test (under 10 tokens) cannot tip a decision either way."""
    import random

    rnd = random.Random(24)
    for case in range(12):
        limits = {
            "rpm": rnd.choice([0, 3, 6]),
            "tpm": rnd.choice([0, 500, 1000]),
            "concurrency": rnd.choice([0, 2, 4]),
            "budget_usd": rnd.choice([0.0, 1.0, 2.0]),
        }
        k = key(**limits)
        mem, red = MemoryLimiter(), RedisLimiter(redis_server.url, "closed")
        try:
            await red.settle(await red.admit(key(), "", 0), 0, 0.0)  # the line is open
            open_mem: list[Admission] = []
            open_red: list[Admission] = []
            for _turn in range(4):
                calls = [(10 * rnd.randint(0, 30), 0.25 * rnd.randint(0, 3))
                         for _ in range(rnd.randint(1, 6))]  # fmt: skip
                got_mem = await asyncio.gather(*(mem.admit(k, "", t, c) for t, c in calls))
                got_red = await asyncio.gather(*(red.admit(k, "", t, c) for t, c in calls))
                assert [(a.ok, a.refusal, a.held) for a in got_red] == [
                    (a.ok, a.refusal, a.held) for a in got_mem
                ], (case, limits, calls)
                open_mem += [a for a in got_mem if a.ok]
                open_red += [a for a in got_red if a.ok]
                done = rnd.sample(range(len(open_mem)), rnd.randint(0, len(open_mem)))
                used = [(10 * rnd.randint(0, 30), 0.25 * rnd.randint(0, 2)) for _ in done]
                await asyncio.gather(*(mem.settle(open_mem[i], t, c)
                                       for i, (t, c) in zip(done, used, strict=True)))  # fmt: skip
                await asyncio.gather(*(red.settle(open_red[i], t, c)
                                       for i, (t, c) in zip(done, used, strict=True)))  # fmt: skip
                open_mem = [a for i, a in enumerate(open_mem) if i not in done]
                open_red = [a for i, a in enumerate(open_red) if i not in done]
                await asyncio.sleep(0.005)  # the settlements reach Redis first
            if limits["budget_usd"]:
                assert await red.spent(k) == pytest.approx(await mem.spent(k))
        finally:
            await red.close()


async def test_redis_settle_that_fails_is_counted(redis_server: RedisServer, caplog):
    lim = RedisLimiter(redis_server.url, "open")
    k = key(concurrency=1)
    try:
        adm = await lim.admit(k, "", 0)
        assert adm.ok
        # The slots' key turned into a string: Redis answers the settle with an error.
        await lim._client.call("SET", f"lgw:{{{k.key_id}}}:slots", "x")
        await lim.settle(adm, 0, 0.0)
        assert lim.failures == 0  # not waited for: the reply is still on its way
        for _ in range(50):
            if lim.failures:
                break
            await asyncio.sleep(0.01)
        assert lim.failures == 1
        assert any(getattr(r, "during", "") == "settle" for r in caplog.records)
    finally:
        await lim.close()


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_redis_unreachable_follows_the_failure_mode(mode: str, caplog):
    dead = RedisServer()  # never started: nothing listens on its port
    lim = RedisLimiter(dead.url, mode, timeout_s=0.2)
    try:
        k = key(rpm=1)
        first, second = await lim.admit(k, "", 0), await lim.admit(k, "", 0)
        assert first.ok == second.ok == (mode == "open")
        if mode == "closed":
            e = refused(first)
            assert e.status == 503 and first.refusal == "limiter_unavailable"
        assert lim.failures == 2
        assert any("redis unreachable" in r.getMessage() for r in caplog.records)
    finally:
        await lim.close()


async def test_redis_outage_and_return():
    r = RedisServer().start()
    lim = RedisLimiter(r.url, "closed", timeout_s=0.2)
    k = key(rpm=100)
    try:
        assert (await lim.admit(k, "", 0)).ok
        r.stop()
        assert (await lim.admit(k, "", 0)).refusal == "limiter_unavailable"
        r.start()
        lim._down_until = 0.0  # skip the one-second pause after a failure
        assert (await lim.admit(k, "", 0)).ok
    finally:
        await lim.close()
        r.__exit__(None, None, None)


# -- the key table on real chDB -------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    s = ChdbStore(str(tmp_path_factory.mktemp("keys") / "db"), "keys")
    migrate(s)
    yield s
    s.close()


def test_create_list_rotate_revoke_through_the_table(store: ChdbStore):
    ks = KeyStore()
    secret, k = admin.create(store, "team-a", app="search", models=["gpt-4o*"], rpm=5)
    assert ks.refresh(store.query) == [ks.lookup(secret)]
    found = ks.lookup(secret)
    assert found is not None and found.key_id == k.key_id and found.app == "search"
    assert found.limits.rpm == 5 and found.limits.models == ("gpt-4o*",)
    assert ks.lookup(new_secret()) is None
    with pytest.raises(admin.KeyCommandError):
        admin.create(store, "team-a")  # names are unique among live keys

    new, rotated = admin.rotate(store, "team-a")
    assert rotated.key_id == k.key_id
    ks.refresh(store.query)
    assert ks.lookup(secret) is None and ks.lookup(new).key_id == k.key_id  # type: ignore[union-attr]

    admin.revoke(store, k.key_id)
    ks.refresh(store.query)
    assert ks.lookup(new) is None
    assert [x.name for x in admin.list_keys(store)] == []
    listed = admin.list_keys(store, include_revoked=True)
    assert [(x.key_id, x.revoked) for x in listed] == [(k.key_id, True)]
    raw = store.query("SELECT * FROM llm_gateway_keys FORMAT JSONEachRow")
    assert secret.encode() not in raw and new.encode() not in raw


def test_an_unreadable_store_keeps_the_keys_last_read(store: ChdbStore):
    ks = KeyStore()
    secret, _ = admin.create(store, "kept")
    ks.refresh(store.query)

    def broken(sql: str) -> bytes:
        raise OSError("store down")

    assert ks.refresh(broken) == [] and ks.refresh_errors == 1
    assert ks.lookup(secret) is not None
    admin.revoke(store, "kept")


async def test_gate_identifies_refuses_and_seeds_spend_from_llm_calls(store: ChdbStore):
    secret = new_secret()
    cfg = parse_auth(
        {
            "require_key": True,
            "keys": [
                {"name": "cfgkey", "key": secret, "models": ["gpt-4o-mini"], "budget_usd": 1.0}
            ],
        }
    )
    gate = Gate(cfg)
    k = gate.identify("127.0.0.1:1", "", f"Bearer {secret}".encode(), b"", b"")
    assert k is not None and k.key_id == "cfg_cfgkey"
    for auth in (b"", b"Bearer " + new_secret().encode()):
        with pytest.raises(AccessDenied) as e:
            gate.identify("127.0.0.1:1", "", auth, b"", b"")
        assert e.value.status == 401
    with pytest.raises(AccessDenied) as e:
        await gate.admit(k, "gpt-4o", "", {"model": "gpt-4o"})
    assert e.value.status == 403
    assert gate.refusals == {"refused_key": 2, "refused_model": 1}

    # Spend already recorded this month counts against the budget after a restart.
    row = CallRecord(request_id="seed-1", started_at=time.time(), cost_usd=1.25)
    line = json.loads(encode_line(row))
    line.update(key_id="cfg_cfgkey", key_name="cfgkey")
    store.insert("llm_calls", (json.dumps(line) + "\n").encode())
    await gate.refresh(store.query)
    with pytest.raises(AccessDenied) as e:
        await gate.admit(k, "gpt-4o-mini", "", {"model": "gpt-4o-mini"})
    assert e.value.status == 429 and e.value.code == "insufficient_quota"
    await gate.close()


def test_keys_cli_json_output(store: ChdbStore, capsys):
    ns = argparse.Namespace(
        keys_cmd="create", json=True, name="cli", app="", team="", models="gpt-4o-mini, claude-*",
        rpm=2, tpm=0, concurrency=0, user_rpm=0, user_tpm=0, budget_usd=3.0, budget_period="day",
    )  # fmt: skip
    assert admin.run(ns, store) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["key"].startswith("lgw_") and out["limits"]["models"] == ["gpt-4o-mini", "claude-*"]
    assert admin.run(argparse.Namespace(keys_cmd="list", json=True, all=False), store) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in listed] == ["cli"] and "key" not in listed[0]
    assert admin.run(argparse.Namespace(keys_cmd="revoke", json=True, key="nope"), store) == 2


# -- the Redis client (redis-py): scripts, auth, database, reconnects -----------------------
async def test_redis_scripts_auth_db_noscript_and_reconnect():
    with RedisServer("--requirepass", "s3cret") as r:
        c = RedisScripts(f"redis://:s3cret@127.0.0.1:{r.port}/3")
        assert await c.call("SET", "k", 1.5)
        assert await c.call("GET", "k") == b"1.5"
        assert await c.call("DBSIZE") == 1  # database 3 of the URL, alone in it
        script = Script("return {KEYS[1], ARGV[1], 42}")
        assert await c.run(script, ["a"], ["b"]) == [b"a", b"b", 42]
        await c.call("SCRIPT", "FLUSH")  # forgotten scripts are sent again
        assert await c.run(script, ["x"], [1]) == [b"x", b"1", 42]
        with pytest.raises(LimiterUnavailable):
            await c.call("NOSUCHCOMMAND")
        with pytest.raises(LimiterUnavailable):  # an error reply inside a script
            await c.run(Script("return redis.error_reply('nope')"), [], [])
        assert await c.call("PING")  # the connection survives an error reply
        r.stop()
        with pytest.raises(LimiterUnavailable):
            await c.call("PING")
        r.start()
        assert await c.call("GET", "k") is None  # reconnected (nothing was persisted)
        await c.close()
        bad = RedisScripts(f"redis://:wrong@127.0.0.1:{r.port}/0")
        with pytest.raises(LimiterUnavailable):
            await bad.call("PING")
        await bad.close()


async def test_calls_of_one_loop_turn_share_a_pipeline_and_each_gets_its_answer():
    with RedisServer() as r:
        c = RedisScripts(r.url, mode="standalone")
        echo = Script("return KEYS[1] .. ':' .. ARGV[1]")
        await c.call("CONFIG", "RESETSTAT")
        got = await asyncio.gather(*(c.run(echo, [f"k{i}"], [i]) for i in range(50)))
        assert got == [f"k{i}:{i}".encode() for i in range(50)]
        stats = await c.call("INFO", "commandstats")
        # Redis did not know the script: its body was sent once (EVAL or SCRIPT LOAD), every
        # other call went by SHA
        sent_whole = sum(stats.get(k, {}).get("calls", 0)
                         for k in ("cmdstat_eval", "cmdstat_script|load"))  # fmt: skip
        assert sent_whole == 1 and stats["cmdstat_evalsha"]["calls"] >= 50
        # one pipeline on one connection, not a connection per call
        clients = await c.call("CLIENT", "LIST")
        assert clients.count(b"cmd=") <= 2
        await c.close()


async def test_a_redis_that_does_not_answer_in_time_fails_the_call():
    with RedisServer("--enable-debug-command", "yes") as r:
        c = RedisScripts(r.url, timeout_s=0.2)
        await c.call("SET", "k", "v")
        slow = asyncio.create_task(RedisScripts(r.url).call("DEBUG", "SLEEP", "0.5"))
        await asyncio.sleep(0.05)
        with pytest.raises(LimiterUnavailable):
            await c.call("GET", "k")
        await slow
        assert await c.call("GET", "k") == b"v"  # answers again once Redis does
        await c.close()


async def test_a_script_redis_does_not_answer_in_time_fails_and_the_next_one_is_answered():
    with RedisServer("--enable-debug-command", "yes") as r:
        c = RedisScripts(r.url, timeout_s=0.2, mode="standalone")
        echo = Script("return ARGV[1]")
        assert await c.run(echo, ["k"], ["a"]) == b"a"
        slow = asyncio.create_task(RedisScripts(r.url).call("DEBUG", "SLEEP", "0.5"))
        await asyncio.sleep(0.05)
        with pytest.raises(LimiterUnavailable):
            await c.run(echo, ["k"], ["b"])
        await slow
        assert await c.run(echo, ["k"], ["c"]) == b"c"  # a new connection, once Redis answers
        await c.call("SCRIPT", "FLUSH")
        assert await asyncio.gather(*(c.run(echo, ["k"], [i]) for i in range(5))) == [
            str(i).encode() for i in range(5)
        ]  # forgotten scripts are loaded again and every call answered
        await c.close()


def test_reservations_read_max_tokens_else_the_configured_output():
    from gateway.access.reserve import ReserveConfig, Reserver

    r = Reserver(ReserveConfig(output_tokens=100, models={"claude-*": 4000}))
    msgs = [{"role": "user", "content": "x" * 40}]  # 10 tokens of text, 4 of framing
    assert r.tokens({"messages": msgs, "max_tokens": 7}, "gpt-4o", "chat") == (14, 7)
    assert r.tokens({"messages": msgs, "max_completion_tokens": 9}, "gpt-4o", "chat") == (14, 9)
    assert r.tokens({"input": "x" * 40, "max_output_tokens": 3}, "gpt-4o", "responses") == (10, 3)
    assert r.tokens({"messages": msgs}, "gpt-4o", "chat") == (14, 100)
    assert r.tokens({"messages": msgs}, "claude-3-5-sonnet", "chat") == (14, 4000)
    assert r.tokens({"messages": msgs, "max_tokens": True}, "gpt-4o", "chat") == (14, 100)
    assert r.tokens({"input": "x" * 40}, "text-embedding-3-small", "embeddings") == (10, 0)
    assert r.tokens({"messages": msgs, "max_tokens": 10**12}, "gpt-4o", "chat")[1] == 10_000_000
