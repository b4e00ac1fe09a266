"""Leased limits: a replica takes a share of a key's RPM, TPM and concurrency slots from
Redis in one script call and admits the key's calls from it in memory, so that a busy key
costs Redis one round trip per lease (about a second), not one per call.

A lease is taken only far from the limit: the shared bucket must hold at least twice the
share, the concurrency set room for twice the slots. Near the limit the take is refused
and the key's calls go through the per-call scripts again (`redis_limiter.py`), exact to
the call. What a lease takes is drawn from the same buckets and set the per-call scripts
use, before any call is admitted from it, so the replicas together never admit more than
the limits; what a replica holds unused (at most a sixteenth of each limit) is unavailable
to the others until it is given back: when the lease ends (it lasts `LEASE_S`, then the
next call takes another, giving back what is left in the same script call), or by the
tick, every `LEASE_S`, for a key gone quiet. A call's tokens are settled against its
lease (a call that used more than reserved leaves the lease in debt, charged to the bucket
when the lease is given back).

A leased slot is a member of the key's concurrency set, like a per-call slot, scored to
expire `SLOT_TTL` seconds later and renewed at every take and tick while held: the slots
of a replica killed mid-lease are free again within `SLOT_TTL`. Replicas that do not lease
see leased slots as calls in flight.

Only keys whose every limit is large enough for a sixteenth of it to be worth holding are
leased (`leasable`): a budget or per-user limits keep every call on the per-call scripts
(a budget's spend must be exact; an end user's buckets are too many to lease).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from gateway.access.keys import GatewayKey, Limits
from gateway.access.limiter import MAX_USER_LEN, Admission, quota_of
from gateway.access.limiter import SLOT_TTL as CALL_SLOT_TTL
from gateway.access.policy import BUCKET_LUA, Bucket, bucket
from gateway.access.scripts import Arg, RedisScripts, Script

SHARE = 16  # a lease takes 1/SHARE of each limit
MIN_RPM, MIN_TPM, MIN_CONCURRENCY = 128, 65_536, 32  # smallest limits leased (8, 4096, 2)
MAX_SLOTS = 32  # slots one lease takes at most
MAX_HELD = 1024  # slots one replica holds of a key at most (its calls beyond: per call)
LEASE_S = 1.0  # a lease's life; the tick's period
SLOT_TTL = 30.0  # a leased slot not renewed (its replica died) is free again after this
SLOTS = "L"  # `Admission.slot` of a call holding one of its lease's slots

# KEYS: slots, rpm, tpm
# ARGV: concurrency, slot ttl, key ttl, rpm capacity, tpm capacity, rpm given back, tpm
#       given back (negative: debt), rpm wanted, tpm wanted, n kept, n dropped, n new; then
#       the slot ids kept (renewed), dropped, and new (added if granted)
# Returns: granted (1/0), rpm level, tpm level ('' not limited)
_LEASE = (
    BUCKET_LUA
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local conc, ttl, key_ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local nkeep, ndrop, nnew = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local levels, out = {}, {}
local granted = true
for i = 1, 2 do
  local cap = tonumber(ARGV[3 + i])
  if cap > 0 then
    levels[i] = math.min(cap, bucket_level(KEYS[1 + i], cap, now) + tonumber(ARGV[5 + i]))
    if levels[i] < 2 * tonumber(ARGV[7 + i]) then granted = false end
  end
end
if ndrop > 0 then redis.call('ZREM', KEYS[1], unpack(ARGV, 13 + nkeep, 12 + nkeep + ndrop)) end
if granted and nnew > 0 then
  local n = redis.call('ZCARD', KEYS[1])
  if n + 2 * nnew > conc then
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
    if redis.call('ZCARD', KEYS[1]) + 2 * nnew > conc then granted = false end
  end
end
for i = 1, 2 do
  local cap = tonumber(ARGV[3 + i])
  if levels[i] then
    local take = 0
    if granted then take = tonumber(ARGV[7 + i]) end
    if take > 0 or tonumber(ARGV[5 + i]) ~= 0 then
      levels[i] = levels[i] - take
      bucket_store(KEYS[1 + i], cap, levels[i], now)
    end
    out[1 + i] = tostring(levels[i])
  else
    out[1 + i] = ''
  end
end
local z = {}
for j = 13, 12 + nkeep do z[#z + 1] = now + ttl; z[#z + 1] = ARGV[j] end
if granted then
  for j = 13 + nkeep + ndrop, 12 + nkeep + ndrop + nnew do
    z[#z + 1] = now + ttl; z[#z + 1] = ARGV[j]
  end
end
if #z > 0 then
  redis.call('ZADD', KEYS[1], unpack(z))
  redis.call('EXPIRE', KEYS[1], key_ttl)
end
if granted then out[1] = 1 else out[1] = 0 end
return out
"""
)


