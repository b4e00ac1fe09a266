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
from dataclasses import dataclass, field
from typing import Protocol

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
    est_cost: float = 0.0  # USD reserved of the budget until the call settles
    hold: str = ""  # the reservation to release ("" none)
    held: bool = False  # refused: the budget's rest is reserved by calls in flight


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


def amounts(lim: Limits, est: int) -> tuple[tuple[str, int, int], ...]:
    """(bucket, capacity, amount) of each bucket a call draws from."""
    return (
        (RPM, lim.rpm, 1),
        (TPM, lim.tpm, est),
        (USER_RPM, lim.user_rpm, 1),
        (USER_TPM, lim.user_tpm, est),
    )


def quota(lim: Limits, levels: dict[str, float]) -> Quota:
    q = Quota()
    if lim.rpm and RPM in levels:
        level = levels[RPM]
        q.requests = (lim.rpm, level if level > 0 else 0.0, bucket(lim.rpm).until_full(level))
    if lim.tpm and TPM in levels:
        level = levels[TPM]
        q.tokens = (lim.tpm, level if level > 0 else 0.0, bucket(lim.tpm).until_full(level))
    return q


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
    """The buckets a key's calls draw from, worked out once per key (object): (name,
    bucket, its id (None: per end user, made with the user), whether it counts tokens)."""

    __slots__ = ("buckets", "key")

    def __init__(self, key: GatewayKey) -> None:
        self.key = key
        lim = key.limits
        self.buckets = tuple(
            (name, bucket(cap), f"{key.key_id}:{name}" if name in (RPM, TPM) else None,
             name in (TPM, USER_TPM))
            for name, cap, _ in amounts(lim, 0) if cap
        )  # fmt: skip


class MemoryLimiter:
    """Counters of one process. asyncio runs `admit` without interruption: atomic."""

    def __init__(self) -> None:
        self.failures = 0
        self._levels: dict[str, tuple[float, float]] = {}  # bucket id -> (level, at)
        self._in_flight: dict[str, int] = {}
        self._spend: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], float] = {}  # USD reserved by calls in flight
        self._draws: dict[str, _Draws] = {}  # key id -> of its current key object

    def _draws_of(self, key: GatewayKey) -> _Draws:
        d = self._draws.get(key.key_id)
        if d is None or d.key is not key:  # first seen, or its limits re-read
            if len(self._draws) > 10_000:
                self._draws.clear()
            d = self._draws[key.key_id] = _Draws(key)
        return d

    def _level(self, bid: str, b: Bucket, now: float) -> float:
        st = self._levels.get(bid)
        return b.full if st is None else b.refill(st[0], now - st[1])

    def _bucket_id(self, key: GatewayKey, name: str, user: str) -> str:
        return f"{key.key_id}:{name}" if name in (RPM, TPM) else f"{key.key_id}:{name}:{user}"

    async def admit(
        self, key: GatewayKey, user: str, est_tokens: int, est_cost: float = 0.0,
        hold_s: float = HOLD_MARGIN_S,
    ) -> Admission:  # fmt: skip
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
        if lim.concurrency and self._in_flight.get(key.key_id, 0) >= lim.concurrency:
            adm.refusal, adm.retry_after = CONCURRENCY, 1.0
            return adm
        levels: dict[str, float] = {}
        charged: list[tuple[str, float]] = []
        for name, b, bid, per_token in self._draws_of(key).buckets:
            if bid is None:
                if not user:
                    continue
                bid = f"{key.key_id}:{name}:{user}"
            amount = est_tokens if per_token else 1
            level = self._level(bid, b, now)
            if level < b.need(amount):
                adm.refusal, adm.retry_after = name, b.wait(level, amount)
                adm.quota = quota(lim, {**levels, name: level})
                return adm
            levels[name] = level - amount
            charged.append((bid, level - amount))
        if len(self._levels) > 100_000:
            self._forget_full(now)
        for bid, level in charged:
            self._levels[bid] = (level, now)
        if lim.concurrency:
            self._in_flight[key.key_id] = self._in_flight.get(key.key_id, 0) + 1
            adm.slot = "1"
        if adm.period and est_cost > 0:  # a process that dies takes its reservations along
            self._held[k] = held + est_cost
            adm.est_cost, adm.hold = est_cost, "1"
        adm.ok = True
        adm.quota = quota(lim, levels)
        return adm

    def _forget_full(self, now: float) -> None:
        # A bucket untouched for a minute (plus its debt) is full again: the same as absent.
        self._levels = {k: v for k, v in self._levels.items() if now - v[1] < 60 + max(-v[0], 0)}

    async def settle(self, adm: Admission, tokens: int, cost_usd: float) -> None:
        key, lim = adm.key, adm.key.limits
        if adm.slot:
            self._in_flight[key.key_id] = max(self._in_flight.get(key.key_id, 1) - 1, 0)
        k = (key.key_id, adm.period)
        if adm.hold:
            held = self._held.get(k, 0.0) - adm.est_cost
            if held > 1e-12:
                self._held[k] = held
            else:
                self._held.pop(k, None)
        if cost_usd > 0 and adm.period:
            self._spend[k] = self._spend.get(k, 0.0) + cost_usd
        delta = tokens - adm.est_tokens
        if delta:
            now = time.time()
            for name, cap in ((TPM, lim.tpm), (USER_TPM, lim.user_tpm)):
                if cap and (name == TPM or adm.user):
                    bid = self._bucket_id(key, name, adm.user)
                    self._levels[bid] = (self._level(bid, bucket(cap), now) - delta, now)

    async def seed_spend(self, key: GatewayKey, usd: float) -> None:
        k = (key.key_id, period_id(key.limits.budget_period))
        self._spend.setdefault(k, usd)

    async def spent(self, key: GatewayKey) -> float:
        return self._spend.get((key.key_id, period_id(key.limits.budget_period)), 0.0)

    async def close(self) -> None:
        return None
