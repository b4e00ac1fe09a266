"""The limits' counters shared by every replica through Redis (one server or a Cluster,
`scripts.py`): one Lua script per question (admit, settle), so each is atomic; a call
waits for the admission's answer only. The clock is Redis's own (`TIME`), so replicas
with skewed clocks share one notion of "now". Keys carry the gateway key id in a hash tag
(`lgw:{key_id}:...`) so that a Redis Cluster keeps a key's counters in one slot.

A budget's reservations are members of a sorted set scored by when they expire (the call's
deadline and a margin), with their sum kept beside it; each admission first drops the
expired ones (a replica that died mid-call), so a reservation never holds budget forever.

When Redis cannot be reached, `failure` decides: `open` admits (the limits then do not
hold until it is back), `closed` refuses with 503. Either way each failure is counted
(`failures`) and logged at most every 10 s; after a failure Redis is left alone for a
second, so that an outage does not add a timeout to every request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import secrets
import time

from gateway.access.keys import GatewayKey
from gateway.access.limiter import (
    BUDGET,
    HELD,
    HOLD_MARGIN_S,
    MAX_USER_LEN,
    RPM,
    SLOT_TTL,
    TPM,
    UNAVAILABLE,
    Admission,
    amounts,
    quota,
    refused_budget,
)
from gateway.access.policy import period_id, period_seconds_left
from gateway.access.scripts import Mode, RedisScripts, Script
from gateway.errors import LimiterUnavailable

log = logging.getLogger("gateway.access.limiter")

# KEYS: spend, slots, rpm, tpm, user_rpm, user_tpm, holds, held
# ARGV: budget, concurrency, slot id, slot ttl, 4 capacities, 4 amounts, est cost, hold
#       member ("<id>:<cost>"), hold seconds
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local budget = tonumber(ARGV[1])
local cost = tonumber(ARGV[13])
if budget > 0 then
  local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
  if spent >= budget or spent + cost > budget then return {'budget', '0', '', ''} end
  if cost > 0 then
    local gone = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now)
    if #gone > 0 then
      local sum = 0
      for _, m in ipairs(gone) do sum = sum + tonumber(string.match(m, ':([^:]*)$')) end
      redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now)
      redis.call('INCRBYFLOAT', KEYS[8], tostring(-sum))
    end
    local held = 0
    if redis.call('ZCARD', KEYS[7]) > 0 then
      held = tonumber(redis.call('GET', KEYS[8]) or '0')
    else
      redis.call('DEL', KEYS[8])  -- no reservation left: no float remainder either
    end
    if spent + held + cost > budget then return {'budget_held', '1', '', ''} end
  end
end
local conc = tonumber(ARGV[2])
if conc > 0 and redis.call('ZCARD', KEYS[2]) >= conc then
  -- expired slots (a replica that died mid-call) only matter when they would refuse
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
if budget > 0 and cost > 0 then
  local hold = tonumber(ARGV[15])
  redis.call('ZADD', KEYS[7], now + hold, ARGV[14])
  redis.call('INCRBYFLOAT', KEYS[8], ARGV[13])
  redis.call('EXPIRE', KEYS[7], math.ceil(hold) + 1)
  redis.call('EXPIRE', KEYS[8], math.ceil(hold) + 1)
end
return out
"""

# KEYS: spend, slots, tpm, user_tpm, holds, held
# ARGV: cost, spend ttl, slot id, token delta, tpm capacity, user tpm capacity, hold member,
#       reserved cost, undo ('1': the admission's caller left before its answer; whatever
#       it took is given back only if its slot or reservation is found, i.e. it was admitted)
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local found = true
if ARGV[7] ~= '' then
  found = redis.call('ZREM', KEYS[5], ARGV[7]) == 1
  if found then redis.call('INCRBYFLOAT', KEYS[6], tostring(-tonumber(ARGV[8]))) end
end
if tonumber(ARGV[1]) > 0 then
  redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
