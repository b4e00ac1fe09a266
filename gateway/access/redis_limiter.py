"""The limits' counters shared by every replica through Redis (one server or a Cluster,
`scripts.py`): one Lua script per question (admit, settle), so each is atomic; a call
waits for the admission's answer only. A busy key's calls are admitted from a lease
instead (`lease.py`: a share of its limits taken once a second), far from its limits. The
calls of one key (one end user, one budget period) made in the same turn of the event loop
go in one script call, still checked and charged one by one, in order: Redis then reads
the clock, each bucket and each set once for all of them (`_Batch`), which nearly halves
its CPU per call under load. The clock is Redis's own (`TIME`), so replicas with skewed
clocks share one notion of "now". Keys carry the gateway key id in a hash tag
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
import functools
import itertools
import logging
import math
import secrets
import time
from collections.abc import Callable
from typing import Any

from gateway.access.keys import GatewayKey
from gateway.access.lease import Leases
from gateway.access.limiter import (
    BUDGET,
    HELD,
    HOLD_MARGIN_S,
    MAX_USER_LEN,
    SLOT_TTL,
    UNAVAILABLE,
    Admission,
    quota,
    refused_budget,
)
from gateway.access.policy import BUCKET_LUA, period_id, period_seconds_left
from gateway.access.scripts import Arg, Call, Mode, RedisScripts, Script
from gateway.errors import LimiterUnavailable

log = logging.getLogger("gateway.access.limiter")

# Both scripts take the calls of one key (one end user, one budget period) made in one turn
# of the event loop: each call is checked and charged in order, as if each had its own
# script call, but Redis reads the clock, each bucket and the sets once, and writes each
# bucket and expiry once, for them all.

# KEYS: spend, slots, rpm, tpm, user_rpm, user_tpm, holds, held
# ARGV: budget, concurrency, slot ttl, 4 capacities (rpm, tpm, user rpm, user tpm), n;
#       then per call: slot id, tokens, est cost, hold member ("<id>:<cost>"), hold seconds
# Returns per call: refusal ('' admitted), wait, rpm level, tpm level ('' not reported).
_ADMIT = (
    BUCKET_LUA
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local budget = tonumber(ARGV[1])
local conc = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local n = tonumber(ARGV[8])
local names = {'rpm', 'tpm', 'user_rpm', 'user_tpm'}
local caps, levels, touched = {}, {}, {}
for i = 1, 4 do caps[i] = tonumber(ARGV[3 + i]) end
local spent, held, holds_read = nil, 0, false
local inflight, slots_pruned = nil, false
local slots, holds, held_add, hold_ttl = {}, {}, 0, 0
local out = {}
for j = 0, n - 1 do
  local a = 8 + 5 * j
  local tokens = tonumber(ARGV[a + 2])
  local cost = tonumber(ARGV[a + 3])
  local refusal, wait, rpm, tpm = '', '0', '', ''
  if budget > 0 then
    if spent == nil then spent = tonumber(redis.call('GET', KEYS[1]) or '0') end
    if spent >= budget or spent + cost > budget then
      refusal = 'budget'
    elseif cost > 0 then
      if not holds_read then
        holds_read = true
        local gone = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now)
        if #gone > 0 then
          local sum = 0
          for _, m in ipairs(gone) do sum = sum + tonumber(string.match(m, ':([^:]*)$')) end
          redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now)
          redis.call('INCRBYFLOAT', KEYS[8], tostring(-sum))
        end
        if redis.call('ZCARD', KEYS[7]) > 0 then
          held = tonumber(redis.call('GET', KEYS[8]) or '0')
        else
          redis.call('DEL', KEYS[8])  -- no reservation left: no float remainder either
        end
      end
      if spent + held + cost > budget then refusal, wait = 'budget_held', '1' end
    end
  end
  if refusal == '' and conc > 0 then
    if inflight == nil then inflight = redis.call('ZCARD', KEYS[2]) end
    if inflight >= conc and not slots_pruned then
      -- expired slots (a replica that died mid-call) only matter when they would refuse
      slots_pruned = true
      redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
      inflight = redis.call('ZCARD', KEYS[2]) + #slots / 2
    end
    if inflight >= conc then refusal, wait = 'concurrency', '1' end
  end
  if refusal == '' then
    local after = {}
    for i = 1, 4 do
      local cap = caps[i]
      if cap > 0 then
        local amount = tokens
        if i == 1 or i == 3 then amount = 1 end
        local level = levels[i]
        if level == nil then
          level = bucket_level(KEYS[2 + i], cap, now)
          levels[i] = level
        end
        local need = math.min(amount, cap)
        if level < need then
          refusal, wait = names[i], tostring((need - level) / (cap / 60.0))
          if i == 1 then rpm = tostring(level) elseif i == 2 then tpm = tostring(level) end
          break
        end
        after[i] = level - amount
      end
    end
    if refusal == '' then
      for i = 1, 4 do
        if after[i] then levels[i], touched[i] = after[i], true end
      end
      if after[1] then rpm = tostring(after[1]) end
      if after[2] then tpm = tostring(after[2]) end
      if conc > 0 then
        inflight = inflight + 1
        slots[#slots + 1] = now + ttl
        slots[#slots + 1] = ARGV[a + 1]
      end
      if budget > 0 and cost > 0 then
        local hold = tonumber(ARGV[a + 5])
        holds[#holds + 1] = now + hold
        holds[#holds + 1] = ARGV[a + 4]
        held, held_add = held + cost, held_add + cost
        if hold > hold_ttl then hold_ttl = hold end
      end
    end
  end
  out[#out + 1], out[#out + 2], out[#out + 3], out[#out + 4] = refusal, wait, rpm, tpm
end
for i = 1, 4 do
  if touched[i] then
    bucket_store(KEYS[2 + i], caps[i], levels[i], now)
  end
end
if #slots > 0 then
  redis.call('ZADD', KEYS[2], unpack(slots))
  redis.call('EXPIRE', KEYS[2], math.ceil(ttl) + 1)
end
if #holds > 0 then
  redis.call('ZADD', KEYS[7], unpack(holds))
  redis.call('INCRBYFLOAT', KEYS[8], string.format('%.17g', held_add))
  redis.call('EXPIRE', KEYS[7], math.ceil(hold_ttl) + 1)
  redis.call('EXPIRE', KEYS[8], math.ceil(hold_ttl) + 1)
end
return out
"""
)

