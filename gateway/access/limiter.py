"""Counters behind the per-key limits: in this process's memory (here), or shared through
Redis (`redis_limiter.py`).

Both variants answer the same two questions: `admit` before a call is forwarded (budget,
concurrency, then the RPM/TPM buckets of the key and of its end user: all checked, and
only then all charged, so a refusal charges nothing) and `settle` after it (the token
reservation reconciled with the reported usage, the cost added to the spend and the cost
reservation released, the concurrency slot given back). See `policy.py` for what the
limits mean, `reserve.py` for what a call reserves.

Reservations: a call is admitted against a budget only when what is spent, plus what calls
in flight have reserved, plus its own estimated cost fits in the budget; its estimate is
held until it settles. So concurrent calls cannot together spend past the budget by more
than their estimates' errors. A reservation a crashed replica never settles expires with
the call's deadline (`hold_s`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from gateway.access.keys import GatewayKey, Limits
from gateway.access.policy import Bucket, bucket, period_id, period_seconds_left

# Refusal reasons (the `outcome` detail of a refused call and a metric label: bounded).
BUDGET = "budget"
HELD = "budget_held"  # refused by the budget's reservations (reported as BUDGET)
CONCURRENCY = "concurrency"
RPM = "rpm"
TPM = "tpm"
USER_RPM = "user_rpm"
USER_TPM = "user_tpm"
UNAVAILABLE = "limiter_unavailable"

_BUCKETS = (RPM, TPM, USER_RPM, USER_TPM)
SLOT_TTL = 900.0  # a concurrency slot a crashed replica never gave back expires after this
MAX_USER_LEN = 128


class Quota(NamedTuple):
    """The state the `x-ratelimit-*` headers report (None: that limit is not set)."""

    requests: tuple[int, float, float] | None = None  # limit, remaining, seconds to full
    tokens: tuple[int, float, float] | None = None


NO_QUOTA = Quota()


class Settles(Protocol):
    """What a call was admitted from, when that settles it itself (a lease, `lease.py`)."""

    def settle(self, adm: Admission, tokens: int) -> None: ...


@dataclass(slots=True)
class Admission:
    ok: bool
    key: GatewayKey
    refusal: str = ""  # one of the reasons above, when not ok
    retry_after: float = 0.0
    quota: Quota = NO_QUOTA
    user: str = ""
    est_tokens: int = 0
    slot: str = ""  # concurrency slot to give back
    period: str = ""  # budget window charged
    est_cost: float = 0.0  # USD reserved of the budget until the call settles
    hold: str = ""  # the reservation to release ("" none)
    held: bool = False  # refused: the budget's rest is reserved by calls in flight
    lease: Settles | None = None  # admitted from this replica's lease (Redis, lease.py)


# A reservation outlives its call's deadline by this much before it expires unsettled.
HOLD_MARGIN_S = 60.0


class Limiter(Protocol):
    failures: int

    async def admit(
        self,
        key: GatewayKey,
        user: str,
        est_tokens: int,
        est_cost: float = 0.0,
        hold_s: float = HOLD_MARGIN_S,
    ) -> Admission:
        """`est_tokens`: the call's token reservation (input + output); `est_cost`: its
        reserved cost; `hold_s`: how long a reservation lasts if never settled."""

    async def settle(self, adm: Admission, tokens: int, cost_usd: float) -> None:
        """After the call: `tokens` = reported input + output (the estimate when none)."""

    async def seed_spend(self, key: GatewayKey, usd: float) -> None:
        """Spend already recorded in the current window (from llm_calls), unless known."""

    async def spent(self, key: GatewayKey) -> float: ...

    async def close(self) -> None: ...


def quota(lim: Limits, rpm: float | None, tpm: float | None) -> Quota:
    """The quota an answer reports, from the key's RPM and TPM levels (None: not known)."""
    return quota_of(bucket(lim.rpm) if lim.rpm else None, bucket(lim.tpm) if lim.tpm else None,
                    rpm, tpm)  # fmt: skip


def quota_of(rpm_b: Bucket | None, tpm_b: Bucket | None, rpm: float | None,
             tpm: float | None) -> Quota:  # fmt: skip
    """`quota` with the key's RPM and TPM buckets at hand (None: that limit is not set)."""
    requests = tokens = None
    # Seconds until each bucket is full again, inline: this runs for every limited call.
    if rpm_b is not None and rpm is not None:
        full = rpm_b.full
        requests = (rpm_b.capacity, rpm if rpm > 0 else 0.0,
                    (full - rpm) / rpm_b.rate if rpm < full else 0.0)  # fmt: skip
    if tpm_b is not None and tpm is not None:
        full = tpm_b.full
        tokens = (tpm_b.capacity, tpm if tpm > 0 else 0.0,
                  (full - tpm) / tpm_b.rate if tpm < full else 0.0)  # fmt: skip
    return Quota(requests, tokens) if requests or tokens else NO_QUOTA