def leasable(lim: Limits) -> bool:
    """Whether a key's calls may be admitted from leases: limits set, each large enough to
    share, and none that must be exact per call (a budget) or are kept per end user."""
    if lim.budget_usd > 0 or lim.user_rpm or lim.user_tpm:
        return False
    if not (lim.rpm or lim.tpm or lim.concurrency):
        return False
    return ((not lim.rpm or lim.rpm >= MIN_RPM) and (not lim.tpm or lim.tpm >= MIN_TPM)
            and (not lim.concurrency or lim.concurrency >= MIN_CONCURRENCY))  # fmt: skip


class Lease:
    """What this replica holds of one key's limits: requests and tokens left to admit, the
    slots it holds (`in_flight` of them used), until `expires` (monotonic). The object
    lives as long as it holds anything; a re-read key with other limits re-plans it."""

    __slots__ = (
        "expires", "in_flight", "key", "names", "refused_until", "rpm", "rpm_b", "rpm_left",
        "rpm_level", "slots", "taking", "tpm", "tpm_b", "tpm_left", "tpm_level", "want_slots",
    )  # fmt: skip

    def __init__(self, key: GatewayKey, names: list[str]) -> None:
        self.names = names  # the Redis keys: slots, rpm, tpm
        self.rpm_left = self.tpm_left = 0.0
        self.rpm_level = self.tpm_level = 0.0  # the shared buckets' levels after the take
        self.slots: list[str] = []
        self.in_flight = 0
        self.expires = 0.0
        self.refused_until = 0.0  # a take refused (near the limit): per call until then
        self.taking: asyncio.Future[bool] | None = None
        self.plan(key)

    def plan(self, key: GatewayKey) -> None:
        lim = key.limits
        self.key = key
        self.rpm, self.tpm = lim.rpm // SHARE, lim.tpm // SHARE
        self.rpm_b: Bucket | None = bucket(lim.rpm) if lim.rpm else None
        self.tpm_b: Bucket | None = bucket(lim.tpm) if lim.tpm else None
        self.want_slots = min(lim.concurrency // SHARE, MAX_SLOTS)
        self.expires = 0.0  # what was taken under other limits is given back at the next take

    def admit(self, user: str, est_tokens: int, now: float) -> Admission | None:
        """The call admitted from the lease; None: it does not hold enough (take another)."""
        if now >= self.expires:
            return None
        rpm_b, tpm_b = self.rpm_b, self.tpm_b
        if (rpm_b is not None and self.rpm_left < 1) or (
            tpm_b is not None and self.tpm_left < est_tokens
        ):
            return None
        slot = ""
        if self.want_slots:
            if self.in_flight >= len(self.slots):
                return None
            self.in_flight += 1
            slot = SLOTS
        adm = Admission(True, self.key, user=user, est_tokens=est_tokens, slot=slot, lease=self)
        rpm = tpm = None
        if rpm_b is not None:
            self.rpm_left -= 1
            rpm = self.rpm_level + self.rpm_left
        if tpm_b is not None:
            self.tpm_left -= est_tokens
            tpm = self.tpm_level + self.tpm_left
        adm.quota = quota_of(rpm_b, tpm_b, rpm, tpm)
        return adm

    def settle(self, adm: Admission, tokens: int) -> None:
        if adm.slot and self.in_flight > 0:
            self.in_flight -= 1
        if self.tpm_b is not None:
            self.tpm_left -= tokens - adm.est_tokens

    def holds(self) -> bool:
        return bool(self.slots or self.in_flight or self.rpm_left or self.tpm_left)


class Leases:
    """The leases of one replica (`RedisLimiter` asks `admit` first, for every call)."""

    def __init__(
        self, client: RedisScripts, names: Callable[[GatewayKey], list[str]],
        failed: Callable[[Exception, str], None], new_id: Callable[[], str],
    ) -> None:  # fmt: skip
        self._client = client
        self._names = names
        self._failed = failed
        self._new_id = new_id
        self._script = Script(_LEASE)
        self._leases: dict[str, Lease] = {}  # key id -> its lease
        self._plans: dict[str, tuple[GatewayKey, bool]] = {}  # key id -> (object, leasable)
        self._tick: asyncio.Task[None] | None = None

    def lease_of(self, key: GatewayKey) -> Lease | None:
        """The key's lease (None: its calls are admitted per call)."""
        plan = self._plans.get(key.key_id)
        if plan is None or plan[0] is not key:
            if len(self._plans) >= 10_000:
                self._plans.clear()
            plan = self._plans[key.key_id] = (key, leasable(key.limits))
            lease = self._leases.get(key.key_id)
            if lease is not None:  # re-read: what it holds goes back at its next take or tick
                if plan[1]:
                    lease.plan(key)
                else:
                    lease.expires = 0.0
        if not plan[1]:
            return None
        lease = self._leases.get(key.key_id)
        if lease is None:
            lease = self._leases[key.key_id] = Lease(key, self._names(key))
            if self._tick is None:
                self._tick = asyncio.get_running_loop().create_task(self._ticking())
        return lease

    def admit_now(self, key: GatewayKey, user: str, est_tokens: int) -> Admission | None:
        """The call admitted from the room its key's lease holds now; None: ask `admit`."""
        lease = self.lease_of(key)
        if lease is None:
            return None
        return lease.admit(user[:MAX_USER_LEN], est_tokens, time.monotonic())

    async def admit(
        self, key: GatewayKey, user: str, est_tokens: int, can_take: bool = True
    ) -> Admission | None:
        """The call admitted from the key's lease, taking one if needed (and `can_take`:
        Redis is not known to be down); None: the key is not leased, or no lease could be
        had (near the limit, or Redis failed): per call."""
        lease = self.lease_of(key)
        if lease is None:
            return None
        now = time.monotonic()
        adm = lease.admit(user, est_tokens, now)
        if adm is not None or now < lease.refused_until or not can_take:
            return adm
        if lease.tpm_b is not None and est_tokens > lease.tpm:
            return None  # bigger than a share: per call
        if lease.taking is None:
            lease.taking = asyncio.get_running_loop().create_task(self._take(lease))
        # Shielded: a caller that leaves does not cancel what the others wait for.
        if not await asyncio.shield(lease.taking):
            return None
        return lease.admit(user, est_tokens, time.monotonic())

    async def _take(self, lease: Lease) -> bool:
        try:
            # Slots: enough for the calls in flight and a share more, the rest released.
            spare = len(lease.slots) - lease.in_flight
            want = lease.want_slots if spare <= 0 and len(lease.slots) < MAX_HELD else 0
            cut = lease.in_flight + lease.want_slots if spare > lease.want_slots else None
            keep, drop = lease.slots[:cut], lease.slots[cut:] if cut is not None else []
            new = [self._new_id() for _ in range(want)]
            ok = await self._call(lease, lease.rpm, lease.tpm, keep, drop, new)
            lease.slots = keep + new if ok else keep
            if ok:
                lease.expires = time.monotonic() + LEASE_S
            else:
                lease.refused_until = time.monotonic() + LEASE_S
            return ok
        except Exception as e:  # LimiterUnavailable, OSError: per call, by the failure mode
            self._failed(e, "lease")
            lease.refused_until = time.monotonic() + LEASE_S
            return False
        finally:
            lease.taking = None

    async def _call(
        self, lease: Lease, rpm: int, tpm: int, keep: Sequence[str], drop: Sequence[str],
        new: Sequence[str],
    ) -> bool:  # fmt: skip
        """One `_LEASE` script call: what the lease holds given back (its allowance zeroed,
        `drop` released, `keep` renewed), and if `rpm`/`tpm`/`new` ask, a new share."""
        lim = lease.key.limits
        give_rpm, give_tpm = lease.rpm_left, lease.tpm_left
        lease.rpm_left = lease.tpm_left = 0.0
        args: list[Arg] = [
            lim.concurrency, SLOT_TTL, int(CALL_SLOT_TTL) + 1, lim.rpm, lim.tpm,
            repr(give_rpm), repr(give_tpm), rpm, tpm,
            len(keep), len(drop), len(new), *keep, *drop, *new,
        ]  # fmt: skip
        try:
            out = await self._client.run(self._script, lease.names, args)
        except BaseException:
            # Redis may or may not have run it. Whichever it did, what errs is in its favour:
            # the calls and tokens given back are not admitted here again (at worst the
            # bucket is short of them until it refills), a debt is kept, to be charged again.
            lease.tpm_left += min(give_tpm, 0.0)
            raise
        granted, rpm_level, tpm_level = (v.decode() if isinstance(v, bytes) else v for v in out)
        lease.rpm_level = float(rpm_level) if rpm_level else 0.0
        lease.tpm_level = float(tpm_level) if tpm_level else 0.0
        if int(granted):
            lease.rpm_left += rpm
            lease.tpm_left += tpm
            return True
        return False

    async def _ticking(self) -> None:
        while True:
            await asyncio.sleep(LEASE_S)
            await self.tick()

    async def tick(self, now: float | None = None) -> None:
        """Leases past their life give back what they hold unused, and every held slot is
        renewed; a lease that holds nothing is forgotten."""
        now = time.monotonic() if now is None else now
        giving: list[asyncio.Future[bool]] = []
        for key_id, lease in list(self._leases.items()):
            if lease.taking is not None or now < lease.expires:
                continue  # live: its next take gives back and renews
            if not lease.holds():
                del self._leases[key_id]
                continue
            # Calls that come meanwhile wait for it like for a take, then go per call.
            lease.taking = asyncio.get_running_loop().create_task(self._give_back(lease))
            giving.append(lease.taking)
        if giving:  # all on their way at once (one write to Redis)
            await asyncio.shield(asyncio.gather(*giving))

    async def _give_back(self, lease: Lease) -> bool:
        try:
            keep, drop = lease.slots[: lease.in_flight], lease.slots[lease.in_flight :]
            await self._call(lease, 0, 0, keep, drop, [])
            lease.slots = keep
        except Exception as e:
            self._failed(e, "lease")
        finally:
            lease.taking = None
        return False

    async def close(self) -> None:
        """Everything given back, on a clean shutdown (a replica killed leaves its shares
        to expire)."""
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        for lease in self._leases.values():
            lease.expires = 0.0
        try:
            await asyncio.wait_for(self.tick(), 2.0)
        except (TimeoutError, Exception):  # best effort: Redis may be gone already
            return

    def leased(self) -> dict[str, Any]:
        """What each lease holds (for tests and debugging)."""
        return {k: (lease.rpm_left, lease.tpm_left, len(lease.slots), lease.in_flight)
                for k, lease in self._leases.items()}  # fmt: skip
