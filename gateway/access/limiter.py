"""Counters behind the per-key limits: in this process's memory, or shared through Redis.

Both variants answer the same two questions: `admit` before a call is forwarded (budget,
concurrency, then the RPM/TPM buckets of the key and of its end user: all checked, and
only then all charged, so a refusal charges nothing) and `settle` after it (the token
estimate reconciled with the reported usage, the cost added to the spend, the
concurrency slot given back). See `policy.py` for what the limits mean.

Redis (one server or a Cluster, `scripts.py`): one Lua script per question, so each is
atomic and one round trip; the clock is
Redis's own (`TIME`), so replicas with skewed clocks share one notion of "now". Keys carry
the gateway key id in a hash tag (`lgw:{key_id}:...`) so that a Redis Cluster keeps a key's
counters in one slot. When Redis cannot be reached, `failure` decides: `open` admits (the
limits then do not hold until it is back), `closed` refuses with 503. Either way each
failure is counted (`failures`) and logged at most every 10 s; after a failure Redis is left
alone for a second, so that an outage does not add a timeout to every request.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from gateway.access.keys import GatewayKey, Limits
from gateway.access.policy import Bucket, period_id, period_seconds_left
from gateway.errors import LimiterUnavailable

if TYPE_CHECKING:
    from gateway.access.scripts import Mode

log = logging.getLogger("gateway.access.limiter")

# Refusal reasons (the `outcome` detail of a refused call and a metric label: bounded).
BUDGET = "budget"
CONCURRENCY = "concurrency"
RPM = "rpm"
TPM = "tpm"
USER_RPM = "user_rpm"
USER_TPM = "user_tpm"
UNAVAILABLE = "limiter_unavailable"

_BUCKETS = (RPM, TPM, USER_RPM, USER_TPM)
SLOT_TTL = 900.0  # a concurrency slot a crashed replica never gave back expires after this
_MAX_USER_LEN = 128


@dataclass(slots=True)
class Quota:
    """The state the `x-ratelimit-*` headers report (None: that limit is not set)."""

    requests: tuple[int, float, float] | None = None  # limit, remaining, seconds to full
    tokens: tuple[int, float, float] | None = None


@dataclass(slots=True)
class Admission:
    ok: bool
    key: GatewayKey
    refusal: str = ""  # one of the reasons above, when not ok
    retry_after: float = 0.0
    quota: Quota = field(default_factory=Quota)
    user: str = ""
    est_tokens: int = 0
    slot: str = ""  # concurrency slot to give back
    period: str = ""  # budget window charged


class Limiter(Protocol):
    failures: int

    async def admit(self, key: GatewayKey, user: str, est_tokens: int) -> Admission: ...

    async def settle(self, adm: Admission, tokens: int, cost_usd: float) -> None:
        """After the call: `tokens` = reported input + output (the estimate when none)."""

    async def seed_spend(self, key: GatewayKey, usd: float) -> None:
        """Spend already recorded in the current window (from llm_calls), unless known."""

    async def spent(self, key: GatewayKey) -> float: ...

    async def close(self) -> None: ...


def _amounts(lim: Limits, est: int) -> tuple[tuple[str, int, int], ...]:
    """(bucket, capacity, amount) of each bucket a call draws from."""
    return (
        (RPM, lim.rpm, 1),
        (TPM, lim.tpm, est),
        (USER_RPM, lim.user_rpm, 1),
        (USER_TPM, lim.user_tpm, est),
    )


def _quota(lim: Limits, levels: dict[str, float]) -> Quota:
    q = Quota()
    if lim.rpm and RPM in levels:
        b = Bucket(lim.rpm)
        q.requests = (lim.rpm, max(levels[RPM], 0.0), b.until_full(levels[RPM]))
    if lim.tpm and TPM in levels:
        b = Bucket(lim.tpm)
        q.tokens = (lim.tpm, max(levels[TPM], 0.0), b.until_full(levels[TPM]))
    return q


class MemoryLimiter:
    """Counters of one process. asyncio runs `admit` without interruption: atomic."""

    def __init__(self) -> None:
        self.failures = 0
        self._levels: dict[str, tuple[float, float]] = {}  # bucket id -> (level, at)
        self._in_flight: dict[str, int] = {}
        self._spend: dict[tuple[str, str], float] = {}

    def _level(self, bid: str, b: Bucket, now: float) -> float:
        st = self._levels.get(bid)
        return float(b.capacity) if st is None else b.refill(st[0], now - st[1])

    def _bucket_id(self, key: GatewayKey, name: str, user: str) -> str:
        return f"{key.key_id}:{name}" if name in (RPM, TPM) else f"{key.key_id}:{name}:{user}"

    async def admit(self, key: GatewayKey, user: str, est_tokens: int) -> Admission:
        now = time.time()
        lim = key.limits
        user = user[:_MAX_USER_LEN]
        adm = Admission(ok=False, key=key, user=user, est_tokens=est_tokens)
        if lim.budget_usd > 0:
            adm.period = period_id(lim.budget_period, now)
            if self._spend.get((key.key_id, adm.period), 0.0) >= lim.budget_usd:
                adm.refusal = BUDGET
                adm.retry_after = period_seconds_left(lim.budget_period, now)
                return adm
        if lim.concurrency and self._in_flight.get(key.key_id, 0) >= lim.concurrency:
            adm.refusal, adm.retry_after = CONCURRENCY, 1.0
            return adm
        levels: dict[str, float] = {}
        for name, cap, amount in _amounts(lim, est_tokens):
            if not cap or (name in (USER_RPM, USER_TPM) and not user):
                continue
            b = Bucket(cap)
            level = self._level(self._bucket_id(key, name, user), b, now)
            if level < b.need(amount):
                adm.refusal, adm.retry_after = name, b.wait(level, amount)
                adm.quota = _quota(lim, {**levels, name: level})
                return adm
            levels[name] = level - amount
        if len(self._levels) > 100_000:
            self._forget_full(now)
        for name, level in levels.items():
            self._levels[self._bucket_id(key, name, user)] = (level, now)
        if lim.concurrency:
            self._in_flight[key.key_id] = self._in_flight.get(key.key_id, 0) + 1
            adm.slot = "1"
        adm.ok = True
        adm.quota = _quota(lim, levels)
        return adm

    def _forget_full(self, now: float) -> None:
        # A bucket untouched for a minute (plus its debt) is full again: the same as absent.
        self._levels = {k: v for k, v in self._levels.items() if now - v[1] < 60 + max(-v[0], 0)}

    async def settle(self, adm: Admission, tokens: int, cost_usd: float) -> None:
        key, lim = adm.key, adm.key.limits
        if adm.slot:
            self._in_flight[key.key_id] = max(self._in_flight.get(key.key_id, 1) - 1, 0)
        if cost_usd > 0 and adm.period:
            k = (key.key_id, adm.period)
            self._spend[k] = self._spend.get(k, 0.0) + cost_usd
        delta = tokens - adm.est_tokens
        if delta:
            now = time.time()
            for name, cap in ((TPM, lim.tpm), (USER_TPM, lim.user_tpm)):
                if cap and (name == TPM or adm.user):
                    bid = self._bucket_id(key, name, adm.user)
                    self._levels[bid] = (self._level(bid, Bucket(cap), now) - delta, now)

    async def seed_spend(self, key: GatewayKey, usd: float) -> None:
        k = (key.key_id, period_id(key.limits.budget_period))
        self._spend.setdefault(k, usd)

    async def spent(self, key: GatewayKey) -> float:
        return self._spend.get((key.key_id, period_id(key.limits.budget_period)), 0.0)

    async def close(self) -> None:
        return None


# KEYS: spend, slots, rpm, tpm, user_rpm, user_tpm
# ARGV: budget, concurrency, slot id, slot ttl, 4 capacities, 4 amounts
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local budget = tonumber(ARGV[1])
if budget > 0 then
  local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
  if spent >= budget then return {'budget', '0', '', ''} end
end
local conc = tonumber(ARGV[2])
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= conc then return {'concurrency', '1', '', ''} end
end
local names = {'rpm', 'tpm', 'user_rpm', 'user_tpm'}
local levels = {}
local out = {'', '0', '', ''}
for i = 1, 4 do
  local cap = tonumber(ARGV[4 + i])
  if cap > 0 then
    local amount = tonumber(ARGV[8 + i])
    local rate = cap / 60.0
    local st = redis.call('HMGET', KEYS[2 + i], 'l', 't')
    local level = cap
    if st[1] then
      level = math.min(cap, tonumber(st[1]) + math.max(now - tonumber(st[2]), 0) * rate)
    end
    local need = math.min(amount, cap)
    if level < need then
      out[1] = names[i]
      out[2] = tostring((need - level) / rate)
      if i <= 2 then out[2 + i] = tostring(level) end
      return out
    end
    levels[i] = level - amount
  end
end
for i = 1, 4 do
  if levels[i] then
    local cap = tonumber(ARGV[4 + i])
    redis.call('HSET', KEYS[2 + i], 'l', tostring(levels[i]), 't', tostring(now))
    redis.call('EXPIRE', KEYS[2 + i], math.ceil((cap - levels[i]) * 60 / cap) + 1)
    if i <= 2 then out[2 + i] = tostring(levels[i]) end
  end
end
if conc > 0 then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])
  redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[4])) + 1)
end
return out
"""