# KEYS: spend, slots, tpm, user_tpm, holds, held
# ARGV: spend ttl, tpm capacity, user tpm capacity, n; then per call: cost, slot id, token
#       delta, hold member, reserved cost, undo ('1': the admission's caller left before
#       its answer; whatever it took is given back only if its slot or reservation is
#       found, i.e. it was admitted)
_SETTLE = (
    BUCKET_LUA
    + """
local n = tonumber(ARGV[4])
local spend, released, delta = 0, 0, 0
for j = 0, n - 1 do
  local a = 4 + 6 * j
  local found = true
  if ARGV[a + 4] ~= '' then
    found = redis.call('ZREM', KEYS[5], ARGV[a + 4]) == 1
    if found then released = released + tonumber(ARGV[a + 5]) end
  end
  local cost = tonumber(ARGV[a + 1])
  if cost > 0 then spend = spend + cost end
  if ARGV[a + 2] ~= '' then found = redis.call('ZREM', KEYS[2], ARGV[a + 2]) == 1 end
  if ARGV[a + 6] ~= '1' or found then delta = delta + tonumber(ARGV[a + 3]) end
end
if released ~= 0 then
  redis.call('INCRBYFLOAT', KEYS[6], string.format('%.17g', -released))
end
if spend > 0 then
  redis.call('INCRBYFLOAT', KEYS[1], string.format('%.17g', spend))
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
if delta ~= 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  for i = 0, 1 do
    local cap = tonumber(ARGV[2 + i])
    if cap > 0 then
      bucket_store(KEYS[3 + i], cap, bucket_level(KEYS[3 + i], cap, now) - delta, now)
    end
  end
end
return 1
"""
)


_FAILURES = (LimiterUnavailable, OSError)
# Calls per script call at most: the slots of all of them go to one ZADD, within Lua's stack.
BATCH_MAX = 200


class _Batch:
    """The calls of one key, end user and budget period made in one turn of the event loop,
    in one script call (`_ADMIT` or `_SETTLE`): its arguments grow with each call until it
    is written. An admission's waiter gets its own four answers."""

    __slots__ = ("argv", "at", "call", "key", "n", "waiters")

    def __init__(self, key: GatewayKey, call: Call | None, argv: list[Arg]) -> None:
        self.key, self.call, self.argv = key, call, argv
        self.at = len(argv) - 1  # where the script finds the number of calls
        self.n = 0
        self.waiters: list[asyncio.Future[list[Any]]] = []

    def open(self, key: GatewayKey) -> bool:
        """Whether a call of `key` (the same object: the same limits) may still join."""
        return (self.call is not None and not self.call.written and self.key is key
                and self.n < BATCH_MAX)  # fmt: skip

    def add(self, call: tuple[Arg, ...], waiter: asyncio.Future[list[Any]] | None = None) -> None:
        self.n += 1
        self.argv[self.at] = self.n
        self.argv.extend(call)
        if waiter is not None:
            self.waiters.append(waiter)

    def count_failures(self, limiter: RedisLimiter) -> Callable[[Exception], None]:
        """A settlement's failure: counted once per call of the batch."""

        def count(e: Exception) -> None:
            for _ in range(self.n):
                limiter._settle_failed(e)

        return count