def budget_refusal(lim: Limits, spent: float, held: float, est_cost: float) -> str:
    """Why a call with this estimated cost cannot have the budget now ("" it can): `budget`
    when what is spent leaves no room for it, `held` when calls in flight have reserved it."""
    if spent >= lim.budget_usd or spent + est_cost > lim.budget_usd:
        return BUDGET
    if est_cost > 0 and spent + held + est_cost > lim.budget_usd:
        return HELD
    return ""


def refused_budget(adm: Admission, refusal: str, now: float | None = None) -> Admission:
    """The admission refused by its budget: until the period ends, or (room held by calls in
    flight, which may cost less than reserved) for a second."""
    adm.refusal = BUDGET
    adm.held = refusal == HELD
    period = adm.key.limits.budget_period
    adm.retry_after = 1.0 if adm.held else period_seconds_left(period, now)
    return adm


class _Draws:
    """What a key's calls draw from, worked out once per key (object): its own RPM and TPM
    buckets (None: not limited), and its end users' (name, bucket, whether it counts
    tokens)."""

    __slots__ = ("key", "rpm", "tpm", "users")

    def __init__(self, key: GatewayKey) -> None:
        self.key = key
        lim = key.limits
        self.rpm = bucket(lim.rpm) if lim.rpm else None
        self.tpm = bucket(lim.tpm) if lim.tpm else None
        self.users = tuple(
            (name, bucket(cap), per_token)
            for name, cap, per_token in ((USER_RPM, lim.user_rpm, False),
                                         (USER_TPM, lim.user_tpm, True))
            if cap
        )  # fmt: skip


class _KeyCounters:
    """A key's own counters, by key id (they outlive a re-read of the key): the RPM and TPM
    buckets' levels as of `*_at` (at 0: full), and its calls in flight; with the draws of
    its current key object."""

    __slots__ = ("draws", "in_flight", "rpm", "rpm_at", "tpm", "tpm_at")

    def __init__(self, draws: _Draws) -> None:
        self.draws = draws
        self.rpm = self.tpm = self.rpm_at = self.tpm_at = 0.0
        self.in_flight = 0

    def full(self, now: float) -> bool:
        """Nothing to remember: no call in flight, both buckets refilled (a minute after
        their last draw, plus the minutes of any debt)."""
        return (self.in_flight == 0
                and now - self.rpm_at >= 60 + max(-self.rpm, 0)
                and now - self.tpm_at >= 60 + max(-self.tpm, 0))  # fmt: skip