if ARGV[3] ~= '' then found = redis.call('ZREM', KEYS[2], ARGV[3]) == 1 end
if ARGV[9] == '1' and not found then return 0 end
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
        self._client = RedisScripts(url, timeout_s, mode)
        self._admit = Script(_ADMIT)
        self._settle = Script(_SETTLE)
        self.failure = failure
        self.prefix = prefix
        self.failures = 0
        self._down_until = 0.0
        self._logged_at = 0.0
        # Slot and reservation ids: unique to this process (random) and call (counter),
        # without asking the OS for randomness on every call.
        self._run_id = secrets.token_hex(6)
        self._seq = itertools.count()
        self._key_names: dict[tuple[str, str, str], list[str]] = {}
        self._undoing: set[asyncio.Task[None]] = set()  # admissions left by their callers

    def _k(self, key: GatewayKey, what: str) -> str:
        return f"{self.prefix}:{{{key.key_id}}}:{what}"

    def _new_id(self) -> str:
        return f"{self._run_id}{next(self._seq):x}"

    def _keys(self, key: GatewayKey, user: str, period: str) -> list[str]:
        """The script's KEYS (made once per key, end user and period: bounded)."""
        names = self._key_names.get((key.key_id, user, period))
        if names is None:
            if len(self._key_names) >= 10_000:
                self._key_names.clear()
            names = self._key_names[(key.key_id, user, period)] = self._make_keys(key, user, period)
        return names

    def _make_keys(self, key: GatewayKey, user: str, period: str) -> list[str]:
        return [
            self._k(key, f"spend:{period}"),
            self._k(key, "slots"),
            self._k(key, "rpm"),
            self._k(key, "tpm"),
            self._k(key, f"u:{user}:rpm"),
            self._k(key, f"u:{user}:tpm"),
            self._k(key, f"holds:{period}"),
            self._k(key, f"held:{period}"),
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

    async def admit(
        self, key: GatewayKey, user: str, est_tokens: int, est_cost: float = 0.0,
        hold_s: float = HOLD_MARGIN_S,
    ) -> Admission:  # fmt: skip
        lim = key.limits
        user = user[:MAX_USER_LEN]
        adm = Admission(ok=False, key=key, user=user, est_tokens=est_tokens)
        if lim.budget_usd > 0:
            adm.period = period_id(lim.budget_period)
        if time.monotonic() < self._down_until:
            self.failures += 1
            return self._unavailable(adm)
        slot = self._new_id() if lim.concurrency else ""
        cost = est_cost if adm.period and est_cost > 0 else 0.0
        hold = f"{self._new_id()}:{cost!r}" if cost else ""
        amts = amounts(lim, est_tokens)
        caps = [cap if (name in (RPM, TPM) or user) else 0 for name, cap, _ in amts]
        argv: list[bytes | str | int | float] = [
            lim.budget_usd, lim.concurrency, slot, SLOT_TTL, *caps, *(a for _, _, a in amts),
            repr(cost), hold, hold_s,
        ]  # fmt: skip
        try:
            keys = self._keys(key, user, adm.period or "-")
            out = await self._client.run(self._admit, keys, argv)
        except _FAILURES as e:
            self._failed(e, "admit")
            return self._unavailable(adm)
        except asyncio.CancelledError:
            # The caller left (its client did) while the script was on its way: it may have
            # taken a slot and reserved tokens and cost that nobody would settle. What it
            # took is given back, behind it on the same line (a no-op if it refused).
            if slot or hold:
                adm.slot, adm.hold, adm.est_cost = slot, hold, cost
                task = asyncio.get_running_loop().create_task(self._settle_call(adm, 0, 0.0, True))
                self._undoing.add(task)
                task.add_done_callback(self._undoing.discard)
            raise
        assert isinstance(out, list)
        refusal, wait, rpm_level, tpm_level = (
            v.decode() if isinstance(v, bytes) else str(v) for v in out[:4]
        )
        adm.quota = quota(
            lim, float(rpm_level) if rpm_level else None, float(tpm_level) if tpm_level else None
        )
        if refusal in (BUDGET, HELD):
            return refused_budget(adm, refusal)
        if refusal:
            adm.refusal, adm.retry_after = refusal, float(wait)
            return adm
        adm.ok, adm.slot, adm.hold, adm.est_cost = True, slot, hold, cost
        return adm

    async def settle(self, adm: Admission, tokens: int, cost_usd: float) -> None:
        await self._settle_call(adm, tokens, cost_usd)

    async def _settle_call(
        self, adm: Admission, tokens: int, cost_usd: float, undo: bool = False
    ) -> None:
        key, lim = adm.key, adm.key.limits
        delta = tokens - adm.est_tokens
        if not (
            adm.slot or adm.hold or (cost_usd > 0 and adm.period)
            or (delta and (lim.tpm or lim.user_tpm))
        ):  # fmt: skip
            return
        keys = self._keys(key, adm.user, adm.period or "-")
        spend_ttl = math.ceil(period_seconds_left(lim.budget_period)) + 86400 if adm.period else 0
        argv = [cost_usd if adm.period else 0, spend_ttl, adm.slot, delta, lim.tpm,
                lim.user_tpm if adm.user else 0, adm.hold, repr(adm.est_cost),
                "1" if undo else ""]  # fmt: skip
        # Written to Redis before the answer's last bytes, its reply not waited for.
        try:
            await self._client.send(
                self._settle, [keys[0], keys[1], keys[3], keys[5], keys[6], keys[7]], argv,
                self._settle_failed,
            )  # fmt: skip
        except _FAILURES as e:
            self._settle_failed(e)

    def _settle_failed(self, e: Exception) -> None:
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

    async def held(self, key: GatewayKey) -> float:
        """USD reserved by calls in flight (not yet expired ones included)."""
        value = await self._client.call(
            "GET", self._k(key, f"held:{period_id(key.limits.budget_period)}")
        )
        return float(value or 0.0)

    async def close(self) -> None:
        await self._client.close()
