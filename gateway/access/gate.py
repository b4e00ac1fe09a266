"""The one object the request path asks about access: who is calling, may they call this
model now, and (after the call) what it cost them.

    key = gate.identify(host, origin, authorization, x_api_key, api_key)   # raises AccessDenied
    ticket = gate.admit(key, model_after_aliases, end_user, payload,
                        operation, price, hold_s)                          # raises AccessDenied
    ticket = ticket if isinstance(ticket, Ticket) else await ticket
    ... forward, with ticket.headers added to the answer ...
    pending = gate.settle(ticket, input_tokens + output_tokens, cost_usd)
    if pending is not None: await pending

Both answer at once where nothing has to be asked of Redis: a coroutine per call costs.

`admit` reserves the call's estimated tokens and cost (`reserve.py`); `settle` replaces
them with what the call used.

A gateway key is consumed here: the caller must drop it from what goes upstream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.access.answers import AccessDenied, Headers, ratelimit_headers, refusal, refused
from gateway.access.config import AuthConfig
from gateway.access.keys import GatewayKey, any_credential, presented_secret
from gateway.access.keystore import KeyStore, Query, parse_rows
from gateway.access.limiter import HOLD_MARGIN_S, Admission, Limiter, MemoryLimiter
from gateway.access.origin import OriginGuard
from gateway.access.policy import ModelRule
from gateway.access.reserve import Reserver
from gateway.jobs import Job, Periodic

if TYPE_CHECKING:  # redis-py is imported by a gateway that uses Redis, not by every gateway
    from gateway.access.lease import Leases

# The cost of (input, output) tokens at the call's prices; None when unknown.
PriceFn = Callable[[int, int], float | None]

log = logging.getLogger("gateway.access")

RESEED_SECONDS = 60.0  # spend re-seeded (only where unknown, e.g. a restarted Redis)


@dataclass(slots=True)
class Ticket:
    key: GatewayKey
    adm: Admission | None = None
    headers: Headers = field(default_factory=list)  # x-ratelimit-* for the answer


class _KeyPlan:
    """What admitting a key's calls needs that its limits alone decide, worked out once per
    key (object: a re-read key with other limits is another object)."""

    __slots__ = ("budget", "key", "limited", "rule", "tokens")

    def __init__(self, key: GatewayKey) -> None:
        lim = key.limits
        self.key = key
        self.rule = ModelRule(lim.models)
        self.limited = bool(lim.rpm or lim.tpm or lim.concurrency or lim.budget_usd
                            or lim.user_rpm or lim.user_tpm)  # fmt: skip
        self.budget = lim.budget_usd > 0
        # What a call reserves is asked only of a key that counts tokens or spend.
        self.tokens = bool(lim.tpm or lim.user_tpm or self.budget)


def seed_sql(keys: list[GatewayKey]) -> str:
    ids = ", ".join("'" + k.key_id.replace("\\", "\\\\").replace("'", "\\'") + "'" for k in keys)
    return (
        "SELECT key_id, sumIf(ifNull(cost_usd, 0), started_at >= toStartOfDay(now('UTC'))) AS day, "
        "sum(ifNull(cost_usd, 0)) AS month FROM llm_calls FINAL "
        f"WHERE started_at >= toStartOfMonth(now('UTC')) AND key_id IN ({ids}) GROUP BY key_id"
    )


def _open_limiter(cfg: AuthConfig) -> Limiter:
    if cfg.redis_url:
        # redis-py is imported by a gateway that uses Redis, not by every gateway.
        from gateway.access.redis_limiter import RedisLimiter

        return RedisLimiter(
            cfg.redis_url, cfg.redis_failure, cfg.redis_timeout_ms / 1000.0, mode=cfg.redis_mode,
            leases=cfg.redis_leases,
        )  # fmt: skip
    return MemoryLimiter()


class Gate:
    def __init__(self, cfg: AuthConfig, limiter: Limiter | None = None) -> None:
        self.cfg = cfg
        self.require_key = cfg.require_key
        self.keystore = KeyStore(k.gateway_key() for k in cfg.keys)
        self.limiter = limiter or _open_limiter(cfg)
        # Counters in this process answer at once: called directly, without a coroutine;
        # so do a Redis limiter's leases (`lease.py`) while they hold room.
        self._memory = self.limiter if isinstance(self.limiter, MemoryLimiter) else None
        self._leases: Leases | None = getattr(self.limiter, "leases", None)
        self.guard = OriginGuard(cfg.allowed_origins, cfg.allowed_hosts)
        self.reserver = Reserver(cfg.reserve)
        self._plans: dict[str, _KeyPlan] = {}  # key id -> the plan of its current object
        self.refusals: dict[str, int] = {}  # outcome -> count, for /metrics
        self._store_keys = False  # keys are read from the store (refresh_forever runs)

    # -- on the request path -----------------------------------------------------------
    def identify(
        self, host: str, origin: str, authorization: bytes, x_api_key: bytes, api_key: bytes
    ) -> GatewayKey | None:
        """The caller's key (None: no key, and none required)."""
        try:
            denied = self.guard.check(host, origin)
            if denied is not None:
                raise denied
            secret = presented_secret(authorization, x_api_key, api_key)
            if secret is not None:
                key = self.keystore.lookup(secret)
                if key is None:
                    # Before the table's first read a key may just not be known yet.
                    loading = self._store_keys and not self.keystore.loaded
                    raise refusal("keys_loading" if loading else "invalid_api_key")
                return key
            if self.require_key:
                raise refusal(
                    "not_gateway_key"
                    if any_credential(authorization, x_api_key, api_key)
                    else "missing_api_key"
                )
            return None
        except AccessDenied as e:
            self.count(e.outcome)
            raise

    def _plan(self, key: GatewayKey) -> _KeyPlan:
        plan = self._plans.get(key.key_id)
        if plan is None or plan.key is not key:
            if len(self._plans) > 10_000:  # keys revoked and created over a long run
                self._plans.clear()
            plan = self._plans[key.key_id] = _KeyPlan(key)
        return plan

    def admit(
        self,
        key: GatewayKey,
        model: str,
        user: str,
        payload: dict[str, Any] | None,
        operation: str = "",
        price: PriceFn | None = None,
        hold_s: float = HOLD_MARGIN_S,
        input_tokens: Callable[[], int] | None = None,
    ) -> Ticket | Awaitable[Ticket]:
        """The call's ticket, decided here and now where it can be (no limits, counters in
        memory, room in its key's lease); else what is left to await (Redis's answer).
        Raises AccessDenied. `price`: the call's cost of (input, output) tokens, for a key
        with a budget; `hold_s`: how long its reservation may outlive a replica that dies
        mid-call; `input_tokens`: the payload's input estimate where the caller keeps one
        (asked for only when the key has limits to reserve of)."""
        plan = self._plan(key)
        if model and not plan.rule.allows(model):
            self.count("refused_model")
            raise refusal("model_not_allowed", model)
        if not plan.limited:
            return Ticket(key)
        est_in = est_out = 0
        cost = 0.0
        if plan.tokens:
            est_in, est_out = self.reserver.tokens(payload, model, operation, input_tokens)
            if plan.budget and price is not None:
                cost = price(est_in, est_out) or 0.0
        if self._memory is not None:
            return self._ticket(key, self._memory.admit_now(key, user, est_in + est_out, cost))
        if self._leases is not None:
            adm = self._leases.admit_now(key, user, est_in + est_out)
            if adm is not None:
                return self._ticket(key, adm)
        return self._admit_later(key, user, est_in + est_out, cost, hold_s)

    async def _admit_later(
        self, key: GatewayKey, user: str, tokens: int, cost: float, hold_s: float
    ) -> Ticket:
        return self._ticket(key, await self.limiter.admit(key, user, tokens, cost, hold_s))

    def _ticket(self, key: GatewayKey, adm: Admission) -> Ticket:
        if not adm.ok:
            e = refused(adm)
            self.count(e.outcome)
            raise e
        return Ticket(key, adm, ratelimit_headers(adm.quota))

    def settle(self, ticket: Ticket, tokens: int, cost_usd: float | None) -> Awaitable[None] | None:
        """Once per ticket (later calls do nothing). Done here and now where it can be
        (counters in memory, a leased call): None; else what is left to await."""
        adm, ticket.adm = ticket.adm, None
        if adm is None:
            return None
        if self._memory is not None:
            self._memory.settle_now(adm, tokens, cost_usd or 0.0)
        elif adm.lease is not None:
            adm.lease.settle(adm, tokens)
        else:
            return self.limiter.settle(adm, tokens, cost_usd or 0.0)
        return None

    def count(self, outcome: str) -> None:
        self.refusals[outcome] = self.refusals.get(outcome, 0) + 1

    # -- in the background -------------------------------------------------------------
    async def refresh(self, query: Query) -> None:
        """Re-read the keys. The spend of keys seen for the first time is seeded before
        they are used, so a restarted replica never admits a call past a spent budget."""
        # A StoreError (the key_refresh job logs it): the keys last read stay in force.
        read = await asyncio.to_thread(self.keystore.read, query)
        await self.seed(query, self.keystore.new_in(read))
        self.keystore.swap(read)

    async def seed(self, query: Query, keys: list[GatewayKey]) -> None:
        keys = [k for k in keys if k.limits.budget_usd > 0]
        if not keys:
            return
        try:
            rows = parse_rows(await asyncio.to_thread(query, seed_sql(keys)))
        except Exception as e:
            log.warning("key spend not seeded from llm_calls", extra={"error": str(e)[:300]})
            return
        spent = {r["key_id"]: r for r in rows}
        for k in keys:
            r = spent.get(k.key_id)
            usd = float(r["day" if k.limits.budget_period == "day" else "month"]) if r else 0.0
            await self.limiter.seed_spend(k, usd)

    def jobs(self, query: Query, ready: Callable[[], bool] | None = None) -> list[Job]:
        """Keys re-read from the store every `auth.refresh_seconds` (from the moment
        `ready` holds: the store's tables exist; config keys hold meanwhile), and every
        minute the spend seeded where the counters have none (a restarted Redis)."""
        self._store_keys = True

        async def reseed() -> None:
            await self.seed(query, self.keystore.keys())

        return [
            Periodic(
                "key_refresh", self.cfg.refresh_seconds, lambda: self.refresh(query), until=ready
            ),
            Periodic("spend_seeding", RESEED_SECONDS, reseed, delay=RESEED_SECONDS, until=ready),
        ]

    @property
    def limiter_failures(self) -> int:
        return self.limiter.failures

    async def close(self) -> None:
        await self.limiter.close()