class RedisLimiter:
    """Counters shared by every replica through one Redis."""

    def __init__(
        self,
        url: str,
        failure: str = "open",
        timeout_s: float = 1.0,
        prefix: str = "lgw",
        mode: Mode = "auto",
        leases: bool = True,
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
        # This turn's script calls not yet written, by (key id, end user, budget period).
        self._admitting: dict[tuple[str, str, str], _Batch] = {}
        self._settling: dict[tuple[str, str, str], _Batch] = {}
        self.leases = (
            Leases(self._client, self._lease_keys, self._failed, self._new_id) if leases else None
        )

    def _lease_keys(self, key: GatewayKey) -> list[str]:
        return [self._k(key, "slots"), self._k(key, "rpm"), self._k(key, "tpm")]

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
        user = user[:MAX_USER_LEN]
        if self.leases is not None:
            up = time.monotonic() >= self._down_until
            leased = await self.leases.admit(key, user, est_tokens, up)
            if leased is not None:
                return leased
        lim = key.limits
        adm = Admission(ok=False, key=key, user=user, est_tokens=est_tokens)
        if lim.budget_usd > 0:
            adm.period = period_id(lim.budget_period)
        if time.monotonic() < self._down_until:
            self.failures += 1
            return self._unavailable(adm)
        slot = self._new_id() if lim.concurrency else ""
        cost = est_cost if adm.period and est_cost > 0 else 0.0
        hold = f"{self._new_id()}:{cost!r}" if cost else ""
        try:
            out = await self._admission(
                key, user, adm.period or "-", (slot, est_tokens, repr(cost), hold, hold_s)
            )
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
        refusal, wait, rpm_level, tpm_level = (
            v.decode() if isinstance(v, bytes) else str(v) for v in out
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

    async def _admission(
        self, key: GatewayKey, user: str, period: str, call: tuple[Arg, ...]
    ) -> list[Any]:
        """The admission script's answer for one call (refusal, wait, rpm and tpm levels):
        with the other calls of its key, end user and period in this turn (one script
        call, `_Batch`), or alone before the line to Redis is open and on a Cluster."""
        lim = key.limits
        bid = (key.key_id, user, period)
        batch = self._admitting.get(bid)
        if batch is None or not batch.open(key):
            keys = self._keys(key, user, period)
            # Each end user's buckets are their own: without one, a call draws from none.
            argv: list[Arg] = [
                lim.budget_usd, lim.concurrency, SLOT_TTL, lim.rpm, lim.tpm,
                lim.user_rpm if user else 0, lim.user_tpm if user else 0, 0,
            ]  # fmt: skip
            queued = self._client.queue(self._admit, keys, argv)
            if queued is None:
                argv[7] = 1
                argv.extend(call)
                return list(await self._client.run(self._admit, keys, argv))[:4]
            batch = self._admitting[bid] = _Batch(key, queued, argv)
            assert queued.future is not None
            queued.future.add_done_callback(functools.partial(self._answered, bid, batch))
        waiter: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        batch.add(call, waiter)
        return await waiter

    def _answered(
        self, bid: tuple[str, str, str], batch: _Batch, done: asyncio.Future[Any]
    ) -> None:
        if self._admitting.get(bid) is batch:
            del self._admitting[bid]
        error = LimiterUnavailable("cancelled") if done.cancelled() else done.exception()
        out = None if error is not None else done.result()
        for i, w in enumerate(batch.waiters):
            if w.done():  # its caller left
                continue
            if out is not None:
                w.set_result(out[4 * i : 4 * i + 4])
            else:
                w.set_exception(error or LimiterUnavailable("no answer"))

    async def settle(self, adm: Admission, tokens: int, cost_usd: float) -> None:
        if adm.lease is not None:
            adm.lease.settle(adm, tokens)
            return
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
        call: tuple[Arg, ...] = (cost_usd if adm.period else 0, adm.slot, delta, adm.hold,
                                 repr(adm.est_cost), "1" if undo else "")  # fmt: skip
        # Written to Redis before the answer's last bytes, its reply not waited for. An
        # undo goes on its own, behind its admission: never into a batch written before.
        period = adm.period or "-"
        bid = (key.key_id, adm.user, period)
        batch = None if undo else self._settling.get(bid)
        if batch is not None and batch.open(key):
            batch.add(call)
            await asyncio.sleep(0)  # for the turn's write, like RedisScripts.send
            return
        keys = self._keys(key, adm.user, period)
        skeys = [keys[0], keys[1], keys[3], keys[5], keys[6], keys[7]]
        spend_ttl = math.ceil(period_seconds_left(lim.budget_period)) + 86400 if adm.period else 0
        batch = _Batch(key, None, [spend_ttl, lim.tpm, lim.user_tpm if adm.user else 0, 0])
        batch.add(call)
        try:
            batch.call = self._client.queue(
                self._settle, skeys, batch.argv, batch.count_failures(self)
            )
            if batch.call is None:  # no line open: alone, through `send`
                await self._client.send(self._settle, skeys, batch.argv, self._settle_failed)
                return
            if not undo:
                self._settling[bid] = batch
                if len(self._settling) > 1000:  # written batches of keys no longer settling
                    self._settling = {k: b for k, b in self._settling.items() if b.open(b.key)}
            await asyncio.sleep(0)
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
        if self.leases is not None:
            await self.leases.close()
        await self._client.close()