class MemoryLimiter:
    """Counters of one process. asyncio runs `admit` without interruption: atomic."""

    def __init__(self) -> None:
        self.failures = 0
        self._keys: dict[str, _KeyCounters] = {}  # key id -> its own counters
        self._levels: dict[str, tuple[float, float]] = {}  # end user's bucket -> (level, at)
        self._spend: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], float] = {}  # USD reserved by calls in flight

    def _counters(self, key: GatewayKey, now: float) -> _KeyCounters:
        c = self._keys.get(key.key_id)
        if c is None:
            if len(self._keys) > 100_000:  # keys created and revoked over a long run
                self._keys = {k: v for k, v in self._keys.items() if not v.full(now)}
            c = self._keys[key.key_id] = _KeyCounters(_Draws(key))
        elif c.draws.key is not key:  # its limits re-read
            c.draws = _Draws(key)
        return c

    def _level(self, bid: str, b: Bucket, now: float) -> float:
        st = self._levels.get(bid)
        return b.full if st is None else b.refill(st[0], now - st[1])

    async def admit(
        self, key: GatewayKey, user: str, est_tokens: int, est_cost: float = 0.0,
        hold_s: float = HOLD_MARGIN_S,
    ) -> Admission:  # fmt: skip
        return self.admit_now(key, user, est_tokens, est_cost)

    def admit_now(
        self, key: GatewayKey, user: str, est_tokens: int, est_cost: float = 0.0
    ) -> Admission:
        """`admit` without a coroutine: nothing here waits (the Gate calls it directly)."""
        now = time.time()
        lim = key.limits
        user = user[:MAX_USER_LEN]
        adm = Admission(False, key, user=user, est_tokens=est_tokens)
        if lim.budget_usd > 0:
            adm.period = period_id(lim.budget_period, now)
            k = (key.key_id, adm.period)
            held = self._held.get(k, 0.0)
            refusal = budget_refusal(lim, self._spend.get(k, 0.0), held, est_cost)
            if refusal:
                return refused_budget(adm, refusal, now)
        c = self._counters(key, now)
        if lim.concurrency and c.in_flight >= lim.concurrency:
            adm.refusal, adm.retry_after = CONCURRENCY, 1.0
            return adm
        d = c.draws
        # Every bucket is checked before any is charged: a refusal charges nothing.
        rpm = tpm = None  # the key's levels once charged
        if (b := d.rpm) is not None:
            level = b.level_at(c.rpm, c.rpm_at, now)
            if level < 1.0:  # b.need(1): a capacity is at least 1
                adm.refusal, adm.retry_after = RPM, b.wait(level, 1)
                adm.quota = quota_of(b, d.tpm, level, None)
                return adm
            rpm = level - 1.0
        if (b := d.tpm) is not None:
            level = b.level_at(c.tpm, c.tpm_at, now)
            if level < b.need(est_tokens):
                adm.refusal, adm.retry_after = TPM, b.wait(level, est_tokens)
                adm.quota = quota_of(d.rpm, b, rpm, level)
                return adm
            tpm = level - est_tokens
        if user and d.users:
            charged: list[tuple[str, float]] = []
            for name, b, per_token in d.users:
                bid = f"{key.key_id}:{name}:{user}"
                amount = est_tokens if per_token else 1
                level = self._level(bid, b, now)
                if level < b.need(amount):
                    adm.refusal, adm.retry_after = name, b.wait(level, amount)
                    adm.quota = quota_of(d.rpm, d.tpm, rpm, tpm)
                    return adm
                charged.append((bid, level - amount))
            if len(self._levels) > 100_000:
                self._forget_full(now)
            for bid, level in charged:
                self._levels[bid] = (level, now)
        if rpm is not None:
            c.rpm, c.rpm_at = rpm, now
        if tpm is not None:
            c.tpm, c.tpm_at = tpm, now
        if lim.concurrency:
            c.in_flight += 1
            adm.slot = "1"
        if adm.period and est_cost > 0:  # a process that dies takes its reservations along
            self._held[k] = held + est_cost
            adm.est_cost, adm.hold = est_cost, "1"
        adm.ok = True
        adm.quota = quota_of(d.rpm, d.tpm, rpm, tpm)
        return adm

    def _forget_full(self, now: float) -> None:
        # A bucket untouched for a minute (plus its debt) is full again: the same as absent.
        self._levels = {k: v for k, v in self._levels.items() if now - v[1] < 60 + max(-v[0], 0)}

    async def settle(self, adm: Admission, tokens: int, cost_usd: float) -> None:
        self.settle_now(adm, tokens, cost_usd)

    def settle_now(self, adm: Admission, tokens: int, cost_usd: float) -> None:
        key = adm.key
        c = self._keys.get(key.key_id)
        if adm.slot and c is not None and c.in_flight > 0:
            c.in_flight -= 1
        if adm.period:
            k = (key.key_id, adm.period)
            if adm.hold:
                held = self._held.get(k, 0.0) - adm.est_cost
                if held > 1e-12:
                    self._held[k] = held
                else:
                    self._held.pop(k, None)
            if cost_usd > 0:
                self._spend[k] = self._spend.get(k, 0.0) + cost_usd
        delta = tokens - adm.est_tokens
        if delta:
            now = time.time()
            lim = key.limits
            if lim.tpm:
                if c is None:
                    c = self._counters(key, now)
                b = bucket(lim.tpm)
                c.tpm = b.level_at(c.tpm, c.tpm_at, now) - delta
                c.tpm_at = now
            if lim.user_tpm and adm.user:
                bid = f"{key.key_id}:{USER_TPM}:{adm.user}"
                self._levels[bid] = (self._level(bid, bucket(lim.user_tpm), now) - delta, now)

    async def seed_spend(self, key: GatewayKey, usd: float) -> None:
        k = (key.key_id, period_id(key.limits.budget_period))
        self._spend.setdefault(k, usd)

    async def spent(self, key: GatewayKey) -> float:
        return self._spend.get((key.key_id, period_id(key.limits.budget_period)), 0.0)

    async def close(self) -> None:
        return None