# KEYS: spend, slots, tpm, user_tpm
# ARGV: cost, spend ttl, slot id, token delta, tpm capacity, user tpm capacity
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if tonumber(ARGV[1]) > 0 then
  redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[2], ARGV[3]) end
local delta = tonumber(ARGV[4])
for i = 0, 1 do
  local cap = tonumber(ARGV[5 + i])
  if cap > 0 and delta ~= 0 then
    local st = redis.call('HMGET', KEYS[3 + i], 'l', 't')
    local level = cap
    if st[1] then
      level = math.min(cap, tonumber(st[1]) + math.max(now - tonumber(st[2]), 0) * cap / 60.0)
    end
    level = level - delta
    redis.call('HSET', KEYS[3 + i], 'l', tostring(level), 't', tostring(now))
    redis.call('EXPIRE', KEYS[3 + i], math.ceil((cap - level) * 60 / cap) + 1)
  end
end
return 1
"""


_FAILURES = (LimiterUnavailable, OSError)


class RedisLimiter:
    """Counters shared by every replica through one Redis."""

    def __init__(
        self,
        url: str,
        failure: str = "open",
        timeout_s: float = 1.0,
        prefix: str = "lgw",
        mode: Mode = "auto",
    ) -> None:
        # redis-py is imported by a gateway that uses Redis, not by every gateway.
        from gateway.access.scripts import RedisScripts, Script

        self._client = RedisScripts(url, timeout_s, mode)
        self._admit = Script(_ADMIT)
        self._settle = Script(_SETTLE)
        self.failure = failure
        self.prefix = prefix
        self.failures = 0
        self._down_until = 0.0
        self._logged_at = 0.0

    def _k(self, key: GatewayKey, what: str) -> str:
        return f"{self.prefix}:{{{key.key_id}}}:{what}"

    def _keys(self, key: GatewayKey, user: str, period: str) -> list[str]:
        return [
            self._k(key, f"spend:{period}"),
            self._k(key, "slots"),
            self._k(key, "rpm"),
            self._k(key, "tpm"),
            self._k(key, f"u:{user}:rpm"),
            self._k(key, f"u:{user}:tpm"),
        ]

    def _failed(self, e: Exception, what: str) -> None:
        self.failures += 1
        now = time.monotonic()
        self._down_until = now + 1.0
        if now - self._logged_at > 10.0:
            self._logged_at = now
            log.error(
                "redis unreachable: limits %s",
                "not enforced (failure: open)" if self.failure == "open" else "refusing (closed)",
                extra={"during": what, "error": f"{type(e).__name__}: {e}"[:300],
                       "failures": self.failures},
            )  # fmt: skip

    def _unavailable(self, adm: Admission) -> Admission:
        if self.failure == "open":
            adm.ok = True
        else:
            adm.refusal, adm.retry_after = UNAVAILABLE, 1.0
        return adm

    async def admit(self, key: GatewayKey, user: str, est_tokens: int) -> Admission:
        lim = key.limits
        user = user[:_MAX_USER_LEN]
        adm = Admission(ok=False, key=key, user=user, est_tokens=est_tokens)
        if lim.budget_usd > 0:
            adm.period = period_id(lim.budget_period)
        if time.monotonic() < self._down_until:
            self.failures += 1
            return self._unavailable(adm)
        slot = secrets.token_hex(8) if lim.concurrency else ""
        amounts = _amounts(lim, est_tokens)
        caps = [cap if (name in (RPM, TPM) or user) else 0 for name, cap, _ in amounts]
        argv: list[bytes | str | int | float] = [
            lim.budget_usd, lim.concurrency, slot, SLOT_TTL, *caps, *(a for _, _, a in amounts)
        ]  # fmt: skip
        try:
            keys = self._keys(key, user, adm.period or "-")
            out = await self._client.run(self._admit, keys, argv)
        except _FAILURES as e:
            self._failed(e, "admit")
            return self._unavailable(adm)
        assert isinstance(out, list)
        refusal, wait, rpm_level, tpm_level = (
            v.decode() if isinstance(v, bytes) else str(v) for v in out[:4]
        )
        levels = {n: float(v) for n, v in ((RPM, rpm_level), (TPM, tpm_level)) if v}
        adm.quota = _quota(lim, levels)
        if refusal:
            adm.refusal = refusal
            adm.retry_after = (
                period_seconds_left(lim.budget_period) if refusal == BUDGET else float(wait)
            )
            return adm
        adm.ok, adm.slot = True, slot
        return adm

    async def settle(self, adm: Admission, tokens: int, cost_usd: float) -> None:
        key, lim = adm.key, adm.key.limits
        delta = tokens - adm.est_tokens
        if not (adm.slot or (cost_usd > 0 and adm.period) or (delta and (lim.tpm or lim.user_tpm))):
            return
        keys = self._keys(key, adm.user, adm.period or "-")
        spend_ttl = math.ceil(period_seconds_left(lim.budget_period)) + 86400 if adm.period else 0
        argv = [cost_usd if adm.period else 0, spend_ttl, adm.slot, delta, lim.tpm,
                lim.user_tpm if adm.user else 0]  # fmt: skip
        try:
            await self._client.run(self._settle, [keys[0], keys[1], keys[3], keys[5]], argv)
        except _FAILURES as e:
            self._failed(e, "settle")

    async def seed_spend(self, key: GatewayKey, usd: float) -> None:
        lim = key.limits
        ttl = math.ceil(period_seconds_left(lim.budget_period)) + 86400
        spend_key = self._k(key, f"spend:{period_id(lim.budget_period)}")
        try:
            await self._client.call("SET", spend_key, float(usd), "NX", "EX", ttl)
        except _FAILURES as e:
            self._failed(e, "seed")

    async def spent(self, key: GatewayKey) -> float:
        value = await self._client.call(
            "GET", self._k(key, f"spend:{period_id(key.limits.budget_period)}")
        )
        return float(value or 0.0)

    async def close(self) -> None:
        await self._client.close()


def open_limiter(redis_url: str, failure: str, timeout_ms: float, mode: Mode = "auto") -> Limiter:
    if redis_url:
        return RedisLimiter(redis_url, failure, timeout_ms / 1000.0, mode=mode)
    return MemoryLimiter()
